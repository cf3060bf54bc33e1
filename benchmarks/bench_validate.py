"""Validation throughput in llama.cpp on the tiny model: profiles/s at concurrency 1 vs N, and the
prompt and answer tokens per profile (they set the latency budget on a g4dn; that latency itself is
measured on AWS, not here).

    python -m benchmarks.bench_validate --gguf runs/<run>/model.gguf --dataset runs/<run>/dataset [--concurrency 2]

Use a GGUF from a finished `python -m pipeline run` (a trained tiny model answers in ~50 tokens;
an untrained one babbles to the 256-token cap). Medians of --repeats runs, same machine, same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.measure import write_section
from pipeline.scoring import scorer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--profiles", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    profiles = scorer.read_profiles(f"{args.dataset}/holdout.jsonl") + scorer.read_profiles(f"{args.dataset}/seeds.jsonl")
    profiles = profiles[: args.profiles]
    rows, tokens = [], None
    for concurrency in sorted({1, args.concurrency}):
        backends = scorer.llama_cpp_backends(args.gguf, concurrency)
        rates = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = scorer.score_profiles(backends, profiles, progress=False)
            rates.append(len(profiles) / (time.perf_counter() - started))
        tokens = tokens or results
        rows.append((concurrency, statistics.median(rates), min(rates), max(rates)))
        print(f"concurrency {concurrency}: {statistics.median(rates):.1f} profiles/s (runs: {', '.join(f'{r:.1f}' for r in rates)})")
    base = rows[0][1]
    prompt_tokens = [r.prompt_tokens for r in tokens]
    answer_tokens = [r.answer_tokens for r in tokens]
    valid = sum(r.ok for r in tokens)
    body = "\n".join(
        [
            f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; tiny model GGUF "
            f"`{Path(args.gguf).name}` ({Path(args.gguf).stat().st_size / 1e6:.1f} MB) in llama.cpp with the answer grammar; "
            f"{len(profiles)} profiles, medians of {args.repeats}.",
            "",
            "| concurrency | profiles/s (median) | min | max | vs concurrency 1 |",
            "| --- | --- | --- | --- | --- |",
            *[f"| {c} | {m:.1f} | {lo:.1f} | {hi:.1f} | {m / base:.2f}x |" for c, m, lo, hi in rows],
            "",
            f"Tokens per profile: prompt median {statistics.median(prompt_tokens):.0f} (max {max(prompt_tokens)}), "
            f"answer median {statistics.median(answer_tokens):.0f} (max {max(answer_tokens)}); {valid}/{len(tokens)} valid answers. "
            "With the tiny tokenizer (2,000 pieces); Mistral's 32k vocabulary needs fewer tokens for the same text.",
        ]
    )
    write_section("validate", "Validation throughput (llama.cpp, tiny model)", body)


if __name__ == "__main__":
    main()
