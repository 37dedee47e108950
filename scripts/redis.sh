#!/usr/bin/env bash
# Prints the address of a Redis the tests may use: TRIREME_REDIS when set, the
# one on 127.0.0.1:6379 when it answers, else a private redis-server started
# on 127.0.0.1:6391 (installed from apt when missing), with no persistence.
set -euo pipefail
ping() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if [ -n "${TRIREME_REDIS:-}" ]; then
  echo "$TRIREME_REDIS"
  exit 0
fi
if ping 127.0.0.1:6379; then
  echo 127.0.0.1:6379
  exit 0
fi
addr=127.0.0.1:6391
if ! ping "$addr"; then
  if ! command -v redis-server >/dev/null; then
    echo "installing redis-server from apt" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2; }
  fi
  echo "starting redis-server on $addr" >&2
  redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >&2
  for _ in $(seq 1 100); do
    ping "$addr" && break
    sleep 0.05
  done
  ping "$addr" || { echo "redis-server did not answer on $addr" >&2; exit 1; }
fi
echo "$addr"
