"""Score profiles with a served model: the spec's ``queryOllama`` in Python, and its llama.cpp twin.

Both backends send the same thing: the profile's instruction under the Ollama TEMPLATE with the
system prompt, temperature 0.1, at most MAX_ANSWER_TOKENS, constrained to the answer's JSON schema
(Ollama's ``format``, llama.cpp's grammar from the same schema). One bad answer never stops a
batch: it becomes a ``ScoreFailure`` that the gates count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, cast

from tqdm import tqdm

from pipeline import prompt, storage
from pipeline.dataset.rows import iter_rows
from pipeline.errors import InvalidArgument
from pipeline.serving import modelfile, template
from pipeline.serving.ollama import ModelNotFound, OllamaClient, OllamaError, OllamaTimeout, OllamaUnavailable


@dataclass(frozen=True)
class Profile:
    """A held-out profile: what the model is asked, and what the teacher answered."""

    handle: str
    instruction: str
    teacher_score: float
    teacher: str = ""  # who gave teacher_score (its row's "Scored by model" line); "" when unknown


@dataclass(frozen=True)
class Completion:
    text: str
    latency_s: float
    prompt_tokens: int
    answer_tokens: int


@dataclass(frozen=True)
class ScoreResult:
    profile: Profile
    latency_s: float
    prompt_tokens: int
    answer_tokens: int
    score: float | None = None  # None: the answer did not meet the contract
    reason: str = ""
    error: str = ""  # a stable code: an AnswerError.reason, or a RequestFailure
    raw: str = ""
    handle_matches: bool = False  # reported, not a gate: the score is about the profile asked

    @property
    def ok(self) -> bool:
        return self.score is not None

    @property
    def answered(self) -> bool:
        """The model answered (valid or not); False for a request that failed on its way."""
        return self.error not in REQUEST_FAILURES


class Backend(Protocol):
    def complete(self, instruction: str, handle: str, seed: int = modelfile.DECODING_SEED) -> Completion: ...


class OllamaBackend:
    """``POST /api/generate`` on a tag created by the lifecycle (its SYSTEM and TEMPLATE apply)."""

    def __init__(self, client: OllamaClient, model: str):
        self.client = client
        self.model = model

    def complete(self, instruction: str, handle: str, seed: int = modelfile.DECODING_SEED) -> Completion:
        started = time.perf_counter()
        body = self.client.generate(
            self.model,
            instruction,
            format=prompt.answer_schema(handle),
            options={"temperature": modelfile.TEMPERATURE, "num_predict": prompt.MAX_ANSWER_TOKENS, "seed": seed},
        )
        return Completion(
            body.get("response", ""),
            time.perf_counter() - started,
            int(body.get("prompt_eval_count") or 0),
            int(body.get("eval_count") or 0),
        )


# llama.cpp's common/json-schema-to-grammar.cpp, PRIMITIVE_RULES["char"]: no `"`, no backslash
# but an escape, no control character (U+0000-U+001F, U+007F).
LLAMA_CPP_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'


class LlamaCppBackend:
    """The GGUF in llama.cpp, prompted exactly as Ollama prompts it. One instance per thread."""

    def __init__(self, gguf_path: str, *, threads: int, seed: int = 0, constrained: bool = True):
        import llama_cpp  # heavy; only the local backend needs it

        if not os.path.isfile(gguf_path):
            raise InvalidArgument(f"no GGUF file at {gguf_path}")
        window = modelfile.REPEAT_LAST_N
        self._llm = llama_cpp.Llama(
            model_path=gguf_path, n_ctx=0, n_threads=threads, n_threads_batch=threads, seed=seed, last_n_tokens_size=window, verbose=False
        )
        n_ctx = self._llm.n_ctx()
        if n_ctx > modelfile.NUM_CTX:  # the same window as Ollama's num_ctx, not the model's maximum
            self._llm = llama_cpp.Llama(
                model_path=gguf_path,
                n_ctx=modelfile.NUM_CTX,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                last_n_tokens_size=window,
                verbose=False,
            )
        # The profile's answer schema as a grammar, as Ollama's ``format`` applies it; unconstrained
        # only to measure what the grammar changes (benchmarks/bench_answer_start.py).
        self._constrained = constrained

    @staticmethod
    def _grammar(handle: str):
        import llama_cpp
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        rules = json_schema_to_gbnf(json.dumps(prompt.answer_schema(handle))).splitlines()
        # llama-cpp-python's port of the converter lets a JSON string hold raw control characters
        # (its char rule is [^"\\]), so an answer with a raw newline in its reason passed its
        # grammar and failed as JSON; llama.cpp's own converter, the one Ollama runs, excludes them.
        if sum(rule.startswith("char ::=") for rule in rules) != 1:  # a port that names it otherwise must not pass unnoticed
            raise RuntimeError("llama-cpp-python's JSON-schema grammar has no single `char` rule to replace with llama.cpp's")
        rules = [LLAMA_CPP_CHAR_RULE if rule.startswith("char ::=") else rule for rule in rules]
        return llama_cpp.LlamaGrammar.from_string("\n".join(rules), verbose=False)

    def prompt_tokens(self, instruction: str) -> list[int]:
        text = template.render(modelfile.OLLAMA_TEMPLATE, {"System": prompt.SYSTEM_PROMPT, "Prompt": instruction})
        # BOS from the GGUF's add_bos_token, special tokens parsed: what Ollama's runner does.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def complete(self, instruction: str, handle: str, seed: int = modelfile.DECODING_SEED) -> Completion:
        tokens = self.prompt_tokens(instruction)
        grammar = self._grammar(handle) if self._constrained else None
        started = time.perf_counter()
        self._llm.reset()
        response = self._llm.create_completion(
            tokens,
            max_tokens=prompt.MAX_ANSWER_TOKENS,
            temperature=modelfile.TEMPERATURE,
            top_k=modelfile.TOP_K,
            top_p=modelfile.TOP_P,
            min_p=modelfile.MIN_P,
            repeat_penalty=modelfile.REPEAT_PENALTY,  # over the last REPEAT_LAST_N tokens (last_n_tokens_size)
            stop=list(modelfile.STOP_SEQUENCES),
            grammar=grammar,
            # Every request samples from its own seed, whichever requests this context served
            # before: left to itself, llama-cpp-python chains each request's seed from the previous
            # one, so an answer depended on how a concurrent evaluation shared the profiles out.
            seed=seed,
        )
        out = cast(dict, response)  # not streamed: one response, not an iterator of chunks
        return Completion(out["choices"][0]["text"], time.perf_counter() - started, len(tokens), int(out["usage"]["completion_tokens"]))


class RequestFailure(str, Enum):
    """Why a request got no answer at all (after the client's retries)."""

    TIMEOUT = "timeout"  # the server did not answer in time
    HOST_UNAVAILABLE = "host_unavailable"  # not reachable, or kept answering 5xx
    MODEL_NOT_FOUND = "model_not_found"  # no such tag on the server
    REQUEST_REFUSED = "request_refused"  # another 4xx


def request_failure(exc: OllamaUnavailable | OllamaError) -> RequestFailure:
    if isinstance(exc, OllamaTimeout):
        return RequestFailure.TIMEOUT
    if isinstance(exc, OllamaUnavailable):
        return RequestFailure.HOST_UNAVAILABLE
    return RequestFailure.MODEL_NOT_FOUND if isinstance(exc, ModelNotFound) else RequestFailure.REQUEST_REFUSED


# The failures of the path to the model, not of the model: retried once more by an evaluation and
# counted by the request-failure gate, never as a score.
TRANSPORT_FAILURES = frozenset({RequestFailure.TIMEOUT.value, RequestFailure.HOST_UNAVAILABLE.value})
REQUEST_FAILURES = frozenset(failure.value for failure in RequestFailure)


def score_one(backend: Backend, profile: Profile, seed: int = modelfile.DECODING_SEED) -> ScoreResult:
    started = time.perf_counter()
    try:
        completion = backend.complete(profile.instruction, profile.handle, seed)
    except (OllamaUnavailable, OllamaError) as exc:
        # No answer after the client's retries: a request failure (the gates count these apart from
        # answers), with the time it took - a slow host's failures must not pull the latencies down.
        return ScoreResult(profile, time.perf_counter() - started, 0, 0, error=request_failure(exc).value, raw=str(exc)[:500])
    common: dict[str, Any] = dict(
        profile=profile,
        latency_s=completion.latency_s,
        prompt_tokens=completion.prompt_tokens,
        answer_tokens=completion.answer_tokens,
        raw=prompt.without_surrogates(completion.text[:2000]),  # the report is written as UTF-8
    )
    try:
        answer = prompt.parse_model_answer(completion.text)
    except prompt.AnswerError as exc:
        return ScoreResult(**common, error=exc.reason)
    matches = answer.handle.strip().lstrip("@").casefold() == profile.handle.casefold()
    return ScoreResult(**common, score=answer.score, reason=answer.reason, handle_matches=matches)


def score_profiles(
    backends: Sequence[Backend],
    profiles: Sequence[Profile],
    *,
    progress: bool = True,
    on_result: Callable[[ScoreResult], None] | None = None,
    description: str = "validate",
    seed: int = modelfile.DECODING_SEED,
) -> list[ScoreResult]:
    """Score every profile, ``len(backends)`` at a time, sampling from ``seed``; results in the
    profiles' order."""
    if not backends:
        raise InvalidArgument("at least one backend is needed")
    idle: queue.Queue[Backend] = queue.Queue()
    for backend in backends:
        idle.put(backend)

    def task(profile: Profile) -> ScoreResult:
        backend = idle.get()
        try:
            return score_one(backend, profile, seed)
        finally:
            idle.put(backend)

    results: list[ScoreResult | None] = [None] * len(profiles)
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=len(backends)) as pool,
        tqdm(total=len(profiles), desc=description, unit=" profiles", disable=not progress) as bar,
    ):
        futures = {pool.submit(task, profile): index for index, profile in enumerate(profiles)}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            bar.update(1)
            if on_result:
                on_result(result)
    return [result for result in results if result is not None]


