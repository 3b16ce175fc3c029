#!/usr/bin/env bash
# A private Kannel for development and tests: bearerbox + fakesmsc + smsbox, all on 127.0.0.1.
#
#   scripts/kannel.sh install   install Debian's kannel + kannel-extras (idempotent)
#   scripts/kannel.sh start     write kannel.conf, start bearerbox, fakesmsc, smsbox; wait healthy
#   scripts/kannel.sh stop      admin /shutdown, then wait (bounded) for every process to exit
#   scripts/kannel.sh status    exit 0 when smsbox accepts connections
#   scripts/kannel.sh env       print `export` lines for the gateway settings (eval them)
#
# Everything lives under ${CONSENT_IVR_VAR:-$REPO/var}/kannel. Messages that reach the fake SMSC
# are printed to fakesmsc.out; lines written to the FIFO fakesmsc.in are sent as inbound SMS
# ("79001234567 12345 text STOP"). Passwords come from CONSENT_IVR_KANNEL_PASSWORD and
# CONSENT_IVR_KANNEL_ADMIN_PASSWORD, or are generated once into secrets.env (mode 600).
#
# Inbound SMS go to the service's inbound route: CONSENT_IVR_KANNEL_INBOUND_URL (default
# http://127.0.0.1:8090/sms/inbound, the service's HTTP server), to which the sms-service adds
# the shared token (CONSENT_IVR_SMS_INBOUND_TOKEN, or generated into secrets.env; `env`
# prints it for the service) and the message: from=%p to=%P text=%a id=%I. `max-messages = 0`:
# Kannel never sends the route's HTTP answer back to the phone.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${CONSENT_IVR_VAR:-$REPO/var}"
DIR="$VAR/kannel"
ADMIN_PORT="${CONSENT_IVR_KANNEL_ADMIN_PORT:-14000}"
SMSBOX_PORT="${CONSENT_IVR_KANNEL_SMSBOX_PORT:-14001}"
SMSC_PORT="${CONSENT_IVR_KANNEL_SMSC_PORT:-14010}"
SENDSMS_PORT="${CONSENT_IVR_KANNEL_SENDSMS_PORT:-14013}"
USERNAME="${CONSENT_IVR_KANNEL_USERNAME:-consent-ivr}"
FAKESMSC=/usr/lib/kannel/test/fakesmsc
WAIT_S="${CONSENT_IVR_KANNEL_WAIT_S:-15}"
INBOUND_URL="${CONSENT_IVR_KANNEL_INBOUND_URL:-http://127.0.0.1:8090/sms/inbound}"

log() { echo "kannel.sh: $*" >&2; }

install() {
    if command -v bearerbox >/dev/null && command -v smsbox >/dev/null && [ -x "$FAKESMSC" ]; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq kannel kannel-extras >/dev/null
    # Debian's own service would bind the default ports; this setup runs its own processes.
    if command -v systemctl >/dev/null; then systemctl disable --now kannel >/dev/null 2>&1 || true; fi
}

secrets() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ ! -f "$DIR/secrets.env" ]; then
        (
            umask 077
            printf 'GENERATED_PASSWORD=%s\nGENERATED_ADMIN_PASSWORD=%s\n' \
                "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
                "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$DIR/secrets.env"
        )
    fi
    if ! grep -q '^GENERATED_INBOUND_TOKEN=' "$DIR/secrets.env"; then
        printf 'GENERATED_INBOUND_TOKEN=%s\n' \
            "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$DIR/secrets.env"
    fi
    # shellcheck disable=SC1091
    . "$DIR/secrets.env"
    PASSWORD="${CONSENT_IVR_KANNEL_PASSWORD:-$GENERATED_PASSWORD}"
    ADMIN_PASSWORD="${CONSENT_IVR_KANNEL_ADMIN_PASSWORD:-$GENERATED_ADMIN_PASSWORD}"
    INBOUND_TOKEN="${CONSENT_IVR_SMS_INBOUND_TOKEN:-$GENERATED_INBOUND_TOKEN}"
}

inbound_get_url() {
    # Kannel expands %-escapes in the whole get-url, so neither part may hold a % of its own.
    case "$INBOUND_URL" in *%* | *'"'*)
        log "CONSENT_IVR_KANNEL_INBOUND_URL must not contain % or \""
        return 1
        ;;
    esac
    if ! [[ "$INBOUND_TOKEN" =~ ^[A-Za-z0-9._~-]+$ ]]; then
        log "CONSENT_IVR_SMS_INBOUND_TOKEN: use letters, digits and . _ ~ - only"
        return 1
    fi
    local joiner="?"
    case "$INBOUND_URL" in *\?*) joiner="&" ;; esac
    echo "$INBOUND_URL${joiner}token=$INBOUND_TOKEN&from=%p&to=%P&text=%a&id=%I"
}

