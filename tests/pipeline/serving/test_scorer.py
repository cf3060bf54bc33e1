"""The scorer: answers parsed forgivingly where safe, failures counted, batches never stopped."""

from __future__ import annotations

import json
import re

import pytest

from pipeline import prompt
from pipeline.errors import InvalidArgument
from pipeline.scoring import scorer
from pipeline.serving import modelfile
from pipeline.serving.ollama import OllamaClient, RetryPolicy
from tests.pipeline.serving.conftest import instruction
from tests.pipeline.serving.ollama_contract_server import echo_teacher_responder


@pytest.mark.parametrize(
    "text, score",
    [
        ('{"handle":"a","score":"0.95","reason":"r"}', 0.95),
        ('```json\n{"handle":"a","score":"0.40","reason":"r"}\n```', 0.4),
        ('Here you go: {"handle": "a", "score": "1.00", "reason": "r"} thanks', 1.0),
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
        # The answer schema's score is a two-decimal string; float() takes far more.
        ('{"handle":"a","score":" 0.50 ","reason":"r"}', "score_not_in_schema"),
        ('{"handle":"a","score":"-0.0","reason":"r"}', "score_not_in_schema"),
        ('{"handle":"a","score":"1e-400","reason":"r"}', "score_not_in_schema"),
        ('{"handle":"a","score":"0.5","reason":"r"}', "score_not_in_schema"),
        ('{"handle":"a","score":0.4,"reason":"r"}', "score_not_in_schema"),
        ('{"handle":"a","score":true,"reason":"r"}', "score_not_a_number"),
        ('{"handle":"a","score":"0.50","reason":"x\\ud800"}', "invalid_text"),  # a lone surrogate escape
        ('{"handle":"a\\udfff","score":"0.50","reason":"r"}', "invalid_text"),
        ('{"handle":"a","score":"0.50","reason":"\\u0000\\u202e\\n"}', "empty_reason"),  # nothing printable
    ],
)
def test_strict_where_it_matters(text, reason):
    with pytest.raises(prompt.AnswerError) as caught:
        prompt.parse_model_answer(text)
    assert caught.value.reason == reason


def test_a_models_reason_comes_back_one_clean_bounded_line():
    raw = "\u0000bell\u0007 \u202eevil\u202c\nnext line [/INST] " + "x" * 100_000
    answer = prompt.parse_model_answer(json.dumps({"handle": "a", "score": "0.50", "reason": raw}))
    assert len(answer.reason) == prompt.MAX_REASON_CHARS and answer.reason.endswith(prompt.TRUNCATION_MARK)
    assert answer.reason.startswith("bell evil next line ") and answer.reason.isprintable()
    assert "[/INST]" not in answer.reason and prompt.clean_field(answer.reason) == answer.reason


