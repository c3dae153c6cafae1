//! The console's markup (maud: escaped by default, checked when compiled). No inline
//! script or style: the stylesheet is `/admin/assets/console.css`.

use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use verdict_app::experiments::ForcedList;
use verdict_app::history::{HistoryArm, HistoryPoint, HistoryView};
use verdict_app::results::{MetricResults, ResultsView};
use verdict_app::webhooks::MessageView;
use verdict_app::{AppError, Paginated};
use verdict_domain::{Experiment, Right, Status};
use verdict_store::AuditEntry;

use super::{ListQuery, SignedIn, chart};

/// Rows per list page.
pub const PAGE_SIZE: u32 = 20;

pub(super) fn layout(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Verdict" }
                link rel="stylesheet" href="/admin/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/admin" { "Verdict" }
                    @if let Some(who) = who {
                        nav {
                            a href="/admin" { "Experiments" }
                            @if who.may(Right::EnvironmentsRead) {
                                a href="/admin/environments" { "Environments" }
                                a href="/admin/audiences" { "Audiences" }
                            }
                            @if who.may(Right::WebhooksManage) { a href="/admin/webhooks" { "Webhooks" } }
                            @if who.may(Right::JobsRun) { a href="/admin/operations" { "Operations" } }
                            @if who.may(Right::KeysManage) { a href="/admin/api-keys" { "API keys" } }
                            a href="/docs" { "API docs" }
                        }
                        form.signout method="post" action="/admin/sign-out" {
                            span.actor { (who.caller.actor()) }
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn sign_in(problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            form.card method="post" action="/admin/sign-in" {
                label for="key" { "API key or token" }
                input #key type="password" name="key" autocomplete="off" required
                    aria-describedby=[problem.map(|_| "key-error")];
                @if let Some(problem) = problem {
                    p.error #key-error role="alert" { (problem) }
                }
                p.hint { "An API key, or a JWT bearer token when the server accepts tokens. What its roles allow decides what you can do here." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn error(who: Option<&SignedIn>, e: &AppError) -> Markup {
    layout(
        "Error",
        who,
        html! {
            h1 { "Something went wrong" }
            (problem_box(e))
            p { a href="/admin" { "Back to the experiments" } }
        },
    )
}

pub(super) fn problem_box(e: &AppError) -> Markup {
    html! {
        div.problem role="alert" {
            p { strong { (e.code.as_str()) } ": " (e.message) }
            @if !e.details.is_empty() {
                ul {
                    @for d in &e.details {
                        li { (detail(d)) }
                    }
                }
            }
        }
    }
}

/// One `details` entry in words: `field: message` when it has both.
fn detail(d: &serde_json::Value) -> String {
    match (
        d.get("field").and_then(|f| f.as_str()),
        d.get("message").and_then(|m| m.as_str()),
    ) {
        (Some(f), Some(m)) => format!("{f}: {m}"),
        _ => d.to_string(),
    }
}

/// `path?<query>&page=n`, or `path?page=n`.
fn page_url(base: &str, n: u64) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}page={n}")
}

/// A pager under a list of `what`.
pub(super) fn pager(p: verdict_app::pages::Pagination, base: &str, what: &str) -> Markup {
    html! {
        nav.pager {
            "Page " (p.page) " of " (p.total_pages.max(1)) " (" (p.total) " " (what) ") "
            @if p.page > 1 { a href=(page_url(base, u64::from(p.page) - 1)) { "Previous" } " " }
            @if u64::from(p.page) < p.total_pages { a href=(page_url(base, u64::from(p.page) + 1)) { "Next" } }
        }
    }
}

/// A form of flat fields that posts every input of `form` to `action` with the sign-in's
/// CSRF token (element id `id`), its problems listed above it and `legend` over its inputs.
pub(super) fn flat_form(
    who: &SignedIn,
    id: &str,
    action: &str,
    legend: Option<Markup>,
    form: &super::form::Form,
    submit: &str,
) -> Markup {
    html! {
        (form.summary())
        form.definition id=(id) method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(who.csrf);
            fieldset {
                @if let Some(legend) = legend { legend { (legend) } }
                (form.inputs_under(""))
            }
            button type="submit" { (submit) }
        }
    }
}

/// A page that shows a secret (a new API key, an endpoint's signing secret) this once:
/// `what` says what it is, `next` is where to go on (link and label).
pub(super) fn shown_once(
    who: &SignedIn,
    title: &str,
    what: Markup,
    secret: &str,
    next: (&str, &str),
) -> Markup {
    layout(
        title,
        Some(who),
        html! {
            h1 { (title) }
            p { (what) }
            p { "Copy it now: it is not shown again." }
            p { code #secret { (secret) } }
            p { a.button href=(next.0) { (next.1) } }
        },
    )
}

/// The form that shows a list page (`action`) of another environment.
pub(super) fn environment_picker(action: &str, env: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Environment " input type="text" name="environment" value=(env); }
            button type="submit" { "Show" }
        }
    }
}

/// A time as RFC 3339, `—` when there is none.
pub(super) fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "—".to_owned())
}

