import pytest

from pipeline.errors import InvalidArgument
from pipeline.training import hyperparameters as hp


def test_defaults_are_the_seeds_lora_and_training_arguments():
    defaults = hp.Hyperparameters()
    assert (defaults.r, defaults.lora_alpha, defaults.lora_dropout, defaults.bias) == (16, 32, 0.05, "none")
    assert set(defaults.target_modules) == {"q_proj", "v_proj", "k_proj", "o_proj"}
    assert (defaults.num_train_epochs, defaults.per_device_train_batch_size, defaults.gradient_accumulation_steps) == (3, 4, 4)
    assert (defaults.learning_rate, defaults.warmup_ratio, defaults.lr_scheduler_type) == (2e-4, 0.03, "cosine")
    assert (defaults.logging_steps, defaults.save_strategy) == (10, "epoch")


def test_strings_as_sagemaker_sends_them_override_by_name():
    parsed = hp.parse(
        {
            "r": "8",
            "learning_rate": "1e-4",
            "target_modules": "q_proj,v_proj",
            "precision": "FP32",
            "qlora": "false",
            "train_sampling_strategy": "group_by_length",
        }
    )
    assert parsed.r == 8 and parsed.learning_rate == 1e-4 and parsed.target_modules == ("q_proj", "v_proj")
    assert parsed.precision is hp.Precision.FP32 and parsed.qlora is hp.Switch.FALSE
    assert parsed.train_sampling_strategy is hp.SamplingStrategy.GROUP_BY_LENGTH
    assert hp.Hyperparameters().train_sampling_strategy is hp.SamplingStrategy.RANDOM  # the Trainer's own default
    assert parsed.lora_alpha == 32  # untouched


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lora_rank": "8"}, "unknown hyperparameter 'lora_rank'"),
        ({"r": "eight"}, "r='eight': expected a whole number"),
        ({"learning_rate": "fast"}, "expected a number"),
        ({"precision": "fp8"}, "expected one of auto, bf16, fp16, fp32"),
        ({"train_sampling_strategy": "shortest_first"}, "expected one of random, group_by_length"),
        ({"r": "0"}, "r must be at least 1"),
        ({"lora_dropout": "1.5"}, "lora_dropout and warmup_ratio"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(InvalidArgument, match=message):
        hp.parse(values)


def test_set_assignments():
    assert hp.parse_assignments(["r=8", "learning_rate=1e-4"]) == {"r": "8", "learning_rate": "1e-4"}
    with pytest.raises(InvalidArgument):
        hp.parse_assignments(["r8"])
