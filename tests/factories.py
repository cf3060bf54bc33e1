"""Explicit source rows for tests: one call per profile or score, sensible defaults."""

from __future__ import annotations

import datetime as dt

from pipeline.dataset.source import DEFAULT_TEACHERS
from pipeline.local.sample import ProfileRow, ScoreRow, load

CLAUDE, GEMINI = DEFAULT_TEACHERS
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def profile(twitter_id: str, username: str | None = "", **fields) -> ProfileRow:
    """``username`` defaults to ``user<twitter_id>``; pass None for a NULL, "" is replaced."""
    values = dict(
        twitter_id=twitter_id,
        username=f"user{twitter_id}" if username == "" else username,
        display_name="Dr. Test",
        bio="Associate Professor of neuroscience at MIT.",
        likely_is="researcher",
        category="academia",
        created_at=dt.datetime(2015, 3, 1, tzinfo=dt.UTC),
        follower_count=1200,
        location="Boston, MA",
    )
    values.update(fields)
    return ProfileRow(**values)


def score(
    twitter_id: str, value: str | None = "0.90", reason: str | None = "Professor at a university.", teacher: str = CLAUDE, days_ago: int = 1
) -> ScoreRow:
    return ScoreRow(twitter_id, value, reason, teacher, NOW - dt.timedelta(days=days_ago))


def load_rows(conn, rows: list[tuple[ProfileRow, list[ScoreRow]]]) -> None:
    load(conn, rows)


def researchers(count: int, start: int = 1) -> list[tuple[ProfileRow, list[ScoreRow]]]:
    """``count`` valid, distinct profiles with one score each."""
    return [(profile(str(index)), [score(str(index), f"{(index % 100) / 100:.2f}")]) for index in range(start, start + count)]


def tiny_model_with_adapter(work, layers: int, seed: int):
    """A tiny Mistral, a random non-zero LoRA adapter for it (the spec's target modules, r=16), and
    the peft model (for references that need the merged weights). Returns (base, adapter, peft_model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.local.tiny_model import build_tiny_model

    base = build_tiny_model(work / "base", layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(work / "adapter"))
    return base, work / "adapter", peft_model


def source_row(**fields):
    """One row of the export query (columns.SourceRow) for a scored researcher; ``fields`` override."""
    from pipeline.dataset.columns import SourceRow

    values = dict(
        twitter_id="42",
        handle="neuro_jane",
        display_name="Jane Doe",
        bio="PhD neuroscientist at MIT",
        likely_is="researcher",
        category="academia",
        created_at="2015-03-01",
        follower_count="1200",
        location="Boston",
        score="0.95",
        reason="PhD neuroscientist.",
        scored_by="claude-haiku-20240307",
        handle_rank=1,
    )
    values.update(fields)
    return SourceRow(**values)


def insert_fresh_scores(conn, scores: dict[str, float], *, prefix: str = "9100") -> None:
    """A week of new teacher scores: one new profile per handle (twitter ids ``prefix`` + its number:
    digits, as X's are), first scored a minute from now (so after any dataset exported so far). Commits."""
    with conn.cursor() as cursor:
        for i, (handle, score) in enumerate(scores.items()):
            cursor.execute("INSERT INTO user_profiles (twitter_id, username, bio) VALUES (%s, %s, 'new')", (f"{prefix}{i}", handle))
            cursor.execute(
                "INSERT INTO profile_scores (twitter_id, score, reason, scored_by, scored_at) "
                "VALUES (%s, %s, 'why', 'claude-haiku-20240307', now() + interval '1 minute')",
                (f"{prefix}{i}", str(score)),
            )
    conn.commit()
