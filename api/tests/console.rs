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
                "--window-size=1280,1024", "--no-first-run", "--disable-extensions",
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

/// Sign in, open an experiment, activate it, read its results (the numbers the results API
/// gives), declare a manual winner, see it in the audit trail, sign out.
#[tokio::test]
async fn an_experimenter_runs_an_experiment_through_the_console() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    // A wrong key is refused on the sign-in page.
    sign_in(&c, &app, "not-a-key").await;
    assert_eq!(path(&c).await, "/admin/sign-in");
    assert!(text(&c, "#key-error").await.contains("unknown or revoked"));

    sign_in(&c, &app, &app.admin_key).await;
    assert_eq!(path(&c).await, "/admin");
    let row = text(&c, "table.list tbody").await;
    assert!(row.contains("checkout") && row.contains("draft"), "{row}");
    screenshot(&c, "console-experiments").await;

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

    traffic(&app, "checkout", 60).await;
    let api = app.results("checkout").await;
    c.refresh().await.expect("reload");
    screenshot(&c, "console-experiment").await;
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

/// A key that may only read sees no button that changes anything, and the changes it posts
/// anyway are refused.
#[tokio::test]
async fn a_read_only_key_cannot_change_anything() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("banner")).await;
    let viewer = app.create_key(&["viewer"]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    sign_in(&c, &app, &viewer).await;
    c.goto(&app.url("/admin/experiments/banner"))
        .await
        .expect("the experiment page");
    assert_eq!(text(&c, "h1 .status").await, "draft");
    assert!(!exists(&c, "#lifecycle .actions").await);
    assert!(!exists(&c, "#manual-winner").await);
    assert!(exists(&c, "#definition").await);

    // The same forms, posted from the page by hand with the page's own CSRF token.
    let csrf = c
        .find(Locator::Css("header input[name=csrf]"))
        .await
        .expect("the sign-out form's token")
        .attr("value")
        .await
        .expect("its value")
        .expect("a token");
    for (action, fields) in [
        ("status", vec![("status", "running")]),
        ("winner", vec![("variant", "treatment")]),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let status = post_form(&c, &format!("/admin/experiments/banner/{action}"), &form).await;
        assert_eq!(status, json!(403), "{action}");
    }
    let (_, e) = app.get("/v1/experiments/banner", &app.admin_key).await;
    assert_eq!(e["status"], "draft");
    assert_eq!(e["winner"], Value::Null);
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
    for page in ["/admin", "/admin/experiments/offline"] {
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
