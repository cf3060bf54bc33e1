"""Each Lambda as `pulumi up` ships it: the code archive and the layer archive the Pulumi program
declares, written as zip files (as the engine uploads them), unpacked into empty directories, and
invoked by lambda_bootstrap.py in the Lambda runtime's Python with nothing else on its path.

What `make test` prepares for this tier, once, where the package index is reachable: the layers
(infra/packaging.py, cached under .build/lambda/) and the runtime's own boto3 (.build/lambda-runtime/).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from infra import packaging

ROOT = packaging.ROOT
RUNTIME_ROOT = ROOT / ".build" / "lambda-runtime" / "python"  # boto3 as the runtime provides it
BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
# Lambda's deployment package quota: the function's code and all its layers, unzipped.
UNZIPPED_LIMIT_BYTES = 262_144_000


class RehearsalSetupMissing(RuntimeError):
    """What `make test` prepares for this tier is absent (run `make test`, or `make rehearsal-assets`)."""


@functools.cache
def lambda_python() -> str:
    """The interpreter of the Lambda runtime's Python version (python3.12)."""
    version = packaging.LAMBDA_PYTHON_VERSION
    candidates = [
        os.environ.get("LAMBDA_PYTHON"),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}"))),
        shutil.which(f"python{version}"),
    ]
    for candidate in candidates:
        if (
            candidate
            and Path(candidate).is_file()
            and subprocess.run(
                [candidate, "-c", f"import sys; assert sys.version_info[:2] == {tuple(map(int, version.split('.')))}"], capture_output=True
            ).returncode
            == 0
        ):
            return candidate
    raise RehearsalSetupMissing(f"no python{version} (the Lambda runtime's version): set LAMBDA_PYTHON")


def write_zip(archive: pulumi.AssetArchive, zip_path: Path) -> Path:
    """The archive as the Pulumi engine zips it: each FileArchive's files under its name, each
    FileAsset as a file of that name."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, asset in archive.assets.items():
            if isinstance(asset, pulumi.FileArchive):
                base = Path(asset.path)
                for path in sorted(base.rglob("*")):
                    if path.is_file():
                        out.write(path, f"{name}/{path.relative_to(base)}")
            elif isinstance(asset, pulumi.FileAsset):
                out.write(asset.path, name)
            else:
                raise TypeError(f"{name}: {type(asset).__name__} is not what the program ships")
    return zip_path


def unzipped_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


@dataclass
class DeployedFunction:
    name: str
    handler: str
    environment: dict[str, str]
    memory_mb: int
    timeout_s: int
    task_root: Path
    layer_roots: list[Path]
    python: str | None = None  # default: the runtime's python3.12
    runtime_root: Path = RUNTIME_ROOT  # what the runtime itself puts on the path

    def invoke(self, event: dict[str, Any], environment: dict[str, str], work: Path) -> dict[str, Any]:
        """One invocation in a fresh runtime interpreter; ``environment`` is what Lambda adds to the
        function's own variables (region, credentials, the test world's endpoints)."""
        if not (self.runtime_root / "boto3").is_dir():
            raise RehearsalSetupMissing(f"{self.runtime_root} has no boto3: run `make test` (it prepares the rehearsal)")
        request = work / f"{self.name}-request.json"
        response = work / f"{self.name}-response.json"
        request.write_text(
            json.dumps(
                {
                    "task_root": str(self.task_root),
                    "layer_roots": [str(p) for p in self.layer_roots],
                    "runtime_root": str(self.runtime_root),
                    "handler": self.handler,
                    "event": event,
                    "function_name": self.name,
                    "memory_mb": self.memory_mb,
                    "timeout_s": self.timeout_s,
                }
            )
        )
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{packaging.LAMBDA_RUNTIME}",
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            **self.environment,
            **environment,
        }
        done = subprocess.run(
            [self.python or lambda_python(), "-I", "-S", str(BOOTSTRAP), str(request), str(response)],
            env=env,
            cwd=str(self.task_root),
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
        )
        if done.returncode != 0 or not response.is_file():
            raise AssertionError(f"the runtime process died (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(response.read_text())


def unpack_functions(deployment, work: Path) -> dict[str, DeployedFunction]:
    """Every zip Lambda of a (mocked) deployment, unpacked as Lambda unpacks it: code in /var/task,
    each layer in /opt (here: a directory each)."""
    layer_archives = {}
    for layer in deployment.all("aws:lambda/layerVersion:LayerVersion"):
        [upload] = [obj for obj in deployment.all("aws:s3/bucketObjectv2:BucketObjectv2") if obj.inputs["key"] == layer.inputs["s3Key"]]
        arn = f"{layer.inputs['layerName']}"
        layer_archives[arn] = upload.inputs["source"]
    unpacked: dict[str, Path] = {}

    def unpack(key: str, archive: pulumi.AssetArchive) -> Path:
        if key not in unpacked:
            target = work / key
            target.mkdir(parents=True)
            with zipfile.ZipFile(write_zip(archive, work / f"{key}.zip")) as archive_zip:
                archive_zip.extractall(target)
            unpacked[key] = target
        return unpacked[key]

    functions = {}
    for function in deployment.all("aws:lambda/function:Function"):
        inputs = function.inputs
        if inputs.get("packageType") != "Zip":
            continue
        layers = [
            unpack(name, layer_archives[name]) for arn in inputs.get("layers", []) for name in [arn.split(":layer:")[1].rsplit(":", 1)[0]]
        ]
        functions[function.name] = DeployedFunction(
            name=function.name,
            handler=inputs["handler"],
            environment=dict((inputs.get("environment") or {}).get("variables") or {}),
            memory_mb=inputs["memorySize"],
            timeout_s=inputs["timeout"],
            task_root=unpack(f"code-{function.name}", inputs["code"]),
            layer_roots=layers,
        )
    return functions
