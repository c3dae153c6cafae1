//! The operations page, `/admin/operations`: how the pipeline behind the experiments is
//! doing, for those who operate it (right `jobs:run`, which viewers lack; the nav link is
//! shown only to callers holding it).
//!
//! - Events rolled up per minute over the last hour: each succeeded run of the `aggregate`
//!   job counts the events it rolled up (its report's `events`), summed by the minute the
//!   run started; the recent runs beside it. Then the aggregation lag.
//! - Events rejected by reason: this replica's `verdict_events_rejected_total` counters,
//!   since it started.
//! - Each job: schedule, last run, next run, lease holder, lag, and a "Run now" button
//!   (`POST /admin/operations/jobs/{job}/run`, as `POST /v1/internal/jobs/{job}/run`).
//! - Webhook endpoints of the caller's environment (with `webhooks:manage`): state, failed
//!   and pending messages, and the failed ones with a "Redeliver" button
//!   (`POST /admin/operations/endpoints/{id}/messages/{msg}/redeliver`).
//! - Store and cache readiness, as `/readyz` reports it.
//!
//! Everything is read through the application's use-cases; a section whose read fails shows
//! the problem and the rest of the page still renders (the page is most needed when
//! something is down).

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use time::{Duration, OffsetDateTime};
use verdict_app::health::Readiness;
use verdict_app::jobs::{JobList, JobStatus};
use verdict_app::webhooks::{EndpointListQuery, EndpointView, MessageListQuery, MessageView};
use verdict_app::{AppError, PageParams, Paginated};
use verdict_domain::Right;
use verdict_store::{RunOutcome, RunRecord};

use super::chart::{Chart, Format, Line, line_chart};
use super::pages::when;
use super::{
    Change, NoFields, SignedIn, checked_form, error_page, html, pages, redirect, require, signed_in,
};
use crate::state::AppState;

/// The page's URL.
const PAGE: &str = "/admin/operations";
/// The job whose runs the throughput chart counts.
const AGGREGATE: &str = "aggregate";
/// Minutes the throughput chart covers.
const WINDOW_MINUTES: i64 = 60;
/// Runs read per page, and pages read at most, for the throughput chart.
const RUNS_PAGE: u32 = 100;
const MAX_RUN_PAGES: u32 = 20;
/// Recent aggregate runs listed beside the chart.
const RECENT_RUNS: usize = 10;
/// Endpoints shown, and failed messages shown per endpoint.
const ENDPOINTS_SHOWN: u32 = 20;
const FAILED_SHOWN: u32 = 20;

/// The operations page's routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(PAGE, get(operations))
        .route("/admin/operations/jobs/{job}/run", post(run_job))
        .route(
            "/admin/operations/endpoints/{id}/messages/{msg}/redeliver",
            post(redeliver),
        )
}

// --- handlers -------------------------------------------------------------------------

async fn operations(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let who = match signed_in(&state, &headers).await {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    if let Err(answer) = require(&who, Right::JobsRun) {
        return *answer;
    }
    let view = gather(&state, &who, OffsetDateTime::now_utc()).await;
    html(StatusCode::OK, page(&who, &view))
}

async fn run_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job): Path<String>,
    form: Result<Form<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, _) = match checked_form(&state, &headers, form).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    if let Err(answer) = require(&who, Right::JobsRun) {
        return *answer;
    }
    // A run that outlasts `jobs.http_wait_seconds` goes on; the page shows it as running.
    match state.trigger_job(&job, None).await {
        Ok(_) => redirect(&format!("{PAGE}#{}", anchor("job", &job))),
        Err(e) => error_page(Some(&who), &e),
    }
}

async fn redeliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, msg)): Path<(String, String)>,
    form: Result<Form<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, _) = match checked_form(&state, &headers, form).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    if let Err(answer) = require(&who, Right::WebhooksManage) {
        return *answer;
    }
    match state.redeliver(&who.caller, &id, &msg).await {
        Ok(_) => redirect(&format!("{PAGE}#{}", anchor("endpoint", &id))),
        Err(e) => error_page(Some(&who), &e),
    }
}

// --- what the page shows ----------------------------------------------------------------

/// Everything the page shows, each part read on its own.
struct View {
    readiness: Result<Readiness, AppError>,
    jobs: Result<JobList, AppError>,
    throughput: Result<Throughput, AppError>,
    /// This replica's rejected events by reason, since it started.
    rejected: Vec<(String, u64)>,
    /// `None`: the caller may not manage webhooks.
    webhooks: Option<Result<Endpoints, AppError>>,
}

