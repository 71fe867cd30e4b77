#!/usr/bin/env bash
# The hopguard vs Postfix benchmark in one command (see bench/README.md):
#
#   bench/run.sh [--quick] [hopguard-bench options…]
#
# Installs Postfix (Debian package) if missing, builds the release binaries, runs the sink,
# hopguard and a private Postfix instance on 127.83.0.0/16 only, runs the load, writes
# bench/RESULTS.md and prints it. Needs root (port 25, the postfix user, cpuacct cgroups).
# Touches no machine-wide configuration: every Postfix file is in its own temporary directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: run as root (Postfix needs it; relays listen on port 25)" >&2
    exit 1
fi

missing=()
command -v postfix >/dev/null 2>&1 || missing+=(postfix)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: installing ${missing[*]}" >&2
    # No system Postfix configuration: the package only provides the binaries here.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "bench/run.sh: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-bench}
(cd "$root" && cargo build --release -p hopguard -p hopguard-bench)

# 10,000 idle sessions need 10,000+ descriptors in the load generator and in hopguard.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 12000 ]; then
    echo "bench/run.sh: warning: open-file limit $(ulimit -n); the idle test may fail (use --idle N)" >&2
fi

exec "$CARGO_TARGET_DIR/release/hopguard-bench" --results "$here/RESULTS.md" "$@"
