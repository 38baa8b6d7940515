//! Structured logs: JSON lines by default (CloudWatch Logs reads them as fields), pretty for a
//! terminal. `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

/// Crates whose TRACE events print whole HTTP requests and responses, which carry registration
/// tokens (the ResolveCustomer request, SQS receive responses). Those events are dropped whatever
/// the filter says, so no log level can leak a token.
const WIRE_LOGGING_CRATES: [&str; 4] = ["aws_smithy", "aws_sdk", "hyper", "h2"];

/// Installs the global subscriber. Later calls are ignored, so tests and the binary can both call it.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let no_wire = filter_fn(|meta| {
        !(*meta.level() == Level::TRACE
            && WIRE_LOGGING_CRATES
                .iter()
                .any(|c| meta.target().starts_with(c)))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(no_wire))
        .try_init();
}
