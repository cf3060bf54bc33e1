"""The one reader of the dataset's row format (train/validation/holdout/seeds JSONL): exactly
``instruction`` and ``output``, the instruction filled from the template, the output the answer
schema with a two-decimal score, the same handle in both. ValidateData, the trainer and the
scorer all read rows through here, so a row is accepted or refused the same way everywhere.
(pipeline/dataset/records.py writes them.)"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline import prompt
from pipeline.errors import InvalidArgument

# Lines parsed together: their instruction fields go through the cleaning rule in one batch.
PARSE_BATCH_LINES = 2000


class MalformedRow(InvalidArgument):
    """A dataset row that breaks the row contract; the message says where and what."""


@dataclass(frozen=True)
class DatasetRow:
    instruction: str
    output: str
    handle: str
    score: float  # the teacher's


def parse_row(line: bytes | str) -> DatasetRow:
    """One JSONL line -> a row, or MalformedRow saying what is wrong (``parse_rows`` of one line)."""
    row = parse_rows([line])[0]
    if isinstance(row, MalformedRow):
        raise row
    return row


class _Structured(NamedTuple):
    instruction: str
    output: str
    fields: dict[str, str]


def _structure(line: bytes | str) -> _Structured | MalformedRow:
    """The checks that need nothing but the line: JSON, the two keys, the template's lines."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return MalformedRow(f"not JSON: {exc}")
    if not isinstance(row, dict) or set(row) != {"instruction", "output"}:
        return MalformedRow("keys are not exactly instruction, output")
    instruction, output = row["instruction"], row["output"]
    if not isinstance(instruction, str) or not isinstance(output, str):
        return MalformedRow("instruction and output must be strings")
    fields = prompt.instruction_fields(instruction)
    if fields is None:
        return MalformedRow("instruction does not follow the template (its lines, one per field)")
    return _Structured(instruction, output, fields)


def _row(structured: _Structured, unclean_field: str | None) -> DatasetRow | MalformedRow:
    if unclean_field is not None:
        # The export's own cleaning rule, checked on what it wrote: a field that cleaning would
        # change carries control characters, a template marker or stray whitespace.
        return MalformedRow(f"instruction field {unclean_field} is not clean text (control characters or a template marker)")
    try:
        answer = prompt.parse_answer(structured.output)
    except prompt.AnswerError as exc:
        return MalformedRow(f"output: {exc}")
    if json.loads(structured.output)["score"] != prompt.format_score(answer.score):
        return MalformedRow("score is not a two-decimal string")
    if prompt.clean_field(answer.reason) != answer.reason:
        return MalformedRow("output reason is not clean text (control characters or a template marker)")
    if structured.fields["username"] != answer.handle:
        return MalformedRow(f"instruction handle {structured.fields['username']!r} differs from output handle {answer.handle!r}")
    return DatasetRow(structured.instruction, structured.output, answer.handle, answer.score)


def parse_rows(lines: Sequence[bytes | str]) -> list[DatasetRow | MalformedRow]:
    """Each JSONL line -> its row, or the MalformedRow saying what is wrong with it. The instruction
    fields of the whole batch go through the cleaning rule (prompt.clean_fields) at once."""
    structured = [_structure(line) for line in lines]
    readable = [each for each in structured if not isinstance(each, MalformedRow)]
    values = [value for each in readable for value in each.fields.values()]
    clean = iter(map(operator.eq, prompt.clean_fields(values), values))
    unclean: dict[int, str | None] = {}
    for each in readable:
        flags = list(itertools.islice(clean, len(each.fields)))  # this row's fields, in template order
        unclean[id(each)] = next((name for name, is_clean in zip(each.fields, flags, strict=True) if not is_clean), None)
    return [each if isinstance(each, MalformedRow) else _row(each, unclean[id(each)]) for each in structured]


def iter_rows(lines: Iterable[bytes | str], source: str) -> Iterator[DatasetRow]:
    """The rows of a dataset file's lines; blank lines skipped; the first malformed row stops the
    read with MalformedRow naming ``source`` and the line. The caller opens the file (storage for
    s3://; the training image, which has no AWS libraries, a plain open), so this module needs none."""
    numbered = ((number, line) for number, line in enumerate(lines, start=1) if line.strip())
    while batch := list(itertools.islice(numbered, PARSE_BATCH_LINES)):
        for (number, _), row in zip(batch, parse_rows([line for _, line in batch]), strict=True):
            if isinstance(row, MalformedRow):
                raise MalformedRow(f"{source} line {number}: {row}") from None
            yield row
