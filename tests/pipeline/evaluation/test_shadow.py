"""`python -m pipeline shadow`: on a real PostgreSQL, the production model (the contract-test
Ollama server) against the teachers on profiles first scored after its dataset; a trend in the
history, and an alert when the agreement drops."""

from __future__ import annotations

import json
import re

import boto3
import numpy as np
import pytest
from moto import mock_aws

from pipeline import cli, history
from pipeline.evaluation import shadow
from tests.conftest import fake_aws_credentials
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer

FRESH = 120  # at least shadow.MIN_SHADOW_PROFILES: a sample the alert may judge


@pytest.fixture
def scored_table(db):
    """Old scores (before the production dataset), fresh profiles after it, and old profiles re-scored after it."""
    with db.cursor() as cursor:
        for i in range(40):  # known before the export: never fresh, even when scored again later
            cursor.execute(
                "INSERT INTO user_profiles (twitter_id, username, bio, created_at, follower_count) VALUES (%s, %s, %s, %s, %s)",
                (f"7000{i}", f"old_user_{i}", "PhD student", "2015-01-01", 10),
            )
            cursor.execute(
                "INSERT INTO profile_scores (twitter_id, score, reason, scored_by, scored_at) VALUES (%s, '0.5', 'old', %s, %s)",
                (f"7000{i}", "claude-haiku-20240307", "2026-10-01T00:00:00Z"),
            )
            if i < 10:
                cursor.execute(
                    "INSERT INTO profile_scores (twitter_id, score, reason, scored_by, scored_at) VALUES (%s, '0.9', 'again', %s, %s)",
                    (f"7000{i}", "gemini-2.0-flash", "2026-11-20T00:00:00Z"),
                )
        teacher = {}
        for i in range(FRESH):
            score = round(i / (FRESH - 1), 2)
            teacher[f"fresh_user_{i}"] = score
            cursor.execute(
                "INSERT INTO user_profiles (twitter_id, username, bio, created_at, follower_count) VALUES (%s, %s, %s, %s, %s)",
                (f"7100{i}", f"fresh_user_{i}", f"bio {i}", "2020-01-01", 100 + i),
            )
            cursor.execute(
                "INSERT INTO profile_scores (twitter_id, score, reason, scored_by, scored_at) VALUES (%s, %s, %s, %s, %s)",
                (f"7100{i}", str(score), f"teacher reason {i}", "claude-haiku-20240307", "2026-11-20T00:00:00Z"),
            )
        cursor.execute(  # a teacher's junk answer on a fresh profile: counted, not scored against
            "INSERT INTO user_profiles (twitter_id, username) VALUES ('7999', 'junk_user')"
        )
        cursor.execute(
            "INSERT INTO profile_scores (twitter_id, score, reason, scored_by, scored_at) "
            "VALUES ('7999', 'high', 'x', 'claude-haiku-20240307', '2026-11-21T00:00:00Z')"
        )
    db.commit()
    return teacher


@pytest.fixture
def production(tmp_path):
    """run-1 in production (the local pointer), its dataset exported on 2026-11-01."""
    (tmp_path / "runs" / "run-1" / "dataset").mkdir(parents=True)
    (tmp_path / "runs" / "run-1" / "dataset" / "manifest.json").write_text(json.dumps({"created_at": "2026-11-01T00:00:00+00:00"}))
    (tmp_path / "runs" / "current.json").write_text(json.dumps({"run_id": "run-1", "production": "mistral-researcher:latest"}))
    return tmp_path


def answering(scores):
    def respond(model, body):
        handle = re.search(r"^handle: (.*)$", body["prompt"], re.M).group(1)
        return json.dumps({"handle": handle, "score": f"{scores.get(handle, 0.5):.2f}", "reason": f"model reason for {handle}"})

    return respond


