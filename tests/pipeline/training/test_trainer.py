"""Real LoRA training on CPU: the tiny model, sample data, a fixed seed."""

import json

import pytest
import torch

from pipeline import contracts
from pipeline.training import hyperparameters, trainer

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

QUICK = {"num_train_epochs": "2", "gradient_accumulation_steps": "1", "logging_steps": "4", "learning_rate": "2e-3", "seed": "0"}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, out / "model", out / "checkpoints")
    metrics = trainer.train(paths, hyperparameters.parse(QUICK), progress=False)
    return paths, metrics


def test_loss_goes_down(trained):
    _, metrics = trained
    losses = [point["loss"] for point in metrics["loss_curve"]]
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    eval_losses = [entry["eval_loss"] for entry in metrics["eval_loss_per_epoch"]]
    assert len(eval_losses) == 2 and eval_losses[1] < eval_losses[0]


def test_output_is_the_best_epochs_adapter_with_the_seeds_config(trained, tiny_model_dir):
    paths, metrics = trained
    config = json.loads((paths.output_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"], config["bias"], config["task_type"]) == (
        16,
        32,
        0.05,
        "none",
        "CAUSAL_LM",
    )
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (paths.output_dir / "adapter_model.safetensors").is_file()
    assert not (paths.output_dir / "model.safetensors").exists()  # an adapter, not a merged model
    for name in ("tokenizer.model", "tokenizer_config.json"):
        assert (paths.output_dir / name).is_file()
    best = min(metrics["eval_loss_per_epoch"], key=lambda entry: entry["eval_loss"])
    assert metrics["best_eval_loss"] == pytest.approx(best["eval_loss"])
    on_disk = json.loads((paths.output_dir / trainer.METRICS_FILE).read_text())
    assert on_disk["train_examples"] == 96 and on_disk["precision"] == "fp32" and on_disk["qlora"] is False


def test_adapter_loads_with_peft_and_changes_the_model(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    paths, _ = trained
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ids = torch.tensor([[1, 94, 100, 200, 300]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(paths.output_dir))
        after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_metric_lines_match_the_sagemaker_metric_definitions():
    import re

    log = "train_loss=5.61796 step=40\nlearning_rate=1.41329e-05 step=40\nepoch=1.8667 step=40\n"
    found = {d["Name"]: float(m.group(1)) for d in contracts.metric_definitions() if (m := re.search(d["Regex"], log))}
    assert found == {"train_loss": 5.61796, "learning_rate": 1.41329e-05, "epoch": 1.8667}


def test_precision_and_qlora_follow_the_hardware():
    cpu = trainer.Hardware("cpu", 0, False, 0)
    t4 = trainer.Hardware("cuda", 15.0, False, 1)
    a10g = trainer.Hardware("cuda", 22.0, True, 1)
    h100 = trainer.Hardware("cuda", 80.0, True, 1)
    defaults = hyperparameters.Hyperparameters()
    assert trainer.resolve_precision(defaults, cpu) is hyperparameters.Precision.FP32
    assert trainer.resolve_precision(defaults, t4) is hyperparameters.Precision.FP16
    assert trainer.resolve_precision(defaults, h100) is hyperparameters.Precision.BF16
    assert [trainer.resolve_qlora(defaults, hw) for hw in (cpu, t4, a10g, h100)] == [False, True, True, False]
    from pipeline.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        trainer.resolve_qlora(hyperparameters.parse({"qlora": "true"}), cpu)
    with pytest.raises(InvalidArgument):
        trainer.resolve_precision(hyperparameters.parse({"precision": "bf16"}), cpu)


def test_steps_that_fit_keep_the_reserve_back():
    # 7200 s budget, 600 s used, 9 s a step: (7200 - 600 - 360) / 9 -> 693 steps (reserve: 5 % of 7200)
    assert trainer.steps_that_fit(7200, 600, 9.0) == 693
    assert trainer.steps_that_fit(1000, 200, 10.0) == 50  # the 300 s floor
    assert trainer.steps_that_fit(1000, 900, 10.0) == 0


class TenSecondsPerCall:
    """The trainer's clock, read once at the start and once per optimizer step: 10 s a step."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def run_training(paths, overrides, monkeypatch, extra_callback=None):
    if extra_callback is not None:
        original = trainer._callbacks
        monkeypatch.setattr(trainer, "_callbacks", lambda *args, **kwargs: [*original(*args, **kwargs), extra_callback])
    return trainer.train(paths, hyperparameters.parse({**QUICK, **overrides}), progress=False)


def test_a_time_budget_plans_the_steps_that_fit_and_ends_with_the_best_adapter(
    tiny_model_dir, small_dataset, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(trainer, "_clock", TenSecondsPerCall())
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, tmp_path / "model", tmp_path / "checkpoints")
    # 96 examples, batch 4: 24 steps an epoch, 48 planned. Timed over steps 1-4 (10 s each, 40 s used):
    # (600 - 40 - 300 reserve) / 10 = 26 more steps fit -> stop at step 30, an evaluation and a save there.
    metrics = run_training(paths, {"time_budget_seconds": "600"}, monkeypatch)
    out = capsys.readouterr().out
    assert "planned_steps=30 step=4" in out and "stopping at step 30" in out
    assert metrics["global_steps"] == 30 and metrics["planned_stop_step"] == 30 and metrics["stopped_by_time_budget"]
    assert [entry["epoch"] for entry in metrics["eval_loss_per_epoch"]] == pytest.approx([1.0, 1.25])
    assert (paths.output_dir / "adapter_model.safetensors").is_file()
    assert json.loads((paths.output_dir / trainer.METRICS_FILE).read_text())["stopped_by_time_budget"] is True


def test_without_a_budget_every_planned_step_runs(trained):
    _, metrics = trained
    assert metrics["global_steps"] == 48 and metrics["planned_stop_step"] is None and not metrics["stopped_by_time_budget"]


def sigterm_at_step(step: int):
    """What SageMaker does at MaxRuntime (or a spot interruption): SIGTERM to the training process."""
    import os
    import signal

    from transformers import TrainerCallback

    class SigtermAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return control

    return SigtermAtStep()


def test_sigterm_after_an_epoch_leaves_that_epochs_adapter(tiny_model_dir, small_dataset, tmp_path, monkeypatch):
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, tmp_path / "model", tmp_path / "checkpoints")
    with pytest.raises(trainer.TrainingInterrupted, match="best finished epoch's adapter is in"):
        run_training(paths, {}, monkeypatch, sigterm_at_step(30))
    origin = json.loads((paths.output_dir / "adapter_origin.json").read_text())
    assert origin["checkpoint"] == "checkpoint-24" and origin["epoch"] == pytest.approx(1.0)
    config = json.loads((paths.output_dir / "adapter_config.json").read_text())
    assert config["r"] == 16 and (paths.output_dir / "adapter_model.safetensors").is_file()
    assert (paths.output_dir / "tokenizer.model").is_file()  # what ConvertToGGUF reads beside the adapter


def test_sigterm_before_an_epoch_finished_leaves_no_adapter(tiny_model_dir, small_dataset, tmp_path, monkeypatch):
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, tmp_path / "model", tmp_path / "checkpoints")
    with pytest.raises(trainer.TrainingInterrupted, match="no epoch finished: no adapter"):
        run_training(paths, {}, monkeypatch, sigterm_at_step(3))
    assert not (paths.output_dir / "adapter_config.json").exists()


def test_a_person_at_a_terminal_gets_the_plan_in_words_not_metric_lines(tiny_model_dir, small_dataset, tmp_path, monkeypatch, capsys):
    """name=value lines are for SageMaker's regexes (progress off there); with a progress bar they are not printed."""
    monkeypatch.setattr(trainer, "_clock", TenSecondsPerCall())
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, tmp_path / "model", tmp_path / "checkpoints")
    trainer.train(paths, hyperparameters.parse({**QUICK, "time_budget_seconds": "600"}), progress=True)
    captured = capsys.readouterr()
    out = captured.out
    assert "time budget: 600 s" in out and "stopping at step 30" in out
    assert not any(line.startswith(("train_loss=", "planned_steps=", "epoch=")) for line in out.splitlines())
    # One bar carries the loss; no Python dict per log line, on either stream.
    assert "{'loss'" not in out + captured.err and "{'eval_loss'" not in out + captured.err
    assert "loss=" in captured.err  # on the bar's postfix


def test_the_adapter_starts_from_the_seed_whatever_ran_before(tiny_model_dir):
    """Two runs with one seed start from one adapter (peft draws lora_A from torch's global
    generator, which the Trainer seeds only later); another seed, another start. Random draws only:
    no floating-point kernel is involved in the comparison."""
    from transformers import AutoModelForCausalLM

    def initial_adapter(seed: int, noise_before: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(noise_before)  # whatever else drew from the generator earlier in the process
        torch.rand(noise_before + 1)
        model = trainer.add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), hyperparameters.parse({"seed": str(seed)}))
        return {name: tensor.detach().clone() for name, tensor in model.named_parameters() if "lora_" in name}

    first, second, other = initial_adapter(42, 1), initial_adapter(42, 7), initial_adapter(43, 1)
    assert first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize(("strategy", "sampler"), [("random", "RandomSampler"), ("group_by_length", "LengthGroupedSampler")])
def test_the_sampling_strategy_orders_the_training_batches(tiny_model_dir, small_dataset, tmp_path, monkeypatch, strategy, sampler):
    """The setting reaches transformers: its sampler orders the examples (grouped by their token
    counts with group_by_length), and training runs to its adapter."""
    from transformers import Trainer

    used = []
    get_sampler = Trainer._get_train_sampler

    def recorded(self, *args, **kwargs):
        used.append(get_sampler(self, *args, **kwargs))
        return used[-1]

    monkeypatch.setattr(Trainer, "_get_train_sampler", recorded)
    left = []
    monkeypatch.setattr(trainer, "leave_process_group", lambda: left.append(True))
    paths = trainer.TrainingPaths(small_dataset, tiny_model_dir, tmp_path / "model", tmp_path / "checkpoints")
    settings = {**QUICK, "num_train_epochs": "1", "train_sampling_strategy": strategy}
    trainer.train(paths, hyperparameters.parse(settings), progress=False)
    assert [type(one).__name__ for one in used] == [sampler]
    assert left == [True]  # a finished training leaves its process group (data parallel)
    assert (paths.output_dir / "adapter_model.safetensors").is_file()
    if strategy == "group_by_length":
        lengths, order = used[0].lengths, list(used[0])
        batch = hyperparameters.Hyperparameters().per_device_train_batch_size  # QUICK keeps the spec's

        def padded(order):
            batches = [[lengths[index] for index in order[start : start + batch]] for start in range(0, len(order), batch)]
            return sum(max(sizes) * len(sizes) - sum(sizes) for sizes in batches)

        assert sorted(order) == list(range(len(lengths))) and len(set(lengths)) > 1  # every example once; lengths vary
        assert lengths[order[0]] == max(lengths)  # the longest batch first: memory runs out at once, if it does
        assert padded(order) < padded(list(range(len(lengths)))) / 2


def test_a_process_leaves_its_process_group_when_training_is_done(tmp_path):
    """A real (one-process, gloo) group, as the Trainer joins under torchrun: left, and leaving
    without one is nothing."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        trainer.leave_process_group()
        assert not dist.is_initialized()
        trainer.leave_process_group()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
