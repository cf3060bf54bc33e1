"""`python -m pipeline promote --run` and `rollback --to`: the pipeline's pointer and tag semantics,
runs that failed their gates refused unless forced, every action in the history."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline import cli, history
from pipeline.serving.modelfile import model_tag
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer
from tests.pipeline.test_history import write_run


@pytest.fixture
def two_runs(tmp_path):
    write_run(tmp_path, "run-1", pearson=0.9, passed=True, teachers={"claude-haiku-20240307": 700})
    write_run(tmp_path, "run-2", pearson=0.7, passed=False, teachers={"claude-haiku-20240307": 900})
    for run_id in ("run-1", "run-2"):
        gguf = tmp_path / "runs" / run_id / "model.gguf"
        gguf.write_bytes(b"GGUF" + run_id.encode() * 512)
        validated(tmp_path, run_id, hashlib.sha256(gguf.read_bytes()).hexdigest())
    return tmp_path


def validated(root, run_id: str, sha256: str | None) -> None:
    """The run's report as ValidateModel writes it: with the digest of the GGUF it scored."""
    report_path = root / "runs" / run_id / "report" / "report.json"
    report = json.loads(report_path.read_text())
    report_path.write_text(json.dumps({**report, "gguf_sha256": sha256}))


def pointer(root) -> dict:
    return json.loads((root / "runs" / "current.json").read_text())


def test_promote_pins_a_run_that_passed_and_records_it(two_runs, capsys):
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs), "--note", "pin after incident"]) == 0
    assert pointer(two_runs)["run_id"] == "run-1" and pointer(two_runs)["production"].endswith("runs/run-1/model.gguf")
    assert "run-1 is production" in capsys.readouterr().out
    (action,) = history.read(str(two_runs)).actions()
    assert (action["kind"], action["run_id"], action["replaced"], action["forced"], action["note"]) == (
        "promote",
        "run-1",
        None,
        False,
        "pin after incident",
    )


def test_a_run_that_failed_its_gates_is_refused_unless_forced(two_runs, capsys):
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs)]) == 0
    assert cli.main(["rollback", "--to", "run-2", "--root", str(two_runs)]) == cli.EXIT_ERROR
    assert "RunNotPromotable: run run-2 failed its gates (pearson): pass --force" in capsys.readouterr().err
    assert pointer(two_runs)["run_id"] == "run-1"  # production untouched
    assert cli.main(["rollback", "--to", "run-2", "--root", str(two_runs), "--force"]) == 0
    assert pointer(two_runs)["run_id"] == "run-2" and pointer(two_runs)["previous"]["run_id"] == "run-1"
    assert cli.main(["rollback", "--to", "run-1", "--root", str(two_runs)]) == 0
    actions = history.read(str(two_runs)).actions()
    assert [(a["kind"], a["run_id"], a["replaced"], a["forced"]) for a in actions] == [
        ("promote", "run-1", None, False),
        ("rollback", "run-2", "run-1", True),
        ("rollback", "run-1", "run-2", False),
    ]


def test_a_run_without_a_gguf_or_a_report_is_named(two_runs, capsys):
    (two_runs / "runs" / "run-1" / "model.gguf").unlink()
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs)]) == cli.EXIT_ERROR
    assert "RunNotPromotable: run run-1 has no GGUF" in capsys.readouterr().err
    assert cli.main(["promote", "--run", "run-9", "--root", str(two_runs)]) == cli.EXIT_ERROR
    assert "RunNotPromotable: run run-9 has no validation report" in capsys.readouterr().err
    assert not (two_runs / "runs" / "current.json").exists() and history.read(str(two_runs)).actions() == []


def test_on_ollama_the_run_is_redeployed_when_its_tag_is_gone_and_copied_to_production(two_runs):
    with OllamaContractServer() as server:
        args = ["--root", str(two_runs), "--ollama-url", server.url]
        assert cli.main(["promote", "--run", "run-1", *args]) == 0
        assert server.state.models["mistral-researcher:latest"] == server.state.models[model_tag("run-1")]
        assert cli.main(["rollback", "--to", "run-2", *args, "--force"]) == 0
        assert server.state.models["mistral-researcher:latest"] == server.state.models[model_tag("run-2")]
        del server.state.models[model_tag("run-1")]  # pruned since: rolling back to it deploys it again
        assert cli.main(["rollback", "--to", "run-1", *args]) == 0
        assert server.state.models["mistral-researcher:latest"] == server.state.models[model_tag("run-1")]
    assert pointer(two_runs)["run_id"] == "run-1" and pointer(two_runs)["model"] == model_tag("run-1")


