"""The fresh profiles of Phase 4's shadow comparison: those the teachers FIRST scored after a time
(the production model's dataset export), so that no dataset up to production's held them. Standard
library and psycopg2 only: GenerateDataset (whose layer has no numpy) snapshots them for the run
into runs/<run_id>/shadow/fresh.json; pipeline.evaluation.shadow scores and compares them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipeline import contracts, prompt, storage

DEFAULT_MAX_PROFILES = 500  # the newest fresh profiles a shadow comparison scores at most

# The latest allowed teacher score of each profile whose FIRST allowed score is after ``since``.
FRESH_QUERY = """
WITH allowed AS (
    SELECT twitter_id, score, reason, scored_by, scored_at FROM profile_scores WHERE scored_by = ANY(%(teachers)s)
), fresh AS (
    SELECT twitter_id FROM allowed GROUP BY twitter_id HAVING min(scored_at) > %(since)s
)
SELECT twitter_id, handle, display_name, bio, created_at, follower_count, location, score, reason, scored_by
FROM (
    SELECT DISTINCT ON (ps.twitter_id)
           p.twitter_id::text AS twitter_id, p.username AS handle, p.display_name, p.bio,
           to_char(p.created_at, 'YYYY-MM-DD') AS created_at, p.follower_count::text AS follower_count,
           p.location, ps.score::text AS score, ps.reason, ps.scored_by, ps.scored_at
    FROM allowed ps
    JOIN fresh USING (twitter_id)
    JOIN user_profiles p ON p.twitter_id = ps.twitter_id
    ORDER BY ps.twitter_id, ps.scored_at DESC, ps.scored_by
) latest
ORDER BY scored_at DESC, twitter_id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class FreshProfile:
    row: dict[str, Any]  # the source table's columns, as ScoreProfiles takes them
    teacher_score: float
    teacher_reason: str
    teacher: str


def fresh_profiles(
    conn, *, since: dt.datetime, teachers: Sequence[str], seed_ids: frozenset[str], limit: int
) -> tuple[list[FreshProfile], int]:
    """The fresh profiles, newest first, seed profiles excluded; and how many teacher scores were unusable."""
    with conn.cursor() as cursor:
        cursor.execute(FRESH_QUERY, {"teachers": list(teachers), "since": since, "limit": limit})
        rows = cursor.fetchall()
    found, rejected = [], 0
    for twitter_id, handle, display_name, bio, created_at, follower_count, location, score, reason, scored_by in rows:
        if twitter_id in seed_ids:
            continue
        try:
            teacher_score = prompt.parse_score(score)
        except prompt.AnswerError:
            rejected += 1  # counted, never guessed
            continue
        row = {
            "twitter_id": twitter_id,
            "username": handle,
            "display_name": display_name,
            "bio": bio,
            "created_at": created_at,
            "follower_count": follower_count,
            "location": location,
        }
        found.append(FreshProfile(row, teacher_score, prompt.clean_field(reason), scored_by))
    return found, rejected


def snapshot_uri(root: str, run_id: str) -> str:
    from pipeline import runs

    return storage.join(runs.run_uri(root, run_id), contracts.SHADOW_DIR, contracts.FRESH_PROFILES_NAME)


def write_snapshot(uri: str, profiles: Sequence[FreshProfile], *, rejected: int, since: dt.datetime, production_run_id: str) -> None:
    storage.write_json(
        uri,
        {
            "since": since.isoformat(timespec="seconds"),
            "production_run_id": production_run_id,
            "rejected_teacher_scores": rejected,
            "profiles": [asdict(profile) for profile in profiles],
        },
    )


def read_snapshot(uri: str) -> tuple[list[FreshProfile], int, dt.datetime]:
    data = storage.read_json(uri)
    try:
        profiles = [FreshProfile(**entry) for entry in data["profiles"]]
        return profiles, int(data["rejected_teacher_scores"]), dt.datetime.fromisoformat(data["since"])
    except (KeyError, TypeError, ValueError) as exc:
        from pipeline.errors import StorageError

        raise StorageError(f"{uri} is not a shadow snapshot GenerateDataset wrote: {type(exc).__name__}: {exc}") from None


def production_export_time(
    root: str, pointer_path: tuple[str, ...] = (contracts.MODELS_DIR, contracts.POINTER_NAME)
) -> tuple[str, dt.datetime] | None:
    """(run id, dataset export time) of the run in production, or None when there is none."""
    pointer_uri = storage.join(root, *pointer_path)
    if not storage.exists(pointer_uri):
        return None
    run_id = str(storage.read_json(pointer_uri).get("run_id") or "")
    return run_id, export_time(root, run_id)


def export_time(root: str, run_id: str) -> dt.datetime:
    """When the run's dataset was exported (its manifest's created_at)."""
    from pipeline import runs

    manifest = storage.read_json(storage.join(runs.dataset_uri(root, run_id), contracts.MANIFEST_NAME))
    return dt.datetime.fromisoformat(str(manifest["created_at"]).replace("Z", "+00:00"))


def snapshot(root: str, run_id: str, params, *, teachers: Sequence[str], seed_ids: frozenset[str]) -> dict[str, Any]:
    """GenerateDataset's shadow set for ``run_id``, when a model is in production. Its absence is
    said in the result, never an error: the dataset is written by then, and a retry of the dataset
    stage must not be spent on the shadow set."""
    from pipeline.dataset import source
    from pipeline.errors import PipelineError

    try:
        production = production_export_time(root)
    except (PipelineError, KeyError, ValueError) as exc:
        return {"profiles": 0, "skipped": f"the production run's dataset cannot be read: {exc}"}
    if production is None:
        return {"profiles": 0, "skipped": "no model in production"}
    production_run_id, since = production
    try:
        conn = source.connect(params)
        try:
            profiles, rejected = fresh_profiles(conn, since=since, teachers=teachers, seed_ids=seed_ids, limit=DEFAULT_MAX_PROFILES)
        finally:
            conn.close()
    except PipelineError as exc:
        return {"profiles": 0, "skipped": f"the fresh profiles could not be read: {exc.name}: {exc}"}
    uri = snapshot_uri(root, run_id)
    write_snapshot(uri, profiles, rejected=rejected, since=since, production_run_id=production_run_id)
    return {"profiles": len(profiles), "uri": uri, "since": since.isoformat(timespec="seconds")}
