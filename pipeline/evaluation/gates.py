"""The quality gates: one home for their thresholds (defaults from the spec's Success Criteria) and
the metrics they read.

Unparseable answers are not dropped: they count as invalid for the valid-JSON gate and score 0.0
for the score gates (a model that cannot answer a seed profile has not recognised the researcher).
A request that got no answer at all (scorer.REQUEST_FAILURES: a timeout, an unreachable host) says
nothing of the model: it counts under the request-failure gate only, never as a score, and its
elapsed time counts in the latencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from pipeline.contracts import GATE_RULES, GATES, MIN_HOLDOUT_PROFILES, MIN_SEED_SAMPLE
from pipeline.errors import InvalidArgument, PipelineError
from pipeline.evaluation import champion as champion_module
from pipeline.scoring.scorer import ScoreResult

INVALID_ANSWER_SCORE = 0.0


class EmptyEvaluationSet(PipelineError):
    """A holdout or seed file has no profiles: the gates cannot be evaluated."""


def _default(name: str) -> float:
    return GATE_RULES[name].default


@dataclass(frozen=True)
class QualityGates:
    """Thresholds; their defaults, valid ranges and comparisons are pipeline.contracts.GATES."""

    seed_mean_min: float = _default("seed_mean_min")
    seed_min_min: float = _default("seed_min_min")
    correlation_min: float = _default("correlation_min")
    latency_p50_max_s: float = _default("latency_p50_max_s")
    latency_p95_max_s: float = _default("latency_p95_max_s")
    valid_json_rate_min: float = _default("valid_json_rate_min")
    request_failure_rate_max: float = _default("request_failure_rate_max")
    champion_pearson_drop_max: float = _default("champion_pearson_drop_max")
    champion_mae_rise_max: float = _default("champion_mae_rise_max")

    def __post_init__(self) -> None:
        for rule in GATES:
            problem = rule.problem(getattr(self, rule.name))
            if problem:
                raise InvalidArgument(f"gate {rule.name} {problem}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> QualityGates:
        """From a config/event mapping; unknown names are an error, not ignored."""
        values = values or {}
        if not isinstance(values, Mapping):
            raise InvalidArgument(f"gate thresholds must be an object of name: number, got {type(values).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(f"unknown gate(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**{name: float(value) for name, value in values.items()})
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"gate thresholds must be numbers: {exc}") from None

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None  # None: the metric is undefined (the gate fails)
    threshold: float
    comparison: str  # ">", "<" or ">="
    passed: bool
    detail: str = ""


def effective_score(result: ScoreResult) -> float:
    return result.score if result.score is not None else INVALID_ANSWER_SCORE


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (for Spearman). Eight lines of numpy instead
    of adding scipy to the Lambda for one function."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Pearson's r; None when either side is constant (undefined) or there are fewer than 2 pairs."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2:
        return None
    return pearson(average_ranks(a), average_ranks(b))


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def seed_figures(seeds: Sequence[ScoreResult]) -> tuple[float | None, float | None]:
    """(seed_mean, seed_min) of the answered seed profiles; None when none was answered."""
    scores = [effective_score(result) for result in seeds if result.answered]
    return (float(np.mean(scores)), float(np.min(scores))) if scores else (None, None)


def agreement_by_teacher(holdout: Sequence[ScoreResult]) -> dict[str, dict[str, Any]]:
    """Pearson and MAE of the model with each teacher, on the holdout profiles that teacher labelled."""
    by_teacher: dict[str, list[ScoreResult]] = {}
    for result in holdout:
        by_teacher.setdefault(result.profile.teacher, []).append(result)
    return {
        teacher: agreement(
            np.asarray([effective_score(result) for result in results]), np.asarray([result.profile.teacher_score for result in results])
        )
        for teacher, results in sorted(by_teacher.items())
    }


def agreement(model: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One teacher's figures: profiles, Pearson (None when undefined) and MAE of ``model`` with ``labels``."""
    return {"profiles": len(model), "pearson": pearson(model, labels), "mae": float(np.mean(np.abs(model - labels)))}


