"""SageMaker's training-container contract, without the SageMaker training toolkit.

Base directory ``$SAGEMAKER_BASE_DIR`` or ``/opt/ml``:
  input/config/hyperparameters.json   every value a string
  input/data/training/                the dataset stage's train.jsonl and validation.jsonl
  input/data/base_model/              a Hugging Face model directory, with tokenizer.model
  model/                              what we leave: the adapter, tokenizer, training_metrics.json
  checkpoints/                        synced to S3 by managed spot training; resumed from
  output/failure                      why the job failed, shown as the job's FailureReason

On an instance with several GPUs the container runs one training process per GPU (data parallel,
torch.distributed.run), with no change of image or hyperparameters; see ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.training import hyperparameters, trainer
from pipeline.training.job_spec import BASE_MODEL_CHANNEL, TRAINING_CHANNEL

DEFAULT_BASE_DIR = "/opt/ml"
# SageMaker shows at most 1 KB of output/failure as the FailureReason.
MAX_FAILURE_BYTES = 1024
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what SageMaker expects of a stopped container
# How many data-parallel processes to run; unset: one per visible GPU. Set in tests, which run two
# processes on CPU (gloo) to exercise the same path without GPUs.
PROCESSES_ENV = "DATA_PARALLEL_PROCESSES"


class ContractError(PipelineError):
    """The container was started without what the SageMaker contract promises (channel, config)."""


class ContainerPaths:
    def __init__(self, base_dir: str | Path | None = None):
        self.base = Path(base_dir or os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)
        self.hyperparameters = self.base / "input" / "config" / "hyperparameters.json"
        self.training = self.base / "input" / "data" / TRAINING_CHANNEL
        self.base_model = self.base / "input" / "data" / BASE_MODEL_CHANNEL
        self.model = self.base / "model"
        self.checkpoints = self.base / "checkpoints"
        self.failure = self.base / "output" / "failure"


def read_hyperparameters(path: Path) -> hyperparameters.Hyperparameters:
    if not path.is_file():
        return hyperparameters.Hyperparameters()  # CreateTrainingJob without HyperParameters
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path} is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ContractError(f"{path} must hold a JSON object")
    return hyperparameters.parse(values)


def run(paths: ContainerPaths) -> dict:
    for channel in (paths.training, paths.base_model):
        if not channel.is_dir():
            raise ContractError(f"input channel {channel.name!r} is missing ({channel})")
    hp = read_hyperparameters(paths.hyperparameters)
    return trainer.train(trainer.TrainingPaths(paths.training, paths.base_model, paths.model, paths.checkpoints), hp, progress=False)


def write_failure(paths: ContainerPaths, message: str) -> None:
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(message.encode("utf-8")[:MAX_FAILURE_BYTES].decode("utf-8", "ignore"))


def data_parallel_processes() -> int:
    configured = os.environ.get(PROCESSES_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ContractError(f"{PROCESSES_ENV} must be a whole number of processes, got {configured!r}")
        return int(configured)
    import torch

    return max(1, torch.cuda.device_count())


def launch_data_parallel(processes: int) -> int:
    """One worker per GPU under torch.distributed.run, each running this module's ``run``; SIGTERM
    (spot interruption, StopTrainingJob, MaxRuntime) is passed on, and the workers agree to stop at
    the same step (trainer.py), save a checkpoint and exit."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", __name__]
    print(f"data parallel: {processes} processes", flush=True)
    worker = subprocess.Popen(command)
    interrupted = False

    def forward(signum, frame):
        nonlocal interrupted
        interrupted = True
        worker.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = worker.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if code == 0 else EXIT_FAILURE  # the workers wrote output/failure


def main() -> int:
    paths = ContainerPaths()
    if "LOCAL_RANK" not in os.environ:  # not yet a worker of torch.distributed.run
        try:
            processes = data_parallel_processes()
        except ContractError as exc:
            write_failure(paths, f"{exc.name}: {exc}")
            print(f"error: {exc.name}: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILURE
        if processes > 1:
            return launch_data_parallel(processes)
    try:
        run(paths)
    except trainer.TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except PipelineError as exc:
        write_failure(paths, f"{exc.name}: {exc}")
        print(f"error: {exc.name}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the job must say why it failed, whatever broke
        write_failure(paths, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":  # a torch.distributed.run worker
    sys.exit(main())
