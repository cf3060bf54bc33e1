"""Monte-Carlo of the champion/challenger gates and the shadow alert: how often the production code
(pipeline.evaluation.champion.compare, gates.evaluate, shadow.judge) accepts a candidate that is
equal to, worse than or better than the model in production, and how often a shadow week alerts
with nothing changed (false alarms) and after a real drop (power).

The simulated answers have the error structure the gates meet (the #30 review's model): teacher
scores a two-hump mix (70 % non-researchers around 0.15, 30 % researchers around 0.85, Beta
distributed), each model = teacher + Gaussian error, clipped to [0, 1] and rounded to two decimals
as answers are; the two models' errors correlated 0.7 (they share a base model and most training
data). "Worse by 0.05 Pearson" and "+0.02 MAE" are calibrated on 400,000 profiles. n is the
number of holdout profiles the agreement gates read: those Claude scored (the demo's holdout has
about 180 of its 321; ValidateModel takes up to 500). The ratchet row: each week an equal
challenger meets the champion on the same holdout and replaces it when it passes, so the champion
is the one that was luckiest on those profiles.

Run: ``.venv/bin/python -m benchmarks.bench_gates [--trials 400]``; the table goes to
docs/benchmarks.md between the markers.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from benchmarks.measure import write_section
from pipeline import prompt
from pipeline.evaluation import champion, evaluate, gates, shadow
from pipeline.scoring.scorer import Completion, Profile, ScoreResult, score_profiles
from pipeline.serving.ollama import OllamaTimeout

ERROR_CORRELATION = 0.7
PRODUCTION_ERROR_SD = 0.16
RESEARCHER_SHARE = 0.3
HOLDOUT_SIZES = (100, 200, 321, 500)
RATCHET_HOLDOUTS = (200, 500)  # about the demo's Claude-scored holdout; ValidateModel's cap
CALIBRATION_PROFILES = 400_000
SEEDS = [ScoreResult(Profile(f"s{i}", "", 0.9), 0.5, 100, 30, score=0.9) for i in range(10)]  # not what is measured here


def teacher_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    researcher = rng.random(n) < RESEARCHER_SHARE
    return np.where(researcher, rng.beta(8, 2, n), rng.beta(2, 8, n))


def answers_of(teacher: np.ndarray, error: np.ndarray) -> np.ndarray:
    return np.round(np.clip(teacher + error, 0.0, 1.0), 2)


def pair(rng: np.random.Generator, n: int, candidate_sd: float, bias: float = 0.0):
    """(teacher, production, candidate) with errors correlated ERROR_CORRELATION."""
    teacher = teacher_scores(rng, n)
    shared, own = rng.normal(0, 1, n), rng.normal(0, 1, n)
    production = answers_of(teacher, PRODUCTION_ERROR_SD * shared)
    candidate_error = candidate_sd * (ERROR_CORRELATION * shared + np.sqrt(1 - ERROR_CORRELATION**2) * own) + bias
    return teacher, production, answers_of(teacher, candidate_error)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def truth(candidate_sd: float, bias: float = 0.0) -> tuple[float, float]:
    """(Pearson difference, MAE difference) candidate - production, on CALIBRATION_PROFILES."""
    teacher, production, candidate = pair(np.random.default_rng(12345), CALIBRATION_PROFILES, candidate_sd, bias)
    return (
        _pearson(candidate, teacher) - _pearson(production, teacher),
        float(np.mean(np.abs(candidate - teacher)) - np.mean(np.abs(production - teacher))),
    )


def calibrate(target: float, *, metric: int, bias: bool = False) -> float:
    """The candidate's error sd (or, with ``bias``, its score offset) whose true difference is ``target``."""
    low, high = (0.0, 0.3) if bias else (0.02, 0.6)
    for _ in range(40):
        middle = (low + high) / 2
        value = truth(PRODUCTION_ERROR_SD, middle)[metric] if bias else truth(middle)[metric]
        worse = value < target if metric == 0 else value > target
        if worse:
            high = middle
        else:
            low = middle
    return (low + high) / 2


def results(teacher: np.ndarray, scores: np.ndarray) -> list[ScoreResult]:
    return [
        ScoreResult(Profile(f"h{i}", "", float(t)), 0.5, 100, 30, score=float(s))
        for i, (t, s) in enumerate(zip(teacher, scores, strict=True))
    ]


def accepted(teacher: np.ndarray, production: np.ndarray, candidate: np.ndarray, thresholds: gates.QualityGates) -> bool:
    holdout = results(teacher, candidate)
    comparison = champion.compare(holdout, results(teacher, production), champion_model="production")
    decided = {g.name: g.passed for g in gates.evaluate(gates.compute_metrics(holdout, SEEDS, comparison), thresholds)}
    return decided["champion_pearson_drop"] and decided["champion_mae_rise"]


def acceptance(n: int, trials: int, candidate_sd: float, bias: float, thresholds: gates.QualityGates, seed: int) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([accepted(*pair(rng, n, candidate_sd, bias), thresholds) for _ in range(trials)]))


