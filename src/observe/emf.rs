//! CloudWatch Embedded Metric Format (EMF): the figures of `/metrics` as JSON log lines that
//! CloudWatch Logs turns into CloudWatch metrics, so a Fargate task needs no agent or scraper.
//!
//! One source of truth: the lines are made from the same registry text `/metrics` serves
//! (`Telemetry::render`), parsed back, so EMF can never count differently from Prometheus.
//! Counters are written as the increase since the previous flush (CloudWatch sums data points),
//! gauges as their value, histograms as `{"Values": [...], "Counts": [...]}` from the bucket
//! increases (CloudWatch computes percentiles from them). Labels become dimensions, after the
//! configured ones (`Service`, `QueueName`).
//!
//! Specification limits followed: at most 100 metrics per directive, 30 dimension keys per
//! dimension set, 100 entries in a Values array; `Timestamp` in milliseconds since the epoch.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::observe::admin::Probe;

const MAX_METRICS_PER_LINE: usize = 100;
const MAX_DIMENSIONS: usize = 30;
const MAX_VALUES: usize = 100;

pub use super::openmetrics::{parse, Family, Kind, Labels, Reading};

impl Family {
    /// The CloudWatch unit of the family's values.
    pub fn unit(&self) -> &'static str {
        unit(&self.name, self.kind)
    }

    /// The label names of its series, which become its dimensions after the configured ones.
    pub fn label_names(&self) -> Vec<&str> {
        self.series
            .keys()
            .next()
            .map(|labels| labels.iter().map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default()
    }
}

/// CloudWatch unit by name and kind: durations are named `_seconds`, the limiter's rate
/// `_rate_limit`; everything else counts things (a 0/1 flag has no unit).
fn unit(name: &str, kind: Kind) -> &'static str {
    if name.ends_with("_seconds") {
        "Seconds"
    } else if name.ends_with("_rate_limit") {
        "Count/Second"
    } else if kind == Kind::Gauge && name == "mpr_paused" {
        "None"
    } else {
        "Count"
    }
}

/// Where the lines go and what they are tagged with.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfConfig {
    pub namespace: String,
    /// Dimensions on every metric, e.g. `Service`, `QueueName`.
    pub dimensions: Vec<(String, String)>,
    pub interval: Duration,
}

impl EmfConfig {
    /// `None` when `[metrics] emf` is off.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let m = &settings.metrics;
        if !m.emf {
            return None;
        }
        let mut dimensions = Vec::new();
        if !m.service.is_empty() {
            dimensions.push(("Service".to_owned(), m.service.clone()));
        }
        if m.queue_name_dimension {
            let queue = settings.queue_url.trim_end_matches('/');
            let name = queue.rsplit('/').next().unwrap_or(queue);
            if !name.is_empty() {
                dimensions.push(("QueueName".to_owned(), name.to_owned()));
            }
        }
        Some(EmfConfig {
            namespace: m.namespace.clone(),
            dimensions,
            interval: Duration::from_secs(m.emf_interval_secs),
        })
    }
}

/// What a series read at the previous flush, to write counters and histograms as increases.
#[derive(Debug, Clone)]
enum Previous {
    Count(f64),
    Buckets(Vec<f64>),
}

/// One metric of one line.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    unit: &'static str,
    value: Value,
}

/// Turns successive snapshots into EMF lines. Pure apart from the state it keeps between
/// flushes.
#[derive(Debug)]
pub struct Emf {
    config: EmfConfig,
    previous: HashMap<(String, Labels), Previous>,
}

impl Emf {
    pub fn new(config: EmfConfig) -> Self {
        Emf {
            config,
            previous: HashMap::new(),
        }
    }

    /// The EMF lines (JSON, no newline) for the registry text `text` at `timestamp_ms`.
    pub fn lines(&mut self, text: &str, timestamp_ms: u64) -> Vec<String> {
        // Series grouped by their label set: one line per label set (a dimension has one value
        // per line), several lines when a group has more than 100 metrics.
        let mut groups: BTreeMap<Labels, Vec<Entry>> = BTreeMap::new();
        for family in parse(text) {
            let unit = family.unit();
            for (labels, reading) in &family.series {
                if self.config.dimensions.len() + labels.len() > MAX_DIMENSIONS {
                    tracing::warn!(metric = %family.name, "more than 30 dimensions; not written as EMF");
                    continue;
                }
                let key = (family.name.clone(), labels.clone());
                for value in self.values(key, family.kind, reading) {
                    groups.entry(labels.clone()).or_default().push(Entry {
                        name: family.name.clone(),
                        unit,
                        value,
                    });
                }
            }
        }
        let mut lines = Vec::new();
        for (labels, entries) in groups {
            for chunk in pack(entries) {
                lines.push(self.line(&labels, &chunk, timestamp_ms));
            }
        }
        lines
    }

