"""Every Lambda adapter reads its settings one way: a Settings dataclass per handler, from the
environment variables the Pulumi program sets."""

from __future__ import annotations

import dataclasses
import importlib

from tests.infra.conftest import deploy, mocks  # noqa: F401 (fixtures: the Pulumi program under mocks)


def test_every_setting_a_handler_reads_is_one_the_stack_sets(deploy):
    """One way to read settings (a Settings dataclass per handler) and no setting that nothing sets:
    each field is a variable the Pulumi program gives that function, or one Lambda sets itself."""
    set_by_lambda = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}
    for function in deploy().all("aws:lambda/function:Function"):
        module = importlib.import_module(f"lambdas.{function.name.replace('-', '_')}.handler")
        declared = set((function.inputs.get("environment") or {}).get("variables") or {})
        read = {field.metadata["env"] for field in dataclasses.fields(module.Settings)}
        assert read <= declared | set_by_lambda, (function.name, read - declared)
