# shellcheck shell=bash
# Shared helpers for testbed/up and testbed/down. Sourced, not executed.

TESTBED_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TESTBED_SRC/.." && pwd)"

STATE="$(realpath -m -- "${PRIVATIZE_TESTBED_DIR:-$REPO_ROOT/target/testbed}")"

SOURCE_PORT="${SOURCE_PORT:-15000}"
TARGET_PORT="${TARGET_PORT:-15443}"
MOTO_PORT="${MOTO_PORT:-15500}"
AWS_REGION_DEFAULT=us-east-1

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_of NAME -> prints the PID recorded in $STATE/NAME.pid if that process
# is alive and looks like ours (guards against PID reuse); returns 1 otherwise.
pid_of() {
  local name="$1" pidfile="$STATE/$1.pid" pid cmd
  [[ -s "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  case "$name" in
    moto) [[ "$cmd" == *moto* ]] || return 1 ;;
    source|target) [[ "$cmd" == *"$STATE/"* ]] || return 1 ;;
    *) ;;  # PID files of other testbed parts: trust them
  esac
  printf '%s\n' "$pid"
}

# stop_one NAME: TERM, wait up to 10 s, then KILL; removes the PID file.
stop_one() {
  local name="$1" pid i
  if pid="$(pid_of "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit after TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$STATE/$name.pid" "$STATE/$name.spec"
}

# start_bg NAME CMD...: start CMD detached (own session, survives the caller),
# stdout+stderr to $STATE/NAME.log, PID to $STATE/NAME.pid.
start_bg() {
  local name="$1"; shift
  : >"$STATE/$name.log"
  # The inner shell writes its own PID, then execs the server: the PID file
  # always names the server itself, whether or not setsid forks.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
    </dev/null >>"$STATE/$name.log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$STATE/$name.pid" ]] && break; sleep 0.05; done
}

# wait_until NAME TIMEOUT_S CMD...: retry CMD until it succeeds; fail with the
# log tail if the process dies or the timeout passes.
wait_until() {
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # A process caught mid-exec shows an empty /proc/PID/cmdline for a moment:
    # look twice before calling it dead.
    if ! pid_of "$name" >/dev/null && ! { sleep 0.2; pid_of "$name" >/dev/null; }; then
      log "$name exited during startup; last lines of $STATE/$name.log:"
      tail -n 30 "$STATE/$name.log" >&2 || true
      die "$name failed to start"
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${timeout}s; last lines of $STATE/$name.log:"
      tail -n 30 "$STATE/$name.log" >&2 || true
      die "$name did not become ready"
    fi
    sleep 0.2
  done
}

# http_code URL [curl args...] -> prints the HTTP status (000 on failure)
http_code() {
  local url="$1"; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}
