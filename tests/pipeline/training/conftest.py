"""A tiny model and a small dataset in the dataset stage's format, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.dataset import records
from pipeline.dataset.columns import SourceRow
from pipeline.local import sample


def write_dataset(directory: Path, train_rows: int, validation_rows: int, seed: int = 11) -> Path:
    """train.jsonl / validation.jsonl from sample profiles, through the export's own row code."""
    directory.mkdir(parents=True, exist_ok=True)
    examples = []
    for profile, scores in sample.generate_sample(train_rows + validation_rows + 50, seed=seed, dirty_fraction=0.0):
        if not scores:
            continue
        score = scores[0]
        row = SourceRow(
            profile.twitter_id,
            profile.username,
            profile.display_name,
            profile.bio,
            profile.likely_is,
            profile.category,
            profile.created_at.date().isoformat(),
            str(profile.follower_count),
            profile.location,
            score.score,
            score.reason,
            score.scored_by,
            1,
        )
        example = records.to_example(row)
        if isinstance(example, records.Example):
            examples.append(example.to_jsonl())
    (directory / "train.jsonl").write_text("".join(examples[:train_rows]))
    (directory / "validation.jsonl").write_text("".join(examples[train_rows : train_rows + validation_rows]))
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from pipeline.local.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), layers=2)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"), train_rows=96, validation_rows=24)
