"""DeployModel, promote and Rollback on an Ollama server; the production pointer.

Tags: every run's model is ``mistral-researcher:<run_id>-<hash>`` (the candidate); production is
``mistral-researcher:latest`` (configurable), a copy of one run's tag. The pointer object
``<root>/models/current.json`` names the run in production and is written only after its tag was
copied, so the pointer is the truth and the production tag can always be restored from it. Each
step is idempotent: the state machine may retry any of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from pipeline import contracts, runs, storage
from pipeline.errors import PipelineError
from pipeline.serving import modelfile
from pipeline.serving.ollama import OllamaClient

POINTER_PATH = (contracts.MODELS_DIR, contracts.POINTER_NAME)
GGUF_FILE_NAME = contracts.GGUF_NAME
MODELFILE_NAME = contracts.MODELFILE_NAME


class PromotionError(PipelineError):
    """The candidate cannot be promoted (it is not on the server, or the pointer cannot be written)."""


class RestoreError(PipelineError):
    """Production cannot be restored: the pointer's model is gone from the server."""


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = contracts.MODEL_NAME
    production_tag: str = contracts.PRODUCTION_TAG
    # Where the pointer lives under the root: models/current.json in the bucket; the local loop
    # keeps it beside its runs (runs/current.json).
    pointer_path: tuple[str, ...] = POINTER_PATH

    @property
    def production(self) -> str:
        return f"{self.model_name}:{self.production_tag}"

    def candidate(self, run_id: str) -> str:
        return modelfile.model_tag(runs.check_run_id(run_id), self.model_name)


# The pointer's field for the Ollama manifest digest of the promoted tag (GET /api/tags).
OLLAMA_DIGEST_KEY = "ollama_digest"

# An Ollama tag as the pointer names production ("mistral-researcher:latest"); a GGUF path is none.
OLLAMA_TAG = re.compile(f"(?P<model>{contracts.MODEL_NAME_PATTERN.pattern}):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")


def ollama_tag_parts(value: Any) -> tuple[str, str] | None:
    """(model name, tag) of an Ollama tag, or None for anything else (a path, s3://...)."""
    match = OLLAMA_TAG.fullmatch(value) if isinstance(value, str) else None
    return (match["model"], match["tag"]) if match else None


def config_from_pointer(root: str, config: ServingConfig) -> ServingConfig:
    """``config`` with the model name and production tag the pointer's production has, when it
    names an Ollama tag: the stack's modelName, whatever the caller's default."""
    pointer = read_pointer(root, config)
    parts = ollama_tag_parts(pointer.get("production")) if pointer else None
    return dataclasses.replace(config, model_name=parts[0], production_tag=parts[1]) if parts else config


def pointer_uri(root: str, config: ServingConfig = ServingConfig()) -> str:
    return storage.join(root, *config.pointer_path)


def read_pointer(root: str, config: ServingConfig = ServingConfig()) -> dict[str, Any] | None:
    uri = pointer_uri(root, config)
    return storage.read_json(uri) if storage.exists(uri) else None


def gguf_digest(gguf_uri: str) -> tuple[str, int]:
    """(sha256, size) of the GGUF: from the export's description when present, else by reading it."""
    description_uri = f"{gguf_uri}.json"
    if storage.exists(description_uri):
        description = storage.read_json(description_uri)
        if description.get("sha256") and description.get("size") == storage.size_of(gguf_uri):
            return description["sha256"], description["size"]
    return storage.sha256_of(gguf_uri)


def _sibling(uri: str, name: str) -> str:
    if storage.is_s3(uri):
        return uri.rsplit("/", 1)[0] + "/" + name
    return posixpath.join(posixpath.dirname(uri) or ".", name)


def deploy(client: OllamaClient, gguf_uri: str, run_id: str, config: ServingConfig = ServingConfig()) -> dict[str, Any]:
    """Upload the GGUF (skipped when Ollama has the blob) and create the candidate tag."""
    sha256, size = gguf_digest(gguf_uri)
    uploaded = False
    if not client.has_blob(sha256):
        client.push_blob(sha256, lambda: storage.open_read(gguf_uri))
        uploaded = True
    candidate = config.candidate(run_id)
    client.create(modelfile.create_request(candidate, GGUF_FILE_NAME, sha256))
    modelfile_uri = _sibling(gguf_uri, MODELFILE_NAME)
    storage.write_bytes(modelfile_uri, modelfile.render_modelfile(f"./{posixpath.basename(gguf_uri)}").encode("utf-8"))
    return {
        "run_id": run_id,
        "candidate": candidate,
        "gguf_uri": gguf_uri,
        "gguf_sha256": sha256,
        "gguf_bytes": size,
        "uploaded": uploaded,
        "modelfile_uri": modelfile_uri,
    }


