from collections import Counter

from pipeline.dataset.generate import ExportConfig, export_dataset
from pipeline.dataset.source import ConnectionParams
from pipeline.dataset.validate import validate_dataset
from pipeline.local import sample


def test_same_seed_same_rows_other_seed_other_rows():
    first = list(sample.generate_sample(300, seed=7))
    assert first == list(sample.generate_sample(300, seed=7))
    assert first != list(sample.generate_sample(300, seed=8))


def test_sample_covers_the_kinds_of_accounts_the_scorer_meets():
    rows = list(sample.generate_sample(3000, seed=0))
    kinds = Counter(profile.likely_is for profile, _ in rows)
    assert {"researcher", "student", "journalist", "organization", "bot", "unknown", "person", "clinician"} <= set(kinds)
    bios = [profile.bio or "" for profile, _ in rows]
    assert any(any("\u0600" <= ch <= "\u06ff" for ch in bio) for bio in bios)  # Arabic
    assert any(any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in bio) for bio in bios)  # CJK
    assert any(any(ord(ch) > 0x1F000 for ch in bio) for bio in bios)  # emoji
    assert sum(1 for bio in bios if not bio) > 30  # empty profiles
    teachers = Counter(score.scored_by for _, scores in rows for score in scores)
    assert teachers[sample.CLAUDE] > 1000 and teachers[sample.GEMINI] > 1000 and teachers[sample.OTHER_TEACHER] > 0
    assert sum(1 for _, scores in rows if not scores) > 30  # profiles never scored


def test_scores_follow_the_archetype():
    rows = list(sample.generate_sample(3000, seed=0, dirty_fraction=0.0))
    mean = {}
    for kind in ("researcher", "bot", "organization"):
        values = [float(s.score) for p, scores in rows if p.likely_is == kind for s in scores]
        mean[kind] = sum(values) / len(values)
    assert mean["researcher"] > 0.75 and mean["bot"] < 0.1 and mean["organization"] < 0.15


def test_seed_profiles_are_fixed_known_researchers():
    seeds = sample.seed_profiles()
    assert len(seeds) == sample.SEED_PROFILE_COUNT == len(sample.seed_profile_ids())
    assert seeds == sample.seed_profiles()
    assert all(float(scores[0].score) >= 0.85 for _, scores in seeds)


def test_loaded_sample_exports_to_a_valid_dataset_with_counted_rejects(db, database_url, tmp_path):
    profiles, scores = sample.load_sample(db, 1500, seed=3)
    assert profiles == 1500 + sample.SEED_PROFILE_COUNT
    manifest = export_dataset(
        ConnectionParams.from_url(database_url), str(tmp_path), ExportConfig(progress=False, seed_ids=sample.seed_profile_ids())
    )
    assert manifest["counts"]["seed_profiles_in_holdout"] == sample.SEED_PROFILE_COUNT
    assert manifest["counts"]["rejected"] > 0  # the dirty fraction is counted, not dropped
    assert manifest["counts"]["total"] + manifest["counts"]["rejected"] == manifest["source"]["rows_read"]
    assert validate_dataset(str(tmp_path), min_rows=1000).valid


def test_a_week_of_new_scores_is_what_the_next_run_shadows_and_exports_cleanly(db, database_url, tmp_path):
    """The demo's database after one run: the sample plus a week of profiles first scored after that
    run's export - fresh to the shadow, in the next dataset, none colliding with the sample's handles."""
    import datetime as dt

    from pipeline.dataset import fresh
    from pipeline.dataset.source import DEFAULT_TEACHERS

    exported = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
    week = list(sample.week_of_new_scores(1, exported))
    assert week == list(sample.week_of_new_scores(1, exported)) and week != list(sample.week_of_new_scores(2, exported))
    assert all(score.scored_at > exported for _, scores in week for score in scores)
    sample.load_sample(db, 1500, seed=0)
    before = export_dataset(ConnectionParams.from_url(database_url), str(tmp_path / "before"), ExportConfig(progress=False))
    sample.load(db, week)

    found, rejected = fresh.fresh_profiles(db, since=exported, teachers=DEFAULT_TEACHERS, seed_ids=sample.seed_profile_ids(), limit=10_000)
    allowed = {profile.twitter_id for profile, scores in week if any(score.scored_by in DEFAULT_TEACHERS for score in scores)}
    assert {profile.row["twitter_id"] for profile in found} <= allowed
    assert len(found) + rejected == len(allowed)  # every one of the week's scored profiles, the damaged ones counted

    after = export_dataset(ConnectionParams.from_url(database_url), str(tmp_path / "after"), ExportConfig(progress=False))
    assert after["rejects"].get("duplicate_handle", 0) == before["rejects"].get("duplicate_handle", 0)
    assert after["counts"]["total"] - before["counts"]["total"] == len(found)
