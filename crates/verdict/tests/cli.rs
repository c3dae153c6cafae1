//! The `verdict` binary as a newcomer runs it: real process, real port, clean data dir.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use verdict_cache::test_support::free_port;

fn verdict() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    // Start from a clean slate: no inherited VERDICT_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("VERDICT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

async fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

#[tokio::test]
async fn serve_answers_healthz_and_readyz_on_a_clean_data_dir_with_no_services() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = verdict()
        .arg("serve")
        .current_dir(dir.path())
        .env("VERDICT_SERVER__PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let logs = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(r) = get(&format!("{base}/healthz")).await {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "verdict serve did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.0, 200);
    assert_eq!(health.1["status"], "ok");
    let ready = get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(
        ready,
        (
            200,
            serde_json::json!({"status": "ready", "store": "sqlite",
                               "cache": {"backend": "memory", "status": "ok"}})
        )
    );
    let missing = get(&format!("{base}/nope")).await.unwrap();
    assert_eq!(missing.0, 404);
    assert_eq!(missing.1["error"]["code"], "route_not_found");

    // The embedded store is created under ./data by default.
    assert!(dir.path().join("data/verdict.db").exists());

    // A first run with no configured key prints an admin key once; it works.
    let mut line = String::new();
    let key = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no admin key printed"
        );
        if let Some(k) = line
            .trim()
            .strip_prefix("Admin API key (shown once, store it now): ")
        {
            break k.to_owned();
        }
    };
    let created = reqwest::Client::new()
        .post(format!("{base}/v1/experiments"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"key": "first", "variants": [{"key": "a"}, {"key": "b"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown exits 0, got {status:?}");
    let logs = logs.join().unwrap().join("\n");
    assert!(
        logs.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(logs.contains("store=sqlite"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
}

#[test]
fn bad_config_prints_one_line_naming_the_key_and_exits_nonzero() {
    let out = verdict()
        .arg("serve")
        .env("VERDICT_SERVER__PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("verdict: configuration error: server.port:"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = verdict()
        .args(["serve", "--config", "/nonexistent/verdict.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/verdict.toml"), "{stderr}");
}

#[test]
fn help_describes_every_command() {
    let out = verdict().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "worker",
        "run",
        "default-config",
        "--config",
        "VERDICT_",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let serve = verdict().args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8(serve.stdout).unwrap().contains("healthz"));
}

#[test]
fn default_config_prints_the_reference_that_parses() {
    let out = verdict().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("VERDICT_SERVER__PORT"));
}

#[test]
fn an_unreachable_mongodb_fails_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = verdict()
        .arg("serve")
        .current_dir(dir.path())
        .env("VERDICT_STORE", "mongodb")
        .env(
            "VERDICT_MONGODB__URI",
            format!("mongodb://127.0.0.1:{}", free_port()),
        )
        .env("VERDICT_MONGODB__CONNECT_TIMEOUT_MS", "500")
        .env("VERDICT_SERVER__PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("connecting to MongoDB"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "start-up gave up after {:?}",
        started.elapsed()
    );
}

/// `verdict serve` on the production backends: MongoDB (`VERDICT_TEST_MONGODB_URI`, which
/// `scripts/test.sh` starts) and Redis (the test run's), both reported ready.
#[tokio::test]
async fn serve_runs_on_mongodb_and_redis() {
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server (scripts/test.sh starts one)");
    let redis = verdict_cache::test_support::test_redis();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = format!("verdict_cli_{}", std::process::id());
    let mut child = verdict()
        .arg("serve")
        .current_dir(dir.path())
        .env("VERDICT_STORE", "mongodb")
        .env("VERDICT_MONGODB__URI", &uri)
        .env("VERDICT_MONGODB__DATABASE", &database)
        .env("VERDICT_CACHE", "redis")
        .env("VERDICT_REDIS__URL", redis.url())
        .env(
            "VERDICT_REDIS__KEY_PREFIX",
            verdict_cache::test_support::random_prefix(),
        )
        .env("VERDICT_SERVER__PORT", port.to_string())
        .env(
            "VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY",
            "cli-admin-key-0123456789",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(r) = get(&format!("{base}/readyz")).await {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "verdict serve did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ready,
        (
            200,
            serde_json::json!({"status": "ready", "store": "mongodb",
                               "cache": {"backend": "redis", "status": "ok"}})
        )
    );
    let store = verdict_store::MongoStore::connect(&uri, &database)
        .await
        .unwrap();
    store.database().drop().await.unwrap();
}

/// The scheduler of `verdict serve` folds events into the rollups on its own: results show
/// an event without anyone running a job by hand.
#[tokio::test]
async fn serve_runs_the_scheduled_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = "cli-admin-key-0123456789";
    let mut child = verdict()
        .arg("serve")
        .current_dir(dir.path())
        .env("VERDICT_SERVER__PORT", port.to_string())
        .env("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", key)
        .env("VERDICT_JOBS__AGGREGATE_SCHEDULE", "* * * * * *")
        .env("VERDICT_JOBS__EVALUATE_SCHEDULE", "* * * * * *")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&format!("{base}/healthz")).await.is_none() {
        assert!(Instant::now() < deadline, "verdict serve did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let created = post(
        "/v1/experiments",
        serde_json::json!({"key": "first", "variants": [{"key": "a"}, {"key": "b"}],
                           "primary_metric": {"event": "purchase"}}),
    )
    .await
    .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    post("/v1/experiments/first/activate", serde_json::json!({}))
        .await
        .unwrap();
    post(
        "/v1/experiments/first/assignment",
        serde_json::json!({"subject_id": "user-1"}),
    )
    .await
    .unwrap();
    let sent = post(
        "/v1/events",
        serde_json::json!({"events": [{"experiment": "first", "subject_id": "user-1",
                                        "event": "purchase"}]}),
    )
    .await
    .unwrap();
    assert_eq!(sent.status().as_u16(), 200);
    // Its own deadline: start-up above may have used much of the first one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let counted = loop {
        let results: serde_json::Value = http
            .get(format!("{base}/v1/experiments/first/results"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let counted: u64 = results["metrics"][0]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["converted_subjects"].as_u64().unwrap())
            .sum();
        if counted > 0 || Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        counted, 1,
        "the scheduled aggregation never folded the event in"
    );
}

/// `verdict run aggregate` on a fresh data dir: creates the store, runs the job once under
/// its lease, prints the report and exits 0; `--json` prints the run record.
#[test]
fn run_aggregate_on_a_fresh_data_dir_prints_a_report_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = verdict()
        .args(["run", "aggregate"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("aggregate: succeeded"), "{stdout}");
    assert!(stdout.contains("\"events\": 0"), "{stdout}");
    assert!(dir.path().join("data/verdict.db").exists());

    let out = verdict()
        .args(["run", "retention", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON run record");
    assert_eq!(run["job"], "retention");
    assert_eq!(run["trigger"], "cli");
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(run["report"]["events_deleted"], 0);

    // Bad input: an unknown job, or --experiment on a job that runs for all.
    let out = verdict()
        .args(["run", "vacuum"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown job is a usage error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("jobs are aggregate, evaluate, lifecycle, retention, webhooks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verdict()
        .args(["run", "aggregate", "--experiment", "x"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be narrowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `verdict demo --seed 42` (with fewer subjects, for test time): exits 0 and its decision is
/// the variant with the best true rate; the same seed prints the same table.
#[test]
fn demo_with_a_seed_decides_the_truly_better_variant_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = verdict()
            .args(["demo", "--seed", "42", "--subjects", "6000"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = run();
    assert!(first.contains("Decision: violet wins"), "{first}");
    for variant in ["control", "teal", "violet"] {
        assert!(
            first.lines().any(|l| l.starts_with(variant)),
            "no row for {variant}: {first}"
        );
    }
    let table = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                ["control", "teal", "violet"]
                    .iter()
                    .any(|v| l.starts_with(v))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(table(&run()), table(&first), "the same seed, the same run");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "the demo leaves the working directory alone"
    );
    let out = verdict()
        .args(["demo", "--subjects", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "too few subjects is refused");
}