def read_profiles(uri: str) -> list[Profile]:
    """Profiles from a dataset JSONL file (holdout.jsonl, seeds.jsonl): instruction + teacher answer."""
    with storage.open_read(uri) as lines:
        return [Profile(row.handle, row.instruction, row.score, row.teacher) for row in iter_rows(lines, uri)]


def as_production_asks(profile: Profile) -> Profile:
    """``profile`` with the instruction production sends (its "Scored by model" line names
    prompt.DEFAULT_INFERENCE_TEACHER), still labelled by the teacher who scored it: validation
    measures what production gets, not the model's imitation of each row's own teacher."""
    return dataclasses.replace(profile, instruction=prompt.with_teacher(profile.instruction, prompt.DEFAULT_INFERENCE_TEACHER))


def backends_for(
    *, gguf_path: str | None = None, client: OllamaClient | None = None, model: str | None = None, concurrency: int = 1
) -> tuple[list[Backend], str]:
    """The scoring backends for a GGUF in llama.cpp, or for a tag on an Ollama server; with a name
    for the report. ``concurrency`` llama.cpp contexts, or that many requests in flight to Ollama."""
    if (gguf_path is None) == (client is None):
        raise InvalidArgument("score either a GGUF in llama.cpp or a model on Ollama, not both or neither")
    if client is not None:
        if not model:
            raise InvalidArgument("an Ollama backend needs a model tag (e.g. mistral-researcher:latest)")
        return [OllamaBackend(client, model)] * concurrency, f"ollama {client.base_url}"
    assert gguf_path is not None  # exactly one of the two was given (checked above)
    return list(llama_cpp_backends(gguf_path, concurrency)), "llama.cpp"


def llama_cpp_backends(gguf_path: str, concurrency: int) -> list[LlamaCppBackend]:
    """``concurrency`` independent llama.cpp contexts sharing the machine's cores."""
    threads = max(1, (os.cpu_count() or 1) // concurrency)
    return [LlamaCppBackend(gguf_path, threads=threads) for _ in range(concurrency)]
