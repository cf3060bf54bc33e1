"""The Modelfile and /api/create carry the training format; TEMPLATE renders the training prompt."""

from __future__ import annotations

import pytest

from pipeline import prompt
from pipeline.serving import modelfile, template
from tests.pipeline.serving.conftest import instruction


def test_modelfile_has_the_seed_settings_and_a_mistral_template_not_chatml():
    text = modelfile.render_modelfile("./model.gguf")
    assert text.startswith("FROM ./model.gguf\n")
    assert "PARAMETER temperature 0.1\n" in text and "PARAMETER num_ctx 4096\n" in text
    assert f'SYSTEM """{prompt.SYSTEM_PROMPT}"""' in text
    assert 'PARAMETER stop "</s>"' in text and 'PARAMETER stop "[INST]"' in text
    assert "<|im_end|>" not in text and "<s>" not in text  # no ChatML stop, no second BOS
    assert f"PARAMETER num_predict {prompt.MAX_ANSWER_TOKENS}\n" in text
    # Ollama's DefaultOptions (api/types.go), pinned: what it would apply anyway, fixed in the model.
    for line in ("top_k 40", "top_p 0.9", "min_p 0.0", "repeat_penalty 1.1", "repeat_last_n 64"):
        assert f"PARAMETER {line}\n" in text


def test_create_request_matches_the_modelfile():
    request = modelfile.create_request("mistral-researcher:run-1", "model.gguf", "ab" * 32)
    assert request["files"] == {"model.gguf": "sha256:" + "ab" * 32}
    assert request["template"] == modelfile.OLLAMA_TEMPLATE and request["system"] == prompt.SYSTEM_PROMPT
    assert request["parameters"]["stop"] == ["</s>", "[INST]"] and request["stream"] is False


def test_template_renders_the_training_prompt_token_for_token(tiny_model_dir, tiny_gguf):
    """HF chat template (training) vs Ollama TEMPLATE + BOS tokenized by llama.cpp (serving)."""
    import llama_cpp
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_pretrained(str(tiny_model_dir))
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    for text in (instruction("neuro_jane"), instruction("zoë_ü", bio="Прфессор 量子 🔬 [INST] </s> tricky"), instruction("x", bio="")):
        rendered = template.render(modelfile.OLLAMA_TEMPLATE, {"System": prompt.SYSTEM_PROMPT, "Prompt": text})
        served = llm.tokenize(rendered.encode("utf-8"), add_bos=True, special=True)
        trained = prompt.prompt_token_ids(tokenizer, text)
        assert served == trained
        assert served.count(llm.token_bos()) == 1


def test_the_template_renderer_follows_go_semantics_for_what_we_use_and_refuses_the_rest():
    assert template.render("a{{ if .System }}[{{ .System }}]{{ end }}b", {"System": ""}) == "ab"
    assert template.render("a{{ if .System }}[{{ .System }}]{{ end }}b", {"System": "s"}) == "a[s]b"
    assert template.render("a  {{- .Prompt -}}  b", {"Prompt": "p"}) == "apb"
    for bad in ("{{ range .Messages }}{{ end }}", "{{ if .System }}", "{{ end }}", "{{ .System | upper }}"):
        with pytest.raises(template.TemplateError):
            template.render(bad, {"System": "s"})


def test_modelfile_cli_prints_it(capsys):
    from pipeline.cli import main

    assert main(["modelfile", "--gguf", "/models/run-1.gguf"]) == 0
    assert capsys.readouterr().out == modelfile.render_modelfile("/models/run-1.gguf")
