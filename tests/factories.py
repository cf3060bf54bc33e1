"""Explicit source rows for tests: one call per profile or score, sensible defaults."""

from __future__ import annotations

import datetime as dt

from pipeline.dataset.sample import ProfileRow, ScoreRow, load
from pipeline.dataset.source import DEFAULT_TEACHERS

CLAUDE, GEMINI = DEFAULT_TEACHERS
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def profile(twitter_id: str, username: str | None = "", **fields) -> ProfileRow:
    """``username`` defaults to ``user<twitter_id>``; pass None for a NULL, "" is replaced."""
    values = dict(
        twitter_id=twitter_id,
        username=f"user{twitter_id}" if username == "" else username,
        display_name="Dr. Test",
        bio="Associate Professor of neuroscience at MIT.",
        likely_is="researcher",
        category="academia",
        created_at=dt.datetime(2015, 3, 1, tzinfo=dt.timezone.utc),
        follower_count=1200,
        location="Boston, MA",
    )
    values.update(fields)
    return ProfileRow(**values)


def score(twitter_id: str, value: str | None = "0.90", reason: str | None = "Professor at a university.",
          teacher: str = CLAUDE, days_ago: int = 1) -> ScoreRow:
    return ScoreRow(twitter_id, value, reason, teacher, NOW - dt.timedelta(days=days_ago))


def load_rows(conn, rows: list[tuple[ProfileRow, list[ScoreRow]]]) -> None:
    load(conn, rows)


def researchers(count: int, start: int = 1) -> list[tuple[ProfileRow, list[ScoreRow]]]:
    """``count`` valid, distinct profiles with one score each."""
    return [(profile(str(index)), [score(str(index), f"{(index % 100) / 100:.2f}")]) for index in range(start, start + count)]
