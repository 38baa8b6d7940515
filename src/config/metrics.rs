//! `[metrics]`: CloudWatch Embedded Metric Format output. Self-contained so it moves with the
//! rest of the configuration's pieces.

use serde::{Deserialize, Serialize};

use super::validate::check_range;
use super::{invalid, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Write the metrics as CloudWatch EMF lines to standard output.
    pub emf: bool,
    pub emf_interval_secs: u64,
    pub namespace: String,
    /// Value of the `Service` dimension; empty leaves the dimension out.
    pub service: String,
    /// Add a `QueueName` dimension (the token queue's name, from `queue_url`).
    pub queue_name_dimension: bool,
}

impl MetricsSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "metrics.emf_interval_secs",
            self.emf_interval_secs,
            1,
            3_600,
        )?;
        // CloudWatch: 1 to 255 characters of letters, digits and . - _ / # : and space; the
        // AWS/ prefix is reserved for AWS services.
        let ns = &self.namespace;
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
        if ns.is_empty() || ns.len() > 255 || !ns.chars().all(allowed) || ns.starts_with("AWS/") {
            return Err(invalid(
                "metrics.namespace",
                format!(
                    "{ns:?} is not a CloudWatch namespace (1 to 255 of letters, digits, . - _ / # : and space, not starting with AWS/)"
                ),
            ));
        }
        // A dimension value is 1 to 1024 characters; empty means no Service dimension.
        if self.service.len() > 1024 {
            return Err(invalid(
                "metrics.service",
                "is longer than 1024 characters (CloudWatch's limit for a dimension value)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MetricsSettings {
        MetricsSettings {
            emf: true,
            emf_interval_secs: 60,
            namespace: "MpResolver".into(),
            service: "svc".into(),
            queue_name_dimension: true,
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(settings().validate().is_ok());
        type Spoil = fn(&mut MetricsSettings);
        let cases: [(&str, Spoil); 5] = [
            ("metrics.emf_interval_secs", |m| m.emf_interval_secs = 0),
            ("metrics.namespace", |m| m.namespace.clear()),
            ("metrics.namespace", |m| m.namespace = "AWS/SQS".into()),
            ("metrics.namespace", |m| m.namespace = "bad\"name".into()),
            ("metrics.service", |m| m.service = "x".repeat(1025)),
        ];
        for (key, spoil) in cases {
            let mut m = settings();
            spoil(&mut m);
            let error = m.validate().expect_err(key).to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains(&format!("MPR_{}", key.replace('.', "__").to_uppercase())));
        }
        let mut no_service = settings();
        no_service.service.clear();
        assert!(no_service.validate().is_ok(), "empty service: no dimension");
    }
}