def promote(
    client: OllamaClient, root: str, run_id: str, record: dict[str, Any], config: ServingConfig = ServingConfig()
) -> dict[str, Any]:
    """Make the candidate production: copy its tag, then write the pointer. ``record`` goes into the
    pointer (dataset sha256, adapter URI, GGUF sha256, metrics)."""
    candidate = config.candidate(run_id)
    tags = client.tags()
    if candidate not in tags:
        raise PromotionError(f"{candidate} is not on the Ollama server at {client.base_url}; deploy it first")
    replaced = read_pointer(root, config)
    # Protected before it becomes production: the GGUF in production never carries the expiring tag.
    _retain(_gguf_of(root, record, run_id), contracts.RETENTION_PRODUCTION, required=True)
    client.copy(candidate, config.production)
    # The manifest digest production must have (a copy keeps it): ScoreProfiles verifies it before
    # scoring, RestoreError where the tag was replaced since - Ollama's API has no authentication.
    record = {**record, OLLAMA_DIGEST_KEY: tags[candidate]}
    pointer = write_pointer(root, run_id, record, model=candidate, production=config.production, config=config)
    _prune(client, config, keep={candidate, pointer["previous"]["model"] if pointer["previous"] else candidate})
    kept = {run_id, *(entry["run_id"] for entry in [pointer["previous"]] if entry)}
    if pointer["previous"] and pointer["previous"]["run_id"] != run_id:
        _retain(_gguf_of(root, pointer["previous"]), contracts.RETENTION_RESTORE_POINT)
    for entry in (replaced, (replaced or {}).get("previous")):
        if entry and entry.get("run_id") not in kept:
            _retain(_gguf_of(root, entry), contracts.RETENTION_EXPIRING)  # back to the lifecycle rule
    return pointer


def _gguf_of(root: str, entry: dict[str, Any], run_id: str | None = None) -> str:
    return entry.get("gguf_uri") or runs.gguf_uri(root, run_id or entry["run_id"])


def _retain(uri: str, retention: str, *, required: bool = False) -> None:
    """Tag a GGUF for the bucket's lifecycle rule. Only the production tag must succeed (an untagged
    older GGUF is merely kept longer); a GGUF that is gone is skipped."""
    try:
        if storage.exists(uri):
            storage.set_tags(uri, {contracts.RETENTION_TAG: retention})
        elif required and storage.is_s3(uri):
            raise PromotionError(f"{uri} does not exist: the run to promote has no GGUF in the bucket")
    except storage.StorageError as exc:
        if required:
            raise PromotionError(f"cannot mark {uri} as production (it would expire): {exc}") from None


def write_pointer(
    root: str, run_id: str, record: dict[str, Any], *, model: str, production: str, config: ServingConfig = ServingConfig()
) -> dict[str, Any]:
    """Name ``run_id`` as production; the pointer it replaces becomes ``previous`` (one level)."""
    previous = read_pointer(root, config)
    if previous and previous.get("run_id") == run_id:  # a retry after the pointer was written
        previous = previous.get("previous")
    pointer = {
        **record,
        "run_id": run_id,
        "model": model,
        "production": production,
        "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "previous": {key: value for key, value in previous.items() if key != "previous"} if previous else None,
    }
    storage.write_json(pointer_uri(root, config), pointer)
    return pointer


