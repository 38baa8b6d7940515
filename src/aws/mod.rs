//! Adapters for the AWS services the worker talks to: one module per service, each turning SDK
//! calls and errors into the crate's own types.

pub mod clients;
pub mod entitlement;
pub mod error;
pub mod metering;
pub mod sns;
pub mod sqs;
pub mod sqs_ops;

pub use clients::Clients;