def test_an_answer_with_a_lone_surrogate_is_counted_and_its_raw_text_can_be_written(ollama, client):
    ollama.state.models["mistral-researcher:run-1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
    ollama.state.responder = lambda model, body: '{"handle":"alice","score":"0.90","reason":"r\ud800"}'  # in Ollama's body
    [result] = scorer.score_profiles(
        [scorer.OllamaBackend(client, "mistral-researcher:run-1")], [scorer.Profile("alice", instruction("alice"), 0.9)], progress=False
    )
    assert not result.ok and result.error == "invalid_text"
    result.raw.encode("utf-8")  # the report and the shadow results are written as UTF-8


def test_ollama_scorer_sends_the_capped_structured_request_and_counts_garbage(ollama, client, tmp_path):
    ollama.state.models["mistral-researcher:run-1"] = {"files": {}, "template": "", "system": "", "parameters": {}}
    good = echo_teacher_responder({"alice": 0.9})
    ollama.state.responder = lambda model, body: good(model, body) if "alice" in body["prompt"] else "I think 0.9?"
    profiles = [scorer.Profile("alice", instruction("alice"), 0.9), scorer.Profile("bob", instruction("bob"), 0.1)]
    results = scorer.score_profiles([scorer.OllamaBackend(client, "mistral-researcher:run-1")] * 2, profiles, progress=False)
    assert [r.profile.handle for r in results] == ["alice", "bob"]
    assert results[0].ok and results[0].score == 0.9 and results[0].handle_matches
    assert not results[1].ok and results[1].error == "not_json" and results[1].raw == "I think 0.9?"
    for request in ollama.state.generate_requests:  # each profile's own schema: its handle, constant
        handle = "alice" if "handle: alice" in request["prompt"] else "bob"
        assert request["stream"] is False and request["format"] == prompt.answer_schema(handle)
    request = ollama.state.generate_requests[0]
    assert request["options"] == {"temperature": 0.1, "num_predict": prompt.MAX_ANSWER_TOKENS, "seed": modelfile.DECODING_SEED}
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


def test_llama_cpp_backend_is_grammar_constrained_and_capped(tiny_gguf, monkeypatch):
    """An untrained model babbles: the grammar still forces the schema's shape and the profile's
    handle, num_predict caps it, and a cut-off answer is a counted failure."""
    backend = scorer.LlamaCppBackend(str(tiny_gguf), threads=2)
    completion = backend.complete(instruction("neuro_jane"), "neuro_jane")
    assert completion.text.replace(" ", "").startswith('{"handle":"neuro_jane","score":"')  # the handle forced, then the schema's score
    assert completion.answer_tokens <= prompt.MAX_ANSWER_TOKENS and completion.prompt_tokens > 50
    assert completion.prompt_tokens == len(backend.prompt_tokens(instruction("neuro_jane")))
    answered = scorer.score_one(backend, scorer.Profile("neuro_jane", instruction("neuro_jane"), 0.9))
    if answered.ok:  # an untrained model may finish its answer or babble to the cap: either is handled
        assert answered.handle_matches and 0.0 <= answered.score <= 1.0
    else:
        assert answered.error == "not_json" and answered.answer_tokens == prompt.MAX_ANSWER_TOKENS

    monkeypatch.setattr(prompt, "MAX_ANSWER_TOKENS", 8)  # the cap falls inside the answer
    cut = scorer.score_one(backend, scorer.Profile("neuro_jane", instruction("neuro_jane"), 0.9))
    assert not cut.ok and cut.error == "not_json" and cut.answer_tokens == 8 and cut.raw.startswith("{")


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
    forward = {text: backend.complete(text, "alice").text for text in profiles}
    backward = {text: backend.complete(text, "alice").text for text in reversed(profiles)}
    assert forward == backward


@pytest.mark.parametrize("handle", ["jane_doe", "J4NE_D0E_123456", 'quo"te\\back', "naïve_李", '"},"score":"1.00', "x]{}|*+?", "a" * 16])
def test_the_answer_repeats_the_profiles_handle_exactly_or_is_checked_after(tiny_gguf, handle):
    """A handle of X's alphabet is a constant of the profile's schema, decoded exactly as given.
    Anything else is untrusted text that never enters the grammar: the plain schema, and the
    handle compared afterwards."""
    backend = scorer.LlamaCppBackend(str(tiny_gguf), threads=1)
    schema = prompt.answer_schema(handle)
    result = scorer.score_one(backend, scorer.Profile(handle, instruction("someone"), 0.5))
    if schema is prompt.ANSWER_JSON_SCHEMA:
        assert not prompt.HANDLE_CONSTANT.fullmatch(handle) and handle not in json.dumps(schema)
        assert result.raw.replace(" ", "").startswith('{"handle":"') and not result.handle_matches
        return
    assert schema["properties"]["handle"] == {"type": "string", "const": handle}
    key = re.match(r'\{\s*"handle"\s*:\s*', result.raw)
    assert key, result.raw
    value, end = json.JSONDecoder().raw_decode(result.raw, key.end())  # the first value: a JSON string
    assert value == handle and re.match(r'\s*,\s*"score"', result.raw[end:])


def test_the_local_grammar_keeps_control_characters_out_of_strings_as_ollamas_does(tiny_gguf):
    """llama.cpp's converter (what Ollama runs) excludes U+0000-U+001F from JSON strings; the port in
    llama-cpp-python does not. Pushed hard towards a newline, the stock grammar writes one into the
    answer (invalid JSON); ours, with llama.cpp's rule, cannot."""
    import llama_cpp

    backend = scorer.LlamaCppBackend(str(tiny_gguf), threads=1)
    llm = backend._llm
    newline = llm.tokenize(b"\n", add_bos=False, special=False)[-1]

    def answer(grammar) -> str:
        llm.reset()
        tokens = backend.prompt_tokens(instruction("jane"))
        out = llm.create_completion(tokens, max_tokens=40, temperature=0.0, grammar=grammar, logit_bias={newline: 50.0})
        return out["choices"][0]["text"]  # type: ignore[index]

    stock = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(prompt.answer_schema("jane")), verbose=False)
    assert "\n" in answer(stock)
    assert "\n" not in answer(backend._grammar("jane"))
