"""A tiny Mistral-architecture model with a locally trained SentencePiece tokenizer.

The stand-in for Mistral-7B-Instruct-v0.2 in tests and the demo: same architecture (GQA, RoPE,
SwiGLU, RMSNorm), same tokenizer kind (SentencePiece BPE with byte fallback, <unk>=0 <s>=1 </s>=2)
and chat format, random weights, no download. Hidden size 256 and FFN 512 keep every weight row a
multiple of 256, so the GGUF export applies real K-quants to it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pipeline import prompt
from pipeline.errors import InvalidArgument
from pipeline.local import sample

HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 512
ATTENTION_HEADS = 8
KEY_VALUE_HEADS = 2  # grouped-query attention, as in Mistral-7B (32 heads, 8 KV heads)
DEFAULT_LAYERS = 2
VOCAB_SIZE = 2000
MAX_POSITION_EMBEDDINGS = 4096
ROPE_THETA = 1_000_000.0  # Mistral-7B-Instruct-v0.2's
RMS_NORM_EPS = 1e-5
TOKENIZER_CORPUS_PROFILES = 3000
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def _corpus_lines() -> list[str]:
    """What the tokenizer should encode well: filled prompts and answers from the sample."""
    lines = [prompt.SYSTEM_PROMPT]
    for profile, scores in sample.generate_sample(TOKENIZER_CORPUS_PROFILES, seed=12345, dirty_fraction=0.0):
        for score in scores[:1]:
            lines.append(
                prompt.format_instruction(
                    handle=profile.username,
                    display_name=profile.display_name or "",
                    bio=profile.bio or "",
                    created_at=profile.created_at.date().isoformat() if profile.created_at else "",
                    follower_count=str(profile.follower_count),
                    location=profile.location or "",
                    scored_by=score.scored_by,
                )
            )
            lines.append(prompt.format_answer(profile.username, float(score.score or 0), score.reason or ""))
    return lines


def train_tokenizer(out: Path) -> None:
    import sentencepiece

    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work, "corpus.txt")
        corpus.write_text("\n".join(_corpus_lines()) + "\n", encoding="utf-8")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(out / "tokenizer"),
            vocab_size=VOCAB_SIZE,
            model_type="bpe",
            byte_fallback=True,
            character_coverage=1.0,
            split_digits=True,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            # No dummy "▁" before the first word: Hugging Face and llama.cpp then tokenize the text
            # after <s> the same way (llama.cpp reads the flag as tokenizer.ggml.add_space_prefix).
            add_dummy_prefix=False,
            num_threads=1,
            minloglevel=2,  # one thread: the same corpus gives the same vocabulary
        )
    (out / "tokenizer.vocab").unlink(missing_ok=True)


def build_tiny_model(out: str | Path, layers: int = DEFAULT_LAYERS, seed: int = 0) -> Path:
    """Write a Hugging Face model directory (config, safetensors, tokenizer) to ``out``."""
    import torch
    from transformers import LlamaTokenizer, MistralConfig, MistralForCausalLM

    if not 1 <= layers <= 64:
        raise InvalidArgument(f"--layers must be between 1 and 64, got {layers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out)
    tokenizer = LlamaTokenizer.from_pretrained(str(out))
    tokenizer.chat_template = prompt.MISTRAL_CHAT_TEMPLATE
    # tokenizer_config.json carries the chat template, as Mistral's own does.
    tokenizer.save_pretrained(str(out), save_jinja_files=False)

    torch.manual_seed(seed)
    config = MistralConfig(  # type: ignore[call-arg]  # rope_theta: a MistralConfig field the stubs lack
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=layers,
        num_attention_heads=ATTENTION_HEADS,
        num_key_value_heads=KEY_VALUE_HEADS,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        rope_theta=ROPE_THETA,
        rms_norm_eps=RMS_NORM_EPS,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    model = MistralForCausalLM(config)
    model.save_pretrained(str(out))
    return out


def describe(path: str | Path) -> dict:
    config = json.loads(Path(path, "config.json").read_text())
    return {key: config.get(key) for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")}
