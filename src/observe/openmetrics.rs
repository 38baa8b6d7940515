//! The OpenMetrics text `/metrics` serves (prometheus-client's encoder), parsed back into
//! families and series, so other outputs (EMF) read exactly what Prometheus reads.

use std::collections::BTreeMap;

/// What a metric family is, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs of one series, in the order `/metrics` prints them.
pub type Labels = Vec<(String, String)>;

/// One series' value at the time of the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Scalar(f64),
    /// Cumulative bucket counts by upper bound (the last one `+Inf`).
    Histogram {
        buckets: Vec<(f64, f64)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name, which is also the EMF metric name (no `_total`/`_bucket` suffix).
    pub name: String,
    pub kind: Kind,
    pub series: BTreeMap<Labels, Reading>,
}

/// Parses the OpenMetrics text `Telemetry::render` produces into families, in registry order.
/// Lines that do not parse are skipped (the text is our own; a bad line loses one series, never
/// the flush).
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next().and_then(Kind::parse)) {
                families.push(Family {
                    name: name.to_owned(),
                    kind,
                    series: BTreeMap::new(),
                });
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((sample, mut labels, value)) = parse_sample(line) else {
            continue;
        };
        // A family's samples follow its TYPE line.
        let Some(family) = families
            .last_mut()
            .filter(|f| sample.starts_with(f.name.as_str()))
        else {
            continue;
        };
        let suffix = &sample[family.name.len()..];
        match (family.kind, suffix) {
            (Kind::Counter, "_total") | (Kind::Gauge, "") => {
                family.series.insert(labels, Reading::Scalar(value));
            }
            (Kind::Histogram, "_bucket") => {
                let Some(at) = labels.iter().position(|(k, _)| k == "le") else {
                    continue;
                };
                let (_, le) = labels.remove(at);
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse::<f64>() {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                };
                let entry = family.series.entry(labels).or_insert(Reading::Histogram {
                    buckets: Vec::new(),
                });
                if let Reading::Histogram { buckets } = entry {
                    buckets.push((bound, value));
                }
            }
            // _sum, _count and _created carry nothing the buckets do not.
            _ => {}
        }
    }
    families
}

/// `name{a="x",b="y"} 1.0` → (name, labels, value). Label values are unescaped.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(body) => parse_labels(body)?,
        None => (Vec::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// `a="x",b="y"} rest` → (labels, ` rest`).
fn parse_labels(body: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i + 1,
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                other => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end..];
    }
}
