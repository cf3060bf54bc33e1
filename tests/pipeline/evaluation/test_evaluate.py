"""evaluate(): what the model is asked, whose labels the gates read, how stable the seed gates are."""

from __future__ import annotations

import json
import threading

from pipeline import contracts, prompt
from pipeline.evaluation import evaluate, report
from pipeline.scoring.scorer import Completion, Profile
from tests.pipeline.serving.conftest import write_profiles

GEMINI = "gemini-2.0-flash"
CLAUDE_HOLDOUT = {f"c{index:02d}": round(index / 39, 2) for index in range(40)}
GEMINI_HOLDOUT = {f"g{index:02d}": round(index / 39, 2) for index in range(40)}
SEEDS = {f"seed_{index}": 0.9 for index in range(6)}


class Recorder:
    """Answers from a table of scores per handle; the seed profiles' scores move with the decoding
    seed (a borderline model). Records every instruction and seed it is asked with."""

    def __init__(self, scores: dict[str, float]):
        self.scores = scores
        self.asked: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def complete(self, instruction: str, handle: str, seed: int = 0) -> Completion:
        with self.lock:
            self.asked.append((handle, instruction, seed))
        score = self.scores[handle] - (0.2 * seed if handle.startswith("seed_") else 0.0)
        return Completion(prompt.format_answer(handle, max(score, 0.0), "r"), 0.01, 10, 5)


def run(tmp_path, backend, champion=None, max_holdout=None, claude_holdout=CLAUDE_HOLDOUT):
    """evaluate() on CLAUDE_HOLDOUT (or ``claude_holdout``) and GEMINI_HOLDOUT, and SEEDS."""
    teachers = dict.fromkeys(GEMINI_HOLDOUT, GEMINI)
    holdout = write_profiles(tmp_path / contracts.HOLDOUT_FILE, {**claude_holdout, **GEMINI_HOLDOUT}, teachers)
    seeds = write_profiles(tmp_path / contracts.SEEDS_FILE, SEEDS)
    return evaluate.evaluate(
        [backend],
        model="candidate",
        backend_name="test",
        holdout_uri=str(holdout),
        seeds_uri=str(seeds),
        out_uri=str(tmp_path / "report"),
        max_holdout=max_holdout,
        progress=False,
        champion_backends=[champion] if champion else None,
        champion_model="production",
    )


def test_every_profile_is_asked_as_production_asks_and_the_gates_read_claudes_labels(tmp_path):
    # The candidate follows Claude's labels and not Gemini's (it answers Gemini's profiles 1 - label).
    answers = {**CLAUDE_HOLDOUT, **{handle: 1 - score for handle, score in GEMINI_HOLDOUT.items()}, **SEEDS}
    candidate, production = Recorder(answers), Recorder(answers)
    summary = run(tmp_path, candidate, production)
    asked_teachers = {prompt.instruction_fields(instruction)["scored_by"] for _, instruction, _ in candidate.asked}
    assert asked_teachers == {prompt.DEFAULT_INFERENCE_TEACHER}  # Gemini's rows too: production names Claude
    metrics = summary["metrics"]
    assert metrics["pearson"] == 1.0 and metrics["holdout_profiles"] == 40 and metrics["gated_teacher"] == prompt.DEFAULT_INFERENCE_TEACHER
    by_teacher = metrics["pearson_by_teacher"]
    assert by_teacher[prompt.DEFAULT_INFERENCE_TEACHER]["profiles"] == 40 and by_teacher[GEMINI]["pearson"] == -1.0
    assert summary["passed"], summary["failed_gates"]
    # The model in production is compared on the same gated profiles only.
    assert sorted(handle for handle, _, _ in production.asked) == sorted(CLAUDE_HOLDOUT)
    assert metrics["champion"]["profiles"] == 40
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {row["teacher"] for row in written["profiles"] if row["set"] == "holdout"} == {prompt.DEFAULT_INFERENCE_TEACHER, GEMINI}
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"| {report.markdown_text(GEMINI)} | 40 | -1.000 | " in text and "(gated) | 40 | 1.000 | 0.000 |" in text
    assert "80 holdout answered, 40 of them gated" in text


def test_the_seed_gates_stability_under_other_decoding_seeds_is_reported_and_the_gates_read_the_pinned_seed(tmp_path):
    candidate = Recorder({**CLAUDE_HOLDOUT, **GEMINI_HOLDOUT, **SEEDS})
    summary = run(tmp_path, candidate)
    stability = summary["metrics"]["seed_gate_stability"]
    assert stability["decoding_seeds"] == [0, 1, 2]
    assert stability["seed_min"] == [0.9, 0.7, 0.5] and stability["median_seed_min"] == 0.7
    assert summary["metrics"]["seed_min"] == 0.9  # the gate: the seed production serves with
    seeds_asked = sorted(seed for handle, _, seed in candidate.asked if handle.startswith("seed_"))
    assert seeds_asked == [0] * 6 + [1] * 6 + [2] * 6
    assert {seed for handle, _, seed in candidate.asked if not handle.startswith("seed_")} == {0}  # the holdout once
    text = (tmp_path / "report" / "report.md").read_text()
    assert "seed_min 0.900, 0.700, 0.500 (median 0.700)" in text


def test_a_capped_holdout_takes_the_gated_teachers_profiles_first():
    profiles = [Profile(f"g{i}", "i", 0.5, GEMINI) for i in range(50)] + [
        Profile(f"c{i}", "i", 0.5, "claude-haiku-20240307") for i in range(30)
    ]
    sample = evaluate.sample_holdout(profiles, 40)
    assert sum(profile.teacher == "claude-haiku-20240307" for profile in sample) == 30 and len(sample) == 40
    assert evaluate.sample_holdout(profiles, 40) == sample  # the same profiles every run
    assert sorted(p.handle for p in evaluate.sample_holdout(profiles, 20)) == sorted(
        p.handle for p in evaluate.sample_holdout(profiles, 20)
    )
    assert all(profile.teacher == "claude-haiku-20240307" for profile in evaluate.sample_holdout(profiles, 20))


def test_a_holdout_without_claudes_labels_fails_the_correlation_gate_and_asks_production_nothing(tmp_path):
    candidate, production = Recorder({**GEMINI_HOLDOUT, **SEEDS}), Recorder({**GEMINI_HOLDOUT, **SEEDS})
    summary = run(tmp_path, candidate, production, claude_holdout={})
    assert summary["failed_gates"] == ["pearson"] and production.asked == []
    gate = {g["name"]: g for g in summary["gates"]}["champion_pearson_drop"]
    assert gate["detail"] == f"no holdout profile scored by {prompt.DEFAULT_INFERENCE_TEACHER} to compare the models on"
