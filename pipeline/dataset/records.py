"""One source row -> one training example, or a reject with a stable reason code.

Pure functions: no database, no I/O. The export counts rejects by reason and truncations by field;
nothing is dropped silently.
"""

from __future__ import annotations

import functools
import operator
from enum import Enum
from itertools import compress, count, repeat
from operator import itemgetter
from typing import NamedTuple, cast

import orjson

from pipeline import prompt
from pipeline.dataset.columns import SourceColumns, SourceRow


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
    CREATED_AT = "created_at"
    FOLLOWER_COUNT = "follower_count"
    SCORED_BY = "scored_by"
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
        return jsonl_lines([self.instruction], [self.output])[0].decode("utf-8")


class Reject(NamedTuple):
    twitter_id: str
    reason: RejectReason
    detail: str


class Examples(NamedTuple):
    """A batch's usable rows as columns (in source order), and its rejects. ``truncated`` is sparse:
    position in the columns -> the fields cut, only for the rows that had a cut."""

    twitter_ids: list[str]
    handles: list[str]
    scores: list[float]
    instructions: list[str]
    outputs: list[str]
    truncated: dict[int, tuple[TruncatedField, ...]]
    rejects: list[Reject]

    def jsonl_lines(self) -> list[bytes]:
        """``Example.to_jsonl`` of every row, UTF-8 encoded."""
        return jsonl_lines(self.instructions, self.outputs)

    def example(self, position: int) -> Example:
        return Example(
            self.twitter_ids[position],
            self.handles[position],
            self.scores[position],
            self.instructions[position],
            self.outputs[position],
            self.truncated.get(position, ()),
        )


def jsonl_lines(instructions: list[str], outputs: list[str]) -> list[bytes]:
    """The spec's JSONL rows, one compact UTF-8 line each, unicode kept as is: the bytes of
    ``json.dumps(row, ensure_ascii=False, separators=(",", ":"))`` and a newline (the tests hold it
    to Python's json), written by orjson (a fifth of json's cost a row, docs/benchmarks.md): the
    one way a dataset line is written."""
    # The newline joined on here, not by orjson's OPT_APPEND_NEWLINE: measured on export batches, 0.6
    # against 1.8 microseconds a row (keeping the bytes orjson returned is the slow part).
    rows = zip(instructions, outputs, strict=True)
    return [orjson.dumps({"instruction": instruction, "output": output}) + b"\n" for instruction, output in rows]


def clean_handle(raw: str | None) -> tuple[str, RejectReason | None]:
    """The handle as the template shows it (cleaned, no "@"), or why it cannot be used."""
    handle = clean_handles([raw])[0]
    return handle, _handle_problem(handle)


def clean_handles(raws: list[str | None]) -> list[str]:
    return list(map(str.lstrip, prompt.clean_fields(raws), repeat("@")))


def _handle_problem(handle: str) -> RejectReason | None:
    if not handle:
        return RejectReason.EMPTY_HANDLE
    if len(handle) > prompt.MAX_HANDLE_CHARS:
        return RejectReason.HANDLE_TOO_LONG
    return None


def fill_instruction(
    handle: str,
    display_name: str | None,
    bio: str | None,
    created_at: str | None,
    follower_count: str | None,
    location: str | None,
    scored_by: str | None,
) -> tuple[str, tuple[TruncatedField, ...]]:
    """The template filled with one profile's fields (``fill_instructions`` of one row)."""
    instructions, truncated = fill_instructions([handle], [display_name], [bio], [created_at], [follower_count], [location], [scored_by])
    return instructions[0], truncated.get(0, ())


def _limit(texts: list[str], limit: int, name: TruncatedField, cut: dict[int, tuple[TruncatedField, ...]]) -> list[str]:
    """``texts`` with each one longer than ``limit`` cut (prompt.truncate), the cut noted in ``cut``."""
    for position in list(compress(count(), map(limit.__lt__, map(len, texts)))):  # the long ones, found in C
        texts[position] = prompt.truncate(texts[position], limit)[0]
        cut[position] = (*cut.get(position, ()), name)
    return texts


