"""The export query's row (SourceRow) and a batch of its rows as columns (SourceColumns).

Apart, with no dependencies: the COPY's process (stream) sends the COPY before the export's rules
(records, prompt) are imported, and the serving Lambdas, which fill the same template, need no
database driver.
"""

from __future__ import annotations

from typing import NamedTuple


class SourceRow(NamedTuple):  # a tuple, not a dataclass: built once per row of a million-row table
    """One row of the export query (pipeline/dataset/source.py)."""

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


class SourceColumns(NamedTuple):
    """A batch of export rows as columns (SourceRow's fields, one list each, in row order): what the
    export reads from COPY, and what the batch rules below work on."""

    twitter_id: list[str]
    handle: list[str | None]
    display_name: list[str | None]
    bio: list[str | None]
    likely_is: list[str | None]
    category: list[str | None]
    created_at: list[str | None]
    follower_count: list[str | None]
    location: list[str | None]
    score: list[str | None]
    reason: list[str | None]
    scored_by: list[str]
    handle_rank: list[int]

    @classmethod
    def of_rows(cls, rows: list[SourceRow]) -> SourceColumns:
        if not rows:
            return cls(*([] for _ in cls._fields))
        return cls(*(list(column) for column in zip(*rows, strict=True)))
