"""`python -m pipeline run` — make demo's path — on a small sample: artifacts, pointer and report
agree; a failed gate leaves the current model alone and exits 3; an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import EXIT_GATE_FAILED, EXIT_INTERRUPTED, main
from pipeline.local import run as local_run
from pipeline.local import sample, tiny_model
from pipeline.serving.modelfile import model_tag
from tests.factories import insert_fresh_scores
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer, echo_teacher_responder

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

FAST = [
    "--set",
    "num_train_epochs=1",
    "--set",
    "logging_steps=1",
    "--set",
    "max_train_examples=48",
    "--set",
    "per_device_train_batch_size=8",
    "--set",
    "gradient_accumulation_steps=1",
    "--max-holdout",
    "30",
    "--min-rows",
    "300",
    "--quant",
    "q8_0",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def quick_pretraining(monkeypatch):
    """The demo pretrains its base on 3,000 profiles; these runs check the loop, not the model."""
    monkeypatch.setattr(tiny_model, "PRETRAIN_PROFILES", 48)


@pytest.fixture
def loaded_database(db, database_url) -> str:
    # 800: about 47 Claude-scored holdout profiles, the correlation gate's 30 with room.
    sample.load_sample(db, profiles=800, seed=5)
    return database_url


@pytest.fixture
def seed_list(tmp_path_factory) -> str:
    """The sample's seed-profile ids as a file: a real database is given its team's list."""
    path = tmp_path_factory.mktemp("seeds") / "seed-profiles.txt"
    path.write_text(sample.seed_profile_list())
    return str(path)


def cli(root: Path, database_url: str, *extra: str) -> int:
    seeds = root / "seed-profiles.txt"
    seeds.write_text(sample.seed_profile_list())
    return main(["run", "--root", str(root), "--database-url", database_url, "--seed-profiles", str(seeds), *FAST, *extra])


def teacher_scores(run_dir: Path) -> dict[str, float]:
    from pipeline import prompt

    scores = {}
    for name in ("holdout.jsonl", "seeds.jsonl"):
        for line in (run_dir / "dataset" / name).read_text().splitlines():
            answer = prompt.parse_answer(json.loads(line)["output"])
            scores[answer.handle] = answer.score
    return scores


def test_a_run_that_passes_the_gates_is_promoted_and_everything_agrees(loaded_database, seed_list, tmp_path):
    with OllamaContractServer() as ollama:
        cache: dict[str, float] = {}

        def respond(model, body):  # a served model that agrees with the teacher: the gates pass
            if not cache:
                run_dir = next((tmp_path / "runs").glob("run-*"))
                cache.update(teacher_scores(run_dir))
            return echo_teacher_responder(cache)(model, body)

        ollama.state.responder = respond
        options = local_run.RunOptions(
            root=str(tmp_path),
            database_url=loaded_database,
            seed_profiles=seed_list,
            ollama_url=ollama.url,
            training_overrides={"num_train_epochs": "1", "max_train_examples": "48"},
            quantization="q8_0",
            max_holdout=30,  # the least the correlation gate decides on
            min_rows=300,
            progress=False,
        )
        result = local_run.run(options, note=lambda message: None)
        assert result.promoted
        run_dir = tmp_path / "runs" / result.run_id
        for name in (
            "dataset/manifest.json",
            "dataset/seeds.jsonl",
            "adapter/adapter_config.json",
            "model.gguf",
            "model.gguf.json",
            "Modelfile",
            "report/report.json",
            "report/report.md",
            "report/model_vs_teacher.png",
            "run.json",
        ):
            assert (run_dir / name).is_file(), name
        pointer = json.loads((tmp_path / "runs" / "current.json").read_text())
        summary = json.loads((run_dir / "run.json").read_text())
        report = json.loads((run_dir / "report" / "report.json").read_text())
        assert pointer["run_id"] == summary["run_id"] == result.run_id and summary["outcome"] == "promoted"
        assert pointer["metrics"] == report["metrics"] and report["passed"] is True
        assert pointer["gguf_sha256"] == json.loads((run_dir / "model.gguf.json").read_text())["sha256"]
        assert ollama.state.models["mistral-researcher:latest"] == ollama.state.models[model_tag(result.run_id)]
        assert set(summary["stages"]) == set(local_run.STAGES)
        assert (tmp_path / local_run.TINY_MODEL_CACHE / tiny_model.PRETRAINING_FILE).is_file()  # the demo's base is pretrained
        first_gates = {gate["name"]: gate for gate in report["gates"]}
        assert first_gates["champion_pearson_drop"]["passed"] and first_gates["champion_pearson_drop"]["value"] is None  # nothing to beat

        # A week of new teacher scores, then a second run: compared with the first (now in production) on
        # the same holdout, and the production model shadowed against the teachers on the new profiles.
        import psycopg2

        fresh = {f"fresh_{i}": round(i / 29, 2) for i in range(30)}
        with psycopg2.connect(loaded_database) as conn:
            insert_fresh_scores(conn, fresh)
        cache.update(fresh)
        ollama.state.generate_requests.clear()
        second = local_run.run(options, note=lambda message: None)
        second_report = json.loads((tmp_path / "runs" / second.run_id / "report" / "report.json").read_text())
        comparison = second_report["metrics"]["champion"]
        assert second.summary["champion_run"] == result.run_id and comparison["champion"] == "mistral-researcher:latest"
        assert comparison["profiles"] == second_report["metrics"]["holdout_profiles"]
        assert {request["model"] for request in ollama.state.generate_requests} == {"mistral-researcher:latest", model_tag(second.run_id)}
        second_gates = {gate["name"]: gate for gate in second_report["gates"]}
        assert second_gates["champion_pearson_drop"]["value"] == pytest.approx(0.0) and second.promoted  # the same answers: not worse
        shadowed = second.summary["shadow"]
        assert (shadowed["profiles"], shadowed["scored"], shadowed["run_id"]) == (30, 30, result.run_id)
        assert shadowed["pearson"] == pytest.approx(1.0) and shadowed["alert"] is False
        # Both runs are in the history, with what the next week compares against.
        from pipeline import history

        recorded = history.read(str(tmp_path)).runs()
        assert list(recorded) == [result.run_id, second.run_id]
        assert recorded[second.run_id]["validation"]["champion"]["champion"] == "mistral-researcher:latest"
        assert recorded[result.run_id]["dataset"]["teacher_mix"] and recorded[result.run_id]["training"]["steps"]
        assert recorded[second.run_id]["shadow"]["profiles"] == 30 and recorded[result.run_id]["shadow"] is None


def test_a_failed_gate_exits_3_and_keeps_the_current_model(loaded_database, tmp_path, capsys):
    pointer = tmp_path / "runs" / "current.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text('{"run_id": "run-earlier", "model": "earlier.gguf"}\n')
    before = pointer.read_bytes()
    earlier = tmp_path / "runs" / "run-earlier" / "model.gguf"
    earlier.parent.mkdir()
    earlier.write_bytes(b"GGUF earlier")
    code = cli(tmp_path, loaded_database, "--gate", "seed_mean_min=1.0")  # "> 1.0" cannot pass
    assert code == EXIT_GATE_FAILED
    assert pointer.read_bytes() == before
    assert earlier.read_bytes() == b"GGUF earlier"  # a new run never touches an earlier one
    run_dir = next(path for path in (tmp_path / "runs").iterdir() if path.is_dir() and path.name != "run-earlier")
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["outcome"] == "rolled back" and summary["current_run"] == "run-earlier"
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert "seed_mean" in report["failed_gates"]
    champion = {gate["name"]: gate for gate in report["gates"]}["champion_pearson_drop"]
    assert "run-earlier" in champion["detail"] and "not compared" in champion["detail"]  # said, not silently skipped
    captured = capsys.readouterr()
    assert "rolled back" in captured.err
    assert "history: " in captured.out + captured.err and "not compared" in captured.out + captured.err


def test_an_interrupted_run_resumes_where_it_stopped(loaded_database, tmp_path, monkeypatch):
    from pipeline.gguf import convert

    real_export = convert.export_gguf

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "export_gguf", interrupted)
    assert cli(tmp_path, loaded_database, "--run-id", "run-resume", "--gate", "seed_mean_min=1.0") == EXIT_INTERRUPTED
    manifest = tmp_path / "runs" / "run-resume" / "dataset" / "manifest.json"
    adapter = tmp_path / "runs" / "run-resume" / "adapter" / "adapter_model.safetensors"
    stamps = (manifest.stat().st_mtime_ns, adapter.stat().st_mtime_ns)
    assert not (tmp_path / "runs" / "run-resume" / "model.gguf").exists()
    monkeypatch.setattr(convert, "export_gguf", real_export)
    assert cli(tmp_path, loaded_database, "--run-id", "run-resume", "--gate", "seed_mean_min=1.0") == EXIT_GATE_FAILED
    assert (manifest.stat().st_mtime_ns, adapter.stat().st_mtime_ns) == stamps  # reused, not redone
    assert (tmp_path / "runs" / "run-resume" / "report" / "report.json").is_file()


def test_stage_errors_name_the_stage_and_what_to_do(tmp_path, capsys):
    code = cli(tmp_path, "postgresql://nobody@127.0.0.1:9/none")
    assert code == 1
    err = capsys.readouterr().err
    assert "stage dataset failed: DatabaseUnavailable" in err and "--database-url" in err
    assert not (tmp_path / "runs" / "current.json").exists()


def test_gates_default_to_the_specs_success_criteria():
    """The spec: seed-profile mean > 0.75, min > 0.5, Pearson > 0.85, latency < 5 s, valid JSON >= 98 %."""
    gates = local_run.RunOptions().gates
    assert (gates.seed_mean_min, gates.seed_min_min, gates.correlation_min) == (0.75, 0.5, 0.85)
    assert (gates.latency_p50_max_s, gates.latency_p95_max_s, gates.valid_json_rate_min) == (5.0, 5.0, 0.98)


def test_a_tiny_model_cached_before_pretraining_is_rebuilt_pretrained(tmp_path):
    cache = tmp_path / local_run.TINY_MODEL_CACHE
    tiny_model.build_tiny_model(cache, layers=1)  # what an earlier version of the demo cached
    notes: list[str] = []
    base = local_run._base_model(local_run.RunOptions(root=str(tmp_path), progress=False), notes.append)
    assert base == cache and (cache / tiny_model.PRETRAINING_FILE).is_file()
    assert json.loads((cache / "config.json").read_text())["num_hidden_layers"] == 2 and "pretraining" in notes[0]
    assert not cache.with_name(cache.name + ".partial").exists()
    notes.clear()
    assert (
        local_run._base_model(local_run.RunOptions(root=str(tmp_path), progress=False), notes.append) == cache and not notes
    )  # built once
