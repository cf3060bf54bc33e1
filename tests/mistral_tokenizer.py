"""Mistral-7B-Instruct-v0.2's tokenizer files, rebuilt here from Mistral's own SentencePiece model.

The hub cannot be reached from this project, so the four files Mistral ships are reconstructed:

- ``tokenizer.model``: byte for byte ``mistral_common/data/tokenizer.model.v1`` from PyPI's
  mistral-common (the SentencePiece model of Mistral-7B-v0.1/v0.2, 32,000 pieces).
- ``tokenizer.json``: what transformers' LlamaConverter (legacy mode, the one Mistral's file was
  made with) builds from it: a byte-fallback BPE over the SentencePiece pieces with the merges
  transformers derives from them, normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer,
  ``<s> $A`` post-processing, ids 0-2 as special added tokens. Its encodings are checked against
  sentencepiece itself in tests/test_mistral_tokenizer.py.
- ``tokenizer_config.json`` and ``special_tokens_map.json``: the fields Mistral's files carry that
  bear on tokenization (add_bos_token true, add_eos_token false, legacy true, the three special
  tokens, no pad token) and its chat template, as published with the model (written from the
  published file; the template renders the same text as pipeline.prompt.MISTRAL_CHAT_TEMPLATE for
  our one-turn messages, which the tests check).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MISTRAL_CHAT_TEMPLATE_V02 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
SPECIAL_TOKENS = {0: "<unk>", 1: "<s>", 2: "</s>"}


def sentencepiece_model() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def _tokenizer_json(model_file: Path) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(model_file)).extract(BPE)
    tokenizer = Tokenizer(BPE(vocab=extracted["vocab"], merges=extracted["merges"], unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    tokenizer.add_special_tokens([AddedToken(text, special=True, normalized=False) for _, text in sorted(SPECIAL_TOKENS.items())])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tokenizer.to_str()


def write_tokenizer_files(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sentencepiece_model(), out / "tokenizer.model")
    (out / "tokenizer.json").write_text(_tokenizer_json(out / "tokenizer.model"))
    added = {
        str(token_id): {"content": text, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for token_id, text in SPECIAL_TOKENS.items()
    }
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "chat_template": MISTRAL_CHAT_TEMPLATE_V02,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))
    return out


def build_mistral_model(out: Path, layers: int = 1, seed: int = 0) -> Path:
    """A Mistral-architecture model directory with Mistral's real tokenizer: vocabulary 32,000,
    hidden 256 (the k-quants' block size, so q4_k_m applies to every matrix), random weights."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    write_tokenizer_files(out)
    torch.manual_seed(seed)
    config = MistralConfig(  # type: ignore[call-arg]
        vocab_size=32_000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-5,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    MistralForCausalLM(config).save_pretrained(str(out))
    return out
