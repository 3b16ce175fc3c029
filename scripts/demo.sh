#!/usr/bin/env bash
# The main job, end to end: a private Asterisk 22, the service on its embedded defaults
# (SQLite file var/consent-ivr.db, recordings in var/recordings), one simulated customer who
# calls in, agrees and confirms, and the resulting consent record printed.
# Arguments go to `consent-ivr demo` (e.g. --scenario decline --language en --json).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh
bash scripts/asterisk.sh install 22
# The prompt audio folder is bind-mounted into the Asterisk chroot at the same path.
CONSENT_IVR_SHARE_DIRS="$REPO/var/prompts" bash scripts/asterisk.sh start 22
set -a
eval "$(bash scripts/asterisk.sh env 22)"
set +a
exec .venv/bin/consent-ivr demo "$@"
