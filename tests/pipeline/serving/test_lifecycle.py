"""Deploy / promote / rollback against the Ollama CONTRACT TEST server (see ollama_contract_server)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline import storage
from pipeline.serving import lifecycle, modelfile
from pipeline.serving.lifecycle import ServingConfig
from pipeline.serving.modelfile import model_tag
from pipeline.serving.ollama import ModelNotFound, OllamaClient, OllamaError, OllamaUnavailable, RetryPolicy

PRODUCTION = "mistral-researcher:latest"


def fake_gguf(tmp_path, run_id: str, payload: bytes) -> str:
    path = tmp_path / "runs" / run_id / "model.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + payload)
    return str(path)


def deploy_and_promote(client, tmp_path, run_id: str, payload: bytes) -> dict:
    gguf = fake_gguf(tmp_path, run_id, payload)
    lifecycle.deploy(client, gguf, run_id)
    return lifecycle.promote(client, str(tmp_path), run_id, {"gguf_uri": gguf, "metrics": {"pearson": 0.9}})


def test_deploy_uploads_by_digest_creates_the_candidate_and_writes_the_modelfile(ollama, client, tmp_path):
    gguf = fake_gguf(tmp_path, "run-1", b"weights")
    result = lifecycle.deploy(client, gguf, "run-1")
    digest = "sha256:" + hashlib.sha256(b"GGUFweights").hexdigest()
    assert result["candidate"] == model_tag("run-1") and result["uploaded"] is True
    assert set(ollama.state.blobs) == {digest}
    created = ollama.state.models[model_tag("run-1")]
    assert created["files"] == {"model.gguf": digest} and created["template"] == modelfile.OLLAMA_TEMPLATE
    assert created["parameters"]["temperature"] == 0.1 and created["parameters"]["num_ctx"] == 4096
    assert (tmp_path / "runs" / "run-1" / "Modelfile").read_text() == modelfile.render_modelfile("./model.gguf")
    assert PRODUCTION not in ollama.state.models  # deploying never touches production
    again = lifecycle.deploy(client, gguf, "run-1")  # idempotent: no second upload
    assert again["uploaded"] is False and ollama.state.calls["POST /api/blobs/:digest"] == 1


def test_deploy_trusts_the_export_description_only_when_the_size_agrees(ollama, client, tmp_path):
    gguf = fake_gguf(tmp_path, "run-1", b"weights")
    (tmp_path / "runs" / "run-1" / "model.gguf.json").write_text(json.dumps({"sha256": "0" * 64, "size": 3}))
    result = lifecycle.deploy(client, gguf, "run-1")  # stale description: hashed instead
    assert result["gguf_sha256"] == hashlib.sha256(b"GGUFweights").hexdigest()


def test_deploy_streams_from_s3(ollama, client, bucket):
    storage.write_bytes(f"s3://{bucket}/runs/run-7/model.gguf", b"GGUF" + b"x" * 1000)
    lifecycle.deploy(client, f"s3://{bucket}/runs/run-7/model.gguf", "run-7")
    assert model_tag("run-7") in ollama.state.models
    assert storage.exists(f"s3://{bucket}/runs/run-7/Modelfile")


def test_promote_copies_to_production_and_writes_the_pointer(ollama, client, tmp_path):
    first = deploy_and_promote(client, tmp_path, "run-1", b"one")
    assert first["run_id"] == "run-1" and first["previous"] is None and first["metrics"] == {"pearson": 0.9}
    second = deploy_and_promote(client, tmp_path, "run-2", b"two")
    assert second["previous"]["run_id"] == "run-1" and "previous" not in second["previous"]
    assert lifecycle.read_pointer(str(tmp_path))["run_id"] == "run-2"
    assert ollama.state.models[PRODUCTION] == ollama.state.models[model_tag("run-2")]
    third = deploy_and_promote(client, tmp_path, "run-3", b"three")
    # run-1 pruned: production's run and the restore point (run-2) stay
    assert sorted(ollama.state.models) == [PRODUCTION, model_tag("run-2"), model_tag("run-3")]
    again = lifecycle.promote(client, str(tmp_path), "run-3", {})  # retried promote keeps the same restore point
    assert again["previous"]["run_id"] == third["previous"]["run_id"] == "run-2"


def test_promote_refuses_a_candidate_that_is_not_deployed(client, tmp_path):
    with pytest.raises(lifecycle.PromotionError, match="deploy it first"):
        lifecycle.promote(client, str(tmp_path), "run-9", {})
    assert lifecycle.read_pointer(str(tmp_path)) is None


def test_rollback_deletes_the_candidate_and_leaves_production_and_pointer(ollama, client, tmp_path):
    deploy_and_promote(client, tmp_path, "run-1", b"one")
    pointer_before = (tmp_path / "models" / "current.json").read_bytes()
    production_before = ollama.state.models[PRODUCTION]
    lifecycle.deploy(client, fake_gguf(tmp_path, "run-2", b"two"), "run-2")
    result = lifecycle.rollback(client, str(tmp_path), "run-2")
    assert result["candidate_deleted"] is True and result["production_restored"] is False
    assert model_tag("run-2") not in ollama.state.models
    assert ollama.state.models[PRODUCTION] == production_before
    assert (tmp_path / "models" / "current.json").read_bytes() == pointer_before
    assert lifecycle.rollback(client, str(tmp_path), "run-2")["candidate_deleted"] is False  # idempotent


def test_a_promote_cut_off_after_the_copy_is_undone_by_rollback(ollama, client, tmp_path, monkeypatch):
    deploy_and_promote(client, tmp_path, "run-1", b"one")
    production_before = ollama.state.models[PRODUCTION]
    lifecycle.deploy(client, fake_gguf(tmp_path, "run-2", b"two"), "run-2")

    def cut_off(uri, value):
        raise storage.StorageError("the Lambda timed out while writing the pointer")

    monkeypatch.setattr(lifecycle.storage, "write_json", cut_off)
    with pytest.raises(storage.StorageError):
        lifecycle.promote(client, str(tmp_path), "run-2", {})
    monkeypatch.undo()
    assert ollama.state.models[PRODUCTION] != production_before  # production was half-switched
    result = lifecycle.rollback(client, str(tmp_path), "run-2")
    assert result["production_restored"] is True
    assert ollama.state.models[PRODUCTION] == production_before
    assert lifecycle.read_pointer(str(tmp_path))["run_id"] == "run-1"


def test_a_first_ever_promote_cut_off_is_undone_by_removing_production(ollama, client, tmp_path, monkeypatch):
    lifecycle.deploy(client, fake_gguf(tmp_path, "run-1", b"one"), "run-1")
    monkeypatch.setattr(lifecycle.storage, "write_json", lambda uri, value: (_ for _ in ()).throw(storage.StorageError("cut")))
    with pytest.raises(storage.StorageError):
        lifecycle.promote(client, str(tmp_path), "run-1", {})
    monkeypatch.undo()
    result = lifecycle.rollback(client, str(tmp_path), "run-1")
    assert result["production_removed"] is True and ollama.state.models == {}


def test_the_pointer_records_the_manifest_digest_production_must_have(ollama, client, tmp_path):
    pointer = deploy_and_promote(client, tmp_path, "run-1", b"one")
    tags = client.tags()
    assert pointer[lifecycle.OLLAMA_DIGEST_KEY] == tags[PRODUCTION] == tags[model_tag("run-1")]
    second = deploy_and_promote(client, tmp_path, "run-2", b"two")
    assert second[lifecycle.OLLAMA_DIGEST_KEY] == client.tags()[PRODUCTION] != pointer[lifecycle.OLLAMA_DIGEST_KEY]


def test_rollback_never_restores_production_from_a_tag_replaced_since_its_promotion(ollama, client, tmp_path):
    """Anyone admitted to Ollama's unauthenticated API can re-create the pointer's tag; a restore
    from it would put their model in production."""
    deploy_and_promote(client, tmp_path, "run-1", b"one")
    lifecycle.deploy(client, fake_gguf(tmp_path, "run-2", b"two"), "run-2")
    client.copy(model_tag("run-2"), PRODUCTION)  # a promote of run-2 cut off before its pointer
    ollama.state.models[model_tag("run-1")] = {**ollama.state.models[model_tag("run-1")], "system": "ignore the profile"}
    replaced_production = ollama.state.models[PRODUCTION]
    with pytest.raises(lifecycle.RestoreError, match="not the model the pointer promoted"):
        lifecycle.rollback(client, str(tmp_path), "run-2")
    assert ollama.state.models[PRODUCTION] == replaced_production  # nothing copied from the replaced tag


def test_rollback_names_the_problem_when_the_pointer_model_is_gone(ollama, client, tmp_path):
    deploy_and_promote(client, tmp_path, "run-1", b"one")
    ollama.state.models.pop(model_tag("run-1"))
    with pytest.raises(lifecycle.RestoreError, match=model_tag("run-1")):
        lifecycle.rollback(client, str(tmp_path), "run-2")


def test_transient_errors_are_retried_with_backoff(ollama, client, tmp_path):
    ollama.fail("POST /api/create", 503)
    ollama.drop("GET /api/tags", 1)
    deploy_and_promote(client, tmp_path, "run-1", b"one")
    assert ollama.state.calls["POST /api/create"] == 2 and ollama.state.calls["GET /api/tags"] >= 2
    assert len(client.sleeps) == 2 and all(0 <= delay <= 8 for delay in client.sleeps)


def test_an_unreachable_host_is_retried_then_named(tmp_path):
    sleeps: list[float] = []
    with OllamaClient("http://127.0.0.1:9", retry=RetryPolicy(attempts=4), sleep=sleeps.append) as dead:
        with pytest.raises(OllamaUnavailable, match="after 4 attempts"):
            lifecycle.deploy(dead, fake_gguf(tmp_path, "run-1", b"one"), "run-1")
    assert len(sleeps) == 3


def test_client_errors_are_not_retried_and_name_the_cause(ollama, client):
    ollama.fail("POST /api/copy", 400)
    with pytest.raises(OllamaError, match="HTTP 400: injected failure"):
        client.copy("a:b", "c:d")
    with pytest.raises(ModelNotFound):
        client.show("nothing:here")
    assert ollama.state.calls["POST /api/copy"] == 1 and client.sleeps == []


def test_a_corrupted_upload_is_refused_by_digest(ollama, client, tmp_path):
    gguf = fake_gguf(tmp_path, "run-1", b"weights")
    with pytest.raises(OllamaError, match="refused: HTTP 400"):
        client.push_blob("0" * 64, lambda: open(gguf, "rb"))
    assert ollama.state.blobs == {}


def test_serving_config_names(tmp_path):
    config = ServingConfig(production_tag="prod")
    assert config.production == "mistral-researcher:prod" and config.candidate("run-1") == (
        "mistral-researcher:run-1-" + hashlib.sha256(b"run-1").hexdigest()[:8]
    )
    with pytest.raises(Exception, match="run id"):
        config.candidate("bad id!")


def expires_under_the_lifecycle_rule(uri: str) -> bool:
    """S3's tag filter: a rule with filter {tag: {key, value}} applies to objects carrying that tag
    (the rule itself is asserted in tests/infra/test_storage.py)."""
    from pipeline import contracts

    return storage.get_tags(uri).get(contracts.RETENTION_TAG) == contracts.RETENTION_EXPIRING


def test_promotion_keeps_production_and_its_restore_point_out_of_the_gguf_expiry(ollama, client, bucket):
    from pipeline import contracts

    root = f"s3://{bucket}"
    ggufs = {}
    for number, run_id in enumerate(["run-1", "run-2", "run-3", "run-4"]):
        ggufs[run_id] = f"{root}/runs/{run_id}/model.gguf"
        storage.write_bytes(ggufs[run_id], b"GGUF" + bytes([number]) * 100)
        storage.set_tags(ggufs[run_id], {contracts.RETENTION_TAG: contracts.RETENTION_EXPIRING})  # as ConvertToGGUF does
        lifecycle.deploy(client, ggufs[run_id], run_id)
        lifecycle.promote(client, root, run_id, {"gguf_uri": ggufs[run_id]})
        production = lifecycle.read_pointer(root)
        assert not expires_under_the_lifecycle_rule(ggufs[production["run_id"]])
        if production["previous"]:
            assert not expires_under_the_lifecycle_rule(ggufs[production["previous"]["run_id"]])
    assert [run for run, uri in ggufs.items() if expires_under_the_lifecycle_rule(uri)] == ["run-1", "run-2"]
    assert storage.get_tags(ggufs["run-4"]) == {contracts.RETENTION_TAG: contracts.RETENTION_PRODUCTION}
    assert storage.get_tags(ggufs["run-3"]) == {contracts.RETENTION_TAG: contracts.RETENTION_RESTORE_POINT}


def test_a_gguf_that_cannot_be_protected_is_not_promoted(ollama, client, bucket):
    root = f"s3://{bucket}"
    storage.write_bytes(f"{root}/runs/run-1/model.gguf", b"GGUF" + b"1" * 100)
    lifecycle.deploy(client, f"{root}/runs/run-1/model.gguf", "run-1")
    with pytest.raises(lifecycle.PromotionError, match="does not exist"):
        lifecycle.promote(client, root, "run-1", {"gguf_uri": f"{root}/runs/run-1/elsewhere.gguf"})
    assert PRODUCTION not in ollama.state.models and lifecycle.read_pointer(root) is None


@pytest.mark.parametrize("run_id", ["latest", "LATEST", "Latest"])
def test_a_run_named_like_the_production_tag_never_touches_production(ollama, client, tmp_path, run_id):
    """Ollama matches names case-insensitively: an execution called "latest" (or "LATEST") would
    otherwise be deployed straight onto mistral-researcher:latest, and its Rollback delete it."""
    production = deploy_and_promote(client, tmp_path, "run-1", b"production weights")
    before = dict(ollama.state.models)
    gguf = fake_gguf(tmp_path, run_id, b"hostile weights")
    candidate = lifecycle.deploy(client, gguf, run_id)["candidate"]
    assert candidate.lower() != PRODUCTION and candidate.startswith("mistral-researcher:latest-")
    assert ollama.state.models[PRODUCTION] == before[PRODUCTION]
    lifecycle.rollback(client, str(tmp_path), run_id)
    assert ollama.state.models[PRODUCTION] == before[PRODUCTION] and production["run_id"] == "run-1"
    assert candidate not in ollama.state.models


def test_run_ids_that_differ_in_case_get_different_candidates():
    from pipeline import contracts

    tags = {contracts.candidate_tag(run_id) for run_id in ("latest", "LATEST", "Latest", "run_1", "run-1", "RUN-1")}
    assert len(tags) == 6 and all(tag == tag.lower() and len(tag) <= contracts.OLLAMA_TAG_MAX for tag in tags)
    assert len(contracts.candidate_tag("x" * 80)) <= contracts.OLLAMA_TAG_MAX
