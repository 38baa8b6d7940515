//! Adapters for the AWS services the worker talks to: one module per service, each turning SDK
//! calls and errors into the crate's own types.

pub mod clients;
pub mod entitlement;
pub mod error;
pub mod metering;
pub mod sns;
pub mod sqs;

pub use clients::Clients;

/// Whether a queue URL or topic ARN names a FIFO queue or topic (SQS and SNS require the `.fifo`
/// suffix for those): the one FIFO test.
pub fn is_fifo(url_or_arn: &str) -> bool {
    url_or_arn.trim_end_matches('/').ends_with(".fifo")
}