write_conf() {
    local get_url
    get_url="$(inbound_get_url)"
    (
        umask 077
        cat >"$DIR/kannel.conf" <<EOF
group = core
admin-port = $ADMIN_PORT
admin-interface = 127.0.0.1
admin-password = $ADMIN_PASSWORD
admin-allow-ip = 127.0.0.1
smsbox-port = $SMSBOX_PORT
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "$DIR/bearerbox.log"
log-level = 1
access-log = "$DIR/access.log"
dlr-storage = internal
store-type = file
store-location = "$DIR/store"
store-dump-freq = 1

group = smsc
smsc = fake
smsc-id = fake
port = $SMSC_PORT
interface-version = 34
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = $SMSBOX_PORT
sendsms-port = $SENDSMS_PORT
sendsms-interface = 127.0.0.1
log-file = "$DIR/smsbox.log"
log-level = 1
# Delivery reports are HTTP calls to our dlr-url: retry them while our receiver restarts.
http-request-retry = 30
http-queue-delay = 1
# Inbound UCS-2 (Cyrillic) reaches the get-url as UTF-8, like every other text.
mo-recode = true

group = sendsms-user
username = $USERNAME
password = $PASSWORD
concatenation = true
max-messages = 10
user-allow-ip = 127.0.0.1

# Every inbound SMS goes to the service's inbound route; its answer is not sent back.
group = sms-service
keyword = default
get-url = "$get_url"
max-messages = 0
catch-all = true
EOF
    )
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for DESCRIPTION PROCESS COMMAND...: fail early if PROCESS died
    local what="$1" proc="$2"
    shift 2
    local deadline=$((SECONDS + WAIT_S))
    until "$@"; do
        if [ -n "$proc" ] && ! pid_alive "$proc"; then
            log "$proc exited while waiting for $what; see $DIR/$proc.out"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${WAIT_S}s waiting for $what (see $DIR/*.log)"
            return 1
        fi
        sleep 0.1
    done
}

pid_alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

admin_ok() {
    curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/status.txt?password=$ADMIN_PASSWORD" 2>/dev/null
}

smsc_online() {
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/status.txt?password=$ADMIN_PASSWORD" 2>/dev/null |
        grep -q 'fake.*online'
}

start() {
    install
    secrets
    if pid_alive bearerbox; then
        log "already running (bearerbox pid $(cat "$DIR/bearerbox.pid"))"
        return 0
    fi
    for port in "$ADMIN_PORT" "$SMSBOX_PORT" "$SMSC_PORT" "$SENDSMS_PORT"; do
        if port_open "$port"; then
            log "port $port on 127.0.0.1 is taken; set CONSENT_IVR_KANNEL_*_PORT to free ports"
            return 1
        fi
    done
    write_conf
    [ -p "$DIR/fakesmsc.in" ] || mkfifo -m 600 "$DIR/fakesmsc.in"

    bearerbox -v 1 "$DIR/kannel.conf" >>"$DIR/bearerbox.out" 2>&1 </dev/null &
    echo $! >"$DIR/bearerbox.pid"
    wait_for "bearerbox admin port $ADMIN_PORT" bearerbox admin_ok

    # A holder keeps the FIFO's write end open, so fakesmsc never reads end-of-file.
    sleep 2147483647 >"$DIR/fakesmsc.in" 2>/dev/null </dev/null &
    echo $! >"$DIR/fifo-holder.pid"
    "$FAKESMSC" -H 127.0.0.1 -r "$SMSC_PORT" -m -1 -v 0 <"$DIR/fakesmsc.in" \
        >>"$DIR/fakesmsc.out" 2>&1 &
    echo $! >"$DIR/fakesmsc.pid"
    wait_for "fakesmsc to connect on port $SMSC_PORT" fakesmsc smsc_online

    smsbox -v 1 "$DIR/kannel.conf" >>"$DIR/smsbox.out" 2>&1 </dev/null &
    echo $! >"$DIR/smsbox.pid"
    wait_for "smsbox sendsms port $SENDSMS_PORT" smsbox port_open "$SENDSMS_PORT"
    log "running: sendsms http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms, logs in $DIR"
}

stop_pid() { # stop_pid NAME: wait for a clean exit, then TERM, then KILL
    local name="$1"
    [ -f "$DIR/$name.pid" ] || return 0
    local pid
    pid="$(cat "$DIR/$name.pid")"
    local deadline=$((SECONDS + 5))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
}

stop() {
    [ -d "$DIR" ] || return 0
    secrets
    if pid_alive bearerbox; then
        curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/shutdown?password=$ADMIN_PASSWORD" \
            2>/dev/null || true
    fi
    stop_pid smsbox
    stop_pid bearerbox
    stop_pid fakesmsc
    if [ -f "$DIR/fifo-holder.pid" ]; then
        kill "$(cat "$DIR/fifo-holder.pid")" 2>/dev/null || true
        rm -f "$DIR/fifo-holder.pid"
    fi
    wait_for "port $SENDSMS_PORT to close" "" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$SENDSMS_PORT) 2>/dev/null"
}

print_env() {
    secrets
    cat <<EOF
export CONSENT_IVR_KANNEL_SENDSMS_URL=http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms
export CONSENT_IVR_KANNEL_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
export CONSENT_IVR_KANNEL_USERNAME=$USERNAME
export CONSENT_IVR_KANNEL_PASSWORD=$PASSWORD
export CONSENT_IVR_KANNEL_ADMIN_PASSWORD=$ADMIN_PASSWORD
export CONSENT_IVR_KANNEL_DIR=$DIR
export CONSENT_IVR_SMS_INBOUND_TOKEN=$INBOUND_TOKEN
EOF
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) port_open "$SENDSMS_PORT" ;;
env) print_env ;;
*)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
