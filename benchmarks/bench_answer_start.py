"""The answer's first token at training vs what serving allows, measured on the demo's model.

transformers 5 encodes an answer on its own with a leading "▁" (the tiny model's tokenizer.json
has Metaspace prepend_scheme "first"; Mistral's has a Prepend("▁") normalizer), so the model used
to learn to start every answer with a space; serving constrains answers to the JSON schema
(llama.cpp's grammar, Ollama's ``format``), whose first character is "{". Four cells, same dataset,
same base, same seed: the adapter trained the old way (answer ids with the leading "▁", the anchor)
and the new way (prompt.answer_token_ids), each scored in llama.cpp with and without the grammar.
Per cell: valid-JSON rate, Pearson and MAE against the teacher, the share of unconstrained answers
that start with a space, and the first-token loss signal is left to the training logs.

Run: ``.venv/bin/python -m benchmarks.bench_answer_start [--dataset runs/<run>/dataset]``
(default: the newest run's dataset under runs/, e.g. after ``make demo``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.measure import write_section
from pipeline import contracts, prompt
from pipeline.evaluation import gates
from pipeline.gguf import convert, quant
from pipeline.local.run import TINY_MODEL_TRAINING
from pipeline.local.tiny_model import build_tiny_model
from pipeline.scoring import scorer
from pipeline.training import hyperparameters, trainer

ROOT = Path(__file__).resolve().parents[1]


def space_prefixed_answer_ids(tokenizer, answer: str) -> list[int]:
    """The previous training: the answer encoded alone (transformers adds its leading "▁")."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"]


def train(dataset: Path, base: Path, out: Path, *, space_prefixed: bool) -> float:
    original = prompt.answer_token_ids
    if space_prefixed:
        prompt.answer_token_ids = space_prefixed_answer_ids  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        trainer.train(
            trainer.TrainingPaths(dataset, base, out / "adapter", out / "checkpoints"),
            hyperparameters.parse(dict(TINY_MODEL_TRAINING)),
            progress=False,
        )
        return time.perf_counter() - started
    finally:
        prompt.answer_token_ids = original  # type: ignore[assignment]


def score(gguf: Path, dataset: Path, *, constrained: bool) -> dict:
    backend = scorer.LlamaCppBackend(str(gguf), threads=os.cpu_count() or 1, constrained=constrained)
    holdout = scorer.read_profiles(str(dataset / contracts.HOLDOUT_FILE))
    seeds = scorer.read_profiles(str(dataset / contracts.SEEDS_FILE))
    holdout_results = [scorer.score_one(backend, profile) for profile in holdout]
    seed_results = [scorer.score_one(backend, profile) for profile in seeds]
    metrics = gates.compute_metrics(holdout_results, seed_results)
    everything = holdout_results + seed_results
    metrics["space_first"] = sum(result.raw.startswith((" ", "\u2581")) for result in everything) / len(everything)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    args = parser.parse_args()
    dataset = args.dataset or max((ROOT / "runs").glob("*/dataset"), key=lambda path: path.stat().st_mtime)
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        base = build_tiny_model(work / "base", layers=2)
        for label, space_prefixed in (("answer with a leading space (before)", True), ("answer as serving allows (now)", False)):
            out = work / ("before" if space_prefixed else "now")
            seconds = train(dataset, base, out, space_prefixed=space_prefixed)
            gguf = out / "model.gguf"
            convert.export_gguf(
                str(base), str(out / "adapter"), str(gguf), quant.OutputType(contracts.DEFAULT_QUANTIZATION.value), progress=False
            )
            for constrained in (True, False):
                metrics = score(gguf, dataset, constrained=constrained)
                rows.append((label, "grammar" if constrained else "none", metrics, seconds))
                print(label, constrained, {k: metrics[k] for k in ("valid_json_rate", "pearson", "mae", "space_first")}, flush=True)
    lines = [
        f"Dataset {dataset.relative_to(ROOT) if dataset.is_relative_to(ROOT) else dataset} (holdout and seeds scored in full), "
        f"the demo's tiny model and training settings, one training per variant, {os.cpu_count()} cores.",
        "",
        "| training | serving constraint | valid JSON | Pearson | MAE | seed mean | answers starting with a space |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, constraint, metrics, _ in rows:
        pearson = "undefined" if metrics["pearson"] is None else f"{metrics['pearson']:.3f}"
        lines.append(
            f"| {label} | {constraint} | {metrics['valid_json_rate']:.1%} | {pearson} | {metrics['mae']:.3f} | "
            f"{metrics['seed_mean']:.3f} | {metrics['space_first']:.1%} |"
        )
    print(write_section("answer-start", "The answer's first token: training vs serving's grammar (#14)", "\n".join(lines)))


if __name__ == "__main__":
    main()
