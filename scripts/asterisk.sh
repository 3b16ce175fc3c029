#!/usr/bin/env bash
# Install and run private Asterisk instances for the tests and the demo.
#
#   scripts/asterisk.sh install VERSION   # 22: Debian sid chroot (cached); 16: bullseye packages on the host
#   scripts/asterisk.sh start   VERSION   # start a private instance, wait until ARI answers
#   scripts/asterisk.sh stop    VERSION   # graceful stop, then kill; unmount bind mounts
#   scripts/asterisk.sh status  VERSION   # exit 0 if the instance runs and ARI answers
#   scripts/asterisk.sh env     VERSION   # shell-sourceable CONSENT_IVR_ARI_* / AMI / ASTERISK_* lines
#   scripts/asterisk.sh rx      VERSION "core show channels"   # run a CLI command on the instance
#   scripts/asterisk.sh reload  VERSION   # re-copy the dialplan files and run "dialplan reload"
#
# VERSION is 16 or 22. Both instances can run at the same time (different ports and directories).
#
# Environment (all optional):
#   CONSENT_IVR_CACHE               cache dir for the 22 chroot       (default /var/cache/consent-ivr)
#   CONSENT_IVR_VAR                 parent of the instance dirs       (default REPO/var)
#   CONSENT_IVR_ARI_PASSWORD        ARI + AMI password; if unset one is generated at the first start
#                                   and kept in INSTANCE/ari-password (mode 600)
#   CONSENT_IVR_AST22_HTTP_PORT     ARI/HTTP port of 22               (default 18088)
#   CONSENT_IVR_AST22_AMI_PORT      AMI port of 22                    (default 15038)
#   CONSENT_IVR_AST16_HTTP_PORT     ARI/HTTP port of 16               (default 16088)
#   CONSENT_IVR_AST16_AMI_PORT      AMI port of 16                    (default 16038)
#   CONSENT_IVR_AST22_SIP_PORT      PJSIP UDP port of 22 on 127.0.0.1 (default 15060)
#   CONSENT_IVR_AST16_SIP_PORT      PJSIP UDP port of 16 on 127.0.0.1 (default 16060)
#   CONSENT_IVR_AST22_SIPP_PORT     where 22 sends calls to the test phone (SIPp on 127.0.0.2; default 15062)
#   CONSENT_IVR_AST16_SIPP_PORT     where 16 sends calls to the test phone (SIPp on 127.0.0.2; default 16062)
#   CONSENT_IVR_AST22_RTP_PORTS     RTP port range of 22, FIRST-LAST  (default 20000-21999)
#   CONSENT_IVR_AST16_RTP_PORTS     RTP port range of 16, FIRST-LAST  (default 22000-23999)
#   CONSENT_IVR_SHARE_DIRS          colon-separated absolute host dirs bind-mounted into the 22 chroot
#                                   at the same path (so "sound:/abs/path/name" works on 22)
#   CONSENT_IVR_DIALPLAN_DIRS       colon-separated dirs whose *.conf are #included by extensions.conf
#                                   (default REPO/dialplan)
#   CONSENT_IVR_ASTERISK_VERBOSE    verbose level written to the instance log (default 0 = off)
#   CONSENT_IVR_ASTERISK_START_TIMEOUT  seconds "start" waits for ARI (default 60)
#   CONSENT_IVR_DEBIAN_MIRROR       Debian mirror (default: URIs of /etc/apt/sources.list.d/debian.sources)
#
# Layout. The instance dir INSTANCE=$CONSENT_IVR_VAR/asterisk-VERSION holds everything the instance
# owns: etc/ (generated config + copied dialplan/), spool/ (recording/ = ARI stored recordings),
# run/ (pid, CLI socket), log/ (messages.log, console.log; previous run in *.1), lib/ (astdb),
# keys/, data/ (symlinks to the packaged sounds etc.), agi-bin/ and ari-password (mode 600).
# The one exception is the HTTP media cache dir, /tmp/astVERSION (see media_cache_dir).
# For 22 the instance dir is bind-mounted into the chroot at the SAME absolute path, as are the
# CONSENT_IVR_SHARE_DIRS: paths are identical inside and outside the chroot, so Asterisk and the
# Python service can exchange file names without translation. Run "stop 22" before deleting the
# cache dir: while mounted, an "rm -rf" of the chroot would go into the repo and the share dirs.
#
# Needs root (debootstrap, apt, chroot, mount). Everything binds to 127.0.0.1 only.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CONSENT_IVR_CACHE:-/var/cache/consent-ivr}
VAR=$(realpath -m "${CONSENT_IVR_VAR:-$REPO/var}")
ARI_USER=consent-ivr
START_TIMEOUT=${CONSENT_IVR_ASTERISK_START_TIMEOUT:-60}
VERBOSE=${CONSENT_IVR_ASTERISK_VERBOSE:-0}

