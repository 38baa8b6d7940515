//! The whole sign-up path in a real browser: headless Chromium (Debian's `chromium`, driven over
//! WebDriver by `chromedriver` and the `fantoccini` crate) opens a stand-in for the Marketplace
//! page that auto-submits the token form, `intake` queues the token and redirects, a stand-in
//! sign-up page shows the `signupId` it got, and the worker publishes the customer with that
//! same `signupId` on the topic.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use mp_resolver::emulator::TestToken;
use serde_json::json;
use support::intake::{intake_settings, RunningIntake};
use support::{eventually, expected_event_id, Fixture, Topic};
use tokio::net::TcpListener;

/// The first of `names` found on PATH (Debian installs `chromium` and `chromedriver` in /usr/bin).
fn on_path(names: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "{} not on PATH: apt-get install -y chromium chromium-driver \
                 (scripts/test.sh and .ci/run do it when missing)",
                names.join(" or ")
            )
        })
}

/// `chromedriver` on a free loopback port, stopped by its own pid when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Self {
        let chromedriver = on_path(&["chromedriver"]);
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("chromedriver listens", || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        Chromedriver {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Child::kill signals this child's own pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two pages around intake: a stand-in for Marketplace's redirect page (a form that posts
/// the token and submits itself, as Marketplace's does) and the seller's sign-up page.
async fn serve_stand_in_pages(listener: TcpListener, token: String, intake_url: String) {
    let marketplace = format!(
        "<!DOCTYPE html><html><body><p>Redirecting to the seller...</p>\
         <form method=\"post\" action=\"{intake_url}\">\
         <input type=\"hidden\" name=\"x-amzn-marketplace-token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"x-amzn-marketplace-offer-type\" value=\"free-trial\">\
         </form><script>document.forms[0].submit();</script></body></html>"
    );
    let app = Router::new()
        .route(
            "/marketplace",
            get(move || async move { Html(marketplace) }),
        )
        .route(
            "/signup",
            get(|Query(query): Query<HashMap<String, String>>| async move {
                let id = query.get("signupId").cloned().unwrap_or_default();
                let plan = query.get("plan").cloned().unwrap_or_default();
                let safe = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
                Html(format!(
                    "<!DOCTYPE html><html><body><h1>Create your account</h1>\
                     <p id=\"signup-id\">{}</p><p id=\"plan\">{}</p></body></html>",
                    safe(&id),
                    safe(&plan)
                ))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
}

fn chromium_capabilities(profile: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": on_path(&["chromium", "chromium-browser"]), "args": args},
    });
    caps.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_signs_up_through_intake_in_a_real_browser() {
    let fx = Fixture::new(Topic::Standard).await;
    let token = TestToken::new("123456789012", "prod-abc")
        .customer("cust-browser")
        .encode()
        .expect("valid test token");

    // The pages and intake each need the other's address: bind first, serve after.
    let pages_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pages = pages_listener.local_addr().unwrap();
    let settings = intake_settings(&fx, |s| {
        s.intake.registration_url = format!("http://{pages}/signup?plan=gold");
        s.intake.path = "/marketplace/fulfil".into();
        // The stand-in for Marketplace's page is the origin the browser's POST names.
        s.intake.allowed_origins.push(format!("http://{pages}"));
    });
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    serve_stand_in_pages(
        pages_listener,
        token.clone(),
        intake.url("/marketplace/fulfil"),
    )
    .await;

    let worker = fx.worker();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = worker_stopped.await;
    }));

    let driver = Chromedriver::start().await;
    let profile = std::env::temp_dir().join(format!(
        "mpr-chromium-{}-{}",
        std::process::id(),
        pages.port()
    ));
    // chromedriver is plain HTTP on loopback: no TLS stack needed.
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(chromium_capabilities(&profile))
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver");

    let shown = async {
        browser
            .goto(&format!("http://{pages}/marketplace"))
            .await
            .expect("open the Marketplace stand-in");
        let element = browser
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("signup-id"))
            .await
            .expect("the sign-up page after the form posted itself");
        let id = element.text().await.expect("signupId text");
        let plan = browser
            .find(Locator::Id("plan"))
            .await
            .expect("plan")
            .text()
            .await
            .expect("plan text");
        let url = browser.current_url().await.expect("current URL");
        (id, plan, url)
    }
    .await;
    let _ = browser.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);

    let (signup_id, plan, landed_on) = shown;
    assert!(
        signup_id.len() >= 22,
        "the sign-up page shows a signupId: {signup_id:?}"
    );
    assert_eq!(plan, "gold", "the sign-up page's own query survived");
    assert_eq!(landed_on.path(), "/signup");
    assert!(
        !landed_on.as_str().contains(&token),
        "the token is not in the URL"
    );

    let events = fx.events(1).await;
    let event = events[0].json();
    assert_eq!(
        event["signupId"],
        signup_id.as_str(),
        "the topic carries the same signupId"
    );
    assert_eq!(event["eventId"], expected_event_id(&token));
    assert_eq!(event["customerIdentifier"], "cust-browser");
    assert_eq!(event["context"]["offerType"], "free-trial");

    let _ = stop_worker.send(());
    running.await.expect("the worker stops");
    eventually("the queue is empty", || async {
        fx.depth(&fx.queue_url).await == 0
    })
    .await;
    intake.stop().await;
}