/// The aggregate job's runs over the chart's window.
struct Throughput {
    /// Events rolled up in each minute of the window, oldest first (empty: no run in it).
    minutes: Vec<(OffsetDateTime, u64)>,
    /// The newest runs, newest first.
    recent: Vec<RunRecord>,
    /// Fewer minutes than the window: the runs read did not reach back so far.
    shortened: bool,
}

struct Endpoints {
    shown: Vec<EndpointHealth>,
    total: u64,
}

struct EndpointHealth {
    endpoint: EndpointView,
    /// The first page of its failed messages, newest first.
    failed: Result<Paginated<MessageView>, AppError>,
    /// How many of its messages wait for an attempt.
    pending: Result<u64, AppError>,
}

async fn gather(state: &AppState, who: &SignedIn, now: OffsetDateTime) -> View {
    let webhooks = async {
        if who.may(Right::WebhooksManage) {
            Some(endpoints(state, who).await)
        } else {
            None
        }
    };
    let (readiness, jobs, throughput, webhooks) = tokio::join!(
        state.readiness(),
        state.jobs(),
        throughput(state, now),
        webhooks
    );
    View {
        readiness,
        jobs,
        throughput,
        rejected: state.metrics().events_rejected_by_reason(),
        webhooks,
    }
}

/// `t` at the start of its minute.
fn minute_of(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(t)
}

/// The aggregate job's runs since the window's first minute (newest first), and whether
/// they reach back that far.
async fn runs_since(
    state: &AppState,
    since: OffsetDateTime,
) -> Result<(Vec<RunRecord>, bool), AppError> {
    let mut runs = Vec::new();
    for page in 1..=MAX_RUN_PAGES {
        let params = PageParams {
            page: Some(page),
            page_size: Some(RUNS_PAGE),
        };
        let got = state.job_runs(AGGREGATE, params).await?;
        let last_page = u64::from(page) >= got.pagination.total_pages;
        let reached = got.data.last().is_some_and(|r| r.started_at < since);
        runs.extend(got.data);
        if last_page || reached {
            return Ok((runs, true));
        }
    }
    Ok((runs, false))
}

async fn throughput(state: &AppState, now: OffsetDateTime) -> Result<Throughput, AppError> {
    let last = minute_of(now);
    let mut first = last - Duration::minutes(WINDOW_MINUTES - 1);
    let (runs, complete) = runs_since(state, first).await?;
    let shortened = !complete;
    if shortened {
        // The oldest minute read may have more runs than were read: start after it.
        if let Some(oldest) = runs.last() {
            first = first.max(minute_of(oldest.started_at) + Duration::minutes(1));
        }
    }
    let minutes = per_minute(&runs, first, last);
    let recent = runs.into_iter().take(RECENT_RUNS).collect();
    Ok(Throughput {
        minutes,
        recent,
        shortened,
    })
}

/// The events a run rolled up (its report's `events`; `None` unless it succeeded).
fn events_of(run: &RunRecord) -> Option<u64> {
    if run.outcome == RunOutcome::Succeeded {
        run.report.get("events").and_then(serde_json::Value::as_u64)
    } else {
        None
    }
}

/// Events rolled up in each minute from `first` to `last` (both minute starts), by the
/// minute each succeeded run started; empty when no run started in that time.
fn per_minute(
    runs: &[RunRecord],
    first: OffsetDateTime,
    last: OffsetDateTime,
) -> Vec<(OffsetDateTime, u64)> {
    let within = |t: OffsetDateTime| t >= first && t < last + Duration::minutes(1);
    if !runs.iter().any(|r| within(r.started_at)) || last < first {
        return Vec::new();
    }
    let count = ((last - first).whole_minutes() + 1) as usize;
    let mut minutes: Vec<(OffsetDateTime, u64)> = (0..count)
        .map(|i| (first + Duration::minutes(i as i64), 0))
        .collect();
    for run in runs.iter().filter(|r| within(r.started_at)) {
        let i = (minute_of(run.started_at) - first).whole_minutes() as usize;
        if let (Some(slot), Some(events)) = (minutes.get_mut(i), events_of(run)) {
            slot.1 += events;
        }
    }
    minutes
}

