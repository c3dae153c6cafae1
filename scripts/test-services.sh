#!/usr/bin/env bash
# Starts the services the tests need and exports their addresses. Meant to be SOURCED
# (by scripts/test.sh): `source scripts/test-services.sh`.
#
# MongoDB: if VERDICT_TEST_MONGODB_URI is already set, it is used as is (e.g. a real
# MongoDB). Otherwise the wire-compatible test server `secantusd-rs` (crate secantus-mdb,
# GPL-2.0, run as a separate process only, never linked into Verdict) is installed if
# missing, started on a free port with a temporary storage directory, and stopped (and its
# directory removed) when the sourcing shell exits.

verdict_test_services_main() {
    if [[ -n "${VERDICT_TEST_MONGODB_URI:-}" ]]; then
        echo "==> MongoDB for tests: using VERDICT_TEST_MONGODB_URI"
        return 0
    fi

    local bin="${SECANTUSD_BIN:-}"
    if [[ -z "$bin" ]]; then
        bin="$(command -v secantusd-rs || true)"
        [[ -z "$bin" && -x "$HOME/.cargo/bin/secantusd-rs" ]] && bin="$HOME/.cargo/bin/secantusd-rs"
    fi
    if [[ -z "$bin" ]]; then
        echo "==> installing the MongoDB test server secantusd-rs (about 5 minutes, once)"
        if ! command -v cmake >/dev/null 2>&1; then
            local sudo=""
            [[ "$(id -u)" != 0 ]] && sudo="sudo"
            $sudo apt-get update && $sudo apt-get install -y cmake || return 1
        fi
        cargo install --locked --ignore-rust-version secantus-mdb --version =0.5.3-beta.193 || return 1
        bin="$HOME/.cargo/bin/secantusd-rs"
    fi

    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null)" || port=""
    if [[ -z "$port" ]]; then
        port=$(( 20000 + RANDOM % 20000 ))
    fi
    VERDICT_TEST_MONGODB_DIR="$(mktemp -d "${TMPDIR:-/tmp}/verdict-mongo.XXXXXX")"
    "$bin" --host 127.0.0.1 --port "$port" --storage-path "$VERDICT_TEST_MONGODB_DIR" \
        --cache-size 512M --log-level WARNING >"$VERDICT_TEST_MONGODB_DIR.log" 2>&1 &
    VERDICT_TEST_MONGODB_PID=$!
    trap verdict_test_services_stop EXIT

    local i
    for i in $(seq 1 100); do
        if ! kill -0 "$VERDICT_TEST_MONGODB_PID" 2>/dev/null; then
            echo "secantusd-rs exited at start-up; its log:" >&2
            cat "$VERDICT_TEST_MONGODB_DIR.log" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            # The server presents itself as a one-node replica set: connect directly.
            export VERDICT_TEST_MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
            echo "==> MongoDB test server on port $port (pid $VERDICT_TEST_MONGODB_PID)"
            return 0
        fi
        sleep 0.1
    done
    echo "secantusd-rs did not accept connections on port $port within 10 s" >&2
    return 1
}

verdict_test_services_stop() {
    if [[ -n "${VERDICT_TEST_MONGODB_PID:-}" ]]; then
        kill "$VERDICT_TEST_MONGODB_PID" 2>/dev/null || true
        wait "$VERDICT_TEST_MONGODB_PID" 2>/dev/null || true
        VERDICT_TEST_MONGODB_PID=""
    fi
    if [[ -n "${VERDICT_TEST_MONGODB_DIR:-}" ]]; then
        rm -rf "$VERDICT_TEST_MONGODB_DIR" "$VERDICT_TEST_MONGODB_DIR.log"
        VERDICT_TEST_MONGODB_DIR=""
    fi
}

verdict_test_services_main || { echo "test services failed to start" >&2; return 1 2>/dev/null || exit 1; }
