//! `mp-resolver`: turns AWS Marketplace registration tokens from an SQS queue into resolved customers
//! published on an SNS topic, and retires tokens that can never resolve to a dead-letter queue.
//!
//! The binary (`src/main.rs`) only wires; everything it runs lives here so the tests drive the same code.

pub mod aws;
pub mod cache;
pub mod config;
pub mod contract;
pub mod emulator;
pub mod intake;
pub mod observe;
pub mod ops;
pub mod store;
pub mod worker;
