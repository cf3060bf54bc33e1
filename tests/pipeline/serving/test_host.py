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


def refusing_starts(client, code: str):
    """The client, whose StartInstances answers EC2's error ``code`` (moto has no capacity limits)."""
    from botocore.exceptions import ClientError

    def start_instances(**_):
        raise ClientError(
            {"Error": {"Code": code, "Message": "We currently do not have sufficient g4dn.xlarge capacity"}}, "StartInstances"
        )

    client.start_instances = start_instances
    return client


def test_no_capacity_in_the_zone_is_its_own_error_which_the_pipeline_waits_out(ec2):
    client, instance = ec2
    client.stop_instances(InstanceIds=[instance])
    with pytest.raises(host.HostCapacityUnavailable, match="InsufficientInstanceCapacity"):
        host.wake(refusing_starts(client, "InsufficientInstanceCapacity"), instance, lambda: True, wait_s=60, sleep=lambda s: None)


def test_a_refusal_a_person_must_fix_is_not_taken_for_a_capacity_shortage(ec2):
    client, instance = ec2
    client.stop_instances(InstanceIds=[instance])
    with pytest.raises(host.HostUnavailable, match="VcpuLimitExceeded") as refused:
        host.wake(refusing_starts(client, "VcpuLimitExceeded"), instance, lambda: True, wait_s=60, sleep=lambda s: None)
    assert not isinstance(refused.value, host.HostCapacityUnavailable)


class StoppingThenStopped:
    """EC2 as it answers while the host's idle timer is powering it off: "stopping" for a few polls,
    then "stopped" (moto stops at once, so this state is played here)."""

    def __init__(self, polls_stopping: int) -> None:
        self.states = [host.STOPPING] * polls_stopping + [host.STOPPED]
        self.starts = 0

    def describe_instances(self, InstanceIds):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"Reservations": [{"Instances": [{"InstanceId": InstanceIds[0], "State": {"Name": state}}]}]}

    def start_instances(self, InstanceIds):
        self.starts += 1
        self.states = [host.PENDING, host.RUNNING]


def test_a_host_that_is_stopping_itself_is_started_again_once_stopped():
    ec2 = StoppingThenStopped(polls_stopping=3)
    clock = Clock()
    status = host.wake(ec2, "i-0123456789abcdef0", lambda: True, wait_s=120, sleep=clock.sleep, clock=clock)
    assert status is host.HostStatus.READY and ec2.starts == 1


def test_an_ec2_api_out_of_reach_is_named_in_seconds(monkeypatch):
    """A private subnet with no route to EC2's endpoint: bounded connects, a HostUnavailable that
    says what is missing (here the endpoint refuses at once: nothing listens on it)."""
    from pipeline import aws_clients

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")
    with pytest.raises(host.HostUnavailable, match="cannot connect to ec2 .* createVpcEndpoints"):
        host.wake(aws_clients.client("ec2"), "i-0123456789abcdef0", lambda: True, wait_s=60, sleep=lambda s: None)
