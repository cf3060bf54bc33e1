"""A small client for the Ollama REST endpoints the pipeline uses, with retries.

Plain HTTP (httpx) rather than the official ``ollama`` package: its ``create_blob`` takes a local
path, and DeployModel streams a multi-GB GGUF from S3 straight into ``POST /api/blobs/<digest>``
without a local copy. The endpoints and bodies follow Ollama's API documentation (docs/api.md).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.errors import PipelineError

DEFAULT_URL = "http://127.0.0.1:11434"
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


class OllamaUnavailable(PipelineError):
    """Ollama could not be reached (or kept answering 5xx) after the retries. Transient for the
    state machine: it retries, then rolls back."""


class OllamaTimeout(OllamaUnavailable):
    """Ollama did not answer within the request timeout, on the last attempt."""


class OllamaError(PipelineError):
    """Ollama refused a request (4xx other than a missing model, or an error body)."""


class ModelNotFound(OllamaError):
    """The named model (tag) does not exist on this Ollama server."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delays(self) -> Iterator[float]:
        """Exponential backoff with full jitter, ``attempts - 1`` waits."""
        for attempt in range(self.attempts - 1):
            yield random.uniform(0, min(self.max_delay_s, self.first_delay_s * 2**attempt))


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    # Loading a 4 GB model into GPU memory on first use takes tens of seconds.
    request_s: float = 120.0
    upload_s: float = 1800.0


