"""Our one-pass q4_k_m export vs llama.cpp's route, on models with Mistral-7B's layer shapes.

llama.cpp's route: peft merge -> save_pretrained -> convert_hf_to_gguf.py --outtype f16 ->
llama_model_quantize(Q4_K_M) (the llama-quantize tool's function, through llama-cpp-python).
Ours: `python -m pipeline convert --quant q4_k_m`. Each step is a fresh process under GNU time;
the route's peak RSS is the largest of its steps, its intermediate disk the merged model plus the
f16 GGUF. Models: random bf16 weights, hidden 4096, FFN 14336, 32 heads, 8 KV heads, vocabulary
32000, 2 and 4 layers by default (``--layers 32``: Mistral-7B's 14.5 GB, written tensor by tensor;
the route is run only up to ``--route-max-layers``), with a random r=16 adapter on q/k/v/o.

Run: ``.venv/bin/python -m benchmarks.bench_convert [--layers 2,4] [--repeats 1] [--keep-gguf DIR]``.
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
# At 32 layers the route needs the merged 14.5 GB model in memory and ~29 GB of intermediate files:
# more than the machines this runs on have to spare, and the point measured there is ours alone.
ROUTE_MAX_LAYERS = 4
LAMBDA_THREADS = 6  # a 10,240 MB Lambda's vCPUs
KERNEL_SAMPLE_ROWS = 4096  # x 4096 columns: 16.8 M parameters per kernel measurement

# The base is written tensor by tensor, one shard per few layers, so that a 32-layer (14.5 GB) base
# is built in a few hundred MB of memory: the names and shapes come from transformers' own Mistral
# class instantiated on the meta device, the adapter's names from peft's state dict of it.
BUILD = r"""
import json, sys, shutil, torch
from pathlib import Path
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
out, layers, tiny = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
SHARD_BYTES = 2 * 1024**3
generator = torch.Generator().manual_seed(0)
config = MistralConfig(num_hidden_layers=layers, dtype="bfloat16", **SHAPES)
with torch.device("meta"):
    model = MistralForCausalLM(config)
base = out / "base"
base.mkdir(parents=True)
config.save_pretrained(str(base))
def random_like(shape, norm):
    if norm:
        return torch.ones(shape, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
groups, group, size = [], {}, 0
for name, tensor in model.state_dict().items():
    group[name] = tuple(tensor.shape)
    size += tensor.numel() * 2
    if size >= SHARD_BYTES:
        groups.append(group); group, size = {}, 0
groups += [group] if group else []
weight_map = {}
for index, group in enumerate(groups, 1):
    file = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
    shard = {name: random_like(shape, name.endswith("norm.weight")) for name, shape in group.items()}
    save_file(shard, str(base / file), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(shard, file))
    del shard
(base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy2(tiny / name, base / name)
lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
peft_model = get_peft_model(model, lora)
adapter = {name: random_like(tuple(t.shape), False) for name, t in get_peft_model_state_dict(peft_model).items()}
(out / "adapter").mkdir()
save_file(adapter, str(out / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"})
peft_model.peft_config["default"].save_pretrained(str(out / "adapter"))
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


def budget_estimates(model: Path, threads: int) -> dict[str, float]:
    """What the ConvertToGGUF Lambda's up-front check (pipeline/gguf/budget.py) estimates for this
    model: here (this run's threads) and on a 10 GB Lambda's 6 vCPUs. Both assume S3 reads."""
    from pipeline.gguf import budget, convert, quant

    _, planned, _ = convert.plan(str(model / "base"), str(model / "adapter"), quant.OutputType.Q4_K_M)
    adapter_bytes = sum(a.nbytes + b.nbytes for tensor in planned if tensor.lora for a, b, _ in [tensor.lora])
    here = budget.estimate(planned, threads, adapter_bytes)
    on_lambda = budget.estimate(planned, LAMBDA_THREADS, adapter_bytes)
    return {"budget_here_s": here.seconds, "budget_lambda_s": on_lambda.seconds, "budget_peak_mib": on_lambda.peak_bytes / 2**20}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="2,4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--route-max-layers",
        type=int,
        default=ROUTE_MAX_LAYERS,
        help="run llama.cpp's route only up to this many layers (it needs the merged model in memory and twice the base on disk)",
    )
    parser.add_argument("--keep-gguf", type=Path, help="keep each size's Q4_K_M GGUF in this directory (for bench_serverless)")
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
            gguf_bytes = 0
            keep_gguf = args.keep_gguf / f"mistral-7b-shaped-{layers}-layers.q4_k_m.gguf" if args.keep_gguf else None
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
                gguf_bytes = out.stat().st_size
                description = json.loads(Path(f"{out}.json").read_text())
                if keep_gguf and attempt == args.repeats - 1:
                    shutil.move(out, keep_gguf)
                else:
                    out.unlink()
                if layers > args.route_max_layers:
                    continue
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
            read_seconds = timed([sys.executable, "-c", READ, str(model / "base")]).seconds
            limit = kernel_limit_seconds(json.loads((model / "base" / "config.json").read_text()), args.threads, rates) + read_seconds
            rows.append(
                {
                    "layers": layers,
                    "ours_s": statistics.median(s for s, _ in ours),
                    "ours_rss": statistics.median(r for _, r in ours),
                    "theirs_s": statistics.median(t[0] for t in theirs) if theirs else None,
                    "theirs_rss": statistics.median(t[1] for t in theirs) if theirs else None,
                    "theirs_disk": statistics.median(t[2] for t in theirs) if theirs else None,
                    "gguf_bytes": gguf_bytes,
                    **budget_estimates(model, args.threads),
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
        + ". The route is run up to "
        + f"{args.route_max_layers} layers.",
        "",
        "| layers | base bf16 MB | ours s | ours peak RSS MiB | ours intermediate disk | GGUF MB | llama.cpp route s | route peak RSS MiB "
        "| route intermediate disk MB | speed-up | kernel limit + one read s | ours / limit | budget.py estimate here s "
        f"| budget.py estimate, {LAMBDA_THREADS}-vCPU Lambda s | budget.py peak MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        route = (
            f"{row['theirs_s']:.1f} | {row['theirs_rss']:.0f} | {row['theirs_disk'] / 1e6:,.0f} | {row['theirs_s'] / row['ours_s']:.2f}x"
            if row["theirs_s"] is not None
            else "not run | not run | not run | -"
        )
        lines.append(
            f"| {row['layers']} | {row['base_bytes'] / 1e6:,.0f} | {row['ours_s']:.1f} | {row['ours_rss']:.0f} | 0 "
            f"| {row['gguf_bytes'] / 1e6:,.0f} "
            f"| {route} | {row['limit_s']:.1f} | {row['ours_s'] / row['limit_s']:.2f} "
            f"| {row['budget_here_s']:.0f} | {row['budget_lambda_s']:.0f} | {row['budget_peak_mib']:,.0f} |"
        )
    if all(row["theirs_s"] is None for row in rows):  # --layers 32: ours alone, a section of its own
        print(write_section("convert-7b-benchmark", "The Mistral-7B-shaped export (`bench_convert.py --layers 32`)", "\n".join(lines)))
    else:
        print(write_section("convert-benchmark", "GGUF export vs llama.cpp's route (`benchmarks/bench_convert.py`)", "\n".join(lines)))


if __name__ == "__main__":
    main()
