#!/usr/bin/env bash
# Runs hopguard's whole test suite on a Debian machine: installs the packages the tests start
# (Postfix, nsd, unbound, nginx, swaks, ...), then format and lint checks, unit tests and the
# end-to-end tests against real peers on 127.0.0.0/8. Needs root (apt-get, port 25 on loopback,
# Postfix instances); re-runs itself with sudo otherwise. Never touches machine-wide config.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi

PACKAGES=(postfix swaks libnet-ssleay-perl nsd unbound ldnsutils nginx openssl ca-certificates strace procps bsdutils prometheus python3 chromium fonts-dejavu-core)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== dashboards and Prometheus rules"
bash dashboards/check.sh
echo "== build"
cargo build -p hopguard --bin hopguard
export HOPGUARD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/hopguard"
echo "== tests"
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
echo "== all tests passed"
