#!/usr/bin/env bash
# Smoke test of acmpca-local with the AWS CLI (which speaks AWS JSON 1.1 to
# ACM PCA) and openssl.
#
# Usage: scripts/awscli-smoke.sh [PATH_TO_ACMPCA_LOCAL]
#   or   ACMPCA_LOCAL=PATH scripts/awscli-smoke.sh
# Optional env: AWS_CLI (default: aws), KEEP_WORKDIR=1 to keep the temp dir.
# Exits non-zero on any failure and always stops the emulator.
set -euo pipefail

BIN="${1:-${ACMPCA_LOCAL:-}}"
if [[ -z "$BIN" ]]; then
	echo "usage: $0 PATH_TO_ACMPCA_LOCAL (or set ACMPCA_LOCAL)" >&2
	exit 2
fi
[[ -x "$BIN" ]] || { echo "not executable: $BIN" >&2; exit 2; }
AWS="${AWS_CLI:-aws}"
command -v "$AWS" >/dev/null || { echo "AWS CLI not found ($AWS)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

WORK="$(mktemp -d)"
PID=""
cleanup() {
	local rc=$?
	if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	if [[ $rc -ne 0 && -f "$WORK/emulator.log" ]]; then
		echo "--- emulator log ---" >&2
		tail -n 50 "$WORK/emulator.log" >&2 || true
	fi
	if [[ "${KEEP_WORKDIR:-}" == 1 ]]; then
		echo "work dir kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ROOT_ARN="arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/11111111-1111-1111-1111-111111111111"
SUB_ARN="arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/22222222-2222-2222-2222-222222222222"
SUB_ID="${SUB_ARN##*/}"

export AWS_ACCESS_KEY_ID=AKIASMOKETEST0000001
export AWS_SECRET_ACCESS_KEY=smoke-test-secret-key
export AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_PAGER=""

"$BIN" run --address 127.0.0.1:0 --address-file "$WORK/addr" --state-dir "$WORK/state" \
	--ca "arn=$ROOT_ARN,type=ROOT,key=RSA_2048,mode=GENERAL_PURPOSE" \
	--ca "arn=$SUB_ARN,type=SUBORDINATE,key=RSA_2048,mode=GENERAL_PURPOSE,parent=$ROOT_ARN" \
	--credentials "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
	--in-progress 2s >"$WORK/emulator.log" 2>&1 &
PID=$!

for _ in $(seq 1 100); do
	[[ -s "$WORK/addr" ]] && break
	kill -0 "$PID" 2>/dev/null || { echo "emulator exited early" >&2; exit 1; }
	sleep 0.1
done
[[ -s "$WORK/addr" ]] || { echo "emulator did not start" >&2; exit 1; }
ENDPOINT="http://$(cat "$WORK/addr")"
echo "emulator at $ENDPOINT"
pca() { "$AWS" acm-pca "$@" --endpoint-url "$ENDPOINT" --region us-east-1; }

echo "== describe-certificate-authority"
STATUS="$(pca describe-certificate-authority --certificate-authority-arn "$SUB_ARN" \
	--query CertificateAuthority.Status --output text)"
[[ "$STATUS" == ACTIVE ]] || { echo "unexpected CA status: $STATUS" >&2; exit 1; }

echo "== issue-certificate"
openssl req -new -newkey rsa:2048 -nodes -keyout "$WORK/leaf.key" -out "$WORK/csr.pem" \
	-subj "/CN=smoke.example.com/O=acmpca-local" -addext "subjectAltName=DNS:smoke.example.com" 2>/dev/null
CERT_ARN="$(pca issue-certificate --certificate-authority-arn "$SUB_ARN" \
	--csr "fileb://$WORK/csr.pem" --signing-algorithm SHA256WITHRSA \
	--validity Value=1,Type=DAYS --idempotency-token smoke1 \
	--query CertificateArn --output text)"
echo "issued $CERT_ARN"
[[ "$CERT_ARN" == "$SUB_ARN/certificate/"* ]] || { echo "bad certificate ARN" >&2; exit 1; }

echo "== wait certificate-issued"
pca wait certificate-issued --certificate-authority-arn "$SUB_ARN" --certificate-arn "$CERT_ARN"

echo "== get-certificate"
pca get-certificate --certificate-authority-arn "$SUB_ARN" --certificate-arn "$CERT_ARN" \
	--query Certificate --output text >"$WORK/leaf.pem"
pca get-certificate --certificate-authority-arn "$SUB_ARN" --certificate-arn "$CERT_ARN" \
	--query CertificateChain --output text >"$WORK/chain.pem"

echo "== openssl verify"
# The chain file written by the emulator is the subordinate followed by the
# root; split it into trust anchor and intermediate.
CHAIN_FILE="$WORK/state/$SUB_ID-chain.pem"
awk -v dir="$WORK" '/BEGIN CERTIFICATE/{n++} {print > (dir "/chainfile-" n ".pem")}' "$CHAIN_FILE"
openssl verify -CAfile "$WORK/chainfile-2.pem" -untrusted "$WORK/chainfile-1.pem" "$WORK/leaf.pem"
# The chain returned by the API must verify the same way.
openssl verify -CAfile "$WORK/chainfile-2.pem" -untrusted "$WORK/chain.pem" "$WORK/leaf.pem"
openssl x509 -in "$WORK/leaf.pem" -noout -ext subjectAltName | grep -q "DNS:smoke.example.com"

echo "== wrong secret is refused"
if AWS_SECRET_ACCESS_KEY=wrong pca describe-certificate-authority --certificate-authority-arn "$SUB_ARN" \
	>/dev/null 2>"$WORK/err.txt"; then
	echo "request with wrong secret succeeded" >&2
	exit 1
fi
grep -q InvalidSignatureException "$WORK/err.txt" || { cat "$WORK/err.txt" >&2; exit 1; }

echo "== stats"
curl -fsS "$ENDPOINT/_acmpca-local/stats" >"$WORK/stats.json" 2>/dev/null ||
	python3 -c "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('$ENDPOINT/_acmpca-local/stats').read().decode())" >"$WORK/stats.json"
grep -q '"issued": 1' "$WORK/stats.json" || { cat "$WORK/stats.json" >&2; exit 1; }

echo "awscli smoke test passed"
