"""The Ollama host's user data, run for real as far as this machine allows: the rendered script
executes as root in a throwaway root of its own (mount, network and PID namespaces: a private
copy of /etc, empty /usr/local and /var/lib, only a loopback network), with stand-ins for what
the AMI has and this machine lacks (standins.py: Ollama, systemctl, the AWS CLI, journald's
logger, IMDSv2). What runs unchanged: the script itself, bash, useradd/usermod/getent/install,
tar, sha256sum, curl, and the unit file it writes, started as systemd would start it.

Not covered here: the real Ollama binary, systemd and the GPU driver (none can run on this
machine); the stand-in Ollama does what the real one does at start that the boot depends on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from infra import user_data
from pipeline import contracts

HERE = Path(__file__).resolve().parent
VERSION = user_data.DEFAULT_OLLAMA_VERSION
ARCHIVE_URI = "s3://host-artifacts/ollama/ollama-linux-amd64.tgz"
IMDS_ADDRESS = "169.254.169.254"  # inside the test's own network namespace only
PRIVATE_IPV4 = "127.0.0.2"  # what the stand-in IMDS reports as the instance's private address
# The script waits up to 300 s for Ollama; a test that fails should fail sooner. The only edit made
# to the rendered script.
HEALTH_TIMEOUT_S = 20
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the stand-in Ollama runs as the ollama user, who cannot read /root

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not SYSTEM_PYTHON.is_file(),
        reason="needs root, util-linux unshare and /usr/bin/python3 (CI and the dev machine have them)",
    ),
]


def standin_archive() -> bytes:
    """What Ollama's release archive holds for the script's purposes: bin/ollama (here, the stand-in)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))

        add("lib/ollama/standins.py", (HERE / "standins.py").read_bytes(), 0o644)
        add("bin/ollama", f'#!/bin/sh\nexec {SYSTEM_PYTHON} /usr/local/lib/ollama/standins.py ollama "$@"\n'.encode(), 0o755)
    return buffer.getvalue()


def user_data_script(sha256: str, **settings) -> str:
    script = user_data.render(user_data.OllamaHostSettings(archive_url=ARCHIVE_URI, archive_sha256=sha256, **settings))
    assert "HEALTH_TIMEOUT_S=300" in script and "GPU_TIMEOUT_S=120" in script
    return script.replace("HEALTH_TIMEOUT_S=300", f"HEALTH_TIMEOUT_S={HEALTH_TIMEOUT_S}").replace("GPU_TIMEOUT_S=120", "GPU_TIMEOUT_S=5")


# What cloud-init's scripts run with: the system's directories, never this machine's tool shims.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# dnf and apt-get stand in even where the AMI's commands are all there: a boot that finds one
# missing on the test machine must fail the test, never install on this machine.
DRIVER_BIN = "/usr/local/nvidia/bin"  # where the stand-in nvidia-smi lies (the AMI's is /usr/bin/nvidia-smi)
STANDINS = ("systemctl", "aws", "logger", "journalctl", "dnf", "apt-get", "nvidia-smi")


