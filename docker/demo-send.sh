#!/usr/bin/env bash
# The demo's mail client: submits a message to its provider's hopguard relay over STARTTLS
# with swaks, then again every DEMO_INTERVAL seconds, so that the dashboards have traffic.
# Runs in the `sender-a` and `sender-b` services; integration/tests/docker_demo.rs runs it once
# per sender (DEMO_COUNT=1) on the test machine.
#
# Environment (set in compose.yaml):
#   DEMO_SERVER    the relay, IP:PORT
#   DEMO_CA        the demo CA certificate: the relay's certificate chain must verify against it
#                  (swaks 20201014 checks the chain only, not the host name)
#   DEMO_FROM, DEMO_TO   envelope sender and recipient
#   DEMO_INTERVAL  seconds between two messages (default 60)
#   DEMO_COUNT     stop after this many accepted messages (default 0: never stop)
#   DEMO_LOCAL_ADDR  source address of the connection (default: chosen by the system)
set -euo pipefail

: "${DEMO_SERVER:?DEMO_SERVER (IP:PORT of the relay) is required}"
: "${DEMO_CA:?DEMO_CA (the demo CA certificate) is required}"
: "${DEMO_FROM:?DEMO_FROM is required}"
: "${DEMO_TO:?DEMO_TO is required}"
interval=${DEMO_INTERVAL:-60}
count=${DEMO_COUNT:-0}

sent=0
attempt=0
while :; do
  attempt=$((attempt + 1))
  args=(--server "$DEMO_SERVER" --tls --tls-verify --tls-ca-path "$DEMO_CA"
    --ehlo "${HOSTNAME:-demo-sender}" --from "$DEMO_FROM" --to "$DEMO_TO" --timeout 30
    --header "Subject: hopguard demo message $attempt from $DEMO_FROM"
    --header "X-Hopguard-Demo: $DEMO_FROM $attempt"
    --body "Sent by demo-send.sh at $(date -u +%FT%TZ) through $DEMO_SERVER (STARTTLS).")
  if [ -n "${DEMO_LOCAL_ADDR:-}" ]; then
    args+=(--local-interface "$DEMO_LOCAL_ADDR")
  fi
  if out=$(swaks "${args[@]}" 2>&1); then
    sent=$((sent + 1))
    echo "demo-send: message $attempt accepted by $DEMO_SERVER: $DEMO_FROM -> $DEMO_TO"
    if [ "$count" -gt 0 ] && [ "$sent" -ge "$count" ]; then
      exit 0
    fi
    sleep "$interval"
  else
    echo "demo-send: message $attempt not accepted by $DEMO_SERVER (retrying in 5 s):"
    printf '%s\n' "$out" | grep -E '^(<~?|\*\*\*) ' | tail -n 5 || true
    if [ "$count" -gt 0 ] && [ "$attempt" -ge $((count + 20)) ]; then
      echo "demo-send: giving up after $attempt attempts" >&2
      exit 1
    fi
    sleep 5
  fi
done
