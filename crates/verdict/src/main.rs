//! The `verdict` binary: wires configuration, store and HTTP API together.
//!
//! This crate owns process concerns only: command-line parsing, logging set-up, opening the
//! store and cache from configuration, scheduling the jobs, signal handling and the shutdown
//! grace period. It holds no business logic; that lives in the domain, store, aggregator and
//! API crates.
//!
//! # Layout
//! - `main.rs`: the CLI (`serve`, `worker`, `run`, `default-config`) and start-up.
//! - `scheduler.rs`: the cron-scheduled jobs (through `verdict_jobs`: leases, run records).

mod demo;
mod scheduler;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use verdict_api::Application;
use verdict_config::{LogFormat, Settings};
use verdict_jobs::{Job, Jobs, RunOptions};
use verdict_metrics::Metrics;
use verdict_store::{RunOutcome, Trigger};

/// Verdict: an experimentation (A/B/n) backend.
///
/// Runs on an embedded SQLite store with no setup. Settings come from the built-in defaults
/// (see config/default.toml), an optional --config file and VERDICT_* environment variables,
/// e.g. VERDICT_SERVER__PORT=9000.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, about, long_about)]
struct Cli {
    /// TOML file overriding the built-in defaults (environment variables override it).
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        env = "VERDICT_CONFIG"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (GET /healthz, /readyz, /metrics, /v1/...) and run the scheduled
    /// jobs (aggregate, evaluate, retention; see [jobs] in the configuration) until SIGINT or
    /// SIGTERM.
    Serve {
        /// Do not run the scheduled jobs in this process (e.g. API-only replicas).
        #[arg(long)]
        no_scheduler: bool,
    },
    /// Run the scheduled jobs only (no HTTP API) until SIGINT or SIGTERM. Run as many
    /// workers as you like on one store: each job's lease lets one run it at a time, and
    /// each scheduled tick runs once.
    Worker,
    /// Run one job once, now, and print its report; exits non-zero when the run fails (1)
    /// or another process holds the job's lease (75, try again later).
    Run {
        /// aggregate, evaluate, retention or webhooks.
        #[arg(value_parser = ["aggregate", "evaluate", "retention", "webhooks"])]
        job: String,
        /// evaluate only: just this experiment (its id, or its key in the default
        /// environment).
        #[arg(long, value_name = "KEY")]
        experiment: Option<String>,
        /// Print the whole run record as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// See the whole loop in about a minute: a throwaway embedded server, an experiment with
    /// known true conversion rates (control 10%, teal 13%, violet 18%), simulated subjects
    /// through the HTTP API, aggregation, evaluation, the results table and the decision.
    /// Touches no data directory of yours.
    Demo {
        /// Simulated subjects (at least 300).
        #[arg(long, default_value_t = 30_000)]
        subjects: usize,
        /// Seed of every random draw: the same seed gives the same run.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Print the built-in configuration reference (every key, its default and env var).
    DefaultConfig,
}

/// `verdict run`'s exit code when another process holds the job's lease (EX_TEMPFAIL).
const EXIT_LEASE_HELD: u8 = 75;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DefaultConfig = cli.command {
        print!("{}", verdict_config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    if let Command::Demo { subjects, seed } = cli.command {
        return demo(subjects, seed);
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            for problem in e.problems() {
                eprintln!("verdict: configuration error: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    // `verdict run` prints its report on stdout: its logs go to stderr.
    let logs_to_stderr = matches!(cli.command, Command::Run { .. });
    if let Err(e) = init_logging(&settings, logs_to_stderr) {
        eprintln!("verdict: configuration error: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("verdict: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { no_scheduler } => serve(settings, !no_scheduler)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Worker => worker(settings).await.map(|()| ExitCode::SUCCESS),
            Command::Run {
                job,
                experiment,
                json,
            } => run_once(settings, &job, experiment, json).await,
            Command::DefaultConfig | Command::Demo { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = ?e, "verdict stopped with an error");
            eprintln!("verdict: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings, to_stderr: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log.level)
        .with_context(|| format!("log.level: '{}' is not a valid filter", settings.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if to_stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    match settings.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

async fn serve(settings: Settings, scheduler_wanted: bool) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    tracing::info!(settings = %settings.redacted_summary(), "starting verdict");
    let store = verdict_api::startup::open_store(&settings).await?;
    let cache = verdict_api::startup::open_cache(&settings)?;
    let app = Application::build(settings.clone(), store.clone(), cache.clone()).await?;
    if let Some(key) = verdict_api::startup::first_run_admin_key(&store, &settings).await? {
        // Shown once: only its hash is stored.
        tracing::warn!("first run: created an admin API key; it is shown only now: {key}");
        eprintln!("\n  Admin API key (shown once, store it now): {key}\n");
    }
    let addr = app.local_addr()?;
    tracing::info!(%addr, store = store.backend(), cache = ?settings.cache, "listening on http://{addr}");
    install_webhooks_job(app.jobs())?;
    let scheduler = if scheduler_wanted && settings.jobs.enabled {
        Some(scheduler::Scheduler::start(app.jobs().clone()).await?)
    } else {
        tracing::info!("scheduled jobs are off in this process");
        None
    };

    let jobs = app.jobs().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
    tracing::info!(
        grace_seconds = settings.server.shutdown_grace_seconds,
        "shutting down"
    );
    let _ = stop_tx.send(());
    match scheduler {
        Some(scheduler) => scheduler.shutdown(settings.server.shutdown_grace()).await,
        // Runs triggered over HTTP finish (and release their leases) within the grace.
        None => {
            jobs.shutdown(settings.server.shutdown_grace()).await;
        }
    }
    match tokio::time::timeout(settings.server.shutdown_grace(), server).await {
        Ok(joined) => joined
            .context("server task panicked")?
            .context("serving HTTP")?,
        Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Give `jobs` the body of the `webhooks` job: the dispatcher (`[webhooks]`). A scheduled
/// run delivers for [`verdict_jobs::CONTINUOUS_RUN`]; a triggered one drains what is due.
fn install_webhooks_job(jobs: &Jobs) -> anyhow::Result<()> {
    let config = verdict_webhooks::DispatcherConfig::from_settings(&jobs.settings().webhooks);
    let dispatcher = verdict_webhooks::Dispatcher::new(jobs.store().clone(), config)
        .context("building the webhook HTTP client")?;
    jobs.set_webhooks_job(Arc::new(move |trigger, stop| {
        let dispatcher = dispatcher.clone();
        Box::pin(async move {
            let for_at_most =
                (trigger == Trigger::Schedule).then_some(verdict_jobs::CONTINUOUS_RUN);
            let report = dispatcher
                .run_for(for_at_most, stop)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        })
    }));
    Ok(())
}

/// `verdict demo`: its own settings (a temporary store), warnings only on stderr.
fn demo(subjects: usize, seed: u64) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("verdict: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo::run(subjects, seed, &mut std::io::stdout())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verdict demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The job runner of a process without the HTTP API.
async fn open_jobs(settings: Settings) -> anyhow::Result<Jobs> {
    let settings = Arc::new(settings);
    let store = verdict_api::startup::open_store(&settings).await?;
    let cache = verdict_api::startup::open_cache(&settings)?;
    let jobs = Jobs::new(store, cache, settings, Metrics::new());
    install_webhooks_job(&jobs)?;
    Ok(jobs)
}

async fn worker(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = %settings.redacted_summary(), "starting a verdict worker");
    let grace = settings.server.shutdown_grace();
    let jobs = open_jobs(settings).await?;
    let scheduler = scheduler::Scheduler::start(jobs).await?;
    shutdown_signal().await;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
    scheduler.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn run_once(
    settings: Settings,
    job: &str,
    experiment: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = Job::parse(job).with_context(|| format!("no job '{job}'"))?;
    let jobs = open_jobs(settings).await?;
    let run = jobs
        .run(job, Trigger::Cli, None, RunOptions { experiment })
        .await?
        .context("the run did not start")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        let took = run
            .finished_at
            .map(|f| format!(" in {} ms", (f - run.started_at).whole_milliseconds()))
            .unwrap_or_default();
        println!("{job}: {}{took} (run {})", run.outcome.as_str(), run.id);
        if let Some(error) = &run.error {
            println!("error: {error}");
        }
        if !run.report.is_null() {
            println!("{}", serde_json::to_string_pretty(&run.report)?);
        }
    }
    Ok(match run.outcome {
        RunOutcome::Succeeded => ExitCode::SUCCESS,
        RunOutcome::SkippedLeaseHeld => ExitCode::from(EXIT_LEASE_HELD),
        _ => ExitCode::FAILURE,
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
