"""The ASL executed by moto's Step Functions interpreter, every path (see conftest for the world)."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from pipeline import contracts, history, storage
from pipeline.serving.modelfile import model_tag
from tests.factories import insert_fresh_scores
from tests.pipeline.serving.ollama_contract_server import echo_teacher_responder

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

MAIN_PATH = [
    "Prepare",
    "CheckNoOtherExecution",
    "OnlyExecution",
    "GenerateDataset",
    "ValidateData",
    "DataValid",
    "StartTraining",
    "WaitForTraining",
    "CheckStatus",
    "TrainingDone",
    "ConvertToGGUF",
    "DescribeHost",
    "DeployModel",
    "ValidateModel",
    "GatesPassed",
]


def teacher_agreeing(world, run_id):
    cache = {}

    def respond(model, body):
        if not cache:
            cache.update(world.teacher_scores(run_id))
        return echo_teacher_responder(cache)(model, body)

    return respond


def run(world, run_id, **execution_input):
    world.stage_adapter(run_id)
    arn = world.start(run_id, {"min_rows": 100, **execution_input})
    return world.wait(arn), world.visited(arn)


def test_happy_path_trains_converts_deploys_validates_and_promotes(world):
    world.training_statuses[:] = [
        {"TrainingJobStatus": "InProgress"},
        {"TrainingJobStatus": "InProgress"},
        {"TrainingJobStatus": "Completed"},
    ]
    world.ollama.state.responder = teacher_agreeing(world, "run-1")
    result, visited = run(world, "run-1")
    assert result["status"] == "SUCCEEDED", result
    assert visited.count("CheckStatus") == 3 and visited.count("WaitForTraining") == 3  # polled until Completed
    # One poll's history events, as the interpreter records them: what infra/asl.py budgets for.
    from infra import asl

    events = world.sfn.get_execution_history(executionArn=result["executionArn"], maxResults=1000)["events"]
    polls = [i for i, e in enumerate(events) if e.get("stateEnteredEventDetails", {}).get("name") == "WaitForTraining"]
    assert polls[1] - polls[0] == asl.EVENTS_PER_TRAINING_POLL, [e["type"] for e in events[polls[0] : polls[1]]]
    assert len(events) < asl.EVENTS_OUTSIDE_TRAINING_LOOP / 4  # a whole run, its three polls included
    for state in [*MAIN_PATH, "PromoteModel", "RestoreHost", "StopHost", "Succeeded"]:
        assert state in visited, state
    assert "Rollback" not in visited and "NotifyFailure" not in visited
    pointer = json.loads(world.pointer())
    assert pointer["run_id"] == "run-1" and pointer["model"] == model_tag("run-1")
    assert pointer["gguf_uri"] == f"s3://{world.bucket}/runs/run-1/model.gguf"
    assert pointer["adapter_uri"].endswith(f"/runs/run-1/training/{contracts.training_job_name('run-1', 'researcher-scorer')}/output/model")
    assert pointer["metrics"]["pearson"] > 0.99
    assert world.ollama.state.models["mistral-researcher:latest"] == world.ollama.state.models[model_tag("run-1")]
    assert world.host_state() == "stopped"  # returned to the state it was found in
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=contracts.training_job_name("run-1", "researcher-scorer"))
    assert job["EnableNetworkIsolation"] is True and job["EnableManagedSpotTraining"] is True
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{world.bucket}/runs/run-1/training"
    assert {c["ChannelName"] for c in job["InputDataConfig"]} == {"training", "base_model"}
    output = json.loads(result["output"])
    assert len(result["output"]) < 16_000 and output["evaluation"]["passed"] is True  # URIs and metrics, not data
    # The run is in the history, and its success announced with its summary.
    assert visited.index("PromoteModel") < visited.index("RecordRun") < visited.index("NotifySuccess")
    (record,) = history.read(f"s3://{world.bucket}").runs().values()
    assert record["run_id"] == "run-1" and record["outcome"] == "promoted" and record["origin"] == "aws"
    assert record["training"]["adapter_uri"].endswith("/output/model") and record["dataset"]["rows"] > 100
    assert record["validation"]["metrics"]["pearson"] > 0.99 and record["validation"]["champion"] is None  # the first run
    (announced,) = world.notifications()
    assert (
        announced.startswith("Run run-1 promoted; pearson 1.000") and f"report s3://{world.bucket}/runs/run-1/report/report.md" in announced
    )


def test_training_failure_fails_the_execution_with_the_jobs_reason(world):
    world.training_statuses[:] = [{"TrainingJobStatus": "Failed", "FailureReason": "CUDA out of memory"}]
    result, visited = run(world, "run-2")
    assert result["status"] == "FAILED" and result["error"] == "TrainingFailed" and result["cause"] == "CUDA out of memory"
    assert "NotifyFailure" in visited and "ConvertToGGUF" not in visited and "DescribeHost" not in visited
    assert world.pointer() is None and world.ollama.state.models == {}
    record = history.read(f"s3://{world.bucket}").runs()["run-2"]  # a failed run is in the history too
    assert record["outcome"] == "failed" and record["error"] == "TrainingFailed: CUDA out of memory" and record["dataset"]["rows"]


def test_conversion_error_is_named_and_nothing_is_deployed(world):
    world.stage_adapter("run-3")
    prefix = f"runs/run-3/training/{contracts.training_job_name('run-3', 'researcher-scorer')}/output/model"
    boto3.client("s3").put_object(Bucket=world.bucket, Key=f"{prefix}/adapter_config.json", Body=b'{"peft_type": "LORA"}')
    arn = world.start("run-3", {"min_rows": 100})  # an adapter without r / lora_alpha
    result = world.wait(arn)
    visited = world.visited(arn)
    assert result["status"] == "FAILED" and result["error"] == "AdapterMismatch", result
    assert "lora_alpha" in result["cause"]
    assert "ConvertToGGUF" in visited and "DeployModel" not in visited
    assert world.pointer() is None and world.host_state() == "stopped"  # never woken: the conversion needs no host


def test_failed_gates_roll_back_and_leave_production_alone(world):
    world.ollama.state.responder = teacher_agreeing(world, "run-4")
    assert run(world, "run-4")[0]["status"] == "SUCCEEDED"
    pointer_before = world.pointer()
    production_before = world.ollama.state.models["mistral-researcher:latest"]
    world.ollama.state.responder = lambda model, body: json.dumps(
        {"handle": re.search(r"^handle: (.*)$", body["prompt"], re.M).group(1), "score": "0.10", "reason": "not a researcher"}
    )
    result, visited = run(world, "run-5")
    assert result["status"] == "FAILED" and result["error"] == "ValidationFailed"
    assert "seed_mean" in result["cause"]
    assert visited.index("ValidateModel") < visited.index("Rollback") < visited.index("NotifyFailure")
    assert "PromoteModel" not in visited
    assert world.pointer() == pointer_before
    assert world.ollama.state.models["mistral-researcher:latest"] == production_before
    assert model_tag("run-5") not in world.ollama.state.models  # the candidate is gone
    recorded = history.read(f"s3://{world.bucket}").runs()
    assert [recorded["run-4"]["outcome"], recorded["run-5"]["outcome"]] == ["promoted", "rolled back"]
    assert recorded["run-5"]["validation"]["champion"]["champion"] == "mistral-researcher:latest"  # compared with run-4


def test_unreachable_ollama_is_retried_then_rolled_back(world, monkeypatch):
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")
    result, visited = run(world, "run-6")
    # DeployModel started the host; its Ollama never answered: "starting" until the retries ran out.
    assert result["status"] == "FAILED" and result["error"] == "HostStarting", result
    assert visited.count("DeployModel") == 1 and "Rollback" in visited and "PromoteModel" not in visited
    history = world.sfn.get_execution_history(executionArn=result["executionArn"], maxResults=1000)["events"]
    scheduled = [e for e in history if e["type"] == "TaskScheduled" and "deploy-model" in e["taskScheduledEventDetails"]["parameters"]]
    assert len(scheduled) == 1 + 8  # the first try + the state's Retry (MaxAttempts 8); each with the client's retries
    assert world.pointer() is None and world.host_state() == "stopped"


def deploy_attempts(world, result) -> int:
    history = world.sfn.get_execution_history(executionArn=result["executionArn"], maxResults=1000)["events"]
    return sum(1 for e in history if e["type"] == "TaskScheduled" and "deploy-model" in e["taskScheduledEventDetails"]["parameters"])


def test_no_capacity_for_the_host_is_waited_out_and_the_trained_run_goes_on(world):
    """EC2 answers InsufficientInstanceCapacity to the first six starts (more than the old StartHost state tried) (as it does for hours in
    a busy zone): DeployModel's HostCapacityUnavailable is retried, and the run still promotes."""
    from tests.statemachine.conftest import INJECTED

    world.ollama.state.responder = teacher_agreeing(world, "run-cap")
    INJECTED["api"] = ("ec2", "StartInstances", 1, "InsufficientInstanceCapacity", 6)
    result, visited = run(world, "run-cap")
    INJECTED.update(api=None)
    assert result["status"] == "SUCCEEDED", result
    assert deploy_attempts(world, result) == 7 and json.loads(world.pointer())["run_id"] == "run-cap"
    assert "StopHost" in visited and world.host_state() == "stopped"  # started by this execution, stopped after