def boot(
    tmp_path: Path,
    *,
    sha256: str | None = None,
    prepare: str = "",
    edit_script=None,
    after: str = "",
    standins: tuple[str, ...] = STANDINS,
    environment: dict[str, str] | None = None,
    **settings,
) -> tuple[subprocess.CompletedProcess, dict]:
    """Boot the rendered user data; ``sha256`` defaults to the stand-in archive's own; ``standins``
    are the commands the AMI has that this machine lacks (or must not run)."""
    archive = standin_archive()
    sha256 = sha256 if sha256 is not None else hashlib.sha256(archive).hexdigest()
    s3_root = tmp_path / "s3"
    (s3_root / ARCHIVE_URI.removeprefix("s3://")).parent.mkdir(parents=True)
    (s3_root / ARCHIVE_URI.removeprefix("s3://")).write_bytes(archive)
    script = user_data_script(sha256, **settings)
    script = edit_script(script) if edit_script else script
    (tmp_path / "user-data.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (name for name in standins if name != "nvidia-smi"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {SYSTEM_PYTHON} {HERE / "standins.py"} {name} "$@"\n')
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    # The driver's nvidia-smi runs as the ollama user too (ExecStartPre), who cannot read tmp_path.
    driver_standin = f"""
mkdir -p {DRIVER_BIN} && cp {HERE / "standins.py"} {DRIVER_BIN}/standins.py
printf '#!/bin/sh\\nexec {SYSTEM_PYTHON} {DRIVER_BIN}/standins.py nvidia-smi "$@"\\n' > {DRIVER_BIN}/nvidia-smi
chmod 0755 {DRIVER_BIN}/nvidia-smi
"""
    inside = f"""
set -eu
mount --make-rprivate /
cp -a /etc {tmp_path}/etc && mount --bind {tmp_path}/etc /etc
mount -t tmpfs tmpfs /usr/local
mount -t tmpfs tmpfs /var/lib
{driver_standin if "nvidia-smi" in standins else ""}
ip link set lo up
ip addr add {IMDS_ADDRESS}/32 dev lo
{SYSTEM_PYTHON} {HERE / "standins.py"} imds {IMDS_ADDRESS} {PRIVATE_IPV4} &
for _ in $(seq 50); do
    curl -s -o /dev/null -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 1' http://{IMDS_ADDRESS}/latest/api/token && break
    sleep 0.1
done
{prepare}
rc=0
PATH={bin_dir}:{DRIVER_BIN}:{SYSTEM_PATH} bash {tmp_path}/user-data.sh > {tmp_path}/boot.log 2>&1 || rc=$?
export PATH={bin_dir}:{DRIVER_BIN}:{SYSTEM_PATH}
{after}
home=$(getent passwd ollama | cut -d: -f6 || true)
{SYSTEM_PYTHON} - "$rc" "$home" <<'PY'
import json, os, pwd, sys, urllib.request
rc, home = int(sys.argv[1]), sys.argv[2]
def owner(path):
    try:
        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (FileNotFoundError, KeyError):
        return None
try:
    version = json.load(urllib.request.urlopen("http://{PRIVATE_IPV4}:11434/api/version", timeout=2))["version"]
except OSError:
    version = None
print(json.dumps({{"rc": rc, "home": home, "home_owner": owner(home), "key_owner": owner(home + "/.ollama/id_ed25519"),
                  "models_owner": owner("/var/lib/ollama/models"), "version": version}}))
PY
"""
    done = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", inside],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "STANDIN_STATE": str(state),
            "STANDIN_S3_ROOT": str(s3_root),
            "STANDIN_OLLAMA_VERSION": VERSION,
            "STANDIN_USER_DATA": str(tmp_path / "current-user-data.sh"),  # what IMDS serves at later boots
            **(environment or {}),
        },
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(done.stdout.strip().splitlines()[-1])


def starts(tmp_path: Path) -> int:
    log = tmp_path / "state" / "starts.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_the_host_boots_to_a_serving_ollama_on_its_private_address(tmp_path):
    _, result = boot(tmp_path)
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 0, log
    assert f"is serving on {PRIVATE_IPV4}:11434" in log
    assert result["version"] == VERSION
    # Ollama's key pair is created at its first start, in the service user's own home.
    assert result["home"] == "/var/lib/ollama" and result["home_owner"] == "ollama" and result["key_owner"] == "ollama"
    assert result["models_owner"] == "ollama"
    assert starts(tmp_path) == 1, (tmp_path / "state" / "service.log").read_text()


def test_a_user_left_without_a_home_by_an_earlier_boot_is_repaired(tmp_path):
    """An instance booted with an older user data has the ollama user but no home directory."""
    prepare = "useradd --system --home-dir /var/lib/ollama --shell /usr/sbin/nologin ollama"
    _, result = boot(tmp_path, prepare=prepare)
    assert result["rc"] == 0, (tmp_path / "boot.log").read_text()
    assert result["key_owner"] == "ollama" and result["version"] == VERSION