AST22_ROOT=$CACHE/asterisk-22-root
AST22_STAMP=$CACHE/asterisk-22-root.stamp
AST16_VERSION='1:16.28.0~dfsg-0+deb11u4'
AST16_PACKAGES=(asterisk asterisk-modules asterisk-voicemail asterisk-config)

# The environment Asterisk is started with: nothing from the caller leaks into it.
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

log() { printf 'asterisk.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (apt, chroot, mount)"; }

# apt-get that waits for a concurrent apt/dpkg run instead of failing on the lock.
apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -q "$@"
}

debian_mirror() {
    if [[ -n ${CONSENT_IVR_DEBIAN_MIRROR:-} ]]; then
        echo "$CONSENT_IVR_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------------------------
# Per-version settings
# ---------------------------------------------------------------------------------------------

# Sets: V INST HTTP_PORT AMI_PORT SIP_PORT SIPP_PORT RTP_PORTS ROOT (chroot dir, empty for 16)
# RUNP (command prefix) MODDIR
select_version() {
    V=$1
    INST=$VAR/asterisk-$V
    case $V in
        22)
            HTTP_PORT=${CONSENT_IVR_AST22_HTTP_PORT:-18088}
            AMI_PORT=${CONSENT_IVR_AST22_AMI_PORT:-15038}
            SIP_PORT=${CONSENT_IVR_AST22_SIP_PORT:-15060}
            SIPP_PORT=${CONSENT_IVR_AST22_SIPP_PORT:-15062}
            RTP_PORTS=${CONSENT_IVR_AST22_RTP_PORTS:-20000-21999}
            ROOT=$AST22_ROOT
            RUNP=(chroot "$ROOT")
            # multiarch dir: x86_64-linux-gnu here, but do not hard-code it
            MODDIR=/usr/lib/x86_64-linux-gnu/asterisk/modules
            local d
            for d in "$ROOT"/usr/lib/*/asterisk/modules; do
                [[ -d $d ]] && MODDIR=${d#"$ROOT"}
            done
            ;;
        16)
            HTTP_PORT=${CONSENT_IVR_AST16_HTTP_PORT:-16088}
            AMI_PORT=${CONSENT_IVR_AST16_AMI_PORT:-16038}
            SIP_PORT=${CONSENT_IVR_AST16_SIP_PORT:-16060}
            SIPP_PORT=${CONSENT_IVR_AST16_SIPP_PORT:-16062}
            RTP_PORTS=${CONSENT_IVR_AST16_RTP_PORTS:-22000-23999}
            ROOT=
            RUNP=()
            MODDIR=/usr/lib/asterisk/modules
            ;;
        *) die "unsupported Asterisk version '$V' (use 16 or 22)" ;;
    esac
    CONF=$INST/etc/asterisk.conf
    # The ports a running instance was started with win over the environment, so that
    # "env"/"status" of a running instance stay correct whatever the caller's environment.
    if [[ -f $INST/run/ports ]] && is_running; then
        # shellcheck source=/dev/null
        . "$INST/run/ports"
    fi
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

installed_22() { [[ -f $AST22_STAMP && -x $AST22_ROOT/usr/sbin/asterisk ]]; }

installed_16() {
    local out
    out=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}\n' "${AST16_PACKAGES[@]}" 2>/dev/null || true)
    [[ $(grep -cFx "ii $AST16_VERSION" <<<"$out") -eq ${#AST16_PACKAGES[@]} ]]
}

is_installed() {
    case $1 in 22) installed_22 ;; 16) installed_16 ;; esac
}

install_22() {
    installed_22 && return 0
    need_root
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.install-22.lock"
    flock 8
    installed_22 && return 0

    command -v debootstrap >/dev/null || apt_get install -y debootstrap

    # Build in a side directory and rename it at the end: a half-built root never has the final name.
    local partial=$AST22_ROOT.partial mirror t0=$SECONDS
    mirror=$(debian_mirror)
    if [[ -e $partial ]]; then
        log "removing unfinished $partial"
        # --one-file-system: never follow a bind mount out of the chroot
        rm -rf --one-file-system "$partial"
    fi
    if [[ -e $AST22_ROOT ]]; then
        # The root exists but the stamp does not: an older interrupted run. Refuse to delete
        # through bind mounts of a running instance.
        if findmnt -rn -o TARGET | grep -q "^$AST22_ROOT/"; then
            die "$AST22_ROOT has mounts below it; run 'scripts/asterisk.sh stop 22' first"
        fi
        rm -rf --one-file-system "$AST22_ROOT"
    fi
    log "debootstrap Debian sid + asterisk into $partial (mirror $mirror); takes about a minute"
    debootstrap --variant=minbase --include=asterisk,asterisk-modules sid "$partial" "$mirror" \
        >"$CACHE/debootstrap-22.log" 2>&1 \
        || { tail -n 30 "$CACHE/debootstrap-22.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap-22.log)"; }
    rm -f "$partial"/var/cache/apt/archives/*.deb
    # /tmp must be world-writable with the sticky bit (bucket/media-cache temp files go there).
    mkdir -p "$partial/tmp"
    chmod 1777 "$partial/tmp"
    mv "$partial" "$AST22_ROOT"
    # shellcheck disable=SC2016  # ${Version} is a dpkg-query field, not a shell expansion
    chroot "$AST22_ROOT" dpkg-query -W -f='${Version}\n' asterisk >"$AST22_STAMP.tmp"
    mv "$AST22_STAMP.tmp" "$AST22_STAMP"
    log "installed Asterisk $(cat "$AST22_STAMP") in $AST22_ROOT in $((SECONDS - t0)) s"
}

# Replace a file only when its content changes (keeps "install" free of side effects when re-run).
write_if_changed() {
    local path=$1 content=$2
    if [[ ! -f $path || $(cat "$path") != "$content" ]]; then
        printf '%s\n' "$content" >"$path"
        return 0
    fi
    return 1
}

install_16() {
    installed_16 && return 0
    need_root
    local mirror
    mirror=$(debian_mirror)
    # bullseye main only: bullseye-security lists a newer asterisk whose files the mirror lacks.
    write_if_changed /etc/apt/sources.list.d/consent-ivr-bullseye.sources "Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" || true
    # Pinned low: only packages we ask for by version (and their missing deps) come from bullseye.
    write_if_changed /etc/apt/preferences.d/consent-ivr-bullseye "Package: *
Pin: release n=bullseye
Pin-Priority: 100" || true

    # The Debian postinst would start a system Asterisk with the stock config (chan_sip/pjsip on
    # 0.0.0.0). Deny service starts during the install unless a policy-rc.d already does.
    local policy=/usr/sbin/policy-rc.d marker='# consent-ivr temporary policy' own_policy=
    if [[ -f $policy ]] && grep -qF "$marker" "$policy"; then
        rm -f "$policy"   # left over by a killed run
    fi
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n%s\nexit 101\n' "$marker" >"$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    apt_get update
    local pkgs=() p
    for p in "${AST16_PACKAGES[@]}"; do pkgs+=("$p=$AST16_VERSION"); done
    apt_get install -y --no-install-recommends "${pkgs[@]}"

    if [[ -n $own_policy ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
    stop_system_asterisk
    installed_16 || die "Asterisk $AST16_VERSION is not installed after apt-get"
    log "installed Asterisk $AST16_VERSION on the host"
}

# Make sure the Debian package leaves no system Asterisk running or enabled.
stop_system_asterisk() {
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now asterisk.service >/dev/null 2>&1 || true
    else
        update-rc.d asterisk disable >/dev/null 2>&1 || true
        invoke-rc.d asterisk stop >/dev/null 2>&1 || true
    fi
    local pid
    pid=$(cat /run/asterisk/asterisk.pid 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        log "stopping the system Asterisk (pid $pid) started by the package"
        /usr/sbin/asterisk -rx 'core stop now' >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        wait_gone "$pid" 15 || kill -9 "$pid" 2>/dev/null || true
    fi
}

cmd_install() {
    case $1 in 22) install_22 ;; 16) install_16 ;; *) die "unsupported version '$1'" ;; esac
}

# ---------------------------------------------------------------------------------------------
# Instance helpers
# ---------------------------------------------------------------------------------------------

instance_pid() { cat "$INST/run/asterisk.pid" 2>/dev/null || true; }

# Running = the pid in the pid file is alive and is an Asterisk started with OUR config file
# (a stale pid file whose pid got reused does not count).
is_running() {
    local pid
    pid=$(instance_pid)
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-C $CONF "
}

wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

password() {
    if [[ -s $INST/ari-password ]]; then
        cat "$INST/ari-password"
    elif [[ -n ${CONSENT_IVR_ARI_PASSWORD:-} ]]; then
        echo "$CONSENT_IVR_ARI_PASSWORD"
    else
        die "no password yet: start the instance first (scripts/asterisk.sh start $V)"
    fi
}

# Effective password for a start: the environment wins, else the stored one, else a new one.
# It is always stored in INSTANCE/ari-password (mode 600) so env/status of a running instance work.
ensure_password() {
    local pw=${CONSENT_IVR_ARI_PASSWORD:-}
    if [[ -z $pw && -s $INST/ari-password ]]; then
        return 0
    fi
    if [[ -z $pw ]]; then
        pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    fi
    # Restrict to URL-safe characters: the password is used in api_key=user:pass URLs and in
    # Asterisk config files (where ';' starts a comment).
    [[ $pw =~ ^[A-Za-z0-9._~-]+$ ]] || die "CONSENT_IVR_ARI_PASSWORD may only contain A-Z a-z 0-9 . _ ~ -"
    (umask 077 && printf '%s\n' "$pw" >"$INST/ari-password")
    chmod 600 "$INST/ari-password"
}

# HTTP status of GET /ari/asterisk/info (000 = no answer). Credentials go through a curl config
# on stdin so the password never appears in a process list.
ari_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 -K - \
        "http://127.0.0.1:$HTTP_PORT/ari/asterisk/info?only=system" <<<"user = \"$ARI_USER:$(password)\"" || true
}

healthy() { [[ $(ari_status) == 200 ]]; }

port_in_use() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
udp_port_in_use() { [[ -n $(ss -Hlun "sport = :$1" 2>/dev/null) ]]; }

fail_with_log() {
    log "$1"
    local f
    for f in "$INST/log/messages.log" "$INST/log/console.log"; do
        [[ -s $f ]] || continue
        log "---- tail of $f"
        tail -n 40 "$f" >&2
    done
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

modules_conf_22() {
    # autoload=no breaks ARI on 22 (its websocket/pjproject helpers moved to modules that are
    # only found through autoload), so load everything and list what must NOT load: every
    # channel driver or service that opens a network port or talks to outside systems, and
    # backends we do not configure (they only slow the start and fill the log).
    cat <<'EOF'
[modules]
autoload = yes
; VoIP channel drivers and everything that binds a port of its own, but PJSIP: it binds
; 127.0.0.1 only and carries the calls to and from the test phone (SIPp)
noload => chan_iax2.so
noload => chan_unistim.so
noload => chan_skinny.so
noload => chan_mgcp.so
noload => chan_sip.so
noload => chan_motif.so
noload => chan_ooh323.so
noload => chan_h323.so
noload => chan_dahdi.so
noload => chan_console.so
noload => chan_alsa.so
noload => chan_oss.so
noload => chan_mobile.so
noload => chan_phone.so
noload => chan_rtp.so
noload => chan_audiosocket.so
noload => res_audiosocket.so
noload => pbx_dundi.so
noload => res_xmpp.so
noload => res_hep.so
noload => res_hep_rtcp.so
noload => res_hep_pjsip.so
noload => res_stun_monitor.so
noload => res_snmp.so
noload => res_statsd.so
noload => res_prometheus.so
noload => res_phoneprov.so
noload => res_pjsip_phoneprov_provider.so
noload => res_smdi.so
noload => res_corosync.so
noload => res_fax.so
noload => res_fax_spandsp.so
noload => app_fax.so
; backends / integrations we do not configure
noload => res_config_ldap.so
noload => res_config_pgsql.so
noload => res_config_mysql.so
noload => res_config_odbc.so
noload => res_config_sqlite3.so
noload => res_odbc.so
noload => res_odbc_transaction.so
noload => func_odbc.so
noload => cdr_adaptive_odbc.so
noload => cdr_odbc.so
noload => cdr_pgsql.so
noload => cdr_radius.so
noload => cdr_tds.so
noload => cdr_sqlite3_custom.so
noload => cdr_csv.so
noload => cdr_custom.so
noload => cdr_manager.so
noload => cdr_syslog.so
noload => cel_odbc.so
noload => cel_pgsql.so
noload => cel_radius.so
noload => cel_tds.so
noload => cel_sqlite3_custom.so
noload => cel_custom.so
noload => cel_manager.so
noload => res_calendar.so
noload => res_calendar_caldav.so
noload => res_calendar_ews.so
noload => res_calendar_exchange.so
noload => res_calendar_icalendar.so
noload => app_festival.so
noload => app_voicemail.so
noload => app_voicemail_imap.so
noload => app_voicemail_odbc.so
noload => app_jack.so
noload => pbx_lua.so
noload => pbx_ael.so
noload => res_ael_share.so
noload => app_minivm.so
noload => app_queue.so
noload => app_agent_pool.so
noload => app_confbridge.so
noload => app_meetme.so
noload => res_parking.so
noload => res_srtp.so
noload => res_geolocation.so
noload => res_speech_aeap.so
noload => res_aeap.so
noload => res_stir_shaken.so
noload => res_resolver_unbound.so
noload => res_crypto.so
noload => func_aes.so
noload => res_clialiases.so
noload => res_adsi.so
noload => app_adsiprog.so
noload => app_getcpeid.so
noload => app_alarmreceiver.so
noload => app_followme.so
noload => app_page.so
noload => app_audiosocket.so
noload => func_pjsip_aor.so
noload => func_pjsip_contact.so
noload => func_pjsip_endpoint.so
noload => res_rtp_multicast.so
noload => bridge_native_rtp.so
noload => res_stasis_test.so
noload => app_test.so
EOF
    # PJSIP modules that need what is not loaded above, or talk to provisioning servers
    local m
    for m in res_pjsip_geolocation res_pjsip_stir_shaken res_pjsip_outbound_publish \
        res_pjsip_publish_asterisk; do
        printf 'noload => %s.so\n' "$m"
    done
}

modules_conf_16() {
    # 16 loads only what is listed. chan_local, the HTTP server, AMI, Wait() and the other pbx
    # builtins are part of the core there.
    local m
    printf '[modules]\nautoload = no\n'
    for m in \
        res_timing_timerfd res_sorcery_config res_sorcery_memory res_sorcery_astdb \
        res_http_websocket res_stasis res_stasis_answer res_stasis_playback res_stasis_recording \
        res_stasis_snoop res_stasis_device_state \
        res_ari res_ari_model res_ari_applications res_ari_asterisk res_ari_bridges \
        res_ari_channels res_ari_device_states res_ari_endpoints res_ari_events \
        res_ari_playbacks res_ari_recordings res_ari_sounds \
        res_curl res_http_media_cache res_musiconhold res_speech res_agi res_clioriginate \
        res_pjproject res_pjsip res_pjsip_session res_pjsip_pubsub res_pjsip_sdp_rtp chan_pjsip \
        res_pjsip_endpoint_identifier_ip res_pjsip_caller_id res_pjsip_rfc3326 res_rtp_asterisk \
        app_amd \
        bridge_simple bridge_softmix bridge_holding bridge_builtin_features chan_bridge_media \
        app_stasis app_dial app_playback app_senddtmf app_playtones app_record app_mixmonitor app_read \
        app_echo app_exec app_stack app_userevent app_verbose app_while app_originate \
        func_callerid func_logic func_strings func_channel func_global func_math func_rand \
        func_timeout func_cut func_uri \
        pbx_config \
        format_wav format_pcm format_sln format_gsm format_wav_gsm \
        codec_ulaw codec_alaw codec_gsm codec_resample codec_a_mu; do
        printf 'load => %s.so\n' "$m"
    done
}

write_configs() {
    local etc=$INST/etc pw
    pw=$(password)
    local verbose_channel=
    [[ $VERBOSE -gt 0 ]] && verbose_channel=",verbose($VERBOSE)"

    cat >"$etc/asterisk.conf" <<EOF
; generated by scripts/asterisk.sh -- every directory is private to this instance
[directories]
astetcdir => $INST/etc
astmoddir => $MODDIR
astvarlibdir => $INST/lib
astdbdir => $INST/lib
astkeydir => $INST/keys
astdatadir => $INST/data
astagidir => $INST/agi-bin
astspooldir => $INST/spool
astrundir => $INST/run
astlogdir => $INST/log
astsbindir => /usr/sbin
astcachedir => $(media_cache_dir)

[options]
verbose = $VERBOSE
debug = 0
hideconnect = yes          ; no "remote console connected" lines for every rx
dontwarn = yes
lockconfdir = no
defaultlanguage = en
maxfiles = 65536           ; many concurrent calls = many fds
cache_media_frames = yes
transmit_silence = no
EOF

    cat >"$etc/modules.conf" <<EOF
; generated by scripts/asterisk.sh
$("modules_conf_$V")
EOF

    cat >"$etc/logger.conf" <<EOF
; generated by scripts/asterisk.sh -- log to INSTANCE/log/messages.log only, nothing on the console
[general]
dateformat = %F %T.%3q

[logfiles]
messages.log => notice,warning,error$verbose_channel
EOF

    cat >"$etc/http.conf" <<EOF
; generated by scripts/asterisk.sh
[general]
enabled = yes
bindaddr = 127.0.0.1
bindport = $HTTP_PORT
enablestatic = no
sessionlimit = 1000
EOF

    (umask 077
    cat >"$etc/ari.conf" <<EOF
; generated by scripts/asterisk.sh
[general]
enabled = yes
pretty = no
websocket_write_timeout = 1000

[$ARI_USER]
type = user
read_only = no
password = $pw
password_format = plain
EOF
    cat >"$etc/manager.conf" <<EOF
; generated by scripts/asterisk.sh
[general]
enabled = yes
webenabled = no
bindaddr = 127.0.0.1
port = $AMI_PORT
displayconnects = no

[$ARI_USER]
secret = $pw
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
writetimeout = 1000
EOF
    )

    # The person's phone in the tests: SIPp on 127.0.0.2 (calls to it go to its port there;
    # calls from it are identified by that address, no registration, no auth).
    cat >"$etc/pjsip.conf" <<EOF
; generated by scripts/asterisk.sh
[global]
type = global
user_agent = consent-ivr-test

[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:$SIP_PORT

[sipp]
type = endpoint
transport = transport-udp
context = consent-inbound
disallow = all
allow = alaw,ulaw
dtmf_mode = rfc4733
direct_media = no
aors = sipp

[sipp]
type = aor
contact = sip:127.0.0.2:$SIPP_PORT

[sipp]
type = identify
endpoint = sipp
match = 127.0.0.2
EOF
    printf '[general]\nrtpstart = %s\nrtpend = %s\n' "${RTP_PORTS%-*}" "${RTP_PORTS#*-}" >"$etc/rtp.conf"

    # CDRs are not used; turning the engine off saves work per call.
    printf '[general]\nenable = no\n' >"$etc/cdr.conf"
    printf '[general]\nenable = no\n' >"$etc/cel.conf"
    # Defaults are fine for these; empty files only keep "Unable to load config" errors out of
    # the log so that real errors stand out.
    local f
    for f in ccss features acl udptl websocket_client chan_websocket res_http_media_cache musiconhold \
        amd pjproject; do
        : >"$etc/$f.conf"
    done
    # Call-progress tones (busy, ring...) need the packaged country table.
    if [[ -f $ROOT/etc/asterisk/indications.conf ]]; then
        cp "$ROOT/etc/asterisk/indications.conf" "$etc/indications.conf"
    fi

    copy_dialplan
}

# Copy every *.conf of the dialplan dirs into INSTANCE/etc/dialplan (inside the chroot for 22)
# and regenerate extensions.conf with one #include per file.
copy_dialplan() {
    local etc=$INST/etc dirs d f n=0 includes=()
    rm -rf "$etc/dialplan"
    mkdir -p "$etc/dialplan"
    IFS=: read -r -a dirs <<<"${CONSENT_IVR_DIALPLAN_DIRS:-$REPO/dialplan}"
    for d in "${dirs[@]}"; do
        [[ -d $d ]] || continue
        for f in "$d"/*.conf; do
            [[ -f $f ]] || continue
            # numbered prefix keeps the order and avoids clashes between dirs
            n=$((n + 1))
            cp "$f" "$etc/dialplan/$(printf '%02d' "$n")-${f##*/}"
            includes+=("#include \"dialplan/$(printf '%02d' "$n")-${f##*/}\"")
        done
    done
    {
        echo '; generated by scripts/asterisk.sh -- the contexts live in the dialplan/ files'
        printf '[general]\nstatic = yes\nwriteprotect = yes\n\n[globals]\n\n[default]\n\n'
        [[ ${#includes[@]} -eq 0 ]] || printf '%s\n' "${includes[@]}"
    } >"$etc/extensions.conf"
}

# Where the HTTP media cache (sound:http://...) downloads files. Deliberately a SHORT path:
# Asterisk 16 and 22 copy the cached file's path into a buffer sized from the URI
# (len(uri) + len(language) + 4 bytes), so a long cache dir truncates the path and playback
# fails with "File http://... does not exist in any format". With /tmp/astNN (chroot-private
# for 22) every URI of 22+ characters works.
media_cache_dir() { echo "/tmp/ast$V"; }

make_instance_dirs() {
    local d
    for d in etc spool/recording spool/tmp run log lib keys data agi-bin; do
        mkdir -p "$INST/$d"
    done
    mkdir -p "$ROOT$(media_cache_dir)"
    chmod 700 "$ROOT$(media_cache_dir)"
    # data/ = private astdatadir: link the packaged content (sounds, moh, documentation, ...).
    # Link targets are paths as Asterisk sees them (inside the chroot for 22).
    local sys=$ROOT/usr/share/asterisk e
    for e in "$sys"/*; do
        [[ -e $e ]] || continue
        e=${e##*/}
        [[ -L $INST/data/$e ]] || ln -sfn "/usr/share/asterisk/$e" "$INST/data/$e"
    done
}

# 22 only: bind-mount the instance dir and the share dirs into the chroot at the same path.
# Mounts we made are recorded in INSTANCE/run/mounts so that stop unmounts exactly those.
mount_into_chroot() {
    local paths=("$INST") shares p target
    IFS=: read -r -a shares <<<"${CONSENT_IVR_SHARE_DIRS:-}"
    for p in "${shares[@]}"; do
        [[ -n $p ]] || continue
        [[ $p == /* ]] || die "CONSENT_IVR_SHARE_DIRS entries must be absolute: '$p'"
        p=$(realpath -m "$p")
        # already visible through the instance dir
        [[ $p == "$INST" || $p == "$INST"/* ]] && continue
        mkdir -p "$p"
        paths+=("$p")
    done
    for p in "${paths[@]}"; do
        target=$ROOT$p
        mkdir -p "$target"
        if ! mountpoint -q "$target"; then
            mount --bind "$p" "$target"
        fi
        # the record lives in the host path of the instance dir (same files as in the chroot)
        grep -qxF "$target" "$INST/run/mounts" 2>/dev/null || echo "$target" >>"$INST/run/mounts"
    done
}

# Instance dirs of the other Asterisks running now (from their -C argument).
other_instances() {
    local pid conf
    for pid in $(pgrep -x asterisk || true); do
        conf=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n '/^-C$/{n;p;q}')
        conf=${conf%/etc/asterisk.conf}
        [[ -n $conf && $conf != "$INST" ]] && echo "$conf"
    done
    return 0
}

# A share dir is mounted once into the chroot for every instance that names it: leave it
# while another running instance still uses it.
shared_with_other() {
    local other
    while read -r other; do
        grep -qxF "$1" "$other/run/mounts" 2>/dev/null && return 0
    done < <(other_instances)
    return 1
}

unmount_from_chroot() {
    [[ -n $ROOT ]] || return 0
    local mounts=() i
    if [[ -f $INST/run/mounts ]]; then
        mapfile -t mounts <"$INST/run/mounts"
    fi
    # The instance dir itself is always ours, even if the record got lost.
    mounts=("$ROOT$INST" "${mounts[@]}")
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        [[ -n ${mounts[i]} ]] || continue
        if [[ ${mounts[i]} != "$ROOT$INST" ]] && shared_with_other "${mounts[i]}"; then
            continue
        fi
        if mountpoint -q "${mounts[i]}"; then
            umount "${mounts[i]}" || umount -l "${mounts[i]}"
        fi
    done
    rm -f "$INST/run/mounts"
}

# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------

lock_instance() {
    mkdir -p "$VAR"
    exec 9>"$VAR/.asterisk-$V.lock"
    flock 9
}

cmd_start() {
    need_root
    is_installed "$V" || cmd_install "$V"
    lock_instance

    if is_running; then
        if wait_healthy; then
            log "Asterisk $V already running on 127.0.0.1:$HTTP_PORT (pid $(instance_pid))"
            return 0
        fi
        fail_with_log "Asterisk $V runs (pid $(instance_pid)) but ARI does not answer on port $HTTP_PORT; try 'scripts/asterisk.sh stop $V'"
    fi

    local p
    for p in "$HTTP_PORT" "$AMI_PORT"; do
        port_in_use "$p" && die "port 127.0.0.1:$p is already in use (another instance? set CONSENT_IVR_AST${V}_*_PORT)"
    done
    udp_port_in_use "$SIP_PORT" && die "UDP port 127.0.0.1:$SIP_PORT is already in use (another instance? set CONSENT_IVR_AST${V}_SIP_PORT)"

    make_instance_dirs
    ensure_password
    rm -f "$INST/run/asterisk.pid" "$INST/run/asterisk.ctl"
    printf 'HTTP_PORT=%s\nAMI_PORT=%s\nSIP_PORT=%s\nSIPP_PORT=%s\nRTP_PORTS=%s\n' \
        "$HTTP_PORT" "$AMI_PORT" "$SIP_PORT" "$SIPP_PORT" "$RTP_PORTS" >"$INST/run/ports"
    write_configs
    [[ -z $ROOT ]] || mount_into_chroot

    # one log per run (the previous run's is kept as *.1)
    local f
    for f in messages.log console.log; do
        [[ ! -f $INST/log/$f ]] || mv -f "$INST/log/$f" "$INST/log/$f.1"
    done
    # setsid: the instance must survive the caller's process group (pytest, CI step).
    # -f: stay in the foreground (we background it ourselves); -U root: no privilege drop,
    # the instance files belong to the caller (root) anyway.
    # 8>&- 9>&-: do not hand our lock files to Asterisk, it would hold the locks forever.
    setsid "${CLEAN_ENV[@]}" "${RUNP[@]}" /usr/sbin/asterisk -C "$CONF" -f -U root \
        </dev/null >>"$INST/log/console.log" 2>&1 8>&- 9>&- &
    local launcher=$!

    local t0=$SECONDS
    until healthy; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            [[ -z $ROOT ]] || unmount_from_chroot
            fail_with_log "Asterisk $V exited during start"
        fi
        if ((SECONDS - t0 >= START_TIMEOUT)); then
            kill -9 "$launcher" 2>/dev/null || true
            [[ -z $ROOT ]] || unmount_from_chroot
            fail_with_log "Asterisk $V: ARI did not answer 200 on 127.0.0.1:$HTTP_PORT within $START_TIMEOUT s"
        fi
        sleep 0.2
    done
    port_in_use "$AMI_PORT" || log "warning: AMI is not listening on 127.0.0.1:$AMI_PORT"
    log "Asterisk $V ready on 127.0.0.1:$HTTP_PORT (AMI $AMI_PORT) after $((SECONDS - t0)) s, pid $launcher"
}

wait_healthy() {
    local t0=$SECONDS
    until healthy; do
        is_running || return 1
        ((SECONDS - t0 < START_TIMEOUT)) || return 1
        sleep 0.2
    done
}

cmd_stop() {
    need_root
    lock_instance
    local pid
    pid=$(instance_pid)
    if is_running; then
        # "core stop now" hangs up the channels and exits; fall back to signals if it hangs.
        timeout 10 "${RUNP[@]}" /usr/sbin/asterisk -C "$CONF" -rx 'core stop now' >/dev/null 2>&1 || true
        if ! wait_gone "$pid" 15; then
            log "Asterisk $V (pid $pid) did not stop, sending TERM"
            kill "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || { log "sending KILL"; kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
        fi
    fi
    unmount_from_chroot
    rm -f "$INST/run/asterisk.pid" "$INST/run/asterisk.ctl" "$INST/run/ports"
}

cmd_status() {
    is_running && healthy
}

cmd_rx() {
    [[ $# -gt 0 ]] || die "usage: scripts/asterisk.sh rx VERSION 'cli command'"
    is_running || die "Asterisk $V is not running"
    "${RUNP[@]}" /usr/sbin/asterisk -C "$CONF" -rx "$*"
}

cmd_reload() {
    is_running || die "Asterisk $V is not running"
    copy_dialplan
    cmd_rx 'dialplan reload' >/dev/null
}

# Quote a value for sh only when needed.
shq() {
    if [[ $1 =~ ^[A-Za-z0-9_./:@%+,=-]*$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

asterisk_version() {
    local json ver
    if is_running; then
        json=$(curl -s --max-time 2 -K - "http://127.0.0.1:$HTTP_PORT/ari/asterisk/info?only=system" \
            <<<"user = \"$ARI_USER:$(password)\"" || true)
        ver=$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$json")
    fi
    if [[ -z ${ver:-} ]] && is_installed "$V"; then
        # "Asterisk 22.x.y~dfsg+..." -> "22.x.y~dfsg+..."
        ver=$("${RUNP[@]}" /usr/sbin/asterisk -V 2>/dev/null | sed -n 's/^Asterisk //p')
    fi
    echo "${ver:-unknown}"
}

cmd_env() {
    local rx
    rx=$(printf '%s ' "${RUNP[@]}" /usr/sbin/asterisk -C "$CONF" -rx)
    echo "CONSENT_IVR_ARI_URL=http://127.0.0.1:$HTTP_PORT"
    echo "CONSENT_IVR_ARI_USER=$ARI_USER"
    echo "CONSENT_IVR_ARI_PASSWORD=$(shq "$(password)")"
    echo "CONSENT_IVR_AMI_HOST=127.0.0.1"
    echo "CONSENT_IVR_AMI_PORT=$AMI_PORT"
    echo "CONSENT_IVR_SIP_PORT=$SIP_PORT"
    echo "CONSENT_IVR_SIPP_PORT=$SIPP_PORT"
    echo "ASTERISK_SPOOL=$(shq "$INST/spool")"
    echo "ASTERISK_VERSION=$(shq "$(asterisk_version)")"
    echo "ASTERISK_RX=$(shq "${rx% }")"
}

main() {
    [[ $# -ge 2 ]] || usage
    local cmd=$1
    shift
    case $cmd in
        install) cmd_install "$1" ;;
        start | stop | status | env | rx | reload)
            select_version "$1"
            shift
            "cmd_$cmd" "$@"
            ;;
        *) usage ;;
    esac
}

main "$@"
