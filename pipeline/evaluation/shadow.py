"""Shadow A/B against the teacher on fresh data (the spec's Phase 4, "A/B test custom vs Claude").

Fresh profiles are those the teachers first scored after the production model's dataset was
exported: no dataset up to production's could hold them, so no model in production trained on them.
The production model scores them as ScoreProfiles would (the same request path, pipeline.scoring),
and its answers are compared with the teachers': Pearson, MAE, agreement at the 0.5 threshold, the
largest disagreements with both answers. Each result goes into the run history (kind "shadow"), so
the agreement is a trend across runs; a drop beyond a setting from the previous result alerts.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from statistics import NormalDist
from typing import Any

import numpy as np

from pipeline import contracts, history, prompt, storage
from pipeline.dataset import fresh as fresh_module
from pipeline.dataset.fresh import FreshProfile, fresh_profiles
from pipeline.errors import PipelineError

SHADOW_DIR = contracts.SHADOW_DIR  # <root>/shadow/<time>/ on demand, runs/<run_id>/shadow/ in a run
DEFAULT_MAX_PROFILES = fresh_module.DEFAULT_MAX_PROFILES
DEFAULT_DROP_ALERT = 0.05  # Pearson points below the baseline shadow result
# Answered fresh profiles a result needs before it is compared or used as a baseline: below it a
# week's Pearson moves by chance alone past any useful alert (at 50 profiles a fixed 0.05 drop
# alerted 14-17 % of weeks with nothing changed). Below it the result says "insufficient".
MIN_SHADOW_PROFILES = 100
# The drop must also be significant: one-sided, Fisher's z for two independent samples' Pearson.
ALERT_CONFIDENCE = 0.95
LARGEST_SHOWN = 10
KIND = "shadow"


class NoProductionModel(PipelineError):
    """Shadow needs a model in production (the pointer) to compare with the teachers."""


@dataclass
class ShadowResult:
    model: str
    run_id: str | None  # the production run
    since: str
    profiles: int
    scored: int
    failures: dict[str, int]
    rejected_teacher_scores: int
    pearson: float | None
    mae: float | None
    agreement: float | None  # share on the same side of POSITIVE_SCORE
    largest: list[dict[str, Any]] = field(default_factory=list)
    previous_pearson: float | None = None  # the baseline's Pearson
    drop: float | None = None
    alert: bool = False
    time: str = ""
    status: str = ""  # a Status value: what the alert could say this time
    previous_scored: int | None = None  # the baseline's sample
    previous_run_id: str | None = None  # the production run the baseline measured
    drop_z: float | None = None  # Fisher's z of the drop (> 1.645: significant at 95 %)
    by_teacher: dict[str, dict[str, Any]] = field(default_factory=dict)  # Pearson and MAE per teacher

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(profiles: Sequence[FreshProfile], results: Sequence[Any], *, model: str, run_id: str | None, since: str) -> ShadowResult:
    """Model answers (pipeline.scoring.production.ProfileScore, in order) against the teachers'."""
    pairs = [(profile, result) for profile, result in zip(profiles, results, strict=True) if result.score is not None]
    failures: dict[str, int] = {}
    for result in results:
        if result.failure:
            failures[result.failure] = failures.get(result.failure, 0) + 1
    model_scores = np.asarray([result.score for _, result in pairs], dtype=np.float64)
    teacher_scores = np.asarray([profile.teacher_score for profile, _ in pairs], dtype=np.float64)
    from pipeline.evaluation.gates import agreement as teacher_agreement
    from pipeline.evaluation.gates import pearson

    r = pearson(model_scores, teacher_scores) if len(pairs) >= 2 else None
    mae = float(np.mean(np.abs(model_scores - teacher_scores))) if pairs else None
    same_side = (model_scores >= contracts.POSITIVE_SCORE) == (teacher_scores >= contracts.POSITIVE_SCORE)
    agreement = float(np.mean(same_side)) if pairs else None
    ranked = sorted(pairs, key=lambda pair: abs(pair[1].score - pair[0].teacher_score), reverse=True)[:LARGEST_SHOWN]
    largest = [
        {
            "twitter_id": profile.row["twitter_id"],
            "handle": result.handle,
            "model_score": result.score,
            "model_reason": result.reason,
            "teacher_score": profile.teacher_score,
            "teacher_reason": profile.teacher_reason,
            "teacher": profile.teacher,
        }
        for profile, result in ranked
    ]
    by_teacher: dict[str, dict[str, Any]] = {}
    for teacher in sorted({profile.teacher for profile, _ in pairs}):
        own = [index for index, (profile, _) in enumerate(pairs) if profile.teacher == teacher]
        by_teacher[teacher] = teacher_agreement(model_scores[own], teacher_scores[own])
    result = ShadowResult(model, run_id, since, len(profiles), len(pairs), failures, 0, r, mae, agreement, largest)
    result.by_teacher = by_teacher
    return result


