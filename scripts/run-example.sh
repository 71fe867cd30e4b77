#!/usr/bin/env bash
# Runs hopguard with the example configuration (examples/hopguard.yaml): a local spool under
# examples/local/, a listener on 127.0.0.1:2525 with a self-signed certificate made here, and no
# external service. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (to make the example's self-signed certificate)"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -q openssl; else sudo apt-get install -y -q openssl; fi
fi

mkdir -p examples/local
if [ ! -f examples/local/cert.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=relay.example.test" -addext "subjectAltName=DNS:relay.example.test" \
    -keyout examples/local/key.pem -out examples/local/cert.pem 2>/dev/null
  echo "== made a self-signed certificate in examples/local/"
fi
cargo build --release -p hopguard --bin hopguard
echo "== hopguard listening on 127.0.0.1:2525 (STARTTLS required); try:"
echo "   swaks --server 127.0.0.1:2525 --tls --from you@example.test --to someone@example.test"
exec ./target/release/hopguard run --config examples/hopguard.yaml
