"""The Ollama host's user data: lint-clean (shellcheck), private by default, values checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import user_data
from infra.user_data import OllamaHostSettings, UserDataError


def verified(**settings) -> OllamaHostSettings:
    """Settings with an archive sha256 (required), so that each case fails for its own reason."""
    return OllamaHostSettings(archive_sha256="a" * 64, **settings)


SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))


def shellcheck(text: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "user_data.sh"
    script.write_text(text)
    return subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)


def test_rendered_script_passes_shellcheck(tmp_path):
    result = shellcheck(user_data.render(OllamaHostSettings(archive_sha256="a" * 64)), tmp_path)
    assert result.returncode == 0, result.stdout


def test_the_idle_stop_script_passes_shellcheck(tmp_path):
    result = shellcheck(user_data.IDLE_STOP_SCRIPT.read_text(), tmp_path)
    assert result.returncode == 0, result.stdout


def test_shellcheck_would_catch_a_broken_script(tmp_path):  # the lint is live, not a no-op
    assert shellcheck("#!/bin/bash\nrm -rf $DIR/*\n", tmp_path).returncode != 0


def test_defaults_pin_the_version_bind_privately_and_run_under_systemd():
    text = user_data.render(verified())
    assert "@@" not in text
    assert f'OLLAMA_VERSION="{user_data.DEFAULT_OLLAMA_VERSION}"' in text
    assert f"/v{user_data.DEFAULT_OLLAMA_VERSION}/ollama-linux-amd64.tgz" in text
    assert 'OLLAMA_BIND_ADDRESS="private"' in text and "imds local-ipv4" in text
    assert "Restart=always" in text and "Environment=OLLAMA_MODELS=${OLLAMA_MODELS_DIR}" in text
    assert "0.0.0.0" not in text
    assert "X-aws-ec2-metadata-token" in text  # IMDSv2


def test_a_staged_archive_and_checksum_are_used():
    text = user_data.render(OllamaHostSettings(archive_url="s3://bucket/tools/ollama-0.12.6.tgz", archive_sha256="b" * 64))
    assert 'OLLAMA_ARCHIVE_URL="s3://bucket/tools/ollama-0.12.6.tgz"' in text and f'OLLAMA_SHA256="{"b" * 64}"' in text


@pytest.mark.parametrize(
    "settings",
    [
        verified(bind_address="0.0.0.0"),
        verified(bind_address="8.8.8.8"),
        verified(bind_address="eth0"),
        verified(version="latest"),
        verified(archive_url="http://insecure/ollama.tgz"),
        verified(archive_url='https://x/"; rm -rf /'),
        OllamaHostSettings(archive_sha256="xyz"),
        OllamaHostSettings(),  # no sha256: root would unpack whatever the URL served
        verified(models_dir="relative/dir"),
        verified(port=0),
        verified(idle_stop_minutes=3),  # shorter than a boot and a model load
    ],
)
def test_unsafe_or_malformed_settings_are_refused(settings):
    with pytest.raises(UserDataError):
        user_data.render(settings)


def test_user_data_over_the_ec2_limit_is_refused_at_preview():
    # RunInstances refuses more than 16384 bytes; a long staged-archive URL is the setting that grows it.
    long_url = "s3://bucket/" + "a" * user_data.USER_DATA_MAX_BYTES + ".tgz"
    with pytest.raises(UserDataError, match="over EC2's 16384-byte limit"):
        user_data.render(verified(archive_url=long_url))


def test_private_and_loopback_addresses_are_allowed():
    for address in ("10.0.1.5", "127.0.0.1", "172.16.0.9"):
        assert f'OLLAMA_BIND_ADDRESS="{address}"' in user_data.render(verified(bind_address=address))
