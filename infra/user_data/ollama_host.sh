#!/bin/bash
# Ollama host bootstrap: cloud-init user data for a GPU AMI with the NVIDIA driver installed: by
# default Amazon's ECS GPU-optimized Amazon Linux 2023 AMI (its 30 GB snapshot is what the stopped
# host is billed for); the Deep Learning Base GPU AMIs (Ubuntu) work too. Rendered by
# infra/user_data.py: every placeholder is replaced and checked there. Installs a pinned Ollama
# (its archive carries the CUDA runtime: only the driver comes from the AMI), runs it under systemd
# on a private address only, keeps models on the EBS root volume, waits until the API answers. Logs
# go to the journal (journalctl -t ollama-bootstrap, journalctl -u ollama).
#
# It runs at every boot, not only the first: cloud-init runs user data once per instance, so this
# script installs a per-boot hook that runs the instance's *current* user data again. Changed
# stack settings (ollamaVersion, hostIdleStopMinutes, keepHostRunning) reach an existing host at
# its next start: pulumi-aws updates user data in place by stopping and starting the instance.
# Every step is idempotent; the models on the disk stay.
set -euo pipefail

OLLAMA_VERSION="@@OLLAMA_VERSION@@"
OLLAMA_ARCHIVE_URL="@@OLLAMA_ARCHIVE_URL@@"   # https://… or s3://… (a staged copy: no internet needed)
OLLAMA_SHA256="@@OLLAMA_SHA256@@"             # of the archive; required, a mismatch stops the boot
OLLAMA_BIND_ADDRESS="@@OLLAMA_BIND_ADDRESS@@" # "private" (this instance's private IPv4) or an address
OLLAMA_PORT="@@OLLAMA_PORT@@"
OLLAMA_MODELS_DIR="@@OLLAMA_MODELS_DIR@@"
OLLAMA_KEEP_ALIVE="@@OLLAMA_KEEP_ALIVE@@"
OLLAMA_NUM_PARALLEL="@@OLLAMA_NUM_PARALLEL@@"
IDLE_STOP_MINUTES="@@IDLE_STOP_MINUTES@@"     # the host stops itself after this many idle minutes; 0: never
HEALTH_TIMEOUT_S=300
GPU_TIMEOUT_S=120
OLLAMA_HOME=/var/lib/ollama
PER_BOOT_HOOK=/var/lib/cloud/scripts/per-boot/ollama-host

log() {
    logger -t ollama-bootstrap -- "$*"
    echo "ollama-bootstrap: $*"
}

fail() {
    log "FAILED: $*"
    exit 1
}

