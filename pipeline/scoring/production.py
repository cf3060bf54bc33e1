"""Score profiles with the model in production: the source design's ``queryOllama`` (its
``lambdas/llm-scorer/src/ollama.ts``) in Python, for the orchestrator's scorer.

A request is a row of the source table's profile columns (PROFILE_COLUMNS). It becomes the
instruction exactly as a training row's does (``records.fill_instruction``: the same cleaning,
limits and template), with the teacher line the model saw most in training
(``prompt.DEFAULT_INFERENCE_TEACHER``); the answer is parsed by the same rules as at validation
(``prompt.parse_model_answer``). Every profile gets a result: a score with its reason (route
``custom``), or route ``teacher`` - outside the custom model's share (routing.py), or a named
failure the orchestrator falls back from - never a guessed score.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np

from pipeline import prompt
from pipeline.dataset import records
from pipeline.scoring import routing, scorer
from pipeline.serving import host
from pipeline.serving.ollama import OllamaClient, OllamaError, OllamaUnavailable

# The source table's columns a request carries (user_profiles; docs/stages.md). twitter_id and
# username are required; the others may be null or absent.
PROFILE_COLUMNS = ("twitter_id", "username", "display_name", "bio", "created_at", "follower_count", "location")
REQUIRED_COLUMNS = ("twitter_id", "username")
MAX_TWITTER_ID_CHARS = 64
# A Twitter id is a 64-bit number: sent as a string of digits or a JSON integer, echoed exactly as
# sent (never normalised: "042", 1e300 -> "1e+300", " 42 " -> "42" would name another profile).
TWITTER_ID_DIGITS = re.compile(f"[0-9]{{1,{MAX_TWITTER_ID_CHARS}}}")
TwitterId = str | int


class Failure(str, Enum):
    """Why a profile has no score. The orchestrator scores these profiles another way (Claude)."""

    INVALID_PROFILE = "invalid_profile"  # the request row itself is unusable (named in detail)
    HOST_STARTING = "host_starting"  # the host was stopped and is starting: not a failure, ask again soon
    HOST_UNAVAILABLE = "host_unavailable"  # Ollama not reachable, or kept failing, after retries
    TIMEOUT = "timeout"  # no answer within the request timeout
    MODEL_NOT_FOUND = "model_not_found"  # the production tag is not on the host
    REQUEST_REFUSED = "request_refused"
    INVALID_ANSWER = "invalid_answer"  # the model answered outside the schema (detail: the code)
    MODEL_MISMATCH = "model_mismatch"  # the production tag is not the model the pointer promoted


_REQUEST_FAILURES = {
    scorer.RequestFailure.TIMEOUT.value: Failure.TIMEOUT,
    scorer.RequestFailure.HOST_UNAVAILABLE.value: Failure.HOST_UNAVAILABLE,
    scorer.RequestFailure.MODEL_NOT_FOUND.value: Failure.MODEL_NOT_FOUND,
    scorer.RequestFailure.REQUEST_REFUSED.value: Failure.REQUEST_REFUSED,
}


# The detail of an invalid answer whose handle is not the profile's (the grammar pins the handle only
# for X's alphabet: prompt.answer_schema).
WRONG_HANDLE = "wrong_handle"


class InvalidProfile(ValueError):
    """A request row that cannot be scored; the message names the field."""


@dataclass(frozen=True)
class ScoringRequest:
    twitter_id: TwitterId  # as sent
    handle: str
    instruction: str


@dataclass(frozen=True)
class ProfileScore:
    """One profile's result. With a score its route is ``custom``; without one it is ``teacher``
    (the orchestrator asks Claude), and ``failure`` says why unless the profile was outside the share."""

    twitter_id: TwitterId  # exactly as the request sent it
    handle: str
    score: float | None
    reason: str
    latency_s: float
    model: str  # the tag that answered (or was asked)
    run_id: str | None  # the pipeline run that produced that model, when known
    failure: str | None = None  # a Failure value
    detail: str = ""  # for a failure: what went wrong, one line
    # In the audit slice (routing.in_audit_slice): the orchestrator also asks its teacher, whose
    # label keeps monitoring and training data coming at any customModelShare.
    audit: bool = False

    @property
    def route(self) -> routing.Route:
        return routing.Route.CUSTOM if self.score is not None else routing.Route.TEACHER

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "route": self.route.value}


def _outside_share(share: float) -> str:
    return f"outside the custom model's share ({share:g} %): the teacher scores it"


def valid_twitter_id(value: Any) -> TwitterId | None:
    """``value`` when it is a twitter id as the table holds one (1-64 digits, or a non-negative
    JSON integer of at most 64 digits), else None."""
    if isinstance(value, str):
        return value if TWITTER_ID_DIGITS.fullmatch(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and TWITTER_ID_DIGITS.fullmatch(str(value)):
        return value
    return None


def _text(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidProfile(f"{column} must be text or a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidProfile(f"{column} must be a finite number, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class UnreadableRow:
    """A line of a request file that is not a JSON object: kept in place so that it gets its result."""

    detail: str


def read_rows(lines: Iterable[bytes | str]) -> list[Any]:
    """A JSONL request file's rows; a line that is not JSON becomes an UnreadableRow (blank lines skipped)."""
    rows: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            rows.append(UnreadableRow(f"line {number}: not JSON: {exc}"))
    return rows


