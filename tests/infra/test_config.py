"""The stack configuration: Pulumi.yaml's block is the one home of defaults; bad values are named."""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from infra import config as stack_config
from pipeline import contracts
from tests.infra.conftest import VALID_CONFIG, set_config

ROOT = stack_config.PULUMI_YAML.parent


def load(values: dict[str, str]) -> stack_config.StackConfig:
    set_config(values)
    return stack_config.load()


def stack_config_problems(values: dict[str, str]) -> list[str]:
    """The problem lines `pulumi up` would print for a valid stack with ``values`` changed."""
    try:
        load({**VALID_CONFIG, **values})
    except pulumi.RunError as error:
        return [line for line in str(error).splitlines() if line.startswith("  - ")]
    return []


def test_defaults_are_the_seeds_settings(mocks):
    loaded = load(VALID_CONFIG)
    assert loaded.storage == stack_config.StorageConfig(14, 30, 90, 2, None)
    training = loaded.training
    assert (training.instance_type, training.volume_size_gb, training.max_runtime_seconds, training.max_wait_seconds) == (
        "ml.g4dn.xlarge",
        50,
        7200,
        14400,
    )
    assert training.base_model_s3_uri is None and training.hyperparameters == {}
    assert loaded.host.instance_type == "g4dn.xlarge" and loaded.host.keep_running is False
    assert loaded.serving.model_name == "mistral-researcher" and loaded.serving.quantization == "q4_k_m"
    assert loaded.schedule == stack_config.ScheduleConfig("cron(0 3 ? * MON *)", "UTC", True)
    assert loaded.network.private_subnet_ids == ("subnet-0a1b2c3d4e5f67890", "subnet-0fedcba9876543210")


def test_typed_values_are_converted(mocks):
    loaded = load(
        {
            **VALID_CONFIG,
            "trainingHyperparameters": '{"num_train_epochs": 2, "r": "8"}',
            "baseModelS3Uri": "s3://models-bucket/mistral",
            "scheduleEnabled": "false",
            "gateCorrelationMin": "0.9",
            "trainingVolumeSizeGb": "80",
        }
    )
    assert loaded.training.hyperparameters == {"num_train_epochs": "2", "r": "8"}
    assert loaded.training.base_model_s3_uri == "s3://models-bucket/mistral/"
    assert loaded.schedule.enabled is False and loaded.training.volume_size_gb == 80
    assert loaded.serving.quality_gates["correlation_min"] == 0.9


