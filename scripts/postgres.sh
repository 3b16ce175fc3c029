#!/usr/bin/env bash
# Make sure the tests have a PostgreSQL server. If one already answers on 127.0.0.1:5432 (or
# CONSENT_IVR_TEST_PG is set), do nothing. Otherwise install Debian's, start it, and give the
# tests a role of their own with a password generated here (kept in var/, never committed).
# Prints nothing on success except, when it had to create the role, a line to export.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[ -n "${CONSENT_IVR_TEST_PG:-}" ] && exit 0
if python3 - <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 5432)) == 0 else 1)
PY
then
  exit 0
fi

echo "postgres.sh: no PostgreSQL on 127.0.0.1:5432; installing Debian's" >&2
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q "install ok installed"; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -n | tail -1)
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
secret="$REPO/var/postgres-test.env"
mkdir -p "$REPO/var"
if [ ! -f "$secret" ]; then
  pw=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  su postgres -c "psql -q -c \"CREATE ROLE consent_ivr_test LOGIN SUPERUSER PASSWORD '$pw'\"" >/dev/null
  umask 077
  echo "CONSENT_IVR_TEST_PG=postgresql://consent_ivr_test:$pw@127.0.0.1:5432/postgres" >"$secret"
fi
echo "postgres.sh: set -a; . $secret; set +a" >&2
