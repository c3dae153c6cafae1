//! The admin console in a real browser: headless Chromium driven over WebDriver
//! (ChromeDriver), against a real server. `scripts/test-services.sh` installs Debian's
//! `chromium` and `chromium-driver` when missing and exports their paths as
//! `VERDICT_TEST_CHROMIUM` and `VERDICT_TEST_CHROMEDRIVER`; without them these tests fail,
//! never skip.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestApp, ab_experiment, spawn_app, variant_row};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A ChromeDriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: scripts/test-services.sh installs Chromium and ChromeDriver")
    })
}

async fn start_driver() -> Driver {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").port()
    };
    let child = Command::new(required("VERDICT_TEST_CHROMEDRIVER"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ChromeDriver starts");
    let driver = Driver { child, port };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ChromeDriver did not listen on port {port} within 10 s");
}

/// A headless Chromium session. `--no-sandbox`: CI runs as root, where Chromium's sandbox
/// cannot start; only tests pass it.
async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": required("VERDICT_TEST_CHROMIUM"),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1400", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps"
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .text()
        .await
        .expect("its text")
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css))
        .await
        .expect("a query")
        .is_empty()
}

/// With `VERDICT_TEST_SCREENSHOTS=1`, the page as `docs/<name>.png` (the README shows
/// them); a normal run writes nothing.
async fn screenshot(c: &Client, name: &str) {
    if std::env::var("VERDICT_TEST_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let png = c.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&dir).expect("docs/");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
    }
}

