//! The `verdict` binary: wires configuration, backends, the application and its adapters.
//!
//! This crate owns process concerns only: command-line parsing, logging set-up, opening the
//! store and cache the configuration selects, starting the HTTP server and the job
//! scheduler, signal handling and the one shutdown signal with its grace deadline. It holds
//! no business logic; that lives in the application layer (`verdict-app`) and below.
//!
//! # Layout
//! - `main.rs`: the CLI (`serve`, `worker`, `run`, `demo`, `default-config`), start-up and
//!   shutdown.
//! - `adapters.rs`: opening the configured store and cache.
//! - `demo.rs`: `verdict demo`, the whole loop on a throwaway store.

mod adapters;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use verdict_api::Application;
use verdict_app::App;
use verdict_config::{LogFormat, Settings};
use verdict_jobs::StartError;
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
    /// jobs (aggregate, evaluate, lifecycle, retention, webhooks; see the jobs section of the
    /// configuration) until SIGINT or SIGTERM.
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
        /// The job: aggregate, evaluate, lifecycle, retention or webhooks (an unknown name is refused
        /// with the list of this build's jobs).
        job: String,
        /// evaluate only: just this experiment (its id, or its key in the default
        /// environment).
        #[arg(long, value_name = "KEY")]
        experiment: Option<String>,
        /// Print the whole run record as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// See the whole loop in seconds: a throwaway embedded server, an experiment with
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

/// One allocator for the whole process, SQLite's `malloc` included: jemalloc returns freed
/// pages to the system on its own (after 10 s), where glibc's per-thread arenas keep them, so
/// the server's RSS stays near what it holds under a long mixed load (see the soak in
/// BENCHMARKS.md).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// Open the configured backends and the application over them. `stop` is the process's
/// one shutdown signal.
async fn open_app(settings: Settings, stop: &CancellationToken) -> anyhow::Result<App> {
    let settings = Arc::new(settings);
    let store = adapters::open_store(&settings).await?;
    let cache = adapters::open_cache(&settings)?;
    App::new(store, cache, settings, stop.clone()).await
}

async fn serve(settings: Settings, scheduler_wanted: bool) -> anyhow::Result<()> {
    tracing::info!(settings = %settings.redacted_summary(), "starting verdict");
    let grace = settings.server.shutdown_grace();
    let schedule = scheduler_wanted && settings.jobs.enabled;
    let stop = CancellationToken::new();
    let app = open_app(settings, &stop).await?;
    let server = Application::build(app.clone()).await?;
    if let Some(key) = app.first_run_admin_key().await? {
        // Shown once, to the operator's terminal only (never through the log pipeline): only
        // its hash is stored.
        tracing::warn!("first run: created an admin API key and printed it on standard error");
        eprintln!("\n  Admin API key (shown once, store it now): {key}\n");
    }
    let addr = server.local_addr()?;
    tracing::info!(%addr, store = app.backend(), cache = ?app.settings().cache, "listening on http://{addr}");
    let scheduled = if schedule {
        Some(app.runner().schedule().await?)
    } else {
        tracing::info!("scheduled jobs are off in this process");
        None
    };
    let server = tokio::spawn(server.run_until_stopped());
    shutdown_signal().await;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
    // One signal for everything (HTTP stops accepting, push streams end, runs are told to
    // stop) and one deadline they share.
    let deadline = Instant::now() + grace;
    stop.cancel();
    if let Some(scheduled) = scheduled {
        scheduled.stop().await;
    }
    let (runs_done, served) = tokio::join!(
        app.runner().shutdown(deadline),
        tokio::time::timeout_at(deadline, server)
    );
    if !runs_done {
        tracing::warn!("a job run did not finish within the grace period; its lease will expire");
    }
    match served {
        Ok(joined) => joined
            .context("server task panicked")?
            .context("serving HTTP")?,
        Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    tracing::info!("stopped");
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

async fn worker(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = %settings.redacted_summary(), "starting a verdict worker");
    let grace = settings.server.shutdown_grace();
    let stop = CancellationToken::new();
    let app = open_app(settings, &stop).await?;
    let scheduled = app.runner().schedule().await?;
    shutdown_signal().await;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
    let deadline = Instant::now() + grace;
    stop.cancel();
    scheduled.stop().await;
    if !app.runner().shutdown(deadline).await {
        tracing::warn!("a job run did not finish within the grace period; its lease will expire");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run_once(
    settings: Settings,
    job: &str,
    experiment: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    let app = open_app(settings, &stop).await?;
    let run = match app.runner().run(job, Trigger::Cli, None, experiment).await {
        Ok(run) => run.context("the run did not start")?,
        // Asked for something no run can do: a usage error, as clap's own.
        Err(e @ (StartError::UnknownJob { .. } | StartError::Invalid(_))) => {
            eprintln!("verdict: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
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
