//! The lifecycle queue and the Marketplace clients' identity: the keys issue #14 added, and their
//! checks.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};

/// How the Marketplace clients (ResolveCustomer, GetEntitlements) authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceSettings {
    /// A role in the seller account to assume for the Marketplace calls; empty = the default
    /// credential chain, like SQS and SNS.
    pub role_arn: String,
    /// The external id the role's trust policy asks for; empty = none.
    pub external_id: String,
}

impl MarketplaceSettings {
    /// The role to assume, when one is configured.
    pub fn role(&self) -> Option<(&str, Option<&str>)> {
        let role = self.role_arn.trim();
        let external_id = self.external_id.trim();
        (!role.is_empty()).then_some((role, (!external_id.is_empty()).then_some(external_id)))
    }
}

pub(super) fn validate(s: &Settings) -> Result<(), ConfigError> {
    let (queue, dlq) = (&s.lifecycle_queue_url, &s.lifecycle_dlq_url);
    for (key, url) in [("lifecycle_queue_url", queue), ("lifecycle_dlq_url", dlq)] {
        let is_url = url.starts_with("https://") || url.starts_with("http://");
        if !(url.is_empty() || is_url) {
            return Err(invalid(key, "must be an SQS queue URL (https://...)"));
        }
    }
    if !queue.is_empty() {
        if dlq.is_empty() {
            return Err(invalid(
                "lifecycle_dlq_url",
                "is required when lifecycle_queue_url is set: where unrecognized notifications go",
            ));
        }
        if [&s.queue_url, &s.dlq_url, dlq].contains(&queue) {
            return Err(invalid(
                "lifecycle_queue_url",
                "must be its own queue, not the token queue or a dead-letter queue",
            ));
        }
        if [&s.queue_url, &s.dlq_url].contains(&dlq) {
            return Err(invalid(
                "lifecycle_dlq_url",
                "must be its own queue, not the token queue or its dead-letter queue",
            ));
        }
    }

    let m = &s.marketplace;
    let role = m.role_arn.trim();
    let is_role_arn =
        role.starts_with("arn:") && role.contains(":iam::") && role.contains(":role/");
    if !(role.is_empty() || is_role_arn) {
        return Err(invalid(
            "marketplace.role_arn",
            "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
        ));
    }
    let external_id = m.external_id.trim();
    if !external_id.is_empty() {
        if role.is_empty() {
            return Err(invalid(
                "marketplace.external_id",
                "is only used with marketplace.role_arn, which is empty",
            ));
        }
        // STS: 2 to 1224 characters of [\w+=,.@:/-].
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
        if external_id.len() < 2 || external_id.len() > 1224 || !external_id.chars().all(allowed) {
            return Err(invalid(
                "marketplace.external_id",
                "must be 2 to 1224 characters of letters, digits and _+=,.@:/-",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{load, ConfigError, Sources};

    const QUEUE: &str = "http://127.0.0.1:4566/000000000000/tokens";
    const DLQ: &str = "http://127.0.0.1:4566/000000000000/tokens-dlq";
    const LIFECYCLE: &str = "http://127.0.0.1:4566/000000000000/lifecycle";
    const LIFECYCLE_DLQ: &str = "http://127.0.0.1:4566/000000000000/lifecycle-dlq";
    const ROLE: &str = "arn:aws:iam::111122223333:role/mp-resolver-marketplace";

    fn load_env(extra: &[(&str, &str)]) -> Result<crate::config::Settings, ConfigError> {
        let mut env: Vec<(String, String)> = [
            ("MPR_QUEUE_URL", QUEUE),
            ("MPR_DLQ_URL", DLQ),
            (
                "MPR_TOPIC_ARN",
                "arn:aws:sns:us-east-1:000000000000:customers",
            ),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("UNRELATED".into(), "x".into()));
        load(&Sources {
            env,
            ..Sources::default()
        })
        .map(|l| l.settings)
    }

    #[test]
    fn lifecycle_and_role_are_off_by_default() {
        let s = load_env(&[]).unwrap();
        assert!(s.lifecycle_queue_url.is_empty() && s.lifecycle_dlq_url.is_empty());
        assert_eq!(s.marketplace.role(), None);
    }

    #[test]
    fn lifecycle_queues_and_role_from_the_environment() {
        let s = load_env(&[
            ("MPR_LIFECYCLE_QUEUE_URL", LIFECYCLE),
            ("MPR_LIFECYCLE_DLQ_URL", LIFECYCLE_DLQ),
            ("MPR_MARKETPLACE__ROLE_ARN", ROLE),
            ("MPR_MARKETPLACE__EXTERNAL_ID", "seller-42"),
        ])
        .unwrap();
        assert_eq!(s.lifecycle_queue_url, LIFECYCLE);
        assert_eq!(s.lifecycle_dlq_url, LIFECYCLE_DLQ);
        assert_eq!(s.marketplace.role(), Some((ROLE, Some("seller-42"))));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("MPR_LIFECYCLE_QUEUE_URL", LIFECYCLE)],
                "lifecycle_dlq_url",
            ),
            (
                &[
                    ("MPR_LIFECYCLE_QUEUE_URL", "lifecycle"),
                    ("MPR_LIFECYCLE_DLQ_URL", LIFECYCLE_DLQ),
                ],
                "lifecycle_queue_url",
            ),
            (
                &[
                    ("MPR_LIFECYCLE_QUEUE_URL", QUEUE),
                    ("MPR_LIFECYCLE_DLQ_URL", LIFECYCLE_DLQ),
                ],
                "lifecycle_queue_url",
            ),
            (
                &[
                    ("MPR_LIFECYCLE_QUEUE_URL", LIFECYCLE),
                    ("MPR_LIFECYCLE_DLQ_URL", DLQ),
                ],
                "lifecycle_dlq_url",
            ),
            (
                &[
                    ("MPR_LIFECYCLE_QUEUE_URL", LIFECYCLE),
                    ("MPR_LIFECYCLE_DLQ_URL", LIFECYCLE),
                ],
                "lifecycle_queue_url",
            ),
            (
                &[("MPR_MARKETPLACE__ROLE_ARN", "mp-role")],
                "marketplace.role_arn",
            ),
            (
                &[(
                    "MPR_MARKETPLACE__ROLE_ARN",
                    "arn:aws:iam::111122223333:user/me",
                )],
                "marketplace.role_arn",
            ),
            (
                &[("MPR_MARKETPLACE__EXTERNAL_ID", "seller-42")],
                "marketplace.external_id",
            ),
            (
                &[
                    ("MPR_MARKETPLACE__ROLE_ARN", ROLE),
                    ("MPR_MARKETPLACE__EXTERNAL_ID", "x"),
                ],
                "marketplace.external_id",
            ),
            (
                &[
                    ("MPR_MARKETPLACE__ROLE_ARN", ROLE),
                    ("MPR_MARKETPLACE__EXTERNAL_ID", "has space"),
                ],
                "marketplace.external_id",
            ),
        ];
        for (env, key) in cases {
            let err = load_env(env).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{env:?}: {err}");
        }
    }
}