    /// The value(s) to write for one series, updating the state. A histogram with more than 100
    /// occupied buckets gives several values (written on separate lines).
    fn values(&mut self, key: (String, Labels), kind: Kind, reading: &Reading) -> Vec<Value> {
        match (kind, reading) {
            (Kind::Gauge, Reading::Scalar(v)) => finite(*v).map(|v| json!(v)).into_iter().collect(),
            (_, Reading::Scalar(total)) => {
                let before = match self.previous.get(&key) {
                    Some(Previous::Count(c)) => *c,
                    _ => 0.0,
                };
                self.previous.insert(key, Previous::Count(*total));
                // A smaller total means the counter was reset: all of it is new.
                let delta = if *total >= before {
                    total - before
                } else {
                    *total
                };
                finite(delta).map(|d| json!(d)).into_iter().collect()
            }
            (_, Reading::Histogram { buckets }) => {
                let cumulative: Vec<f64> = buckets.iter().map(|(_, c)| *c).collect();
                let before = match self.previous.get(&key) {
                    Some(Previous::Buckets(b)) if b.len() == cumulative.len() => b.clone(),
                    _ => vec![0.0; cumulative.len()],
                };
                self.previous
                    .insert(key, Previous::Buckets(cumulative.clone()));
                let (values, counts) = distribution(buckets, &before);
                values
                    .chunks(MAX_VALUES)
                    .zip(counts.chunks(MAX_VALUES))
                    .map(|(v, c)| json!({"Values": v, "Counts": c}))
                    .collect()
            }
        }
    }

    fn line(&self, labels: &Labels, entries: &[Entry], timestamp_ms: u64) -> String {
        let mut dimension_set: Vec<&str> = Vec::new();
        let mut root = Map::new();
        for (key, value) in self.config.dimensions.iter().chain(labels) {
            dimension_set.push(key);
            // A dimension value must not be empty.
            let value = if value.is_empty() { "none" } else { value };
            root.insert(key.clone(), json!(value));
        }
        let metrics: Vec<Value> = entries
            .iter()
            .map(|e| json!({"Name": e.name, "Unit": e.unit}))
            .collect();
        for e in entries {
            root.insert(e.name.clone(), e.value.clone());
        }
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.config.namespace,
                    "Dimensions": [dimension_set],
                    "Metrics": metrics,
                }],
            }),
        );
        Value::Object(root).to_string()
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Bucket increases since `before` as (value, count) pairs, occupied buckets only. A bucket's
/// observations are written at its upper bound (so a percentile reads "at most"); the `+Inf`
/// bucket's at the largest finite bound.
fn distribution(buckets: &[(f64, f64)], before: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut values = Vec::new();
    let mut counts = Vec::new();
    let mut below = 0.0;
    let mut last_finite = 0.0;
    for (i, (bound, cumulative)) in buckets.iter().enumerate() {
        let increase = (cumulative - before.get(i).copied().unwrap_or(0.0)).max(0.0);
        let in_bucket = increase - below;
        below = increase;
        let value = if bound.is_finite() {
            last_finite = *bound;
            *bound
        } else {
            last_finite
        };
        if in_bucket > 0.0 {
            values.push(value);
            counts.push(in_bucket);
        }
    }
    (values, counts)
}

/// Splits one label set's entries into lines: at most 100 metrics each, and a metric name at
/// most once per line.
fn pack(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut lines: Vec<Vec<Entry>> = Vec::new();
    for entry in entries {
        let free = lines.iter_mut().find(|line| {
            line.len() < MAX_METRICS_PER_LINE && line.iter().all(|e| e.name != entry.name)
        });
        match free {
            Some(line) => line.push(entry),
            None => lines.push(vec![entry]),
        }
    }
    lines
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The running EMF writer; `finish` writes the last lines. A no-op when EMF is off.
#[derive(Debug)]
pub struct EmfHandle {
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl EmfHandle {
    /// Stops the periodic flush and writes the figures since the last one.
    pub async fn finish(self) {
        if let Some((stop, task)) = self.running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// Starts writing the metrics of `telemetry` (the worker's or intake's) as EMF lines to
/// standard output when `[metrics] emf` is on.
pub fn spawn<P: Probe>(telemetry: Arc<P>, settings: &Settings) -> EmfHandle {
    match EmfConfig::from_settings(settings) {
        Some(config) => spawn_to(telemetry, config, Box::new(std::io::stdout())),
        None => EmfHandle { running: None },
    }
}

/// Starts writing EMF lines to `out` every `config.interval`, and once more on `finish`.
pub fn spawn_to<P: Probe>(
    telemetry: Arc<P>,
    config: EmfConfig,
    mut out: Box<dyn Write + Send>,
) -> EmfHandle {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let interval = config.interval;
    let mut emf = Emf::new(config);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stopped => true,
            };
            let lines = emf.lines(&telemetry.render_metrics(), now_ms());
            if let Err(e) = write_lines(&mut out, &lines) {
                tracing::warn!(error = %e, "cannot write EMF metrics to standard output");
            }
            if last {
                break;
            }
        }
    });
    EmfHandle {
        running: Some((stop, task)),
    }
}

/// Each line whole, then a flush, so log lines on the same stream never split one.
fn write_lines(out: &mut dyn Write, lines: &[String]) -> std::io::Result<()> {
    let mut buf = String::new();
    for line in lines {
        buf.push_str(line);
        buf.push('\n');
    }
    out.write_all(buf.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests;