async fn endpoints(state: &AppState, who: &SignedIn) -> Result<Endpoints, AppError> {
    let query = EndpointListQuery {
        page: Some(1),
        page_size: Some(ENDPOINTS_SHOWN),
        environment: None,
    };
    let list = state.list_endpoints(&who.caller, query).await?;
    let total = list.pagination.total;
    let shown = futures::future::join_all(list.data.into_iter().map(|endpoint| async move {
        let messages = |status: &str, size: u32| MessageListQuery {
            page: Some(1),
            page_size: Some(size),
            status: Some(status.to_owned()),
        };
        let (failed, pending) = tokio::join!(
            state.list_messages(&who.caller, &endpoint.id, messages("failed", FAILED_SHOWN)),
            state.list_messages(&who.caller, &endpoint.id, messages("pending", 1)),
        );
        EndpointHealth {
            endpoint,
            failed,
            pending: pending.map(|p| p.pagination.total),
        }
    }))
    .await;
    Ok(Endpoints { shown, total })
}

// --- markup -----------------------------------------------------------------------------

/// An element id: `prefix-` and `name` with anything but letters, digits, `-` and `_`
/// replaced.
fn anchor(prefix: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{name}")
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A duration in seconds, in words a reader takes in at once.
fn lag(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".to_owned(),
        Some(s) if !s.is_finite() => "—".to_owned(),
        Some(s) if s < 1.0 => "0 s (caught up)".to_owned(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.0} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

fn outcome_badge(o: RunOutcome) -> Markup {
    html! { span class={ "outcome outcome-" (o.as_str()) } { (o.as_str()) } }
}

fn page(who: &SignedIn, v: &View) -> Markup {
    pages::layout(
        "Operations",
        Some(who),
        html! {
            h1 { "Operations" }
            (readiness_section(&v.readiness))
            (throughput_section(&v.throughput, &v.jobs))
            (rejected_section(&v.rejected))
            (jobs_section(who, &v.jobs))
            @if let Some(webhooks) = &v.webhooks {
                (webhooks_section(who, webhooks))
            }
        },
    )
}

fn readiness_section(r: &Result<Readiness, AppError>) -> Markup {
    html! {
        section #readiness {
            h2 { "Readiness" }
            @match r {
                Ok(r) => dl.facts {
                    dt { "Store" }
                    dd.store { (r.store) ": " span.state-ok { "ok" } }
                    dt { "Cache" }
                    dd.cache {
                        (r.cache.backend) ": "
                        @if r.cache.status == "ok" {
                            span.state-ok { "ok" }
                        } @else {
                            span.state-bad { (r.cache.status) }
                            " (reads fall back to the store)"
                        }
                    }
                },
                Err(e) => (pages::problem_box(e)),
            }
            p.hint { "As " code { "GET /readyz" } " reports them for this replica." }
        }
    }
}

fn throughput_section(
    t: &Result<Throughput, AppError>,
    jobs: &Result<JobList, AppError>,
) -> Markup {
    let aggregate_lag = jobs.as_ref().ok().and_then(|list| {
        list.data
            .iter()
            .find(|j| j.job == AGGREGATE)
            .map(|j| j.lag_seconds)
    });
    html! {
        section #throughput {
            h2 { "Aggregation" }
            @match t {
                Ok(t) => {
                    (line_chart(&Chart {
                        title: "Events rolled up per minute",
                        x_label: "minute the aggregate run started (UTC)",
                        y_label: "events per minute",
                        y_format: Format::Integer,
                        series: vec![Line {
                            label: "aggregate job".to_owned(),
                            points: t.minutes.iter().map(|&(at, n)| (at, n as f64)).collect(),
                            band: None,
                        }],
                        y_zero: true,
                    }))
                    p.hint {
                        "From the aggregate job's run records: the events each succeeded run \
                         rolled up, summed by the minute it started, over the last hour"
                        @if t.shortened { " (only as far back as the newest runs read reach)" }
                        "."
                    }
                    @if let Some(lag_seconds) = aggregate_lag {
                        p #aggregation-lag {
                            "Aggregation lag: " strong { (lag(lag_seconds)) }
                            " (the age of the oldest raw event not yet rolled up)."
                        }
                    }
                    h3 { "Recent aggregate runs" }
                    @if t.recent.is_empty() {
                        p.empty { "No runs yet." }
                    } @else {
                        table #aggregate-runs {
                            thead { tr {
                                th { "Started" } th { "Trigger" } th { "Outcome" }
                                th.num { "Events rolled up" } th { "Error" }
                            } }
                            tbody {
                                @for run in &t.recent {
                                    tr data-run=(run.id) {
                                        td { (when(Some(run.started_at))) }
                                        td { (run.trigger.as_str()) }
                                        td { (outcome_badge(run.outcome)) }
                                        td.num.events {
                                            @match events_of(run) { Some(n) => (n), None => "—" }
                                        }
                                        td { (run.error.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                },
                Err(e) => (pages::problem_box(e)),
            }
        }
    }
}

fn rejected_section(rejected: &[(String, u64)]) -> Markup {
    html! {
        section #rejected {
            h2 { "Events rejected by reason" }
            p.hint {
                "This replica, since it started (" code { "verdict_events_rejected_total" } ")."
            }
            @if rejected.is_empty() {
                p.empty { "None rejected." }
            } @else {
                table {
                    thead { tr { th { "Reason" } th.num { "Events" } } }
                    tbody {
                        @for (reason, n) in rejected {
                            tr data-reason=(reason) {
                                td { code { (reason) } }
                                td.num.count { (n) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn jobs_section(who: &SignedIn, jobs: &Result<JobList, AppError>) -> Markup {
    html! {
        section #jobs {
            h2 { "Jobs" }
            @match jobs {
                Ok(list) => table.jobs {
                    thead { tr {
                        th { "Job" } th { "Schedule" } th { "Last run" } th { "Next run" }
                        th { "Lease holder" } th { "Lag" } th {}
                    } }
                    tbody {
                        @for j in &list.data { (job_row(who, j)) }
                    }
                },
                Err(e) => (pages::problem_box(e)),
            }
            p.hint {
                "Run now runs the job under its lease, as the scheduler does, and waits for it \
                 a few seconds; a run that takes longer goes on."
            }
        }
    }
}

fn job_row(who: &SignedIn, j: &JobStatus) -> Markup {
    let action = format!("/admin/operations/jobs/{}/run", segment(&j.job));
    html! {
        tr id=(anchor("job", &j.job)) data-job=(j.job) {
            td { strong { (j.job) } }
            td {
                @match &j.schedule { Some(cron) => code { (cron) }, None => "continuous" }
                @if !j.scheduled { br; small { "not scheduled here" } }
            }
            td.last-run {
                @match &j.last_run {
                    Some(run) => {
                        span data-run=(run.id) { (when(Some(run.started_at))) }
                        " " (outcome_badge(run.outcome))
                        @if let Some(error) = &run.error { br; small.error { (error) } }
                    },
                    None => "never",
                }
            }
            td { (when(j.next_run_at)) }
            td { (j.lease_holder.as_deref().unwrap_or("—")) }
            td { (lag(j.lag_seconds)) }
            td {
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button type="submit" { "Run now" }
                }
            }
        }
    }
}

fn webhooks_section(who: &SignedIn, webhooks: &Result<Endpoints, AppError>) -> Markup {
    html! {
        section #webhooks {
            h2 { "Webhook endpoints" }
            p.hint { "Of " (who.caller.environment()) ", with their failed messages." }
            @match webhooks {
                Ok(list) if list.shown.is_empty() => p.empty { "No endpoints." },
                Ok(list) => {
                    @if list.total > list.shown.len() as u64 {
                        p.hint { "The first " (list.shown.len()) " of " (list.total) " endpoints." }
                    }
                    @for e in &list.shown { (endpoint_view(who, e)) }
                },
                Err(e) => (pages::problem_box(e)),
            }
        }
    }
}

fn endpoint_view(who: &SignedIn, h: &EndpointHealth) -> Markup {
    let e = &h.endpoint;
    html! {
        div.endpoint id=(anchor("endpoint", &e.id)) data-endpoint=(e.id) {
            h3 { a href=(format!("/admin/webhooks/{}", segment(&e.id))) { code { (e.url) } } }
            dl.facts {
                dt { "Id" } dd { code { (e.id) } }
                @if !e.description.is_empty() { dt { "Description" } dd { (e.description) } }
                dt { "State" }
                dd.state {
                    @if e.disabled {
                        span.state-bad { "disabled" }
                        @if let Some(reason) = &e.disabled_reason { " (" (reason) ")" }
                        @if e.disabled_at.is_some() { " since " (when(e.disabled_at)) }
                    } @else {
                        span.state-ok { "enabled" }
                    }
                }
                dt { "Failing since" } dd { (when(e.failing_since)) }
                dt { "Failed messages" }
                dd.failed-count {
                    @match &h.failed { Ok(p) => (p.pagination.total), Err(_) => "—" }
                }
                dt { "Pending messages" }
                dd.pending-count {
                    @match &h.pending { Ok(n) => (n), Err(_) => "—" }
                }
            }
            @match &h.failed {
                Ok(p) if p.data.is_empty() => p.empty { "No failed messages." },
                Ok(p) => table.failed {
                    thead { tr {
                        th { "Message" } th { "Event" } th.num { "Attempts" } th { "Last attempt" }
                        th { "Last answer" } th {}
                    } }
                    tbody {
                        @for m in &p.data { (failed_row(who, &e.id, m)) }
                    }
                },
                Err(problem) => (pages::problem_box(problem)),
            }
            @if let Err(problem) = &h.pending { (pages::problem_box(problem)) }
        }
    }
}

fn failed_row(who: &SignedIn, endpoint: &str, m: &MessageView) -> Markup {
    let action = format!(
        "/admin/operations/endpoints/{}/messages/{}/redeliver",
        segment(endpoint),
        segment(&m.message_id)
    );
    html! {
        tr data-message=(m.message_id) {
            td { code { (m.message_id) } }
            td { (m.event_type.as_str()) }
            td.num { (m.attempts) }
            td { (when(m.last_attempt_at)) }
            td {
                @if let Some(code) = m.last_status_code { "HTTP " (code) }
                @if let Some(error) = &m.last_error { " " small { (error) } }
            }
            td {
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button type="submit" { "Redeliver" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use verdict_store::Trigger;

    use super::*;

    fn run(started_at: OffsetDateTime, outcome: RunOutcome, events: u64) -> RunRecord {
        RunRecord {
            id: format!("run-{}", started_at.unix_timestamp()),
            job: AGGREGATE.to_owned(),
            trigger: Trigger::Schedule,
            owner: "replica".to_owned(),
            tick: None,
            fencing_token: Some(1),
            started_at,
            finished_at: Some(started_at + Duration::seconds(1)),
            outcome,
            report: if outcome == RunOutcome::Succeeded {
                serde_json::json!({"events": events, "steps": 1})
            } else {
                serde_json::Value::Null
            },
            error: None,
        }
    }

    #[test]
    fn runs_are_summed_by_the_minute_they_started_and_quiet_minutes_are_zero() {
        let first = datetime!(2024-05-01 12:00:00 UTC);
        let last = datetime!(2024-05-01 12:04:00 UTC);
        let runs = [
            run(
                datetime!(2024-05-01 12:04:00.2 UTC),
                RunOutcome::Succeeded,
                7,
            ),
            run(
                datetime!(2024-05-01 12:01:59 UTC),
                RunOutcome::Succeeded,
                30,
            ),
            run(
                datetime!(2024-05-01 12:01:00 UTC),
                RunOutcome::Succeeded,
                12,
            ),
            // Failed and skipped runs report nothing.
            run(datetime!(2024-05-01 12:02:00 UTC), RunOutcome::Failed, 0),
            run(
                datetime!(2024-05-01 12:03:00 UTC),
                RunOutcome::SkippedLeaseHeld,
                0,
            ),
            // Outside the window.
            run(
                datetime!(2024-05-01 11:59:59 UTC),
                RunOutcome::Succeeded,
                1000,
            ),
            run(
                datetime!(2024-05-01 12:05:00 UTC),
                RunOutcome::Succeeded,
                1000,
            ),
        ];
        let got = per_minute(&runs, first, last);
        let expected: Vec<(OffsetDateTime, u64)> = [0, 42, 0, 0, 7]
            .into_iter()
            .enumerate()
            .map(|(i, n)| (first + Duration::minutes(i as i64), n))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn no_run_in_the_window_is_no_data() {
        let first = datetime!(2024-05-01 12:00:00 UTC);
        let last = datetime!(2024-05-01 12:59:00 UTC);
        assert!(per_minute(&[], first, last).is_empty());
        let old = [run(
            datetime!(2024-05-01 10:00:00 UTC),
            RunOutcome::Succeeded,
            5,
        )];
        assert!(per_minute(&old, first, last).is_empty());
        // A window that ends before it starts has no minutes.
        let run_at_first = [run(first, RunOutcome::Succeeded, 5)];
        assert!(per_minute(&run_at_first, last, first).is_empty());
    }

    #[test]
    fn anchors_and_lags_are_written_for_readers() {
        assert_eq!(anchor("job", "aggregate"), "job-aggregate");
        assert_eq!(anchor("endpoint", "ep_1 <x>"), "endpoint-ep_1__x_");
        assert_eq!(lag(Some(0.0)), "0 s (caught up)");
        assert_eq!(lag(Some(42.4)), "42 s");
        assert_eq!(lag(Some(600.0)), "10 min");
        assert_eq!(lag(Some(f64::NAN)), "—");
        assert_eq!(lag(None), "—");
    }
}
