"""Deterministic train / validation / holdout assignment by a hash of twitter_id.

The hash depends on the profile only, so a profile keeps its split across weekly runs: a held-out
profile never enters training later. The holdout is the top of the hash space, so other train and
validation shares move profiles between those two only; a holdout share below the pipeline's
(HOLDOUT_SHARE) would move held-out profiles into training, so ``--split`` refuses it, and on AWS
the shares are not an execution option at all. Seed profiles (known researchers, the validation gates' set)
are held out in a file of their own, ``seeds.jsonl``: the seed gates read it, the correlation gate
reads ``holdout.jsonl``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from pipeline import storage
from pipeline.contracts import HOLDOUT_SHARE
from pipeline.errors import InvalidArgument

HASH_SPACE = 2**64


class Split(str, Enum):
    TRAIN = "train"
    VALIDATION = "validation"
    HOLDOUT = "holdout"
    SEEDS = "seeds"

    @property
    def file_name(self) -> str:
        return f"{self.value}.jsonl"


@dataclass(frozen=True)
class SplitFractions:
    train: float = 1.0 - 0.1 - HOLDOUT_SHARE
    validation: float = 0.1
    holdout: float = HOLDOUT_SHARE

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.holdout)
        if any(not 0.0 <= value <= 1.0 for value in values) or abs(sum(values) - 1.0) > 1e-6:
            raise InvalidArgument(f"split fractions must be in [0, 1] and sum to 1, got {values}")
        if self.train == 0.0:
            raise InvalidArgument("the train fraction must be above 0")

    @classmethod
    def parse(cls, text: str) -> SplitFractions:
        """``"0.8,0.1,0.1"`` (train, validation, holdout)."""
        parts = [part.strip() for part in text.split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise InvalidArgument(f"--split expects three numbers like 0.8,0.1,0.1, got {text!r}") from None
        if len(numbers) != 3:
            raise InvalidArgument(f"--split expects three numbers like 0.8,0.1,0.1, got {text!r}")
        if numbers[2] < HOLDOUT_SHARE:
            raise InvalidArgument(
                f"--split: the holdout share {numbers[2]:g} is below {HOLDOUT_SHARE:g}; a smaller holdout would move "
                "profiles held out in earlier runs into training"
            )
        return cls(*numbers)

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "holdout": self.holdout}


def hash_position(twitter_id: str) -> float:
    """A stable position in [0, 1) for a profile."""
    digest = hashlib.sha256(twitter_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / HASH_SPACE


def assign_split(twitter_id: str, fractions: SplitFractions, seed_ids: frozenset[str]) -> Split:
    if twitter_id in seed_ids:
        return Split.SEEDS
    position = hash_position(twitter_id)
    if position < fractions.train:
        return Split.TRAIN
    if position < fractions.train + fractions.validation:
        return Split.VALIDATION
    return Split.HOLDOUT


def read_seed_ids(text: str) -> frozenset[str]:
    """A seed-profile list: one twitter_id per line; blank lines and ``#`` comments ignored."""
    ids = {line.split("#", 1)[0].strip() for line in text.splitlines()}
    ids.discard("")
    return frozenset(ids)


def load_seed_ids(uri: str) -> frozenset[str]:
    """Read a seed-profile list from a local path or an s3:// URI."""
    try:
        return read_seed_ids(storage.read_bytes(uri).decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument(f"the seed-profile list {uri} is not UTF-8 text") from None
