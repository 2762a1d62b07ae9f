#!/usr/bin/env bash
# run.sh — the Kong Mesh "ACM Private CA" page, end to end and offline.
#
# It builds meshca's four binaries, starts acmpca-local (an ACM Private CA
# emulator) holding the CA whose ARN the seed YAML names, starts meshca-cp
# pointed at it, applies the seed Mesh (mesh-universal.yaml, or with
# --kubernetes mesh-kubernetes.yaml) unchanged, runs two data-plane agents,
# shows their certificates and proves a mutual-TLS exchange between them
# with openssl. Everything listens on 127.0.0.1 and is removed on exit.
#
# Usage: examples/acmpca/run.sh [--kubernetes] [--keep]
#   --kubernetes  apply the Kubernetes form of the seed (and the secrets)
#   --keep        keep the work directory (logs, certificates) after exit
#
# Needs: go, openssl, curl (python3 optional, for picking free ports).
set -euo pipefail

FORM=universal
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --kubernetes) FORM=kubernetes ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

for tool in go openssl curl; do
  command -v "$tool" >/dev/null || { echo "run.sh needs '$tool' on PATH" >&2; exit 1; }
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SEED="$REPO/examples/acmpca/mesh-$FORM.yaml"
ARN='arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012'
CA_ID="${ARN##*/}"
ACCESS_KEY_ID=AKIAEXAMPLE        # any values: acmpca-local is told to accept these
SECRET_ACCESS_KEY=secretexample
# The seed reads accessKeySecret from this exact path (triple "s" included).
KEY_FILE=/tmp/accesss_key.txt

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meshca-acmpca-demo.XXXXXX")"
BIN="$WORK/bin"
PIDS=()
KEY_FILE_CREATED=0
KEY_FILE_BACKUP=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die()  { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    # Bounded wait: 10 s per process, then SIGKILL.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "$KEY_FILE_CREATED" = 1 ]; then
    rm -f "$KEY_FILE"
  elif [ -n "$KEY_FILE_BACKUP" ]; then
    cp -p "$KEY_FILE_BACKUP" "$KEY_FILE"   # put the user's own file back
  fi
  if [ "$rc" != 0 ]; then
    for log in "$WORK"/*.log; do
      [ -f "$log" ] || continue
      printf '\n--- last lines of %s ---\n' "$(basename "$log")" >&2
      tail -n 15 "$log" >&2
    done
  fi
  if [ "$KEEP" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  if [ "$rc" = 0 ]; then echo; echo "OK: all steps passed."; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

# wait_until SECONDS WHAT COMMAND... — poll COMMAND every 0.2 s, bounded.
wait_until() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( SECONDS + secs ))
  while ! "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

alive() { kill -0 "$1" 2>/dev/null || die "$2 exited early (see its log above)"; }

meshctl() { "$BIN/meshctl" --api "$API" "$@"; }

b64() { base64 <"$1" | tr -d '\n'; }

# ---------------------------------------------------------------------------
step "Building meshca-cp, meshctl, meshca-dp and acmpca-local into $BIN"
(cd "$REPO" && go build -o "$BIN/" ./cmd/...)
ls "$BIN" | sed 's/^/    /'

# ---------------------------------------------------------------------------
step "Starting acmpca-local (the ACM Private CA emulator) with the seed's CA"
info "ARN $ARN"
"$BIN/acmpca-local" run --address 127.0.0.1:0 --address-file "$WORK/acmpca.addr" \
  --state-dir "$WORK/acmpca" \
  --ca "arn=$ARN,type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE" \
  --credentials "$ACCESS_KEY_ID:$SECRET_ACCESS_KEY" \
  >"$WORK/acmpca-local.log" 2>&1 &
PIDS+=($!); PCA_PID=$!
wait_until 30 "acmpca-local to listen" test -s "$WORK/acmpca.addr"
alive "$PCA_PID" acmpca-local
PCA_ADDR="$(cat "$WORK/acmpca.addr")"
CHAIN="$WORK/acmpca/$CA_ID-chain.pem"
[ -s "$CHAIN" ] || die "acmpca-local did not write $CHAIN"
info "listening on http://$PCA_ADDR; CA chain in $CHAIN"
openssl x509 -in "$CHAIN" -noout -subject | sed 's/^/    CA /'

# ---------------------------------------------------------------------------
step "Starting meshca-cp with AWS_ENDPOINT_URL_ACM_PCA=http://$PCA_ADDR"
API_PORT=$(free_port); DP_PORT=$(free_port)
while [ "$DP_PORT" = "$API_PORT" ]; do DP_PORT=$(free_port); done
API="http://127.0.0.1:$API_PORT"
DP_ADDR="127.0.0.1:$DP_PORT"
CP_DATA="$WORK/cp-data"
AWS_ENDPOINT_URL_ACM_PCA="http://$PCA_ADDR" AWS_REGION=us-east-1 \
  "$BIN/meshca-cp" run --data-dir "$CP_DATA" --api-address "127.0.0.1:$API_PORT" --api-tls-address 127.0.0.1:0 \
  --dp-server-address "$DP_ADDR" >"$WORK/meshca-cp.log" 2>&1 &
PIDS+=($!); CP_PID=$!
wait_until 30 "meshca-cp /readyz" curl -fsS "$API/readyz"
alive "$CP_PID" meshca-cp
info "HTTP API $API, data-plane (SDS) server $DP_ADDR"

# ---------------------------------------------------------------------------
step "Writing the access key secret to $KEY_FILE (the path the seed YAML names)"
if [ -e "$KEY_FILE" ]; then
  if [ "$(cat "$KEY_FILE")" != "$SECRET_ACCESS_KEY" ]; then
    KEY_FILE_BACKUP="$WORK/accesss_key.txt.orig"
    cp -p "$KEY_FILE" "$KEY_FILE_BACKUP"
    info "$KEY_FILE exists: saved a copy, it is restored on exit"
    printf '%s' "$SECRET_ACCESS_KEY" >"$KEY_FILE"
  else
    info "$KEY_FILE already holds the demo secret: left in place"
  fi
else
  (umask 077; printf '%s' "$SECRET_ACCESS_KEY" >"$KEY_FILE")
  KEY_FILE_CREATED=1
  info "created; removed on exit"
fi

# ---------------------------------------------------------------------------
# A Secret lives in a Mesh, and the seed Mesh refers to Secrets sec-1 and
# sec-2: create a plain Mesh first, then the Secrets, then apply the seed,
# which updates the same Mesh "default" with mTLS through ACM PCA.
step "Creating Mesh 'default' (no mTLS yet) so its Secrets can be stored"
if [ "$FORM" = kubernetes ]; then
  cat >"$WORK/mesh-plain.yaml" <<'YAML'
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
YAML
else
  cat >"$WORK/mesh-plain.yaml" <<'YAML'
type: Mesh
name: default
YAML
fi
meshctl apply -f "$WORK/mesh-plain.yaml"

step "Creating Secrets sec-1 (caCert: the CA chain) and sec-2 (accessKey: $ACCESS_KEY_ID)"
printf '%s' "$ACCESS_KEY_ID" >"$WORK/access-key-id"
if [ "$FORM" = kubernetes ]; then
  cat >"$WORK/secrets.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: sec-1
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
type: system.kuma.io/secret
data:
  value: $(b64 "$CHAIN")
---
apiVersion: v1
kind: Secret
metadata:
  name: sec-2
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
type: system.kuma.io/secret
data:
  value: $(b64 "$WORK/access-key-id")
YAML
else
  cat >"$WORK/secrets.yaml" <<YAML
type: Secret
mesh: default
name: sec-1
data: $(b64 "$CHAIN")
---
type: Secret
mesh: default
name: sec-2
data: $(b64 "$WORK/access-key-id")
YAML
fi
meshctl apply -f "$WORK/secrets.yaml"

step "Applying the seed, unchanged: ${SEED#"$REPO"/}"
meshctl apply -f "$SEED"
meshctl get meshes

# ---------------------------------------------------------------------------
step "Registering Dataplanes backend-1 (service backend) and web-1 (service web)"
cat >"$WORK/dataplanes.yaml" <<'YAML'
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
  - port: 9001
    servicePort: 8001
    tags:
      kuma.io/service: backend
---
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
  - port: 9002
    servicePort: 8002
    tags:
      kuma.io/service: web
YAML
meshctl apply -f "$WORK/dataplanes.yaml"

step "Generating data-plane tokens and starting two meshca-dp agents"
for dp in backend-1 web-1; do
  svc="${dp%-1}"
  meshctl generate dataplane-token --mesh default --name "$dp" >"$WORK/$dp.token"
  chmod 600 "$WORK/$dp.token"
  "$BIN/meshca-dp" run --cp-address "$DP_ADDR" --cp-ca-cert "$CP_DATA/dp-server-ca.pem" \
    --token-file "$WORK/$dp.token" --mesh default --name "$dp" --out "$WORK/$svc" \
    >"$WORK/meshca-dp-$dp.log" 2>&1 &
  PIDS+=($!)
  info "$dp: files in $WORK/$svc"
done

have_files() { [ -s "$1/cert.pem" ] && [ -s "$1/key.pem" ] && [ -s "$1/ca.pem" ]; }
for svc in backend web; do
  wait_until 60 "the certificate of $svc (cert.pem, key.pem, ca.pem)" have_files "$WORK/$svc"
done
for pid in "${PIDS[@]}"; do alive "$pid" "a process"; done

# ---------------------------------------------------------------------------
for svc in backend web; do
  step "Certificate of $svc-1 ($WORK/$svc/cert.pem), issued by ACM PCA"
  openssl x509 -in "$WORK/$svc/cert.pem" -noout -subject -ext subjectAltName -issuer -dates | sed 's/^/    /'
  openssl verify -CAfile "$WORK/$svc/ca.pem" "$WORK/$svc/cert.pem" | sed 's/^/    /'
done

step "meshctl inspect dataplane backend-1 -m default"
meshctl inspect dataplane backend-1 -m default | sed 's/^/    /'

# ---------------------------------------------------------------------------
step "Mutual TLS: openssl s_server with web-1's files, s_client with backend-1's"
TLS_PORT=$(free_port)
# -Verify 2 + -verify_return_error: the server demands and verifies a client
# certificate against web-1's trust bundle. -rev: it answers every line
# reversed, which proves data flowed both ways.
openssl s_server -accept "127.0.0.1:$TLS_PORT" -naccept 1 -rev \
  -cert "$WORK/web/cert.pem" -key "$WORK/web/key.pem" -CAfile "$WORK/web/ca.pem" \
  -Verify 2 -verify_return_error >"$WORK/s_server.log" 2>&1 &
PIDS+=($!); SRV_PID=$!
# s_server prints ACCEPT once it listens.
wait_until 15 "openssl s_server to listen" grep -q ACCEPT "$WORK/s_server.log"
alive "$SRV_PID" "openssl s_server"
MSG="hello from backend-1"
{ printf '%s\n' "$MSG"; sleep 2; } | timeout 20 openssl s_client -connect "127.0.0.1:$TLS_PORT" \
  -cert "$WORK/backend/cert.pem" -key "$WORK/backend/key.pem" -CAfile "$WORK/backend/ca.pem" \
  -verify_return_error -servername web >"$WORK/s_client.log" 2>&1 || true
info "client sent:             $MSG"
EXPECT="1-dnekcab morf olleh"   # $MSG reversed by s_server -rev
REPLY="$(grep -oF "$EXPECT" "$WORK/s_client.log" | head -n1 || true)"
info "server answered:         ${REPLY:-<nothing>}"
info "client verified server:  $(grep -m1 'Verify return code' "$WORK/s_client.log" || echo '<no verify line>')"
info "server's certificate:    $(grep -m1 '^subject=' "$WORK/s_client.log" || true)"
info "server saw client cert:  $(grep -m1 -E '^(subject=|depth=0)' "$WORK/s_server.log" || echo '<none>')"
grep -q 'Verify return code: 0 (ok)' "$WORK/s_client.log" || die "the client did not verify the server (see $WORK/s_client.log)"
[ -n "$REPLY" ] || die "no answer from the server over mutual TLS"
grep -qiE 'verify error|alert' "$WORK/s_server.log" && die "the server rejected the client certificate"
info "mutual TLS exchange OK"

# ---------------------------------------------------------------------------
step "acmpca-local stats (http://$PCA_ADDR/_acmpca-local/stats)"
STATS="$(curl -fsS "http://$PCA_ADDR/_acmpca-local/stats")"
if command -v jq >/dev/null; then
  echo "$STATS" | jq '{issued, requests, accessKeys}' | sed 's/^/    /'
  ISSUED="$(echo "$STATS" | jq .issued)"
else
  echo "$STATS" | sed 's/^/    /'
  ISSUED="$(echo "$STATS" | sed -n 's/.*"issued":\([0-9]*\).*/\1/p')"
fi
info "certificates issued (billed) by the private CA: $ISSUED"
[ "${ISSUED:-0}" -ge 2 ] || die "expected at least 2 certificates issued, got ${ISSUED:-?}"
