"""The Ollama host on demand: woken by whoever needs it, stopped by itself when idle.

``wake`` starts a stopped host and waits, bounded, for Ollama to answer; a caller that cannot wait
longer gets ``HostStatus.STARTING`` - distinct from a failure - and tries again later (the
orchestrator scores those profiles with Claude meanwhile). The host stops itself after its idle
minutes (infra/user_data/idle_stop.sh), so nothing here ever stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from pipeline.errors import PipelineError

# EC2's instance states, as DescribeInstances names them.
RUNNING, PENDING, STOPPED, STOPPING = "running", "pending", "stopped", "stopping"
POLL_SECONDS = 5.0


class HostStatus(str, Enum):
    READY = "ready"  # running and Ollama answers
    STARTING = "starting"  # started (or starting, or stopping before a start) and not ready yet


class HostUnavailable(PipelineError):
    """The host cannot be used: terminated, or EC2 refused to start it."""


def _error_code(exc: Exception) -> str:
    """botocore's ClientError carries EC2's error code; anything else is named by its type."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)


def instance_state(ec2: Any, instance_id: str) -> str:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except Exception as exc:  # botocore's ClientError (no such instance, no permission) or a network error
        raise HostUnavailable(f"cannot describe the host {instance_id}: {_error_code(exc)}") from None
    if not reservations or not reservations[0]["Instances"]:
        raise HostUnavailable(f"no EC2 instance {instance_id}")
    return reservations[0]["Instances"][0]["State"]["Name"]


def wake(
    ec2: Any,
    instance_id: str,
    healthy: Callable[[], bool],
    *,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> HostStatus:
    """Start the host if it is stopped; wait up to ``wait_s`` for it to run and Ollama to answer."""
    deadline = clock() + wait_s
    while True:
        state = instance_state(ec2, instance_id)
        if state == STOPPED:
            try:
                ec2.start_instances(InstanceIds=[instance_id])
            except Exception as exc:  # botocore's ClientError: a named error with EC2's reason
                code = _error_code(exc)
                if code != "IncorrectInstanceState":  # someone else is starting or stopping it
                    raise HostUnavailable(f"EC2 refused to start {instance_id}: {code}") from None
        elif state == RUNNING and healthy():
            return HostStatus.READY
        elif state not in (RUNNING, PENDING, STOPPING):
            raise HostUnavailable(f"the host {instance_id} is {state}")
        if clock() + POLL_SECONDS > deadline:
            return HostStatus.STARTING
        sleep(POLL_SECONDS)


def ollama_answers(probe: Any) -> Callable[[], bool]:
    """A health check on an OllamaClient made for probing (one attempt, short timeouts)."""
    from pipeline.serving.ollama import OllamaError, OllamaUnavailable

    def healthy() -> bool:
        try:
            probe.version()
            return True
        except (OllamaUnavailable, OllamaError):
            return False

    return healthy
