"""How every Lambda adapter reads its settings and its event: a small frozen dataclass per handler
whose fields name the environment variables the Pulumi program sets (``env("NAME")``), read by
``from_environment``; the event's fields through ``run_id``/``optional``. Anything missing or
malformed is an InvalidArgument naming it, before any work.

Written here rather than with pydantic-settings: a dozen string variables, and the Lambda layers
stay without another dependency.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pipeline import contracts, runs
from pipeline.errors import InvalidArgument

T = TypeVar("T")
_REQUIRED = object()


def env(name: str, default: Any = _REQUIRED, parse: Callable[[str], Any] = str) -> Any:
    """A field read from environment variable ``name``; without a default it must be set and non-empty."""
    metadata = {"env": name, "parse": parse}
    if default is _REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_environment(cls: type[T], environment: Mapping[str, str] | None = None) -> T:
    environment = os.environ if environment is None else environment
    values, missing = {}, []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name, parse = field.metadata["env"], field.metadata["parse"]
        text = environment.get(name)
        if not text:
            if field.default is dataclasses.MISSING:
                missing.append(name)
            continue
        try:
            values[field.name] = parse(text)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"environment variable {name}: {exc}") from None
    if missing:
        raise InvalidArgument(f"environment variable(s) {', '.join(missing)} not set")
    return cls(**values)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def seed_count(text: str) -> int:
    """A minimum of seed profiles: at least the seed gates' own floor (pipeline.contracts)."""
    value = int(text)
    if value < contracts.MIN_SEED_SAMPLE:
        raise ValueError(f"must be at least {contracts.MIN_SEED_SAMPLE} (the seed gates' least sample), got {value}")
    return value


def json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    return value


def run_id(event: Mapping[str, Any]) -> str:
    """The execution's run id (every state's event carries it)."""
    return runs.check_run_id(event.get("run_id"))


def with_execution_options(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with the execution input's fields (``options``, from the console or the schedule)
    under it: a field the state machine sets itself always wins over one a person typed."""
    options = event.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidArgument(f"options must be an object, got {type(options).__name__}")
    return {**options, **event}


def optional_text(event: Mapping[str, Any], name: str) -> str | None:
    value = event.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}")
    return value or None


@dataclasses.dataclass(frozen=True)
class ArtifactSettings:
    artifact_bucket: str = env("ARTIFACT_BUCKET")

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.artifact_bucket}"


@dataclasses.dataclass(frozen=True)
class OllamaSettings(ArtifactSettings):
    """The serving Lambdas' (DeployModel, ValidateModel, PromoteModel, Rollback) common settings."""

    ollama_url: str = env("OLLAMA_URL")
    model_name: str = env("MODEL_NAME", contracts.MODEL_NAME)

    @property
    def serving(self):  # -> pipeline.serving.lifecycle.ServingConfig
        # Imported here: the dataset Lambdas' layer has no httpx, which the serving package needs.
        from pipeline.serving.lifecycle import ServingConfig

        return ServingConfig(model_name=self.model_name)


@dataclasses.dataclass(frozen=True)
class HostOnDemandSettings(OllamaSettings):
    """The Lambdas that wake the host on demand (DeployModel, ScoreProfiles): with its instance id, a
    stopped host is started and waited for, up to HOST_WAKE_WAIT_SECONDS."""

    host_instance_id: str = env("HOST_INSTANCE_ID", "")
    host_wake_wait_s: int = env("HOST_WAKE_WAIT_SECONDS", 60, positive_int)
