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
import operator
import struct
from dataclasses import dataclass
from enum import Enum
from itertools import repeat

from pipeline import storage
from pipeline.contracts import HOLDOUT_SHARE
from pipeline.errors import InvalidArgument

HASH_SPACE = 2**64
_FIRST_EIGHT_BYTES = struct.Struct(">Q")  # big-endian unsigned 64-bit


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
    return hash_positions([twitter_id])[0]


def hash_positions(twitter_ids: list[str]) -> list[float]:
    """``hash_position`` of each id: the first 8 bytes of sha256(id), big-endian, over 2**64."""
    digests = map(operator.methodcaller("digest"), map(hashlib.sha256, map(str.encode, twitter_ids)))
    leading = map(operator.itemgetter(0), map(_FIRST_EIGHT_BYTES.unpack_from, digests))
    return list(map(operator.truediv, leading, repeat(HASH_SPACE)))  # each step in C, id by id


def assign_split(twitter_id: str, fractions: SplitFractions, seed_ids: frozenset[str]) -> Split:
    return assign_splits([twitter_id], fractions, seed_ids)[0]


def assign_splits(twitter_ids: list[str], fractions: SplitFractions, seed_ids: frozenset[str]) -> list[Split]:
    """Each profile's split: seeds by id, the others by hash position (train, validation, holdout)."""
    train, validation = fractions.train, fractions.train + fractions.validation
    seeds, training, validating, holding_out = Split.SEEDS, Split.TRAIN, Split.VALIDATION, Split.HOLDOUT
    pairs = zip(twitter_ids, hash_positions(twitter_ids), strict=True)
    return [
        seeds if twitter_id in seed_ids else training if position < train else validating if position < validation else holding_out
        for twitter_id, position in pairs
    ]


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