/// Click `css` (a link, or a button that submits a form) and wait until the browser has
/// replaced the page with the answer (the old page's root element gone stale), so what
/// follows reads the new page even when its URL is the old one (a refused sign-in).
async fn follow(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("the page's root");
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no button {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    for _ in 0..400 {
        if old.tag_name().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{css}: no new page within 10 s");
}

/// POST `fields` as a form to `url` from the page (with its cookies, as its own forms do):
/// the answer's status.
async fn post_form(c: &Client, url: &str, fields: &[(&str, &str)]) -> Value {
    let fields: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    c.execute_async(
        "const [url, fields, done] = arguments;
         fetch(url, {method: 'POST', body: new URLSearchParams(fields)})
           .then(r => done(r.status), e => done(String(e)));",
        vec![json!(url), Value::Object(fields)],
    )
    .await
    .expect("the POST")
}

/// The page's CSRF token (the sign-out form's, as every form's).
async fn csrf_token(c: &Client) -> String {
    c.find(Locator::Css("header input[name=csrf]"))
        .await
        .expect("the sign-out form's token")
        .attr("value")
        .await
        .expect("its value")
        .expect("a token")
}

/// The URL of every resource the page loaded (its performance entries).
async fn resources(c: &Client) -> Vec<String> {
    let names: Value = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .expect("the performance entries");
    serde_json::from_value(names).expect("a list of URLs")
}

async fn path(c: &Client) -> String {
    let url = c.current_url().await.expect("the current URL");
    url.path().to_owned()
}

async fn sign_in(c: &Client, app: &TestApp, key: &str) {
    c.goto(&app.url("/admin")).await.expect("the console opens");
    assert_eq!(path(c).await, "/admin/sign-in");
    c.find(Locator::Css("#key"))
        .await
        .expect("the key field")
        .send_keys(key)
        .await
        .expect("typing");
    follow(c, "form.card button[type=submit]").await;
}

/// Assign subjects and send purchases so the arms differ: `buyers` of each arm's subjects buy.
async fn traffic(app: &TestApp, experiment: &str, subjects: usize) {
    let mut events = Vec::new();
    for i in 0..subjects {
        let subject = format!("user-{i}");
        let (status, body) = app
            .assignment(experiment, &app.admin_key, &subject, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let variant = body["variant"].as_str().expect("a variant").to_owned();
        let buys = if variant == "treatment" {
            i % 2 == 0
        } else {
            i % 5 == 0
        };
        if buys {
            events.push(json!({
                "experiment": experiment, "subject_id": subject, "event": "purchase",
                "event_id": format!("purchase-{i}")
            }));
        }
    }
    let (status, body) = app.post_events(&app.admin_key, events).await;
    assert!(status.is_success(), "{body}");
}

/// Run the evaluation job as a cron operator does, through the internal API.
async fn evaluate(app: &TestApp) {
    let (status, run) = app
        .post_json("/v1/internal/jobs/evaluate/run", &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["outcome"], "succeeded", "{run}");
}

/// Replace the text of the input `css` with `value`.
async fn fill(c: &Client, css: &str, value: &str) {
    let input = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no input {css}: {e}"));
    input.clear().await.expect("clearing");
    input.send_keys(value).await.expect("typing");
}

async fn value(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no input {css}: {e}"))
        .prop("value")
        .await
        .expect("its value")
        .unwrap_or_default()
}

/// Sign in, create an experiment through the form (first with an invalid weight), activate
/// it, read its results (the numbers the results API gives), declare a manual winner, see
/// it in the audit trail, sign out.
#[tokio::test]
async fn an_experimenter_runs_an_experiment_through_the_console() {
    let app = spawn_app().await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    // A wrong key is refused on the sign-in page.
    sign_in(&c, &app, "not-a-key").await;
    assert_eq!(path(&c).await, "/admin/sign-in");
    assert!(text(&c, "#key-error").await.contains("unknown or revoked"));

    sign_in(&c, &app, &app.admin_key).await;
    assert_eq!(path(&c).await, "/admin");
    assert!(exists(&c, "p.empty").await, "no experiments yet");

    // The new-experiment form starts with the defaults.
    follow(&c, "#new-experiment").await;
    assert_eq!(path(&c).await, "/admin/new-experiment");
    assert_eq!(value(&c, "#f-variants-0-key").await, "control");
    assert_eq!(value(&c, "#f-variants-1-weight").await, "0.5");
    assert_eq!(value(&c, "#f-policy-min_assignments").await, "100");
    assert_eq!(value(&c, "#f-policy-probability_threshold").await, "0.95");
    fill(&c, "#f-key", "checkout").await;
    fill(&c, "#f-name", "Checkout button").await;
    fill(&c, "#f-primary_metric-event", "purchase").await;
    fill(&c, "#f-variants-0-config", r#"{"color": "blue"}"#).await;
    fill(&c, "#f-variants-1-config", r#"{"color": "green"}"#).await;
    // An invalid weight: the problem is shown next to its field, nothing is created.
    fill(&c, "#f-variants-1-weight", "-0.5").await;
    follow(&c, "form.definition button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/new-experiment");
    let problem = text(&c, "#f-variants-1-weight-error").await;
    assert!(problem.contains("≥ 0"), "{problem}");
    assert_eq!(
        c.find(Locator::Css("#f-variants-1-weight"))
            .await
            .expect("the weight")
            .attr("aria-describedby")
            .await
            .expect("its attribute")
            .as_deref(),
        Some("f-variants-1-weight-error")
    );
    assert!(
        text(&c, "#form-problems")
            .await
            .contains("variants[1].weight")
    );
    assert_eq!(
        value(&c, "#f-key").await,
        "checkout",
        "what was typed is kept"
    );
    assert_eq!(app.experiment_count().await, 0);
    // Then valid: the draft is created and its page opens.
    fill(&c, "#f-variants-1-weight", "0.5").await;
    follow(&c, "form.definition button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/experiments/checkout");
    let (_, created) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(created["variants"][1]["config"], json!({"color": "green"}));
    assert_eq!(created["primary_metric"]["event"], "purchase");

    // The definition form: a refused value is shown next to its field, then saved.
    follow(&c, "#edit-link").await;
    assert_eq!(path(&c).await, "/admin/experiments/checkout/edit");
    assert_eq!(value(&c, "#f-name").await, "Checkout button");
    fill(&c, "#f-policy-probability_threshold", "1.5").await;
    follow(&c, "#edit-definition button[type=submit]").await;
    let problem = text(&c, "#f-policy-probability_threshold-error").await;
    assert!(problem.contains("less than 1"), "{problem}");
    fill(&c, "#f-policy-probability_threshold", "0.9").await;
    fill(&c, "#f-policy-min_assignments", "20").await;
    follow(&c, "#edit-definition button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/experiments/checkout");
    let (_, edited) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(edited["policy"]["probability_threshold"], json!(0.9));
    assert_eq!(edited["policy"]["min_assignments"], json!(20));
    assert_eq!(
        edited["name"], "Checkout button",
        "what was not changed is kept"
    );

    c.goto(&app.url("/admin")).await.expect("the list");
    let row = text(&c, "table.list tbody").await;
    assert!(row.contains("checkout") && row.contains("draft"), "{row}");
    follow(&c, "table.list a").await;
    assert_eq!(path(&c).await, "/admin/experiments/checkout");
    // A draft may be activated or archived, nothing else.
    let buttons: Vec<String> = {
        let mut all = Vec::new();
        for b in c
            .find_all(Locator::Css("#lifecycle .actions button"))
            .await
            .expect("buttons")
        {
            all.push(b.text().await.expect("label"));
        }
        all
    };
    assert_eq!(buttons, ["Activate", "Archive"]);
    follow(&c, "#lifecycle button[value=running]").await;
    assert_eq!(path(&c).await, "/admin/experiments/checkout");
    assert_eq!(text(&c, "h1 .status").await, "running");
    // A form without this sign-in's CSRF token is refused and changes nothing.
    let forged = post_form(
        &c,
        "/admin/experiments/checkout/status",
        &[("csrf", "00"), ("status", "paused")],
    )
    .await;
    assert_eq!(forged, json!(403));
    c.refresh().await.expect("reload");
    assert_eq!(text(&c, "h1 .status").await, "running");

    // A forced variant (QA override): added, served, listed, removed.
    fill(&c, "#forced-subject", "qa-1").await;
    c.find(Locator::Css("#forced-variant option[value=treatment]"))
        .await
        .expect("the treatment option")
        .click()
        .await
        .expect("choosing it");
    follow(&c, "#forced form.card button").await;
    assert_eq!(
        text(&c, "#forced tr[data-subject=qa-1] td:nth-child(2)").await,
        "treatment"
    );
    let (_, served) = app
        .assignment("checkout", &app.admin_key, "qa-1", &[])
        .await;
    assert_eq!(
        (served["variant"].as_str(), served["reason"].as_str()),
        (Some("treatment"), Some("forced"))
    );
    follow(&c, "#forced tr[data-subject=qa-1] button").await;
    assert!(!exists(&c, "#forced tr[data-subject=qa-1]").await);
    let (_, list) = app
        .get("/v1/experiments/checkout/forced", &app.admin_key)
        .await;
    assert_eq!(list["data"], json!([]));

    // Two evaluations with more data in between: two points in each chart.
    traffic(&app, "checkout", 30).await;
    app.aggregate().await;
    evaluate(&app).await;
    traffic(&app, "checkout", 60).await;
    let api = app.results("checkout").await;
    evaluate(&app).await;
    c.refresh().await.expect("reload");
    // The screenshot shows the results and the charts below them.
    c.execute(
        "document.getElementById('results').scrollIntoView()",
        vec![],
    )
    .await
    .expect("scrolling");
    screenshot(&c, "console-experiment").await;
    // The charts' latest points are the results API's figures; the arms are the variants.
    let (_, history) = app
        .get("/v1/experiments/checkout/results/history", &app.admin_key)
        .await;
    assert_eq!(
        history["points"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
    for variant in ["control", "treatment"] {
        let row = variant_row(&api, variant);
        let series = |chart: &str| format!("#{chart} g.series[data-series={variant}] circle.point");
        let estimates = attributes(&c, &series("chart-estimate"), "data-value").await;
        let p_best = attributes(&c, &series("chart-p-best"), "data-value").await;
        assert_eq!((estimates.len(), p_best.len()), (2, 2), "{variant}");
        let last = |v: &[String]| {
            v.last()
                .and_then(|x| x.parse::<f64>().ok())
                .expect("a number")
        };
        let estimate = row["estimate"].as_f64().expect("an estimate");
        assert!(
            (last(&estimates) - estimate).abs() < 1e-9,
            "{variant}: {estimates:?} vs {estimate}"
        );
        let best = row["p_best"].as_f64().expect("P(best)");
        assert!(
            (last(&p_best) - best).abs() < 1e-6,
            "{variant}: {p_best:?} vs {best}"
        );
        // The posterior density curve of each arm peaks at its observed rate.
        let curve =
            format!("#metric-purchase .posteriors g.series[data-series={variant}] circle.point");
        let xs = attributes(&c, &curve, "data-x").await;
        let ys = attributes(&c, &curve, "data-value").await;
        assert!(!xs.is_empty(), "{variant}: no posterior curve");
        let peak = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a peak");
        let rate = row["conversions"].as_f64().unwrap() / row["subjects"].as_f64().unwrap();
        let step = (xs.last().unwrap().parse::<f64>().unwrap() - xs[0].parse::<f64>().unwrap())
            / (xs.len() - 1) as f64;
        assert!(
            (peak.0 - rate).abs() <= step,
            "{variant}: peak {peak:?}, rate {rate}"
        );
        // Assignment counts per arm.
        assert_eq!(
            text(
                &c,
                &format!("#assignments tr[data-variant={variant}] td.subjects")
            )
            .await,
            row["subjects"].to_string()
        );
    }
    for variant in ["control", "treatment"] {
        let row = variant_row(&api, variant);
        let css = |cell: &str| format!("#metric-purchase tr[data-variant={variant}] td.{cell}");
        assert_eq!(
            text(&c, &css("subjects")).await,
            row["subjects"].to_string(),
            "{variant}"
        );
        assert_eq!(
            text(&c, &css("events")).await,
            row["conversions"].to_string(),
            "{variant}"
        );
        let p_best = row["p_best"].as_f64().expect("P(best)");
        assert_eq!(
            text(&c, &css("p-best")).await,
            format!("{:.2}%", p_best * 100.0),
            "{variant}"
        );
    }

    // The list's leader is the arm with the highest P(best) at the latest evaluation.
    let latest = &history["points"][1]["arms"];
    let leader = latest
        .as_array()
        .expect("arms")
        .iter()
        .max_by(|a, b| {
            a["prob_best"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["prob_best"].as_f64().unwrap())
        })
        .expect("an arm");
    c.goto(&app.url("/admin?search=CHECK"))
        .await
        .expect("the list");
    let cell = text(&c, "tr[data-key=checkout] td.leader").await;
    assert_eq!(
        cell,
        format!(
            "{} ({:.2}%)",
            leader["variant"].as_str().unwrap(),
            leader["prob_best"].as_f64().unwrap() * 100.0
        )
    );
    screenshot(&c, "console-experiments").await;
    c.goto(&app.url("/admin?search=nothing-like-it"))
        .await
        .expect("the list");
    assert!(exists(&c, "p.empty").await);
    c.goto(&app.url("/admin/experiments/checkout"))
        .await
        .expect("the experiment");

    // The manual winner, then the audit trail shows it.
    c.find(Locator::Css("#winner-variant option[value=treatment]"))
        .await
        .expect("the treatment option")
        .click()
        .await
        .expect("choosing it");
    c.find(Locator::Css("#winner-reason"))
        .await
        .expect("the reason field")
        .send_keys("clear lift in the console test")
        .await
        .expect("typing");
    follow(&c, "#manual-winner button").await;
    assert_eq!(text(&c, "h1 .status").await, "completed");
    assert!(text(&c, "dd.winner").await.starts_with("treatment"));
    let audit = text(&c, "#audit tbody").await;
    assert!(audit.contains("clear lift in the console test"), "{audit}");
    let (_, body) = app
        .get("/v1/experiments/checkout/winner", &app.admin_key)
        .await;
    assert_eq!(body["winner"], "treatment", "{body}");

    // Signing out ends the session: the console asks for a key again.
    follow(&c, "header form.signout button").await;
    assert_eq!(path(&c).await, "/admin/sign-in");
    c.goto(&app.url("/admin/experiments/checkout"))
        .await
        .expect("navigating");
    assert_eq!(path(&c).await, "/admin/sign-in");
    c.close().await.expect("the session closes");
}

/// A client key cannot sign in; a key that may only read sees no button that changes
/// anything, and the changes it posts anyway are refused.
#[tokio::test]
async fn a_read_only_key_cannot_change_anything() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("banner")).await;
    let viewer = app.create_key(&["viewer"]).await;
    let client = app.create_key(&["client"]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    // A client key (assignments and events only) may not even read experiments here.
    sign_in(&c, &app, &client).await;
    assert_eq!(path(&c).await, "/admin/sign-in");
    let refused = text(&c, "#key-error").await;
    assert!(refused.contains("experiments:read"), "{refused}");

    sign_in(&c, &app, &viewer).await;
    c.goto(&app.url("/admin/experiments/banner"))
        .await
        .expect("the experiment page");
    assert_eq!(text(&c, "h1 .status").await, "draft");
    assert!(!exists(&c, "#lifecycle .actions").await);
    assert!(!exists(&c, "#manual-winner").await);
    assert!(exists(&c, "#definition").await);

    // The same forms, posted from the page by hand with the page's own CSRF token.
    let csrf = csrf_token(&c).await;
    assert!(!exists(&c, "#edit-link").await);
    assert!(!exists(&c, "#forced form").await);
    c.goto(&app.url("/admin")).await.expect("the list");
    assert!(!exists(&c, "#new-experiment").await);
    for (action, fields) in [
        ("status", vec![("status", "running")]),
        ("winner", vec![("variant", "treatment")]),
        ("edit", vec![("version", "1"), ("name", "renamed")]),
        ("variants", vec![("version", "1"), ("variants[0].key", "a")]),
        ("forced", vec![("subject", "qa"), ("variant", "treatment")]),
        ("forced/remove", vec![("subject", "qa")]),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let status = post_form(&c, &format!("/admin/experiments/banner/{action}"), &form).await;
        assert_eq!(status, json!(403), "{action}");
    }
    let created = post_form(
        &c,
        "/admin/new-experiment",
        &[("csrf", csrf.as_str()), ("key", "sneaky")],
    )
    .await;
    assert_eq!(created, json!(403));
    let (_, e) = app.get("/v1/experiments/banner", &app.admin_key).await;
    assert_eq!(e["status"], "draft");
    assert_eq!(e["winner"], Value::Null);
    assert_eq!(e["name"], "Experiment banner");
    assert_eq!(app.experiment_count().await, 1);
    c.close().await.expect("the session closes");
}

/// A JWT bearer token signs in too, with the rights of its roles; an expired or forged one
/// is refused on the sign-in page.
#[tokio::test]
async fn a_token_signs_in_with_the_rights_of_its_roles() {
    use jwt_simple::prelude::{Claims, Duration as JwtDuration, HS256Key, MACLike};
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
    let app = common::spawn_app_with(&[("VERDICT_AUTH__JWT__HS256_SECRET", SECRET)]).await;
    app.create_experiment(&ab_experiment("banner")).await;
    let mint = |roles: &[&str], secs: u64, secret: &str| {
        let claims = Claims::with_custom_claims(
            json!({"roles": roles})
                .as_object()
                .cloned()
                .expect("claims"),
            JwtDuration::from_secs(secs),
        )
        .with_subject("erin");
        HS256Key::from_bytes(secret.as_bytes())
            .authenticate(claims)
            .expect("a token")
    };
    let driver = start_driver().await;
    let c = browser(&driver).await;

    let forged = mint(&["admin"], 600, "another-secret-of-at-least-32-bytes!!!");
    sign_in(&c, &app, &forged).await;
    assert_eq!(path(&c).await, "/admin/sign-in");
    let refused = text(&c, "#key-error").await;
    assert!(refused.starts_with("That token is refused"), "{refused}");

    sign_in(&c, &app, &mint(&["experimenter"], 600, SECRET)).await;
    assert_eq!(path(&c).await, "/admin");
    assert_eq!(text(&c, "header .actor").await, "jwt:erin");
    c.goto(&app.url("/admin/experiments/banner"))
        .await
        .expect("the experiment page");
    follow(&c, "#lifecycle button[value=running]").await;
    assert_eq!(text(&c, "h1 .status").await, "running");
    let audit = text(&c, "#audit tbody").await;
    assert!(audit.contains("jwt:erin"), "{audit}");
    follow(&c, "header form.signout button").await;

    // A viewer's token: the pages, no change.
    sign_in(&c, &app, &mint(&["viewer"], 600, SECRET)).await;
    c.goto(&app.url("/admin/experiments/banner"))
        .await
        .expect("the experiment page");
    assert!(!exists(&c, "#lifecycle .actions").await);
    assert!(!exists(&c, "#edit-link").await);
    c.close().await.expect("the session closes");
}

/// The console loads nothing from another host: every resource the browser fetched came
/// from the server, under a `default-src 'self'` policy with no inline script or style.
#[tokio::test]
async fn the_console_loads_nothing_from_another_host() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("offline")).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &app.admin_key).await;
    let origin = format!("http://{}", app.addr);
    let session = c
        .get_named_cookie("verdict_session")
        .await
        .expect("the session cookie");
    let cookie = format!("verdict_session={}", session.value());
    let (status, body) = app
        .post_json(
            "/v1/environments/production/audiences",
            &app.admin_key,
            &json!({"key": "everyone", "rules": []}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for page in [
        "/admin",
        "/admin/experiments/offline",
        "/admin/operations",
        "/admin/environments",
        "/admin/audiences",
        "/admin/audiences/everyone",
        "/admin/webhooks",
        "/admin/api-keys",
    ] {
        c.goto(&app.url(page)).await.expect("the page");
        let resources = resources(&c).await;
        assert!(
            resources
                .iter()
                .any(|r| r.ends_with("/admin/assets/console.css")),
            "{page}: the stylesheet loads: {resources:?}"
        );
        for r in &resources {
            assert!(r.starts_with(&origin), "{page} fetched {r}");
        }
        let response = app
            .client
            .get(app.url(page))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("the page over HTTP");
        let csp = response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.starts_with("default-src 'self'"), "{page}: {csp}");
        assert_eq!(response.url().path(), page, "served, not redirected");
        let html = response.text().await.expect("its body");
        assert!(
            !html.contains("<script") && !html.contains("<style") && !html.contains("style="),
            "{page} has inline script or style"
        );
    }
    c.close().await.expect("the session closes");
}

/// `/docs` renders the API description in the browser from files the server embeds: no
/// request leaves for another host.
#[tokio::test]
async fn the_api_docs_render_from_the_server_alone() {
    let app = spawn_app().await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    c.goto(&app.url("/docs")).await.expect("the docs page");
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".opblock"))
        .await
        .expect("Swagger UI renders the operations");
    let operations = c
        .find_all(Locator::Css(".opblock"))
        .await
        .expect("the operations");
    assert!(operations.len() > 20, "{} operations", operations.len());
    let resources = resources(&c).await;
    let origin = format!("http://{}", app.addr);
    assert!(
        resources.iter().any(|r| r.ends_with("/openapi.json")),
        "{resources:?}"
    );
    for r in &resources {
        assert!(r.starts_with(&origin), "/docs fetched {r}");
    }
    c.close().await.expect("the session closes");
}

/// The rows of `css` as the value of `attribute` on each.
async fn attributes(c: &Client, css: &str, attribute: &str) -> Vec<String> {
    let mut values = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.expect("a query") {
        values.push(
            e.attr(attribute)
                .await
                .expect("the attribute")
                .unwrap_or_else(|| panic!("{css} without {attribute}")),
        );
    }
    values
}

/// The aggregate job's runs from the internal API, newest first.
async fn aggregate_runs(app: &TestApp) -> Vec<Value> {
    let (status, runs) = app
        .get(
            "/v1/internal/jobs/aggregate/runs?page=1&page_size=100",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    runs["data"].as_array().expect("runs").clone()
}

/// The events the aggregate job's succeeded runs rolled up, by the minute each started
/// (RFC 3339, as the chart's `data-at`).
fn events_by_minute(runs: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut minutes = std::collections::BTreeMap::new();
    for run in runs.iter().filter(|r| r["outcome"] == "succeeded") {
        let started = time::OffsetDateTime::parse(
            run["started_at"].as_str().expect("a start"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("an RFC 3339 start");
        let minute = started
            .replace_second(0)
            .and_then(|t| t.replace_nanosecond(0))
            .expect("the minute")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formatted");
        *minutes.entry(minute).or_insert(0) += run["report"]["events"].as_u64().expect("events");
    }
    minutes
}

/// What the operations page's chart plots: each point's minute and value.
async fn chart_points(c: &Client) -> Vec<(String, f64)> {
    let css = "#throughput g.series circle.point";
    let at = attributes(c, css, "data-at").await;
    let values = attributes(c, css, "data-value").await;
    at.into_iter()
        .zip(values)
        .map(|(at, v)| (at, v.parse().expect("a number")))
        .collect()
}

/// An operator's page: the chart plots the aggregate job's run records as the jobs API gives
/// them, "Run now" adds a run, rejected events are counted by reason, a webhook message that
/// failed is redelivered and then delivered; a viewer sees no link and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_the_pipeline_runs_a_job_and_redelivers_a_failed_webhook() {
    use verdict_webhooks::test_support::{Receiver, Reply};
    use verdict_webhooks::{Dispatcher, DispatcherConfig, RetrySchedule};

    let app = common::spawn_app_with(&[("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")]).await;
    // An endpoint whose first answer is a 500; with no retries left the message fails.
    let receiver = Receiver::start().await;
    receiver.respond_with([Reply::status(500)]);
    let (status, endpoint) = app
        .post_json(
            "/v1/webhooks/endpoints",
            &app.admin_key,
            &json!({"url": receiver.url("/hooks"), "description": "fails once"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let endpoint = endpoint["id"].as_str().expect("an id").to_owned();
    let dispatcher = Dispatcher::new(
        app.store.clone(),
        DispatcherConfig {
            allow_private_targets: true,
            request_timeout: Duration::from_secs(5),
            schedule: RetrySchedule::new(Vec::new()),
            disable_after: Duration::from_secs(86_400),
            lease: Duration::from_secs(30),
            batch_size: 100,
            idle_sleep: Duration::from_millis(10),
        },
    )
    .expect("a dispatcher");

    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let sent = dispatcher
        .run_once(time::OffsetDateTime::now_utc())
        .await
        .expect("a round");
    assert_eq!((sent.failed, sent.delivered), (1, 0), "{sent:?}");

    // Events, two of them sent twice (rejected as duplicates), one for no experiment.
    traffic(&app, "checkout", 40).await;
    let repeat = vec![
        json!({"experiment": "checkout", "subject_id": "user-0", "event": "purchase", "event_id": "purchase-0"}),
        json!({"experiment": "checkout", "subject_id": "user-10", "event": "purchase", "event_id": "purchase-10"}),
        json!({"experiment": "nowhere", "subject_id": "user-1", "event": "purchase", "event_id": "x-1"}),
    ];
    let (status, body) = app.post_events(&app.admin_key, repeat).await;
    assert!(status.is_success(), "{body}");
    // Duplicates are counted as such, other rejections by their code.
    let mut rejected = vec![(
        "duplicate".to_owned(),
        body["duplicates"].as_u64().expect("a count"),
    )];
    for code in body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["code"].as_str())
    {
        match rejected.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => rejected.push((code.to_owned(), 1)),
        }
    }
    assert_eq!(rejected.len(), 2, "{body}");
    assert_eq!(rejected[0].1, 2, "{body}");
    let (status, run) = app
        .post_json(
            "/v1/internal/jobs/aggregate/run",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let first_run_events = run["report"]["events"].as_u64().expect("events");
    assert!(first_run_events > 0, "{run}");

    let driver = start_driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &app.admin_key).await;
    follow(&c, "header nav a[href='/admin/operations']").await;
    assert_eq!(path(&c).await, "/admin/operations");

    // The chart: an hour of minutes, each the events the runs that started in it rolled up.
    let runs = aggregate_runs(&app).await;
    let expected = events_by_minute(&runs);
    let points = chart_points(&c).await;
    assert_eq!(points.len(), 60, "{points:?}");
    for (at, value) in &points {
        let want = expected.get(at).copied().unwrap_or(0);
        assert_eq!(*value, want as f64, "the point at {at}");
    }
    let plotted: f64 = points.iter().map(|(_, v)| v).sum();
    assert_eq!(plotted, first_run_events as f64);
    let busiest = c
        .find(Locator::Css(&format!(
            "#throughput circle.point[data-value='{first_run_events}']"
        )))
        .await
        .expect("the run's minute")
        .html(true)
        .await
        .expect("its tooltip");
    assert!(
        busiest.contains(&format!("aggregate job: {first_run_events} at ")),
        "{busiest}"
    );
    assert_eq!(
        text(&c, "#throughput figcaption").await,
        "Events rolled up per minute"
    );
    assert!(
        text(&c, "#aggregation-lag")
            .await
            .starts_with("Aggregation lag: 0 s")
    );

    // Rejections by reason, as the ingestion answered them.
    for (reason, n) in &rejected {
        assert_eq!(
            text(
                &c,
                &format!("#rejected tr[data-reason='{reason}'] td.count")
            )
            .await,
            n.to_string(),
            "{reason}"
        );
    }
    assert!(text(&c, "#readiness dd.store").await.ends_with(": ok"));

    // The failed message, with its endpoint's health.
    let card = format!("#webhooks div.endpoint[data-endpoint='{endpoint}']");
    assert_eq!(text(&c, &format!("{card} dd.failed-count")).await, "1");
    assert_eq!(text(&c, &format!("{card} dd.pending-count")).await, "0");
    let failed = attributes(&c, &format!("{card} tr[data-message]"), "data-message").await;
    assert_eq!(failed.len(), 1);
    let message = failed[0].clone();
    assert!(
        text(&c, &format!("{card} tr[data-message='{message}']"))
            .await
            .contains("HTTP 500")
    );
    screenshot(&c, "console-operations").await;

    // Run now: a new aggregate run, listed first with the events it rolled up.
    let before = attributes(&c, "#job-aggregate td.last-run span[data-run]", "data-run").await;
    traffic(&app, "checkout", 60).await;
    follow(&c, "#job-aggregate button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/operations");
    let runs = aggregate_runs(&app).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let newest = runs[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(runs[0]["trigger"], "http");
    let after = attributes(&c, "#job-aggregate td.last-run span[data-run]", "data-run").await;
    assert_eq!(after, std::slice::from_ref(&newest));
    assert_ne!(before, after);
    assert_eq!(
        attributes(&c, "#aggregate-runs tbody tr", "data-run").await,
        [
            newest.clone(),
            runs[1]["id"].as_str().expect("an id").to_owned()
        ]
    );
    let second_run_events = runs[0]["report"]["events"].as_u64().expect("events");
    assert!(second_run_events > 0);
    assert_eq!(
        text(
            &c,
            &format!("#aggregate-runs tr[data-run='{newest}'] td.events")
        )
        .await,
        second_run_events.to_string()
    );
    let points = chart_points(&c).await;
    let expected = events_by_minute(&runs);
    for (at, value) in &points {
        assert_eq!(
            *value,
            expected.get(at).copied().unwrap_or(0) as f64,
            "{at}"
        );
    }
    let plotted: f64 = points.iter().map(|(_, v)| v).sum();
    assert_eq!(plotted, (first_run_events + second_run_events) as f64);

    // Redeliver: pending again, then delivered with the same webhook-id.
    follow(
        &c,
        &format!("{card} tr[data-message='{message}'] button[type=submit]"),
    )
    .await;
    assert_eq!(path(&c).await, "/admin/operations");
    assert_eq!(text(&c, &format!("{card} dd.failed-count")).await, "0");
    assert_eq!(text(&c, &format!("{card} dd.pending-count")).await, "1");
    assert!(!exists(&c, &format!("{card} tr[data-message]")).await);
    let log = format!("/v1/webhooks/endpoints/{endpoint}/messages");
    let (_, messages) = app.get(&log, &app.admin_key).await;
    assert_eq!(messages["data"][0]["message_id"], message.as_str());
    assert_eq!(messages["data"][0]["status"], "pending");
    let sent = dispatcher
        .run_once(time::OffsetDateTime::now_utc())
        .await
        .expect("a round");
    assert_eq!(sent.delivered, 1, "{sent:?}");
    let received = receiver.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].webhook_id(), message);
    let (_, messages) = app.get(&log, &app.admin_key).await;
    assert_eq!(messages["data"][0]["status"], "delivered");
    c.refresh().await.expect("reload");
    assert_eq!(text(&c, &format!("{card} dd.pending-count")).await, "0");
    assert_eq!(
        text(&c, &format!("{card} p.empty")).await,
        "No failed messages."
    );
    // The experiment's page lists the same message among its webhook deliveries.
    c.goto(&app.url("/admin/experiments/checkout"))
        .await
        .expect("the experiment page");
    let row = format!("#deliveries tr[data-message='{message}']");
    assert_eq!(text(&c, &format!("{row} td.status")).await, "delivered");
    assert!(text(&c, &row).await.contains(&endpoint));
    c.goto(&app.url("/admin/operations"))
        .await
        .expect("the operations page");

    // Bad input gets the console's error page with its status, and changes nothing.
    let csrf = csrf_token(&c).await;
    for (url, status) in [
        ("/admin/operations/jobs/nope/run".to_owned(), 404),
        (
            format!("/admin/operations/endpoints/{endpoint}/messages/msg_nope/redeliver"),
            404,
        ),
        (
            "/admin/operations/endpoints/ep_nope/messages/msg_nope/redeliver".to_owned(),
            404,
        ),
    ] {
        assert_eq!(
            post_form(&c, &url, &[("csrf", &csrf)]).await,
            json!(status),
            "{url}"
        );
    }
    let forged = post_form(
        &c,
        "/admin/operations/jobs/aggregate/run",
        &[("csrf", "00")],
    )
    .await;
    assert_eq!(forged, json!(403));
    assert_eq!(aggregate_runs(&app).await.len(), 2, "no run was added");

    // A viewer: no link, and the page and its buttons are refused.
    follow(&c, "header form.signout button").await;
    let viewer = app.create_key(&["viewer"]).await;
    sign_in(&c, &app, &viewer).await;
    assert_eq!(path(&c).await, "/admin");
    assert!(!exists(&c, "header nav a[href='/admin/operations']").await);
    c.goto(&app.url("/admin/operations"))
        .await
        .expect("the page");
    assert!(text(&c, "div.problem").await.contains("forbidden"));
    let session = c
        .get_named_cookie("verdict_session")
        .await
        .expect("the session cookie");
    let response = app
        .client
        .get(app.url("/admin/operations"))
        .header("cookie", format!("verdict_session={}", session.value()))
        .send()
        .await
        .expect("the page over HTTP");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let csrf = csrf_token(&c).await;
    let refused = post_form(
        &c,
        "/admin/operations/jobs/aggregate/run",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(refused, json!(403));
    assert_eq!(aggregate_runs(&app).await.len(), 2, "no run was added");
    c.close().await.expect("the session closes");
}

/// An admin keeps environments and their audiences in the console: a new environment or
/// audience that is refused comes back with the problem next to its field, then is
/// created; an audience a running experiment uses cannot be deleted (the page names the
/// experiment), is edited, and is deleted once the experiment is over. A viewer reads the
/// rules and may change nothing.
#[tokio::test]
async fn an_admin_keeps_environments_and_audiences_and_one_in_use_is_not_deleted() {
    let app = spawn_app().await;
    let viewer = app.create_key(&["viewer"]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &app.admin_key).await;

    // A new environment: a key that is not one comes back next to the key.
    follow(&c, "header nav a[href='/admin/environments']").await;
    assert!(exists(&c, "tr[data-environment=production]").await);
    fill(&c, "#f-key", "Staging Area!").await;
    fill(&c, "#f-name", "Staging").await;
    follow(&c, "#new-environment button[type=submit]").await;
    assert!(!text(&c, "#f-key-error").await.is_empty());
    assert_eq!(
        value(&c, "#f-name").await,
        "Staging",
        "what was typed is kept"
    );
    fill(&c, "#f-key", "staging").await;
    follow(&c, "#new-environment button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/environments");
    let row = text(&c, "tr[data-environment=staging]").await;
    assert!(row.contains("Staging"), "{row}");
    let (status, stored) = app.get("/v1/environments/staging", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["name"], "Staging");
    follow(&c, "tr[data-environment=staging] a.audiences").await;
    assert_eq!(
        value(&c, "form.filters input[name=environment]").await,
        "staging"
    );
    assert!(text(&c, "p.empty").await.contains("No audience in staging"));

    follow(&c, "header nav a[href='/admin/audiences']").await;
    assert_eq!(path(&c).await, "/admin/audiences");
    let env = value(&c, "form.filters input[name=environment]").await;
    assert_eq!(env, "production");
    assert!(text(&c, "p.empty").await.contains("No audience"));

    fill(&c, "#f-key", "germany").await;
    fill(
        &c,
        "#f-rules",
        r#"[{"conditions": [{"attribute": "country", "operator": "sometimes", "value": "DE"}]}]"#,
    )
    .await;
    follow(&c, "#new-audience button[type=submit]").await;
    let problem = text(&c, "#f-rules-error").await;
    assert!(problem.contains("sometimes"), "{problem}");
    assert_eq!(
        value(&c, "#f-key").await,
        "germany",
        "what was typed is kept"
    );
    let (status, _) = app
        .get(
            "/v1/environments/production/audiences/germany",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");

    let rules = json!([{"conditions": [
        {"attribute": "country", "operator": "in", "value": ["DE", "AT"]}
    ]}]);
    fill(&c, "#f-rules", &rules.to_string()).await;
    follow(&c, "#new-audience button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/audiences/germany");
    let (status, stored) = app
        .get(
            "/v1/environments/production/audiences/germany",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["rules"], rules);
    assert_eq!(stored["name"], "germany", "the name defaults to the key");

    // A running experiment names it: deleting is refused, and the page says by whom.
    let mut body = ab_experiment("dach-banner");
    body["audience"] = json!("germany");
    app.create_experiment(&body).await;
    let (status, answer) = app.activate("dach-banner").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    follow(&c, "#delete-audience button").await;
    let refused = text(&c, "div.problem").await;
    assert!(refused.contains("audience_in_use"), "{refused}");
    assert!(refused.contains("dach-banner"), "{refused}");
    let (status, _) = app
        .get(
            "/v1/environments/production/audiences/germany",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "still there");

    // Its rules change through the edit form.
    let wider = json!([{"conditions": [
        {"attribute": "country", "operator": "in", "value": ["DE", "AT", "CH"]}
    ]}]);
    fill(&c, "#f-name", "German-speaking").await;
    fill(&c, "#f-rules", &wider.to_string()).await;
    follow(&c, "#audience-form button[type=submit]").await;
    assert_eq!(path(&c).await, "/admin/audiences/germany");
    assert!(text(&c, "h1").await.starts_with("German-speaking"));
    let (_, stored) = app
        .get(
            "/v1/environments/production/audiences/germany",
            &app.admin_key,
        )
        .await;
    assert_eq!(
        (&stored["name"], &stored["rules"]),
        (&json!("German-speaking"), &wider)
    );
    c.goto(&app.url("/admin/audiences"))
        .await
        .expect("the list");
    let row = text(&c, "tr[data-audience=germany]").await;
    assert!(
        row.contains("German-speaking") && row.contains("CH"),
        "{row}"
    );

    // A viewer reads the rules; every change it posts anyway is refused.
    follow(&c, "header form.signout button").await;
    sign_in(&c, &app, &viewer).await;
    c.goto(&app.url("/admin/audiences/germany"))
        .await
        .expect("the audience page");
    let shown: Value = serde_json::from_str(&text(&c, "pre#rules").await).expect("the rules");
    assert_eq!(shown, wider);
    assert!(!exists(&c, "#audience-form").await);
    assert!(!exists(&c, "#delete-audience").await);
    let csrf = csrf_token(&c).await;
    for (url, fields) in [
        ("/admin/environments", vec![("key", "sneaky")]),
        ("/admin/audiences", vec![("key", "sneaky"), ("rules", "[]")]),
        ("/admin/audiences/germany", vec![("rules", "[]")]),
        ("/admin/audiences/germany/delete", vec![]),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        assert_eq!(post_form(&c, url, &form).await, json!(403), "{url}");
    }

    // Once the experiment is over, the audience can go.
    follow(&c, "header form.signout button").await;
    sign_in(&c, &app, &app.admin_key).await;
    let (status, answer) = app.set_status("dach-banner", "completed").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    c.goto(&app.url("/admin/audiences/germany"))
        .await
        .expect("the audience page");
    follow(&c, "#delete-audience button").await;
    assert_eq!(path(&c).await, "/admin/audiences");
    assert!(!exists(&c, "tr[data-audience=germany]").await);
    let (status, _) = app
        .get(
            "/v1/environments/production/audiences/germany",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.close().await.expect("the session closes");
}

/// An operator keeps a webhook endpoint in the console: a URL that is not one comes back
/// next to the field; the secret shown once on creation verifies the deliveries (checked
/// with the reference `standardwebhooks` crate), as does the one a rotation shows; the
/// settings, disabling and deletion reach the API. A viewer has no such page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_a_webhook_endpoint_whose_shown_secret_signs_its_deliveries() {
    use verdict_webhooks::test_support::Receiver;

    let app = common::spawn_app_with(&[("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")]).await;
    let receiver = Receiver::start().await;
    let dispatcher = common::webhooks::dispatcher(&app);
    let deliver = || async {
        dispatcher
            .run_once(time::OffsetDateTime::now_utc())
            .await
            .expect("a round")
    };
    let endpoints = || async {
        let (status, list) = app.get("/v1/webhooks/endpoints", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["data"].as_array().expect("a list").clone()
    };
    let operator = app.create_key(&["operator"]).await;
    let viewer = app.create_key(&["viewer"]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &operator).await;
    follow(&c, "header nav a[href='/admin/webhooks']").await;
    assert!(text(&c, "p.empty").await.contains("No endpoint"));

    fill(&c, "#f-url", "ftp://hooks.example.com/verdict").await;
    follow(&c, "#new-endpoint button[type=submit]").await;
    assert!(!text(&c, "#f-url-error").await.is_empty());
    assert!(endpoints().await.is_empty(), "nothing was written");

    fill(&c, "#f-url", &receiver.url("/hooks")).await;
    fill(&c, "#f-event_types", "experiment.status_changed").await;
    follow(&c, "#new-endpoint button[type=submit]").await;
    let secret = text(&c, "#secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = endpoints().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["event_types"],
        json!(["experiment.status_changed"])
    );
    assert_eq!(listed[0]["url"], receiver.url("/hooks"));

    // The secret the page showed verifies the delivery.
    app.create_experiment(&ab_experiment("hooked")).await;
    assert_eq!(app.activate("hooked").await.0, StatusCode::OK);
    assert_eq!(deliver().await.delivered, 1);
    let received = receiver.requests();
    assert_eq!(received.len(), 1);
    assert!(common::webhooks::verify(&received[0], &secret));
    follow(&c, "a.button").await;
    let message = received[0].webhook_id().to_owned();
    let row = text(&c, &format!("tr[data-message='{message}'] td.status")).await;
    assert_eq!(row, "delivered");

    // Settings: every event type again, and a description.
    fill(&c, "#f-event_types", "").await;
    fill(&c, "#f-description", "all experiment events").await;
    follow(&c, "#endpoint-form button[type=submit]").await;
    assert_eq!(text(&c, "#event-types").await, "every type");
    let listed = endpoints().await;
    assert_eq!(listed[0]["event_types"], json!([]));
    assert_eq!(listed[0]["description"], "all experiment events");

    // A rotation shows the new secret once; it signs the next delivery.
    follow(&c, "#rotate button").await;
    let rotated = text(&c, "#secret").await;
    assert!(
        rotated.starts_with("whsec_") && rotated != secret,
        "{rotated}"
    );
    assert_eq!(app.set_status("hooked", "paused").await.0, StatusCode::OK);
    assert_eq!(deliver().await.delivered, 1);
    let received = receiver.requests();
    assert_eq!(received.len(), 2);
    assert!(common::webhooks::verify(&received[1], &rotated));

    // Disabled, then enabled again; then deleted.
    follow(&c, "a.button").await;
    follow(&c, "#enabled button").await;
    assert!(text(&c, "#state").await.starts_with("disabled (manual)"));
    assert_eq!(endpoints().await[0]["disabled"], true);
    follow(&c, "#enabled button").await;
    assert!(text(&c, "#state").await.starts_with("enabled"));
    assert_eq!(endpoints().await[0]["disabled"], false);
    follow(&c, "#delete-endpoint button").await;
    assert_eq!(path(&c).await, "/admin/webhooks");
    assert!(text(&c, "p.empty").await.contains("No endpoint"));
    assert!(endpoints().await.is_empty());

    // A viewer (no webhooks:manage) has no link, and the page is refused.
    follow(&c, "header form.signout button").await;
    sign_in(&c, &app, &viewer).await;
    assert!(!exists(&c, "header nav a[href='/admin/webhooks']").await);
    c.goto(&app.url("/admin/webhooks"))
        .await
        .expect("navigating");
    assert!(text(&c, "div.problem").await.contains("webhooks:manage"));
    let csrf = csrf_token(&c).await;
    let url = receiver.url("/sneaky");
    let posted = post_form(
        &c,
        "/admin/webhooks",
        &[("csrf", csrf.as_str()), ("url", url.as_str())],
    )
    .await;
    assert_eq!(posted, json!(403));
    assert!(endpoints().await.is_empty());
    c.close().await.expect("the session closes");
}

/// An admin makes an API key in the console: roles that do not exist come back next to
/// the field; the plaintext the page shows once works as a key (it reads experiments, and
/// signs in to the console) until the admin revokes it there. A viewer has no such page.
#[tokio::test]
async fn an_admin_makes_a_key_whose_shown_plaintext_works_until_revoked() {
    let app = spawn_app().await;
    let viewer = app.create_key(&["viewer"]).await;
    let keys = || async {
        let (status, list) = app.get("/v1/api-keys", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["data"].as_array().expect("a list").clone()
    };
    let before = keys().await.len();
    let driver = start_driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &app.admin_key).await;
    follow(&c, "header nav a[href='/admin/api-keys']").await;

    fill(&c, "#f-name", "dashboard").await;
    fill(&c, "#f-roles", "viewer, wizard").await;
    follow(&c, "#new-key button[type=submit]").await;
    let problem = text(&c, "#f-roles-error").await;
    assert!(problem.contains("wizard"), "{problem}");
    assert_eq!(keys().await.len(), before, "nothing was written");

    fill(&c, "#f-roles", "viewer").await;
    follow(&c, "#new-key button[type=submit]").await;
    let plaintext = text(&c, "#secret").await;
    assert!(plaintext.starts_with("vk_"), "{plaintext}");
    let made = keys()
        .await
        .into_iter()
        .find(|k| k["name"] == "dashboard")
        .expect("the new key is listed");
    assert_eq!(made["roles"], json!(["viewer"]));
    let id = made["id"].as_str().expect("an id").to_owned();
    let (status, body) = app.get("/v1/experiments", &plaintext).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // It signs in to the console, as a viewer: no API keys page for it.
    follow(&c, "header form.signout button").await;
    sign_in(&c, &app, &plaintext).await;
    assert_eq!(path(&c).await, "/admin");
    assert!(!exists(&c, "header nav a[href='/admin/api-keys']").await);
    follow(&c, "header form.signout button").await;

    // Revoked in the console, it is refused from then on.
    sign_in(&c, &app, &app.admin_key).await;
    c.goto(&app.url("/admin/api-keys")).await.expect("the keys");
    assert_eq!(
        text(&c, &format!("tr[data-key='{id}'] td.revoked")).await,
        "—"
    );
    follow(&c, &format!("tr[data-key='{id}'] button")).await;
    assert_ne!(
        text(&c, &format!("tr[data-key='{id}'] td.revoked")).await,
        "—"
    );
    assert!(!exists(&c, &format!("tr[data-key='{id}'] button")).await);
    let (status, _) = app.get("/v1/experiments", &plaintext).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    follow(&c, "header form.signout button").await;
    sign_in(&c, &app, &plaintext).await;
    assert_eq!(
        path(&c).await,
        "/admin/sign-in",
        "a revoked key cannot sign in"
    );

    // A viewer may not manage keys: no link, and a key it posts anyway is refused.
    sign_in(&c, &app, &viewer).await;
    assert!(!exists(&c, "header nav a[href='/admin/api-keys']").await);
    let csrf = csrf_token(&c).await;
    let posted = post_form(
        &c,
        "/admin/api-keys",
        &[
            ("csrf", csrf.as_str()),
            ("name", "sneaky"),
            ("roles", "admin"),
        ],
    )
    .await;
    assert_eq!(posted, json!(403));
    assert_eq!(keys().await.len(), before + 1);
    c.close().await.expect("the session closes");
}
