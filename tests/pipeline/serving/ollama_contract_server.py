"""CONTRACT TEST DOUBLE of the Ollama REST API — Ollama itself cannot run here (no GPU, no binary).

Implements the documented endpoints the pipeline uses, with their status codes and bodies
(docs/api.md of ollama/ollama): HEAD/POST /api/blobs/:digest (digest checked), POST /api/create
with ``files`` (blobs must exist), POST /api/copy, DELETE /api/delete, GET /api/tags, POST /api/show,
POST /api/generate (non-streaming; the answer comes from a responder the test sets), GET /api/version.
It can fail on demand: HTTP errors for the next N calls of an endpoint, or dropped connections.
What it proves: our client speaks the documented protocol and our lifecycle survives failures.
What it cannot prove: that Ollama loads the GGUF — llama.cpp tests prove the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BLOB = re.compile(r"^/api/blobs/(sha256:[0-9a-f]{64})$")
Responder = Callable[[str, dict[str, Any]], str]  # (model, request body) -> response text


def echo_teacher_responder(scores: dict[str, float]) -> Responder:
    """Answer with the score the test assigned to the handle in the prompt."""

    def respond(model: str, body: dict[str, Any]) -> str:
        handle = re.search(r"^handle: (.*)$", body["prompt"], re.M).group(1)
        return json.dumps({"handle": handle, "score": f"{scores.get(handle, 0.5):.2f}", "reason": "contract-test answer"})

    return respond


@dataclass
class OllamaState:
    blobs: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> manifest
    calls: Counter = field(default_factory=Counter)
    failures: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # "METHOD /path" -> statuses
    drops: Counter = field(default_factory=Counter)
    generate_requests: list[dict[str, Any]] = field(default_factory=list)
    responder: Responder = field(default=lambda model, body: "{}")
    # Not Ollama: what a broken proxy or a compromised host in front of it answers to a generate,
    # (content type, raw body) with status 200, for the requests it returns a value for.
    impostor: Callable[[dict[str, Any]], tuple[str, bytes] | None] | None = None

    @staticmethod
    def digest(manifest: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _normalise(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: OllamaState
    lock: threading.Lock

    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reply_raw(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        key = f"{self.command} {BLOB.sub('/api/blobs/:digest', self.path) if BLOB.match(self.path) else self.path}"
        raw = self._body() if self.command in ("POST", "DELETE") else b""
        with self.lock:
            self.state.calls[key] += 1
            if self.state.drops[key] > 0:
                self.state.drops[key] -= 1
                self.close_connection = True
                self.connection.close()  # the client sees a transport error
                return
            if self.state.failures[key]:
                self._reply(self.state.failures[key].pop(0), {"error": "injected failure"})
                return
        try:
            self._route(key, raw)
        except (ValueError, KeyError) as exc:
            self._reply(400, {"error": f"bad request: {exc}"})

    do_GET = do_POST = do_HEAD = do_DELETE = _dispatch

    def _route(self, key: str, raw: bytes) -> None:
        state = self.state
        if key == "GET /api/version":
            return self._reply(200, {"version": "0.0.0-contract"})
        if key in ("HEAD /api/blobs/:digest", "POST /api/blobs/:digest"):
            digest = BLOB.match(self.path).group(1)
            if self.command == "HEAD":
                return self._reply(200 if digest in state.blobs else 404)
            if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
                return self._reply(400, {"error": "digest mismatch"})
            with self.lock:
                state.blobs[digest] = raw
            return self._reply(201)
        body = json.loads(raw or b"{}")
        if key == "POST /api/create":
            files = body["files"]
            missing = [digest for digest in files.values() if digest not in state.blobs]
            if missing:
                return self._reply(400, {"error": f"blob {missing[0]} not found"})
            manifest = {
                "files": files,
                "template": body.get("template", ""),
                "system": body.get("system", ""),
                "parameters": body.get("parameters", {}),
            }
            with self.lock:
                state.models[_normalise(body["model"])] = manifest
            return self._reply(200, {"status": "success"})
        if key == "POST /api/copy":
            source, destination = _normalise(body["source"]), _normalise(body["destination"])
            with self.lock:
                if source not in state.models:
                    return self._reply(404, {"error": f"model '{body['source']}' not found"})
                state.models[destination] = dict(state.models[source])
            return self._reply(200)
        if key == "DELETE /api/delete":
            with self.lock:
                if state.models.pop(_normalise(body["model"]), None) is None:
                    return self._reply(404, {"error": f"model '{body['model']}' not found"})
            return self._reply(200)
        if key == "GET /api/tags":
            return self._reply(
                200,
                {
                    "models": [
                        {"name": name, "model": name, "digest": state.digest(manifest)} for name, manifest in sorted(state.models.items())
                    ]
                },
            )
        if key == "POST /api/show":
            manifest = state.models.get(_normalise(body["model"]))
            if manifest is None:
                return self._reply(404, {"error": f"model '{body['model']}' not found"})
            return self._reply(
                200,
                {
                    "template": manifest["template"],
                    "system": manifest["system"],
                    "parameters": manifest["parameters"],
                    "details": {"format": "gguf"},
                },
            )
        if key == "POST /api/generate":
            name = _normalise(body["model"])
            if name not in state.models:
                return self._reply(404, {"error": f"model '{body['model']}' not found"})
            if body.get("stream", True) is not False:
                return self._reply(400, {"error": "this double answers stream: false only"})
            with self.lock:
                state.generate_requests.append(body)
            forged = state.impostor(body) if state.impostor else None
            if forged is not None:
                return self._reply_raw(200, *forged)
            text = state.responder(name, body)
            return self._reply(
                200,
                {
                    "model": body["model"],
                    "response": text,
                    "done": True,
                    "prompt_eval_count": len(body["prompt"]) // 4,
                    "eval_count": len(text) // 4,
                    "total_duration": 1,
                },
            )
        return self._reply(404, {"error": f"no route {key}"})


class OllamaContractServer:
    def __init__(self) -> None:
        self.state = OllamaState()
        handler = type("Handler", (_Handler,), {"state": self.state, "lock": threading.Lock()})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, endpoint: str, *statuses: int) -> None:
        """The next calls of ``endpoint`` ("POST /api/copy") answer these HTTP statuses, in order."""
        self.state.failures[endpoint].extend(statuses)

    def drop(self, endpoint: str, times: int) -> None:
        """The next ``times`` calls of ``endpoint`` get their connection closed without an answer."""
        self.state.drops[endpoint] += times

    def __enter__(self) -> OllamaContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