def compute_metrics(
    holdout: Sequence[ScoreResult],
    seeds: Sequence[ScoreResult],
    champion: champion_module.Comparison | None = None,
    *,
    teacher: str | None = None,
) -> dict[str, Any]:
    """The gates' metrics. With ``teacher``, the agreement figures the gates read (pearson, mae,
    holdout_profiles) are of the holdout profiles that teacher labelled (the design's
    "Correlation with Claude"); ``pearson_by_teacher`` has every teacher's."""
    if not holdout:
        raise EmptyEvaluationSet("the holdout set has no profiles: the correlation gate cannot be evaluated")
    if not seeds:
        raise EmptyEvaluationSet("the seed set has no profiles: the seed gates cannot be evaluated")
    everything = [*holdout, *seeds]
    latencies = [result.latency_s for result in everything]  # failed requests with the time they took
    failed = sum(not result.answered for result in everything)
    # The model's figures are read on what it answered: a request failure is no answer of it.
    holdout, seeds = [r for r in holdout if r.answered], [r for r in seeds if r.answered]
    answered = [*holdout, *seeds]
    by_teacher = agreement_by_teacher(holdout)
    holdout_answered = len(holdout)
    if teacher is not None:
        holdout = [r for r in holdout if r.profile.teacher == teacher]
    model = [effective_score(result) for result in holdout]
    labels = [result.profile.teacher_score for result in holdout]
    seed_mean, seed_min = seed_figures(seeds)
    valid = sum(result.ok for result in answered)
    return {
        "profiles": len(everything),
        "holdout_profiles": len(holdout),  # the agreement gates' sample
        "holdout_answered": holdout_answered,  # every teacher's
        "gated_teacher": teacher,  # None: every teacher's labels
        "pearson_by_teacher": by_teacher,
        "seed_profiles": len(seeds),
        "valid_answers": valid,
        "request_failures": failed,
        "request_failure_rate": failed / len(everything),
        "handle_mismatches": sum(result.ok and not result.handle_matches for result in answered),
        "valid_json_rate": valid / len(answered) if answered else None,
        "seed_mean": seed_mean,
        "seed_min": seed_min,
        "pearson": pearson(model, labels),
        "spearman": spearman(model, labels),
        "mae": float(np.mean(np.abs(np.asarray(model) - np.asarray(labels)))) if holdout else None,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "prompt_tokens_mean": float(np.mean([r.prompt_tokens for r in answered])) if answered else None,
        "answer_tokens_mean": float(np.mean([r.answer_tokens for r in answered])) if answered else None,
        "answer_tokens_max": int(max(r.answer_tokens for r in answered)) if answered else None,
        **(champion.metrics() if champion else {"champion_pearson_drop": None, "champion_mae_rise": None, "champion": None}),
    }


def _gate(name: str, value: float | None, threshold: float, comparison: str, undefined: str = "") -> GateResult:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return GateResult(name, None, threshold, comparison, False, undefined or "undefined")
    passed = {">": value > threshold, "<": value < threshold, ">=": value >= threshold}[comparison]
    return GateResult(name, value, threshold, comparison, passed)


UNDEFINED = {"pearson": "correlation undefined: the model's or the teacher's scores are constant"}
# The sample each metric is read on, and the least it may be (pipeline.contracts): a gate never
# passes on a sample too small to mean anything, whatever limits an execution set.
SAMPLE_FLOORS = {
    "pearson": ("holdout_profiles", MIN_HOLDOUT_PROFILES),
    "seed_mean": ("seed_profiles", MIN_SEED_SAMPLE),
    "seed_min": ("seed_profiles", MIN_SEED_SAMPLE),
}


def _sample_too_small(metric: str, metrics: Mapping[str, Any]) -> str:
    if metric not in SAMPLE_FLOORS:
        return ""
    sample, floor = SAMPLE_FLOORS[metric]
    if metrics[sample] >= floor:
        return ""
    labelled = f" (answered, scored by {metrics['gated_teacher']})" if sample == "holdout_profiles" and metrics.get("gated_teacher") else ""
    return f"too few profiles: {metrics[sample]} {sample}{labelled}, at least {floor} needed"


def _champion_gate(rule, metrics: Mapping[str, Any], threshold: float) -> GateResult | None:
    """The champion gates' own cases: nothing in production yet, or production's correlation undefined."""
    if not rule.metric.startswith("champion_"):
        return None
    comparison = metrics.get("champion")
    if comparison is None:
        detail = metrics.get("champion_unavailable") or champion_module.NO_CHAMPION  # said, never silent
        return GateResult(rule.metric, None, threshold, rule.comparison, True, detail)
    if metrics[rule.metric] is None and comparison["champion_pearson"] is None:
        return GateResult(rule.metric, None, threshold, rule.comparison, True, "the production model's correlation is undefined")
    return None


def evaluate(metrics: dict[str, Any], gates: QualityGates) -> list[GateResult]:
    results = []
    for rule in GATES:
        threshold = getattr(gates, rule.name)
        special = _champion_gate(rule, metrics, threshold)
        if special:
            results.append(special)
            continue
        too_small = _sample_too_small(rule.metric, metrics)
        if too_small:
            results.append(GateResult(rule.metric, metrics[rule.metric], threshold, rule.comparison, False, too_small))
        else:
            results.append(_gate(rule.metric, metrics[rule.metric], threshold, rule.comparison, UNDEFINED.get(rule.metric, "")))
    return results
