//! `mp-resolver metrics`: the catalogue of every metric `run` and `intake` emit, as CloudWatch
//! (EMF) names with kind, unit and label dimensions. `scripts/deploy-check.sh` compares it with
//! the metrics the deployment's dashboards and alarms name.

use std::time::Duration;

use crate::intake::telemetry::IntakeTelemetry;
use crate::observe::admin::Probe;
use crate::observe::emf::{parse, Family};
use crate::observe::metrics::Telemetry;

/// The metrics `run` and `intake` emit, as EMF names with kind and unit (what
/// `mp-resolver metrics` prints and the deployment check compares the dashboards with).
pub fn catalogue() -> Vec<Family> {
    let t = Telemetry::new(Duration::from_secs(60));
    // A labelled family appears in the registry text only once it has a series.
    let m = &t.metrics;
    m.outcome("published");
    m.dead_lettered("invalid_token");
    m.resolve_attempt("expired", false, Duration::ZERO);
    m.aws_call("sqs", "ReceiveMessage", true);
    m.batch_entry_failed("sqs", "DeleteMessageBatch");
    m.lifecycle_event("subscribe-success", "granted");
    m.store_call("write", "ok", Duration::ZERO);
    m.fleet_rate("read", "adopted");
    m.usage_event("counted");
    m.usage_record_metered("success");
    m.usage_hours(0, 0);
    let intake = IntakeTelemetry::new();
    intake.request("accepted");
    let mut families = parse(&t.render());
    families.extend(parse(&intake.render_metrics()));
    families
}

/// `mp-resolver metrics`: one line per metric, `name<TAB>kind<TAB>unit<TAB>label,names`.
pub fn catalogue_text() -> String {
    catalogue()
        .iter()
        .map(|f| {
            format!(
                "{}\t{}\t{}\t{}\n",
                f.name,
                f.kind.as_str(),
                f.unit(),
                f.label_names().join(",")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_every_family_with_its_unit() {
        let names: Vec<(String, &str)> = catalogue()
            .iter()
            .map(|f| (f.name.clone(), f.unit()))
            .collect();
        for want in [
            ("mpr_messages_received", "Count"),
            ("mpr_outcomes", "Count"),
            ("mpr_dead_letters", "Count"),
            ("mpr_resolve_duration_seconds", "Seconds"),
            ("mpr_resolve_rate_limit", "Count/Second"),
            ("mpr_paused", "None"),
            ("mpr_held_messages", "Count"),
            ("mpr_lifecycle_events", "Count"),
            ("mpr_store_calls", "Count"),
            ("mpr_fleet_rate", "Count"),
            ("mpr_store_duration_seconds", "Seconds"),
            ("mpr_store_write_units", "Count"),
            ("mpr_usage_events", "Count"),
            ("mpr_usage_records_metered", "Count"),
            ("mpr_usage_hours_pending", "Count"),
            ("mpr_usage_oldest_unmetered_hour_age_seconds", "Seconds"),
            ("mpr_intake_requests", "Count"),
            ("mpr_intake_send_duration_seconds", "Seconds"),
            ("mpr_intake_in_flight", "Count"),
        ] {
            assert!(
                names.contains(&(want.0.to_owned(), want.1)),
                "{want:?} in {names:?}"
            );
        }
    }

    #[test]
    fn catalogue_has_every_registered_family() {
        // The registrations in metrics.rs and intake/telemetry.rs (their code, not their tests): a
        // family added there without a series in `catalogue` would be missing from the dashboard check.
        let mut registered: Vec<&str> = Vec::new();
        for source in [
            include_str!("../observe/metrics.rs"),
            include_str!("../intake/telemetry.rs"),
        ] {
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            registered.extend(
                code.split('"')
                    .filter(|s| s.starts_with("mpr_") && !s.contains(' ')),
            );
        }
        assert!(registered.len() >= 17, "{registered:?}");
        let names: Vec<String> = catalogue().into_iter().map(|f| f.name).collect();
        for name in registered {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from catalogue()"
            );
        }
    }
}
