"""QLoRA step time, tokens/s and peak GPU memory for Mistral-7B-Instruct-v0.2's exact architecture.

No weights are needed: a model with the real config (32 layers, hidden 4096, FFN 14336, 32 heads,
8 KV heads, vocabulary 32000) is initialised at random, saved once to local disk and loaded back
through bitsandbytes' 4-bit NF4 (double quant), as the training job loads the real base model.
LoRA with the spec's settings (r 16, alpha 32, q/k/v/o), the spec's batch (4 per device, gradient
accumulation 4), sequences of the given lengths (the dataset's prompts plus answers are 250-450
Mistral tokens; 1,024 is the training cap). Goal: fits a 16 GB T4 at batch 4.

Run on a CUDA machine with requirements/training-gpu.txt installed:
``python benchmarks/train_gpu.py [--seq-lens 384,1024] [--steps 6] [--work /tmp/mistral-random]``.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

MISTRAL_7B_INSTRUCT_V02 = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
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
BATCH = 4
ACCUMULATION = 4


def build_random_model(work: Path, dtype) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    if (work / "config.json").is_file():
        return work
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(MistralConfig(**MISTRAL_7B_INSTRUCT_V02)).to(dtype)
    model.save_pretrained(str(work))
    del model
    torch.cuda.empty_cache()
    return work


def measure(model_dir: Path, seq_len: int, steps: int, dtype) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.cuda.reset_peak_memory_stats()
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=quantization, dtype=dtype, device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            bias="none",
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        ),
    )
    # from_pretrained returns the model in eval mode, where transformers skips gradient checkpointing
    # (and dropout); the Trainer calls train() itself, so the benchmark must too.
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    ids = torch.randint(3, 32000, (BATCH, seq_len), device="cuda")
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(ACCUMULATION):
            loss = model(input_ids=ids, labels=ids).loss / ACCUMULATION
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step > 0:  # the first step includes kernel selection and allocator warm-up
            times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times)
    result = {
        "seq_len": seq_len,
        "step_seconds": step_seconds,
        "tokens_per_second": BATCH * ACCUMULATION * seq_len / step_seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 1024**3,
    }
    del model, optimizer
    torch.cuda.empty_cache()
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--seq-lens", default="384,1024")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--work", default="/tmp/mistral-7b-random")
    args = parser.parse_args()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model_dir = build_random_model(Path(args.work), dtype)
    name = torch.cuda.get_device_name(0)
    print(f"| GPU | sequence length | step s (batch {BATCH} x accumulation {ACCUMULATION}) | tokens/s | peak GPU memory GiB | fits 16 GB |")
    print("|---|---:|---:|---:|---:|---|")
    for seq_len in map(int, args.seq_lens.split(",")):
        r = measure(model_dir, seq_len, args.steps, dtype)
        print(
            f"| {name} | {seq_len} | {r['step_seconds']:.2f} | {r['tokens_per_second']:,.0f} | {r['peak_gib']:.1f} "
            f"| {'yes' if r['peak_gib'] < 15.0 else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
