#!/usr/bin/env bash
# Starts the services the tests need and exports their addresses. Meant to be SOURCED
# (by scripts/test.sh): `source scripts/test-services.sh`.
#
# MongoDB: if VERDICT_TEST_MONGODB_URI is already set, it is used as is (e.g. a real
# MongoDB). Otherwise the wire-compatible test server `secantusd-rs` (crate secantus-mdb,
# GPL-2.0, run as a separate process only, never linked into Verdict) is installed if
# missing, started on a free port with a temporary storage directory, and stopped (and its
# directory removed) when the sourcing shell exits.
#
# S3: the S3-protocol test server `s3s-fs` (crate s3s-fs, pinned =0.14.1: later versions need
# a newer rustc) is installed if missing and exported as VERDICT_TEST_S3S_FS; the publishing
# tests start one per test over a temporary directory.
#
# Browser: Debian's `chromium` and `chromium-driver` are installed (apt) if missing and
# exported as VERDICT_TEST_CHROMIUM and VERDICT_TEST_CHROMEDRIVER; the console's tests start
# a ChromeDriver per test.
#
# Redis: `redis-server` is installed (apt) if missing in every case, because the cache's
# kill test starts and kills its own server. If VERDICT_TEST_REDIS_URL is set it is used as
# is; else a Redis already answering PING on 127.0.0.1:6379 is used; else a redis-server
# without persistence is started on a free port and stopped when the sourcing shell exits.

# A free TCP port on 127.0.0.1 (a random high one when python3 is missing).
verdict_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
        || echo $(( 20000 + RANDOM % 20000 ))
}

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
    port="$(verdict_free_port)"
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

# True when host:port answers PING with PONG (redis-cli if present, else bash's /dev/tcp).
verdict_redis_answers() {
    local host="$1" port="$2"
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(timeout 2 redis-cli -h "$host" -p "$port" ping 2>/dev/null)" == "PONG" ]]
        return
    fi
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || exit 1
        [[ "$reply" == $'+PONG\r' ]]
    ) 2>/dev/null
}

verdict_test_redis_main() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "==> installing redis-server (the cache tests start and kill their own)"
        local sudo=""
        [[ "$(id -u)" != 0 ]] && sudo="sudo"
        $sudo apt-get update && $sudo apt-get install -y redis-server || return 1
    fi

    if [[ -n "${VERDICT_TEST_REDIS_URL:-}" ]]; then
        echo "==> Redis for tests: using VERDICT_TEST_REDIS_URL"
        return 0
    fi
    if verdict_redis_answers 127.0.0.1 6379; then
        export VERDICT_TEST_REDIS_URL="redis://127.0.0.1:6379"
        echo "==> Redis for tests: the one answering on 127.0.0.1:6379"
        return 0
    fi

    local port
    port="$(verdict_free_port)"
    VERDICT_TEST_REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/verdict-redis.XXXXXX")"
    trap verdict_test_services_stop EXIT
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$VERDICT_TEST_REDIS_DIR/redis.pid" \
        --dir "$VERDICT_TEST_REDIS_DIR" --logfile "$VERDICT_TEST_REDIS_DIR/redis.log" || return 1

    local i
    for i in $(seq 1 100); do
        if verdict_redis_answers 127.0.0.1 "$port"; then
            export VERDICT_TEST_REDIS_URL="redis://127.0.0.1:$port"
            echo "==> Redis test server on port $port (pid $(cat "$VERDICT_TEST_REDIS_DIR/redis.pid" 2>/dev/null))"
            return 0
        fi
        sleep 0.1
    done
    echo "redis-server did not answer PING on port $port within 10 s; its log:" >&2
    cat "$VERDICT_TEST_REDIS_DIR/redis.log" >&2 2>/dev/null || true
    return 1
}

verdict_test_s3_main() {
    local bin="${VERDICT_TEST_S3S_FS:-}"
    if [[ -z "$bin" ]]; then
        bin="$(command -v s3s-fs || true)"
        [[ -z "$bin" && -x "$HOME/.cargo/bin/s3s-fs" ]] && bin="$HOME/.cargo/bin/s3s-fs"
    fi
    if [[ -z "$bin" ]]; then
        echo "==> installing the S3 test server s3s-fs (a few minutes, once)"
        cargo install --locked s3s-fs --version =0.14.1 --features binary || return 1
        bin="$HOME/.cargo/bin/s3s-fs"
    fi
    export VERDICT_TEST_S3S_FS="$bin"
    echo "==> S3 test server: $bin"
}

verdict_test_browser_main() {
    local chromium="${VERDICT_TEST_CHROMIUM:-}" driver="${VERDICT_TEST_CHROMEDRIVER:-}"
    [[ -z "$chromium" ]] && chromium="$(command -v chromium || true)"
    [[ -z "$driver" ]] && driver="$(command -v chromedriver || true)"
    if [[ -z "$chromium" || -z "$driver" ]]; then
        echo "==> installing chromium and chromium-driver (the console's browser tests)"
        local sudo=""
        [[ "$(id -u)" != 0 ]] && sudo="sudo"
        $sudo apt-get update && $sudo apt-get install -y --no-install-recommends chromium chromium-driver \
            || return 1
        chromium="$(command -v chromium)"
        driver="$(command -v chromedriver)"
    fi
    export VERDICT_TEST_CHROMIUM="$chromium" VERDICT_TEST_CHROMEDRIVER="$driver"
    echo "==> browser for tests: $chromium, $driver"
}

verdict_test_services_stop() {
    if [[ -n "${VERDICT_TEST_REDIS_DIR:-}" ]]; then
        if [[ -s "$VERDICT_TEST_REDIS_DIR/redis.pid" ]]; then
            # Daemonized, so not our child: no `wait`; give it 5 s, then SIGKILL.
            local redis_pid i
            redis_pid="$(cat "$VERDICT_TEST_REDIS_DIR/redis.pid")"
            kill "$redis_pid" 2>/dev/null || true
            for i in $(seq 1 50); do
                kill -0 "$redis_pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$redis_pid" 2>/dev/null || true
        fi
        rm -rf "$VERDICT_TEST_REDIS_DIR"
        VERDICT_TEST_REDIS_DIR=""
    fi
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
verdict_test_redis_main || { echo "Redis for tests failed to start" >&2; return 1 2>/dev/null || exit 1; }
verdict_test_s3_main || { echo "the S3 test server failed to install" >&2; return 1 2>/dev/null || exit 1; }
verdict_test_browser_main || { echo "Chromium for tests failed to install" >&2; return 1 2>/dev/null || exit 1; }
