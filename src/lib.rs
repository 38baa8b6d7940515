//! `mp-resolver`: turns AWS Marketplace registration tokens from an SQS queue into resolved customers
//! published on an SNS topic, and retires tokens that can never resolve to a dead-letter queue.
//!
//! The binary (`src/main.rs`) only wires; everything it runs lives here so the tests drive the same code.

pub mod admin;
pub mod aws;
pub mod batch;
pub mod config;
pub mod emulator;
pub mod lease;
pub mod logging;
pub mod message;
pub mod ops;
pub mod pause;
pub mod publish;
pub mod queue;
pub mod ratelimit;
pub mod resolve;
pub mod retry;
pub mod telemetry;
pub mod worker;
