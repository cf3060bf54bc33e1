"""What Ollama is told about our model: TEMPLATE, SYSTEM, PARAMETERs, as a Modelfile and as the
``/api/create`` request — one source for both.

The TEMPLATE reproduces the training format (``pipeline.prompt.MISTRAL_CHAT_TEMPLATE`` with the
system prompt folded into the user turn) minus the ``<s>``: llama.cpp adds BOS itself because the
GGUF says ``tokenizer.ggml.add_bos_token``, and a second one would shift every position. The seed's
``stop "<|im_end|>"`` is a ChatML token Mistral never emits; the model ends its answer with ``</s>``
(EOS, always a stop in Ollama) and ``[INST]`` guards against it starting a new turn.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline import contracts, prompt

# Go text/template, rendered by Ollama (and by pipeline.serving.template for llama.cpp).
OLLAMA_TEMPLATE = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]"
STOP_SEQUENCES = ("</s>", "[INST]")
# The spec's Modelfile's parameters.
TEMPERATURE = 0.1
NUM_CTX = 4096
# The rest of the sampling, pinned at what Ollama applies when nothing sets it (api/types.go,
# DefaultOptions): written into the model so an Ollama upgrade cannot change how it is served, and
# applied by the local llama.cpp backend, whose own defaults differ (no repeat penalty, top_p 0.95,
# min_p 0.05) - validation must sample as production does.
TOP_K = 40
TOP_P = 0.9
MIN_P = 0.0
REPEAT_PENALTY = 1.1
REPEAT_LAST_N = 64
# The decoding seed: at temperature 0.1 an unseeded model re-scored moved seed_min by 0.02-0.04, so
# a gate could pass or fail on the draw. Pinned in the model and sent with every request; the
# seed gates also score with SEED_GATE_DECODING_SEEDS to show how stable they are (gates.py).
DECODING_SEED = 0


def parameters() -> dict[str, Any]:
    """Ollama ``parameters`` for /api/create (and PARAMETER lines of the Modelfile)."""
    return {
        "temperature": TEMPERATURE,
        "num_ctx": NUM_CTX,
        "num_predict": prompt.MAX_ANSWER_TOKENS,
        "top_k": TOP_K,
        "top_p": TOP_P,
        "min_p": MIN_P,
        "repeat_penalty": REPEAT_PENALTY,
        "repeat_last_n": REPEAT_LAST_N,
        "seed": DECODING_SEED,
        "stop": list(STOP_SEQUENCES),
    }


def model_tag(run_id: str, name: str = contracts.MODEL_NAME) -> str:
    """The run's candidate, e.g. mistral-researcher:run-1-4e65d3fb (never the production tag)."""
    return f"{name}:{contracts.candidate_tag(run_id)}"


def _quoted(text: str) -> str:
    # Modelfile strings: triple quotes for multi-line text, which ours never contains itself.
    if '"""' in text:
        raise ValueError("a Modelfile value cannot contain three double quotes")
    return f'"""{text}"""'


def render_modelfile(gguf_path: str) -> str:
    """The Modelfile equivalent to our /api/create request, for ``ollama create -f`` by hand."""
    lines = [f"FROM {gguf_path}", "", f"TEMPLATE {_quoted(OLLAMA_TEMPLATE)}", "", f"SYSTEM {_quoted(prompt.SYSTEM_PROMPT)}", ""]
    for name, value in parameters().items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {name} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines) + "\n"


def create_request(tag: str, gguf_file_name: str, sha256: str) -> dict[str, Any]:
    """The body of ``POST /api/create`` for a GGUF blob already uploaded by digest."""
    return {
        "model": tag,
        "files": {gguf_file_name: f"sha256:{sha256}"},
        "template": OLLAMA_TEMPLATE,
        "system": prompt.SYSTEM_PROMPT,
        "parameters": parameters(),
        "stream": False,
    }
