"""Training hyperparameters: the spec's LoRA and TrainingArguments as defaults, overridable by name.

SageMaker hands hyperparameters over as strings (``input/config/hyperparameters.json``); the local
CLI takes ``--set name=value``. Both go through ``parse``: an unknown name or a malformed value is
an InvalidArgument naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from pipeline.errors import InvalidArgument


class Precision(str, Enum):
    AUTO = "auto"  # bf16 where supported, fp16 on older GPUs (T4), fp32 on CPU
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Switch(str, Enum):
    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class SamplingStrategy(str, Enum):
    """The order of the training examples: transformers' ``train_sampling_strategy`` values."""

    RANDOM = "random"  # the Trainer's default
    GROUP_BY_LENGTH = "group_by_length"  # batches of similar lengths: less padding (docs/benchmarks.md)


@dataclass(frozen=True)
class Hyperparameters:
    # The spec's LoraConfig.
    r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "v_proj", "k_proj", "o_proj")
    lora_dropout: float = 0.05
    bias: str = "none"
    # The spec's TrainingArguments.
    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    logging_steps: int = 10
    save_strategy: str = "epoch"
    # Ours.
    precision: Precision = Precision.AUTO
    qlora: Switch = Switch.AUTO  # auto: on for GPUs with at most QLORA_AUTO_MAX_GPU_GB
    max_seq_length: int = 1024  # longer examples are skipped, counted
    per_device_eval_batch_size: int = 4
    gradient_checkpointing: Switch = Switch.AUTO  # auto: on with a GPU
    seed: int = 42
    # Random until a GPU measures what grouping gains on the real data: 4.5% of the computed tokens
    # are padding on the sample's rows (benchmarks/bench_padding.py).
    train_sampling_strategy: SamplingStrategy = SamplingStrategy.RANDOM
    max_train_examples: int = 0  # 0: all; for quick local runs
    # Seconds the job may run (SageMaker's MaxRuntimeInSeconds, filled in by the stack); 0: no limit.
    # The trainer measures its step time and stops in time to save the adapter (trainer.TimeBudget).
    time_budget_seconds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            field.name: (list(value) if isinstance(value, tuple) else value.value if isinstance(value, Enum) else value)
            for field in fields(self)
            for value in [getattr(self, field.name)]
        }


QLORA_AUTO_MAX_GPU_GB = 24
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(name: str, kind: Any, text: str) -> Any:
    text = str(text).strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if isinstance(kind, type) and issubclass(kind, Enum):
            return kind(text.lower())
        if kind == tuple[str, ...]:
            values = tuple(part.strip() for part in text.strip("[]").replace('"', "").replace("'", "").split(",") if part.strip())
            if not values:
                raise ValueError
            return values
        return text
    except ValueError:
        expected = {int: "a whole number", float: "a number"}.get(kind)
        if expected is None and isinstance(kind, type) and issubclass(kind, Enum):
            expected = "one of " + ", ".join(member.value for member in kind)
        raise InvalidArgument(f"hyperparameter {name}={text!r}: expected {expected or 'a comma-separated list'}") from None


def parse(values: Mapping[str, Any], base: Hyperparameters | None = None) -> Hyperparameters:
    """Defaults overridden by ``values`` (strings, as SageMaker gives them, or typed)."""
    base = base or Hyperparameters()
    known = {field.name: field for field in fields(Hyperparameters)}
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise InvalidArgument(f"unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}")
        changes[name] = _convert(name, _resolve_type(known[name]), value)
    result = dataclasses.replace(base, **changes)
    _check(result)
    return result


def _resolve_type(field: dataclasses.Field) -> Any:
    # ``from __future__ import annotations`` leaves annotations as strings.
    return {
        "int": int,
        "float": float,
        "str": str,
        "tuple[str, ...]": tuple[str, ...],
        "Precision": Precision,
        "Switch": Switch,
        "SamplingStrategy": SamplingStrategy,
    }[str(field.type)]


def _check(hp: Hyperparameters) -> None:
    positive = (
        "r",
        "lora_alpha",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
        "max_seq_length",
        "per_device_eval_batch_size",
    )
    for name in positive:
        if getattr(hp, name) < 1:
            raise InvalidArgument(f"hyperparameter {name} must be at least 1, got {getattr(hp, name)}")
    if not hp.num_train_epochs > 0 or not hp.learning_rate > 0:
        raise InvalidArgument("hyperparameters num_train_epochs and learning_rate must be above 0")
    if not 0 <= hp.lora_dropout < 1 or not 0 <= hp.warmup_ratio < 1:
        raise InvalidArgument("hyperparameters lora_dropout and warmup_ratio must be in [0, 1)")
    if hp.max_train_examples < 0:
        raise InvalidArgument("hyperparameter max_train_examples must be 0 (all) or more")
    if hp.time_budget_seconds < 0:
        raise InvalidArgument("hyperparameter time_budget_seconds must be 0 (no limit) or more")
    if hp.bias not in {"none", "all", "lora_only"}:
        raise InvalidArgument(f"hyperparameter bias must be none, all or lora_only, got {hp.bias!r}")


def parse_assignments(assignments: list[str], flag: str = "--set") -> dict[str, str]:
    """``["r=8", "learning_rate=1e-4"]`` -> {"r": "8", "learning_rate": "1e-4"} (``flag`` names the
    option in the error: --set for hyperparameters, --gate for thresholds)."""
    values = {}
    for assignment in assignments:
        name, separator, value = assignment.partition("=")
        if not separator or not name.strip():
            raise InvalidArgument(f"{flag} expects name=value, got {assignment!r}")
        values[name.strip()] = value.strip()
    return values
