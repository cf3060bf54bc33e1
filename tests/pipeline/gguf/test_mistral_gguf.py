"""Our GGUF of a model with Mistral's real tokenizer, read by llama.cpp the way serving reads it.

The oracles are not ours: llama.cpp's convert_hf_to_gguf.py for the tokenizer metadata, and
mistral-common (Mistral's encoder of its instruct format) for the ids the served prompt must have.
"""

from __future__ import annotations

import pytest

from pipeline import prompt
from pipeline.gguf import convert, quant
from pipeline.scoring import scorer
from tests.mistral_tokenizer import build_mistral_model, sentencepiece_model
from tests.pipeline.gguf.conftest import run_converter
from tests.pipeline.test_mistral_tokenizer import PROFILES, example_for

pytest.importorskip("mistral_common", reason="mistral-common is a test dependency (requirements/dev.txt)")

SERVED = (quant.OutputType.F16, quant.OutputType.Q4_K_M)


@pytest.fixture(scope="module")
def mistral_models(tmp_path_factory):
    """(base, adapter, merged) for a 1-layer model with Mistral's tokenizer and a random r=16 adapter."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.model_files import TOKENIZER_FILES

    work = tmp_path_factory.mktemp("mistral-gguf")
    base = build_mistral_model(work / "base")
    torch.manual_seed(3)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)), lora)
    peft_model.save_pretrained(str(work / "adapter"))
    peft_model.merge_and_unload().save_pretrained(str(work / "merged"))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, work / "merged" / name)
    return base, work / "adapter", work / "merged"


@pytest.fixture(scope="module")
def mistral_ggufs(mistral_models, tmp_path_factory):
    base, adapter, _ = mistral_models
    out = tmp_path_factory.mktemp("mistral-exports")
    return {
        kind: convert.export_gguf(str(base), str(adapter), str(out / f"{kind.value}.gguf"), kind, threads=2, progress=False)["out_uri"]
        for kind in SERVED
    }


def tokenizer_metadata(path) -> dict:
    from gguf import GGUFReader

    return {name: field.contents() for name, field in GGUFReader(path).fields.items() if name.startswith("tokenizer.")}


def test_the_tokenizer_metadata_is_llama_cpps_own(mistral_models, mistral_ggufs, llama_cpp_converter, tmp_path):
    theirs = tokenizer_metadata(run_converter(llama_cpp_converter, mistral_models[2], tmp_path / "theirs.gguf"))
    for kind in SERVED:
        ours = tokenizer_metadata(mistral_ggufs[kind])
        assert set(ours) == set(theirs), kind
        for name in theirs:
            assert ours[name] == theirs[name], (kind, name)
    # What the difference was: Mistral's config marks <unk>, <s>, </s> special, so llama.cpp makes
    # them CONTROL tokens scored -1000 (SentencePiece alone says UNKNOWN/CONTROL at 0.0).
    assert theirs["tokenizer.ggml.token_type"][:3] == [3, 3, 3] and theirs["tokenizer.ggml.scores"][:3] == [-1000.0] * 3


@pytest.mark.parametrize("kind", SERVED, ids=lambda kind: kind.value)
def test_the_served_prompt_has_mistrals_ids_for_every_profile(kind, mistral_ggufs):
    """The llama.cpp scorer renders the Modelfile's TEMPLATE as Ollama does and tokenizes it with
    BOS and special tokens parsed, as Ollama's runner does: for ordinary and hostile profiles the
    ids are mistral-common's for the same request."""
    from mistral_common.protocol.instruct.messages import SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(str(sentencepiece_model()))
    backend = scorer.LlamaCppBackend(mistral_ggufs[kind], threads=1)
    for name in PROFILES:
        instruction = example_for(name).instruction
        expected = reference.encode_chat_completion(
            ChatCompletionRequest(messages=[SystemMessage(content=prompt.SYSTEM_PROMPT), UserMessage(content=instruction)])
        ).tokens
        assert backend.prompt_tokens(instruction) == expected, name
