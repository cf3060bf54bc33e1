"""The Ollama host on demand: woken by whoever needs it, stopped by itself when idle.

``wake`` starts a stopped host and waits, bounded, for Ollama to answer; a caller that cannot wait
longer gets ``HostStatus.STARTING`` - distinct from a failure - and tries again later (the
orchestrator scores those profiles with Claude meanwhile). The host stops itself after its idle
minutes (infra/user_data/ollama_idle_stop.sh), so nothing here ever stops it.

Callers pass an EC2 client from ``pipeline.aws_clients`` (bounded connects): from a subnet that
reaches no EC2 endpoint the host is unavailable within seconds, by name, not after minutes.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from pipeline import aws_clients
from pipeline.errors import PipelineError
from pipeline.serving.ollama import OllamaUnavailable

# EC2's instance states, as DescribeInstances names them.
RUNNING, PENDING, STOPPED, STOPPING = "running", "pending", "stopped", "stopping"
POLL_SECONDS = 5.0


class HostStatus(str, Enum):
    READY = "ready"  # running and Ollama answers
    STARTING = "starting"  # started (or starting, or stopping before a start) and not ready yet


# EC2's StartInstances error codes for a capacity shortage in the host's Availability Zone: it
# passes within minutes to hours (EC2 User Guide, "Insufficient instance capacity"). Anything else
# it refuses (quota, state, permission) needs a person.
CAPACITY_ERROR_CODES = frozenset({"InsufficientInstanceCapacity"})


class HostUnavailable(PipelineError):
    """The host cannot be used: terminated, or EC2 refused to start it."""


class HostCapacityUnavailable(HostUnavailable):
    """EC2 has no capacity for the host's instance type in its Availability Zone just now. Transient:
    the state machine retries it for about 45 minutes (a trained run is not lost for want of a host)."""


class HostStarting(OllamaUnavailable):
    """The host was stopped (or stopping) and is starting; Ollama does not answer yet. Transient:
    retried like any Ollama that does not answer."""


def _error_code(exc: Exception) -> str:
    """botocore's ClientError carries EC2's error code; anything else is named by its type."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)


def instance_state(ec2: Any, instance_id: str) -> str:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except Exception as exc:  # botocore's ClientError (no such instance, no permission) or a network error
        cause = aws_clients.unreachable_cause(exc)
        if cause is not None:
            raise HostUnavailable(str(aws_clients.unreachable("ec2", cause))) from None
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
                if code in CAPACITY_ERROR_CODES:
                    raise HostCapacityUnavailable(f"EC2 has no capacity to start {instance_id} now: {code}") from None
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
    from pipeline.serving.ollama import OllamaError

    def healthy() -> bool:
        try:
            probe.version()
            return True
        except (OllamaUnavailable, OllamaError):
            return False

    return healthy


@contextlib.contextmanager
def on_demand(instance_id: str, ollama_url: str, *, wait_s: float, ec2: Any = None) -> Iterator[Callable[[], HostStatus]]:
    """``wake`` for the host ``instance_id`` whose Ollama listens at ``ollama_url``: a probe made for
    it (one attempt, short timeouts) and an EC2 client with bounded connects."""
    from pipeline.serving.ollama import OllamaClient, RetryPolicy, Timeouts

    with OllamaClient(ollama_url, retry=RetryPolicy(attempts=1), timeouts=Timeouts(connect_s=2.0, request_s=5.0)) as probe:
        ec2 = ec2 if ec2 is not None else aws_clients.client("ec2")
        yield functools.partial(wake, ec2, instance_id, ollama_answers(probe), wait_s=wait_s)
