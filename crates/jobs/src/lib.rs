//! The job framework of Verdict: one [`Job`] trait, one [`Registry`] of the jobs a process
//! runs, one [`Runner`] that leases, records, schedules and stops them all.
//!
//! A job is a type implementing [`Job`] next to its logic (`aggregate` and `evaluate` in
//! `aggregator/`, `retention` in `retention/`, `webhooks` in `webhooks/`). The runner
//! owns everything else: the store lease with its fencing token (one holder across replicas),
//! the run record (trigger, owner, outcome, report, the error with its causes), lease
//! renewal and loss, the cron schedule and continuous loops, and shutdown. The CLI, the
//! internal API and `/metrics` ask the runner, which asks the registry; none keeps its own
//! list of jobs.
//!
//! This crate must not decide what a job does, nor depend on a job's crate.
//!
//! # Layout
//! - `job.rs`: [`Job`], [`Schedule`], [`RunContext`], [`JobError`].
//! - `runner.rs`: [`Registry`], [`Runner`] (start, run, status, shutdown), [`Clock`].
//! - `schedule.rs`: [`Runner::schedule`]: cron jobs and continuous loops.

mod job;
mod runner;
mod schedule;

pub use job::{Job, JobError, RunContext, Schedule};
pub use runner::{
    Clock, JobStatus, LAG_REFRESH, Registry, Runner, RunnerConfig, Start, StartError,
};
pub use schedule::Scheduled;

/// How long one scheduled run of a continuous job lasts before it records itself and the
/// loop starts the next (under a fresh lease grant): bounds run records to one a minute.
pub const CONTINUOUS_RUN: std::time::Duration = std::time::Duration::from_secs(60);
