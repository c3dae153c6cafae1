#!/usr/bin/env bash
# Property-based fuzz of the HTTP API: schemathesis generates requests from the server's own
# /openapi.json (coverage, fuzzing and stateful phases, every check except
# positive_data_acceptance: the server rightly refuses some schema-valid bodies, e.g. weights
# not summing to 1) and fails on any server error, any response that violates the document,
# and any schema-violating request accepted. One time-boxed run per identity: an admin
# (the bootstrap key, which no request can revoke), an app (a `client` key) and a `viewer`
# (keys made after the admin run so that run cannot revoke them). The viewer run must change
# nothing: the server's own request counter shows no successful request other than a read.
#
# Usage: scripts/fuzz.sh [PATH TO verdict BINARY]   (default: target/debug/verdict)
# FUZZ_SECONDS (default 60) per identity; FUZZ_SEED (default 1) for reproducible runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/verdict}"
seconds="${FUZZ_SECONDS:-60}"
seed="${FUZZ_SEED:-1}"

# A virtualenv per version of the pins, made once and reused.
pins="scripts/fuzz-requirements.txt"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/verdict/fuzz-venv-$(sha256sum "$pins" | cut -c1-16)"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    echo "==> creating $venv (schemathesis)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$pins"
fi

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
admin="fuzz-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
base="http://127.0.0.1:$port"
VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY="$admin" VERDICT_DATA_DIR="$data" VERDICT_SERVER__PORT="$port" \
    VERDICT_INGEST__RATE_LIMIT_PER_SECOND=0 VERDICT_SERVER__MAX_CONNECTIONS_PER_PEER=0 \
    VERDICT_LOG__LEVEL=warn "$bin" serve --no-scheduler >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
python3 - "$base" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server did not start")
PY

fuzz() {
    local who="$1" key="$2"
    echo "==> schemathesis as $who ($seconds s, seed $seed)"
    # One worker: schemathesis' coverage phase is not safe with several here.
    "$venv/bin/schemathesis" run "$base/openapi.json" \
        -H "Authorization: Bearer $key" \
        --checks all --exclude-checks positive_data_acceptance \
        --phases coverage,fuzzing,stateful --max-time "$seconds" --seed "$seed" \
        --workers 1 --continue-on-failure --no-color
}

# A new key with `role`, made by the admin.
key_with_role() {
    python3 - "$base" "$admin" "$1" <<'PY'
import json, sys, urllib.request
base, admin, role = sys.argv[1:]
request = urllib.request.Request(
    base + "/v1/api-keys",
    data=json.dumps({"name": "fuzz " + role, "roles": [role]}).encode(),
    headers={"Authorization": "Bearer " + admin, "content-type": "application/json"},
)
print(json.load(urllib.request.urlopen(request))["key"])
PY
}

# Successful requests other than reads, from the server's `verdict_http_requests_total`.
successful_changes() {
    python3 - "$base" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
total = 0.0
for line in text.splitlines():
    if not line.startswith("verdict_http_requests_total{"):
        continue
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    if labels.get("method") not in ("GET", "HEAD") and labels.get("status", "").startswith("2"):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))
PY
}

status=0
fuzz admin "$admin" || status=1
fuzz client "$(key_with_role client)" || status=1
viewer="$(key_with_role viewer)"
before="$(successful_changes)"
fuzz viewer "$viewer" || status=1
after="$(successful_changes)"
if [[ "$before" != "$after" ]]; then
    echo "the viewer changed something: $((after - before)) successful requests other than reads"
    status=1
else
    echo "==> the viewer run changed nothing (no successful request other than a read)"
fi
if grep -q "panicked" "$data/server.log"; then
    echo "the server panicked:"
    grep -A5 "panicked" "$data/server.log"
    status=1
fi
exit "$status"
