"""Our one-pass q4_k_m export vs llama.cpp's route, on models with Mistral-7B's layer shapes.

llama.cpp's route: peft merge -> save_pretrained -> convert_hf_to_gguf.py --outtype f16 ->
llama_model_quantize(Q4_K_M) (the llama-quantize tool's function, through llama-cpp-python).
Ours: `python -m pipeline convert --quant q4_k_m`. Each step is a fresh process under GNU time;
the route's peak RSS is the largest of its steps, its intermediate disk the merged model plus the
f16 GGUF. Models: random bf16 weights, hidden 4096, FFN 14336, 32 heads, 8 KV heads, vocabulary
32000, 2 and 4 layers, with a random r=16 adapter on q/k/v/o.

Run: ``.venv/bin/python -m benchmarks.bench_convert [--layers 2,4] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import timed, write_section
from tests.pipeline.gguf.conftest import ensure_converter

ROOT = Path(__file__).resolve().parents[1]

SHAPES = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-5,
    sliding_window=None,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)
KERNEL_SAMPLE_ROWS = 4096  # x 4096 columns: 16.8 M parameters per kernel measurement

BUILD = r"""
import sys, shutil, torch
from pathlib import Path
from transformers import MistralConfig, MistralForCausalLM
from peft import LoraConfig, get_peft_model
out, layers, tiny = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
config = MistralConfig(num_hidden_layers=layers, **SHAPES)
model = MistralForCausalLM(config)
model.save_pretrained(str(out / "base"))
for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy2(tiny / name, out / "base" / name)
lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
get_peft_model(model, lora).save_pretrained(str(out / "adapter"))
"""

MERGE = r"""
import sys, shutil, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = map(Path, sys.argv[1:4])
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16), str(adapter))
model.merge_and_unload().save_pretrained(str(out))
for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy2(base / name, out / name)
"""

QUANTIZE = r"""
import sys, ctypes, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
params.nthread = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


READ = r"""
import sys
from pipeline.gguf.safetensors_reader import load_f32, model_tensors
for ref in model_tensors(sys.argv[1]).values():
    load_f32(ref)
"""


def kernel_rates() -> dict[str, float]:
    """llama.cpp's quantization throughput on one core, measured here (parameters per second)."""
    import numpy as np
    from gguf import GGMLQuantizationType

    from pipeline.gguf import quant

    values = np.random.default_rng(0).standard_normal((KERNEL_SAMPLE_ROWS, 4096), dtype=np.float32)
    rates = {}
    for kind in (GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K):
        start = time.perf_counter()
        quant.encode(values, kind)  # no pool: one core
        rates[kind.name] = values.size / (time.perf_counter() - start)
    return rates


def kernel_limit_seconds(config: dict, threads: int, rates: dict[str, float]) -> float:
    """Parameters / llama.cpp's kernel rate / threads, for the Q4_K_M mixture of this model."""
    from pipeline.gguf.quant import use_more_bits

    hidden, ffn, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * (hidden // config["num_attention_heads"])
    q4 = q6 = 0
    for layer in range(layers):
        q4 += 2 * hidden * hidden + hidden * kv + 2 * ffn * hidden  # q, o, k, gate, up
        more = use_more_bits(layer, layers)
        if more:
            q6 += hidden * kv + ffn * hidden  # v, down
        else:
            q4 += hidden * kv + ffn * hidden
    q4 += config["vocab_size"] * hidden  # token_embd
    q6 += config["vocab_size"] * hidden  # output
    return (q4 / rates["Q4_K"] + q6 / rates["Q6_K"]) / threads


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="2,4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    converter = ensure_converter()
    rates = kernel_rates()
    print(f"kernel rates on one core: {', '.join(f'{k} {v / 1e6:.1f} Mparam/s' for k, v in rates.items())}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as work_dir:
        work = Path(work_dir)
        tiny = work / "tiny"
        subprocess.run([sys.executable, "-m", "pipeline", "tiny-model", "--out", str(tiny)], cwd=ROOT, check=True, capture_output=True)
        for layers in map(int, args.layers.split(",")):
            model = work / f"m{layers}"
            build = BUILD.replace("**SHAPES", "**" + repr(SHAPES))
            subprocess.run([sys.executable, "-c", build, str(model), str(layers), str(tiny)], cwd=ROOT, check=True)
            ours, theirs = [], []
            for attempt in range(args.repeats):
                out = work / f"ours-{layers}-{attempt}.gguf"
                ours.append(
                    tuple(
                        timed(
                            [
                                sys.executable,
                                "-m",
                                "pipeline",
                                "convert",
                                "--base-model",
                                str(model / "base"),
                                "--adapter",
                                str(model / "adapter"),
                                "--out",
                                str(out),
                                "--quant",
                                "q4_k_m",
                                "--threads",
                                str(args.threads),
                                "--no-progress",
                            ]
                        )
                    )
                )
                description = json.loads(Path(f"{out}.json").read_text())
                merged, f16, q4 = work / "merged", work / "route-f16.gguf", work / "route-q4.gguf"
                steps = [
                    tuple(timed([sys.executable, "-c", MERGE, str(model / "base"), str(model / "adapter"), str(merged)])),
                    tuple(timed([sys.executable, str(converter), str(merged), "--outtype", "f16", "--outfile", str(f16)])),
                ]
                intermediate = disk_bytes(merged) + disk_bytes(f16)
                steps.append(tuple(timed([sys.executable, "-c", QUANTIZE, str(f16), str(q4), str(args.threads)])))
                theirs.append((sum(s for s, _ in steps), max(r for _, r in steps), intermediate))
                shutil.rmtree(merged)
                f16.unlink()
                q4.unlink()
                out.unlink()
            read_seconds = timed([sys.executable, "-c", READ, str(model / "base")]).seconds
            limit = kernel_limit_seconds(json.loads((model / "base" / "config.json").read_text()), args.threads, rates) + read_seconds
            rows.append(
                {
                    "layers": layers,
                    "ours_s": statistics.median(s for s, _ in ours),
                    "ours_rss": statistics.median(r for _, r in ours),
                    "theirs_s": statistics.median(t[0] for t in theirs),
                    "theirs_rss": statistics.median(t[1] for t in theirs),
                    "theirs_disk": statistics.median(t[2] for t in theirs),
                    "tensor_types": description["tensor_types"],
                    "base_bytes": disk_bytes(model / "base"),
                    "limit_s": limit,
                    "read_s": read_seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(model)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
        f"medians of {args.repeats} run(s), each step a fresh process. llama.cpp's kernels measured here on one core: "
        + ", ".join(f"{k} {v / 1e6:.1f} M parameters/s" for k, v in rates.items())
        + ".",
        "",
        "| layers | base bf16 MB | ours s | ours peak RSS MiB | ours intermediate disk | llama.cpp route s | route peak RSS MiB "
        "| route intermediate disk MB | speed-up | kernel limit + one read s | ours / limit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['layers']} | {row['base_bytes'] / 1e6:,.0f} | {row['ours_s']:.1f} | {row['ours_rss']:.0f} | 0 "
            f"| {row['theirs_s']:.1f} | {row['theirs_rss']:.0f} | {row['theirs_disk'] / 1e6:,.0f} | {row['theirs_s'] / row['ours_s']:.2f}x "
            f"| {row['limit_s']:.1f} | {row['ours_s'] / row['limit_s']:.2f} |"
        )
    print(write_section("convert-benchmark", "GGUF export vs llama.cpp's route (`benchmarks/bench_convert.py`)", "\n".join(lines)))


if __name__ == "__main__":
    main()
