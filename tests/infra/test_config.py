import pulumi
import pytest

from infra import config as stack_config


def set_config(monkeypatch, values: dict[str, str]) -> None:
    pulumi.runtime.set_all_config({f"researcher-scorer:{k}": v for k, v in values.items()})


def test_defaults(mocks, monkeypatch):
    set_config(monkeypatch, {})
    loaded = stack_config.load()
    assert loaded.storage == stack_config.StorageConfig(14, 90, 2, None)


@pytest.mark.parametrize("values, message", [
    ({"checkpointRetentionDays": "0"}, "checkpointRetentionDays must be between 1 and 3650"),
    ({"noncurrentVersionRetentionDays": "99999"}, "noncurrentVersionRetentionDays must be between 1 and 3650"),
    ({"kmsKeyArn": "my-key"}, "kmsKeyArn must be a KMS key ARN"),
])
def test_bad_values_fail_with_one_clear_message(mocks, monkeypatch, values, message):
    set_config(monkeypatch, values)
    with pytest.raises(pulumi.RunError, match=message):
        stack_config.load()
