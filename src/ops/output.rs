//! Human output by default, one JSON document with `--json`: every report implements both, so the
//! two can never describe different results.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

impl Format {
    pub fn from_json_flag(json: bool) -> Self {
        if json {
            Format::Json
        } else {
            Format::Human
        }
    }
}

/// A report that can be shown to a person.
pub trait Render {
    fn human(&self) -> String;
}

/// The report as it is printed on standard output in `format`.
pub fn render<T: Render + Serialize>(report: &T, format: Format) -> String {
    match format {
        Format::Human => report.human(),
        Format::Json => {
            // Reports are plain strings, numbers and maps: serializing them cannot fail.
            let mut json = serde_json::to_string_pretty(report).unwrap_or_default();
            json.push('\n');
            json
        }
    }
}

pub fn print<T: Render + Serialize>(report: &T, format: Format) {
    print!("{}", render(report, format));
}

/// A fatal error as a JSON document, so a script reading stdout always gets one document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDocument<'a> {
    pub ok: bool,
    pub error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    /// `configuration`, `aws` or `input`.
    pub kind: &'a str,
    pub message: String,
    /// Environment variables that must be set (configuration errors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<&'a str>,
    /// Anything more the kind has, e.g. the refused tokens' fingerprints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl<'a> ErrorBody<'a> {
    pub fn new(kind: &'a str, message: String) -> Self {
        ErrorBody {
            kind,
            message,
            missing: Vec::new(),
            details: None,
        }
    }

    /// With `--json`, prints the error as the one document on standard output (the words for a
    /// person have gone to standard error already); nothing otherwise.
    pub fn print(self, format: Format) {
        if format == Format::Json {
            print(
                &ErrorDocument {
                    ok: false,
                    error: self,
                },
                Format::Json,
            );
        }
    }
}

impl Render for ErrorDocument<'_> {
    fn human(&self) -> String {
        format!("{}\n", self.error.message)
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`: two units are enough to tell old from new.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, secs) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    let _ = if days > 0 {
        write!(out, "{days}d {hours}h")
    } else if hours > 0 {
        write!(out, "{hours}h {minutes}m")
    } else if minutes > 0 {
        write!(out, "{minutes}m {secs}s")
    } else {
        write!(out, "{secs}s")
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_two_units() {
        assert_eq!(age(Duration::from_secs(12)), "12s");
        assert_eq!(age(Duration::from_secs(250)), "4m 10s");
        assert_eq!(age(Duration::from_secs(7_500)), "2h 5m");
        assert_eq!(
            age(Duration::from_secs(3 * 86_400 + 4 * 3_600 + 9)),
            "3d 4h"
        );
    }
}
