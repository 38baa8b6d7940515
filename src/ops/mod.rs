//! Operator tools: `check` (preflight), `enqueue` (put tokens on the queue), `dlq` (list and
//! redrive dead-letters), `customers` (read the customer registry) and `metrics` (the catalogue of
//! emitted metrics), plus the configuration
//! loading and first-run explanation they share.
//!
//! Each tool is a library function that takes the AWS clients and plain options and returns a
//! report struct, so the tests drive exactly what the command line prints. `cli` turns command-line
//! arguments into those calls and the reports into human or JSON output and an exit code.
//!
//! Operator guide: `docs/operations.md`.

pub mod check;
pub mod cli;
pub mod customers;
pub mod dlq;
pub mod enqueue;
mod letter;
pub mod load;
pub mod metrics;
mod move_task;
pub mod output;
pub mod progress;
pub mod redrive;
pub mod usage;

/// Exit code when a check fails or part of a batch operation failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when the input itself is wrong (a malformed token for `enqueue`), sysexits.h EX_DATAERR.
pub const EXIT_DATA: u8 = 65;
