"""Champion / challenger: a candidate is promoted only if it is not worse than the model in
production on the same holdout (the spec's Phase 4, "A/B test custom vs Claude", made a gate).

Paired: both models score the same holdout profiles, so the comparison is of two answers per
profile against one teacher score. A percentile bootstrap over profiles (resampling pairs, the same
indices for both models) gives a 95 % interval on the difference of Pearson and of MAE; the gates
read the pessimistic end: how much worse the candidate may be, at 95 % confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.scoring.scorer import ScoreResult

RESAMPLES = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0  # the same interval for the same scores, run to run
NO_CHAMPION = "nothing in production yet"


class UnpairedComparison(PipelineError):
    """The two models did not score the same profiles in the same order."""


@dataclass(frozen=True)
class Comparison:
    champion: str  # the production model compared with
    profiles: int
    candidate_pearson: float | None
    champion_pearson: float | None
    candidate_mae: float
    champion_mae: float
    pearson_delta: float | None  # candidate - champion (positive: the candidate agrees more with the teacher)
    pearson_delta_interval: tuple[float, float] | None
    mae_delta: float  # candidate - champion (negative: the candidate is closer to the teacher)
    mae_delta_interval: tuple[float, float]

    @property
    def pearson_drop(self) -> float | None:
        """How far the candidate's Pearson may be below the champion's (95 %): the gate's value."""
        return None if self.pearson_delta_interval is None else -self.pearson_delta_interval[0]

    @property
    def mae_rise(self) -> float:
        """How far the candidate's MAE may be above the champion's (95 %): the gate's value."""
        return self.mae_delta_interval[1]

    def metrics(self) -> dict[str, Any]:
        return {"champion_pearson_drop": self.pearson_drop, "champion_mae_rise": self.mae_rise, "champion": asdict(self)}


def _scores(results: Sequence[ScoreResult]) -> np.ndarray:
    from pipeline.evaluation.gates import effective_score

    return np.asarray([effective_score(result) for result in results], dtype=np.float64)


def _pearson_rows(model: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Pearson per row of (resamples x profiles) arrays; NaN where a side is constant."""
    m = model - model.mean(axis=1, keepdims=True)
    t = teacher - teacher.mean(axis=1, keepdims=True)
    denominator = np.sqrt((m * m).sum(axis=1) * (t * t).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (m * t).sum(axis=1) / denominator, np.nan)


def _interval(values: np.ndarray) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    if len(values) < RESAMPLES // 2:  # most resamples undefined: no interval worth the name
        return None
    # Each end is a one-sided bound at CONFIDENCE (a non-inferiority test reads one end only):
    # the interval between them is a two-sided 1 - 2 x (1 - CONFIDENCE) one.
    tail = (1 - CONFIDENCE) * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def compare(candidate: Sequence[ScoreResult], champion: Sequence[ScoreResult], *, champion_model: str) -> Comparison:
    """The paired comparison of two models' answers on the same holdout profiles."""
    from pipeline.evaluation.gates import pearson

    if len(candidate) != len(champion) or any(a.profile != b.profile for a, b in zip(candidate, champion, strict=True)):
        raise UnpairedComparison("the candidate and the production model must score the same holdout profiles, in order")
    teacher = np.asarray([result.profile.teacher_score for result in candidate], dtype=np.float64)
    ours, theirs = _scores(candidate), _scores(champion)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    rows = rng.integers(0, len(teacher), size=(RESAMPLES, len(teacher)))
    pearson_deltas = _pearson_rows(ours[rows], teacher[rows]) - _pearson_rows(theirs[rows], teacher[rows])
    mae_deltas = np.abs(ours[rows] - teacher[rows]).mean(axis=1) - np.abs(theirs[rows] - teacher[rows]).mean(axis=1)
    ours_r, theirs_r = pearson(ours, teacher), pearson(theirs, teacher)
    mae_ours, mae_theirs = float(np.mean(np.abs(ours - teacher))), float(np.mean(np.abs(theirs - teacher)))
    mae_interval = _interval(mae_deltas)
    assert mae_interval is not None  # an MAE is always defined
    return Comparison(
        champion_model,
        len(teacher),
        ours_r,
        theirs_r,
        mae_ours,
        mae_theirs,
        None if ours_r is None or theirs_r is None else ours_r - theirs_r,
        _interval(pearson_deltas),
        mae_ours - mae_theirs,
        mae_interval,
    )