def test_once_production_is_on_ollama_moving_the_pointer_alone_is_refused(two_runs, capsys):
    with OllamaContractServer() as server:
        assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs), "--ollama-url", server.url]) == 0
    before = pointer(two_runs)
    assert cli.main(["rollback", "--to", "run-2", "--root", str(two_runs), "--force"]) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "HostRequired: production at" in error and "mistral-researcher:latest: pass --ollama-url" in error
    assert pointer(two_runs) == before and len(history.read(str(two_runs)).actions()) == 1  # nothing moved, nothing recorded


def test_the_model_name_is_the_one_production_has(two_runs, capsys):
    """A stack with modelName scorer-x: the pointer names scorer-x:latest, and the commands keep to it."""
    with OllamaContractServer() as server:
        args = ["--root", str(two_runs), "--ollama-url", server.url]
        assert cli.main(["promote", "--run", "run-1", *args, "--model-name", "scorer-x"]) == 0
        assert pointer(two_runs)["production"] == "scorer-x:latest"
        assert cli.main(["rollback", "--to", "run-2", *args, "--force"]) == 0  # no --model-name: read from the pointer
        assert server.state.models["scorer-x:latest"] == server.state.models[model_tag("run-2", "scorer-x")]
        assert not [name for name in server.state.models if name.startswith("mistral-researcher:")]
        capsys.readouterr()
        assert cli.main(["promote", "--run", "run-1", *args, "--model-name", "mistral-researcher"]) == cli.EXIT_ERROR
        assert "--model-name mistral-researcher but production is scorer-x:latest" in capsys.readouterr().err


def test_a_gguf_replaced_since_its_validation_is_refused_unless_forced(two_runs, capsys):
    (two_runs / "runs" / "run-1" / "model.gguf").write_bytes(b"GGUF" + b"something nobody validated" * 64)
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs)]) == cli.EXIT_ERROR
    assert "but run run-1 validated" in capsys.readouterr().err and not (two_runs / "runs" / "current.json").exists()
    validated(two_runs, "run-2", None)  # a report that records no digest vouches for no GGUF
    assert cli.main(["rollback", "--to", "run-2", "--root", str(two_runs), "--force"]) == 0
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs)]) == cli.EXIT_ERROR
    assert cli.main(["promote", "--run", "run-1", "--root", str(two_runs), "--force", "--note", "known rebuild"]) == 0
    assert [(a["run_id"], a["forced"]) for a in history.read(str(two_runs)).actions()] == [("run-2", True), ("run-1", True)]


def test_on_aws_the_pointer_and_the_history_live_in_the_bucket(two_runs, monkeypatch):
    # The same commands against the stack's bucket (s3:// root): the runs' artifacts read from S3,
    # the GGUF deployed from S3 to the host, the pipeline's own pointer (models/current.json) and
    # the history (runs/index.jsonl) written there.
    import boto3
    from moto import mock_aws

    from tests.conftest import fake_aws_credentials

    fake_aws_credentials(monkeypatch)
    with mock_aws(), OllamaContractServer() as server:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="artifacts")
        for path in two_runs.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "artifacts", path.relative_to(two_runs).as_posix())
        # Without the host, the bucket's pointer would name a model the host does not serve.
        assert cli.main(["promote", "--run", "run-1", "--root", "s3://artifacts"]) == cli.EXIT_ERROR
        assert "Key" not in s3.list_objects_v2(Bucket="artifacts", Prefix="models/")  # no pointer written
        args = ["--root", "s3://artifacts", "--ollama-url", server.url]
        assert cli.main(["promote", "--run", "run-1", *args]) == 0
        assert cli.main(["rollback", "--to", "run-2", *args]) == cli.EXIT_ERROR  # failed its gates, not forced
        assert cli.main(["rollback", "--to", "run-2", *args, "--force", "--note", "incident 7"]) == 0
        assert server.state.models["mistral-researcher:latest"] == server.state.models[model_tag("run-2")]
        pointer_in_bucket = json.loads(s3.get_object(Bucket="artifacts", Key="models/current.json")["Body"].read())
        assert pointer_in_bucket["run_id"] == "run-2" and pointer_in_bucket["previous"]["run_id"] == "run-1"
        actions = history.read("s3://artifacts").actions()
        assert [(a["kind"], a["run_id"], a["replaced"], a["forced"], a["note"]) for a in actions] == [
            ("promote", "run-1", None, False, ""),
            ("rollback", "run-2", "run-1", True, "incident 7"),
        ]
        assert not (two_runs / "runs" / "current.json").exists()  # nothing written locally
