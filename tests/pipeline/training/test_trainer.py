"""Real LoRA training on CPU: the tiny model, sample data, a fixed seed."""

import json

import pytest
import torch

from pipeline.training import hyperparameters, trainer

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
    assert (config["r"], config["lora_alpha"], config["lora_dropout"], config["bias"], config["task_type"]) == (16, 32, 0.05, "none", "CAUSAL_LM")
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
    found = {d["Name"]: float(m.group(1)) for d in trainer.metric_definitions() if (m := re.search(d["Regex"], log))}
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
