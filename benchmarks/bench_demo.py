"""`make demo`'s run on this machine: wall time and peak memory of `python -m pipeline run` with the
embedded defaults (the budget: at most 10 minutes on 2 CPU cores), what it learned, and - over
several fresh runs - whether it decides the same every time (the same adapter and GGUF bytes, every
gate cleared with the same margin).

    python -m benchmarks.bench_demo [--runs N] [--root DIR] [--second-run]

``--second-run``: then `make demo` again in the first run's directory - the champion/challenger
comparison with the first run's model and the shadow of it on the week of new scores the demo's
database gains after a run - and `runs list` of both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import timed, write_section

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def margin(gate: dict) -> float:
    """How far the value is on the passing side of its threshold (negative: failed)."""
    value, threshold = gate["value"] if gate["value"] is not None else float("nan"), gate["threshold"]
    return threshold - value if gate["comparison"] == "<" else value - threshold


def second_run(root: Path) -> list[str]:
    """`make demo` again where the first ran: what a person sees of Phase 4 on their own machine."""
    result = one_run(root, latest=True)
    summary, gates = result["summary"], {gate["name"]: gate for gate in result["gates"]}
    champion = summary["validation"]["metrics"].get("champion") or {}
    shadow = summary.get("shadow") or {}
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline", "runs", "list", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "COLUMNS": "160"},  # rich's table, unwrapped
    ).stdout

    def gate(name: str) -> str:
        found = gates[name]
        return f"{found['value']:.3f} (threshold {found['threshold']}, {'passed' if found['passed'] else 'FAILED'})"

    return [
        "",
        f"A second run in run 1's directory ({result['seconds']:.0f} s): **{summary['outcome']}**; compared with the model in "
        f"production (run 1's) on the same {champion.get('profiles')} holdout profiles: champion_pearson_drop "
        f"{gate('champion_pearson_drop')}, champion_mae_rise {gate('champion_mae_rise')}; shadow of run 1's model against the "
        f"teachers on {shadow.get('scored')} profiles scored since its dataset: Pearson {shadow.get('pearson', float('nan')):.3f}, "
        f"MAE {shadow.get('mae', float('nan')):.3f}, agreement at 0.5 {shadow.get('agreement', float('nan')):.3f}, alert "
        f"{shadow.get('alert')}. `python -m pipeline runs list` then:",
        "",
        "```",
        listed.rstrip(),
        "```",
    ]


def one_run(root: Path, latest: bool = False) -> dict:
    sample = timed([sys.executable, "-m", "pipeline", "run", "--root", str(root), "--no-progress"], ok_codes=(0, 3))  # 3: rolled back
    finished = sorted(path for path in (root / "runs").iterdir() if path.is_dir() and (path / "run.json").exists())
    run_dir = finished[-1] if latest else finished[0]  # run ids sort by their start time
    summary = json.loads((run_dir / "run.json").read_text())
    report = json.loads((run_dir / "report" / "report.json").read_text())
    return {
        "seconds": sample.seconds,
        "peak_rss_mib": sample.peak_rss_mib,
        "summary": summary,
        "gates": report["gates"],
        "adapter_sha256": sha256(run_dir / "adapter" / "adapter_model.safetensors"),
        "gguf_sha256": sha256(run_dir / "model.gguf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="fresh runs, each in its own directory (default 1)")
    parser.add_argument("--root", default=None, help="where the runs' directories go (default: a temporary directory)")
    parser.add_argument("--second-run", action="store_true", help="then run again in the first run's directory")
    args = parser.parse_args()
    base = Path(args.root or tempfile.mkdtemp(prefix="bench-demo-"))
    runs = []
    for index in range(args.runs):
        runs.append(one_run(base / f"run-{index + 1}"))
        print(f"run {index + 1}: {runs[-1]['summary']['outcome']} in {runs[-1]['seconds']:.0f} s", flush=True)

    first = runs[0]
    metrics, training = first["summary"]["validation"]["metrics"], first["summary"]["training"]
    gate_names = [gate["name"] for gate in first["gates"]]
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, no GPU. {len(runs)} fresh run(s) of `python -m pipeline run` (embedded "
        "PostgreSQL, 3,000 sample profiles, tiny model built in the run, Q4_K_M, llama.cpp), each in its own directory.",
        "",
        "| run | wall time | peak RSS | outcome | adapter sha256 | GGUF sha256 | " + " | ".join(gate_names) + " |",
        "| --- | ---: | ---: | --- | --- | --- | " + " | ".join("---:" for _ in gate_names) + " |",
    ]
    for index, run in enumerate(runs, start=1):
        cells = [
            "n/a (nothing in production)"
            if gate["value"] is None
            else f"{gate['value']:.3f} ({'+' if margin(gate) >= 0 else ''}{margin(gate):.3f})"
            for gate in run["gates"]
        ]
        lines.append(
            f"| {index} | {run['seconds']:.0f} s | {run['peak_rss_mib']:.0f} MiB | {run['summary']['outcome']} | "
            f"`{run['adapter_sha256'][:12]}` | `{run['gguf_sha256'][:12]}` | " + " | ".join(cells) + " |"
        )
    same = len({run["adapter_sha256"] for run in runs}) == 1 and len({run["gguf_sha256"] for run in runs}) == 1
    lines += [
        "",
        "Each gate: value (margin on the passing side of its threshold). "
        + (
            f"All {len(runs)} runs wrote the same adapter and GGUF bytes and took the same decision."
            if same
            else "The runs' bytes differ: the demo is not reproducible on this machine."
        ),
        f"Median wall time {statistics.median(run['seconds'] for run in runs):.0f} s (budget 600 s). Time per stage (run 1): "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in first["summary"]["stages"].items())
        + ".",
        f"Training loss {training['first_loss']:.2f} -> {training['last_loss']:.2f} (eval per epoch "
        + ", ".join(f"{loss:.2f}" for loss in training["eval_loss_per_epoch"])
        + f"); Spearman {metrics['spearman']:.2f}, MAE {metrics['mae']:.2f}.",
    ]
    if args.second_run:
        lines += second_run(base / "run-1")
    body = "\n".join(lines)
    write_section("demo", "`make demo` (python -m pipeline run) on 2 CPU cores", body)
    print(body)


if __name__ == "__main__":
    main()
