//! CloudWatch Embedded Metric Format against LocalStack and the emulator: the EMF lines of a known
//! workload are valid EMF and add up to what `/metrics` says after the same run, and the real
//! binary writes them to standard output when the configuration turns them on.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mp_resolver::emulator::TestToken;
use mp_resolver::observe::admin;
use mp_resolver::observe::emf::{self, EmfConfig, Kind, Reading};
use serde_json::{json, Value};
use support::http::post_form;
use support::intake::RunningIntake;
use support::{eventually, Fixture, Topic};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn token(customer: &str) -> String {
    TestToken::new("123456789012", "prod-abc")
        .customer(customer)
        .encode()
        .expect("valid test token")
}

fn body(token: &str) -> String {
    json!({ "registrationToken": token }).to_string()
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// What was written for each (metric, label dimensions), in order.
type Targets = HashMap<(String, Vec<(String, String)>), Vec<Value>>;

/// The EMF specification's structure: the `_aws` block with a millisecond timestamp, directives
/// with namespace, dimension sets whose keys are string members, metric definitions with units
/// whose targets are numbers or Values/Counts arrays. Returns (metric, dimensions) → targets.
fn check_emf(lines: &[Value], namespace: &str) -> Targets {
    let units = ["Seconds", "Count", "Count/Second", "None"];
    let mut targets = Targets::new();
    for line in lines {
        let aws = &line["_aws"];
        assert!(
            aws["Timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "{line}"
        );
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], namespace);
        let set: Vec<String> = directive["Dimensions"][0]
            .as_array()
            .expect("a dimension set")
            .iter()
            .map(|k| k.as_str().expect("key").to_owned())
            .collect();
        assert!(set.len() <= 30);
        assert_eq!(&set[..2], ["Service", "QueueName"], "{line}");
        let dims: Vec<(String, String)> = set[2..]
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    line[k].as_str().expect("string dimension").to_owned(),
                )
            })
            .collect();
        let metrics = directive["Metrics"].as_array().expect("metric definitions");
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().expect("name").to_owned();
            assert!(units.contains(&m["Unit"].as_str().expect("unit")), "{m}");
            let target = line[&name].clone();
            let valid = target.is_number()
                || target["Values"].as_array().map(Vec::len)
                    == target["Counts"].as_array().map(Vec::len)
                    && target["Values"]
                        .as_array()
                        .is_some_and(|v| (1..=100).contains(&v.len()));
            assert!(valid, "{name}: {target}");
            targets
                .entry((name, dims.clone()))
                .or_default()
                .push(target);
        }
    }
    targets
}

/// Every series of `/metrics` (`text`) against what the EMF lines wrote: counters = the sum of
/// the increases, gauges = the last value, histogram counts = the sum of the Counts. Returns how
/// many series were compared.
fn assert_agrees_with_metrics(targets: &Targets, text: &str) -> usize {
    let sum = |values: &[Value]| -> f64 { values.iter().filter_map(Value::as_f64).sum() };
    let mut compared = 0;
    for family in emf::parse(text) {
        for (labels, reading) in &family.series {
            let key = (family.name.clone(), labels.clone());
            let written = targets.get(&key).cloned().unwrap_or_default();
            match (family.kind, reading) {
                (Kind::Counter, Reading::Scalar(total)) => {
                    assert_eq!(sum(&written), *total, "{key:?}");
                }
                (Kind::Gauge, Reading::Scalar(value)) => {
                    assert_eq!(
                        written.last().and_then(Value::as_f64),
                        Some(*value),
                        "{key:?}"
                    );
                }
                (_, Reading::Histogram { buckets }) => {
                    let counts: f64 = written
                        .iter()
                        .flat_map(|t| t["Counts"].as_array().cloned().unwrap_or_default())
                        .filter_map(|c| c.as_f64())
                        .sum();
                    assert_eq!(Some(counts), buckets.last().map(|b| b.1), "{key:?}");
                }
                _ => panic!("unexpected {key:?}"),
            }
            compared += 1;
        }
    }
    compared
}

