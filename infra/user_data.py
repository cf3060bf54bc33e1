"""Render the Ollama host's user data (infra/user_data/ollama_host.sh) from typed settings.

Plain Python, no Pulumi: the inference host component calls it, and tests lint the result with
shellcheck. Values are checked here, so a bad one fails ``pulumi up`` instead of the instance's boot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import contracts

TEMPLATE = Path(__file__).with_name("user_data") / "ollama_host.sh"
IDLE_STOP_SCRIPT = TEMPLATE.with_name("ollama_idle_stop.sh")  # installed by the boot script, run by a timer
PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")
DEFAULT_OLLAMA_VERSION = "0.12.6"
ARCHIVE_URL = "https://github.com/ollama/ollama/releases/download/v{version}/ollama-linux-amd64.tgz"
PRIVATE_BIND = "private"
# EC2 refuses user data over 16 KB before base64 encoding (RunInstances: "User data is limited to
# 16384 bytes"); refused here, at preview, rather than by the API in the middle of `pulumi up`.
USER_DATA_MAX_BYTES = 16384


class UserDataError(ValueError):
    """A host setting cannot be rendered safely."""


@dataclass(frozen=True)
class OllamaHostSettings:
    version: str = DEFAULT_OLLAMA_VERSION
    archive_url: str = ""  # default: the GitHub release of ``version``
    archive_sha256: str = ""  # required: values() refuses an empty one
    bind_address: str = PRIVATE_BIND
    port: int = 11434
    models_dir: str = "/var/lib/ollama/models"
    keep_alive: str = "24h"
    num_parallel: int = 4
    idle_stop_minutes: int = 30  # the host stops itself after this many idle minutes; 0: never

    def values(self) -> dict[str, str]:
        if not re.fullmatch(r"\d+\.\d+\.\d+(-rc\d+)?", self.version):
            raise UserDataError(f"ollama version must look like 0.12.6, got {self.version!r}")
        url = self.archive_url or ARCHIVE_URL.format(version=self.version)
        if not re.fullmatch(r"(https|s3)://[A-Za-z0-9._~/:%+-]+", url):
            raise UserDataError(f"ollama archive URL must be https:// or s3:// without spaces or quotes, got {url!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.archive_sha256):
            raise UserDataError("ollama archive sha256 must be 64 lowercase hex digits (it is required: the host verifies the archive)")
        if self.bind_address != PRIVATE_BIND:
            try:
                address = ipaddress.ip_address(self.bind_address)
            except ValueError:
                raise UserDataError(f"bind address must be 'private' or an IP address, got {self.bind_address!r}") from None
            # Never a public or wildcard interface: the API has no authentication.
            if address.is_unspecified or not (address.is_private or address.is_loopback):
                raise UserDataError(f"bind address {address} is not private: Ollama's API has no authentication")
        if not 1 <= self.port <= 65535:
            raise UserDataError(f"port must be 1-65535, got {self.port}")
        if not re.fullmatch(r"/[A-Za-z0-9._/-]+", self.models_dir):
            raise UserDataError(f"models_dir must be an absolute path, got {self.models_dir!r}")
        if not re.fullmatch(r"-1|\d+[smh]?", self.keep_alive):
            raise UserDataError(f"keep_alive must be like 24h, 30m or -1, got {self.keep_alive!r}")
        if not 1 <= self.num_parallel <= 64:
            raise UserDataError(f"num_parallel must be 1-64, got {self.num_parallel}")
        low = contracts.HOST_IDLE_STOP_MIN_MINUTES  # longer than an execution's gap before its first request
        if not (self.idle_stop_minutes == 0 or low <= self.idle_stop_minutes <= 1440):
            raise UserDataError(f"idle stop minutes must be 0 (never) or {low}-1440, got {self.idle_stop_minutes}")
        return {
            "OLLAMA_VERSION": self.version,
            "OLLAMA_ARCHIVE_URL": url,
            "OLLAMA_SHA256": self.archive_sha256,
            "OLLAMA_BIND_ADDRESS": self.bind_address,
            "OLLAMA_PORT": str(self.port),
            "OLLAMA_MODELS_DIR": self.models_dir,
            "OLLAMA_KEEP_ALIVE": self.keep_alive,
            "OLLAMA_NUM_PARALLEL": str(self.num_parallel),
            "IDLE_STOP_MINUTES": str(self.idle_stop_minutes),
        }


def render(settings: OllamaHostSettings) -> str:
    values = {**settings.values(), "IDLE_STOP_SCRIPT": IDLE_STOP_SCRIPT.read_text(encoding="utf-8").rstrip("\n")}
    text = TEMPLATE.read_text(encoding="utf-8")
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise UserDataError(f"no value for {', '.join(missing)}")
    rendered = PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
    size = len(rendered.encode("utf-8"))
    if size > USER_DATA_MAX_BYTES:
        raise UserDataError(f"the host's user data is {size} bytes, over EC2's {USER_DATA_MAX_BYTES}-byte limit")
    return rendered
