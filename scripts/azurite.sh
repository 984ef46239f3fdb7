#!/usr/bin/env bash
# Azurite (table service only) for the lucius-table tests.
#
#   scripts/azurite.sh start   # install into ./.azurite if missing, start on 127.0.0.1:10002
#   scripts/azurite.sh stop    # stop the instance this script started
#   scripts/azurite.sh status  # say whether it runs and answers
#
# In-memory persistence: every start is empty. Override the port with AZURITE_TABLE_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.azurite"
PID_FILE="$DIR/azurite-table.pid"
LOG_FILE="$DIR/azurite-table.log"
HOST=127.0.0.1
PORT="${AZURITE_TABLE_PORT:-10002}"
VERSION="${AZURITE_VERSION:-3.37.0}"
BIN="$DIR/node_modules/.bin/azurite-table"

answers() {
  # Any HTTP answer on the port means the service is up.
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install() {
  if [[ -x "$BIN" ]]; then return 0; fi
  command -v npm >/dev/null || { echo "azurite.sh: npm is required to install Azurite" >&2; exit 1; }
  echo "azurite.sh: installing azurite@$VERSION into $DIR" >&2
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
}

start() {
  if pid="$(running_pid)"; then
    echo "azurite.sh: already running (pid $pid) on $HOST:$PORT"
    return 0
  fi
  if answers; then
    echo "azurite.sh: something already answers on $HOST:$PORT; not starting another" >&2
    return 0
  fi
  install
  # Run from inside .azurite so nothing Azurite writes lands in the working tree.
  (cd "$DIR" && exec nohup "$BIN" --tableHost "$HOST" --tablePort "$PORT" \
    --inMemoryPersistence --disableTelemetry >"$LOG_FILE" 2>&1) &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if answers; then
      echo "azurite.sh: table service on http://$HOST:$PORT (pid $(cat "$PID_FILE"))"
      return 0
    fi
    if ! running_pid >/dev/null; then break; fi
    sleep 0.1
  done
  echo "azurite.sh: Azurite did not answer on $HOST:$PORT; log follows" >&2
  cat "$LOG_FILE" >&2 || true
  exit 1
}

stop() {
  if pid="$(running_pid)"; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$PID_FILE"
    echo "azurite.sh: stopped (pid $pid)"
  else
    rm -f "$PID_FILE"
    echo "azurite.sh: not running"
  fi
}

status() {
  if pid="$(running_pid)" && answers; then
    echo "azurite.sh: running (pid $pid) on $HOST:$PORT"
  elif answers; then
    echo "azurite.sh: something answers on $HOST:$PORT (not started by this script)"
  else
    echo "azurite.sh: not running"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
