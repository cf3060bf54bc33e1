"""LoRA / QLoRA fine-tuning of a Mistral-architecture model on the dataset stage's JSONL.

Runtime-agnostic: the SageMaker entry point (training/sagemaker.py) and the local CLI call
``train`` with plain paths. Output is the LoRA adapter (not a merged model: merging happens in the
GGUF export), the tokenizer files, and training_metrics.json.

The tokenization is ours (data.tokenize) rather than TRL's SFTTrainer: the prompt ids must be
exactly those inference uses (prompt.prompt_token_ids), with the loss on the answer only; with
those ids in hand, transformers' Trainer does the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import model_files
from pipeline.errors import InvalidArgument, PipelineError
from pipeline.training import data
from pipeline.training.hyperparameters import QLORA_AUTO_MAX_GPU_GB, Hyperparameters, Precision, Switch

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
METRICS_FILE = "training_metrics.json"

# The time budget: optimizer steps timed before the plan is made (the first one, with its warm-up,
# is not counted), and what is kept back at the end for the last evaluation, saving the adapter,
# and SageMaker's upload: a fixed floor or a share of the budget, whichever is more.
BUDGET_PROBE_STEPS = 3
BUDGET_RESERVE_SECONDS = 300
BUDGET_RESERVE_SHARE = 0.05
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_clock = time.monotonic  # tests replace it: the plan is arithmetic on the times it reads


class TrainingInterrupted(PipelineError):
    """SIGTERM (spot interruption, StopTrainingJob, MaxRuntime): a checkpoint was saved, and the
    best finished epoch's adapter, if an epoch finished, is in the output directory."""


