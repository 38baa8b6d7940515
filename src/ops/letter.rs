//! The reason a dead-letter is grouped and filtered by in `dlq list` and `dlq redrive --reason`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::contract::DeadLetterReason;

/// The group of dead-letters without `mpr.reason`: moved by the token queue's redrive policy
/// (`maxReceiveCount` exceeded), not retired by the worker.
pub const REDRIVE_POLICY: &str = "redrive_policy";

/// What a dead-letter is grouped and filtered by: the worker's `mpr.reason`, or the redrive policy
/// for a message without one. Prints as, and parses from, the names `dlq` shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LetterReason {
    /// Retired by the worker, with this `mpr.reason`.
    Worker(DeadLetterReason),
    /// No `mpr.reason`: moved by the token queue's redrive policy (`maxReceiveCount` exceeded).
    RedrivePolicy,
    /// An `mpr.reason` this version does not know (written by a newer one): shown as it is, and
    /// not accepted by `--reason`.
    Unknown(String),
}

impl LetterReason {
    /// Every reason `--reason` accepts.
    pub fn known() -> impl Iterator<Item = LetterReason> {
        DeadLetterReason::ALL
            .into_iter()
            .map(LetterReason::Worker)
            .chain([LetterReason::RedrivePolicy])
    }

    /// From a dead-letter's `mpr.reason` attribute, if it has one.
    pub fn from_attribute(value: Option<&str>) -> Self {
        match value {
            None => LetterReason::RedrivePolicy,
            Some(v) => v.parse().map_or_else(
                |_| LetterReason::Unknown(v.to_owned()),
                LetterReason::Worker,
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LetterReason::Worker(r) => r.as_str(),
            LetterReason::RedrivePolicy => REDRIVE_POLICY,
            LetterReason::Unknown(s) => s,
        }
    }
}

impl From<DeadLetterReason> for LetterReason {
    fn from(reason: DeadLetterReason) -> Self {
        LetterReason::Worker(reason)
    }
}

impl fmt::Display for LetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LetterReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// For `--reason`: one of [`LetterReason::known`], or an error listing them.
impl FromStr for LetterReason {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == REDRIVE_POLICY {
            return Ok(LetterReason::RedrivePolicy);
        }
        value.parse().map(LetterReason::Worker).map_err(|_| {
            let known: Vec<String> = LetterReason::known().map(|r| r.to_string()).collect();
            format!("unknown reason; one of: {}", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_validated() {
        assert_eq!(
            "invalid_token".parse::<LetterReason>(),
            Ok(LetterReason::Worker(DeadLetterReason::InvalidToken))
        );
        assert_eq!(
            REDRIVE_POLICY.parse::<LetterReason>(),
            Ok(LetterReason::RedrivePolicy)
        );
        assert_eq!(
            "unpublished".parse::<LetterReason>(),
            Ok(LetterReason::Worker(DeadLetterReason::Unpublished))
        );
        let err = "invalid".parse::<LetterReason>().unwrap_err();
        assert!(
            err.contains("expired_token") && err.contains("redrive_policy"),
            "{err}"
        );
        for known in LetterReason::known() {
            assert_eq!(known.to_string().parse::<LetterReason>(), Ok(known));
        }
    }

    #[test]
    fn an_unknown_attribute_is_kept_as_it_is() {
        assert_eq!(
            LetterReason::from_attribute(Some("from_the_future")).as_str(),
            "from_the_future"
        );
        assert_eq!(
            LetterReason::from_attribute(None),
            LetterReason::RedrivePolicy
        );
    }
}
