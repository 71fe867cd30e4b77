#!/usr/bin/env bash
# Makes the throw-away certificates of the compose demo: one demo CA and one leaf per host,
# written to DIR (default /certs). Runs in the `demo-ca` service before anything else starts;
# integration/tests/docker_demo.rs runs it too, on the test machine.
#
#   bash docker/demo-ca.sh DIR
#
# Files: DIR/demo-ca.pem (the CA certificate every host trusts), and for each host NAME:
# DIR/NAME.crt.pem (leaf followed by the CA) and DIR/NAME.key.pem (mode 0600). Existing files
# are kept, so restarting the demo does not change the certificates; remove the volume
# (docker compose down -v) for new ones. The CA key is deleted once the leaves are signed:
# nothing can be issued later by this CA.
#
# DEMO_KEY_OWNER=UID:GID chowns the relays' keys (relay-*.key.pem) to the user hopguard runs
# as in the image; unset, ownership is left alone.
set -euo pipefail

dir=${1:-/certs}
mkdir -p "$dir"
cd "$dir"

# host stem -> the DNS name its certificate is for.
hosts=(
  "relay-a relay.provider-a.example"
  "relay-b relay.provider-b.example"
  "mailstore-a mailstore.provider-a.example"
  "mailstore-b mailstore.provider-b.example"
)

complete=yes
for h in "${hosts[@]}"; do
  stem=${h%% *}
  [ -s "$stem.crt.pem" ] && [ -s "$stem.key.pem" ] || complete=no
done
if [ "$complete" = yes ] && [ -s demo-ca.pem ]; then
  echo "demo-ca: certificates already in $dir, kept"
  exit 0
fi

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=hopguard demo CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null

for h in "${hosts[@]}"; do
  stem=${h%% *}
  name=${h#* }
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$name" -keyout "$work/$stem.key" -out "$work/$stem.csr" 2>/dev/null
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:$name" >"$work/$stem.ext"
  openssl x509 -req -in "$work/$stem.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$work/$stem.ext" -out "$work/$stem.crt" 2>/dev/null
  cat "$work/$stem.crt" "$work/ca.pem" >"$stem.crt.pem"
  install -m 0600 "$work/$stem.key" "$stem.key.pem"
  chmod 0644 "$stem.crt.pem"
  echo "demo-ca: $stem.crt.pem for $name"
done
install -m 0644 "$work/ca.pem" demo-ca.pem

if [ -n "${DEMO_KEY_OWNER:-}" ]; then
  chown "$DEMO_KEY_OWNER" relay-*.key.pem
fi
echo "demo-ca: done, CA certificate $dir/demo-ca.pem"
