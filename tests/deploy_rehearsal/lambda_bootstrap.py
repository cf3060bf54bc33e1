"""The Lambda runtime's side of one invocation, for the deploy rehearsal: run in a fresh
interpreter started with -I -S (no site-packages, no PYTHON* variables), it puts on sys.path what
the python3.12 runtime puts there and nothing else — the function's code, the layer, the runtime's
own boto3 — imports the handler named by the function's `handler` setting, calls it once and writes
what Lambda would answer: the result, or {errorType, errorMessage} (the exception's class name, as
the runtime reports it and Step Functions matches it).

Written by hand: AWS's runtime interface client needs the Runtime API server (a binary not
available here); the parts this reproduces are the import path and the error shape.

Usage: python3.12 -I -S lambda_bootstrap.py REQUEST.json RESPONSE.json
REQUEST: {"task_root", "layer_roots": [...], "runtime_root", "handler", "event", "function_name",
"memory_mb", "timeout_s"}
"""

import importlib
import json
import sys
import time


class Context:
    """The attributes and method of Lambda's context object that handlers and Powertools read."""

    def __init__(self, request: dict, deadline: float):
        self.function_name = request["function_name"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = request["memory_mb"]
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.aws_request_id = "00000000-0000-0000-0000-rehearsal000"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "rehearsal"
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(request_path: str, response_path: str) -> None:
    with open(request_path) as handle:
        request = json.load(handle)
    # The python3.12 runtime's order: /var/task, the layers' python/lib/python3.12/site-packages and
    # python/, then /var/runtime (its boto3), then the standard library (already on the path).
    layer_paths = [path for root in request["layer_roots"] for path in (f"{root}/python/lib/python3.12/site-packages", f"{root}/python")]
    sys.path[:0] = [request["task_root"], *layer_paths, request["runtime_root"]]
    deadline = time.monotonic() + request["timeout_s"]
    module_name, _, function_name = request["handler"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        response = {"result": handler(request["event"], Context(request, deadline))}
    except Exception as exc:  # noqa: BLE001 - reported as Lambda reports any error
        response = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
    with open(response_path, "w") as handle:
        json.dump(response, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
