#!/usr/bin/env bash
# Prints the directory of PostgreSQL's server programs (initdb, pg_ctl,
# postgres), installing Debian's `postgresql` when missing. Nothing is started
# here: tests that need a server they can stop start their own.
set -euo pipefail
find_bin() {
  if [ -n "${TRIREME_PG_BIN:-}" ]; then echo "$TRIREME_PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
if [ -z "$(find_bin)" ] || [ ! -x "$(find_bin)/initdb" ]; then
  echo "installing postgresql from apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
fi
find_bin
