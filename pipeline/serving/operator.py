"""Operator controls: `python -m pipeline promote --run RUN` pins a named run, `rollback --to RUN`
restores one. Both make that run production with the pipeline's own semantics (its candidate tag
copied to the production tag, then the pointer written, the GGUF's retention tags moved) and both
are recorded in the run history. A run that never passed its gates is refused unless forced.
"""

from __future__ import annotations

from typing import Any

from pipeline import contracts, history, runs, storage
from pipeline.errors import PipelineError
from pipeline.serving import lifecycle
from pipeline.serving.ollama import OllamaClient


class RunNotPromotable(PipelineError):
    """The run cannot be made production: it failed its gates (without --force), or left no report or GGUF."""


class HostRequired(PipelineError):
    """Production is a tag on the Ollama host (the stack's bucket, or a pointer that names a tag):
    moving the pointer alone would name a model the host does not serve."""


def serves_on_ollama(root: str, pointer: dict[str, Any] | None) -> bool:
    """Whether production is an Ollama tag here: always in the stack's bucket, and wherever the
    pointer names one (the local loop's llama.cpp pointer names its GGUF instead)."""
    return storage.is_s3(root) or bool(pointer and lifecycle.ollama_tag_parts(pointer.get("production")))


def _report(root: str, run_id: str) -> dict[str, Any]:
    uri = storage.join(runs.report_uri(root, run_id), contracts.REPORT_JSON)
    if not storage.exists(uri):
        raise RunNotPromotable(f"run {run_id} has no validation report ({uri}): it never reached ValidateModel")
    return storage.read_json(uri)


def _adapter_of(root: str, run_id: str) -> str | None:
    """The adapter the run trained (the local loop's adapter/, or the SageMaker job's output)."""
    recorded = history.read(root).runs().get(run_id) or {}
    adapter = history.value_at(recorded, ("training", "adapter_uri"))
    return adapter if isinstance(adapter, str) else runs.adapter_uri(root, run_id)


def pin(
    root: str,
    run_id: str,
    *,
    kind: str,
    client: OllamaClient | None = None,
    config: lifecycle.ServingConfig = lifecycle.ServingConfig(),
    force: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """Make ``run_id`` production (``kind``: history.Kind.PROMOTE or ROLLBACK). With an Ollama
    ``client`` the run's GGUF is deployed as its candidate when the tag is gone, then promoted;
    without, the pointer names the GGUF (the local loop's llama.cpp serving)."""
    runs.check_run_id(run_id)
    report = _report(root, run_id)
    passed = bool(report.get("passed"))
    if not passed and not force:
        failed_gates = ", ".join(map(str, report.get("failed_gates") or []))
        raise RunNotPromotable(f"run {run_id} failed its gates ({failed_gates}): pass --force to make it production anyway")
    gguf = runs.gguf_uri(root, run_id)
    if not storage.exists(gguf):
        raise RunNotPromotable(f"run {run_id} has no GGUF at {gguf} (expired or never converted): run the pipeline again instead")
    replaced = lifecycle.read_pointer(root, config)
    if client is None and serves_on_ollama(root, replaced):
        raise HostRequired(
            f"production at {root} is the Ollama host's {config.production}: pass --ollama-url http://<host>:11434 "
            "(the stack's ollama_private_endpoint, from inside the VPC) so that the host serves what the pointer names"
        )
    record = lifecycle.run_record(root, run_id, _adapter_of(root, run_id), gguf)
    # The digest the report validated, never whatever object is there now.
    try:
        lifecycle.check_validated(report, run_id, gguf, record["gguf_sha256"])
        vouched = True
    except lifecycle.UnvalidatedModel as exc:
        if not force:
            raise RunNotPromotable(f"{exc}: pass --force to make it production anyway") from None
        vouched = False
    forced = force and not (passed and vouched)
    if client is not None:
        # Created again from the verified blob (the upload skipped when the host has it): a tag of
        # that name on the host may have been replaced since.
        lifecycle.deploy(client, gguf, run_id, config)
        pointer = lifecycle.promote(client, root, run_id, record, config)
    else:
        pointer = lifecycle.write_pointer(root, run_id, record, model=gguf, production=gguf, config=config)
    replaced_run = replaced.get("run_id") if replaced else None
    history.append(root, history.action_record(kind, run_id, replaced=replaced_run, forced=forced, note=note))
    return {"run_id": run_id, "production": pointer["production"], "replaced": replaced_run, "forced": forced}
