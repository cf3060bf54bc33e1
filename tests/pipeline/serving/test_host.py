"""The host on demand, against moto's EC2: a stopped host is started and waited for, a caller that
cannot wait longer hears "starting", never a failure; a host that cannot run is a named error."""

from __future__ import annotations

import boto3
import pytest

from pipeline.serving import host


@pytest.fixture
def ec2(aws):
    client = boto3.client("ec2")
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    return client, instance


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_running_healthy_host_is_ready_at_once(ec2):
    client, instance = ec2
    clock = Clock()
    assert host.wake(client, instance, lambda: True, wait_s=60, sleep=clock.sleep, clock=clock) is host.HostStatus.READY
    assert clock.sleeps == []


def test_a_stopped_host_is_started_and_waited_for_until_ollama_answers(ec2):
    client, instance = ec2
    client.stop_instances(InstanceIds=[instance])
    assert host.instance_state(client, instance) == host.STOPPED
    answers = iter([False, False, True])  # Ollama loads for two polls, then answers
    clock = Clock()
    status = host.wake(client, instance, lambda: next(answers), wait_s=60, sleep=clock.sleep, clock=clock)
    assert status is host.HostStatus.READY and host.instance_state(client, instance) == host.RUNNING
    assert clock.now == 3 * host.POLL_SECONDS  # one poll after the start, two while Ollama loads


def test_a_caller_that_cannot_wait_longer_hears_starting_and_the_host_keeps_starting(ec2):
    client, instance = ec2
    client.stop_instances(InstanceIds=[instance])
    clock = Clock()
    status = host.wake(client, instance, lambda: False, wait_s=12, sleep=clock.sleep, clock=clock)
    assert status is host.HostStatus.STARTING
    assert host.instance_state(client, instance) in (host.PENDING, host.RUNNING)  # started, not stopped again
    assert clock.now <= 12


def test_a_terminated_host_is_a_named_error(ec2):
    client, instance = ec2
    client.terminate_instances(InstanceIds=[instance])
    with pytest.raises(host.HostUnavailable, match="is terminated"):
        host.wake(client, instance, lambda: True, wait_s=60, sleep=lambda s: None)
