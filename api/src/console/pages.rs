//! The console's markup (maud: escaped by default, checked when compiled). No inline
//! script or style: the stylesheet is `/admin/assets/console.css`.

use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use verdict_app::results::{MetricResults, ResultsView};
use verdict_app::{AppError, Paginated};
use verdict_domain::{Experiment, Right, Status};
use verdict_store::AuditEntry;

use super::{ListQuery, SignedIn};

/// Rows per list page.
pub const PAGE_SIZE: u32 = 20;

fn layout(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
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
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required
                    aria-describedby=[problem.map(|_| "key-error")];
                @if let Some(problem) = problem {
                    p.error #key-error role="alert" { (problem) }
                }
                p.hint { "What the key's roles allow decides what you can do here." }
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

fn problem_box(e: &AppError) -> Markup {
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

fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "—".to_owned())
}

fn status_badge(s: Status) -> Markup {
    html! { span class={ "status status-" (s.as_str()) } { (s.as_str()) } }
}

pub fn experiments(who: &SignedIn, q: &ListQuery, list: &Paginated<Experiment>) -> Markup {
    let scope_any = who.may(Right::ScopeAny);
    let p = &list.pagination;
    let page_link = |page: u64| {
        let mut s = form_urlencoded::Serializer::new(String::from("/admin?"));
        for (k, v) in [
            ("environment", q.environment.as_str()),
            ("organization", q.organization.as_str()),
            ("status", q.status.as_str()),
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
            form.filters method="get" action="/admin" {
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
                        th { "Winner" } th { "Started" } th { "Ended" }
                        @if scope_any { th { "Scope" } }
                    } }
                    tbody {
                        @for e in &list.data {
                            tr {
                                td {
                                    a href=(row_link(e, scope_any)) { (e.key) }
                                    @if e.name != e.key { br; small { (e.name) } }
                                }
                                td { (status_badge(e.status)) }
                                td { (e.primary_metric.event) " " small { "(" (serde_plain(&e.primary_metric.kind)) ")" } }
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
    /// A change that was refused.
    pub problem: Option<&'a AppError>,
    /// This page's URL (forms post next to it).
    pub url: &'a str,
}

/// `url` with `/action` before its query.
fn action(url: &str, action: &str) -> String {
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

/// Every blocker of a verdict, in words.
fn blockers(v: &verdict_policy::Verdict) -> Vec<String> {
    match v {
        verdict_policy::Verdict::NoDecision { blockers } => {
            blockers.iter().map(ToString::to_string).collect()
        }
        verdict_policy::Verdict::Winner { .. } => Vec::new(),
    }
}
