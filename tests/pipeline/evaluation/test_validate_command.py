"""`python -m pipeline validate` end to end: a real GGUF in llama.cpp, or a served model over HTTP."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import EXIT_GATE_FAILED, EXIT_OK, main
from pipeline.evaluation import report
from tests.pipeline.serving.conftest import tiny_gguf, tiny_model_dir, write_profiles  # noqa: F401 (fixtures)
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer, echo_teacher_responder

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

# 30 held-out profiles: the least the correlation gate decides on (pipeline.contracts.MIN_HOLDOUT_PROFILES).
HOLDOUT = {f"person_{index:02d}": round(index / 29, 2) for index in range(30)}
SEEDS = {"seed_a": 0.95, "seed_b": 0.9, "seed_c": 0.92, "seed_d": 0.97, "seed_e": 0.9}  # 5: the seed gates' least sample


@pytest.fixture
def sets(tmp_path):
    return (write_profiles(tmp_path / "holdout.jsonl", HOLDOUT), write_profiles(tmp_path / "seeds.jsonl", SEEDS))


def read_report(out):
    return json.loads((out / report.REPORT_JSON).read_text())


def test_gguf_in_llama_cpp_writes_a_report_whose_decision_follows_its_metrics(tiny_gguf, sets, tmp_path):
    """An untrained model's scores are whatever its random weights give (CPU-dependent); the verdict
    is made certain by a latency threshold no model meets, and each gate must agree with its numbers."""
    holdout, seeds = sets
    out = tmp_path / "report"
    code = main(
        [
            "validate",
            "--gguf",
            str(tiny_gguf),
            "--holdout",
            str(holdout),
            "--seeds",
            str(seeds),
            "--out",
            str(out),
            "--concurrency",
            "2",
            "--no-progress",
            "--gate",
            "latency_p95_max_s=1e-9",
        ]
    )
    written = read_report(out)
    assert code == EXIT_GATE_FAILED and written["passed"] is False and "latency_p95_s" in written["failed_gates"]
    assert written["passed"] == all(gate["passed"] for gate in written["gates"])
    assert len(written["profiles"]) == len(HOLDOUT) + len(SEEDS)  # every profile reported, none dropped
    metrics = written["metrics"]
    assert metrics["valid_answers"] == sum(row["valid"] for row in written["profiles"])
    for gate in written["gates"]:  # each verdict agrees with its value and threshold
        if gate["value"] is not None:
            op = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__}[gate["comparison"]]
            assert gate["passed"] == op(float(gate["value"]), float(gate["threshold"]))
    assert metrics["prompt_tokens_mean"] > 50 and metrics["answer_tokens_max"] <= 256
    for name in (report.SCATTER_PNG, report.HISTOGRAM_PNG, report.LATENCY_PNG):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({report.SCATTER_PNG})" in (out / report.REPORT_MD).read_text()


def test_a_served_model_that_agrees_with_the_teacher_passes(sets, tmp_path):
    holdout, seeds = sets
    with OllamaContractServer() as server:
        server.state.models["mistral-researcher:run-1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
        server.state.responder = echo_teacher_responder({**HOLDOUT, **SEEDS})
        code = main(
            [
                "validate",
                "--ollama-url",
                server.url,
                "--model",
                "mistral-researcher:run-1",
                "--holdout",
                str(holdout),
                "--seeds",
                str(seeds),
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
    written = read_report(tmp_path / "r")
    assert code == EXIT_OK and written["passed"] is True and written["metrics"]["pearson"] == pytest.approx(1.0)


def test_a_failing_gate_exits_3_and_says_which(sets, tmp_path, capsys):
    holdout, seeds = sets
    with OllamaContractServer() as server:
        server.state.models["m:1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
        server.state.responder = echo_teacher_responder({**HOLDOUT, "seed_a": 0.4, "seed_b": 0.9})
        code = main(
            [
                "validate",
                "--ollama-url",
                server.url,
                "--model",
                "m:1",
                "--holdout",
                str(holdout),
                "--seeds",
                str(seeds),
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
    assert code == EXIT_GATE_FAILED
    assert read_report(tmp_path / "r")["failed_gates"] == ["seed_mean", "seed_min"]
    assert "failed gates: seed_mean, seed_min" in capsys.readouterr().err


def test_bad_invocations_are_named(sets, tmp_path, capsys):
    holdout, seeds = sets
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert (
        main(["validate", "--ollama-url", "http://x", "--holdout", str(holdout), "--seeds", str(seeds), "--out", str(tmp_path / "r")]) == 1
    )
    assert "needs a model tag" in capsys.readouterr().err
    assert (
        main(
            [
                "validate",
                "--gguf",
                str(tmp_path / "none.gguf"),
                "--holdout",
                str(holdout),
                "--seeds",
                str(seeds),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "no GGUF file" in capsys.readouterr().err
    assert (
        main(
            [
                "validate",
                "--ollama-url",
                "http://127.0.0.1:9",
                "--model",
                "m:1",
                "--holdout",
                str(empty),
                "--seeds",
                str(seeds),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "EmptyEvaluationSet" in capsys.readouterr().err
    assert (
        main(
            [
                "validate",
                "--ollama-url",
                "http://x",
                "--model",
                "m",
                "--gate",
                "nope=1",
                "--holdout",
                str(holdout),
                "--seeds",
                str(seeds),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "unknown gate" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
