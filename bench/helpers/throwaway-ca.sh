#!/usr/bin/env bash
# throwaway-ca.sh DIR: a CA valid for two days (DIR/ca.pem) and a server
# certificate for 127.0.0.1 signed by it (DIR/server.pem, DIR/server.key),
# for the local TLS sinks of bench/budget.sh and bench/symbol-order.sh.
set -euo pipefail
cd "$1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=jobloop bench CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
openssl req -new -key server.key -subj /CN=localhost -out server.csr
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
