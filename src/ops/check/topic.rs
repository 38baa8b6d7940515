//! Checks of the SNS topic: it exists, and its ARN and its FifoTopic attribute agree.

use std::collections::HashMap;

use super::{fix_for, Check, CheckResult};
use crate::aws::error::{AwsFailure, Problem};

pub(super) fn topic_reachable(
    arn: &str,
    topic: &Result<HashMap<String, String>, AwsFailure>,
) -> CheckResult {
    match topic {
        Ok(attrs) => CheckResult::pass(
            Check::Topic,
            format!(
                "{arn} exists ({} confirmed subscription(s))",
                attrs
                    .get("SubscriptionsConfirmed")
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
        ),
        Err(failure) => {
            let what = match failure.problem {
                Problem::NotFound => "does not exist",
                Problem::Denied => "is not readable with these credentials",
                Problem::Credentials => "could not be read: no usable AWS credentials",
                Problem::Unreachable => "could not be reached",
                Problem::Other => "could not be read",
            };
            CheckResult::fail(
                Check::Topic,
                format!("{arn} {what} ({failure})"),
                fix_for(
                    failure,
                    "create the topic, or set MPR_TOPIC_ARN to its ARN (`aws sns list-topics` lists them)"
                        .to_owned(),
                    "allow sns:GetTopicAttributes on the topic for the identity running `check` (the \
                     operator policy in deploy/iam/ has it; the worker itself needs only sns:Publish)"
                        .to_owned(),
                    "SNS",
                ),
            )
        }
    }
}

pub(super) fn topic_fifo(arn: &str, attrs: Option<&HashMap<String, String>>) -> CheckResult {
    let Some(attrs) = attrs else {
        return CheckResult::skip(Check::TopicFifo, "the topic");
    };
    let by_arn = arn.ends_with(".fifo");
    let by_attribute = attrs
        .get("FifoTopic")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match (by_arn, by_attribute) {
        (true, true) => CheckResult::pass(
            Check::TopicFifo,
            "FIFO topic: events carry MessageGroupId = customerAWSAccountId and MessageDeduplicationId = eventId",
        ),
        (false, false) => CheckResult::pass(Check::TopicFifo, "standard topic"),
        (true, false) => CheckResult::fail(
            Check::TopicFifo,
            "the ARN ends in .fifo, so the worker publishes with MessageGroupId and \
             MessageDeduplicationId, but the topic says it is not FIFO (FifoTopic is not true) and \
             would refuse those publishes",
            "use a FIFO topic (created with FifoTopic=true, name ending in .fifo), or a standard topic \
             whose name does not end in .fifo, and set MPR_TOPIC_ARN to it",
        ),
        (false, true) => CheckResult::fail(
            Check::TopicFifo,
            "the topic is FIFO (FifoTopic=true) but its ARN does not end in .fifo, so the worker \
             would publish without the MessageGroupId a FIFO topic requires",
            "set MPR_TOPIC_ARN to the topic's exact ARN (FIFO topic ARNs end in .fifo)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::Outcome;

    #[test]
    fn topic_fifo_compares_arn_and_attribute() {
        let attrs = |fifo: &str| HashMap::from([("FifoTopic".to_owned(), fifo.to_owned())]);
        let arn = "arn:aws:sns:us-east-1:1:t";
        let fifo_arn = "arn:aws:sns:us-east-1:1:t.fifo";
        assert_eq!(
            topic_fifo(arn, Some(&HashMap::new())).outcome,
            Outcome::Pass
        );
        assert_eq!(
            topic_fifo(fifo_arn, Some(&attrs("true"))).outcome,
            Outcome::Pass
        );
        assert_eq!(
            topic_fifo(fifo_arn, Some(&attrs("false"))).outcome,
            Outcome::Fail
        );
        assert_eq!(topic_fifo(arn, Some(&attrs("true"))).outcome, Outcome::Fail);
        assert_eq!(topic_fifo(arn, None).outcome, Outcome::Skip);
    }
}
