use crate::observe::metrics::Telemetry;
use std::sync::Mutex;

use super::*;

fn config() -> EmfConfig {
    EmfConfig {
        namespace: "MpResolver".into(),
        dimensions: vec![
            ("Service".into(), "svc".into()),
            ("QueueName".into(), "tokens".into()),
        ],
        interval: Duration::from_secs(60),
    }
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The line that carries `metric` with the dimension values `dims`.
fn find<'a>(lines: &'a [Value], metric: &str, dims: &[(&str, &str)]) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l.get(metric).is_some() && dims.iter().all(|(k, v)| l[*k] == *v))
        .map(|l| &l[metric])
}

/// Checks a line against the EMF specification's document structure and limits.
fn assert_valid_emf(line: &Value) {
    let aws = &line["_aws"];
    assert!(aws["Timestamp"].is_u64(), "{line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    for d in directives {
        assert_eq!(d.as_object().unwrap().len(), 3, "only the 3 members: {d}");
        assert!(d["Namespace"].as_str().is_some_and(|n| !n.is_empty()));
        for set in d["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30);
            for key in set {
                let key = key.as_str().expect("dimension key");
                assert!(
                    line[key].as_str().is_some_and(|v| !v.is_empty()),
                    "dimension {key} is a string member: {line}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().expect("metrics");
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().expect("metric name");
            assert!(
                ["Seconds", "Count", "Count/Second", "None"].contains(&m["Unit"].as_str().unwrap()),
                "{m}"
            );
            let target = &line[name];
            let ok = target.is_number()
                || (target["Values"].as_array().is_some_and(|v| {
                    !v.is_empty() && v.len() <= 100 && v.iter().all(Value::is_number)
                }) && target["Counts"].as_array().map(Vec::len)
                    == target["Values"].as_array().map(Vec::len));
            assert!(ok, "metric {name} has a numeric target: {line}");
        }
    }
}

#[test]
fn parses_counters_gauges_histograms_and_escaped_labels() {
    let text = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total{kind=\"x\\\"y\",n=\"1\"} 3\n\
                # TYPE g gauge\ng 2.5\n\
                # TYPE h_seconds histogram\nh_seconds_sum 0.3\nh_seconds_count 2\n\
                h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n# EOF\n";
    let families = parse(text);
    assert_eq!(families.len(), 3);
    assert_eq!(families[0].name, "a_things");
    assert_eq!(families[0].kind, Kind::Counter);
    let labels = vec![
        ("kind".to_owned(), "x\"y".to_owned()),
        ("n".to_owned(), "1".to_owned()),
    ];
    assert_eq!(families[0].series[&labels], Reading::Scalar(3.0));
    assert_eq!(families[1].series[&vec![]], Reading::Scalar(2.5));
    assert_eq!(
        families[2].series[&vec![]],
        Reading::Histogram {
            buckets: vec![(0.1, 1.0), (f64::INFINITY, 2.0)]
        }
    );
    assert_eq!(families[2].unit(), "Seconds");
}

#[test]
fn counters_are_increases_gauges_values_histograms_bucket_increases() {
    let t = Telemetry::new(Duration::from_secs(60));
    let mut emf = Emf::new(config());
    t.metrics.received(3);
    t.metrics.outcome("published");
    t.metrics.dead_lettered("invalid_token");
    t.metrics.in_flight(2);
    t.metrics.rate_limit(12.5);
    t.metrics.token_age(Duration::from_millis(300));
    t.metrics.token_age(Duration::from_secs(20_000));
    let first = parsed(&emf.lines(&t.render(), 1_000));
    first.iter().for_each(assert_valid_emf);
    assert_eq!(
        find(&first, "mpr_messages_received", &[]),
        Some(&json!(3.0))
    );
    assert_eq!(
        find(&first, "mpr_outcomes", &[("outcome", "published")]),
        Some(&json!(1.0))
    );
    assert_eq!(
        find(&first, "mpr_dead_letters", &[("reason", "invalid_token")]),
        Some(&json!(1.0))
    );
    assert_eq!(find(&first, "mpr_in_flight", &[]), Some(&json!(2.0)));
    assert_eq!(
        find(&first, "mpr_resolve_rate_limit", &[]),
        Some(&json!(12.5))
    );
    // 0.3 s lands in the 0.5 bucket; 20000 s past the last bound (14400) in +Inf.
    assert_eq!(
        find(&first, "mpr_token_age_seconds", &[]),
        Some(&json!({"Values": [0.5, 14400.0], "Counts": [1.0, 1.0]}))
    );
    assert_eq!(
        find(&first, "mpr_resolve_duration_seconds", &[]),
        None,
        "no observations: no entry"
    );

    t.metrics.received(2);
    t.metrics.in_flight(-2);
    t.metrics.token_age(Duration::from_millis(300));
    let second = parsed(&emf.lines(&t.render(), 61_000));
    second.iter().for_each(assert_valid_emf);
    assert_eq!(
        find(&second, "mpr_messages_received", &[]),
        Some(&json!(2.0))
    );
    assert_eq!(
        find(&second, "mpr_outcomes", &[("outcome", "published")]),
        Some(&json!(0.0)),
        "a quiet counter is written as 0, so a graph shows 0 rather than a gap"
    );
    assert_eq!(find(&second, "mpr_in_flight", &[]), Some(&json!(0.0)));
    assert_eq!(
        find(&second, "mpr_token_age_seconds", &[]),
        Some(&json!({"Values": [0.5], "Counts": [1.0]}))
    );
    assert!(second.iter().all(|l| l["_aws"]["Timestamp"] == 61_000));
}

#[test]
fn labels_become_dimensions_after_the_configured_ones() {
    let t = Telemetry::new(Duration::from_secs(60));
    t.metrics.aws_call("sqs", "ReceiveMessage", true);
    let lines = parsed(&Emf::new(config()).lines(&t.render(), 5));
    let line = lines
        .iter()
        .find(|l| l.get("mpr_aws_calls").is_some())
        .expect("aws calls line");
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "MpResolver");
    assert_eq!(
        directive["Dimensions"],
        json!([["Service", "QueueName", "service", "operation", "result"]])
    );
    assert_eq!(line["Service"], "svc");
    assert_eq!(line["QueueName"], "tokens");
    assert_eq!(line["operation"], "ReceiveMessage");
    assert_eq!(
        directive["Metrics"],
        json!([{"Name": "mpr_aws_calls", "Unit": "Count"}])
    );
    // Metrics without labels share one line, with only the configured dimensions.
    let plain = lines
        .iter()
        .find(|l| l.get("mpr_in_flight").is_some())
        .expect("unlabelled line");
    assert_eq!(
        plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Service", "QueueName"]])
    );
    assert!(plain.get("mpr_resolve_rate_limit").is_some());
}

#[test]
fn more_than_100_metrics_or_30_dimensions_follow_the_limits() {
    let mut text = String::new();
    for i in 0..150 {
        text.push_str(&format!("# TYPE m{i} gauge\nm{i} {i}\n"));
    }
    let wide: Vec<String> = (0..29).map(|i| format!("l{i}=\"v\"")).collect();
    text.push_str(&format!(
        "# TYPE wide gauge\nwide{{{}}} 1\n",
        wide.join(",")
    ));
    let lines = parsed(&Emf::new(config()).lines(&text, 1));
    lines.iter().for_each(assert_valid_emf);
    let counts: Vec<usize> = lines
        .iter()
        .map(|l| {
            l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(
        counts,
        vec![100, 50],
        "150 metrics: 100 + 50, and 2 + 29 dimensions is too many"
    );

    let many_buckets = {
        let mut t = "# TYPE h histogram\n".to_owned();
        for i in 1..=150 {
            t.push_str(&format!("h_bucket{{le=\"{i}\"}} {i}\n"));
        }
        t.push_str("h_bucket{le=\"+Inf\"} 150\n");
        t
    };
    let lines = parsed(&Emf::new(config()).lines(&many_buckets, 1));
    lines.iter().for_each(assert_valid_emf);
    let total: f64 = lines
        .iter()
        .flat_map(|l| l["h"]["Counts"].as_array().unwrap().clone())
        .map(|c| c.as_f64().unwrap())
        .sum();
    assert_eq!(
        lines.len(),
        2,
        "150 occupied buckets: two Values arrays, two lines"
    );
    assert_eq!(total, 150.0);
}

#[test]
fn configuration_gives_namespace_dimensions_and_interval() {
    let mut settings = crate::config::load(&crate::config::Sources {
        env: vec![
            (
                "MPR_QUEUE_URL".into(),
                "https://sqs.us-east-1.amazonaws.com/1/tokens".into(),
            ),
            (
                "MPR_DLQ_URL".into(),
                "https://sqs.us-east-1.amazonaws.com/1/dlq".into(),
            ),
            ("MPR_TOPIC_ARN".into(), "arn:aws:sns:us-east-1:1:t".into()),
        ],
        ..Default::default()
    })
    .expect("configuration")
    .settings;
    assert_eq!(EmfConfig::from_settings(&settings), None, "off by default");
    settings.metrics.emf = true;
    settings.metrics.service = "prod".into();
    let c = EmfConfig::from_settings(&settings).expect("on");
    assert_eq!(c.namespace, "MpResolver");
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(
        c.dimensions,
        vec![
            ("Service".to_owned(), "prod".to_owned()),
            ("QueueName".to_owned(), "tokens".to_owned())
        ]
    );
    settings.metrics.service.clear();
    settings.metrics.queue_name_dimension = false;
    assert!(EmfConfig::from_settings(&settings)
        .unwrap()
        .dimensions
        .is_empty());
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn the_writer_flushes_every_interval_and_at_finish() {
    let t = Arc::new(Telemetry::new(Duration::from_secs(60)));
    let out = Shared::default();
    let handle = spawn_to(t.clone(), config(), Box::new(out.clone()));
    t.metrics.received(1);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(out.lines().is_empty(), "nothing before the first interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = |lines: &[Value]| -> Vec<f64> {
        lines
            .iter()
            .filter_map(|l| l["mpr_messages_received"].as_f64())
            .collect()
    };
    assert_eq!(received(&out.lines()), vec![1.0]);
    t.metrics.received(4);
    handle.finish().await;
    assert_eq!(
        received(&out.lines()),
        vec![1.0, 4.0],
        "finish writes what came since the last flush"
    );
}