def scoring_request(row: Any) -> ScoringRequest:
    """A request row -> the instruction the model is asked; InvalidProfile naming what is wrong."""
    if isinstance(row, UnreadableRow):
        raise InvalidProfile(row.detail)
    if not isinstance(row, Mapping):
        raise InvalidProfile(f"a profile must be an object of the table's columns, got {type(row).__name__}")
    unknown = sorted(set(row) - set(PROFILE_COLUMNS))
    if unknown:
        raise InvalidProfile(f"unknown column(s) {', '.join(map(str, unknown))}; known: {', '.join(PROFILE_COLUMNS)}")
    twitter_id = valid_twitter_id(row.get("twitter_id"))
    if twitter_id is None:
        raise InvalidProfile(f"twitter_id must be a string of 1-{MAX_TWITTER_ID_CHARS} digits or a non-negative integer")
    values = {column: _text(row, column) for column in PROFILE_COLUMNS if column != "twitter_id"}
    handle, rejected = records.clean_handle(values["username"])
    if rejected is records.RejectReason.EMPTY_HANDLE:
        raise InvalidProfile("username is empty")
    if rejected is records.RejectReason.HANDLE_TOO_LONG:
        raise InvalidProfile(f"username has {len(handle)} characters, at most {prompt.MAX_HANDLE_CHARS}")
    instruction, _ = records.fill_instruction(
        handle,
        values["display_name"],
        values["bio"],
        values["created_at"],
        values["follower_count"],
        values["location"],
        prompt.DEFAULT_INFERENCE_TEACHER,
    )
    return ScoringRequest(twitter_id, handle, instruction)


def _row_identity(row: Any) -> tuple[TwitterId, str]:
    """What can be said about a row that is not a valid request, for its failure record: its
    twitter_id when that is valid (as sent), else "" - never an altered id."""
    if not isinstance(row, Mapping):
        return "", ""
    twitter_id = valid_twitter_id(row.get("twitter_id"))
    return "" if twitter_id is None else twitter_id, prompt.clean_field(row.get("username"))[: prompt.MAX_HANDLE_CHARS]


def _result(request: ScoringRequest, result: scorer.ScoreResult, model: str, run_id: str | None) -> ProfileScore:
    latency = round(result.latency_s, 4)
    if result.ok and result.handle_matches:
        return ProfileScore(request.twitter_id, request.handle, result.score, result.reason, latency, model, run_id)
    if result.ok:  # a score about another profile is no score of this one
        return ProfileScore(
            request.twitter_id, request.handle, None, "", latency, model, run_id, Failure.INVALID_ANSWER.value, WRONG_HANDLE
        )
    failure = _REQUEST_FAILURES.get(result.error, Failure.INVALID_ANSWER)
    detail = result.error if failure is Failure.INVALID_ANSWER else result.raw.splitlines()[0] if result.raw else failure.value
    return ProfileScore(request.twitter_id, request.handle, None, "", latency, model, run_id, failure.value, detail[:300])