def fill_instructions(
    handles: list[str],
    display_names: list[str | None],
    bios: list[str | None],
    created_ats: list[str | None],
    follower_counts: list[str | None],
    locations: list[str | None],
    scored_bys: list[str | None],
) -> tuple[list[str], dict[int, tuple[TruncatedField, ...]]]:
    """The template filled with each profile's fields, each cleaned (prompt.clean_fields) and cut to
    its limit: the one way an instruction is made, for training rows and for production requests.
    Returns the instructions and, for the rows that had a field cut, which fields (in this order)."""
    cut: dict[int, tuple[TruncatedField, ...]] = {}
    display_name = _limit(prompt.clean_fields(display_names), prompt.MAX_DISPLAY_NAME_CHARS, TruncatedField.DISPLAY_NAME, cut)
    bio = _limit(prompt.clean_fields(bios), prompt.MAX_BIO_CHARS, TruncatedField.BIO, cut)
    location = _limit(prompt.clean_fields(locations), prompt.MAX_LOCATION_CHARS, TruncatedField.LOCATION, cut)
    # created_at and follower_count are formatted by the export query (to_char, ::text) when the
    # columns have their schema's types; cleaned and limited all the same, since a production table
    # (or a scoring request) may hold any TEXT there.
    created_at = _limit(prompt.clean_fields(created_ats), prompt.MAX_CREATED_AT_CHARS, TruncatedField.CREATED_AT, cut)
    follower_count = _limit(prompt.clean_fields(follower_counts), prompt.MAX_FOLLOWER_COUNT_CHARS, TruncatedField.FOLLOWER_COUNT, cut)
    scored_by = _limit(prompt.clean_fields(scored_bys), prompt.MAX_TEACHER_CHARS, TruncatedField.SCORED_BY, cut)
    columns = (handles, display_name, bio, created_at, follower_count, location, scored_by)
    return prompt.fill_templates(columns), cut


def to_example(row: SourceRow) -> Example | Reject:
    """One source row -> its example or its reject (``to_examples`` of one row)."""
    examples = to_examples(SourceColumns.of_rows([row]))
    return examples.rejects[0] if examples.rejects else examples.example(0)


_HANDLE_LENGTHS = range(1, prompt.MAX_HANDLE_CHARS + 1)
_FIRST_RANK = 1  # handle_rank: 1 for the handle's most recently scored profile


@functools.lru_cache(maxsize=4096)  # a table's scores repeat ("0.95", "0.1"): most rows are a cache hit
def _score_of(text: str | None) -> tuple[float, str] | tuple[RejectReason, str]:
    """A teacher's score -> (the score, its two-decimal form), or (the reject reason, its detail)."""
    if text is None or not text.strip():
        return RejectReason.MISSING_SCORE, "score is empty"
    try:
        score = prompt.parse_score(text)
    except prompt.AnswerError as exc:
        return RejectReason(exc.reason), str(exc)
    return score, prompt.format_score(score)


def _reject(twitter_id: str, handle: str, rank: int, score: tuple[object, str]) -> Reject:
    """Why a row is not usable: the first rule it breaks, in the order to_examples checks them."""
    problem = _handle_problem(handle)
    if problem is RejectReason.EMPTY_HANDLE:
        return Reject(twitter_id, problem, "username is empty")
    if problem is RejectReason.HANDLE_TOO_LONG:
        return Reject(twitter_id, problem, f"username has {len(handle)} characters")
    if rank > 1:
        return Reject(twitter_id, RejectReason.DUPLICATE_HANDLE, f"handle {handle!r} belongs to a more recently scored profile")
    if isinstance(score[0], RejectReason):
        return Reject(twitter_id, score[0], score[1])
    return Reject(twitter_id, RejectReason.EMPTY_REASON, "reason is empty")


def to_examples(columns: SourceColumns) -> Examples:
    """A batch of source rows -> its training examples and its rejects, each with a stable reason.

    A row is usable when its handle is 1-50 characters after cleaning, it is its handle's most
    recently scored profile, its score is a number in [0, 1] and its reason is not empty. The rules
    run column by column (prompt.clean_fields cleans a whole column in one pass): about 4-5
    microseconds a row with Python's own string routines and regexes (docs/benchmarks.md), and no
    second form of the rules for speed.
    """
    handles = clean_handles(columns.handle)
    reasons = prompt.clean_fields(columns.reason)
    scores = list(map(_score_of, columns.score))
    # The four conditions of a usable row, each tested in C over the column, then and-ed row by row.
    usable = list(
        map(
            all,
            zip(
                map(_HANDLE_LENGTHS.__contains__, map(len, handles)),
                map(_FIRST_RANK.__ge__, columns.handle_rank),
                map(isinstance, map(itemgetter(0), scores), repeat(float)),
                map(bool, reasons),
                strict=True,
            ),
        )
    )
    rejects = [
        _reject(columns.twitter_id[position], handles[position], columns.handle_rank[position], scores[position])
        for position in compress(count(), map(operator.not_, usable))
    ]

    def kept(column: list) -> list:
        return list(compress(column, usable)) if rejects else column

    handles, reasons, scores = kept(handles), kept(reasons), kept(scores)
    instructions, truncated = fill_instructions(
        handles,
        kept(columns.display_name),
        kept(columns.bio),
        kept(columns.created_at),
        kept(columns.follower_count),
        kept(columns.location),
        kept(columns.scored_by),
    )
    reasons = _limit(reasons, prompt.MAX_REASON_CHARS, TruncatedField.REASON, truncated)
    score_values = cast(list[float], list(map(itemgetter(0), scores)))  # a kept row's score parsed
    outputs = prompt.format_answers(handles, list(map(itemgetter(1), scores)), reasons)
    return Examples(kept(columns.twitter_id), handles, score_values, instructions, outputs, truncated, rejects)
