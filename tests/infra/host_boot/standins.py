"""Stand-ins for what the Ollama host's boot script calls and this machine lacks: the Ollama
binary, systemd's `systemctl`, the AWS CLI's `aws s3 cp`, journald's `logger` and the instance
metadata service (IMDSv2). Each does what the real one does at the points the script depends on,
no more. Run as ``python standins.py <name> [args…]``; test_boot_script.py installs them on PATH.

- ollama: `--version` prints "ollama version is X"; `serve` first creates its key pair under
  $HOME/.ollama (as Ollama's server does at start, initializeKeypair in its auth package, and exits
  with an error when it cannot), then binds OLLAMA_HOST and answers GET /api/version.
- systemctl: `daemon-reload`; `enable <unit>` (recorded); `restart <unit>` stops the unit's running
  process if any and starts its ExecStartPre, then ExecStart, the way systemd does for
  User=/Group=/Environment= (HOME, USER, LOGNAME and SHELL from the user database; nothing else
  inherited) under Restart=always with RestartSec (a failed ExecStartPre: no ExecStart, retried
  after RestartSec), in the background.
- nvidia-smi: `-L` lists one GPU as the driver does ("GPU 0: Tesla T4 (UUID: GPU-…)"), or, with
  STANDIN_NO_GPU set, says it cannot talk to the driver and exits 9, as nvidia-smi does then.
- aws: `aws s3 cp [--only-show-errors] s3://bucket/key DEST` from a local directory of objects.
- imds: PUT /latest/api/token, then GET /latest/meta-data/<path> or /latest/user-data (the file
  STANDIN_USER_DATA names) with that token only.
- systemctl also: `enable --now <x>.timer` (recorded), `poweroff` (recorded: the instance stops),
  `is-enabled --quiet <unit>` (true when the test marked it enabled), `disable --now <unit>`
  (recorded).
- dnf: `install -y -q PKG…` as on Amazon Linux: a package it knows (awscli-2) puts its command in
  /usr/local/bin (the boot's own tmpfs), any other is "No match for argument" and exit 1.
- apt-get: `update`, then `install` fails as for a package the index lacks (the test machine's real
  apt-get must never run: it would change this machine).
- journalctl: `-u UNIT --since "-N min" -o cat --no-pager` prints the unit's messages of the last N
  minutes from a file of timestamped lines; a reader that closes the pipe early kills it with
  SIGPIPE (exit 141 in the shell), as it kills the real one.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("STANDIN_STATE", "/tmp/standin-state"))


def ollama(args: list[str]) -> int:
    version = os.environ.get("STANDIN_OLLAMA_VERSION", "0.0.0")
    if args == ["--version"]:
        print(f"ollama version is {version}")
        return 0
    if args != ["serve"]:
        print(f"stand-in ollama: unsupported {args}", file=sys.stderr)
        return 2
    home = Path(os.environ.get("HOME", ""))
    try:
        (home / ".ollama").mkdir(mode=0o755, exist_ok=True)
        key = home / ".ollama" / "id_ed25519"
        if not key.exists():
            key.write_bytes(os.urandom(64))
            key.chmod(0o600)
            (home / ".ollama" / "id_ed25519.pub").write_text("ssh-ed25519 STANDIN\n")
    except OSError as exc:
        print(f"Error: could not create directory {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    models = Path(os.environ.get("OLLAMA_MODELS", home / ".ollama" / "models"))
    models.mkdir(parents=True, exist_ok=True)  # as the server does; fails unless the user owns it

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path != "/api/version":
                self.send_error(404)
                return
            body = json.dumps({"version": version}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer((host, int(port)), Handler)
    print(f"Listening on {host}:{port} (version {version})", flush=True)
    server.serve_forever()
    return 0


def _unit(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def systemctl(args: list[str]) -> int:
    if args == ["daemon-reload"]:
        return 0
    if args == ["poweroff"]:  # the instance stops (its shutdown behaviour is "stop")
        (STATE / "poweroff").write_text(f"{time.time()}\n")
        return 0
    if args[:2] == ["is-enabled", "--quiet"] and len(args) == 3:
        return 0 if (STATE / "enabled" / args[2]).exists() else 1
    if args[:2] == ["disable", "--now"] and len(args) == 3:
        (STATE / "enabled" / args[2]).unlink(missing_ok=True)
        with (STATE / "disabled.log").open("a") as log:
            log.write(f"{args[2]}\n")
        return 0
    if args[:2] == ["enable", "--now"] and len(args) == 3 and args[2].endswith(".timer"):
        unit = _unit(Path("/etc/systemd/system") / args[2])  # must exist and parse, as systemd requires
        with (STATE / "timers.log").open("a") as log:
            log.write(f"{args[2]} {unit.get('OnUnitActiveSec', ['?'])[0]}\n")
        return 0
    if args[:1] == ["enable"] and len(args) == 2:
        (STATE / "enabled").mkdir(parents=True, exist_ok=True)
        (STATE / "enabled" / args[1]).touch()
        return 0
    if args[:1] != ["restart"] or len(args) != 2:
        print(f"stand-in systemctl: unsupported {args}", file=sys.stderr)
        return 2
    pid_file = STATE / f"{args[1]}.pid"
    if pid_file.is_file():  # stop what runs now: the supervisor and its children
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    unit = _unit(Path("/etc/systemd/system") / args[1])
    user = pwd.getpwnam(unit["User"][0])
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": user.pw_shell,
        "STANDIN_OLLAMA_VERSION": os.environ.get("STANDIN_OLLAMA_VERSION", ""),
        "STANDIN_NO_GPU": os.environ.get("STANDIN_NO_GPU", ""),
    }
    for assignment in unit.get("Environment", []):
        name, _, value = assignment.partition("=")
        env[name] = value
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={unit['Group'][0]}", "--init-groups"]
    commands = [[*as_user, *line.split()] for line in unit.get("ExecStartPre", [])]
    restart_s = float(unit.get("RestartSec", ["0.1"])[0])
    STATE.mkdir(parents=True, exist_ok=True)
    spec = {"pre": commands, "command": [*as_user, *unit["ExecStart"][0].split()], "env": env, "restart_s": restart_s}
    supervisor = subprocess.Popen(
        [sys.executable, __file__, "supervise", json.dumps(spec)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file.write_text(str(supervisor.pid))
    return 0


def supervise(args: list[str]) -> int:
    spec = json.loads(args[0])
    starts = STATE / "starts.log"
    while True:  # Restart=always; ends with the namespace's PID 1
        with (STATE / "service.log").open("a") as out:
            if all(subprocess.run(pre, env=spec["env"], stdout=out, stderr=out).returncode == 0 for pre in spec["pre"]):
                with starts.open("a") as log:
                    log.write(f"{time.time()}\n")
                subprocess.run(spec["command"], env=spec["env"], stdout=out, stderr=out)
        time.sleep(spec["restart_s"])


def aws(args: list[str]) -> int:
    args = [arg for arg in args if arg != "--only-show-errors"]
    if args[:2] != ["s3", "cp"] or len(args) != 4 or not args[2].startswith("s3://"):
        print(f"stand-in aws: unsupported {args}", file=sys.stderr)
        return 2
    source = Path(os.environ["STANDIN_S3_ROOT"]) / args[2].removeprefix("s3://")
    if not source.is_file():
        print("fatal error: An error occurred (404) when calling the HeadObject operation: Key not found", file=sys.stderr)
        return 1
    shutil.copyfile(source, args[3])
    return 0


DNF_COMMANDS = {"awscli-2": "aws"}  # the packages the stand-in dnf knows, and the command each brings


def dnf(args: list[str]) -> int:
    packages = [arg for arg in args[1:] if not arg.startswith("-")]
    if args[:1] != ["install"] or "-y" not in args or not packages:
        print(f"stand-in dnf: unsupported {args}", file=sys.stderr)
        return 2
    with (STATE / "packages.log").open("a") as log:
        log.write(f"dnf {' '.join(packages)}\n")
    unknown = [package for package in packages if package not in DNF_COMMANDS]
    if unknown:
        print(f"No match for argument: {unknown[0]}", file=sys.stderr)
        return 1
    for package in packages:
        command = Path("/usr/local/bin") / DNF_COMMANDS[package]
        command.parent.mkdir(parents=True, exist_ok=True)
        command.write_text(f'#!/bin/sh\nexec {sys.executable} {__file__} {DNF_COMMANDS[package]} "$@"\n')
        command.chmod(0o755)
    return 0


def apt_get(args: list[str]) -> int:
    if args == ["update", "-qq"]:
        return 0
    packages = [arg for arg in args[1:] if not arg.startswith("-")]
    with (STATE / "packages.log").open("a") as log:
        log.write(f"apt-get {' '.join(packages)}\n")
    print(f"E: Unable to locate package {packages[0] if packages else ''}", file=sys.stderr)
    return 100


def nvidia_smi(args: list[str]) -> int:
    if args != ["-L"]:
        print(f"stand-in nvidia-smi: unsupported {args}", file=sys.stderr)
        return 2
    if os.environ.get("STANDIN_NO_GPU"):
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        return 9
    print("GPU 0: Tesla T4 (UUID: GPU-3f8a1c2e-0000-4000-8000-000000000000)")
    return 0


def journalctl(args: list[str]) -> int:
    """`journalctl -u UNIT --since -N min -o cat --no-pager`: the unit's messages of the last N
    minutes, from STANDIN_JOURNAL (lines "<unix time> <unit> <message>")."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as a C program: killed by a closed pipe
    unit = args[args.index("-u") + 1]
    since = args[args.index("--since") + 1]
    minutes = int(since.removeprefix("-").removesuffix(" min"))
    journal = Path(os.environ.get("STANDIN_JOURNAL", STATE / "unit-journal.log"))
    if not journal.is_file():
        return 0
    for line in journal.read_text().splitlines():
        stamp, line_unit, message = line.split(" ", 2)
        if line_unit == unit and float(stamp) >= time.time() - minutes * 60:
            print(message)
    return 0


def logger(args: list[str]) -> int:
    with (STATE / "journal.log").open("a") as journal:
        journal.write(" ".join(args) + "\n")
    return 0


def imds(args: list[str]) -> int:
    address, local_ipv4 = args
    token = "standin-token"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802
            if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self.send_error(400)
                return
            self._answer(token)

        def do_GET(self):  # noqa: N802
            if self.headers.get("X-aws-ec2-metadata-token") != token:
                self.send_error(401)  # IMDSv2 required: no token, no answer
                return
            if self.path == "/latest/user-data" and os.environ.get("STANDIN_USER_DATA"):
                self._answer(Path(os.environ["STANDIN_USER_DATA"]).read_text())
                return
            if self.path != "/latest/meta-data/local-ipv4":
                self.send_error(404)
                return
            self._answer(local_ipv4)

        def _answer(self, text: str) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer((address, 80), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    name, rest = sys.argv[1], sys.argv[2:]
    commands = {"ollama": ollama, "systemctl": systemctl, "supervise": supervise, "aws": aws, "logger": logger, "imds": imds}
    sys.exit({**commands, "journalctl": journalctl, "dnf": dnf, "apt-get": apt_get, "nvidia-smi": nvidia_smi}[name](rest))