def test_a_wrong_archive_checksum_stops_the_boot_before_anything_is_installed(tmp_path):
    _, result = boot(tmp_path, sha256="0" * 64)
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 1 and "sha256 mismatch" in log
    assert result["version"] is None and starts(tmp_path) == 0


def test_a_script_without_a_checksum_installs_nothing(tmp_path):
    """The stack refuses an empty ollamaArchiveSha256; the script refuses it too, should one reach it."""
    sha256 = hashlib.sha256(standin_archive()).hexdigest()
    _, result = boot(tmp_path, edit_script=lambda script: script.replace(f'OLLAMA_SHA256="{sha256}"', 'OLLAMA_SHA256=""'))
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 1 and "refusing to install it unverified" in log
    assert result["version"] is None and starts(tmp_path) == 0


# --- the default AMI (Amazon Linux 2023 ECS GPU): what its minimal base lacks is installed --------


def test_a_missing_aws_cli_is_installed_with_dnf_before_the_archive_is_fetched(tmp_path):
    """Amazon Linux's minimal base (under the ECS GPU AMI) has no AWS CLI; the staged archive needs it."""
    if any(Path(directory, "aws").exists() for directory in SYSTEM_PATH.split(":")):
        pytest.skip("this machine has an AWS CLI in its system PATH: the AMI's lack of one cannot be shown here")
    _, result = boot(tmp_path, standins=("systemctl", "logger", "journalctl", "dnf", "apt-get", "nvidia-smi"))
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 0 and result["version"] == VERSION, log
    assert "lacks aws: installing them" in log
    assert (tmp_path / "state" / "packages.log").read_text() == "dnf awscli-2\n"


def test_a_command_that_cannot_be_installed_stops_the_boot_by_name(tmp_path):
    if any(Path(directory, name).exists() for directory in SYSTEM_PATH.split(":") for name in ("aws", "dnf")):
        pytest.skip("this machine has an AWS CLI or dnf in its system PATH: an AMI with neither cannot be shown here")
    _, result = boot(tmp_path, standins=("systemctl", "logger", "journalctl", "apt-get", "nvidia-smi"))
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 1 and "apt-get could not install awscli (for aws)" in log
    assert result["version"] is None and starts(tmp_path) == 0


def test_the_ecs_agent_of_the_ecs_ami_is_disabled(tmp_path):
    """This host is no ECS container instance: the agent the AMI starts would retry its registration forever."""
    prepare = f"mkdir -p {tmp_path}/state/enabled && touch {tmp_path}/state/enabled/ecs.service"
    _, result = boot(tmp_path, prepare=prepare)
    assert result["rc"] == 0, (tmp_path / "boot.log").read_text()
    assert (tmp_path / "state" / "disabled.log").read_text() == "ecs.service\n"


def test_an_ami_without_the_ecs_agent_is_left_as_it_is(tmp_path):
    _, result = boot(tmp_path)
    assert result["rc"] == 0 and not (tmp_path / "state" / "disabled.log").exists()


# --- the host on demand: it stops itself when idle ---------------------------------------------------

IDLE_MINUTES = contracts.HOST_IDLE_STOP_MIN_MINUTES  # the least the stack allows
IDLE_STOP = "/usr/local/sbin/ollama-idle-stop > {log} 2>&1; echo $? > {rc}"


def up_for(tmp_path: Path, seconds: int) -> str:
    """Commands that make the namespace's /proc/uptime say the host booted ``seconds`` ago: the check
    never stops a host within its first window, whatever this machine's own uptime is."""
    return f"printf '%d.00 0.00\\n' {seconds} > {tmp_path}/uptime && mount --bind {tmp_path}/uptime /proc/uptime"


