#!/usr/bin/env bash
# The whole test suite: unit, integration (SQLite, PostgreSQL, Kannel) and end to end on real
# Asterisk 22 and 16. Installs what is missing first. Arguments go to pytest (e.g. -m unit).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh
bash scripts/postgres.sh
if [ -z "${CONSENT_IVR_TEST_PG:-}" ] && [ -f var/postgres-test.env ]; then
  set -a; . var/postgres-test.env; set +a
fi
bash scripts/asterisk.sh install 22
bash scripts/asterisk.sh install 16
bash scripts/kannel.sh install
bash scripts/browser.sh install

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy consent_ivr
exec .venv/bin/pytest "$@"