def steps_that_fit(budget_s: float, elapsed_s: float, seconds_per_step: float) -> int:
    """Optimizer steps that still fit in the budget, after the reserve for the end of the job."""
    reserve = max(BUDGET_RESERVE_SECONDS, BUDGET_RESERVE_SHARE * budget_s)
    return max(0, int((budget_s - elapsed_s - reserve) // seconds_per_step))


class ModelLoadError(PipelineError):
    """The base model directory is missing its config, weights or tokenizer."""


@dataclass(frozen=True)
class TrainingPaths:
    dataset_dir: Path  # train.jsonl, validation.jsonl
    base_model_dir: Path  # a Hugging Face model directory with tokenizer.model
    output_dir: Path  # the adapter, tokenizer and metrics
    checkpoint_dir: Path  # Trainer checkpoints; resumed from when present


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda" or "cpu"
    gpu_memory_gb: float
    bf16_supported: bool
    gpu_count: int


def detect_hardware() -> Hardware:
    import torch

    if torch.cuda.is_available():
        memory = torch.cuda.get_device_properties(0).total_memory / 1024**3
        return Hardware("cuda", memory, torch.cuda.is_bf16_supported(), torch.cuda.device_count())
    return Hardware("cpu", 0.0, False, 0)


def resolve_precision(hp: Hyperparameters, hardware: Hardware) -> Precision:
    if hp.precision is not Precision.AUTO:
        if hardware.device == "cpu" and hp.precision is not Precision.FP32:
            raise InvalidArgument(f"precision {hp.precision.value} needs a GPU; use fp32 (or auto) on CPU")
        return hp.precision
    if hardware.device == "cpu":
        return Precision.FP32
    return Precision.BF16 if hardware.bf16_supported else Precision.FP16  # a T4 (g4dn) has no bf16


def resolve_qlora(hp: Hyperparameters, hardware: Hardware) -> bool:
    if hp.qlora is Switch.AUTO:
        return hardware.device == "cuda" and hardware.gpu_memory_gb <= QLORA_AUTO_MAX_GPU_GB
    if hp.qlora is Switch.TRUE and hardware.device != "cuda":
        raise InvalidArgument("qlora=true needs a CUDA GPU (bitsandbytes 4-bit kernels)")
    return hp.qlora is Switch.TRUE


def load_tokenizer(base_model_dir: Path):
    from transformers import AutoTokenizer

    if not (base_model_dir / "config.json").is_file():
        raise ModelLoadError(f"{base_model_dir} is not a Hugging Face model directory (no config.json)")
    missing = [name for name in model_files.REQUIRED_TOKENIZER_FILES if not (base_model_dir / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{base_model_dir} has no {', '.join(missing)}: training must tokenize with the publisher's tokenizer.json, "
            "and the adapter carries tokenizer.model to the conversion"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{base_model_dir}'s tokenizer has no chat template")
    if tokenizer.pad_token is None:
        # Mistral has no pad token; padded positions are masked out of attention and loss anyway.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


class _ListDataset:
    def __init__(self, split: data.TokenizedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.input_ids)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids = self.split.input_ids[index]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": self.split.labels[index]}


def accumulation_steps(configured: int, processes: int) -> int:
    """Gradient accumulation per process: the spec's effective batch (batch x accumulation, 16) is
    kept when several processes each contribute a batch per step, as far as it divides."""
    return max(1, configured // processes)


def largest_across_processes(value: float) -> float:
    """``value`` agreed among data-parallel processes as the largest (itself in a single process).

    Every process must stop at the same step, or the others wait forever in the next gradient
    all-reduce: the time budget's plan and a SIGTERM seen by one process are decided together."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def world_size() -> int:
    """Data-parallel processes (torch.distributed.run sets WORLD_SIZE for each)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def _callbacks(stop_requested: dict, hp: Hyperparameters, started: float, paths: TrainingPaths, metric_lines: bool):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Times the first steps, then plans the steps that fit the job's time budget; stops there
        (the cut epoch is evaluated and saved as any epoch), so the job ends Completed with its best adapter."""

        def __init__(self) -> None:
            self.probe_from: tuple[int, float] | None = None
            self.stop_at: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if not hp.time_budget_seconds:
                return control
            now = _clock()
            if self.probe_from is None:
                self.probe_from = (state.global_step, now)  # after the first step: warm-up excluded
            elif self.stop_at is None and state.global_step - self.probe_from[0] >= BUDGET_PROBE_STEPS:
                # The slowest process's figures, so that all plan the same stop.
                per_step = largest_across_processes((now - self.probe_from[1]) / (state.global_step - self.probe_from[0]))
                fits = steps_that_fit(hp.time_budget_seconds, largest_across_processes(now - started), per_step)
                remaining = state.max_steps - state.global_step
                planned = state.global_step + min(fits, remaining)
                self.stop_at = planned
                if state.is_world_process_zero:
                    verdict = (
                        "all fit"
                        if fits >= remaining
                        else f"stopping at step {planned} (epoch {planned / max(state.max_steps, 1) * args.num_train_epochs:.2f})"
                    )
                    print(
                        f"time budget: {hp.time_budget_seconds} s, {now - started:.0f} s used, {per_step:.2f} s/step; "
                        f"{state.max_steps} steps planned, {verdict}",
                        flush=True,
                    )
                    if metric_lines:
                        print(
                            f"planned_steps={planned} step={state.global_step}\nseconds_per_step={per_step:.4g} step={state.global_step}",
                            flush=True,
                        )
            if self.stop_at is not None and state.global_step >= self.stop_at and state.global_step < state.max_steps:
                # The epoch is cut here; its end evaluates and saves (eval/save strategy "epoch").
                control.should_training_stop = True
            return control

    class BestAdapterToOutput(TrainerCallback):
        """After each evaluated save, the best adapter so far goes to the output directory: a job
        stopped later (SIGTERM at MaxRuntime) still leaves its best finished epoch's adapter there."""

        def on_save(self, args, state, control, **kwargs):
            best = state.best_model_checkpoint
            if not state.is_world_process_zero or not best or Path(best).name != f"checkpoint-{state.global_step}":
                return control
            paths.output_dir.mkdir(parents=True, exist_ok=True)
            for name in ADAPTER_FILES:
                shutil.copy2(Path(best) / name, paths.output_dir / name)
            _copy_tokenizer(paths.base_model_dir, paths.output_dir)
            (paths.output_dir / "adapter_origin.json").write_text(
                json.dumps({"checkpoint": Path(best).name, "epoch": state.epoch, "eval_loss": state.best_metric}) + "\n"
            )
            return control

    class StopOnSignal(TrainerCallback):
        """Managed spot: on SIGTERM save a checkpoint at the end of the current step, then stop."""

        def on_step_end(self, args, state, control, **kwargs):
            if world_size() > 1:  # a SIGTERM any process saw stops all of them at this step
                stop_requested["flag"] = largest_across_processes(float(stop_requested["flag"])) > 0
            if stop_requested["flag"]:
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            # The cut epoch is saved for the resume, not evaluated: SageMaker kills the job 120 s
            # after SIGTERM, and the adapter in the output directory stays the best finished epoch's.
            if stop_requested["flag"]:
                control.should_evaluate = False
                control.should_save = True
            return control

    class PrintMetrics(TrainerCallback):
        """``name=value`` lines for SageMaker's metric regexes and for people reading the log."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            names = {"loss": "train_loss", "eval_loss": "eval_loss", "learning_rate": "learning_rate"}
            lines = [f"{names[key]}={value:.6g} step={state.global_step}" for key, value in logs.items() if key in names]
            if lines:
                lines.append(f"epoch={state.epoch or 0:.4f} step={state.global_step}")
                print("\n".join(lines), flush=True)

    # TimeBudget first: train() reads it. The name=value lines are for SageMaker's metric regexes, in
    # its logs; a person at a terminal has the progress bar instead.
    return [TimeBudget(), BestAdapterToOutput(), StopOnSignal(), *([PrintMetrics()] if metric_lines else [])]


def one_voice(trainer, progress: bool) -> None:
    """Transformers prints every log as a Python dict (PrinterCallback without a bar, ProgressCallback
    above its bar). A person gets one bar carrying the loss; SageMaker gets the name=value lines."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnTheBar(ProgressCallback):
        """The training bar, with the latest loss, eval loss and learning rate on it, not printed below it."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {name: f"{logs[name]:.4g}" for name in ("loss", "eval_loss", "learning_rate") if isinstance(logs.get(name), float)}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossOnTheBar())


def add_lora(model, hp: Hyperparameters):
    """The spec's LoRA adapter on ``model``, its initial weights drawn from ``hp.seed``.

    peft draws lora_A from torch's global generator when the adapter is created; the Trainer seeds
    that generator only later, when it is built. Unseeded here, two runs of the same data, settings
    and seed started from different adapters and ended with different adapter bytes.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(hp.seed)
    return get_peft_model(
        model,
        LoraConfig(
            r=hp.r,
            lora_alpha=hp.lora_alpha,
            target_modules=list(hp.target_modules),
            lora_dropout=hp.lora_dropout,
            bias=hp.bias,  # type: ignore[arg-type]  # checked by hyperparameters._check
            task_type="CAUSAL_LM",
        ),
    )


def train(paths: TrainingPaths, hp: Hyperparameters, progress: bool = True) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    started = _clock()
    hardware = detect_hardware()
    precision = resolve_precision(hp, hardware)
    qlora = resolve_qlora(hp, hardware)

    train_examples = data.read_jsonl(paths.dataset_dir / TRAIN_FILE)
    validation_examples = data.read_jsonl(paths.dataset_dir / VALIDATION_FILE)
    if hp.max_train_examples:
        train_examples = train_examples[: hp.max_train_examples]
    tokenizer = load_tokenizer(paths.base_model_dir)
    train_split = data.tokenize(tokenizer, train_examples, hp.max_seq_length)
    validation_split = data.tokenize(tokenizer, validation_examples, hp.max_seq_length)
    if not train_split.input_ids:
        raise data.TrainingDataError(f"every training example is longer than max_seq_length={hp.max_seq_length} tokens")

    dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16, Precision.FP32: torch.float32}[precision]
    model_kwargs: dict[str, Any] = {"dtype": dtype}
    if qlora:
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        # Data parallel (torchrun / accelerate launch): each process holds its own quantized copy.
        model_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(paths.base_model_dir), **model_kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load the base model from {paths.base_model_dir}: {str(exc).splitlines()[0]}") from None
    gradient_checkpointing = hp.gradient_checkpointing is Switch.TRUE or (
        hp.gradient_checkpointing is Switch.AUTO and hardware.device == "cuda"
    )
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model = add_lora(model, hp)

    args = TrainingArguments(
        output_dir=str(paths.checkpoint_dir),
        num_train_epochs=hp.num_train_epochs,
        per_device_train_batch_size=hp.per_device_train_batch_size,
        per_device_eval_batch_size=hp.per_device_eval_batch_size,
        gradient_accumulation_steps=accumulation_steps(hp.gradient_accumulation_steps, world_size()),
        learning_rate=hp.learning_rate,
        warmup_steps=hp.warmup_ratio,  # transformers 5: a value below 1 is a ratio of all steps
        lr_scheduler_type=hp.lr_scheduler_type,
        logging_steps=hp.logging_steps,
        save_strategy=hp.save_strategy,
        eval_strategy=hp.save_strategy,  # evaluate when saving, so the best epoch can be chosen
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        bf16=precision is Precision.BF16,
        fp16=precision is Precision.FP16,
        use_cpu=hardware.device == "cpu",
        gradient_checkpointing=gradient_checkpointing and not qlora,
        seed=hp.seed,
        data_seed=hp.seed,
        train_sampling_strategy=hp.train_sampling_strategy.value,
        report_to=[],
        disable_tqdm=not progress,
    )
    stop_requested = {"flag": False}
    callbacks = _callbacks(stop_requested, hp, started, paths, metric_lines=not progress)
    time_budget = callbacks[0]
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.update(flag=True))
    try:
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_ListDataset(train_split),
            eval_dataset=_ListDataset(validation_split),
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=data.IGNORE_INDEX),
            callbacks=callbacks,
        )
        one_voice(trainer, progress)
        resume_from = get_last_checkpoint(str(paths.checkpoint_dir)) if paths.checkpoint_dir.is_dir() else None
        resumed_from_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
        if resume_from:
            print(f"resuming from {resume_from} (step {resumed_from_step})", flush=True)
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if stop_requested["flag"]:
        adapter = (paths.output_dir / ADAPTER_FILES[0]).is_file()
        raise TrainingInterrupted(
            f"stopped by SIGTERM at step {trainer.state.global_step}; checkpoint in {paths.checkpoint_dir}; "
            + ("the best finished epoch's adapter is in " + str(paths.output_dir) if adapter else "no epoch finished: no adapter")
        )

    paths.output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_world_process_zero():
        # The adapter (adapter_config.json + adapter_model.safetensors): trainer.model is the PeftModel.
        trainer.model.save_pretrained(str(paths.output_dir))  # type: ignore[union-attr,operator]
        _copy_tokenizer(paths.base_model_dir, paths.output_dir)
    history = trainer.state.log_history
    metrics = {
        "loss_curve": [{"step": entry["step"], "loss": entry["loss"]} for entry in history if "loss" in entry],
        "eval_loss_per_epoch": [{"epoch": entry["epoch"], "eval_loss": entry["eval_loss"]} for entry in history if "eval_loss" in entry],
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "train_examples": len(train_split.input_ids),
        "validation_examples": len(validation_split.input_ids),
        "skipped_too_long": {"train": train_split.skipped_too_long, "validation": validation_split.skipped_too_long},
        "train_tokens_per_epoch": train_split.tokens,
        "global_steps": trainer.state.global_step,
        "resumed_from_step": resumed_from_step,
        "seconds": round(_clock() - started, 1),
        # The training loop's own time (transformers' train_runtime): no loading, no saving.
        "train_seconds": next((entry["train_runtime"] for entry in history if "train_runtime" in entry), None),
        "planned_stop_step": time_budget.stop_at,
        "stopped_by_time_budget": trainer.state.global_step < trainer.state.max_steps,
        "precision": precision.value,
        "qlora": qlora,
        "device": hardware.device,
        "data_parallel_processes": world_size(),
        "effective_batch": hp.per_device_train_batch_size * accumulation_steps(hp.gradient_accumulation_steps, world_size()) * world_size(),
        "hyperparameters": hp.as_dict(),
    }
    if trainer.is_world_process_zero():
        (paths.output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    leave_process_group()
    return metrics


def leave_process_group() -> None:
    """Data parallel: this process leaves the process group it trained in (the Trainer joined it)
    once its work is done. A process that exits with it alive can abort while the interpreter shuts
    down (Gloo's threads: SIGABRT, "terminate called without an active exception"; PyTorch's
    documentation asks every process to call destroy_process_group), failing a finished job. Only
    after success: destroying it while another process still waits in a collective can hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _copy_tokenizer(base_model_dir: Path, output_dir: Path) -> None:
    # Tokenizer files travel with the adapter: the GGUF export reads vocabulary and chat template from there.
    model_files.copy_tokenizer(base_model_dir, output_dir)
