"""Evaluation: score the holdout and seed profiles with a backend, apply the gates, write the
report (``evaluate``); and the ValidateModel state on a run's candidate tag (``validate_model``)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Any

from pipeline import contracts, runs, storage
from pipeline.evaluation import champion
from pipeline.evaluation import gates as gates_module
from pipeline.evaluation import report as report_module
from pipeline.evaluation.gates import QualityGates
from pipeline.scoring.scorer import (
    TRANSPORT_FAILURES,
    Backend,
    OllamaBackend,
    Profile,
    ScoreResult,
    as_production_asks,
    read_profiles,
    score_profiles,
)
from pipeline.serving import modelfile
from pipeline.serving.lifecycle import ServingConfig
from pipeline.serving.ollama import OllamaClient

# Holdout profiles scored at most (all seed profiles are always scored): enough for a correlation
# to two decimals, and a bound on validation time on one g4dn (~1 s per profile).
DEFAULT_MAX_HOLDOUT = 500
SAMPLE_SEED = 0


GATED_TEACHER = contracts.GATED_TEACHER
# Decoding seeds the seed profiles are scored with besides the pinned one, for the report's
# stability of the seed gates (the gates read the pinned seed's scoring, what production serves).
STABILITY_SEEDS = (1, 2)


def sample_holdout(profiles: Sequence[Profile], limit: int | None, teacher: str = GATED_TEACHER) -> list[Profile]:
    """A deterministic sample (the same profiles each run for the same holdout): ``teacher``'s
    profiles first, the agreement gates' sample, then the others' up to ``limit``."""
    if limit is None or len(profiles) <= limit:
        return list(profiles)
    rng = random.Random(SAMPLE_SEED)
    gated = [profile for profile in profiles if profile.teacher == teacher]
    chosen = rng.sample(gated, min(limit, len(gated)))
    return chosen + rng.sample([profile for profile in profiles if profile.teacher != teacher], limit - len(chosen))


def seed_gate_stability(backends: Sequence[Backend], seeds: Sequence[Profile], pinned: Sequence[ScoreResult]) -> dict[str, Any]:
    """The seed gates' figures under other decoding seeds: the pinned seed's scoring (``pinned``)
    and one per STABILITY_SEEDS, their medians. A model whose seed_min moves across the gate's
    threshold from seed to seed is a coin flip, whatever the pinned seed said."""
    scorings = [pinned] + [score_profiles(backends, seeds, progress=False, seed=seed) for seed in STABILITY_SEEDS]
    figures = [gates_module.seed_figures(results) for results in scorings]
    return {
        "decoding_seeds": [modelfile.DECODING_SEED, *STABILITY_SEEDS],
        "seed_mean": [mean for mean, _ in figures],
        "seed_min": [low for _, low in figures],
        "median_seed_mean": _median([mean for mean, _ in figures]),
        "median_seed_min": _median([low for _, low in figures]),
    }


def _median(values: Sequence[float | None]) -> float | None:
    defined = [value for value in values if value is not None]
    return float(statistics.median(defined)) if defined else None


def score_again_on_transport_failure(backends: Sequence[Backend], results: list[ScoreResult]) -> list[ScoreResult]:
    """``results`` with each request that failed on its way (a timeout, an unreachable host: the
    client's own retries spent) asked once more, after the whole batch: a host hiccup passes while
    the others are scored. What fails again stays a request failure, counted by its own gate."""
    failed = [index for index, result in enumerate(results) if result.error in TRANSPORT_FAILURES]
    if not failed:
        return results
    again = score_profiles(backends, [results[index].profile for index in failed], progress=False)
    results = list(results)
    for index, result in zip(failed, again, strict=True):
        results[index] = result
    return results


def evaluate(
    backends: Sequence[Backend],
    *,
    model: str,
    backend_name: str,
    holdout_uri: str,
    seeds_uri: str,
    out_uri: str,
    gates: QualityGates = QualityGates(),
    max_holdout: int | None = DEFAULT_MAX_HOLDOUT,
    progress: bool = True,
    champion_backends: Sequence[Backend] | None = None,
    champion_model: str | None = None,
    champion_unavailable: str | None = None,
    gguf_sha256: str | None = None,
) -> dict[str, Any]:
    """Score the holdout and seed profiles, apply the gates, write the report. With
    ``champion_backends`` (the model in production) the same holdout is scored by it too, and the
    champion/challenger gates compare the two (champion.py); without, they pass (nothing to beat)."""
    holdout_profiles = [as_production_asks(profile) for profile in sample_holdout(read_profiles(holdout_uri), max_holdout)]
    seed_profiles = [as_production_asks(profile) for profile in read_profiles(seeds_uri)]
    # Checked before any model call: a clear error, fast.
    if not holdout_profiles:
        raise gates_module.EmptyEvaluationSet(f"{holdout_uri} has no profiles: the correlation gate cannot be evaluated")
    if not seed_profiles:
        raise gates_module.EmptyEvaluationSet(f"{seeds_uri} has no profiles: the seed gates cannot be evaluated")
    results = score_again_on_transport_failure(backends, score_profiles(backends, [*holdout_profiles, *seed_profiles], progress=progress))
    holdout, seeds = results[: len(holdout_profiles)], results[len(holdout_profiles) :]
    comparison, champion_holdout = None, None
    gated = [result for result in holdout if result.profile.teacher == GATED_TEACHER]
    if champion_backends and not gated:  # the correlation gate fails on it too ("too few profiles")
        champion_unavailable = f"no holdout profile scored by {GATED_TEACHER} to compare the models on"
    elif champion_backends:  # on the profiles the agreement gates read
        champion_holdout = score_again_on_transport_failure(
            champion_backends, score_profiles(champion_backends, [r.profile for r in gated], progress=progress, description="production")
        )
        comparison = champion.compare(gated, champion_holdout, champion_model=champion_model or "production")
    metrics = gates_module.compute_metrics(holdout, seeds, comparison, teacher=GATED_TEACHER)
    metrics["seed_gate_stability"] = seed_gate_stability(backends, seed_profiles, seeds)
    if champion_unavailable:
        metrics["champion_unavailable"] = champion_unavailable
    gate_results = gates_module.evaluate(metrics, gates)
    report = report_module.build_report(
        model=model,
        backend=backend_name,
        metrics=metrics,
        gates=gate_results,
        thresholds=gates.as_dict(),
        holdout=holdout,
        seeds=seeds,
        gguf_sha256=gguf_sha256,
    )
    written = report_module.write_report(out_uri, report, holdout, seeds, champion_holdout)
    return {
        "passed": report["passed"],
        "failed_gates": report["failed_gates"],
        "model": model,
        "metrics": metrics,
        "gates": report["gates"],
        "report_uri": written[contracts.REPORT_JSON],
        "report_md_uri": written[contracts.REPORT_MD],
    }


def validate_model(
    client: OllamaClient,
    root: str,
    run_id: str,
    *,
    gates: QualityGates = QualityGates(),
    concurrency: int = 4,
    max_holdout: int | None = DEFAULT_MAX_HOLDOUT,
    config: ServingConfig = ServingConfig(),
    progress: bool = False,
    shadow_drop_alert: float | None = None,
) -> dict[str, Any]:
    """The ValidateModel state: the run's holdout and seed profiles scored by its candidate tag;
    runs/<run_id>/report/ written."""
    from pipeline.serving import lifecycle

    dataset = runs.dataset_uri(root, run_id)
    candidate = config.candidate(run_id)
    # The GGUF DeployModel created the candidate from (its digest, as DeployModel read it).
    gguf_sha256, _ = lifecycle.gguf_digest(runs.gguf_uri(root, run_id))
    # The model in production, when there is one, scores the same holdout (champion/challenger).
    in_production = lifecycle.read_pointer(root, config) is not None
    summary = evaluate(
        [OllamaBackend(client, candidate)] * concurrency,
        model=candidate,
        backend_name=f"ollama {client.base_url}",
        holdout_uri=storage.join(dataset, contracts.HOLDOUT_FILE),
        seeds_uri=storage.join(dataset, contracts.SEEDS_FILE),
        out_uri=runs.report_uri(root, run_id),
        gates=gates,
        max_holdout=max_holdout,
        progress=progress,
        champion_backends=[OllamaBackend(client, config.production)] * concurrency if in_production else None,
        champion_model=config.production,
        gguf_sha256=gguf_sha256,
    )
    shadowed = None
    if in_production:  # Phase 4's shadow: production against the teachers on GenerateDataset's fresh profiles
        from pipeline.evaluation import shadow

        result = shadow.shadow_run(
            root,
            run_id,
            [OllamaBackend(client, config.production)] * concurrency,
            model=config.production,
            drop_alert=shadow.DEFAULT_DROP_ALERT if shadow_drop_alert is None else shadow_drop_alert,
        )
        if result is not None:
            shadowed = {
                key: getattr(result, key)
                for key in ("profiles", "scored", "pearson", "mae", "agreement", "previous_pearson", "alert", "status")
            }
    return {"run_id": run_id, **summary, "shadow": shadowed}
