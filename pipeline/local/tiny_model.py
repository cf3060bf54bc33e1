"""A tiny Mistral-architecture model with a locally trained SentencePiece tokenizer.

The stand-in for Mistral-7B-Instruct-v0.2 in tests and the demo: same architecture (GQA, RoPE,
SwiGLU, RMSNorm), same tokenizer kind (SentencePiece BPE with byte fallback, <unk>=0 <s>=1 </s>=2)
and chat format, no download. Hidden size 256 and FFN 512 keep every weight row a multiple of 256,
so the GGUF export applies real K-quants to it.

Tests use it with random weights. The demo pretrains it first (``pretrain``), because LoRA adapts a
model that already knows a language: Mistral-7B knows English and how to describe a person, and a
random 2-layer model knows nothing, so its adapter's outcome was a draw (docs/benchmarks.md). The
pretraining text is profiles and their description - never a score: the teachers' scores, the
thing the pipeline distils, reach the model only through the run's own fine-tuning.
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
# Pretraining: a sample of its own (not the demo's, whose sample seed is 0), two passes, batch 16.
PRETRAIN_PROFILES = 3000
PRETRAIN_SAMPLE_SEED = 777
PRETRAIN_EPOCHS = 2
PRETRAIN_BATCH_SIZE = 16
PRETRAIN_LEARNING_RATE = 2e-3
PRETRAIN_WARMUP_RATIO = 0.05
PRETRAINING_FILE = "pretraining.json"  # the losses; its presence says the model was pretrained


def instruction_of(profile: sample.ProfileRow, scored_by: str) -> str:
    """A sample profile as the template shows it to the model."""
    return prompt.format_instruction(
        handle=profile.username,
        display_name=profile.display_name or "",
        bio=profile.bio or "",
        created_at=profile.created_at.date().isoformat() if profile.created_at else "",
        follower_count=str(profile.follower_count),
        location=profile.location or "",
        scored_by=scored_by,
    )


def _corpus_lines() -> list[str]:
    """What the tokenizer should encode well: filled prompts and answers from the sample."""
    lines = [prompt.SYSTEM_PROMPT]
    for profile, scores in sample.generate_sample(TOKENIZER_CORPUS_PROFILES, seed=12345, dirty_fraction=0.0):
        for score in scores[:1]:
            lines.append(instruction_of(profile, score.scored_by))
            lines.append(prompt.format_answer(profile.username, float(score.score or 0), score.reason or ""))
    return lines


def _describe(handle: str, reason: str) -> str:
    """The answer's shape without its score: ``{"handle":…,"reason":…}``."""
    return f'{{"handle":{prompt.json_string(handle)},"reason":{prompt.json_string(reason)}}}'


def pretraining_corpus(profiles: int = PRETRAIN_PROFILES, seed: int = PRETRAIN_SAMPLE_SEED) -> list[str]:
    """System prompt, a profile as the template shows it, and a description of the person - no score."""
    texts = []
    for profile, scores in sample.generate_sample(profiles, seed=seed, dirty_fraction=0.0):
        if scores:
            instruction = instruction_of(profile, scores[0].scored_by)
            texts.append(f"{prompt.SYSTEM_PROMPT}\n\n{instruction}\n{_describe(profile.username, scores[0].reason or '')}")
    return texts


def pretrain(model_dir: str | Path, progress: bool = True, profiles: int | None = None) -> dict[str, float]:
    """Causal-LM training of every weight on ``pretraining_corpus``; saves the model in place.

    Returns the training loss at the start and the end. Reproducible on one machine: fixed seeds,
    the data order is the Trainer's seeded sampler's.
    """
    import torch
    from transformers import DataCollatorForLanguageModeling, LlamaTokenizer, MistralForCausalLM, Trainer, TrainingArguments

    from pipeline.training.trainer import one_voice

    model_dir = Path(model_dir)
    tokenizer = LlamaTokenizer.from_pretrained(str(model_dir))
    tokenizer.pad_token = tokenizer.eos_token  # the collator pads with it and leaves padding out of the loss
    corpus = pretraining_corpus(profiles or PRETRAIN_PROFILES)
    examples = [{"input_ids": [BOS_ID, *tokenizer.encode(text, add_special_tokens=False), EOS_ID]} for text in corpus]
    torch.manual_seed(0)
    model = MistralForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as work:
        arguments = TrainingArguments(
            output_dir=work,
            num_train_epochs=PRETRAIN_EPOCHS,
            per_device_train_batch_size=PRETRAIN_BATCH_SIZE,
            learning_rate=PRETRAIN_LEARNING_RATE,
            warmup_steps=PRETRAIN_WARMUP_RATIO,  # transformers 5: a value below 1 is a ratio of all steps
            lr_scheduler_type="cosine",
            weight_decay=0.0,
            logging_steps=1,  # first_loss is the first step's
            save_strategy="no",
            report_to=[],
            seed=0,
            data_seed=0,
            use_cpu=True,
            disable_tqdm=not progress,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=examples,  # type: ignore[arg-type]  # a list of dicts is a map-style dataset
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        )
        one_voice(trainer, progress)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.save_pretrained(str(model_dir))
    result = {"profiles": len(corpus), "epochs": PRETRAIN_EPOCHS, "first_loss": losses[0], "last_loss": losses[-1]}
    (model_dir / PRETRAINING_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


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
    """Write a Hugging Face model directory (config, safetensors, tokenizer) to ``out``; random weights."""
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


def build_pretrained_tiny_model(out: str | Path, layers: int = DEFAULT_LAYERS, progress: bool = True) -> Path:
    """The demo's base: ``build_tiny_model`` then ``pretrain``."""
    build_tiny_model(out, layers=layers)
    pretrain(out, progress=progress)
    return Path(out)


def describe(path: str | Path) -> dict:
    config = json.loads(Path(path, "config.json").read_text())
    return {key: config.get(key) for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")}
