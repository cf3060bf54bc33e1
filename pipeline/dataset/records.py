"""One source row -> one training example, or a reject with a stable reason code.

Pure functions: no database, no I/O. The export counts rejects by reason and truncations by field;
nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum

from pipeline import prompt
from pipeline.dataset.source import SourceRow


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


@dataclass(frozen=True)
class Example:
    twitter_id: str
    handle: str
    score: float
    instruction: str
    output: str
    truncated: tuple[TruncatedField, ...] = field(default=())

    def to_json_line(self) -> dict[str, str]:
        """The seed's JSONL row: exactly ``instruction`` and ``output``."""
        return {"instruction": self.instruction, "output": self.output}


@dataclass(frozen=True)
class Reject:
    twitter_id: str
    reason: RejectReason
    detail: str


def _format_created_at(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return prompt.clean_text(value)


def _format_follower_count(value: object) -> str:
    if value is None:
        return ""
    return prompt.clean_text(value)


def to_example(row: SourceRow) -> Example | Reject:
    handle = prompt.clean_text(row.handle).lstrip("@")
    if not handle:
        return Reject(row.twitter_id, RejectReason.EMPTY_HANDLE, "username is empty")
    if len(handle) > prompt.MAX_HANDLE_CHARS:
        return Reject(row.twitter_id, RejectReason.HANDLE_TOO_LONG, f"username has {len(handle)} characters")
    if row.handle_rank > 1:
        return Reject(row.twitter_id, RejectReason.DUPLICATE_HANDLE, f"handle {handle!r} belongs to a more recently scored profile")
    if row.score is None or not row.score.strip():
        return Reject(row.twitter_id, RejectReason.MISSING_SCORE, "score is empty")
    try:
        score = prompt.parse_score(row.score)
    except prompt.AnswerError as exc:
        return Reject(row.twitter_id, RejectReason(exc.reason), str(exc))

    reason = prompt.clean_text(row.reason)
    if not reason:
        return Reject(row.twitter_id, RejectReason.EMPTY_REASON, "reason is empty")

    truncated: list[TruncatedField] = []

    def limited(text: str, limit: int, name: TruncatedField) -> str:
        text, was_cut = prompt.truncate(text, limit)
        if was_cut:
            truncated.append(name)
        return text

    instruction = prompt.format_instruction(
        handle=handle,
        display_name=limited(prompt.clean_text(row.display_name), prompt.MAX_DISPLAY_NAME_CHARS, TruncatedField.DISPLAY_NAME),
        bio=limited(prompt.clean_text(row.bio), prompt.MAX_BIO_CHARS, TruncatedField.BIO),
        created_at=_format_created_at(row.created_at),
        follower_count=_format_follower_count(row.follower_count),
        location=limited(prompt.clean_text(row.location), prompt.MAX_LOCATION_CHARS, TruncatedField.LOCATION),
        scored_by=prompt.clean_text(row.scored_by),
    )
    output = prompt.format_answer(handle, score, limited(reason, prompt.MAX_REASON_CHARS, TruncatedField.REASON))
    return Example(
        twitter_id=row.twitter_id,
        handle=handle,
        score=score,
        instruction=instruction,
        output=output,
        truncated=tuple(truncated),
    )
