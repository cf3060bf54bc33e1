"""The source design's serverless alternative (a 10 GB Lambda running llama.cpp on CPU) decided by a
measurement: llama.cpp scoring one profile with a Mistral-7B-shaped Q4_K_M GGUF on this machine's
cores, projected to a 6-vCPU Lambda (cold start included) against the design's < 5 s per profile,
and its cost per 1,000 profiles against the g4dn host.

The GGUF comes from ``bench_convert --layers 32 --keep-gguf DIR`` (random weights: the speed of a
forward pass does not depend on the values). One "profile" is a prompt of ``--prompt-tokens``
tokens (a rendered demo prompt, repeated to length) and an answer of ``--answer-tokens`` tokens,
end-of-sequence suppressed so that every answer has that length; the times are llama.cpp's own
(llama_perf_context), prompt evaluation and generation apart, medians of ``--repeats``.

Run: ``.venv/bin/python -m benchmarks.bench_serverless --gguf DIR/mistral-7b-shaped-32-layers.q4_k_m.gguf``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.measure import write_section
from pipeline import prompt
from pipeline.gguf import budget
from pipeline.serving import modelfile

LAMBDA_VCPUS = 6  # a 10,240 MB function
LAMBDA_MEMORY_GB = 10.0
# Public us-east-1 prices (not measured): Lambda x86 per GB-second and per request, EC2 g4dn.xlarge on demand.
LAMBDA_PRICE_GB_SECOND = 0.0000166667
LAMBDA_PRICE_REQUEST = 0.20 / 1e6
G4DN_PRICE_HOUR = 0.526
# The g4dn host's figures this is compared with: README's ("about 1-2 s per profile with a warm
# model") and the host's wake-up (boot + Ollama's health + loading the model, README's 2-4 minutes).
G4DN_SECONDS_PER_PROFILE = (1.0, 2.0)
G4DN_WAKE_SECONDS = 180.0
DESIGN_SECONDS_PER_PROFILE = 5.0  # the source design's latency goal
S3_BYTES_PER_SECOND = (budget.S3_READ_BYTES_PER_SECOND, 100e6)  # budget.py's conservative figure, a typical single stream
# The design's variant reads the GGUF from EFS; one client's read rate depends on the file system's
# throughput mode - an assumed range, not a measurement.
EFS_BYTES_PER_SECOND = (100e6, 500e6)


def sample_instruction() -> str:
    from pipeline.local import sample, tiny_model

    profile, scores = next(iter(sample.generate_sample(1, seed=3, dirty_fraction=0.0)))
    return tiny_model.instruction_of(profile, scores[0].scored_by if scores else "")


def measure(gguf: Path, threads: int, prompt_tokens: int, answer_tokens: int, repeats: int) -> dict[str, float]:
    import llama_cpp

    from pipeline.serving import template

    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=modelfile.NUM_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - started
    text = template.render(modelfile.OLLAMA_TEMPLATE, {"System": prompt.SYSTEM_PROMPT, "Prompt": sample_instruction()})
    rendered = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    tokens = (rendered * (prompt_tokens // len(rendered) + 1))[:prompt_tokens]
    eos = llm.token_eos()
    prompt_rates, answer_rates = [], []
    for _ in range(repeats):
        llm.reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        llm.create_completion(tokens, max_tokens=answer_tokens, temperature=0.0, logit_bias={eos: float("-inf")})
        perf = llama_cpp.llama_perf_context(llm.ctx)
        if perf.n_p_eval != prompt_tokens or perf.n_eval < answer_tokens - 1:
            raise SystemExit(
                f"llama.cpp evaluated {perf.n_p_eval} prompt and {perf.n_eval} answer tokens, expected {prompt_tokens} and {answer_tokens}"
            )
        prompt_rates.append(perf.n_p_eval / (perf.t_p_eval_ms / 1000))
        answer_rates.append(perf.n_eval / (perf.t_eval_ms / 1000))
    return {
        "threads": threads,
        "load_s": load_s,
        "prompt_tps": statistics.median(prompt_rates),
        "answer_tps": statistics.median(answer_rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--prompt-tokens", type=int, default=230)
    parser.add_argument("--answer-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    rows = []
    for threads in thread_counts:
        rows.append(measure(args.gguf, threads, args.prompt_tokens, args.answer_tokens, args.repeats))
        print(rows[-1], flush=True)
    one, most = rows[0], rows[-1]

    # Projection to 6 vCPUs (an estimate): the per-thread rate at this machine's largest thread
    # count, times 6 — that is, the scaling efficiency measured from 1 to N threads kept to 6.
    def projected(key: str) -> float:
        return most[key] / most["threads"] * LAMBDA_VCPUS

    warm_s = args.prompt_tokens / projected("prompt_tps") + args.answer_tokens / projected("answer_tps")
    size = args.gguf.stat().st_size
    cold_s = [size / rate + most["load_s"] + warm_s for rate in S3_BYTES_PER_SECOND]
    cold_efs_s = [size / rate + warm_s for rate in EFS_BYTES_PER_SECOND]  # mmap'd from EFS: the read is the load
    lambda_per_1000 = 1000 * (warm_s * LAMBDA_MEMORY_GB * LAMBDA_PRICE_GB_SECOND + LAMBDA_PRICE_REQUEST)
    host_per_1000 = [(1000 * seconds + G4DN_WAKE_SECONDS) / 3600 * G4DN_PRICE_HOUR for seconds in G4DN_SECONDS_PER_PROFILE]
    here_s = {row["threads"]: args.prompt_tokens / row["prompt_tps"] + args.answer_tokens / row["answer_tps"] for row in rows}
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {cores} cores; {args.gguf.name} ({size / 1e9:.2f} GB, random "
        f"weights); one profile = {args.prompt_tokens} prompt + {args.answer_tokens} answer tokens; llama.cpp's own timings, medians of "
        f"{args.repeats}.",
        "",
        "| threads | load s (page cache warm) | prompt tokens/s | answer tokens/s | seconds per profile |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {row['threads']} | {row['load_s']:.1f} | {row['prompt_tps']:.1f} | {row['answer_tps']:.2f} | {here_s[row['threads']]:.1f} |"
            for row in rows
        ),
        "",
        f"Projected to a {LAMBDA_VCPUS}-vCPU 10 GB Lambda (estimates: the per-thread rate at {most['threads']} threads x "
        f"{LAMBDA_VCPUS}; scaling 1 -> {most['threads']} threads measured at "
        f"{most['prompt_tps'] / one['prompt_tps'] / most['threads']:.0%} (prompt) and "
        f"{most['answer_tps'] / one['answer_tps'] / most['threads']:.0%} (answer) of linear):",
        "",
        "| | Lambda 10 GB + llama.cpp (estimate) | g4dn.xlarge host (README's figures) | design's goal |",
        "| --- | ---: | ---: | ---: |",
        f"| seconds per profile, warm | {warm_s:.1f} | {G4DN_SECONDS_PER_PROFILE[0]:.0f}-{G4DN_SECONDS_PER_PROFILE[1]:.0f} "
        f"| < {DESIGN_SECONDS_PER_PROFILE:.0f} |",
        f"| first profile, cold (GGUF from S3 at {S3_BYTES_PER_SECOND[1] / 1e6:.0f}-{S3_BYTES_PER_SECOND[0] / 1e6:.0f} MB/s + load) "
        f"| {min(cold_s):.0f}-{max(cold_s):.0f} | ~{G4DN_WAKE_SECONDS:.0f} (stopped host) | - |",
        f"| first profile, cold (the design's EFS, assumed {EFS_BYTES_PER_SECOND[0] / 1e6:.0f}-{EFS_BYTES_PER_SECOND[1] / 1e6:.0f} MB/s) "
        f"| {min(cold_efs_s):.0f}-{max(cold_efs_s):.0f} | | - |",
        f"| cost per 1,000 profiles | ${lambda_per_1000:.2f} | ${min(host_per_1000):.2f}-{max(host_per_1000):.2f} (wake included) | - |",
    ]
    print(
        write_section(
            "serverless-benchmark", "The serverless alternative: Lambda + llama.cpp (`benchmarks/bench_serverless.py`)", "\n".join(lines)
        )
    )


if __name__ == "__main__":
    main()
