"""The one reader of the dataset's row format (train/validation/holdout/seeds JSONL): exactly
``instruction`` and ``output``, the instruction filled from the template, the output the answer
schema with a two-decimal score, the same handle in both. ValidateData, the trainer and the
scorer all read rows through here, so a row is accepted or refused the same way everywhere.
(pipeline/dataset/records.py writes them.)"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline import prompt
from pipeline.errors import InvalidArgument


class MalformedRow(InvalidArgument):
    """A dataset row that breaks the row contract; the message says where and what."""


@dataclass(frozen=True)
class DatasetRow:
    instruction: str
    output: str
    handle: str
    score: float  # the teacher's


def parse_row(line: bytes | str) -> DatasetRow:
    """One JSONL line -> a row, or MalformedRow saying what is wrong."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRow(f"not JSON: {exc}") from None
    if not isinstance(row, dict) or set(row) != {"instruction", "output"}:
        raise MalformedRow("keys are not exactly instruction, output")
    instruction, output = row["instruction"], row["output"]
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise MalformedRow("instruction and output must be strings")
    fields = prompt.instruction_fields(instruction)
    if fields is None:
        raise MalformedRow("instruction does not follow the template (its lines, one per field)")
    for name, value in fields.items():
        # The export's own cleaning rule, checked on what it wrote: a field that cleaning would
        # change carries control characters, a template marker or stray whitespace.
        if prompt.clean_field(value) != value:
            raise MalformedRow(f"instruction field {name} is not clean text (control characters or a template marker)")
    try:
        answer = prompt.parse_answer(output)
    except prompt.AnswerError as exc:
        raise MalformedRow(f"output: {exc}") from None
    if json.loads(output)["score"] != prompt.format_score(answer.score):
        raise MalformedRow("score is not a two-decimal string")
    if prompt.clean_field(answer.reason) != answer.reason:
        raise MalformedRow("output reason is not clean text (control characters or a template marker)")
    if fields["username"] != answer.handle:
        raise MalformedRow(f"instruction handle {fields['username']!r} differs from output handle {answer.handle!r}")
    return DatasetRow(instruction, output, answer.handle, answer.score)


def iter_rows(lines: Iterable[bytes | str], source: str) -> Iterator[DatasetRow]:
    """The rows of a dataset file's lines; blank lines skipped; the first malformed row stops the
    read with MalformedRow naming ``source`` and the line. The caller opens the file (storage for
    s3://; the training image, which has no AWS libraries, a plain open), so this module needs none."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_row(line)
        except MalformedRow as exc:
            raise MalformedRow(f"{source} line {number}: {exc}") from None
