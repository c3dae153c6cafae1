//! `verdict demo`: the whole loop in about a minute, on a throwaway embedded store.
//!
//! Starts the real server on a free port (SQLite in a temporary directory, in-process
//! cache), creates an experiment whose variants have known true conversion rates, sends
//! simulated subjects through the HTTP API (assignment, then a conversion event with the
//! variant's probability), runs the aggregation and evaluation jobs, and prints the results
//! table and the decision. `--seed` fixes every random draw, so a run is reproducible.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use verdict_api::Application;
use verdict_app::App;
use verdict_config::Settings;
use verdict_store::Trigger;

/// The demo's variants and their true conversion rates.
pub const VARIANTS: [(&str, f64); 3] = [("control", 0.10), ("teal", 0.13), ("violet", 0.18)];

const EXPERIMENT: &str = "demo-checkout";
const KEY: &str = "demo-admin-key-0123456789abcdef";
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Events per ingestion request.
const BATCH: usize = 500;

/// Run the demo; the winning variant's key, if one was decided.
pub async fn run(
    subjects: usize,
    seed: u64,
    out: &mut impl Write,
) -> anyhow::Result<Option<String>> {
    if subjects < 300 {
        bail!("--subjects must be at least 300 (100 per variant)");
    }
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let env = [
        (
            "VERDICT_DATA_DIR",
            dir.path().to_string_lossy().into_owned(),
        ),
        ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", KEY.to_owned()),
        ("VERDICT_LOG__LEVEL", "warn".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let mut settings = Settings::load_from(None, env).context("demo settings")?;
    settings.server.port = 0; // any free port
    let settings = Arc::new(settings);
    let store = crate::adapters::open_store(&settings).await?;
    let cache = crate::adapters::open_cache(&settings)?;
    let stop = CancellationToken::new();
    let app = App::new(store, cache, settings.clone(), stop.clone()).await?;
    let jobs = app.runner().clone();
    let server = Application::build(app).await?;
    let base = format!("http://{}", server.local_addr()?);
    tokio::spawn(server.run_until_stopped());
    let _stop_server = stop.drop_guard();
    let http = reqwest::Client::new();
    let started = Instant::now();

    writeln!(
        out,
        "Verdict demo: {subjects} simulated subjects, seed {seed}, server at {base}\n\
         True conversion rates: {}\n",
        VARIANTS
            .iter()
            .map(|(k, r)| format!("{k} {:.0}%", r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let variants: Vec<Value> = VARIANTS.iter().map(|(k, _)| json!({"key": k})).collect();
    call(
        &http,
        &format!("{base}/v1/experiments"),
        json!({
            "key": EXPERIMENT, "name": "Demo checkout button",
            "variants": variants,
            "assignment": {"salt": format!("demo-{seed}")},
        }),
    )
    .await?;
    call(
        &http,
        &format!("{base}/v1/experiments/{EXPERIMENT}/activate"),
        json!({}),
    )
    .await?;

    // One uniform draw per subject, fixed by the seed (order of requests does not matter).
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draws: Vec<f64> = (0..subjects).map(|_| rng.random::<f64>()).collect();
    let bar = ProgressBar::new(subjects as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} subjects ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("simulating");
    let draws = Arc::new(draws);
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (http, base, draws, bar) = (http.clone(), base.clone(), draws.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut events = Vec::new();
            for i in (worker..draws.len()).step_by(CONCURRENCY) {
                let subject = format!("demo-user-{i}");
                let assigned = call(
                    &http,
                    &format!("{base}/v1/experiments/{EXPERIMENT}/assignment"),
                    json!({"subject_id": subject}),
                )
                .await?;
                let variant = assigned["variant"].as_str().unwrap_or_default();
                let rate = VARIANTS
                    .iter()
                    .find(|(k, _)| *k == variant)
                    .map_or(0.0, |(_, r)| *r);
                if draws[i] < rate {
                    events.push(json!({"experiment": EXPERIMENT, "subject_id": subject,
                                       "event": "conversion", "event_id": format!("demo-{i}")}));
                }
                if events.len() == BATCH {
                    call(
                        &http,
                        &format!("{base}/v1/events"),
                        json!({"events": std::mem::take(&mut events)}),
                    )
                    .await?;
                }
                bar.inc(1);
            }
            if !events.is_empty() {
                call(
                    &http,
                    &format!("{base}/v1/events"),
                    json!({"events": events}),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("a simulation task panicked")??;
    }
    bar.finish_with_message("simulated");

    let aggregate = jobs.run("aggregate", Trigger::Cli, None, None).await?;
    let evaluate = jobs.run("evaluate", Trigger::Cli, None, None).await?;
    let (Some(aggregate), Some(evaluate)) = (aggregate, evaluate) else {
        bail!("the demo's jobs did not run");
    };
    writeln!(
        out,
        "\nAggregated {} events; evaluated {} experiment(s).\n",
        aggregate.report["events"], evaluate.report["evaluated"]
    )?;

    let results = http
        .get(format!("{base}/v1/experiments/{EXPERIMENT}/results"))
        .bearer_auth(KEY)
        .send()
        .await?
        .json::<Value>()
        .await?;
    writeln!(
        out,
        "{:<10} {:>9} {:>12} {:>8} {:>19} {:>8} {:>14}",
        "variant", "subjects", "conversions", "rate", "95% interval", "P(best)", "expected loss"
    )?;
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{:.2}%", x * 100.0))
    };
    // The primary metric is listed first.
    for v in results["metrics"][0]["variants"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let interval = match v["credible_interval"].as_array() {
            Some(ci) if ci.len() == 2 => format!("{} – {}", pct(&ci[0]), pct(&ci[1])),
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "{:<10} {:>9} {:>12} {:>8} {:>19} {:>8} {:>14}",
            v["variant"].as_str().unwrap_or("?"),
            v["subjects"].as_u64().unwrap_or(0),
            v["converted_subjects"].as_u64().unwrap_or(0),
            pct(&v["rate"]),
            interval,
            v["p_best"]
                .as_f64()
                .map_or("-".to_owned(), |p| format!("{p:.4}")),
            v["expected_loss"]
                .as_f64()
                .map_or("-".to_owned(), |l| format!("{l:.6}")),
        )?;
    }
    let winner = http
        .get(format!("{base}/v1/experiments/{EXPERIMENT}/winner"))
        .bearer_auth(KEY)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let decided = winner["winner"].as_str().map(str::to_owned);
    match &decided {
        Some(w) => writeln!(
            out,
            "\nDecision: {w} wins (status {}); assignment now serves its config to everyone.",
            winner["status"].as_str().unwrap_or("?")
        )?,
        None => {
            let outcome = &evaluate.report["outcomes"][0];
            writeln!(
                out,
                "\nDecision: none yet (blocked by: {}); more subjects would settle it.",
                outcome["blockers"]
            )?
        }
    }
    writeln!(out, "Finished in {:.1} s.", started.elapsed().as_secs_f64())?;
    Ok(decided)
}

async fn call(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let response = http
        .post(url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url}: {status}: {body}");
    }
    Ok(body)
}
