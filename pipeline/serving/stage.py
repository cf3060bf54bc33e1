"""DeployModel, ValidateModel, PromoteModel and Rollback as the orchestrators call them: run ids
and URIs in, small JSON-able results out. Used by the Lambda adapters and the local loop."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from pipeline import contracts, runs, storage
from pipeline.contracts import MANIFEST_NAME
from pipeline.errors import InvalidArgument
from pipeline.evaluation import report as report_files
from pipeline.evaluation import stage as evaluation
from pipeline.evaluation.gates import QualityGates
from pipeline.serving import lifecycle
from pipeline.serving.lifecycle import ServingConfig
from pipeline.serving.ollama import OllamaClient
from pipeline.serving.scorer import OllamaBackend


@dataclass(frozen=True)
class ServingSettings:
    """The serving stages' settings, from environment variables (the Lambdas' configuration)."""

    ollama_url: str
    artifact_root: str
    serving: ServingConfig = ServingConfig()
    gates: QualityGates = field(default_factory=QualityGates)
    concurrency: int = 4
    max_holdout: int = evaluation.DEFAULT_MAX_HOLDOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServingSettings":
        missing = [name for name in ("OLLAMA_URL", "ARTIFACT_BUCKET") if not env.get(name)]
        if missing:
            raise InvalidArgument(f"environment variable(s) {', '.join(missing)} not set")
        try:
            gates = json.loads(env.get("QUALITY_GATES") or "{}")
            concurrency = int(env.get("VALIDATION_CONCURRENCY") or 4)
            max_holdout = int(env.get("VALIDATION_MAX_HOLDOUT") or evaluation.DEFAULT_MAX_HOLDOUT)
        except ValueError as exc:
            raise InvalidArgument(f"bad serving setting: {exc}") from None
        if concurrency < 1 or max_holdout < 1:
            raise InvalidArgument("VALIDATION_CONCURRENCY and VALIDATION_MAX_HOLDOUT must be at least 1")
        return cls(env["OLLAMA_URL"], f"s3://{env['ARTIFACT_BUCKET']}",
                   ServingConfig(env.get("MODEL_NAME") or ServingConfig.model_name,
                                 env.get("PRODUCTION_TAG") or ServingConfig.production_tag),
                   QualityGates.from_mapping(gates), concurrency, max_holdout)


def deploy_model(client: OllamaClient, root: str, run_id: str, gguf_uri: str | None = None,
                 config: ServingConfig = ServingConfig()) -> dict[str, Any]:
    return lifecycle.deploy(client, gguf_uri or runs.gguf_uri(root, run_id), run_id, config)


def validate_model(client: OllamaClient, root: str, run_id: str, *, gates: QualityGates = QualityGates(),
                   concurrency: int = 4, max_holdout: int | None = evaluation.DEFAULT_MAX_HOLDOUT,
                   config: ServingConfig = ServingConfig(), progress: bool = False) -> dict[str, Any]:
    """Score the run's holdout and seed profiles with its candidate tag; write runs/<run_id>/report/."""
    dataset = runs.dataset_uri(root, run_id)
    candidate = config.candidate(run_id)
    summary = evaluation.validate_model(
        [OllamaBackend(client, candidate)] * concurrency, model=candidate, backend_name=f"ollama {client.base_url}",
        holdout_uri=storage.join(dataset, contracts.HOLDOUT_FILE), seeds_uri=storage.join(dataset, contracts.SEEDS_FILE),
        out_uri=runs.report_uri(root, run_id), gates=gates, max_holdout=max_holdout, progress=progress,
    )
    return {"run_id": run_id, **summary}


def pointer_record(root: str, run_id: str, adapter_uri: str | None, gguf_uri: str | None = None) -> dict[str, Any]:
    """What the pointer says about a run: where its inputs and outputs are, their hashes, its metrics."""
    gguf = gguf_uri or runs.gguf_uri(root, run_id)
    manifest = storage.read_bytes(storage.join(runs.dataset_uri(root, run_id), MANIFEST_NAME))
    report = storage.read_json(storage.join(runs.report_uri(root, run_id), report_files.REPORT_JSON))
    sha256, size = lifecycle.gguf_digest(gguf)
    return {
        "dataset_uri": runs.dataset_uri(root, run_id),
        "dataset_sha256": hashlib.sha256(manifest).hexdigest(),  # the manifest pins every file's sha256
        "adapter_uri": adapter_uri,
        "gguf_uri": gguf,
        "gguf_sha256": sha256,
        "gguf_bytes": size,
        "metrics": report["metrics"],
        "report_uri": storage.join(runs.report_uri(root, run_id), report_files.REPORT_MD),
    }


def promote_model(client: OllamaClient, root: str, run_id: str, adapter_uri: str | None,
                  config: ServingConfig = ServingConfig(), gguf_uri: str | None = None) -> dict[str, Any]:
    report = storage.read_json(storage.join(runs.report_uri(root, run_id), report_files.REPORT_JSON))
    if not report.get("passed"):  # the gates are the only way into production
        raise lifecycle.PromotionError(f"run {run_id} did not pass validation (failed: {report.get('failed_gates')})")
    pointer = lifecycle.promote(client, root, run_id, pointer_record(root, run_id, adapter_uri, gguf_uri), config)
    return {"run_id": run_id, "production": pointer["production"], "model": pointer["model"],
            "pointer_uri": lifecycle.pointer_uri(root, config), "previous_run_id": (pointer["previous"] or {}).get("run_id")}


def rollback_model(client: OllamaClient, root: str, run_id: str, config: ServingConfig = ServingConfig()) -> dict[str, Any]:
    return lifecycle.rollback(client, root, run_id, config)