def ratchet(n: int, trials: int, weeks: int, thresholds: gates.QualityGates, seed: int) -> list[float]:
    """Acceptance of an equal challenger week after week on one fixed holdout."""
    rng = np.random.default_rng(seed)
    passed = np.zeros(weeks)
    for _ in range(trials):
        teacher = teacher_scores(rng, n)
        champion_scores = answers_of(teacher, PRODUCTION_ERROR_SD * rng.normal(0, 1, n))
        champion_error = champion_scores - teacher
        for week in range(weeks):
            # An equal challenger: its error correlated 0.7 with the champion's (approximately, through the clip).
            own = rng.normal(0, PRODUCTION_ERROR_SD, n)
            challenger = answers_of(teacher, ERROR_CORRELATION * champion_error + np.sqrt(1 - ERROR_CORRELATION**2) * own)
            if accepted(teacher, champion_scores, challenger, thresholds):
                passed[week] += 1
                champion_scores, champion_error = challenger, challenger - teacher
    return list(passed / trials)


class FlakyBackend:
    """A model whose answers are the teacher's score plus production's error, behind a host on which
    each request fails on its way (a timeout) with probability ``failure_rate``."""

    def __init__(self, rng: np.random.Generator, failure_rate: float):
        self.rng, self.failure_rate = rng, failure_rate
        self.first_failures: set[str] = set()

    def complete(self, instruction: str, handle: str, seed: int = 0) -> Completion:
        if self.rng.random() < self.failure_rate:
            self.first_failures.add(handle)
            raise OllamaTimeout("simulated: no answer in time")
        teacher = float(instruction)
        score = float(np.clip(np.round(teacher + self.rng.normal(0, PRODUCTION_ERROR_SD / 3), 2), 0, 1))
        return Completion(prompt.format_answer(handle, score, "simulated"), 0.5, 100, 30)


SEED_PROFILES = 40


def request_failure_runs(failure_rate: float, trials: int, seed: int) -> tuple[float, float]:
    """(share of runs the seed/request gates fail now, share in which a seed request failed at
    least once - each of which the old rule, a failed request scoring 0, failed): the holdout (321)
    and SEED_PROFILES seed researchers (teacher scores ~0.9) scored through the production path
    (score_profiles, evaluate.score_again_on_transport_failure, compute_metrics, gates.evaluate)."""
    rng = np.random.default_rng(seed)
    thresholds = gates.QualityGates()
    failed = with_failed_seed = 0
    for _ in range(trials):
        backend = FlakyBackend(rng, failure_rate)
        teacher = teacher_scores(rng, 321)
        holdout = [Profile(f"h{i}", f"{t:.4f}", float(t)) for i, t in enumerate(teacher)]
        seeds = [Profile(f"s{i}", f"{t:.4f}", float(t)) for i, t in enumerate(rng.beta(18, 2, SEED_PROFILES))]
        results = evaluate.score_again_on_transport_failure([backend], score_profiles([backend], holdout + seeds, progress=False))
        metrics = gates.compute_metrics(results[: len(holdout)], results[len(holdout) :])
        decided = {g.name: g.passed for g in gates.evaluate(metrics, thresholds)}
        failed += not (decided["seed_min"] and decided["seed_mean"] and decided["request_failure_rate"])
        with_failed_seed += any(handle.startswith("s") for handle in backend.first_failures)
    return failed / trials, with_failed_seed / trials


SHADOW_SIZES = (50, 100, 200, 500)


