#!/usr/bin/env bash
# Prints the Python of a virtualenv holding the official SDKs the API tests run against a
# running Verdict (scripts/sdk-requirements.txt): made once per version of the pins, under
# ~/.cache/verdict, and reused. The tests call it; it prints nothing else on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
pins="scripts/sdk-requirements.txt"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/verdict/sdk-venv-$(sha256sum "$pins" | cut -c1-16)"
mkdir -p "$(dirname "$venv")"
# Tests run in parallel: one makes the venv while the others wait for it on the lock.
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$venv/.complete" ]]; then
    echo "==> creating $venv (official SDKs for the tests)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$pins" >&2
    touch "$venv/.complete"
fi
flock -u 9
echo "$venv/bin/python"
