"""What every benchmark here shares: timing a command in a fresh process, and writing its section
of docs/benchmarks.md between markers (rerunning one benchmark replaces only its own section)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"
GNU_TIME = "/usr/bin/time"


class Sample(NamedTuple):
    seconds: float
    peak_rss_mib: float


def timed(command: list[str], ok_codes: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> Sample:
    """Wall time and peak RSS of ``command``, through GNU time.

    Not wait4 from the benchmark: a child forked from a large process inherits its resident pages
    until exec, and ru_maxrss keeps that peak. /usr/bin/time is a tiny parent.
    """
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time")
    start = time.perf_counter()
    result = subprocess.run(
        [GNU_TIME, "-f", "%M", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True, env=env
    )
    seconds = time.perf_counter() - start
    if result.returncode not in ok_codes:
        raise SystemExit(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    return Sample(seconds, int(result.stderr.strip().splitlines()[-1]) / 1024)


def write_section(key: str, title: str, body: str) -> str:
    """Replace (or append under ``title``) the block between this benchmark's markers."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n{body}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{section}\n"
    RESULTS.write_text(text)
    return section


def python_default_env() -> dict[str, str]:
    """This environment as Python runs by default: with its bytecode cache. A sandbox that sets
    PYTHONDONTWRITEBYTECODE makes every fresh process compile the pipeline's sources again (about
    40 ms of a 100k-row export here), a cost no user's `python -m pipeline` pays twice."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
