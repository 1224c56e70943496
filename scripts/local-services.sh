#!/usr/bin/env bash
# Start or stop, in the background, what `func start` talks to locally: the
# project's Key Vault emulator (https://127.0.0.1:8443, standard inventory)
# and Azurite's blob service (http://127.0.0.1:10000, AzureWebJobsStorage=
# UseDevelopmentStorage=true). local.settings.example.json points at both.
#
#   scripts/local-services.sh start    (make local-up)    start both, wait until they answer
#   scripts/local-services.sh stop     (make local-down)  stop both
#   scripts/local-services.sh status
#
# Why this exists: `make emulator` and Azurite both stay in the foreground, so
# a README that runs them one after the other never reaches `func start`.
# Each process writes its pid and log next to its state: .emulator/ (CA,
# settings.json, emulator.pid, emulator.log) and .azurite/ (blob data,
# azurite.pid, azurite.log); both directories are git-ignored and left out of
# the deployment package (.funcignore). Stop only ever signals those pids.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The defaults are what local.settings.example.json expects; the overrides
# exist for tests/build/test_local_run.py (free ports, temporary directories).
EMU_DIR="${LOCAL_EMULATOR_DIR:-.emulator}"
EMU_PORT="${LOCAL_EMULATOR_PORT:-8443}"
AZ_DIR="${LOCAL_AZURITE_DIR:-.azurite}"
AZ_PORT="${LOCAL_AZURITE_PORT:-10000}"
AZURITE=".tools/azurite/node_modules/.bin/azurite-blob"

log() { printf '[local] %s\n' "$*" >&2; }

running() {
    # A pid file whose process is still alive.
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

listening() {
    # bash's /dev/tcp: no nc/ss needed.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() {
    # name pidfile port logfile
    local name="$1" pidfile="$2" port="$3" logfile="$4" i
    for i in $(seq 1 100); do
        if ! running "$pidfile"; then
            log "$name exited; its log ($logfile):"
            tail -n 20 "$logfile" >&2 || true
            rm -f "$pidfile"
            return 1
        fi
        if listening "$port"; then
            return 0
        fi
        sleep 0.2
    done
    log "$name did not listen on 127.0.0.1:$port within 20 s; see $logfile"
    return 1
}

start() {
    mkdir -p "$EMU_DIR" "$AZ_DIR"
    if running "$EMU_DIR/emulator.pid"; then
        log "Key Vault emulator: already running (pid $(cat "$EMU_DIR/emulator.pid"))"
    else
        if listening "$EMU_PORT"; then
            log "port $EMU_PORT is taken by another process (a \`make emulator\` in another terminal?); stop it first"
            exit 1
        fi
        nohup .venv/bin/python -m kvemulator --port "$EMU_PORT" --seed standard --state-dir "$EMU_DIR" \
            >"$EMU_DIR/emulator.log" 2>&1 </dev/null &
        echo $! >"$EMU_DIR/emulator.pid"
        wait_for "Key Vault emulator" "$EMU_DIR/emulator.pid" "$EMU_PORT" "$EMU_DIR/emulator.log"
    fi
    if running "$AZ_DIR/azurite.pid"; then
        log "Azurite: already running (pid $(cat "$AZ_DIR/azurite.pid"))"
    else
        if listening "$AZ_PORT"; then
            log "port $AZ_PORT is taken by another process (an Azurite started by hand?); stop it first"
            exit 1
        fi
        nohup "$AZURITE" --disableTelemetry --silent --location "$AZ_DIR" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
            >"$AZ_DIR/azurite.log" 2>&1 </dev/null &
        echo $! >"$AZ_DIR/azurite.pid"
        wait_for "Azurite" "$AZ_DIR/azurite.pid" "$AZ_PORT" "$AZ_DIR/azurite.log"
    fi
    cat <<MSG
Key Vault emulator: https://127.0.0.1:$EMU_PORT (vault kv-local, standard inventory; log $EMU_DIR/emulator.log)
  CA certificate:   $(cd "$EMU_DIR" && pwd)/ca.pem   (ROTATION_VAULT_CA_BUNDLE)
  its settings:     $(cd "$EMU_DIR" && pwd)/settings.json (already in local.settings.example.json)
Azurite blob:       http://127.0.0.1:$AZ_PORT (AzureWebJobsStorage=UseDevelopmentStorage=true; data and log in $AZ_DIR/)
Stop both with: make local-down
MSG
}

stop_all() {
    # SIGTERM to every running service first, then wait for each (both take
    # about two seconds to shut down), SIGKILL after five.
    local entry name pidfile pid i
    local -a waiting=()
    for entry in "Key Vault emulator:$EMU_DIR/emulator.pid" "Azurite:$AZ_DIR/azurite.pid"; do
        name="${entry%%:*}"
        pidfile="${entry#*:}"
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            waiting+=("$entry")
        else
            rm -f "$pidfile"
            log "$name: not running"
        fi
    done
    for entry in "${waiting[@]}"; do
        name="${entry%%:*}"
        pidfile="${entry#*:}"
        pid="$(cat "$pidfile")"
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
        log "$name: stopped (pid $pid)"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop_all ;;
    status)
        for entry in "Key Vault emulator:$EMU_DIR/emulator.pid" "Azurite:$AZ_DIR/azurite.pid"; do
            if running "${entry#*:}"; then
                log "${entry%%:*}: running (pid $(cat "${entry#*:}"))"
            else
                log "${entry%%:*}: not running"
            fi
        done
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