def alerts_topic():
    """An SNS topic (moto) with a queue subscribed: what was published to it can be read back."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="researcher-scorer-failures")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def published() -> list[dict]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    return topic_arn, published


def test_shadow_scores_only_fresh_profiles_reports_agreement_and_alerts_on_a_drop(
    scored_table, production, database_url, capsys, monkeypatch
):
    root = str(production)
    fake_aws_credentials(monkeypatch)
    with OllamaContractServer() as server, mock_aws():
        topic_arn, published = alerts_topic()
        server.state.models["mistral-researcher:latest"] = {"files": {}, "template": "", "system": "", "parameters": {}}
        server.state.responder = answering(scored_table)  # agrees with the teachers
        args = [
            "shadow",
            "--root",
            root,
            "--database-url",
            database_url,
            "--ollama-url",
            server.url,
            "--no-progress",
            "--topic-arn",
            topic_arn,
        ]
        assert cli.main(args) == 0
        assert published() == []  # no drop, no alert
        asked = {re.search(r"^handle: (.*)$", r["prompt"], re.M).group(1) for r in server.state.generate_requests}
        assert asked == set(scored_table)  # only profiles first scored after 2026-11-01; not the re-scored old ones
        first = json.loads(next(production.glob("shadow/*/shadow.json")).read_text())
        assert first["profiles"] == FRESH and first["scored"] == FRESH and first["rejected_teacher_scores"] == 1
        assert first["pearson"] == pytest.approx(1.0) and first["mae"] == pytest.approx(0.0) and first["agreement"] == 1.0
        assert first["alert"] is False and first["previous_pearson"] is None and first["status"] == "no_baseline"
        assert first["by_teacher"] == {"claude-haiku-20240307": {"profiles": FRESH, "pearson": pytest.approx(1.0), "mae": 0.0}}

        # A week later the model disagrees: the largest disagreements are listed with both answers, and it alerts.
        worse = {handle: round(1 - score, 2) if handle.endswith(("1", "3", "5")) else score for handle, score in scored_table.items()}
        server.state.responder = answering(worse)
        capsys.readouterr()
        assert cli.main(args) == cli.EXIT_GATE_FAILED
        assert "ALERT: shadow agreement dropped" in capsys.readouterr().err
        [alert] = published()  # the on-demand alert reaches the topic the stack's failures go to
        assert alert["Subject"] == "researcher-scorer shadow agreement dropped"
        assert alert["Message"].startswith("shadow agreement dropped: pearson") and "after 1.000" in alert["Message"]
    shadows = [record for record in history.read(root).records if record["kind"] == "shadow"]
    assert len(shadows) == 2 and shadows[1]["alert"] is True and shadows[1]["previous_pearson"] == pytest.approx(1.0)
    assert shadows[1]["status"] == "compared" and shadows[1]["drop_z"] > shadow.ALERT_Z
    assert len(list(production.glob("shadow/*/shadow.json"))) == 2  # each result kept
    latest = next(path.parent for path in production.glob("shadow/*/shadow.json") if json.loads(path.read_text())["alert"])
    report = json.loads((latest / "shadow.json").read_text())
    top = report["largest"][0]
    assert abs(top["model_score"] - top["teacher_score"]) >= 0.9 and top["teacher_reason"].startswith("teacher reason")
    assert top["model_reason"].startswith("model reason")
    assert (latest / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Largest disagreements" in (latest / "shadow.md").read_text()
    assert (
        f"Per teacher: claude\\-haiku\\-20240307 Pearson {shadows[1]['by_teacher']['claude-haiku-20240307']['pearson']:.3f}"
        in (latest / "shadow.md").read_text()
    )


def test_without_a_production_model_shadow_says_so(tmp_path, database_url, capsys):
    assert cli.main(["shadow", "--root", str(tmp_path), "--database-url", database_url, "--ollama-url", "http://127.0.0.1:9"]) == 1
    assert "NoProductionModel" in capsys.readouterr().err


def week(pearson: float | None, scored: int, run_id: str = "run-1") -> shadow.ShadowResult:
    return shadow.ShadowResult("mistral-researcher:latest", run_id, "", scored, scored, {}, 0, pearson, None, None)


def test_a_week_with_too_few_answered_profiles_is_insufficient_never_an_alert():
    """One answered profile used to alert; at 50, a fixed drop alerted 14-17 % of unchanged weeks."""
    baseline = {"pearson": 0.9, "scored": 200, "run_id": "run-1"}
    for scored in (1, 50, shadow.MIN_SHADOW_PROFILES - 1):
        judged = shadow.judge(week(0.2, scored), baseline, 0.05)
        assert judged.status == "insufficient" and judged.alert is False and judged.drop is None
    assert shadow.judge(week(None, 200), baseline, 0.05).alert is True  # undefined agreement on a real sample
    assert shadow.judge(week(0.2, 200), None, 0.05).status == "no_baseline"


def test_a_drop_alerts_only_when_larger_than_the_setting_and_significant():
    baseline = {"pearson": 0.9, "scored": 100, "run_id": "run-1"}
    # 0.055 below on 100 + 100 profiles: Fisher's z 1.63, within chance at one-sided 95 %.
    judged = shadow.judge(week(0.845, 100), baseline, 0.05)
    expected_z = (np.arctanh(0.9) - np.arctanh(0.845)) / np.sqrt(2 / 97)
    assert judged.drop_z == pytest.approx(expected_z) and not judged.alert
    assert shadow.judge(week(0.80, 500), {**baseline, "scored": 500}, 0.05).alert  # z 5.9
    assert not shadow.judge(week(0.87, 5000), {**baseline, "scored": 5000}, 0.05).alert  # significant but below the setting


def test_the_baseline_is_the_latest_sufficient_result_of_the_same_production_run_first(tmp_path):
    root = str(tmp_path)
    for record in (
        {"kind": "shadow", "run_id": "run-1", "scored": 300, "pearson": 0.9},
        {"kind": "shadow", "run_id": "run-2", "scored": 300, "pearson": 0.7},
        {"kind": "shadow", "run_id": "run-1", "scored": 20, "pearson": 0.1},  # too small to be a baseline
    ):
        history.append(root, record)
    assert shadow.previous(root, "run-1")["pearson"] == 0.9
    assert shadow.previous(root, "run-3")["pearson"] == 0.7  # a new model's first week: the latest before it
