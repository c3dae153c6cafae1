//! The `verdict` binary: wires configuration, store and HTTP API together.
//!
//! This crate owns process concerns only: command-line parsing, logging set-up, opening the
//! store and cache from configuration, scheduling the jobs, signal handling and the shutdown
//! grace period. It holds no business logic; that lives in the domain, store, aggregator and
//! API crates.
//!
//! # Layout
//! - `main.rs`: the CLI (`serve`, `default-config`) and start-up.
//! - `scheduler.rs`: the cron-scheduled aggregation and evaluation jobs.

mod scheduler;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use verdict_api::Application;
use verdict_config::{LogFormat, Settings};

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
    /// Serve the HTTP API (GET /healthz, /readyz) and run the scheduled jobs (aggregation,
    /// evaluation; see [jobs] in the configuration) until SIGINT or SIGTERM.
    Serve {
        /// Do not run the scheduled jobs in this process (e.g. API-only replicas).
        #[arg(long)]
        no_scheduler: bool,
    },
    /// Print the built-in configuration reference (every key, its default and env var).
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DefaultConfig = cli.command {
        print!("{}", verdict_config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
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
    if let Err(e) = init_logging(&settings) {
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
            Command::Serve { no_scheduler } => serve(settings, !no_scheduler).await,
            Command::DefaultConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "verdict stopped with an error");
            eprintln!("verdict: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log.level)
        .with_context(|| format!("log.level: '{}' is not a valid filter", settings.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
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
    let scheduler = if scheduler_wanted && settings.jobs.enabled {
        Some(scheduler::Scheduler::start(&settings.jobs, store.clone(), cache.clone()).await?)
    } else {
        tracing::info!("scheduled jobs are off in this process");
        None
    };

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
    if let Some(scheduler) = scheduler {
        scheduler.shutdown(settings.server.shutdown_grace()).await;
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
