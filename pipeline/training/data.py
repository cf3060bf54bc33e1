"""Training examples: the dataset stage's JSONL, tokenized with the loss on the answer only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import prompt
from pipeline.dataset.rows import DatasetRow, MalformedRow, iter_rows
from pipeline.errors import PipelineError

IGNORE_INDEX = -100  # label value the loss skips (the prompt's tokens)


class TrainingDataError(PipelineError):
    """A training file is missing, empty or malformed (the message names file and line)."""


@dataclass
class TokenizedSplit:
    input_ids: list[list[int]]
    labels: list[list[int]]
    skipped_too_long: int
    tokens: int


def read_jsonl(path: Path) -> list[DatasetRow]:
    if not path.is_file():
        raise TrainingDataError(f"{path} is missing")
    try:
        with open(path, "rb") as lines:
            examples = list(iter_rows(lines, path.name))
    except MalformedRow as exc:
        raise TrainingDataError(str(exc)) from None
    if not examples:
        raise TrainingDataError(f"{path.name} is empty")
    return examples


def tokenize(tokenizer, examples: list[DatasetRow], max_seq_length: int) -> TokenizedSplit:
    """Prompt ids (prompt.prompt_token_ids, as at inference) + answer ids (prompt.answer_token_ids: no
    leading space, what serving's JSON grammar allows) + </s>; labels mask the prompt."""
    input_ids, labels, skipped, tokens = [], [], 0, 0
    for example in examples:
        prompt_ids = prompt.prompt_token_ids(tokenizer, example.instruction)
        answer_ids = prompt.answer_token_ids(tokenizer, example.output) + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(answer_ids) > max_seq_length:
            skipped += 1
            continue
        input_ids.append(prompt_ids + answer_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + answer_ids)
        tokens += len(prompt_ids) + len(answer_ids)
    return TokenizedSplit(input_ids, labels, skipped, tokens)
