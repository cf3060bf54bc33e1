"""The scorer: answers parsed forgivingly where safe, failures counted, batches never stopped."""

from __future__ import annotations

import json

import pytest

from pipeline import prompt
from pipeline.errors import InvalidArgument
from pipeline.scoring import scorer
from pipeline.serving.ollama import OllamaClient, RetryPolicy
from tests.pipeline.serving.conftest import instruction
from tests.pipeline.serving.ollama_contract_server import echo_teacher_responder


@pytest.mark.parametrize(
    "text, score",
    [
        ('{"handle":"a","score":"0.95","reason":"r"}', 0.95),
        ('```json\n{"handle":"a","score":0.4,"reason":"r"}\n```', 0.4),
        ('Here you go: {"handle": "a", "score": "1", "reason": "r"} thanks', 1.0),
    ],
)
def test_forgiving_where_safe(text, score):
    assert prompt.parse_model_answer(text).score == score


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no json here", "not_json"),
        ('{"handle":"a","score":"1.2","reason":"r"}', "score_out_of_range"),
        ('{"handle":"a","score":"high","reason":"r"}', "score_not_a_number"),
        ('{"handle":"","score":"0.5","reason":"r"}', "empty_handle"),
        ('{"handle":"a","score":"0.5"}', "empty_reason"),
        ('{"handle":"a","score":"0.5","reason":"r"', "not_json"),  # cut off at num_predict
    ],
)
def test_strict_where_it_matters(text, reason):
    with pytest.raises(prompt.AnswerError) as caught:
        prompt.parse_model_answer(text)
    assert caught.value.reason == reason


def test_ollama_scorer_sends_the_capped_structured_request_and_counts_garbage(ollama, client, tmp_path):
    ollama.state.models["mistral-researcher:run-1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
    good = echo_teacher_responder({"alice": 0.9})
    ollama.state.responder = lambda model, body: good(model, body) if "alice" in body["prompt"] else "I think 0.9?"
    profiles = [scorer.Profile("alice", instruction("alice"), 0.9), scorer.Profile("bob", instruction("bob"), 0.1)]
    results = scorer.score_profiles([scorer.OllamaBackend(client, "mistral-researcher:run-1")] * 2, profiles, progress=False)
    assert [r.profile.handle for r in results] == ["alice", "bob"]
    assert results[0].ok and results[0].score == 0.9 and results[0].handle_matches
    assert not results[1].ok and results[1].error == "not_json" and results[1].raw == "I think 0.9?"
    request = ollama.state.generate_requests[0]
    assert request["stream"] is False and request["format"] == prompt.ANSWER_JSON_SCHEMA
    assert request["options"] == {"temperature": 0.1, "num_predict": prompt.MAX_ANSWER_TOKENS}
    assert request["prompt"] in (profiles[0].instruction, profiles[1].instruction)


def test_a_failed_request_is_a_counted_failure_not_a_stopped_batch(ollama, tmp_path):
    ollama.state.models["m:1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
    ollama.state.responder = echo_teacher_responder({})
    ollama.fail("POST /api/generate", 500, 500)  # two attempts fail: the first profile gives up
    with OllamaClient(ollama.url, retry=RetryPolicy(attempts=2), sleep=lambda s: None) as client:
        results = scorer.score_profiles(
            [scorer.OllamaBackend(client, "m:1")], [scorer.Profile(h, instruction(h), 0.5) for h in ("a", "b")], progress=False
        )
    assert [r.error for r in results] == ["host_unavailable", ""] and results[1].ok


def test_read_profiles_names_a_bad_line(tmp_path):
    """Profiles are read through the dataset's one row reader: refused as ValidateData refuses them."""
    from pipeline.dataset.rows import MalformedRow

    path = tmp_path / "holdout.jsonl"
    path.write_text(json.dumps({"instruction": "i", "output": prompt.format_answer("a", 0.5, "r")}) + "\nnot json\n")
    with pytest.raises(MalformedRow, match="holdout.jsonl line 1: instruction does not follow the template"):
        scorer.read_profiles(str(path))


def test_llama_cpp_backend_is_grammar_constrained_and_capped(tiny_gguf):
    """An untrained model babbles: the grammar still forces the schema's shape, num_predict caps it,
    and the cut-off answer is a counted failure."""
    backend = scorer.LlamaCppBackend(str(tiny_gguf), threads=2)
    completion = backend.complete(instruction("neuro_jane"))
    assert completion.text.replace(" ", "").startswith('{"handle":"')
    assert completion.answer_tokens <= prompt.MAX_ANSWER_TOKENS and completion.prompt_tokens > 50
    assert completion.prompt_tokens == len(backend.prompt_tokens(instruction("neuro_jane")))
    # Fixed seed, temperature 0.1: the untrained model runs into the cap inside the handle string.
    assert completion.answer_tokens == prompt.MAX_ANSWER_TOKENS
    result = scorer.score_one(backend, scorer.Profile("neuro_jane", instruction("neuro_jane"), 0.9))
    assert not result.ok and result.error == "not_json" and result.raw.startswith("{")


def test_backends_for_picks_one_target(tiny_gguf, client):
    backends, name = scorer.backends_for(client=client, model="m:1", concurrency=3)
    assert len(backends) == 3 and name == f"ollama {client.base_url}"
    backends, name = scorer.backends_for(gguf_path=str(tiny_gguf), concurrency=2)
    assert len(backends) == 2 and name == "llama.cpp" and backends[0] is not backends[1]  # one context each
    for bad in ({}, {"gguf_path": str(tiny_gguf), "client": client, "model": "m"}, {"client": client}):
        with pytest.raises(InvalidArgument):
            scorer.backends_for(**bad)


def test_the_answer_schema_accepts_every_two_decimal_score_and_nothing_else():
    import re

    pattern = re.compile(prompt.ANSWER_JSON_SCHEMA["properties"]["score"]["pattern"])
    assert all(pattern.match(prompt.format_score(i / 100)) for i in range(101))
    assert not any(pattern.match(text) for text in ("1.5", "0.555", ".5", "2", "-0.1", "1.01"))


def test_a_llama_cpp_answer_does_not_depend_on_what_the_context_answered_before(tiny_gguf):
    """Evaluations run several profiles at once, shared out by thread timing: each answer must be the
    same whichever profiles its context served first (the same machine, the same GGUF)."""
    backend = scorer.LlamaCppBackend(str(tiny_gguf), threads=1)
    profiles = [instruction(handle) for handle in ("alice", "bob", "carol")]
    forward = {text: backend.complete(text).text for text in profiles}
    backward = {text: backend.complete(text).text for text in reversed(profiles)}
    assert forward == backward
