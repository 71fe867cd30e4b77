#!/usr/bin/env bash
# Checks hopguard's Prometheus rules and Grafana dashboards. Needs promtool (Debian package
# `prometheus`) and python3 (stdlib only). Starts nothing, opens no port. Exit status 0 = all good.
#
#   bash dashboards/check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PROMTOOL=${PROMTOOL:-promtool}
if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
  echo "promtool not found: apt-get install -y prometheus (or set PROMTOOL=/path/to/promtool)" >&2
  exit 2
fi

failed=()
step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok"
  else
    echo "   FAILED: $name" >&2
    failed+=("$name")
  fi
}

step "promtool check rules" "$PROMTOOL" check rules dashboards/prometheus/rules.yml
step "promtool test rules" "$PROMTOOL" test rules dashboards/prometheus/rules_test.yml
step "dashboards match generate_dashboards.py" python3 dashboards/generate_dashboards.py --check
step "dashboard structure and queries" python3 dashboards/check_dashboards.py --promtool "$PROMTOOL"

if [ ${#failed[@]} -gt 0 ]; then
  echo "== ${#failed[@]} check(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "== all dashboard and rule checks passed"