def rollback(client: OllamaClient, root: str, run_id: str, config: ServingConfig = ServingConfig()) -> dict[str, Any]:
    """Leave production as the pointer says: restore its tag if a promote was cut off, delete the
    candidate. The pointer is never changed here."""
    candidate = config.candidate(run_id)
    pointer = read_pointer(root, config)
    tags = client.tags()
    restored = removed_production = False
    if pointer and pointer.get("run_id") == run_id:
        # The promote finished (its pointer is written): this run is production, nothing to undo.
        return {
            "run_id": run_id,
            "candidate_deleted": False,
            "production_restored": False,
            "production": pointer["model"],
            "note": "this run is the promoted one; production unchanged",
        }
    if pointer:
        source = pointer["model"]
        if source not in tags:
            raise RestoreError(f"the pointer names {source}, which is not on the Ollama server at {client.base_url}")
        if pointer.get(OLLAMA_DIGEST_KEY) and tags[source] != pointer[OLLAMA_DIGEST_KEY]:
            raise RestoreError(
                f"{source} on {client.base_url} is not the model the pointer promoted (manifest {tags[source][:19]}, "
                f"promoted {str(pointer[OLLAMA_DIGEST_KEY])[:19]}): it was replaced; re-deploy it with "
                "`python -m pipeline promote` from its verified GGUF"
            )
        if tags.get(config.production) != tags[source]:
            client.copy(source, config.production)
            restored = True
    elif config.production in tags and tags.get(config.production) == tags.get(candidate):
        # No model was ever promoted: a production tag equal to the candidate is a cut-off promote.
        client.delete(config.production)
        removed_production = True
    deleted = client.delete(candidate)
    return {
        "run_id": run_id,
        "candidate_deleted": deleted,
        "production_restored": restored,
        "production_removed": removed_production,
        "production": pointer["model"] if pointer else None,
    }


def _prune(client: OllamaClient, config: ServingConfig, keep: set[str]) -> list[str]:
    """Delete older run tags of this model, keeping production's run and the one before it (the
    restore point): a g4dn root volume holds a handful of 4 GB models, not fifty."""
    removed = []
    prefix = f"{config.model_name}:"
    for name in client.tags():
        if name.startswith(prefix) and name != config.production and name not in keep:
            with contextlib.suppress(PipelineError):
                if client.delete(name):
                    removed.append(name)
    return removed


class UnvalidatedModel(PipelineError):
    """The GGUF to promote is not the one its run's report validated (replaced since, or never
    recorded there)."""


def check_validated(report: dict[str, Any], run_id: str, gguf_uri: str, sha256: str) -> None:
    """Refuse a GGUF whose digest is not the one the run's report recorded as validated."""
    validated = report.get("gguf_sha256")
    if not validated:
        raise UnvalidatedModel(f"run {run_id}'s report records no GGUF digest: it cannot show that {gguf_uri} is what was validated")
    if validated != sha256:
        raise UnvalidatedModel(f"{gguf_uri} has sha256 {sha256[:12]}…, but run {run_id} validated {validated[:12]}…: it was replaced since")


def run_record(root: str, run_id: str, adapter_uri: str | None, gguf_uri: str | None = None) -> dict[str, Any]:
    """What the pointer says about a run: where its inputs and outputs are, their hashes, its metrics."""
    gguf = gguf_uri or runs.gguf_uri(root, run_id)
    manifest = storage.read_bytes(storage.join(runs.dataset_uri(root, run_id), contracts.MANIFEST_NAME))
    report = storage.read_json(storage.join(runs.report_uri(root, run_id), contracts.REPORT_JSON))
    sha256, size = gguf_digest(gguf)
    return {
        "dataset_uri": runs.dataset_uri(root, run_id),
        "dataset_sha256": hashlib.sha256(manifest).hexdigest(),  # the manifest pins every file's sha256
        "adapter_uri": adapter_uri,
        "gguf_uri": gguf,
        "gguf_sha256": sha256,
        "gguf_bytes": size,
        "metrics": report["metrics"],
        "report_uri": storage.join(runs.report_uri(root, run_id), contracts.REPORT_MD),
    }


def promote_run(
    client: OllamaClient,
    root: str,
    run_id: str,
    adapter_uri: str | None,
    config: ServingConfig = ServingConfig(),
    gguf_uri: str | None = None,
) -> dict[str, Any]:
    """The PromoteModel state: only a run whose report passed the gates becomes production."""
    report = storage.read_json(storage.join(runs.report_uri(root, run_id), contracts.REPORT_JSON))
    if not report.get("passed"):  # the gates are the only way into production
        raise PromotionError(f"run {run_id} did not pass validation (failed: {report.get('failed_gates')})")
    record = run_record(root, run_id, adapter_uri, gguf_uri)
    check_validated(report, run_id, record["gguf_uri"], record["gguf_sha256"])
    pointer = promote(client, root, run_id, record, config)
    return {
        "run_id": run_id,
        "production": pointer["production"],
        "model": pointer["model"],
        "pointer_uri": pointer_uri(root, config),
        "previous_run_id": (pointer["previous"] or {}).get("run_id"),
    }
