//! Events any adapter emits. Each event both logs and counts, in one `emit`, so the log and the
//! metric cannot drift apart (the worker's own events are in `worker::events`).

use crate::observe::metrics::Telemetry;

/// One AWS call made by an adapter, after the SDK's retries.
#[derive(Debug, Clone, Copy)]
pub struct AwsCall {
    pub service: &'static str,
    pub operation: &'static str,
    pub ok: bool,
}

impl AwsCall {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry
            .metrics
            .aws_call(self.service, self.operation, self.ok);
        if !self.ok {
            tracing::debug!(
                service = self.service,
                operation = self.operation,
                "AWS call failed"
            );
        }
    }
}

/// One entry of a batch call that failed on its own, although the call itself succeeded.
#[derive(Clone, Copy)]
pub struct BatchEntryFailed<'a> {
    pub service: &'static str,
    pub operation: &'static str,
    pub problem: &'a dyn std::fmt::Display,
}

impl BatchEntryFailed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry
            .metrics
            .batch_entry_failed(self.service, self.operation);
        tracing::warn!(
            service = self.service,
            operation = self.operation,
            problem = %self.problem,
            "batch entry failed"
        );
    }
}
