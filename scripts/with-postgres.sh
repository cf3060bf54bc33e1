#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server: installs Debian's postgresql if missing,
# starts a cluster on a free loopback port (fsync off: test data is disposable), exports
# DATABASE_URL, runs the command, and stops and deletes the cluster whatever the command's outcome.
# Usage: scripts/with-postgres.sh COMMAND [ARGS...]
set -euo pipefail

find_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

if ! bindir=$(find_bindir); then
  echo "with-postgres: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir=$(find_bindir)
fi

# initdb and postgres refuse to run as root: run the server as the postgres user (created by the
# Debian package) or, when not root, as ourselves.
as_server_user=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as_server_user=(runuser -u postgres --)
fi

workdir=$(mktemp -d /tmp/pipeline-pg.XXXXXX)
chmod 755 "$workdir"
datadir="$workdir/data"
mkdir "$datadir"
[ "$(id -u)" = 0 ] && chown postgres "$workdir" "$datadir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

cleanup() {
  "${as_server_user[@]}" "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

"${as_server_user[@]}" "$bindir/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_server_user[@]}" "$bindir/pg_ctl" -D "$datadir" -l "$workdir/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$workdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null \
  || { cat "$workdir/server.log" >&2; exit 1; }

export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
set +e
"$@"
status=$?
set -e
exit $status
