#!/bin/bash
# Stops this instance when Ollama has been idle: no request in flight and none finished within the
# last IDLE_MINUTES, and the instance has been up at least that long (whoever started it is about
# to call). Run every minute by ollama-idle-stop.timer, which the boot script installs unless the
# stack keeps the host running.
set -euo pipefail
# shellcheck source=/dev/null
source /etc/default/ollama-idle-stop # IDLE_MINUTES, OLLAMA_PORT

uptime_s=$(cut -d. -f1 /proc/uptime)
(( uptime_s >= IDLE_MINUTES * 60 )) || exit 0
# A request in flight (a scoring batch, a GGUF upload, a validation) holds the host.
[[ -z "$(ss -Htn state established "( sport = :${OLLAMA_PORT} )")" ]] || exit 0
# Ollama logs every request it finished (gin.Default()'s logger in its server/routes.go:
# "[GIN] … | POST "/api/generate"", to the journal): any within the window holds it. grep reads
# the whole window (-c, never -q): a grep that exits at its first match makes journalctl die of
# SIGPIPE once the window holds more than a pipe's 64 KB, and under pipefail that read as "idle".
# A journalctl that fails ends this check (set -e) without stopping anything.
requests=$(journalctl -u ollama.service --since "-${IDLE_MINUTES} min" -o cat --no-pager | { grep -c -F '[GIN]' || true; })
(( requests == 0 )) || exit 0
logger -t ollama-idle-stop "no Ollama request for ${IDLE_MINUTES} min and none in flight: stopping this instance"
# The instance's shutdown behaviour is "stop" (infra/inference_host.py): powering off stops it, so
# the host needs no IAM permission at all to stop itself, and can stop nothing else.
systemctl poweroff
