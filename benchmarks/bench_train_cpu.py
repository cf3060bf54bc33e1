"""Training throughput on CPU: tokens/s and peak RSS of `python -m pipeline train` on the tiny model.

Builds the tiny model and a dataset from the sample (no database needed), then runs the training
command several times, each a fresh process under GNU time, and reports medians. Results go to
docs/benchmarks.md between the markers.

Run: ``.venv/bin/python -m benchmarks.bench_train_cpu [--rows 256] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import timed, write_section
from pipeline.local import tiny_model
from tests.pipeline.training.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def run_once(model: Path, dataset: Path, out: Path, layers: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "train",
        "--dataset",
        str(dataset),
        "--base-model",
        str(model),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "num_train_epochs=1",
        "--set",
        "gradient_accumulation_steps=4",
        "--set",
        "logging_steps=1000",
    ]
    sample = timed(command)
    metrics = json.loads((out / "training_metrics.json").read_text())
    return {
        "tokens_per_second": metrics["train_tokens_per_epoch"] / metrics["seconds"],
        "peak_rss_mib": sample.peak_rss_mib,
        "seconds": metrics["seconds"],
        "tokens": metrics["train_tokens_per_epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", default="2,4")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        dataset = write_dataset(Path(work, "dataset"), train_rows=args.rows, validation_rows=32)
        for layers in map(int, args.layers.split(",")):
            model = tiny_model.build_tiny_model(Path(work, f"tiny-{layers}"), layers=layers)
            runs = [run_once(model, dataset, Path(work, f"out-{layers}-{i}"), layers) for i in range(args.repeats)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            rows.append((layers, median))
            print(f"{layers} layers: {median['tokens_per_second']:,.0f} tokens/s, peak RSS {median['peak_rss_mib']:.0f} MiB", flush=True)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, fp32, LoRA r=16 on q/k/v/o, "
        f"batch 4 x accumulation 4, {args.rows} training examples, one epoch; medians of {args.repeats} runs, each a fresh process "
        "(tokens/s counts prompt and answer tokens; the time includes the per-epoch evaluation and checkpoint).",
        "",
        "| model | train tokens | seconds | tokens/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for layers, median in rows:
        lines.append(
            f"| tiny Mistral, {layers} layers, hidden 256 | {median['tokens']:,.0f} | {median['seconds']:.1f} "
            f"| {median['tokens_per_second']:,.0f} | {median['peak_rss_mib']:.0f} |"
        )
    print(write_section("train-cpu-benchmark", "Training on CPU (`benchmarks/bench_train_cpu.py`)", "\n".join(lines)))


if __name__ == "__main__":
    main()
