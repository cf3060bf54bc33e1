"""The demo's base: the tiny model, pretrained on profiles and their descriptions, never a score."""

from __future__ import annotations

import json
import math

import pytest

from pipeline import prompt
from pipeline.local import tiny_model

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


def test_the_pretraining_text_describes_profiles_and_never_carries_a_score():
    corpus = tiny_model.pretraining_corpus(200)
    assert len(corpus) > 180  # the sample's profiles with a teacher's answer
    for text in corpus:
        assert text.startswith(prompt.SYSTEM_PROMPT)
        described = json.loads(text[text.rindex("\n") + 1 :])
        assert set(described) == {"handle", "reason"}  # the answer's shape without its score
        assert f"\nhandle: {described['handle']}\n" in text  # repeated from the profile, as the answer does
    demo_handles = {profile.username for profile, _ in tiny_model.sample.generate_sample(3000, seed=0)}
    assert not any(f'"handle":{prompt.json_string(handle)}' in text for text in corpus for handle in list(demo_handles)[:300])


def held_out_loss(model_dir) -> float:
    import torch
    from transformers import LlamaTokenizer, MistralForCausalLM

    tokenizer = LlamaTokenizer.from_pretrained(str(model_dir))
    model = MistralForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    losses = []
    for text in tiny_model.pretraining_corpus(20, seed=99):  # profiles it never saw
        ids = torch.tensor([[tiny_model.BOS_ID, *tokenizer.encode(text, add_special_tokens=False)]])
        with torch.no_grad():
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    return sum(losses) / len(losses)


def test_pretraining_teaches_the_language_of_profiles_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_model, "PRETRAIN_PROFILES", 96)
    model_dir = tiny_model.build_tiny_model(tmp_path / "tiny", layers=1)
    random_loss = held_out_loss(model_dir)
    assert random_loss == pytest.approx(math.log(tiny_model.VOCAB_SIZE), abs=1.0)  # random weights: a uniform guess

    tiny_model.pretrain(model_dir, progress=False)
    recorded = json.loads((model_dir / tiny_model.PRETRAINING_FILE).read_text())
    assert recorded["profiles"] > 80 and recorded["epochs"] == tiny_model.PRETRAIN_EPOCHS
    assert recorded["last_loss"] < recorded["first_loss"]
    assert held_out_loss(model_dir) < random_loss - 2.0  # learned, and on text it was not trained on
