"""The dataset stages as the orchestrators call them: small JSON-able results, URIs not data.

Used by the Lambda adapters (GenerateDataset, ValidateData) and the local loop; no AWS event
shapes here.
"""

from __future__ import annotations

from typing import Any

from pipeline import contracts, runs, storage
from pipeline.contracts import MANIFEST_NAME
from pipeline.dataset import export, source, split, validate


def generate_dataset(
    params: source.ConnectionParams,
    artifact_root: str,
    run_id: str,
    *,
    teachers: tuple[str, ...] = source.DEFAULT_TEACHERS,
    fractions: split.SplitFractions | None = None,
    seed_ids: frozenset[str],
    min_rows: int = contracts.DEFAULT_MIN_ROWS,
    progress: bool = False,
) -> dict[str, Any]:
    """Export ``runs/<run_id>/dataset/`` under ``artifact_root``; returns URIs, counts and hashes."""
    dataset_uri = runs.dataset_uri(artifact_root, run_id)
    config = export.ExportConfig(
        teachers=teachers,
        fractions=fractions or split.SplitFractions(),
        seed_ids=seed_ids,
        min_rows=min_rows,
        progress=progress,
    )
    manifest = export.export_dataset(params, dataset_uri, config)
    return {
        "run_id": run_id,
        "dataset_uri": dataset_uri,
        "manifest_uri": storage.join(dataset_uri, MANIFEST_NAME),
        "counts": manifest["counts"],
        "rejects": manifest["rejects"],
        "files": {
            name: {"uri": storage.join(dataset_uri, entry["name"]), "rows": entry["rows"], "sha256": entry["sha256"]}
            for name, entry in manifest["files"].items()
        },
    }


def validate_data(dataset_uri: str, min_rows: int = contracts.DEFAULT_MIN_ROWS,
                  min_seed_profiles: int = contracts.DEFAULT_MIN_SEED_PROFILES) -> dict[str, Any]:
    """``{valid, problems, counts, class_balance, warnings, dataset_uri}``."""
    result = validate.validate_dataset(dataset_uri, min_rows, min_seed_profiles)
    return {**result.to_dict(), "dataset_uri": dataset_uri}