UP_PAST_THE_WINDOW_S = (IDLE_MINUTES + 5) * 60


def idle_check(tmp_path: Path, journal: list[tuple[float, str]], *, in_flight: bool = False, uptime_s: int = UP_PAST_THE_WINDOW_S) -> dict:
    """Boot with the idle stop on, write Ollama's journal, run the check the timer runs each minute."""
    (tmp_path / "journal.log").write_text("".join(f"{stamp} ollama.service {message}\n" for stamp, message in journal))
    check = IDLE_STOP.format(log=tmp_path / "idle.log", rc=tmp_path / "idle.rc")
    connect = f"exec 3<>/dev/tcp/{PRIVATE_IPV4}/11434" if in_flight else ""  # a request still being served
    after = f"{up_for(tmp_path, uptime_s)}\n{connect}\nSTANDIN_JOURNAL={tmp_path / 'journal.log'} {check}"
    _, result = boot(tmp_path, idle_stop_minutes=IDLE_MINUTES, after=after)
    assert result["rc"] == 0, (tmp_path / "boot.log").read_text()
    return {
        "rc": (tmp_path / "idle.rc").read_text().strip(),
        "stopped": (tmp_path / "state" / "poweroff").exists(),
        "timers": (tmp_path / "state" / "timers.log").read_text() if (tmp_path / "state" / "timers.log").exists() else "",
        "log": (tmp_path / "idle.log").read_text(),
    }


GIN = '[GIN] 2026/11/29 - 21:00:00 | 200 |  1.2s | 10.0.1.50 | POST     "/api/generate"'


def test_an_idle_host_stops_itself(tmp_path):
    now = time.time()
    checked = idle_check(tmp_path, [(now - (IDLE_MINUTES + 3) * 60, GIN), (now - 60, 'time=… level=INFO msg="model unloaded"')])
    assert checked["rc"] == "0" and checked["stopped"], checked["log"]
    assert checked["timers"] == "ollama-idle-stop.timer 1min\n"
    assert "stopping this instance" in (tmp_path / "state" / "journal.log").read_text()


def test_a_host_within_its_first_window_after_a_boot_is_never_stopped(tmp_path):
    """DeployModel's first request comes minutes after the start; an old journal must not stop it."""
    now = time.time()
    checked = idle_check(tmp_path, [(now - (IDLE_MINUTES + 3) * 60, GIN)], uptime_s=(IDLE_MINUTES - 1) * 60)
    assert checked["rc"] == "0" and not checked["stopped"], checked["log"]


def test_a_request_within_the_idle_window_keeps_it_running(tmp_path):
    checked = idle_check(tmp_path, [(time.time() - 120, GIN)])
    assert checked["rc"] == "0" and not checked["stopped"], checked["log"]


def test_a_request_in_flight_is_never_cut(tmp_path):
    """A batch or a GGUF upload longer than the window has logged nothing yet: its connection holds the host."""
    checked = idle_check(tmp_path, [], in_flight=True)
    assert checked["rc"] == "0" and not checked["stopped"], checked["log"]


def test_an_always_on_host_has_no_idle_stop(tmp_path):
    _, result = boot(
        tmp_path, idle_stop_minutes=0, after="test -e /usr/local/sbin/ollama-idle-stop && touch " + str(tmp_path / "installed")
    )
    assert result["rc"] == 0 and not (tmp_path / "installed").exists()
    assert not (tmp_path / "state" / "timers.log").exists()
    assert "idle stop off" in (tmp_path / "boot.log").read_text()


def test_a_busy_window_of_log_keeps_the_host_running(tmp_path):
    """ValidateModel alone logs thousands of [GIN] lines: far more than a pipe's 64 KB. A reader that
    stops at its first match would kill journalctl with SIGPIPE, and under pipefail the check read
    that as idle and powered the host off mid-use."""
    now = time.time()
    journal = [(now - 600 + i * 0.1, GIN) for i in range(5000)]
    assert sum(len(message) + 1 for _, message in journal) > 4 * 65536
    checked = idle_check(tmp_path, journal)
    assert checked["rc"] == "0" and not checked["stopped"], checked["log"]


