"""Training in random vs length-grouped order: tokens/s and the loss curves, side by side.

The same `python -m pipeline train` twice on the same data, seed and settings, once with each
``train_sampling_strategy`` (the Trainer's own random order, and transformers' LengthGroupedSampler),
each a fresh process. Reported: the training loop's time (transformers' train_runtime) and real
tokens/s (padding not counted), the ratio to random, the evaluation loss per epoch and the logged
training loss side by side.

The model: by default Mistral's architecture at hidden 256 with Mistral-7B-Instruct-v0.2's real
tokenizer (tests/mistral_tokenizer.py), so the examples have the real token counts, on this
machine's CPU; ``--base-model DIR`` takes another (on a GPU: the 7B-shaped model that
benchmarks/train_gpu.py builds), as `pipeline train` picks the device itself.

Run: ``.venv/bin/python -m benchmarks.bench_sampling [--rows 600] [--epochs 2] [--base-model DIR]``;
results go to docs/benchmarks.md between the markers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import timed, write_section
from pipeline.training.hyperparameters import SamplingStrategy
from tests.mistral_tokenizer import build_mistral_model
from tests.pipeline.training.conftest import write_dataset


def train(model: Path, dataset: Path, out: Path, strategy: SamplingStrategy, epochs: int) -> dict:
    settings = {"num_train_epochs": str(epochs), "train_sampling_strategy": strategy.value, "logging_steps": "10"}
    command = [sys.executable, "-m", "pipeline", "train", "--dataset", str(dataset), "--base-model", str(model), "--out", str(out)]
    command += ["--no-progress", *(part for name, value in settings.items() for part in ("--set", f"{name}={value}"))]
    timed(command)
    return json.loads((out / "training_metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=600, help="training rows from the sample (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--base-model", type=Path, help="a model directory (default: Mistral's architecture at hidden 256)")
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        dataset = write_dataset(Path(work, "dataset"), train_rows=args.rows, validation_rows=max(32, args.rows // 10))
        model = args.base_model or build_mistral_model(Path(work, "model"), layers=2)
        for strategy in SamplingStrategy:
            runs[strategy] = train(model, dataset, Path(work, strategy.value), strategy, args.epochs)
            print(f"{strategy.value}: {runs[strategy]['train_seconds']:.1f} s", flush=True)
    first = runs[SamplingStrategy.RANDOM]
    tokens = first["train_tokens_per_epoch"] * args.epochs
    described = f"the model at {args.base_model}" if args.base_model else "Mistral architecture, 2 layers, hidden 256, its 7B's tokenizer"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, device {first['device']}, {first['precision']}, {described}; "
        f"{first['train_examples']} training examples of the sample, {args.epochs} epoch(s), batch 4 x accumulation 4, seed 42, "
        "each strategy a fresh `pipeline train`.",
        "",
        "| order (train_sampling_strategy) | training loop s | real tokens/s | vs random | eval loss per epoch |",
        "|---|---:|---:|---:|---|",
    ]
    for strategy, metrics in runs.items():
        rate = tokens / metrics["train_seconds"]
        losses = ", ".join(f"{entry['eval_loss']:.4f}" for entry in metrics["eval_loss_per_epoch"])
        lines.append(
            f"| {strategy.value} | {metrics['train_seconds']:.1f} | {rate:,.0f} | "
            f"{first['train_seconds'] / metrics['train_seconds']:.2f}x | {losses} |"
        )
    curves = {strategy: {point["step"]: point["loss"] for point in metrics["loss_curve"]} for strategy, metrics in runs.items()}
    steps = sorted(set.intersection(*(set(curve) for curve in curves.values())))
    lines += ["", "| step | " + " | ".join(f"{strategy.value} training loss" for strategy in runs) + " |", "|---:|" + "---:|" * len(runs)]
    lines += [f"| {step} | " + " | ".join(f"{curves[strategy][step]:.4f}" for strategy in runs) + " |" for step in steps]
    print(write_section("sampling-benchmark", "Random vs length-grouped order (`benchmarks/bench_sampling.py`)", "\n".join(lines)))


if __name__ == "__main__":
    main()
