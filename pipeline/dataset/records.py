"""One source row -> one training example, or a reject with a stable reason code.

Pure functions: no database, no I/O. The export counts rejects by reason and truncations by field;
nothing is dropped silently.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from pipeline import prompt


class SourceRow(NamedTuple):  # a tuple, not a dataclass: built once per row of a million-row table
    """One row of the export query (pipeline/dataset/source.py). Defined here, in the module without
    a database driver, so that the serving Lambdas (which fill the same template) need no psycopg2."""

    twitter_id: str
    handle: str | None
    display_name: str | None
    bio: str | None
    likely_is: str | None
    category: str | None
    created_at: str | None
    follower_count: str | None
    location: str | None
    score: str | None
    reason: str | None
    scored_by: str
    handle_rank: int


class RejectReason(str, Enum):
    EMPTY_HANDLE = "empty_handle"
    HANDLE_TOO_LONG = "handle_too_long"
    DUPLICATE_HANDLE = "duplicate_handle"
    MISSING_SCORE = "missing_score"
    SCORE_NOT_A_NUMBER = "score_not_a_number"
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    EMPTY_REASON = "empty_reason"


class TruncatedField(str, Enum):
    BIO = "bio"
    DISPLAY_NAME = "display_name"
    LOCATION = "location"
    REASON = "reason"


class Example(NamedTuple):  # tuples, not dataclasses: one is built per row of a large table
    twitter_id: str
    handle: str
    score: float
    instruction: str
    output: str
    truncated: tuple[TruncatedField, ...] = ()

    def to_json_line(self) -> dict[str, str]:
        """The spec's JSONL row: exactly ``instruction`` and ``output``."""
        return {"instruction": self.instruction, "output": self.output}

    def to_jsonl(self) -> str:
        """``to_json_line`` as one compact JSON line (what the export writes, per row)."""
        return f'{{"instruction":{prompt.json_string(self.instruction)},"output":{prompt.json_string(self.output)}}}\n'


class Reject(NamedTuple):
    twitter_id: str
    reason: RejectReason
    detail: str


def clean_handle(raw: str | None) -> tuple[str, RejectReason | None]:
    """The handle as the template shows it (cleaned, no "@"), or why it cannot be used."""
    handle = prompt.clean_field(raw).lstrip("@")
    if not handle:
        return handle, RejectReason.EMPTY_HANDLE
    if len(handle) > prompt.MAX_HANDLE_CHARS:
        return handle, RejectReason.HANDLE_TOO_LONG
    return handle, None


def fill_instruction(
    handle: str,
    display_name: str | None,
    bio: str | None,
    created_at: str | None,
    follower_count: str | None,
    location: str | None,
    scored_by: str | None,
) -> tuple[str, tuple[TruncatedField, ...]]:
    """The template filled with a profile's fields, each cleaned (prompt.clean_field) and cut to its
    limit: the one way an instruction is made, for training rows and for production requests."""
    display_name, bio, location = prompt.clean_field(display_name), prompt.clean_field(bio), prompt.clean_field(location)
    truncated: list[TruncatedField] = []
    # Most rows fit every limit: three comparisons, and the truncation work only when one does not.
    if len(bio) > prompt.MAX_BIO_CHARS or len(display_name) > prompt.MAX_DISPLAY_NAME_CHARS or len(location) > prompt.MAX_LOCATION_CHARS:
        display_name = _cut(display_name, prompt.MAX_DISPLAY_NAME_CHARS, TruncatedField.DISPLAY_NAME, truncated)
        bio = _cut(bio, prompt.MAX_BIO_CHARS, TruncatedField.BIO, truncated)
        location = _cut(location, prompt.MAX_LOCATION_CHARS, TruncatedField.LOCATION, truncated)
    instruction = prompt.format_instruction(
        handle=handle,
        display_name=display_name,
        bio=bio,
        # Formatted by the export query (to_char, ::text) when the columns have their schema's types;
        # cleaned all the same, since a production table may hold them as TEXT.
        created_at=prompt.clean_field(created_at),
        follower_count=prompt.clean_field(follower_count),
        location=location,
        scored_by=prompt.clean_field(scored_by),
    )
    return instruction, tuple(truncated)


def _cut(text: str, limit: int, name: TruncatedField, truncated: list[TruncatedField]) -> str:
    text, was_cut = prompt.truncate(text, limit)
    if was_cut:
        truncated.append(name)
    return text


def to_example(row: SourceRow) -> Example | Reject:
    handle, rejected = clean_handle(row.handle)
    if rejected is RejectReason.EMPTY_HANDLE:
        return Reject(row.twitter_id, rejected, "username is empty")
    if rejected is RejectReason.HANDLE_TOO_LONG:
        return Reject(row.twitter_id, rejected, f"username has {len(handle)} characters")
    if row.handle_rank > 1:
        return Reject(row.twitter_id, RejectReason.DUPLICATE_HANDLE, f"handle {handle!r} belongs to a more recently scored profile")
    if row.score is None or not row.score.strip():
        return Reject(row.twitter_id, RejectReason.MISSING_SCORE, "score is empty")
    try:
        score = prompt.parse_score(row.score)
    except prompt.AnswerError as exc:
        return Reject(row.twitter_id, RejectReason(exc.reason), str(exc))

    reason = prompt.clean_field(row.reason)
    if not reason:
        return Reject(row.twitter_id, RejectReason.EMPTY_REASON, "reason is empty")
    instruction, truncated = fill_instruction(
        handle, row.display_name, row.bio, row.created_at, row.follower_count, row.location, row.scored_by
    )
    if len(reason) > prompt.MAX_REASON_CHARS:
        reason = prompt.truncate(reason, prompt.MAX_REASON_CHARS)[0]
        truncated = (*truncated, TruncatedField.REASON)
    return Example(row.twitter_id, handle, score, instruction, prompt.format_answer(handle, score, reason), truncated)
