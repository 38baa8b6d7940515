//! Progress of the long operator commands (`enqueue` from standard input, `dlq list`,
//! `dlq redrive`): a bar with counts and rate on standard error when it is a terminal and the
//! output is for a human; nothing at all when standard error is piped or with `--json`.
//!
//! The command (`cli`) creates the `Progress` and runs the library call inside it; the library
//! loops report with the free functions [`advance`] and [`set_total`], which do nothing outside
//! such a run. So the library functions keep their signatures and tests call them unchanged.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::output::Format;

tokio::task_local! {
    static CURRENT: Progress;
}

/// What the bar counts, e.g. ("enqueue", "tokens").
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub command: &'static str,
    pub unit: &'static str,
}

#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    job: Job,
}

impl Progress {
    /// A bar on standard error, or nothing when it is not a terminal or the output is JSON.
    pub fn on_stderr(format: Format, job: Job, total: Option<u64>) -> Self {
        let shown = format == Format::Human && std::io::stderr().is_terminal();
        let bar = shown.then(|| {
            // Styled while hidden, so the first thing drawn is already the right line.
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden())
                .with_style(style(total.is_some()))
                .with_prefix(job.command)
                .with_message(job.unit);
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.tick();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, job }
    }

    /// Runs `work` with this progress as the one [`advance`] and [`set_total`] report to, then
    /// replaces the bar with one line of totals: `enqueue: 250 tokens in 6.1s (41.0/s)`.
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        let bar = self.bar.clone();
        let job = self.job;
        let out = CURRENT.scope(self, work).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
            let secs = bar.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                bar.position() as f64 / secs
            } else {
                0.0
            };
            eprintln!(
                "{}: {} {} in {secs:.1}s ({rate:.1}/s)",
                job.command,
                bar.position(),
                job.unit,
            );
        }
        out
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_style(style(true));
            bar.set_message(self.job.unit);
        }
    }
}

fn style(with_total: bool) -> ProgressStyle {
    let template = if with_total {
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({rate}, {elapsed})"
    } else {
        "{prefix} {spinner} {pos} {msg} ({rate}, {elapsed})"
    };
    // The templates are constants; the fallback only guards against a typo in them.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            },
        )
        .progress_chars("=> ")
}

/// `n` more done, in the command's progress if there is one.
pub fn advance(n: usize) {
    let _ = CURRENT.try_with(|p| p.advance(u64::try_from(n).unwrap_or(u64::MAX)));
}

/// The total became known (e.g. the queue's approximate depth).
pub fn set_total(total: u64) {
    let _ = CURRENT.try_with(|p| p.set_total(total));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reporting_outside_a_run_or_when_hidden_does_nothing() {
        // No run: no panic, nothing to report to.
        advance(3);
        set_total(10);
        let job = Job {
            command: "enqueue",
            unit: "tokens",
        };
        let json = Progress::on_stderr(Format::Json, job, Some(5));
        assert!(json.bar.is_none(), "--json: never a bar");
        let answer = json
            .run(async {
                advance(1);
                7
            })
            .await;
        assert_eq!(answer, 7);
    }
}
