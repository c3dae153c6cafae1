#!/usr/bin/env python3
"""Write a store with a given `verdict` binary, for the migration test.

    scripts/make-migration-fixture.py <verdict-binary> <out-dir>

Starts `verdict serve --no-scheduler` on a fresh SQLite store, creates two experiments
(`checkout`: three variants, 90% coverage, random salt; `banner`: its `assignment.unit` a
free label, as older releases allowed), starts them, assigns 120 subjects in each, sends
events, stops the server cleanly, and writes `<out-dir>/store.db` (the WAL checkpointed
into it) and `<out-dir>/assignments.json` (every answer the server gave). The migration
test (`crates/app/tests/migration.rs`) opens a copy of the store with the current code and
asks for the same subjects: the answers must not change.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ADMIN = "migration-fixture-admin-key-0123"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", "Bearer " + ADMIN)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def main():
    binary, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="verdict-fixture-")
    port = free_port()
    env = dict(
        os.environ,
        VERDICT_DATA_DIR=work,
        VERDICT_SERVER__PORT=str(port),
        VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY=ADMIN,
        VERDICT_LOG__LEVEL="warn",
    )
    server = subprocess.Popen([binary, "serve", "--no-scheduler"], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/healthz")
            break
        except OSError:
            time.sleep(0.1)
    experiments = {
        "checkout": {
            "key": "checkout",
            "coverage": 0.9,
            "variants": [
                {"key": "control", "weight": 0.5, "config": {"button": "blue"}},
                {"key": "green", "weight": 0.3, "config": {"button": "green"}},
                {"key": "red", "weight": 0.2, "config": {"button": "red"}},
            ],
            "primary_metric": {"event": "purchase", "kind": "binomial"},
        },
        "banner": {
            "key": "banner",
            "assignment": {"unit": "visitor"},
            "variants": [{"key": "off"}, {"key": "on", "config": {"banner": True}}],
        },
    }
    answers = {}
    for key, body in experiments.items():
        call(base, "POST", "/v1/experiments", body)
        call(base, "POST", f"/v1/experiments/{key}/activate", {})
        answers[key] = {}
        for i in range(120):
            subject = f"user-{i}"
            answers[key][subject] = call(
                base, "GET", f"/v1/experiments/{key}/assignment?subject_id={subject}"
            )
    events = [
        {"experiment": "checkout", "subject_id": f"user-{i}", "event": "purchase",
         "event_id": f"purchase-{i}", "value": 1}
        for i in range(0, 120, 3)
    ]
    call(base, "POST", "/v1/events", {"events": events})
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    db = os.path.join(work, "verdict.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copyfile(db, os.path.join(out, "store.db"))
    with open(os.path.join(out, "assignments.json"), "w") as f:
        json.dump(answers, f, indent=1, sort_keys=True)
        f.write("\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