def test_a_failed_first_boot_still_stops_itself_when_idle(tmp_path):
    """A wrong checksum stops the boot before Ollama exists; the idle timer, installed first, stops
    the host after the window instead of it running, billed, forever."""
    check = IDLE_STOP.format(log=tmp_path / "idle.log", rc=tmp_path / "idle.rc")
    after = f"{up_for(tmp_path, UP_PAST_THE_WINDOW_S)}\n{check}"
    _, result = boot(tmp_path, sha256="0" * 64, idle_stop_minutes=IDLE_MINUTES, after=after)
    assert result["rc"] == 1 and "sha256 mismatch" in (tmp_path / "boot.log").read_text()
    assert (tmp_path / "state" / "timers.log").read_text() == "ollama-idle-stop.timer 1min\n"
    assert (tmp_path / "idle.rc").read_text().strip() == "0" and (tmp_path / "state" / "poweroff").exists()


def test_no_gpu_stops_the_boot_by_name_and_ollama_never_serves_on_the_cpu(tmp_path):
    _, result = boot(tmp_path, environment={"STANDIN_NO_GPU": "1"})
    log = (tmp_path / "boot.log").read_text()
    assert result["rc"] == 1 and "no NVIDIA GPU visible" in log
    assert result["version"] is None and starts(tmp_path) == 0


def test_ollama_starts_after_the_driver_and_checks_the_gpu_at_every_start(tmp_path):
    unit = tmp_path / "unit"
    _, result = boot(tmp_path, after=f"cp /etc/systemd/system/ollama.service {unit}")
    assert result["rc"] == 0, (tmp_path / "boot.log").read_text()
    text = unit.read_text()
    assert "After=network-online.target nvidia-kmod-load.service" in text
    assert f"ExecStartPre={DRIVER_BIN}/nvidia-smi -L" in text


PER_BOOT = "bash /var/lib/cloud/scripts/per-boot/ollama-host > {log} 2>&1; echo $? > {rc}"


def test_changed_host_settings_reach_the_host_at_its_next_boot(tmp_path):
    """User data runs once per instance; the per-boot hook runs the current one again. Switching to
    an always-on host and to another Ollama release takes effect; the models on the disk stay."""
    sha256 = hashlib.sha256(standin_archive()).hexdigest()
    (tmp_path / "current-user-data.sh").write_text(user_data_script(sha256, idle_stop_minutes=0, version="0.12.7"))
    later_boot = PER_BOOT.format(log=tmp_path / "reboot.log", rc=tmp_path / "reboot.rc")
    keep = "touch /var/lib/ollama/models/production-blob"
    after = f"{keep}\n{later_boot}\ntest -e /var/lib/ollama/models/production-blob && touch {tmp_path / 'models-kept'}"
    after += f"\ntest -e /etc/systemd/system/ollama-idle-stop.timer || touch {tmp_path / 'timer-gone'}"
    _, result = boot(tmp_path, idle_stop_minutes=IDLE_MINUTES, after=after)
    assert result["rc"] == 0, (tmp_path / "boot.log").read_text()
    reboot_log = (tmp_path / "reboot.log").read_text()
    assert (tmp_path / "reboot.rc").read_text().strip() == "0", reboot_log
    assert "downloading ollama 0.12.7" in reboot_log and "idle stop off" in reboot_log
    assert (tmp_path / "state" / "disabled.log").read_text() == "ollama-idle-stop.timer\n"
    assert (tmp_path / "timer-gone").exists() and (tmp_path / "models-kept").exists()
    assert result["version"] == VERSION  # the stand-in archive's binary, restarted, serves again
    assert starts(tmp_path) == 2