class OllamaClient:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeouts: Timeouts = Timeouts(),
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
    ):
        """``deadline``: a time.monotonic() after which no attempt starts and none runs on (a
        Lambda's remaining time): what is left fails as OllamaTimeout instead of the retries of a
        slow host running the caller into its own timeout."""
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.timeouts = timeouts
        self.deadline = deadline
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeouts.request_s, connect=timeouts.connect_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _with_retries(self, what: str, call: Callable[[httpx.Timeout], httpx.Response], timeout_s: float) -> httpx.Response:
        """Retry connection errors, timeouts and 5xx; return the first other answer. Each attempt's
        timeout and each wait are cut to the deadline, if any."""
        delays = self.retry.delays()
        problem = "no attempt made"
        while True:
            left = self._seconds_left()
            if left is not None and left <= 0:
                raise OllamaTimeout(f"{what} at {self.base_url}: the caller's deadline passed ({problem})")
            attempt_s = timeout_s if left is None else min(timeout_s, left)
            timed_out = False
            try:
                response = call(httpx.Timeout(attempt_s, connect=min(self.timeouts.connect_s, attempt_s)))
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}: {_error_text(response)}"
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                problem = f"{type(exc).__name__}: {exc}"
                timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout)
            delay = next(delays, None)
            if delay is None:
                error = OllamaTimeout if timed_out else OllamaUnavailable
                raise error(f"{what} at {self.base_url} failed after {self.retry.attempts} attempts: {problem}")
            left = self._seconds_left()
            self._sleep(delay if left is None else max(0.0, min(delay, left)))

    def _request(
        self, method: str, path: str, *, json: Any = None, missing_ok: bool = False, timeout: float | None = None
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {"json": json} if json is not None else {}
        response = self._with_retries(
            f"{method} {path}",
            lambda attempt: self._http.request(method, path, timeout=attempt, **kwargs),
            timeout if timeout is not None else self.timeouts.request_s,
        )
        if response.status_code == 404 and not missing_ok:
            raise ModelNotFound(f"{method} {path}: {_error_text(response)}")
        if response.status_code >= 400 and response.status_code != 404:
            raise OllamaError(f"{method} {path}: HTTP {response.status_code}: {_error_text(response)}")
        return response

    # -- endpoints -----------------------------------------------------------------------------

    def version(self) -> str:
        return self._request("GET", "/api/version").json().get("version", "")

    def has_blob(self, sha256: str) -> bool:
        return self._request("HEAD", f"/api/blobs/sha256:{sha256}", missing_ok=True).status_code == 200

    def push_blob(self, sha256: str, open_stream: Callable[[], Any]) -> None:
        """Upload a blob from a fresh stream (re-opened on each retry); Ollama checks the digest."""

        def chunks() -> Iterable[bytes]:
            with open_stream() as stream:
                while chunk := stream.read(UPLOAD_CHUNK_BYTES):
                    yield chunk

        path = f"/api/blobs/sha256:{sha256}"
        response = self._with_retries(
            f"POST {path}", lambda attempt: self._http.post(path, content=chunks(), timeout=attempt), self.timeouts.upload_s
        )
        if response.status_code >= 400:
            raise OllamaError(f"upload of blob sha256:{sha256[:12]}… refused: HTTP {response.status_code}: {_error_text(response)}")

    def create(self, request: dict[str, Any]) -> None:
        body = self._request("POST", "/api/create", json=request, timeout=self.timeouts.upload_s).json()
        if body.get("error") or body.get("status") != "success":
            raise OllamaError(f"create {request.get('model')}: {body.get('error') or body}")

    def copy(self, source: str, destination: str) -> None:
        self._request("POST", "/api/copy", json={"source": source, "destination": destination})

    def delete(self, model: str) -> bool:
        """Delete a tag; False when it did not exist (deleting twice is not an error)."""
        return self._request("DELETE", "/api/delete", json={"model": model}, missing_ok=True).status_code == 200

    def tags(self) -> dict[str, str]:
        """Every local model name -> its manifest digest (MalformedResponse for a body that is not
        Ollama's ListResponse)."""
        return tags_response(self._request("GET", "/api/tags"))

    def show(self, model: str) -> dict[str, Any]:
        return self._request("POST", "/api/show", json={"model": model}).json()

    def generate(
        self, model: str, prompt: str, *, options: dict[str, Any], format: Any = None, system: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False, "options": options}
        if format is not None:
            body["format"] = format
        if system is not None:
            body["system"] = system
        return generate_response(self._request("POST", "/api/generate", json=body))


class MalformedResponse(OllamaError):
    """A 200 whose body is not Ollama's answer (an HTML page of a proxy, a list, a count that is no
    number): refused for that request, never a crash of the batch."""


GENERATE_COUNTS = ("prompt_eval_count", "eval_count")


def generate_response(response: httpx.Response) -> dict[str, Any]:
    """The body of ``POST /api/generate`` (stream false) as Ollama's api/types.go GenerateResponse
    has it: an object whose ``response`` is a string and whose token counts, when present, are
    non-negative integers."""
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(
            f"POST /api/generate answered {response.headers.get('content-type', 'no content type')}, not JSON"
        ) from None
    if not isinstance(body, dict):
        raise MalformedResponse(f"POST /api/generate answered a JSON {type(body).__name__}, not an object")
    if not isinstance(body.get("response"), str):
        raise MalformedResponse(f"POST /api/generate answered no text: response is {type(body.get('response')).__name__}")
    for name in GENERATE_COUNTS:
        count = body.get(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise MalformedResponse(f"POST /api/generate answered {name} {str(count)[:40]!r}, not a count")
    return body


def tags_response(response: httpx.Response) -> dict[str, str]:
    """The body of ``GET /api/tags`` as api/types.go ListResponse has it: ``models``, a list of
    objects whose ``name`` and ``digest`` are strings (a missing digest reads as "")."""
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(f"GET /api/tags answered {response.headers.get('content-type', 'no content type')}, not JSON") from None
    models = body.get("models") if isinstance(body, dict) else None
    if models is None and isinstance(body, dict):
        models = []  # an empty server may omit the list
    if not isinstance(models, list) or not all(
        isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("digest", ""), str) for model in models
    ):
        raise MalformedResponse("GET /api/tags answered no list of models with a name and a digest")
    return {model["name"]: model.get("digest", "") for model in models}


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return response.text[:200] or response.reason_phrase