pub(super) fn status_badge(s: Status) -> Markup {
    html! { span class={ "status status-" (s.as_str()) } { (s.as_str()) } }
}

pub fn experiments(
    who: &SignedIn,
    q: &ListQuery,
    list: &Paginated<Experiment>,
    leaders: &[Option<HistoryArm>],
) -> Markup {
    let scope_any = who.may(Right::ScopeAny);
    let p = &list.pagination;
    let page_link = |page: u64| {
        let mut s = form_urlencoded::Serializer::new(String::from("/admin?"));
        for (k, v) in [
            ("environment", q.environment.as_str()),
            ("organization", q.organization.as_str()),
            ("status", q.status.as_str()),
            ("search", q.search.as_str()),
        ] {
            if !v.trim().is_empty() {
                s.append_pair(k, v.trim());
            }
        }
        s.append_pair("page", &page.to_string());
        s.finish()
    };
    layout(
        "Experiments",
        Some(who),
        html! {
            h1 { "Experiments" }
            @if who.may(Right::ExperimentsWrite) {
                p.page-actions { a.button #new-experiment href="/admin/new-experiment" { "New experiment" } }
            }
            form.filters method="get" action="/admin" {
                label { "Key or name " input type="search" name="search" value=(q.search) maxlength="200"; }
                @if scope_any {
                    label { "Environment " input type="text" name="environment" value=(q.environment); }
                    label { "Organization " input type="text" name="organization" value=(q.organization); }
                }
                label {
                    "Status "
                    select name="status" {
                        option value="" selected[q.status.is_empty()] { "any" }
                        @for s in Status::ALL {
                            option value=(s.as_str()) selected[q.status == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if list.data.is_empty() {
                p.empty { "No experiments here." }
            } @else {
                table.list {
                    thead { tr {
                        th { "Experiment" } th { "Status" } th { "Primary metric" }
                        th { "Leader (P(best))" } th { "Winner" } th { "Started" } th { "Ended" }
                        @if scope_any { th { "Scope" } }
                    } }
                    tbody {
                        @for (e, leader) in list.data.iter().zip(leaders.iter().chain(std::iter::repeat(&None))) {
                            tr data-key=(e.key) {
                                td {
                                    a href=(row_link(e, scope_any)) { (e.key) }
                                    @if e.name != e.key { br; small { (e.name) } }
                                }
                                td { (status_badge(e.status)) }
                                td { (e.primary_metric.event) " " small { "(" (serde_plain(&e.primary_metric.kind)) ")" } }
                                td.leader {
                                    @match leader {
                                        Some(l) => { (l.variant) " " small { "(" (pct(l.prob_best)) ")" } },
                                        None => "—",
                                    }
                                }
                                td { @match &e.winner { Some(w) => strong { (w.variant) }, None => "—" } }
                                td { (when(e.started_at)) }
                                td { (when(e.completed_at)) }
                                @if scope_any {
                                    td { (e.scope.environment) @if let Some(o) = &e.scope.organization { " / " (o) } }
                                }
                            }
                        }
                    }
                }
                nav.pager {
                    "Page " (p.page) " of " (p.total_pages.max(1)) " (" (p.total) " experiments) "
                    @if p.page > 1 { a href=(page_link(u64::from(p.page) - 1)) { "Previous" } " " }
                    @if u64::from(p.page) < p.total_pages { a href=(page_link(u64::from(p.page) + 1)) { "Next" } }
                }
            }
        },
    )
}

/// An experiment's page from the list: a `scope:any` caller's rows name their scope.
fn row_link(e: &Experiment, scope_any: bool) -> String {
    let scope = super::ScopeQuery {
        environment: if scope_any {
            e.scope.environment.clone()
        } else {
            String::new()
        },
        organization: if scope_any {
            e.scope.organization.clone().unwrap_or_default()
        } else {
            String::new()
        },
    };
    super::experiment_url(&e.key, &scope)
}

/// What the experiment page shows.
pub struct ExperimentView<'a> {
    pub experiment: &'a Experiment,
    /// `None`: the caller may not read results.
    pub results: Option<&'a Result<ResultsView, AppError>>,
    /// `None`: the caller may not read the audit log.
    pub audit: Option<&'a Result<Paginated<AuditEntry>, AppError>>,
    /// The QA overrides.
    pub forced: &'a Result<ForcedList, AppError>,
    /// `None`: the caller may not read results.
    pub history: Option<&'a Result<HistoryView, AppError>>,
    /// `None`: the caller may not read webhook deliveries.
    pub deliveries: Option<&'a Result<Paginated<MessageView>, AppError>>,
    /// A change that was refused.
    pub problem: Option<&'a AppError>,
    /// This page's URL (forms post next to it).
    pub url: &'a str,
}

/// `url` with `/action` before its query.
pub(super) fn action(url: &str, action: &str) -> String {
    match url.split_once('?') {
        Some((path, query)) => format!("{path}/{action}?{query}"),
        None => format!("{url}/{action}"),
    }
}

fn lifecycle_label(to: Status) -> &'static str {
    match to {
        Status::Draft => "Back to draft",
        Status::Running => "Activate",
        Status::Paused => "Pause",
        Status::Completed => "Complete",
        Status::Archived => "Archive",
    }
}

pub fn experiment(who: &SignedIn, v: &ExperimentView<'_>) -> Markup {
    let e = v.experiment;
    let may_write = who.may(Right::ExperimentsWrite);
    let may_decide = who.may(Right::ExperimentsDecide);
    layout(
        &e.key,
        Some(who),
        html! {
            p.crumbs { a href="/admin" { "Experiments" } " / " (e.key) }
            h1 { (e.name) " " (status_badge(e.status)) }
            @if !e.description.is_empty() { p.description { (e.description) } }
            @if may_write { p.page-actions { a.button #edit-link href=(action(v.url, "edit")) { "Edit the definition" } } }
            @if let Some(problem) = v.problem { (problem_box(problem)) }

            section #lifecycle {
                h2 { "Lifecycle" }
                dl.facts {
                    dt { "Key" } dd { code { (e.key) } }
                    dt { "Scope" } dd { (e.scope.environment) @if let Some(o) = &e.scope.organization { " / " (o) } @else { " (global)" } }
                    dt { "Started" } dd { (when(e.started_at)) }
                    dt { "Completed" } dd { (when(e.completed_at)) }
                    dt { "Winner" } dd.winner {
                        @match &e.winner {
                            Some(w) => { strong { (w.variant) } " (" (serde_plain(&w.source)) ", " (when(Some(w.decided_at))) ")" },
                            None => "none yet",
                        }
                    }
                }
                @if may_write && !e.status.allowed_next().is_empty() {
                    div.actions {
                        @for to in e.status.allowed_next() {
                            form method="post" action=(action(v.url, "status")) {
                                input type="hidden" name="csrf" value=(who.csrf);
                                input type="hidden" name="status" value=(to.as_str());
                                button type="submit" name="to" value=(to.as_str()) { (lifecycle_label(*to)) }
                            }
                        }
                    }
                }
            }

            section #definition {
                h2 { "Definition" }
                table.variants {
                    thead { tr { th { "Variant" } th { "Weight" } th { "Config" } } }
                    tbody {
                        @for variant in &e.variants {
                            tr {
                                td { (variant.key) @if variant.control { " " small { "(control)" } } }
                                td.num { (format!("{:.1}%", variant.weight * 100.0)) }
                                td { code.json { (variant.config.to_string()) } }
                            }
                        }
                    }
                }
                dl.facts {
                    dt { "Coverage" } dd { (format!("{:.1}%", e.coverage * 100.0)) }
                    dt { "Audience" } dd { (e.audience.as_deref().unwrap_or("everyone")) }
                    dt { "Targeting" } dd {
                        @if e.targeting == verdict_domain::Targeting::default() { "every subject" }
                        @else { code.json { (serde_json::to_string(&e.targeting).unwrap_or_default()) } }
                    }
                    @if let Some(ns) = &e.namespace {
                        dt { "Namespace" } dd { code.json { (serde_json::to_string(ns).unwrap_or_default()) } }
                    }
                    @if let Some(x) = &e.exposure_event {
                        dt { "Exposure event" } dd { (x) }
                    }
                    dt { "Primary metric" } dd { (e.primary_metric.event) " (" (serde_plain(&e.primary_metric.kind)) ")" }
                    @if !e.secondary_metrics.is_empty() {
                        dt { "Secondary metrics" } dd { (names(&e.secondary_metrics)) }
                    }
                    @if !e.guardrail_metrics.is_empty() {
                        dt { "Guardrails" } dd { (names(&e.guardrail_metrics)) }
                    }
                    dt { "Winner policy" } dd { (serde_plain(&e.policy.mode)) }
                }
            }

            @if let Some(results) = v.results {
                section #results {
                    h2 { "Results" }
                    @match results {
                        Ok(r) => (results_view(r)),
                        Err(e) => (problem_box(e)),
                    }
                }
            }

            @if let Some(history) = v.history {
                section #over-time {
                    h2 { "Over time" }
                    @match history {
                        Ok(h) => (history_charts(h)),
                        Err(e) => (problem_box(e)),
                    }
                }
            }

            @if let Some(Ok(r)) = v.results {
                section #assignments {
                    h2 { "Assignments" }
                    (assignments(e, r))
                }
            }

            section #forced {
                h2 { "Forced variants" }
                p.hint { "QA overrides: these subjects always see the variant given, whatever the split." }
                @match v.forced {
                    Ok(list) if list.data.is_empty() => p.empty { "None." },
                    Ok(list) => table.forced {
                        thead { tr { th { "Subject" } th { "Variant" } @if may_write { th {} } } }
                        tbody {
                            @for f in &list.data {
                                tr data-subject=(f.subject_id) {
                                    td { code { (f.subject_id) } }
                                    td { (f.variant) }
                                    @if may_write {
                                        td {
                                            form method="post" action=(action(v.url, "forced/remove")) {
                                                input type="hidden" name="csrf" value=(who.csrf);
                                                input type="hidden" name="subject" value=(f.subject_id);
                                                button.secondary type="submit" { "Remove" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                    Err(e) => (problem_box(e)),
                }
                @if may_write {
                    form.card.inline method="post" action=(action(v.url, "forced")) {
                        input type="hidden" name="csrf" value=(who.csrf);
                        label for="forced-subject" { "Subject" }
                        input #forced-subject type="text" name="subject" required maxlength="256";
                        label for="forced-variant" { "Variant" }
                        select #forced-variant name="variant" {
                            @for variant in &e.variants { option value=(variant.key) { (variant.key) } }
                        }
                        button type="submit" { "Force" }
                    }
                }
            }

            @if may_decide {
                section #manual-winner {
                    h2 { "Manual winner" }
                    form.card method="post" action=(action(v.url, "winner")) {
                        input type="hidden" name="csrf" value=(who.csrf);
                        label for="winner-variant" { "Variant" }
                        select #winner-variant name="variant" {
                            @for variant in &e.variants { option value=(variant.key) { (variant.key) } }
                        }
                        label for="winner-reason" { "Reason" }
                        input #winner-reason type="text" name="reason" maxlength="500";
                        p.hint { "Declaring a winner also completes a running or paused experiment." }
                        button type="submit" { "Declare the winner" }
                    }
                }
            }

            @if let Some(deliveries) = v.deliveries {
                section #deliveries {
                    h2 { "Webhook deliveries" }
                    @match deliveries {
                        Ok(list) if list.data.is_empty() => p.empty { "No webhook message about this experiment yet." },
                        Ok(list) => table.deliveries {
                            thead { tr { th { "Created" } th { "Event" } th { "Endpoint" } th { "Status" } th { "Attempts" } th { "Last answer" } } }
                            tbody {
                                @for d in &list.data {
                                    tr data-message=(d.message_id) {
                                        td { (when(Some(d.created_at))) }
                                        td { (d.event_type.as_str()) }
                                        td { code { (d.endpoint_id) } }
                                        td.status { (serde_plain(&d.status)) }
                                        td.num { (d.attempts) }
                                        td {
                                            @if let Some(code) = d.last_status_code { (code) " " }
                                            @if let Some(e) = &d.last_error { small { (e) } }
                                        }
                                    }
                                }
                            }
                        },
                        Err(e) => (problem_box(e)),
                    }
                }
            }

            @if let Some(audit) = v.audit {
                section #audit {
                    h2 { "Audit trail" }
                    @match audit {
                        Ok(list) if list.data.is_empty() => p.empty { "Nothing recorded yet." },
                        Ok(list) => table.audit {
                            thead { tr { th { "When" } th { "Who" } th { "What" } th { "Details" } } }
                            tbody {
                                @for entry in &list.data {
                                    tr {
                                        td { (when(Some(entry.at))) }
                                        td { (entry.actor) }
                                        td { (entry.action) }
                                        td { code.json { (entry.details.to_string()) } }
                                    }
                                }
                            }
                        },
                        Err(e) => (problem_box(e)),
                    }
                }
            }
        },
    )
}

/// Subjects per variant against what the weights ask for.
fn assignments(e: &Experiment, r: &ResultsView) -> Markup {
    let total = r.totals.subjects;
    html! {
        table.assignments {
            thead { tr { th { "Variant" } th { "Weight" } th { "Subjects" } th { "Share" } th { "Exposed" } } }
            tbody {
                @for (variant, summary) in e.variants.iter().zip(&r.variants) {
                    tr data-variant=(summary.variant) {
                        td { (summary.variant) }
                        td.num { (format!("{:.1}%", variant.weight * 100.0)) }
                        td.num.subjects { (summary.subjects) }
                        td.num { @if total > 0 { (format!("{:.1}%", summary.subjects as f64 / total as f64 * 100.0)) } @else { "—" } }
                        td.num { (summary.exposed_subjects) }
                    }
                }
            }
        }
    }
}

fn names(metrics: &[verdict_domain::Metric]) -> String {
    metrics
        .iter()
        .map(|m| m.event.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A unit enum's serde name (`manual`, `bayesian`, …).
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{:.2}%", x * 100.0))
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.4}"))
}

fn interval(i: Option<[f64; 2]>, as_pct: bool) -> String {
    i.map_or_else(
        || "—".to_owned(),
        |[lo, hi]| {
            if as_pct {
                format!("{:.2}% – {:.2}%", lo * 100.0, hi * 100.0)
            } else {
                format!("{lo:.4} – {hi:.4}")
            }
        },
    )
}

fn results_view(r: &ResultsView) -> Markup {
    html! {
        p.summary {
            (r.totals.subjects) " subjects, " (r.totals.events) " events rolled up"
            @if let Some(days) = r.days_running { ", " (format!("{days:.1}")) " days running" }
            "."
        }
        @match &r.srm {
            Some(srm) if srm.flagged => p.warning role="alert" {
                "Sample-ratio mismatch: p = " (format!("{:.4}", srm.p_value))
                " (below " (srm.threshold) "); automatic decisions are blocked."
            },
            Some(srm) => p { "Sample ratio as configured (p = " (format!("{:.4}", srm.p_value)) ")." },
            None => p { "No sample-ratio check yet." },
        }
        @for m in &r.metrics { (metric_view(m)) }
    }
}

fn metric_view(m: &MetricResults) -> Markup {
    let a = &m.analysis;
    let rate = a.estimate == verdict_policy::EstimateKind::ConversionRate;
    html! {
        div.metric id={ "metric-" (a.spec.event) } {
            h3 { (a.spec.event) " " small { (serde_plain(&a.estimate)) } }
            table.results {
                thead { tr {
                    th { "Variant" } th { "Subjects" } th { "Events" } th { "Estimate" }
                    th { "95% interval" } th { "P(best)" } th { "Chance to beat control" } th { "Lift" }
                } }
                tbody {
                    @for row in &a.variants {
                        tr data-variant=(row.variant) {
                            td { (row.variant) @if row.control { " " small { "(control)" } } }
                            td.num.subjects { (row.subjects) }
                            td.num.events { (row.conversions) }
                            td.num.estimate { @if rate { (pct(row.estimate)) } @else { (num(row.estimate)) } }
                            td.num { (interval(row.credible_interval, rate)) }
                            td.num.p-best { (pct(row.p_best)) }
                            td.num { @if row.control { "—" } @else { (pct(row.chance_to_beat_control)) } }
                            td.num { @if row.control { "—" } @else { (pct(row.lift)) } }
                        }
                    }
                }
            }
            @if rate { (posteriors(m)) }
            @if let Some(d) = &m.decision {
                div.decision {
                    @match d.verdict.winner() {
                        Some(w) => p { "The winner policy picks " strong { (w) } "." },
                        None => {
                            p { "No decision yet:" }
                            ul.blockers {
                                @for b in blockers(&d.verdict) { li { (b) } }
                            }
                        },
                    }
                }
            }
        }
    }
}

/// The most points a history chart draws (evenly spaced, the latest always kept).
const HISTORY_CHART_POINTS: usize = 120;

/// At most `n` of `points`, evenly spaced, the first and the last kept.
fn thinned<T: Clone>(points: &[T], n: usize) -> Vec<T> {
    if points.len() <= n || n < 2 {
        return points.to_vec();
    }
    (0..n)
        .map(|i| points[i * (points.len() - 1) / (n - 1)].clone())
        .collect()
}

/// The primary metric's estimate per arm with its 95% interval, and each arm's P(best), at
/// each stored evaluation.
fn history_charts(h: &HistoryView) -> Markup {
    let points = thinned(&h.points, HISTORY_CHART_POINTS);
    let rate = h.estimate == verdict_policy::EstimateKind::ConversionRate;
    let variants: Vec<&str> = h
        .points
        .last()
        .map(|p| p.arms.iter().map(|a| a.variant.as_str()).collect())
        .unwrap_or_default();
    let arm = |p: &HistoryPoint, v: &str| p.arms.iter().find(|a| a.variant == v).cloned();
    let estimates = variants
        .iter()
        .map(|v| chart::Line {
            label: (*v).to_owned(),
            points: points
                .iter()
                .filter_map(|p| Some((p.at, arm(p, v)?.estimate?)))
                .collect(),
            band: Some(
                points
                    .iter()
                    .filter_map(|p| {
                        let [lo, hi] = arm(p, v)?.interval?;
                        Some((p.at, lo, hi))
                    })
                    .collect(),
            ),
        })
        .collect();
    let p_best = variants
        .iter()
        .map(|v| chart::Line {
            label: (*v).to_owned(),
            points: points
                .iter()
                .filter_map(|p| Some((p.at, arm(p, v)?.prob_best?)))
                .collect(),
            band: None,
        })
        .collect();
    let estimate_name = serde_plain(&h.estimate).replace('_', " ");
    html! {
        p.hint {
            "Each evaluation's figures for " strong { (h.metric) } " (" (estimate_name) "), as the evaluation job recorded them ("
            (h.points.len()) " evaluations)."
        }
        div.charts {
            div.chart-box #chart-estimate {
                (chart::line_chart(&chart::Chart {
                    title: &format!("{} per arm, with its 95% interval", estimate_name),
                    x_label: "evaluated at (UTC)",
                    y_label: &estimate_name,
                    y_format: if rate { chart::Format::Percent } else { chart::Format::Number },
                    series: estimates,
                    y_zero: false,
                }))
            }
            div.chart-box #chart-p-best {
                (chart::line_chart(&chart::Chart {
                    title: "P(best) per arm",
                    x_label: "evaluated at (UTC)",
                    y_label: "probability of being the best",
                    y_format: chart::Format::Percent,
                    series: p_best,
                    y_zero: true,
                }))
            }
        }
    }
}

/// Points per posterior density curve.
const DENSITY_POINTS: usize = 60;

/// The posterior densities of a conversion-rate metric's arms: Beta(1 + c, 1 + n − c) with
/// `c` converted subjects of `n`, over the range holding all but 0.1% of each arm's mass.
fn posteriors(m: &MetricResults) -> Markup {
    let (variants, posteriors): (Vec<&str>, Vec<verdict_stats::BetaPosterior>) = m
        .analysis
        .variants
        .iter()
        .filter_map(|row| {
            let p =
                verdict_stats::BetaPosterior::from_counts(row.conversions, row.subjects).ok()?;
            Some((row.variant.as_str(), p))
        })
        .unzip();
    let curves = verdict_stats::density_curves(&posteriors, DENSITY_POINTS, 0.0005)
        .into_iter()
        .zip(variants)
        .map(|(points, variant)| chart::Curve {
            label: variant.to_owned(),
            points,
        })
        .collect();
    html! {
        div.chart-box.posteriors {
            (chart::density_chart(&chart::DensityChart {
                title: &format!("Posterior of each arm's conversion rate: {}", m.analysis.spec.event),
                x_label: "conversion rate",
                x_format: chart::Format::Percent,
                y_label: "probability density",
                curves,
            }))
        }
    }
}

/// Every blocker of a verdict, in words.
fn blockers(v: &verdict_policy::Verdict) -> Vec<String> {
    match v {
        verdict_policy::Verdict::NoDecision { blockers } => {
            blockers.iter().map(ToString::to_string).collect()
        }
        verdict_policy::Verdict::Winner { .. } => Vec::new(),
    }
}