class Status(str, Enum):
    INSUFFICIENT = "insufficient"  # fewer than MIN_SHADOW_PROFILES answered: no alert either way
    NO_BASELINE = "no_baseline"  # nothing earlier to compare with
    COMPARED = "compared"


def previous(root: str, run_id: str | None = None) -> dict[str, Any] | None:
    """The baseline: the latest shadow result with a sample of at least MIN_SHADOW_PROFILES and a
    defined Pearson - of the same production run when there is one, else of the one before it (a
    weekly promotion makes every week the first of its model; the drop then also says whether the
    new model agrees less than the old one did)."""
    shadows = [
        record
        for record in history.read(root).records
        if record.get("kind") == KIND and (record.get("scored") or 0) >= MIN_SHADOW_PROFILES and record.get("pearson") is not None
    ]
    same = [record for record in shadows if run_id and record.get("run_id") == run_id]
    return (same or shadows)[-1] if shadows else None


def fisher_z_drop(before: float, before_n: int, now: float, now_n: int) -> float:
    """Fisher's z statistic of ``before - now`` for two independent samples' Pearson r (positive:
    a drop). Written out: two lines of arithmetic, not worth SciPy in the Lambda."""
    clip = 1 - 1e-9  # atanh(1) is infinite: a perfect agreement stays finite
    z_before, z_now = (math.atanh(min(max(r, -clip), clip)) for r in (before, now))
    return (z_before - z_now) / math.sqrt(1 / (before_n - 3) + 1 / (now_n - 3))


# One-sided critical value at ALERT_CONFIDENCE (the normal's 95th percentile).
ALERT_Z = float(NormalDist().inv_cdf(ALERT_CONFIDENCE))


def judge(result: ShadowResult, baseline: dict[str, Any] | None, drop_alert: float) -> ShadowResult:
    """Sets the result's status, drop and alert against ``baseline`` (a shadow record or None): an
    alert when the sample suffices and the Pearson fell by more than ``drop_alert`` and
    significantly (Fisher's z at ALERT_CONFIDENCE), or became undefined. False-alarm rate and power
    by simulation: benchmarks/bench_gates.py, docs/benchmarks.md."""
    if baseline is not None:
        result.previous_pearson, result.previous_scored = baseline.get("pearson"), baseline.get("scored")
        result.previous_run_id = baseline.get("run_id") or None
    if result.scored < MIN_SHADOW_PROFILES:
        result.status = Status.INSUFFICIENT.value
        return result
    if baseline is None or result.previous_pearson is None or not result.previous_scored:
        result.status = Status.NO_BASELINE.value
        return result
    result.status = Status.COMPARED.value
    if result.pearson is None:
        result.alert = True  # agreement became undefined (constant answers): as bad as a drop
        return result
    result.drop = result.previous_pearson - result.pearson
    result.drop_z = fisher_z_drop(result.previous_pearson, result.previous_scored, result.pearson, result.scored)
    result.alert = result.drop > drop_alert and result.drop_z > ALERT_Z
    return result


def apply_trend(result: ShadowResult, root: str, drop_alert: float) -> ShadowResult:
    """The result judged against its baseline in the history (``previous``)."""
    return judge(result, previous(root, result.run_id), drop_alert)


