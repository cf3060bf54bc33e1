import json

import pytest

from pipeline import contracts, prompt
from pipeline.dataset import generate, source, validate
from pipeline.dataset.split import SplitFractions
from tests.factories import load_rows, researchers

SEED_PROFILES = 12
# These datasets hold 60 profiles (~15 held out): the holdout floor is lowered here, and tested at
# its real value below.
SMALL_HOLDOUT = 5


def validate_small(dataset_uri, *args, **kwargs):
    return validate.validate_dataset(dataset_uri, *args, min_holdout_profiles=SMALL_HOLDOUT, **kwargs)


def export_with_seeds(db, database_url, directory, seed_count: int):
    rows = researchers(60)
    load_rows(db, rows)
    seed_ids = frozenset(profile.twitter_id for profile, _ in rows[:seed_count])
    generate.export_dataset(
        source.ConnectionParams.from_url(database_url),
        str(directory),
        generate.ExportConfig(progress=False, fractions=SplitFractions(0.5, 0.25, 0.25), seed_ids=seed_ids),
    )
    return directory


@pytest.fixture
def dataset(db, database_url, tmp_path):
    return export_with_seeds(db, database_url, tmp_path, SEED_PROFILES)


def test_too_few_seed_profiles_stop_the_run_before_training(db, database_url, tmp_path):
    """A seed list that matches few profiles (the wrong list, or the demo's synthetic ids on a real
    database) would leave the seed gates nothing to score after hours of GPU: refused here."""
    export_with_seeds(db, database_url, tmp_path, 3)
    result = validate_small(str(tmp_path), min_rows=60, min_seed_profiles=10)
    assert result.problem_names == ["TooFewSeedProfiles"]
    assert "3 seed profiles found in the database, at least 10 needed" in result.problems[0]["examples"][0]
    assert validate_small(str(tmp_path), min_rows=60, min_seed_profiles=3).valid


def test_a_fresh_export_is_valid_with_counts_and_class_balance(dataset):
    result = validate_small(str(dataset), min_rows=60)
    assert result.valid, result.problems
    assert result.counts["total"] == 60 and result.counts["malformed"] == 0
    assert sum(result.counts[name] for name in ("train", "validation", "holdout", "seeds")) == 60
    # researchers(60) scores are 0.01..0.60: eleven of them are >= 0.5
    assert result.class_balance["all"] == pytest.approx(11 / 60, abs=1e-4)


def test_too_few_rows_is_insufficient_data(dataset):
    result = validate_small(str(dataset), min_rows=1000)
    assert not result.valid
    assert result.problem_names == ["InsufficientData"]
    assert "60 usable rows, at least 1000 needed" in result.problems[0]["examples"][0]


def test_tampered_file_is_a_checksum_mismatch(dataset):
    train = dataset / "train.jsonl"
    train.write_bytes(train.read_bytes().replace(b"Professor", b"Professer", 1))
    result = validate_small(str(dataset), min_rows=1)
    assert result.problem_names == ["ChecksumMismatch"]


def test_malformed_rows_are_found_and_located(dataset):
    train = dataset / "train.jsonl"
    good = train.read_text().splitlines()
    bad_score = json.loads(good[0])
    bad_score["output"] = prompt.format_answer("x", 0.5, "r").replace('"0.50"', '"1.70"')
    other_handle = json.loads(good[1])
    other_handle["output"] = prompt.format_answer("someone_else", 0.5, "r")
    lines = ["not json", json.dumps(bad_score), json.dumps(other_handle), json.dumps({"instruction": "hi", "output": "{}"})]
    train.write_text("\n".join(lines + good[4:]) + "\n")
    result = validate_small(str(dataset), min_rows=1)
    problems = {p["reason"]: p for p in result.problems}
    assert problems["MalformedRow"]["count"] == 4
    assert problems["MalformedRow"]["examples"][0].startswith("train.jsonl:1: not JSON")
    assert "ChecksumMismatch" in problems and "CountMismatch" not in problems
    assert result.counts["malformed"] == 4


def test_duplicate_handles_across_splits_are_found(dataset):
    holdout_line = (dataset / "holdout.jsonl").read_text().splitlines()[0]
    with open(dataset / "train.jsonl", "a") as train:
        train.write(holdout_line + "\n")
    result = validate_small(str(dataset), min_rows=1)
    assert {"DuplicateHandle", "ChecksumMismatch", "CountMismatch"} == set(result.problem_names)


def test_missing_or_foreign_manifest(dataset):
    (dataset / "manifest.json").write_text('{"format": "something else"}')
    assert validate_small(str(dataset)).problem_names == ["ManifestInvalid"]
    (dataset / "manifest.json").unlink()
    assert validate_small(str(dataset)).problem_names == ["ManifestMissing"]


def test_missing_file(dataset):
    (dataset / "validation.jsonl").unlink()
    result = validate_small(str(dataset), min_rows=1)
    assert result.problem_names == ["FileMissing"]
    assert not result.valid


def test_class_imbalance_is_a_warning_not_a_failure(db, database_url, tmp_path):
    from tests.factories import profile, score

    load_rows(db, [(profile(str(i)), [score(str(i), "0.01")]) for i in range(40)])
    generate.export_dataset(source.ConnectionParams.from_url(database_url), str(tmp_path), generate.ExportConfig(progress=False))
    result = validate.validate_dataset(str(tmp_path), min_rows=10, min_seed_profiles=0, min_holdout_profiles=0)
    assert result.valid
    assert result.warnings == ["class imbalance: 0.0% of rows score >= 0.5"]


def test_a_holdout_too_small_for_the_correlation_gate_stops_the_run_before_training(dataset):
    result = validate.validate_dataset(str(dataset), min_rows=1)
    assert result.problem_names == ["TooFewHoldoutProfiles"]
    assert f"at least {contracts.MIN_HOLDOUT_PROFILES} needed" in result.problems[0]["examples"][0]


def test_a_holdout_without_enough_claude_labels_stops_the_run_before_training(db, database_url, tmp_path):
    """The correlation gate reads the holdout profiles Claude scored (the teacher production's prompt
    names): a holdout labelled by Gemini alone leaves it nothing, however large it is."""
    from tests.factories import profile, score

    load_rows(db, [(profile(str(i)), [score(str(i), f"{i % 100 / 100:.2f}", teacher="gemini-2.0-flash")]) for i in range(1, 61)])
    generate.export_dataset(
        source.ConnectionParams.from_url(database_url),
        str(tmp_path),
        generate.ExportConfig(progress=False, fractions=SplitFractions(0.5, 0.25, 0.25)),
    )
    result = validate.validate_dataset(str(tmp_path), min_rows=1, min_seed_profiles=0, min_holdout_profiles=SMALL_HOLDOUT)
    assert result.counts["holdout"] >= SMALL_HOLDOUT and result.problem_names == ["TooFewHoldoutProfiles"]
    assert result.problems[0]["examples"][0].startswith(f"0 holdout profiles scored by {prompt.DEFAULT_INFERENCE_TEACHER} (of ")
