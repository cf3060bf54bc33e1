"""`make demo`'s run on this machine: wall time and peak memory of `python -m pipeline run` with the
embedded defaults (the issue's budget: at most 10 minutes on 2 CPU cores), plus what it learned.

    python -m benchmarks.bench_demo [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import timed, write_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=None, help="where runs/ goes (default: a temporary directory)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-demo-"))
    sample = timed([sys.executable, "-m", "pipeline", "run", "--root", str(root), "--no-progress"], ok_codes=(0, 3))  # 3: rolled back
    run_dir = next(path for path in (root / "runs").iterdir() if path.is_dir() and (path / "run.json").exists())
    summary = json.loads((run_dir / "run.json").read_text())
    metrics = summary["validation"]["metrics"]
    training = summary["training"]
    body = "\n".join(
        [
            f"Machine: {os.cpu_count()} CPU cores, no GPU. One run of `python -m pipeline run` (embedded PostgreSQL, "
            "3,000 sample profiles, tiny model built in the run, Q4_K_M, llama.cpp) in a fresh directory.",
            "",
            "| wall time | peak RSS | budget | outcome |",
            "| --- | --- | --- | --- |",
            f"| {sample.seconds:.0f} s | {sample.peak_rss_mib:.0f} MiB | 600 s | {summary['outcome']} |",
            "",
            "Time per stage: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["stages"].items()) + ".",
            f"Training loss {training['first_loss']:.2f} -> {training['last_loss']:.2f} (eval per epoch "
            + ", ".join(f"{loss:.2f}" for loss in training["eval_loss_per_epoch"])
            + "); "
            f"Pearson {metrics['pearson']:.2f}, Spearman {metrics['spearman']:.2f}, MAE {metrics['mae']:.2f}, "
            f"seed mean {metrics['seed_mean']:.2f}, valid JSON {metrics['valid_json_rate']:.1%}, "
            f"latency p95 {metrics['latency_p95_s']:.3f} s.",
        ]
    )
    write_section("demo", "`make demo` (python -m pipeline run) on 2 CPU cores", body)
    print(body)


if __name__ == "__main__":
    main()