@dataclass
class _Plan:
    """Rows sorted out before any model is asked: results for the invalid and the routed-out rows,
    and the requests the custom model scores (with their row index)."""

    results: list[ProfileScore | None]
    requests: list[tuple[int, ScoringRequest]]


def _plan(rows: Sequence[Any], *, model: str, run_id: str | None, share: float) -> _Plan:
    plan = _Plan([None] * len(rows), [])
    for index, row in enumerate(rows):
        try:
            request = scoring_request(row)
        except InvalidProfile as exc:
            twitter_id, handle = _row_identity(row)
            plan.results[index] = ProfileScore(twitter_id, handle, None, "", 0.0, model, run_id, Failure.INVALID_PROFILE.value, str(exc))
            continue
        if routing.routed_to_custom(str(request.twitter_id), share):
            plan.requests.append((index, request))
        else:
            plan.results[index] = ProfileScore(
                request.twitter_id, request.handle, None, "", 0.0, model, run_id, None, _outside_share(share)
            )
    return plan


def score_profiles(
    rows: Sequence[Any],
    backends: Sequence[scorer.Backend],
    *,
    model: str,
    run_id: str | None = None,
    share: float = routing.FULL_SHARE,
    progress: bool = False,
    audit_share: float = 0.0,
) -> list[ProfileScore]:
    """Score request rows (PROFILE_COLUMNS) with ``backends`` (Ollama on the production tag, or a
    GGUF in llama.cpp), ``len(backends)`` at a time; only the rows within ``share`` percent
    (routing.py), the others answer route teacher. One result per row, in the rows' order; a
    routed row within ``audit_share`` percent of the audit hash is flagged ``audit``."""
    plan = _plan(rows, model=model, run_id=run_id, share=routing.check_share(share))
    if plan.requests:
        profiles = [scorer.Profile(request.handle, request.instruction, math.nan) for _, request in plan.requests]
        scored = scorer.score_profiles(backends, profiles, progress=progress, description="score")  # in the profiles' order
        for (index, request), result in zip(plan.requests, scored, strict=True):
            plan.results[index] = _audited(_result(request, result, model, run_id), audit_share)
    return [result for result in plan.results if result is not None]


def _audited(result: ProfileScore, audit_share: float) -> ProfileScore:
    """``result`` of a routed profile, flagged when the profile is in the audit slice."""
    return dataclasses.replace(result, audit=True) if routing.in_audit_slice(str(result.twitter_id), audit_share) else result


def score_batch(
    rows: Sequence[Any],
    client: OllamaClient,
    *,
    model: str,
    run_id: str | None,
    concurrency: int,
    share: float = routing.FULL_SHARE,
    wake: Callable[[], host.HostStatus] | None = None,
    expected_digest: str | None = None,
    audit_share: float = 0.0,
) -> list[ProfileScore]:
    """A batch on the Ollama host, woken first when ``wake`` is given (the host on demand) and some
    row is the custom model's to score: a host still starting answers ``host_starting`` for those
    rows, one that cannot be used ``host_unavailable`` - results with route teacher, not errors, so
    that the orchestrator scores them with its teacher. A batch wholly outside the share never
    wakes the host. With ``expected_digest`` (the pointer's manifest digest of what was promoted)
    the tag is checked before the first request: another model under that name answers
    ``model_mismatch`` for every routed row, never a score."""
    share = routing.check_share(share)
    if not _plan(rows, model=model, run_id=run_id, share=share).requests:
        return score_profiles(rows, [], model=model, run_id=run_id, share=share)
    if wake:
        try:
            status = wake()
        except host.HostUnavailable as exc:
            return not_scored(
                rows, model=model, run_id=run_id, failure=Failure.HOST_UNAVAILABLE, detail=str(exc), share=share, audit_share=audit_share
            )
        if status is host.HostStatus.STARTING:
            detail = "the Ollama host was stopped and is starting: send the batch again in a few minutes"
            return not_scored(
                rows, model=model, run_id=run_id, failure=Failure.HOST_STARTING, detail=detail, share=share, audit_share=audit_share
            )
    if expected_digest:
        refused = _unverified_model(client, model, expected_digest)
        if refused:
            return not_scored(rows, model=model, run_id=run_id, failure=refused[0], detail=refused[1], share=share, audit_share=audit_share)
    backends = [scorer.OllamaBackend(client, model)] * concurrency
    return score_profiles(rows, backends, model=model, run_id=run_id, share=share, audit_share=audit_share)


