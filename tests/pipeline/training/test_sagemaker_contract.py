"""training_image/train as SageMaker runs it, under a temporary SAGEMAKER_BASE_DIR."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import contracts
from pipeline.training import sagemaker, trainer

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ROOT = Path(__file__).resolve().parents[3]
ENTRY = ROOT / "training_image" / "train"


def layout(base: Path, dataset: Path | None, model: Path | None, hyperparameters: dict | None) -> sagemaker.ContainerPaths:
    paths = sagemaker.ContainerPaths(base)
    if dataset is not None:
        shutil.copytree(dataset, paths.training)
    if model is not None:
        shutil.copytree(model, paths.base_model)
    if hyperparameters is not None:
        paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
        paths.hyperparameters.write_text(json.dumps(hyperparameters))
    return paths


def start(base: Path, processes: int = 1) -> subprocess.Popen:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env[sagemaker.PROCESSES_ENV] = str(processes)
    return subprocess.Popen([sys.executable, str(ENTRY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_contract_paths_and_string_hyperparameters(tmp_path, tiny_model_dir, small_dataset):
    hp = {"num_train_epochs": "1", "gradient_accumulation_steps": "1", "logging_steps": "2", "max_train_examples": "32", "r": "8"}
    paths = layout(tmp_path, small_dataset, tiny_model_dir, hp)
    process = start(tmp_path)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert (paths.model / "adapter_model.safetensors").is_file() and (paths.model / "tokenizer.model").is_file()
    metrics = json.loads((paths.model / trainer.METRICS_FILE).read_text())
    assert metrics["hyperparameters"]["r"] == 8 and metrics["train_examples"] == 32
    assert json.loads((paths.model / "adapter_config.json").read_text())["r"] == 8
    assert any(checkpoint.name.startswith("checkpoint-") for checkpoint in paths.checkpoints.iterdir())
    regex = {d["Name"]: d["Regex"] for d in contracts.metric_definitions()}
    assert re.search(regex["train_loss"], output) and re.search(regex["eval_loss"], output)
    metric_lines = [line for line in output.splitlines() if re.match(r"^(train_loss|eval_loss|learning_rate|epoch)=", line)]
    assert metric_lines and all(len(re.findall(r"(?:train_loss|eval_loss|learning_rate|epoch)=", line)) == 1 for line in metric_lines)
    assert not paths.failure.exists()


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "data parallel"])
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_from_it(tmp_path, tiny_model_dir, small_dataset, processes):
    # Data parallel: the SIGTERM reaches every worker, which agree on the step to stop at (one
    # stopping alone would leave the other waiting in the next all-reduce: the job would hang).
    hp = {"num_train_epochs": "2", "gradient_accumulation_steps": "1", "logging_steps": "1", "save_strategy": "epoch"}
    paths = layout(tmp_path, small_dataset, tiny_model_dir, hp)
    total_steps = 2 * 96 // (4 * processes)
    process = start(tmp_path, processes)
    for line in process.stdout:
        if line.rstrip().endswith(" step=5"):
            process.send_signal(signal.SIGTERM)
            break
    rest, _ = process.communicate(timeout=300)
    assert process.returncode == sagemaker.EXIT_INTERRUPTED, rest
    checkpoints = sorted(int(p.name.split("-")[1]) for p in paths.checkpoints.glob("checkpoint-*"))
    assert checkpoints and 5 <= checkpoints[-1] < total_steps // 2  # saved mid-epoch, not at an epoch end
    saved = checkpoints[-1]
    for state in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "adapter_model.safetensors"):
        assert (paths.checkpoints / f"checkpoint-{saved}" / state).is_file()
    assert not (paths.model / "adapter_model.safetensors").exists()

    rerun = start(tmp_path, processes)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert f"(step {saved})" in output and " step=1\n" not in output  # resumed, not restarted
    metrics = json.loads((paths.model / trainer.METRICS_FILE).read_text())
    assert metrics["resumed_from_step"] == saved and metrics["global_steps"] == total_steps


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_channel", "ContractError: input channel 'base_model' is missing"),
        ("unknown_hyperparameter", "InvalidArgument: unknown hyperparameter 'lora_rank'"),
        ("non_numeric", "InvalidArgument: hyperparameter learning_rate='fast': expected a number"),
        ("malformed_jsonl", "TrainingDataError: train.jsonl line 2"),
        ("empty_jsonl", "TrainingDataError: train.jsonl is empty"),
        ("no_tokenizer", "ModelLoadError:"),
        # tokenizer.model alone: transformers would build its own tokenizer.json, whose ids need not be serving's.
        ("no_tokenizer_json", "ModelLoadError: "),
    ],
)
def test_bad_input_writes_the_reason_to_output_failure(tmp_path, monkeypatch, tiny_model_dir, small_dataset, case, expected):
    dataset, model, hp = small_dataset, tiny_model_dir, {"num_train_epochs": "1"}
    if case == "missing_channel":
        model = None
    elif case == "unknown_hyperparameter":
        hp = {"lora_rank": "8"}
    elif case == "non_numeric":
        hp = {"learning_rate": "fast"}
    elif case in ("malformed_jsonl", "empty_jsonl"):
        dataset = tmp_path / "bad-dataset"
        shutil.copytree(small_dataset, dataset)
        first = (dataset / "train.jsonl").read_text().splitlines()[0]
        (dataset / "train.jsonl").write_text("" if case == "empty_jsonl" else first + "\n{broken\n")
    elif case == "no_tokenizer":
        model = tmp_path / "no-tokenizer"
        shutil.copytree(tiny_model_dir, model)
        for name in ("tokenizer.model", "tokenizer.json"):
            (model / name).unlink()
    elif case == "no_tokenizer_json":
        model = tmp_path / "no-tokenizer-json"
        shutil.copytree(tiny_model_dir, model)
        (model / "tokenizer.json").unlink()
        expected = f"ModelLoadError: {tmp_path / 'ml' / 'input' / 'data' / 'base_model'} has no tokenizer.json"
    base = tmp_path / "ml"
    paths = layout(base, dataset, model, hp)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert sagemaker.main() == sagemaker.EXIT_FAILURE
    assert paths.failure.read_text().startswith(expected)


def test_the_same_program_runs_one_process_per_gpu_by_itself_keeping_the_specs_batch(tmp_path, tiny_model_dir, small_dataset):
    # Two processes on CPU (gloo) stand in for two GPUs: SageMaker runs `train` as on one GPU, the
    # program starts the workers; each sees half the batches, accumulating half as many.
    hp = {"num_train_epochs": "1", "max_train_examples": "64", "logging_steps": "1"}
    paths = layout(tmp_path, small_dataset, tiny_model_dir, hp)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(ENTRY)], env={**env, sagemaker.PROCESSES_ENV: "2"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data parallel: 2 processes" in result.stdout
    metrics = json.loads((paths.model / trainer.METRICS_FILE).read_text())
    assert metrics["data_parallel_processes"] == 2 and metrics["effective_batch"] == 16  # 4 per process x 2 accumulated x 2
    assert metrics["train_examples"] == 64 and metrics["global_steps"] == 64 // 16
    assert (paths.model / "adapter_model.safetensors").is_file() and not paths.failure.exists()


def test_a_bad_process_count_is_a_named_failure(tmp_path, monkeypatch, tiny_model_dir, small_dataset):
    paths = layout(tmp_path, small_dataset, tiny_model_dir, {})
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setenv(sagemaker.PROCESSES_ENV, "two")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert sagemaker.main() == sagemaker.EXIT_FAILURE
    assert paths.failure.read_text().startswith("ContractError: DATA_PARALLEL_PROCESSES must be a whole number")


def test_accumulation_is_shared_among_processes():
    assert [trainer.accumulation_steps(4, processes) for processes in (1, 2, 4, 8)] == [4, 2, 1, 1]
