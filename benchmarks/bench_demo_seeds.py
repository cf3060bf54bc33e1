"""How much the demo's outcome depends on its training seed: the tiny model trained with the demo's
settings and each seed (the LoRA adapter's initial draw, the data order, dropout), exported and
scored as `make demo` does (llama.cpp, the grammar), gated as the demo gates. Training is
reproducible from its seed (trainer.add_lora), so one run per seed says what that seed gives here.

Run: ``.venv/bin/python -m benchmarks.bench_demo_seeds --dataset runs/<run>/dataset --seeds 1,2,3``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.measure import write_section
from pipeline import contracts
from pipeline.evaluation import evaluate, gates
from pipeline.gguf import convert, quant
from pipeline.local.run import TINY_MODEL_TRAINING
from pipeline.local.tiny_model import build_pretrained_tiny_model
from pipeline.scoring import scorer
from pipeline.training import hyperparameters, trainer

ROOT = Path(__file__).resolve().parents[1]


def outcome(dataset: Path, base: Path, work: Path, seed: int) -> tuple[dict, list[gates.GateResult]]:
    trainer.train(
        trainer.TrainingPaths(dataset, base, work / "adapter", work / "checkpoints"),
        hyperparameters.parse({**TINY_MODEL_TRAINING, "seed": str(seed)}),
        progress=False,
    )
    gguf = work / "model.gguf"
    convert.export_gguf(str(base), str(work / "adapter"), str(gguf), quant.OutputType(contracts.DEFAULT_QUANTIZATION.value), progress=False)
    backend = scorer.LlamaCppBackend(str(gguf), threads=os.cpu_count() or 1)
    # Validated as the demo validates (evaluate: production's prompt, the Claude-scored holdout).
    summary = evaluate.evaluate(
        [backend],
        model=str(gguf),
        backend_name="llama.cpp",
        holdout_uri=str(dataset / contracts.HOLDOUT_FILE),
        seeds_uri=str(dataset / contracts.SEEDS_FILE),
        out_uri=str(work / "report"),
        progress=False,
    )
    return summary["metrics"], gates.evaluate(summary["metrics"], gates.QualityGates())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        base = build_pretrained_tiny_model(work / "base", layers=2, progress=False)
        for seed in (int(part) for part in args.seeds.split(",")):
            metrics, decided = outcome(args.dataset, base, work / f"seed-{seed}", seed)
            rows.append((seed, metrics, decided))
            print(seed, {g.name: (round(g.value, 3) if g.value is not None else None, g.passed) for g in decided}, flush=True)
    names = [g.name for g in rows[0][2]]
    lines = [
        f"Dataset {args.dataset}, the demo's tiny model and settings, {os.cpu_count()} cores; one run per seed (reproducible).",
        "",
        "| seed | outcome | " + " | ".join(names) + " |",
        "| ---: | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for seed, _, decided in rows:
        cells = ["undefined" if g.value is None else f"{g.value:.3f}{'' if g.passed else ' ✗'}" for g in decided]
        lines.append(f"| {seed} | {'promoted' if all(g.passed for g in decided) else 'rolled back'} | " + " | ".join(cells) + " |")
    print(write_section("demo-seeds", "The demo's outcome per training seed (#18 item 5)", "\n".join(lines)))


if __name__ == "__main__":
    main()
