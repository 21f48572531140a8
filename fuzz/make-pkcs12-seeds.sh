#!/usr/bin/env bash
# Makes the PKCS#12 seeds of the `pkcs12` fuzz target with the openssl CLI (run once; the
# output is committed). Each seed is one byte N, an N-byte password, then the .pfx file:
# the input format of the target (see fuzz/src/targets/pkcs12.rs).
#   fuzz/make-pkcs12-seeds.sh [OUT_DIR]      (default: fuzz/corpus/pkcs12)
set -euo pipefail
out=${1:-$(dirname "$0")/corpus/pkcs12}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
q() { "$@" >/dev/null 2>&1; }

# Keys and certificates: RSA, EC P-256 / P-384, Ed25519; a CA-signed leaf; an expired one.
q openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.pem -days 36500 -subj "/CN=fuzz-rsa/O=edgegw"
q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout p256.key -out p256.pem -days 36500 -subj "/CN=fuzz-p256"
q openssl req -x509 -newkey ed25519 -nodes -keyout ed.key -out ed.pem -days 36500 -subj "/CN=fuzz-ed25519"
q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout ca.key -out ca.pem -days 36500 -subj "/CN=fuzz-ca"
q openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-384 -out leaf.key
q openssl req -new -key leaf.key -out leaf.csr -subj "/CN=fuzz-leaf, with comma/O=edgegw\\+fuzz"
q openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -out leaf.pem
q openssl req -new -key rsa.key -out expired.csr -subj "/CN=fuzz-expired"
q openssl x509 -req -in expired.csr -signkey rsa.key -days -1 -out expired.pem

p12() { # name password openssl-pkcs12-args...
  local name=$1 pass=$2
  shift 2
  openssl pkcs12 -export -out "$name.pfx" -passout "pass:$pass" "$@" 2>/dev/null
  { printf "\\$(printf '%03o' "${#pass}")"; printf '%s' "$pass"; cat "$name.pfx"; } >"$out/$name.bin"
}
p12 rsa-aes-secret secret -in rsa.pem -inkey rsa.key                         # OpenSSL 3 default: AES-256-CBC, PBKDF2, MAC SHA-256
p12 rsa-empty-password "" -in rsa.pem -inkey rsa.key
p12 p256-legacy-3des s3cret-Pa55 -in p256.pem -inkey p256.key -legacy        # 3DES / RC2-40, SHA-1 MAC
p12 p384-chain chain-pass -in leaf.pem -inkey leaf.key -certfile ca.pem -name leaf
p12 rsa-one-iteration fast -in rsa.pem -inkey rsa.key -noiter -nomaciter
p12 ed25519 ed-pass -in ed.pem -inkey ed.key
p12 cert-only nokey -in rsa.pem -nokeys
p12 key-only keyonly -inkey rsa.key -nocerts
p12 plaintext-bags plain -in p256.pem -inkey p256.key -keypbe NONE -certpbe NONE
p12 no-mac nomac -in p256.pem -inkey p256.key -nomac
p12 expired expired -in expired.pem -inkey rsa.key
p12 ca-only-with-key mismatch -in ca.pem -inkey rsa.key -nocerts -certfile ca.pem