def _unverified_model(client: OllamaClient, model: str, expected_digest: str) -> tuple[Failure, str] | None:
    """Why ``model`` on the host cannot be taken for the promoted one, or None when its manifest
    digest is ``expected_digest``. Ollama has no API to generate by digest, so the tag is checked
    once per batch: a tag replaced in the seconds of a batch is seen by the next one."""
    try:
        tags = client.tags()
    except OllamaUnavailable as exc:
        return Failure.HOST_UNAVAILABLE, str(exc)[:300]
    except OllamaError as exc:
        return Failure.REQUEST_REFUSED, str(exc)[:300]
    if model not in tags:
        return Failure.MODEL_NOT_FOUND, f"{model} is not on the Ollama host"
    if tags[model] != expected_digest:
        shown = prompt.clean_field(tags[model])[:19]
        return Failure.MODEL_MISMATCH, f"{model} has manifest {shown}, the pointer promoted {expected_digest[:19]}: not scored"
    return None


def not_scored(
    rows: Sequence[Any],
    *,
    model: str,
    run_id: str | None,
    failure: Failure,
    detail: str,
    share: float = routing.FULL_SHARE,
    audit_share: float = 0.0,
) -> list[ProfileScore]:
    """One result per row without asking the model (the host is starting): rows that are not valid
    requests still say why they never could be, rows outside the share say so."""
    plan = _plan(rows, model=model, run_id=run_id, share=share)
    for index, request in plan.requests:
        result = ProfileScore(request.twitter_id, request.handle, None, "", 0.0, model, run_id, failure.value, detail)
        plan.results[index] = _audited(result, audit_share)
    return [result for result in plan.results if result is not None]


@dataclass(frozen=True)
class Summary:
    profiles: int
    scored: int  # route custom: the custom model's scores
    failed: dict[str, int]  # fallbacks to the teacher, by reason
    latency_p50_s: float | None
    latency_p95_s: float | None
    outside_share: int = 0  # route teacher by the share, not by a failure
    share: float = routing.FULL_SHARE  # the customModelShare in force
    audited: int = 0  # routed profiles flagged for the teacher too (the audit slice)

    @property
    def to_teacher(self) -> int:
        return self.profiles - self.scored

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "to_teacher": self.to_teacher}


def summarize(results: Iterable[ProfileScore], share: float = routing.FULL_SHARE) -> Summary:
    results = list(results)
    failed: dict[str, int] = {}
    for result in results:
        if result.failure:
            failed[result.failure] = failed.get(result.failure, 0) + 1
    unsent = (Failure.INVALID_PROFILE.value, Failure.HOST_STARTING.value)
    asked = [result for result in results if result.failure is not None or result.score is not None]
    latencies = [result.latency_s for result in asked if result.failure not in unsent]
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95)) if latencies else (None, None)
    outside = len(results) - len(asked)
    audited = sum(result.audit for result in results)
    return Summary(len(results), sum(result.score is not None for result in results), failed, p50, p95, outside, share, audited)