@pytest.mark.parametrize(
    "values, message",
    [
        ({"trainingInstanceType": "ml.m5.xlarge"}, "trainingInstanceType must be a SageMaker GPU instance"),
        ({"trainingInstanceType": "g4dn.xlarge"}, "trainingInstanceType must be a SageMaker GPU instance"),
        ({"ollamaInstanceType": "t3.large"}, "ollamaInstanceType must be an EC2 GPU instance"),
        ({"scheduleExpression": "0 3 * * 1"}, "scheduleExpression must be cron("),
        ({"scheduleExpression": "cron(0 3 * * MON *)"}, "needs '?' in exactly one of day-of-month and day-of-week"),
        ({"scheduleExpression": "cron(0 3 ? * MON)"}, "scheduleExpression must be cron("),
        ({"scheduleTimezone": "Mars/Olympus"}, "scheduleTimezone must be an IANA time zone"),
        ({"gateSeedMeanMin": "1.2"}, "gateSeedMeanMin must be within [0, 1], got 1.2"),
        ({"gateCorrelationMin": "-1.1"}, "gateCorrelationMin must be within [-1, 1]"),
        ({"gateValidJsonRateMin": "high"}, "gateValidJsonRateMin must be a number"),
        ({"customModelShare": "150"}, "customModelShare must be a percentage from 0 to 100, got 150"),
        ({"customModelShare": "ten"}, "customModelShare must be a number"),
        ({"gateLatencyP95MaxSeconds": "0"}, "gateLatencyP95MaxSeconds must be above 0"),
        ({"databaseSecretArn": ""}, "databaseSecretArn is required"),
        ({"databaseSecretArn": "my-db-password"}, "databaseSecretArn must be a Secrets Manager secret ARN"),
        ({"vpcId": ""}, "vpcId is required"),
        ({"privateSubnetIds": "subnet-1"}, "privateSubnetIds must be a list"),
        ({"privateSubnetIds": "[]"}, "privateSubnetIds is required"),
        ({"ollamaAllowedCidrs": '["0.0.0.0/0"]'}, "0.0.0.0/0 is not within 10.0.0.0/8"),
        ({"ollamaAllowedCidrs": '["8.8.8.0/24"]'}, "8.8.8.0/24 is not within 10.0.0.0/8"),
        ({"ollamaAllowedCidrs": '["169.254.0.0/16"]'}, "169.254.0.0/16 is not within"),  # link-local: "private" to ipaddress
        ({"ollamaAllowedCidrs": '["10.0.0.0/8"]'}, "10.0.0.0/8 is wider than a /16"),
        ({"ollamaAllowedCidrs": '["fd00::/64"]'}, "must hold IPv4 CIDR ranges"),  # the rule is IPv4: EC2 refused it at apply
        ({"trainingMaxWaitSeconds": "3600"}, "trainingMaxWaitSeconds must be at least trainingMaxRuntimeSeconds"),
        ({"trainingHyperparameters": '{"learning_rat": "1e-4"}'}, "unknown hyperparameter 'learning_rat'"),
        ({"trainingHyperparameters": "[1]"}, "trainingHyperparameters must be a JSON object"),
        ({"trainingJobPrefix": "Mistral_Researcher"}, "trainingJobPrefix must be 1-26 lowercase"),
        ({"quantization": "q3_k"}, "quantization must be one of"),
        ({"checkpointRetentionDays": "0"}, "checkpointRetentionDays must be between 1 and 3650"),
        ({"logRetentionDays": "10"}, "logRetentionDays must be one of CloudWatch's periods"),
        ({"kmsKeyArn": "my-key"}, "kmsKeyArn must be a KMS key ARN"),
        ({"trainingImageUri": "docker.io/me/train:1"}, "trainingImageUri must be an ECR image pinned by digest"),
        # A tag, or a tag and a digest together (what docker-build's `ref` output looks like): Lambda
        # and SageMaker take one or the other, and only a digest pins what was tested.
        (
            {"conversionImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/convert:v3"},
            "conversionImageUri must be an ECR image pinned by digest",
        ),
        (
            {"conversionImageUri": f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/convert:v3@sha256:{'a' * 64}"},
            "conversionImageUri must be an ECR image pinned by digest",
        ),
        ({"ollamaArchiveSha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
        # Unverified by default was the old behaviour: root would unpack whatever the URL served.
        ({"ollamaArchiveSha256": ""}, "ollamaArchiveSha256 is required"),
        ({"datasetInVpc": "maybe"}, "datasetInVpc must be true or false"),
        ({"datasetInVpc": "false"}, "databaseSecurityGroupId needs datasetInVpc true"),
        ({"alertEmail": "oncall"}, "alertEmail must be an email address"),
        ({"databaseSslMode": "allow"}, "databaseSslMode must be one of verify-full, verify-ca, require, prefer, disable"),
        ({"minRows": "29"}, "minRows must be between 30"),
        ({"minSeedProfiles": "4"}, "minSeedProfiles must be between 5"),
        ({"hostIdleStopMinutes": "2"}, "hostIdleStopMinutes must be between 20 and 1440"),
        ({"hostIdleStopMinutes": "15"}, "hostIdleStopMinutes must be between 20 and 1440"),  # a conversion could outlast it
    ],
)
def test_a_bad_value_fails_with_its_name_and_what_is_expected(mocks, values, message):
    with pytest.raises(pulumi.RunError, match=r"invalid stack configuration") as error:
        load({**VALID_CONFIG, **values})
    assert message in str(error.value)


def test_a_malformed_list_is_reported_once(mocks):
    with pytest.raises(pulumi.RunError) as error:
        load({**VALID_CONFIG, "privateSubnetIds": "subnet-1"})
    assert str(error.value).count("researcher-scorer:privateSubnetIds") == 1


def test_every_problem_is_listed_in_one_message(mocks):
    with pytest.raises(pulumi.RunError) as error:
        load({})
    lines = [line for line in str(error.value).splitlines() if line.startswith("  - ")]
    assert [line.split()[1] for line in lines] == [
        "researcher-scorer:vpcId",
        "researcher-scorer:privateSubnetIds",
        "researcher-scorer:databaseSecretArn",
        "researcher-scorer:seedProfilesUri",
        "researcher-scorer:ollamaArchiveSha256",
    ]


def test_pulumi_yaml_declares_every_setting_read_and_only_those(mocks, monkeypatch):
    read: set[str] = set()
    raw = stack_config._Reader.raw
    monkeypatch.setattr(stack_config._Reader, "raw", lambda self, key: (read.add(key), raw(self, key))[1])
    load(VALID_CONFIG)
    declared = stack_config.declared()
    assert read == set(declared)
    for key, spec in declared.items():
        assert {"type", "default", "description"} <= set(spec), key
        assert spec["type"] in ("string", "integer", "boolean", "array"), key


def test_pulumi_dev_yaml_is_a_complete_valid_example(mocks):
    example = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    settings = {key.split(":", 1)[1]: value for key, value in example.items() if key.startswith("researcher-scorer:")}
    assert set(settings) == set(stack_config.declared())
    # As the Pulumi engine hands them to the program: arrays as JSON, everything else as text.
    as_given = {
        key: json.dumps(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in settings.items()
    }
    loaded = load(as_given)
    assert loaded.network.vpc_id == settings["vpcId"]


def test_instance_type_descriptions_name_every_accepted_family():
    declared = stack_config.declared()
    for key, families in (
        ("trainingInstanceType", contracts.TRAINING_INSTANCE_FAMILIES),
        ("ollamaInstanceType", stack_config.HOST_INSTANCE_FAMILIES),
    ):
        named = set(declared[key]["description"].split("(", 1)[1].rstrip(").").replace(",", " ").split())
        assert set(families) <= named, key


def test_the_copies_that_cannot_import_the_contracts_agree_with_them():
    """Pulumi.yaml (read by the Pulumi CLI) repeats the gates' and quantization's defaults, and the ASL
    JSON spells the run layout in its States.Format strings: neither can import pipeline/contracts.py."""
    import json

    from pipeline import contracts

    defaults = stack_config.declared()
    assert {rule.setting: rule.default for rule in contracts.GATES} == {
        rule.setting: float(defaults[rule.setting]["default"]) for rule in contracts.GATES
    }
    assert defaults["quantization"]["default"] == contracts.DEFAULT_QUANTIZATION.value
    assert defaults["modelName"]["default"] == contracts.MODEL_NAME
    text = json.dumps(json.loads((ROOT / "statemachine" / "training_pipeline.asl.json").read_text()))
    layout = {
        "adapter": f"runs/{{}}/{contracts.TRAINING_DIR}/{{}}/output/model",
        "gguf": f"{contracts.RUNS_DIR}/{{}}/{contracts.GGUF_NAME}",
    }  # StartTraining's output and checkpoint paths are job_spec's, which imports the contracts
    for what, pattern in layout.items():
        assert pattern in text, f"the ASL's {what} path is not {pattern!r}"


def test_gate_ranges_are_the_contracts_in_infra_and_pipeline(mocks):
    """One range per gate: the stack setting and the pipeline's QualityGates refuse the same values."""
    from pipeline import contracts
    from pipeline.errors import InvalidArgument
    from pipeline.evaluation.gates import QualityGates

    for rule in contracts.GATES:
        for value in (-0.5, 0.0, 0.5, 1.5):
            refused_by_pipeline = False
            try:
                QualityGates(**{rule.name: value})
            except InvalidArgument:
                refused_by_pipeline = True
            problems = stack_config_problems({rule.setting: str(value)})
            assert refused_by_pipeline == any(rule.setting in problem for problem in problems), (rule.name, value)


def test_the_configuration_reference_in_docs_is_generated_from_pulumi_yaml():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reference = stack_config.reference_markdown()
    assert all(f"| `{key}` |" in reference for key in stack_config.declared())


PULUMI_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def _matches(spec: dict, value) -> bool:
    kind = PULUMI_TYPES[spec["type"]]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return False
    return spec["type"] != "array" or all(_matches(spec["items"], item) for item in value)


def test_defaults_and_example_values_have_their_declared_types():
    """What the Pulumi CLI checks before running the program: a default or stack value of another
    type stops `pulumi up` (project keys namespaced by the project may declare types)."""
    raw = yaml.safe_load(stack_config.PULUMI_YAML.read_text())["config"]
    assert all(key.startswith(f"{stack_config.PROJECT}:") for key in raw)
    example = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    for key, spec in raw.items():
        assert _matches(spec, spec["default"]), f"default of {key}"
        assert _matches(spec, example[key]), f"Pulumi.dev.yaml's {key}"


def test_pulumi_runs_the_program_in_the_repositorys_virtualenv():
    project = yaml.safe_load(stack_config.PULUMI_YAML.read_text())
    assert project["name"] == stack_config.PROJECT and project["description"]
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}


def test_a_training_poll_that_would_pass_the_execution_history_limit_is_refused(mocks):
    """Poll 30 s with a 28-day MaxWait (both allowed on their own) is ~80,000 polls: Step Functions
    would end the execution at its 25,000th event, mid-training."""
    from infra import asl

    [problem] = stack_config_problems({"trainingMaxWaitSeconds": str(28 * 24 * 3600), "trainingPollSeconds": "30"})
    assert "trainingPollSeconds" in problem and "25,000 events" in problem
    least = asl.least_training_poll_seconds(28 * 24 * 3600)
    assert not stack_config_problems({"trainingMaxWaitSeconds": str(28 * 24 * 3600), "trainingPollSeconds": str(least)})
    polls = 28 * 24 * 3600 // least + 1
    assert polls * asl.EVENTS_PER_TRAINING_POLL + asl.EVENTS_OUTSIDE_TRAINING_LOOP <= asl.HISTORY_EVENT_LIMIT
    assert stack_config_problems({"trainingMaxWaitSeconds": str(28 * 24 * 3600), "trainingPollSeconds": str(least - 1)})
    assert not stack_config_problems({"trainingPollSeconds": "30"})  # the default 4-hour MaxWait: 480 polls


def test_a_conversion_lambda_too_small_for_mistral_7b_is_refused_with_the_accounts_cap_named(mocks):
    """New accounts may be held to 3,008 MB; at that size the export's budget refuses Mistral-7B
    (2 vCPUs), so the stack says so at preview instead of a conversion failing every week."""
    [problem] = stack_config_problems({"conversionMemoryMb": "3008"})
    assert "conversionMemoryMb" in problem and "1.7 vCPUs" in problem and "at least 5307" in problem and "AWS Support" in problem
    assert load({**VALID_CONFIG, "conversionMemoryMb": "5307"}).serving.conversion_memory_mb == 5307
    assert load(VALID_CONFIG).serving.conversion_memory_mb == contracts.LAMBDA_MAX_MEMORY_MB