#[tokio::test]
async fn emf_lines_of_a_workload_are_valid_and_agree_with_metrics() {
    let fx = Fixture::new(Topic::Standard).await;
    let worker = fx.worker();
    let telemetry = worker.telemetry().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = listener.local_addr().expect("admin address");
    let (stop_admin, admin_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(listener, telemetry.clone(), async {
        let _ = admin_stop.await;
    }));
    let queue_name = fx.queue_url.rsplit('/').next().unwrap().to_owned();
    let config = EmfConfig {
        namespace: "MpResolver".into(),
        dimensions: vec![
            ("Service".into(), "emf-test".into()),
            ("QueueName".into(), queue_name.clone()),
        ],
        interval: Duration::from_millis(300),
    };
    let out = Buffer::default();
    let writer = emf::spawn_to(telemetry.clone(), config, Box::new(out.clone()));
    let (stop_worker, worker_stop) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.clone().run(async {
        let _ = worker_stop.await;
    }));

    // Two rounds, so the lines carry increases over several flushes, not one total.
    fx.send_all(&[body(&token("a")), body("not-a-token")]).await;
    fx.events(1).await;
    fx.dead_letters(1).await;
    eventually("a flush after the first round", || async {
        !out.0.lock().unwrap().is_empty()
    })
    .await;
    let throttled = TestToken::new("123456789012", "prod-abc")
        .throttle(1)
        .encode()
        .expect("valid test token");
    fx.send_all(&[body(&token("b")), body(&throttled), "[1]".to_owned()])
        .await;
    fx.events(2).await;
    fx.dead_letters(1).await;
    let _ = stop_worker.send(());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("worker stops")
        .expect("worker task");
    writer.finish().await;

    let (status, text) = admin::http_get(admin_addr, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    let _ = stop_admin.send(());
    server.await.expect("admin task").expect("admin listener");

    let written = String::from_utf8(out.0.lock().unwrap().clone()).expect("UTF-8");
    let lines = json_lines(&written);
    assert!(lines.len() >= 2, "{written}");
    let targets = check_emf(&lines, "MpResolver");
    assert!(lines
        .iter()
        .all(|l| l["Service"] == "emf-test" && l["QueueName"] == queue_name));

    let compared = assert_agrees_with_metrics(&targets, &text);
    assert!(compared >= 15, "compared {compared} series");

    // The figures of the workload, as an operator reads them on the dashboard.
    let sum = |values: &[Value]| -> f64 { values.iter().filter_map(Value::as_f64).sum() };
    let total = |name: &str, dims: &[(&str, &str)]| {
        let key = (
            name.to_owned(),
            dims.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        );
        sum(targets.get(&key).map(Vec::as_slice).unwrap_or_default())
    };
    assert_eq!(total("mpr_messages_received", &[]), 5.0);
    assert_eq!(total("mpr_outcomes", &[("outcome", "published")]), 3.0);
    assert_eq!(total("mpr_outcomes", &[("outcome", "dead_lettered")]), 2.0);
    assert_eq!(
        total("mpr_dead_letters", &[("reason", "invalid_token")]),
        1.0
    );
    assert_eq!(
        total("mpr_dead_letters", &[("reason", "malformed_message")]),
        1.0
    );
    assert_eq!(total("mpr_resolve_throttles", &[]), 1.0);
    assert_eq!(
        total("mpr_resolve_attempts", &[("result", "throttled")]),
        1.0
    );
}

#[tokio::test]
async fn the_binary_writes_emf_to_standard_output_when_configured() {
    let fx = Fixture::new(Topic::Standard).await;
    fx.send_all(&[body(&token("c"))]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(fx.binary_env(&[
            ("MPR_METRICS__EMF", "true"),
            ("MPR_METRICS__SERVICE", "binary-test"),
            // Longer than the run: the lines come from the flush at shutdown.
            ("MPR_METRICS__EMF_INTERVAL_SECS", "3600"),
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mp-resolver run");
    fx.events(1).await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .expect("wait");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .await
        .expect("read stdout");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(exit.success(), "{exit:?}\n{stderr}");
    let lines = json_lines(&stdout);
    let targets = check_emf(&lines, "MpResolver");
    assert!(lines.iter().all(|l| l["Service"] == "binary-test"));
    let published = targets
        .get(&(
            "mpr_outcomes".to_owned(),
            vec![("outcome".to_owned(), "published".to_owned())],
        ))
        .expect("outcomes on standard output");
    assert_eq!(
        published,
        &vec![json!(1.0)],
        "one flush, at shutdown: {stdout}"
    );
    assert!(
        !stderr.contains("\"_aws\""),
        "EMF goes to standard output only"
    );
}

#[tokio::test]
async fn intake_writes_its_own_figures_as_emf() {
    let fx = Fixture::new(Topic::Standard).await;
    let settings = support::intake::intake_settings(&fx, |_| {});
    let intake = RunningIntake::start(fx.clients(&settings).sqs, &settings).await;
    let queue_name = fx.queue_url.rsplit('/').next().unwrap().to_owned();
    let config = EmfConfig {
        namespace: "MpResolver".into(),
        dimensions: vec![
            ("Service".into(), "intake-test".into()),
            ("QueueName".into(), queue_name),
        ],
        interval: Duration::from_secs(3600),
    };
    let out = Buffer::default();
    let writer = emf::spawn_to(intake.telemetry.clone(), config, Box::new(out.clone()));

    let form = |token: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("x-amzn-marketplace-token", token)
            .finish()
    };
    for customer in ["a", "b"] {
        let answer = post_form(&intake.url("/"), &[], &form(&token(customer))).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
    }
    let refused = post_form(&intake.url("/"), &[], "other=field").await;
    assert_eq!(refused.status, 400);
    fx.collect(&fx.queue_url, 2).await;

    writer.finish().await;
    let (status, text) = intake.admin_get("/metrics").await;
    assert_eq!(status, 200);
    intake.stop().await;

    let written = String::from_utf8(out.0.lock().unwrap().clone()).expect("UTF-8");
    let lines = json_lines(&written);
    let targets = check_emf(&lines, "MpResolver");
    assert!(lines.iter().all(|l| l["Service"] == "intake-test"));
    let compared = assert_agrees_with_metrics(&targets, &text);
    assert!(compared >= 3, "compared {compared} series");
    let result = |r: &str| {
        targets
            .get(&(
                "mpr_intake_requests".to_owned(),
                vec![("result".to_owned(), r.to_owned())],
            ))
            .cloned()
    };
    assert_eq!(result("accepted"), Some(vec![json!(2.0)]), "{written}");
    assert_eq!(result("no_token"), Some(vec![json!(1.0)]), "{written}");
    let sends = &targets[&("mpr_intake_send_duration_seconds".to_owned(), vec![])];
    let counts: f64 = sends
        .iter()
        .flat_map(|t| t["Counts"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c.as_f64())
        .sum();
    assert_eq!(counts, 2.0, "two sends to the token queue: {written}");
}