def test_a_host_scoring_may_use_is_left_to_its_idle_timer(world):
    """With customModelShare above 0, ScoreProfiles may have woken the host during the run: the
    execution does not stop it under a batch; the host stops itself once idle."""
    world.redefine(CustomModelShare=25)
    world.ollama.state.responder = teacher_agreeing(world, "run-share")
    result, visited = run(world, "run-share")
    assert result["status"] == "SUCCEEDED", result
    assert "RestoreHost" in visited and "StopHost" not in visited and world.host_state() == "running"


def test_a_host_found_running_is_left_running(world):
    boto3.client("ec2").start_instances(InstanceIds=[world.instance_id])  # e.g. woken by a scoring batch
    world.ollama.state.responder = teacher_agreeing(world, "run-awake")
    result, visited = run(world, "run-awake")
    assert result["status"] == "SUCCEEDED", result
    assert "StopHost" not in visited and world.host_state() == "running"


def test_a_second_execution_is_refused_while_one_runs(world):
    world.training_statuses[:] = [{"TrainingJobStatus": "InProgress"}]  # the first run trains forever
    world.stage_adapter("run-7")
    first = world.start("run-7", {"min_rows": 100})
    import time

    deadline = time.monotonic() + 60
    while "WaitForTraining" not in world.visited(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = world.wait(world.start("run-8", {"min_rows": 100}))
    assert second["status"] == "FAILED" and second["error"] == "ExecutionAlreadyRunning"
    assert "GenerateDataset" not in world.visited(second["executionArn"])
    world.sfn.stop_execution(executionArn=first)
    assert world.wait(first)["status"] in {"ABORTED", "FAILED"}


def test_invalid_data_fails_with_insufficient_data(world):
    result, visited = run(world, "run-9", min_rows=100_000)
    assert result["status"] == "FAILED" and result["error"] == "InsufficientData"
    assert "StartTraining" not in visited and "DataInvalid" in visited


def test_a_job_stopped_at_max_runtime_with_an_adapter_goes_on(world):
    """SageMaker ends a job at MaxRuntime as Stopped / MaxRuntimeExceeded and uploads /opt/ml/model,
    where the trainer left its best finished epoch's adapter."""
    world.training_statuses[:] = [{"TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxRuntimeExceeded"}]
    world.ollama.state.responder = teacher_agreeing(world, "run-10")
    result, visited = run(world, "run-10")
    assert result["status"] == "SUCCEEDED", result
    assert visited.index("CheckAdapter") < visited.index("ConvertToGGUF") and "PromoteModel" in visited


def test_a_job_stopped_at_max_runtime_without_an_adapter_is_never_converted(world):
    world.training_statuses[:] = [{"TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxRuntimeExceeded"}]
    arn = world.start("run-11", {"min_rows": 100})  # no adapter staged: no epoch finished
    result, visited = world.wait(arn), world.visited(arn)
    assert result["status"] == "FAILED" and result["error"] == "TrainingEndedWithoutAdapter", result
    assert "MaxRuntimeExceeded" in result["cause"]
    assert "ConvertToGGUF" not in visited and "DescribeHost" not in visited
    assert any("TrainingEndedWithoutAdapter" in message for message in world.notifications())


def test_a_job_a_person_stopped_fails_as_stopped(world):
    world.training_statuses[:] = [{"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"}]
    result, visited = run(world, "run-12")
    assert result["status"] == "FAILED" and result["error"] == "TrainingStopped"
    assert "CheckAdapter" not in visited


def test_any_execution_name_the_console_accepts_makes_a_valid_training_job_name(world):
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingJobName")
    run_id = "Weekly_retrain_" + "x" * 54 + "_2026_11_29"  # 80 characters, underscores: a valid execution name
    assert len(run_id) == 80
    world.ollama.state.responder = teacher_agreeing(world, run_id)
    result, _ = run(world, run_id)
    assert result["status"] == "SUCCEEDED", result
    [job] = boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    name = job["TrainingJobName"]
    assert len(name) <= shape.metadata["max"] and re.fullmatch(shape.metadata["pattern"], name), name
    assert name.startswith("researcher-scorer-Weekly-retrain-xxx")  # traceable to the run


# Every Task failing in turn: where the failure is injected, and the execution it must end as.
# (state, how to fail it, training status script, error the execution ends with or None for the injected one)
FAILURES = [
    ("CheckNoOtherExecution", ("api", ("stepfunctions", "ListExecutions", 1)), None, None),
    ("GenerateDataset", ("lambda", "generate-dataset"), None, "InjectedFailure"),
    ("ValidateData", ("lambda", "validate-data"), None, "InjectedFailure"),
    ("StartTraining", ("api", ("sagemaker", "CreateTrainingJob", 1)), None, None),
    ("CheckStatus", ("api", ("sagemaker", "DescribeTrainingJob", 1)), None, None),
    (
        "DescribeFailedTraining",
        ("api", ("sagemaker", "DescribeTrainingJob", 2)),
        [{"TrainingJobStatus": "Failed", "FailureReason": "CUDA out of memory"}],
        "TrainingFailed",
    ),
    ("CheckAdapter", ("api", ("s3", "ListObjectsV2", 2)), None, None),  # the 1st: GenerateDataset's own check
    ("ConvertToGGUF", ("lambda", "convert-to-gguf"), None, "InjectedFailure"),
    ("DescribeHost", ("api", ("ec2", "DescribeInstances", 1)), None, None),
    ("DeployModel", ("lambda", "deploy-model"), None, "InjectedFailure"),
    ("ValidateModel", ("lambda", "validate-model"), None, "InjectedFailure"),
    ("PromoteModel", ("lambda", "promote-model"), None, "InjectedFailure"),
    ("Rollback", ("lambda", "rollback-model"), "gates fail", "ValidationFailed"),
    ("NotifyFailure", ("api", ("sns", "Publish", 1)), [{"TrainingJobStatus": "Failed", "FailureReason": "boom"}], "TrainingFailed"),
    ("RecordFailedRun", ("lambda", "record-run"), [{"TrainingJobStatus": "Failed", "FailureReason": "boom"}], "TrainingFailed"),
    ("StopHost", ("api", ("ec2", "StopInstances", 1)), None, None),
]
# Tasks after a promotion: their failure loses a history line or an announcement, never the run.
AFTER_PROMOTION = [("RecordRun", ("lambda", "record-run")), ("NotifySuccess", ("api", ("sns", "Publish", 1)))]
# Run with a shadow alert on a failed run (test_a_shadow_alert_that_cannot_be_published_…).
AFTER_SHADOW_ALERT = ["NotifyShadowAlert"]


def test_the_failure_matrix_covers_every_task():
    from infra import asl
    from tests.statemachine.conftest import sample_definition_values

    states = json.loads(asl.render(sample_definition_values()))["States"]
    assert {name for name, state in states.items() if state["Type"] == "Task"} == {row[0] for row in [*FAILURES, *AFTER_PROMOTION]} | set(
        AFTER_SHADOW_ALERT
    )


@pytest.mark.parametrize("state,how", AFTER_PROMOTION, ids=[row[0] for row in AFTER_PROMOTION])
def test_a_failure_after_the_promotion_keeps_the_run_succeeded_and_the_host_stopped(world, state, how):
    from tests.statemachine.conftest import INJECTED

    run_id = f"late-{state}"
    world.ollama.state.responder = teacher_agreeing(world, run_id)
    INJECTED[how[0]] = how[1]
    result, visited = run(world, run_id)
    INJECTED.update(api=None, **{"lambda": None})
    assert state in visited and result["status"] == "SUCCEEDED", result
    assert json.loads(world.pointer())["run_id"] == run_id and world.host_state() == "stopped"
    assert ("NotifySuccess" in visited) is (state == "NotifySuccess")


@pytest.mark.parametrize("state,how,statuses,expected", FAILURES, ids=[row[0] for row in FAILURES])
def test_each_task_failing_ends_the_execution_failed_notified_and_the_host_stopped(world, state, how, statuses, expected):
    from tests.statemachine.conftest import INJECTED

    run_id = f"fail-{state}"
    if statuses == "gates fail":
        world.ollama.state.responder = lambda model, body: json.dumps(
            {"handle": re.search(r"^handle: (.*)$", body["prompt"], re.M).group(1), "score": "0.10", "reason": "not a researcher"}
        )
    else:
        world.ollama.state.responder = teacher_agreeing(world, run_id)
        world.training_statuses[:] = statuses or []
    INJECTED[how[0]] = how[1]
    result, visited = run(world, run_id)
    INJECTED.update(api=None, **{"lambda": None})
    assert state in visited
    assert result["status"] == "FAILED", (state, result)
    assert result.get("error") and result["error"] != "States.Runtime", (state, result)
    if expected:
        assert result["error"] == expected, (state, result)
    if state != "NotifyFailure":
        notified = world.notifications() if state != "StopHost" else []
        if state != "StopHost":
            assert any(result["error"] in message and run_id in message for message in notified), (state, notified)
    if state in {"StopHost"}:
        assert "Succeeded" not in visited and "HostNotStopped" in visited
    elif "DescribeHost" in visited and state != "DescribeHost":
        assert world.host_state() == "stopped", state  # returned to the state it was found in
    assert "PromoteModel" not in visited or state == "PromoteModel" or state == "StopHost"


FRESH = 120


def shadowed_twice(world, db):
    """run-s1 promoted; a week of new teacher scores; run-s2 promoted, its shadow of run-s1 in agreement."""
    world.ollama.state.responder = teacher_agreeing(world, "run-s1")
    assert run(world, "run-s1")[0]["status"] == "SUCCEEDED"
    assert not storage.exists(f"s3://{world.bucket}/runs/run-s1/shadow/fresh.json")  # nothing in production before it

    # A week of new teacher scores: enough for the shadow step to judge (shadow.MIN_SHADOW_PROFILES).
    fresh = {f"fresh_{i}": round(i / (FRESH - 1), 2) for i in range(FRESH)}
    insert_fresh_scores(db, fresh)
    known = {}

    def respond(model, body):
        if not known:
            known.update(world.teacher_scores("run-s2"), **fresh)
        return echo_teacher_responder(known)(model, body)

    world.ollama.state.responder = respond
    result, _ = run(world, "run-s2")
    assert result["status"] == "SUCCEEDED", result


def then_production_stops_agreeing(world, db):
    """Another week; every model now answers 0.10 whatever the profile: the candidate fails its
    gates and the production model's shadow agreement becomes undefined - an alert."""
    insert_fresh_scores(db, {f"later_{i}": round(i / (FRESH - 1), 2) for i in range(FRESH)}, prefix="9200")
    world.ollama.state.responder = lambda model, body: json.dumps(
        {"handle": re.search(r"^handle: (.*)$", body["prompt"], re.M).group(1), "score": "0.10", "reason": "not a researcher"}
    )
    return run(world, "run-s3")


def test_each_run_shadows_the_production_model_on_profiles_scored_since_its_dataset(world, db):
    shadowed_twice(world, db)
    snapshot = json.loads(storage.read_bytes(f"s3://{world.bucket}/runs/run-s2/shadow/fresh.json"))
    assert snapshot["production_run_id"] == "run-s1" and len(snapshot["profiles"]) == FRESH
    shadowed = json.loads(storage.read_bytes(f"s3://{world.bucket}/runs/run-s2/shadow/shadow.json"))
    assert shadowed["scored"] == FRESH and shadowed["pearson"] == pytest.approx(1.0) and shadowed["model"] == "mistral-researcher:latest"
    assert storage.exists(f"s3://{world.bucket}/runs/run-s2/shadow/trend.png")
    recorded = history.read(f"s3://{world.bucket}")
    assert recorded.runs()["run-s2"]["shadow"]["scored"] == FRESH
    assert [record["kind"] for record in recorded.records].count("shadow") == 1
    assert any(f"shadow vs the teachers on {FRESH} fresh profiles: pearson 1.000" in message for message in world.notifications())
    assert world.subjects() == ["researcher-scorer training run promoted"] * 2

    # A drop is notified on its own, even when the run that measured it failed.
    result, visited = then_production_stops_agreeing(world, db)
    assert result["status"] == "FAILED" and result["error"] == "ValidationFailed"
    assert visited.index("NotifyFailure") < visited.index("RecordFailedRun") < visited.index("NotifyShadowAlert")
    assert history.read(f"s3://{world.bucket}").runs()["run-s3"]["shadow"]["alert"] is True
    failed, alert = world.subjects()[2:]
    assert failed == "researcher-scorer training run failed"
    assert alert == "researcher-scorer ALERT: production's agreement with the teachers dropped; run rolled back"
    assert "fresh profiles: pearson undefined (ALERT: dropped)" in world.notifications()[-1]
    assert world.pointer() and json.loads(world.pointer())["run_id"] == "run-s2" and world.host_state() == "stopped"


def test_a_shadow_alert_that_cannot_be_published_leaves_the_run_recorded_and_the_host_stopped(world, db):
    from tests.statemachine.conftest import INJECTED

    shadowed_twice(world, db)
    INJECTED["api"] = ("sns", "Publish", 2)  # NotifyFailure's goes out, NotifyShadowAlert's fails
    result, visited = then_production_stops_agreeing(world, db)
    INJECTED["api"] = None
    assert result["status"] == "FAILED" and result["error"] == "ValidationFailed"  # the run's own error, not the notification's
    assert "NotifyShadowAlert" in visited and world.host_state() == "stopped"
    assert history.read(f"s3://{world.bucket}").runs()["run-s3"]["outcome"] == "rolled back"
    assert world.subjects()[-1] == "researcher-scorer training run failed"
