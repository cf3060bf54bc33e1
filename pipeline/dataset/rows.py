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
    teacher: str = ""  # who gave it: the instruction's "Scored by model" line


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
    answer: prompt.Answer | prompt.AnswerError


def _structure(line: bytes | str) -> _Structured | MalformedRow:
    """The checks that need nothing but the line: JSON, the two keys, the template's lines; and
    the answer parsed (its error reported after the fields', in _row)."""
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
    try:
        answer: prompt.Answer | prompt.AnswerError = prompt.parse_answer(output)
    except prompt.AnswerError as exc:
        answer = exc
    return _Structured(instruction, output, fields, answer)


def _checked_texts(structured: _Structured) -> list[str]:
    """The texts of a row that must be clean: its instruction fields, in template order, then its
    answer's reason (when the answer parsed)."""
    texts = list(structured.fields.values())
    if isinstance(structured.answer, prompt.Answer):
        texts.append(structured.answer.reason)
    return texts


def _row(structured: _Structured, clean: list[bool]) -> DatasetRow | MalformedRow:
    """The remaining checks, in order; ``clean`` says which of _checked_texts passes the cleaning rule."""
    unclean_field = next((name for name, is_clean in zip(structured.fields, clean) if not is_clean), None)  # noqa: B905 - reason last
    if unclean_field is not None:
        # The export's own cleaning rule, checked on what it wrote: a field that cleaning would
        # change carries control characters, a template marker or stray whitespace.
        return MalformedRow(f"instruction field {unclean_field} is not clean text (control characters or a template marker)")
    answer = structured.answer
    if isinstance(answer, prompt.AnswerError):
        return MalformedRow(f"output: {answer}")
    if json.loads(structured.output)["score"] != prompt.format_score(answer.score):
        return MalformedRow("score is not a two-decimal string")
    if not clean[-1]:
        return MalformedRow("output reason is not clean text (control characters or a template marker)")
    if structured.fields["username"] != answer.handle:
        return MalformedRow(f"instruction handle {structured.fields['username']!r} differs from output handle {answer.handle!r}")
    return DatasetRow(structured.instruction, structured.output, answer.handle, answer.score, structured.fields["scored_by"])


def parse_rows(lines: Sequence[bytes | str]) -> list[DatasetRow | MalformedRow]:
    """Each JSONL line -> its row, or the MalformedRow saying what is wrong with it. The texts of
    the whole batch go through the cleaning rule (prompt.clean_fields) at once."""
    structured = [_structure(line) for line in lines]
    readable = [each for each in structured if not isinstance(each, MalformedRow)]
    texts = [_checked_texts(each) for each in readable]
    values = [text for row_texts in texts for text in row_texts]
    flags = list(map(operator.eq, prompt.clean_fields(values), values))
    clean: dict[int, list[bool]] = {}
    start = 0
    for each, row_texts in zip(readable, texts, strict=True):
        clean[id(each)] = flags[start : start + len(row_texts)]
        start += len(row_texts)
    return [each if isinstance(each, MalformedRow) else _row(each, clean[id(each)]) for each in structured]


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