def shadow_alerts(n: int, trials: int, now_sd: float, seed: int) -> float:
    """How often the shadow step alerts (shadow.judge with its default setting): a baseline week of
    ``n`` fresh profiles scored by the production model, then a week of ``n`` others scored by a
    model whose error sd is ``now_sd`` (PRODUCTION_ERROR_SD: nothing changed)."""
    rng = np.random.default_rng(seed)
    alerts = 0
    for _ in range(trials):
        before_teacher, before, _ = pair(rng, n, PRODUCTION_ERROR_SD)
        now_teacher, _, now = pair(rng, n, now_sd)
        baseline = {"pearson": _pearson(before, before_teacher), "scored": n, "run_id": "run-1"}
        result = shadow.ShadowResult("production", "run-1", "", n, n, {}, 0, _pearson(now, now_teacher), None, None)
        alerts += shadow.judge(result, baseline, shadow.DEFAULT_DROP_ALERT).alert
    return alerts / trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200, help="simulated weeks per cell (default %(default)s)")
    parser.add_argument("--weeks", type=int, default=4)
    args = parser.parse_args()
    thresholds = gates.QualityGates()
    cases = {
        "equal": (PRODUCTION_ERROR_SD, 0.0),
        "worse by 0.02 Pearson": (calibrate(-0.02, metric=0), 0.0),
        "worse by 0.05 Pearson": (calibrate(-0.05, metric=0), 0.0),
        "worse by +0.02 MAE (offset)": (PRODUCTION_ERROR_SD, calibrate(0.02, metric=1, bias=True)),
        "better by 0.02 Pearson": (calibrate(0.02, metric=0), 0.0),
    }
    header = "| candidate (true difference) | " + " | ".join(f"n = {n}" for n in HOLDOUT_SIZES) + " |"
    lines = [header, "|---" * (len(HOLDOUT_SIZES) + 1) + "|"]
    for name, (sd, bias) in cases.items():
        pearson_delta, mae_delta = truth(sd, bias)
        rates = [acceptance(n, args.trials, sd, bias, thresholds, seed=n) for n in HOLDOUT_SIZES]
        lines.append(f"| {name} (Pearson {pearson_delta:+.3f}, MAE {mae_delta:+.3f}) | " + " | ".join(f"{r:.1%}" for r in rates) + " |")
        print(lines[-1], flush=True)
    weekly = {n: ratchet(n, args.trials, args.weeks, thresholds, seed=7) for n in RATCHET_HOLDOUTS}
    teacher, production, _ = pair(np.random.default_rng(1), CALIBRATION_PROFILES, PRODUCTION_ERROR_SD)
    production_pearson = _pearson(production, teacher)
    body = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}: {args.trials} simulated comparisons per cell, "
        f"the production code (`champion.compare`, {champion.RESAMPLES} paired bootstrap resamples, the gates at their "
        f"defaults: `gateChampionPearsonDropMax` {thresholds.champion_pearson_drop_max}, "
        f"`gateChampionMaeRiseMax` {thresholds.champion_mae_rise_max}, one-sided {champion.CONFIDENCE:.1%}). "
        f"Production's error sd {PRODUCTION_ERROR_SD} (Pearson {production_pearson:.3f}), errors correlated "
        f"{ERROR_CORRELATION}; share of candidates accepted by both champion gates:",
        "",
        *lines,
        "",
        f"Monte-Carlo error: with {args.trials} comparisons a cell's rate is within "
        f"±{1.96 * (0.05 * 0.95 / args.trials) ** 0.5:.1%} of the true one at 5 % (95 %), "
        f"±{1.96 * (0.5 * 0.5 / args.trials) ** 0.5:.1%} at 50 %.",
        "",
        "Ratchet (an equal challenger each week, promoted when it passes, on the same holdout; n = 200 is about the demo's "
        "Claude-scored holdout, 500 ValidateModel's cap): "
        + "; ".join(
            f"n = {n}: " + ", ".join(f"week {week + 1} {rate:.1%}" for week, rate in enumerate(rates)) for n, rates in weekly.items()
        ),
    ]
    failure_lines = [
        "| requests failing on their way | runs failed by the seed / request-failure gates "
        "| runs a failed seed request failed before (scored 0) |",
        "|---|---|---|",
    ]
    for failure_rate in (0.0, 0.005, 0.02):
        now, before = request_failure_runs(failure_rate, max(args.trials, 200), seed=11)
        failure_lines.append(f"| {failure_rate:.1%} of requests | {now:.1%} | {before:.1%} |")
        print(failure_lines[-1], flush=True)
    body += [
        "",
        f"Seed gates and request failures (a model whose seed answers are all clearly positive; {max(args.trials, 200)} "
        f"simulated validations of 321 holdout and {SEED_PROFILES} seed profiles, each request failing independently; "
        "a failed request is asked once more after the batch and what still fails counts under `request_failure_rate`):",
        "",
        *failure_lines,
    ]
    drops = {"no change (false alarm)": PRODUCTION_ERROR_SD, "Pearson down 0.05": calibrate(-0.05, metric=0)}
    drops["Pearson down 0.10"] = calibrate(-0.10, metric=0)
    shadow_lines = ["| shadow week | " + " | ".join(f"n = {n}" for n in SHADOW_SIZES) + " |", "|---" * (len(SHADOW_SIZES) + 1) + "|"]
    for name, sd in drops.items():
        rates = [shadow_alerts(n, args.trials * 5, sd, seed=n + 1) for n in SHADOW_SIZES]
        shadow_lines.append(f"| {name} | " + " | ".join(f"{r:.1%}" for r in rates) + " |")
        print(shadow_lines[-1], flush=True)
    body += [
        "",
        f"Shadow alert (`shadow.judge`: at least {shadow.MIN_SHADOW_PROFILES} answered profiles, a drop of more than "
        f"`shadowDropAlert` {shadow.DEFAULT_DROP_ALERT} Pearson from the baseline week, significant by Fisher's z at one-sided "
        f"{shadow.ALERT_CONFIDENCE:.0%}); the baseline week and this week of n profiles each, {args.trials * 5} simulated "
        "pairs of weeks per cell; share of weeks that alert (below the minimum the result is 'insufficient' and never alerts):",
        "",
        *shadow_lines,
    ]
    print("\n".join(body))
    write_section("gates", "Quality gates: error rates (Monte-Carlo)", "\n".join(body))


if __name__ == "__main__":
    main()