imds() {
    # IMDSv2 only (the instance requires tokens).
    local token
    token=$(curl -fsS -X PUT "http://169.254.169.254/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
    curl -fsS -H "X-aws-ec2-metadata-token: ${token}" "http://169.254.169.254/latest/meta-data/$1"
}

install_per_boot_hook() {
    # cloud-init's scripts-per-boot module runs this at every later boot (the first boot's hook
    # directory is read before the user data writes it). It fetches the user data as it is now.
    install -D -m 0700 /dev/stdin "${PER_BOOT_HOOK}" <<'HOOK'
#!/bin/bash
# Runs the instance's current user data (written by the Ollama host's boot script): changed host
# settings apply at every boot.
set -euo pipefail
token=$(curl -fsS -X PUT "http://169.254.169.254/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
curl -fsS -H "X-aws-ec2-metadata-token: ${token}" -o /run/ollama-host-user-data.sh "http://169.254.169.254/latest/user-data"
exec bash /run/ollama-host-user-data.sh
HOOK
}

# The commands this script and the idle timer use, and the package that brings each where an AMI
# lacks it (Amazon Linux's minimal base, under the ECS AMI, has no AWS CLI and may lack others).
declare -A DNF_PACKAGE=([curl]=curl-minimal [tar]=tar [gzip]=gzip [sha256sum]=coreutils [useradd]=shadow-utils
    [usermod]=shadow-utils [getent]=glibc-common [ss]=iproute [journalctl]=systemd [aws]=awscli-2)
declare -A APT_PACKAGE=([curl]=curl [tar]=tar [gzip]=gzip [sha256sum]=coreutils [useradd]=passwd
    [usermod]=passwd [getent]=libc-bin [ss]=iproute2 [journalctl]=systemd [aws]=awscli)

ensure_commands() {
    local needed=(curl tar gzip sha256sum useradd usermod getent ss journalctl) missing=() packages=() command
    [[ "${OLLAMA_ARCHIVE_URL}" == s3://* ]] && needed+=(aws)
    for command in "${needed[@]}"; do
        command -v "${command}" >/dev/null 2>&1 || missing+=("${command}")
    done
    (( ${#missing[@]} == 0 )) && return
    log "this AMI lacks ${missing[*]}: installing them"
    if command -v dnf >/dev/null 2>&1; then
        for command in "${missing[@]}"; do packages+=("${DNF_PACKAGE[${command}]}"); done
        dnf install -y -q "${packages[@]}" || fail "dnf could not install ${packages[*]} (for ${missing[*]})"
    elif command -v apt-get >/dev/null 2>&1; then
        for command in "${missing[@]}"; do packages+=("${APT_PACKAGE[${command}]}"); done
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } \
            || fail "apt-get could not install ${packages[*]} (for ${missing[*]})"
    else
        fail "this AMI lacks ${missing[*]} and has neither dnf nor apt-get to install them"
    fi
    for command in "${missing[@]}"; do
        command -v "${command}" >/dev/null 2>&1 || fail "${command} is still missing after installing its package"
    done
}

stop_ecs_agent() {
    # The ECS AMI starts Amazon's ECS agent at boot; this host is no ECS container instance (its
    # role has no ECS permissions), so the agent would only retry its registration, forever.
    if systemctl is-enabled --quiet ecs.service 2>/dev/null; then
        systemctl disable --now ecs.service
        log "ECS agent disabled: this instance is the Ollama host, not an ECS container instance"
    fi
}

install_ollama() {
    if [[ -x /usr/local/bin/ollama ]] && /usr/local/bin/ollama --version 2>/dev/null | grep -qF "${OLLAMA_VERSION}"; then
        log "ollama ${OLLAMA_VERSION} already installed"
        return
    fi
    local work archive
    work=$(mktemp -d)
    archive="${work}/ollama.tgz"
    log "downloading ollama ${OLLAMA_VERSION} from ${OLLAMA_ARCHIVE_URL}"
    case "${OLLAMA_ARCHIVE_URL}" in
        s3://*) aws s3 cp --only-show-errors "${OLLAMA_ARCHIVE_URL}" "${archive}" ;;
        https://*) curl -fsSL --retry 5 --retry-delay 5 -o "${archive}" "${OLLAMA_ARCHIVE_URL}" ;;
        *) fail "unsupported archive URL ${OLLAMA_ARCHIVE_URL}" ;;
    esac
    # Root unpacks it into /usr/local: only the archive whose sha256 the stack names.
    [[ "${OLLAMA_SHA256}" =~ ^[0-9a-f]{64}$ ]] || fail "no sha256 configured for the ollama archive; refusing to install it unverified"
    echo "${OLLAMA_SHA256}  ${archive}" | sha256sum --check --status || fail "ollama archive sha256 mismatch"
    tar -xzf "${archive}" -C /usr/local --no-same-owner --no-same-permissions
    rm -rf "${work}"
    /usr/local/bin/ollama --version >/dev/null 2>&1 || log "installed ollama does not report its version yet (server not running)"
}

wait_for_gpu() {
    # Ollama looks for GPUs once, when it starts: started before the driver's kernel module is
    # loaded, it serves on the CPU for the whole boot. The unit is ordered after the AMI's module
    # loader and checks the GPU again on every (re)start (ExecStartPre).
    local waited=0
    command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this AMI has no NVIDIA driver (ollamaAmiParameter)"
    until nvidia-smi -L 2>/dev/null | grep -q '^GPU '; do
        if (( waited >= GPU_TIMEOUT_S )); then
            fail "no NVIDIA GPU visible to the driver within ${GPU_TIMEOUT_S} s (nvidia-smi -L); not starting Ollama on the CPU"
        fi
        sleep 5
        waited=$(( waited + 5 ))
    done
    log "GPU: $(nvidia-smi -L | head -n 1)"
}

bind_address() {
    if [[ "${OLLAMA_BIND_ADDRESS}" == "private" ]]; then
        imds local-ipv4
    else
        echo "${OLLAMA_BIND_ADDRESS}"
    fi
}

write_unit() {
    local address="$1"
    id -u ollama >/dev/null 2>&1 \
        || useradd --system --user-group --create-home --home-dir "${OLLAMA_HOME}" --shell /usr/sbin/nologin ollama
    # `ollama serve` creates its key pair under $HOME/.ollama at start and exits when it cannot: the
    # home directory must exist and be the user's (also for a user left by an earlier boot).
    local home
    home=$(getent passwd ollama | cut -d: -f6)
    install -d -o ollama -g ollama -m 0750 "${home}"
    # The GPU device nodes belong to the video/render groups, where the AMI has them.
    local group
    for group in video render; do
        if getent group "${group}" >/dev/null; then usermod -a -G "${group}" ollama; fi
    done
    mkdir -p "${OLLAMA_MODELS_DIR}"
    chown -R ollama:ollama "${OLLAMA_MODELS_DIR}"
    cat >/etc/systemd/system/ollama.service <<UNIT
[Unit]
Description=Ollama (mistral-researcher scorer)
# nvidia-kmod-load.service: the ECS GPU AMI's driver module loader (absent elsewhere: ignored).
After=network-online.target nvidia-kmod-load.service
Wants=network-online.target

[Service]
User=ollama
Group=ollama
Environment=OLLAMA_HOST=${address}:${OLLAMA_PORT}
Environment=OLLAMA_MODELS=${OLLAMA_MODELS_DIR}
Environment=OLLAMA_KEEP_ALIVE=${OLLAMA_KEEP_ALIVE}
Environment=OLLAMA_NUM_PARALLEL=${OLLAMA_NUM_PARALLEL}
ExecStartPre=$(command -v nvidia-smi) -L
ExecStart=/usr/local/bin/ollama serve
Restart=always
RestartSec=3
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable ollama.service
    # A restart, not a start: on a later boot the unit started before this script rewrote it.
    systemctl restart ollama.service
}

wait_for_health() {
    local address="$1" waited=0
    until curl -fsS "http://${address}:${OLLAMA_PORT}/api/version" >/dev/null 2>&1; do
        if (( waited >= HEALTH_TIMEOUT_S )); then
            fail "ollama did not answer on ${address}:${OLLAMA_PORT} within ${HEALTH_TIMEOUT_S} s"
        fi
        sleep 5
        waited=$(( waited + 5 ))
    done
    log "ollama ${OLLAMA_VERSION} is serving on ${address}:${OLLAMA_PORT} (models in ${OLLAMA_MODELS_DIR})"
}

install_idle_stop() {
    if (( IDLE_STOP_MINUTES == 0 )); then
        if [[ -e /etc/systemd/system/ollama-idle-stop.timer ]]; then  # installed by an earlier boot
            systemctl disable --now ollama-idle-stop.timer
            rm -f /etc/systemd/system/ollama-idle-stop.timer /etc/systemd/system/ollama-idle-stop.service \
                /usr/local/sbin/ollama-idle-stop /etc/default/ollama-idle-stop
            systemctl daemon-reload
        fi
        log "idle stop off: the host runs until someone stops it (keepHostRunning)"
        return
    fi
    cat >/etc/default/ollama-idle-stop <<ENV
IDLE_MINUTES=${IDLE_STOP_MINUTES}
OLLAMA_PORT=${OLLAMA_PORT}
ENV
    install -D -m 0755 /dev/stdin /usr/local/sbin/ollama-idle-stop <<'SCRIPT'
@@IDLE_STOP_SCRIPT@@
SCRIPT
    cat >/etc/systemd/system/ollama-idle-stop.service <<UNIT
[Unit]
Description=Stop this instance when Ollama has been idle ${IDLE_STOP_MINUTES} minutes

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ollama-idle-stop
UNIT
    cat >/etc/systemd/system/ollama-idle-stop.timer <<UNIT
[Unit]
Description=Check every minute whether Ollama is idle

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
UNIT
    systemctl daemon-reload
    systemctl enable --now ollama-idle-stop.timer
    log "idle stop: this instance stops itself after ${IDLE_STOP_MINUTES} idle minutes"
}

main() {
    # The stop path first: a boot that fails below (a wrong sha256, no route to the archive, no
    # GPU) leaves a host that stops itself after the idle window instead of running, billed, forever.
    install_idle_stop
    install_per_boot_hook
    ensure_commands
    stop_ecs_agent
    install_ollama
    wait_for_gpu
    local address
    address=$(bind_address)
    [[ -n "${address}" ]] || fail "no bind address"
    write_unit "${address}"
    wait_for_health "${address}"
}

main "$@"
