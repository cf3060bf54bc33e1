"""The GGUF vocabulary of a SentencePiece (Llama/Mistral) tokenizer, as llama.cpp's converter writes it.

gguf-py's SentencePieceVocab yields the SentencePiece pieces and added_tokens.json, but not the
rule convert_hf_to_gguf.py applies on top (conversion/base.py, ``_create_vocab_sentencepiece``):
tokens listed in tokenizer_config.json's ``added_tokens_decoder`` become CONTROL (special, or
looking special) or USER_DEFINED with score -1000, and ids past the SentencePiece model up to the
model's vocabulary size are ``[PAD<id>]`` UNUSED at -10000. Mistral ships such a config: without
the rule ``<unk>``, ``<s>``, ``</s>`` keep their SentencePiece scores (0.0) and ``<unk>`` stays UNKNOWN.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

ADDED_TOKEN_SCORE = -1000.0
PADDING_SCORE = -10000.0
SENTENCEPIECE_SPACE = "\u2581"
# Added tokens that llama.cpp's converter treats as control tokens even when not marked special.
_LOOKS_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")


def looks_special(text: str) -> bool:
    return (
        text in _LOOKS_SPECIAL
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def sentencepiece_vocab(tokenizer_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[gguf.TokenType]]:
    """Tokens, scores and types for ``vocab_size`` ids (the model's config), llama.cpp's way."""
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    tokens = [f"[PAD{index}]".encode() for index in range(vocab_size)]
    scores = [PADDING_SCORE] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token_id in range(min(processor.vocab_size(), vocab_size)):
        tokens[token_id] = processor.IdToPiece(token_id).encode("utf-8")
        scores[token_id] = processor.GetScore(token_id)
        if processor.IsUnknown(token_id):
            types[token_id] = gguf.TokenType.UNKNOWN
        elif processor.IsControl(token_id):
            types[token_id] = gguf.TokenType.CONTROL
        elif processor.IsUnused(token_id):
            types[token_id] = gguf.TokenType.UNUSED
        elif processor.IsByte(token_id):
            types[token_id] = gguf.TokenType.BYTE
        else:
            types[token_id] = gguf.TokenType.NORMAL

    added_file = tokenizer_dir / "added_tokens.json"
    if added_file.is_file():
        for text, token_id in json.loads(added_file.read_text(encoding="utf-8")).items():
            if token_id < vocab_size:
                tokens[token_id], scores[token_id], types[token_id] = text.encode("utf-8"), ADDED_TOKEN_SCORE, gguf.TokenType.USER_DEFINED

    config_file = tokenizer_dir / "tokenizer_config.json"
    if config_file.is_file():
        decoder = json.loads(config_file.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        for key, token in decoder.items():
            token_id, text = int(key), token["content"]
            if token_id >= vocab_size:
                continue
            if token.get("special") or looks_special(text):
                types[token_id] = gguf.TokenType.CONTROL
            else:
                text = text.replace(SENTENCEPIECE_SPACE, " ")  # as the converter pre-normalises user-defined spaces
                types[token_id] = gguf.TokenType.USER_DEFINED
            scores[token_id] = ADDED_TOKEN_SCORE
            tokens[token_id] = text.encode("utf-8")
    return tokens, scores, types
