"""Padding in the training batches: Mistral-7B's real tokenizer on the export's own rows.

The rows are the sample's profiles through the export's row code (the source design's 3,000
profiles by default), tokenized exactly as the trainer does (pipeline.training.data.tokenize: the
prompt as at inference, the answer, </s>) with Mistral-7B-Instruct-v0.2's tokenizer, rebuilt from
mistral-common's copy of its SentencePiece model (tests/mistral_tokenizer.py). Reported: the length
distribution, and the share of padded tokens in the per-device batches of 4 in the order each of
transformers' training samplers gives them (the spec's batch 4 x accumulation 4, seed 42):
``random`` (the Trainer's default, what training uses today) and ``group_by_length``
(LengthGroupedSampler). Padded positions are masked out of the loss but computed all the same, so
the ratio of the tokens each order makes the GPU compute is an upper bound on the speed-up from
grouping: an estimate, not a GPU measurement (benchmarks/train_gpu.py measures on a GPU).

Run: ``.venv/bin/python -m benchmarks.bench_padding [--profiles 3000 | --dataset DIR]`` (DIR: a
dataset folder written by ``python -m pipeline dataset export``, e.g. of the production table);
results go to docs/benchmarks.md between the markers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

from benchmarks.measure import write_section
from pipeline.dataset.rows import iter_rows
from pipeline.training import data
from pipeline.training.hyperparameters import Hyperparameters
from tests.mistral_tokenizer import write_tokenizer_files
from tests.pipeline.training.conftest import write_dataset

SAMPLERS = ("random", "group_by_length")


def token_lengths(dataset: Path, work: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(write_tokenizer_files(work / "tokenizer")))
    with open(dataset / "train.jsonl", "rb") as lines:
        rows = list(iter_rows(lines, "train.jsonl"))
    split = data.tokenize(tokenizer, rows, Hyperparameters().max_seq_length)
    return [len(ids) for ids in split.input_ids]


def sampler_order(name: str, lengths: list[int], hp: Hyperparameters) -> list[int]:
    """The example order transformers' sampler gives one epoch (as the Trainer seeds it)."""
    import torch
    from torch.utils.data import RandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator()
    generator.manual_seed(hp.seed)
    if name == "random":
        return list(RandomSampler(range(len(lengths)), generator=generator))
    effective_batch = hp.per_device_train_batch_size * hp.gradient_accumulation_steps
    return list(LengthGroupedSampler(effective_batch, lengths=lengths, generator=generator))


def padding(order: list[int], lengths: list[int], batch: int) -> tuple[int, int]:
    """(real tokens, padded tokens) of the batches of ``batch`` examples in ``order``: each batch is
    padded to its longest example (DataCollatorForSeq2Seq, padding=True)."""
    real = padded = 0
    for start in range(0, len(order), batch):
        sizes = [lengths[index] for index in order[start : start + batch]]
        real += sum(sizes)
        padded += max(sizes) * len(sizes) - sum(sizes)
    return real, padded


def main() -> None:
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profiles", type=int, default=3000, help="rows made from this many sample profiles (default %(default)s)")
    source.add_argument("--dataset", type=Path, help="a dataset folder (its train.jsonl) instead of the sample")
    args = parser.parse_args()
    hp = Hyperparameters()
    with tempfile.TemporaryDirectory() as work:
        if args.dataset and not (args.dataset / "train.jsonl").is_file():
            raise SystemExit(f"{args.dataset} has no train.jsonl: give a folder written by `python -m pipeline dataset export`")
        dataset = args.dataset or write_dataset(Path(work) / "dataset", train_rows=args.profiles, validation_rows=0)
        lengths = token_lengths(dataset, Path(work))
    described = f"of {args.dataset}" if args.dataset else f"of the sample (`--profiles {args.profiles}`)"
    quantiles = statistics.quantiles(lengths, n=10)
    lines = [
        f"Measured on {platform.machine()}, Python {platform.python_version()}: {len(lengths):,} training rows {described}, "
        f"Mistral-7B-Instruct-v0.2's tokenizer, the trainer's own tokenization; batches of "
        f"{hp.per_device_train_batch_size} in the order of transformers' sampler (seed {hp.seed}, effective batch "
        f"{hp.per_device_train_batch_size * hp.gradient_accumulation_steps}).",
        "",
        f"Tokens per example: min {min(lengths)}, p10 {quantiles[0]:.0f}, median {statistics.median(lengths):.0f}, "
        f"p90 {quantiles[-1]:.0f}, max {max(lengths)} (cap {hp.max_seq_length}).",
        "",
        "| sampler | real tokens | padded tokens | padded share | tokens computed per real token | computed, vs random |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    computed = {}
    for name in SAMPLERS:
        real, padded = padding(sampler_order(name, lengths, hp), lengths, hp.per_device_train_batch_size)
        computed[name] = (real + padded) / real
        lines.append(
            f"| {name} | {real:,} | {padded:,} | {padded / (real + padded):.1%} | {computed[name]:.3f} | "
            f"{computed[name] / computed['random']:.3f} |"
        )
    print(write_section("padding-benchmark", "Padding in the training batches (`benchmarks/bench_padding.py`)", "\n".join(lines)))


if __name__ == "__main__":
    main()
