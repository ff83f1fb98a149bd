#!/usr/bin/env bash
# CI check for the Node.js producer example. From the repository root:
#
#   bash examples/node/run-ci.sh
#
# Needs: node + npm, the worker's Python package installed in the active environment
# (`celery` on PATH), RabbitMQ on 127.0.0.1:5672 (guest/guest) and `rabbitmqctl`.
# Everything runs in a private vhost, deleted afterwards, so other users of the broker
# are not disturbed. Exits non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RABBITMQCTL="${RABBITMQCTL:-rabbitmqctl}"
BROKER="${NODE_CI_BROKER:-guest:guest@127.0.0.1:5672}"
AMQP_USER="${BROKER%%:*}"
VHOST="node-ci-$$"
BROKER_URL="amqp://$BROKER/$VHOST"
READY_TIMEOUT_S=60
WORK="$(mktemp -d "${TMPDIR:-/tmp}/node-ci.XXXXXX")"
HEALTH_FILE="$WORK/worker.alive"
WORKER_LOG="$WORK/worker.log"
WORKER_PID=""
VHOST_CREATED=0
STEP="setup"

log() { printf '[node-ci +%ss] %s\n' "$SECONDS" "$*" >&2; }

stop_worker() {
  [ -n "$WORKER_PID" ] || return 0
  if kill -0 "$WORKER_PID" 2>/dev/null; then
    log "stopping worker (pid $WORKER_PID) with SIGTERM"
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$WORKER_PID" 2>/dev/null && [ "$waited" -lt 300 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$WORKER_PID" 2>/dev/null; then
      log "worker still running after 30 s: SIGKILL"
      kill -KILL "$WORKER_PID" 2>/dev/null || true
    fi
  fi
  wait "$WORKER_PID" 2>/dev/null || true
  WORKER_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_worker
  if [ "$rc" -ne 0 ]; then
    log "FAILED during: $STEP (exit $rc)"
    if [ -s "$WORKER_LOG" ]; then
      log "last lines of the worker log:"
      tail -n 40 "$WORKER_LOG" >&2 || true
    fi
  fi
  if [ "$VHOST_CREATED" = 1 ]; then
    "$RABBITMQCTL" -q delete_vhost "$VHOST" >/dev/null 2>&1 || log "warning: could not delete vhost $VHOST"
  fi
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then
    log "PASSED in ${SECONDS}s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  log "FAIL: $*"
  exit 1
}

# Runs the producer; prints its output; checks the exit status and the last line.
#   expect_verdict <action> <source> <text>
expect_verdict() {
  local action="$1" source="$2" text="$3" out rc=0
  STEP="producer \"$text\" -> $action ($source)"
  log "$STEP"
  out="$(cd "$HERE" && MODERATION_BROKER_URL="$BROKER_URL" node producer.js "$text")" || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] || fail "producer exited $rc for \"$text\""
  local last
  last="$(printf '%s\n' "$out" | tail -n 1)"
  [[ "$last" =~ ^verdict\ node-[0-9a-f-]+:\ ([a-z]+)\ \(([a-z]+)\)$ ]] ||
    fail "unexpected last line: $last"
  if [ "${BASH_REMATCH[1]}" != "$action" ] || [ "${BASH_REMATCH[2]}" != "$source" ]; then
    fail "\"$text\": expected $action ($source), got ${BASH_REMATCH[1]} (${BASH_REMATCH[2]})"
  fi
  log "ok: \"$text\" -> $action ($source)"
}

command -v node >/dev/null || fail "node not found"
command -v npm >/dev/null || fail "npm not found"
command -v celery >/dev/null || fail "celery not found: install the worker (pip install -e .) in the active environment"
command -v "$RABBITMQCTL" >/dev/null || fail "$RABBITMQCTL not found"

STEP="npm ci"
log "npm ci in examples/node (node $(node --version), npm $(npm --version))"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

STEP="invalid request rejected by the schema"
log "$STEP"
(cd "$HERE" && node producer.js --check-invalid) || fail "--check-invalid did not reject the invalid requests"

STEP="private vhost"
log "creating vhost $VHOST"
"$RABBITMQCTL" -q add_vhost "$VHOST" >/dev/null
VHOST_CREATED=1
"$RABBITMQCTL" -q set_permissions -p "$VHOST" "$AMQP_USER" ".*" ".*" ".*" >/dev/null

STEP="producer without a worker fails cleanly"
log "$STEP"
rc=0
err="$(cd "$HERE" && MODERATION_BROKER_URL="$BROKER_URL" node producer.js "nobody home" 2>&1 >/dev/null)" || rc=$?
printf '%s\n' "$err" >&2
[ "$rc" -eq 1 ] || fail "expected exit 1 without a worker, got $rc"
[[ "$err" == *"is a worker running"* ]] || fail "expected a clear 'no worker' message"

STEP="worker start"
# A clean, deterministic worker: none of the caller's MODERATION_*/OPENAI_* settings
# (no LLM, no shared cache, default policy and fallback), metrics port off so it cannot
# clash with another worker on this machine, a short shutdown grace.
unset_args=()
while IFS= read -r name; do
  unset_args+=(-u "$name")
done < <(compgen -e | grep -E '^(MODERATION_|OPENAI_)' || true)
log "starting worker in vhost $VHOST (log: $WORKER_LOG)"
(
  cd "$ROOT"
  exec env ${unset_args[@]+"${unset_args[@]}"} \
    MODERATION_BROKER_URL="$BROKER_URL" \
    MODERATION_HEALTH_FILE="$HEALTH_FILE" \
    MODERATION_METRICS_PORT=0 \
    MODERATION_SHUTDOWN_GRACE_S=5 \
    celery -A worker worker -n "node-ci@%h" --without-mingle --without-gossip
) >"$WORKER_LOG" 2>&1 &
WORKER_PID=$!

STEP="waiting for the worker"
deadline=$((SECONDS + READY_TIMEOUT_S))
until [ -e "$HEALTH_FILE" ]; do
  kill -0 "$WORKER_PID" 2>/dev/null || { wait "$WORKER_PID" || true; WORKER_PID=""; fail "worker exited before becoming ready"; }
  [ "$SECONDS" -lt "$deadline" ] || fail "worker not ready after ${READY_TIMEOUT_S}s"
  sleep 0.2
done
log "worker ready"

expect_verdict block rules "I will k1ll you"
expect_verdict review fallback "hello there"

STEP="worker stop"
stop_worker

# The queue is still there but nobody consumes it: the producer must time out cleanly.
STEP="producer times out without a consumer"
log "$STEP"
rc=0
err="$(cd "$HERE" && MODERATION_BROKER_URL="$BROKER_URL" MODERATION_VERDICT_TIMEOUT_S=2 \
  node producer.js "anyone there" 2>&1 >/dev/null)" || rc=$?
printf '%s\n' "$err" >&2
[ "$rc" -eq 1 ] || fail "expected exit 1 on timeout, got $rc"
[[ "$err" == *"timed out after 2 s"* ]] || fail "expected a clear timeout message"
STEP="done"