def trend_plot(points: Sequence[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    for metric, label in (("pearson", "Pearson"), ("agreement", "agreement at 0.5"), ("mae", "MAE")):
        values = [point.get(metric) for point in points]
        axes.plot(range(len(points)), [math.nan if v is None else v for v in values], marker="o", label=label)
    axes.set_xticks(range(len(points)), [str(point.get("time", ""))[:10] for point in points], rotation=20)
    axes.set(title="Production model vs the teachers on fresh profiles", ylim=(0, 1))
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


STATUS_TEXT = {
    Status.INSUFFICIENT.value: f"too few answered profiles to judge a drop (at least {MIN_SHADOW_PROFILES})",
    Status.NO_BASELINE.value: "no earlier result to compare with",
    Status.COMPARED.value: "compared with the baseline",
}


def markdown(result: ShadowResult) -> str:
    from pipeline.evaluation.report import markdown_text

    def fmt(value: Any) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    lines = [
        f"# Shadow: `{markdown_text(result.model)}` vs the teachers on fresh profiles",
        "",
        f"{result.profiles} profiles first scored by a teacher after {result.since} (none trained on); "
        f"{result.scored} answered by the model; failures {result.failures or 'none'}; "
        f"{result.rejected_teacher_scores} unusable teacher scores left out.",
        "",
        f"Pearson {fmt(result.pearson)}, MAE {fmt(result.mae)}, agreement at {contracts.POSITIVE_SCORE} {fmt(result.agreement)}; "
        f"baseline Pearson {fmt(result.previous_pearson)} ({result.previous_scored or 0} profiles, run "
        f"{markdown_text(result.previous_run_id or 'none')}); {STATUS_TEXT.get(result.status, result.status)}"
        f"{' — **ALERT: agreement dropped**' if result.alert else ''}.",
        "",
        "Per teacher: "
        + (
            "; ".join(
                f"{markdown_text(teacher)} Pearson {fmt(figures['pearson'])}, MAE {fmt(figures['mae'])} on {figures['profiles']}"
                for teacher, figures in result.by_teacher.items()
            )
            or "none answered"
        )
        + ".",
        "",
        "![trend](trend.png)",
        "",
        "## Largest disagreements",
        "",
        "| handle | model | model's reason | teacher | teacher's reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result.largest:
        cells = (
            row["handle"],
            f"{row['model_score']:.2f}",
            prompt.truncate(row["model_reason"], 120)[0],
            f"{row['teacher_score']:.2f} ({row['teacher']})",
            prompt.truncate(row["teacher_reason"], 120)[0],
        )
        lines.append("| " + " | ".join(markdown_text(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write(root: str, result: ShadowResult, out: str | None = None) -> str:
    """shadow.json, shadow.md and trend.png under ``out`` (default <root>/shadow/<time>-<hex>/; a
    run's: runs/<run_id>/shadow/), and the history line."""
    import secrets

    stamp = result.time.replace(":", "").replace("-", "").replace("+0000", "Z")
    out = out or storage.join(root, SHADOW_DIR, f"{stamp}-{secrets.token_hex(3)}")  # two results in one second stay apart
    points = [*(record for record in history.read(root).records if record.get("kind") == KIND), result.to_json()]
    storage.write_bytes(storage.join(out, "trend.png"), trend_plot(points))
    storage.write_bytes(storage.join(out, "shadow.md"), markdown(result).encode("utf-8"))
    storage.write_json(storage.join(out, "shadow.json"), result.to_json())
    line = {key: value for key, value in result.to_json().items() if key != "largest"}
    history.append(root, {"kind": KIND, "run_id": result.run_id or "", **line, "report_uri": storage.join(out, "shadow.md")})
    return out


def run_shadow(
    root: str,
    conn,
    backends,
    *,
    model: str,
    run_id: str,
    since: dt.datetime,
    teachers: Sequence[str],
    seed_ids: frozenset[str] = frozenset(),
    limit: int = DEFAULT_MAX_PROFILES,
    drop_alert: float = DEFAULT_DROP_ALERT,
    progress: bool = False,
) -> tuple[ShadowResult, str]:
    """Fresh profiles from ``conn`` scored by ``backends`` (the production model), compared with the
    teachers, the trend applied, written; the result and where its report is."""
    from pipeline.scoring import production

    profiles, rejected = fresh_profiles(conn, since=since, teachers=teachers, seed_ids=seed_ids, limit=limit)
    results = production.score_profiles([p.row for p in profiles], backends, model=model, run_id=run_id, progress=progress)
    result = compare(profiles, results, model=model, run_id=run_id, since=since.isoformat(timespec="seconds"))
    result.rejected_teacher_scores, result.time = rejected, now()
    apply_trend(result, root, drop_alert)
    return result, write(root, result)


def shadow_run(root: str, run_id: str, backends, *, model: str, drop_alert: float = DEFAULT_DROP_ALERT) -> ShadowResult | None:
    """ValidateModel's shadow step: the run's snapshot of fresh profiles (GenerateDataset's) scored by
    the production model, compared, written to runs/<run_id>/shadow/ and the history. None without a snapshot."""
    from pipeline import runs
    from pipeline.scoring import production

    uri = fresh_module.snapshot_uri(root, run_id)
    if not storage.exists(uri):
        return None
    profiles, rejected, since = fresh_module.read_snapshot(uri)
    production_run_id = str(storage.read_json(uri).get("production_run_id") or "")
    results = production.score_profiles([p.row for p in profiles], backends, model=model, run_id=production_run_id)
    result = compare(profiles, results, model=model, run_id=production_run_id, since=since.isoformat(timespec="seconds"))
    result.rejected_teacher_scores, result.time = rejected, now()
    apply_trend(result, root, drop_alert)
    write(root, result, out=storage.join(runs.run_uri(root, run_id), SHADOW_DIR))
    return result


def since_of(root: str, run_id: str) -> dt.datetime:
    """When the production run's dataset was exported: fresh profiles were first scored after it."""
    from pipeline.dataset import fresh

    return fresh.export_time(root, run_id)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
