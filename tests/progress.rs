//! Progress bars of the long operator commands: shown on a terminal, never when standard error is
//! piped or with `--json`. The terminal is a real pseudo-terminal (util-linux `script`), the
//! queues LocalStack's.

mod support;

use std::collections::HashMap;
use std::process::Output;

use mp_resolver::emulator::TestToken;
use support::{Fixture, Topic};

const TOKENS: usize = 25;

fn tokens_file() -> tempfile_path::Path {
    tempfile_path::Path::new((0..TOKENS).map(|i| {
        TestToken::new("123456789012", "prod-abc")
            .customer(format!("progress-{i}"))
            .encode()
            .expect("valid test token")
    }))
}

/// A file of tokens, one per line, removed on drop.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);

    impl Path {
        pub fn new(lines: impl Iterator<Item = String>) -> Self {
            let path = std::env::temp_dir().join(format!(
                "mpr-progress-{}-{}.txt",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ));
            let text: String = lines.map(|l| l + "\n").collect();
            std::fs::write(&path, text).expect("write the tokens file");
            Path(path)
        }
    }

    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Runs `mp-resolver ARGS < stdin` with standard output and error on a pseudo-terminal; returns
/// what the terminal showed.
async fn on_terminal(fx: &Fixture, args: &str, stdin: &std::path::Path) -> String {
    let command = format!(
        "{} {args} < {}",
        env!("CARGO_BIN_EXE_mp-resolver"),
        stdin.display()
    );
    let out = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(fx.binary_env(&[]))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args}: {:?}\n{shown}", out.status);
    shown
}

/// Runs `mp-resolver ARGS < stdin` with standard output and error piped.
async fn piped(fx: &Fixture, args: &[&str], stdin: &std::path::Path) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-resolver"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(fx.binary_env(&[]))
        .stdin(std::fs::File::open(stdin).expect("tokens file"))
        .output()
        .await
        .expect("run mp-resolver");
    assert!(out.status.success(), "{args:?}: {out:?}");
    out
}

#[tokio::test]
async fn long_commands_show_progress_on_a_terminal_and_nothing_when_piped_or_json() {
    let fx = Fixture::new(Topic::Standard).await;
    let tokens = tokens_file();

    // enqueue from standard input, on a terminal: a bar with counts and rate.
    // Everything goes to a queue of its own, which `dlq` then walks as a dead-letter queue of
    // known depth.
    let dlq = &fx.extra_queue(false, HashMap::new()).await;
    let shown = on_terminal(&fx, &format!("enqueue --queue-url {dlq} -"), &tokens.0).await;
    assert!(
        shown.contains(&format!("/{TOKENS} tokens (")),
        "no progress bar on the terminal:\n{shown}"
    );
    assert!(
        shown.contains(&format!("enqueue: {TOKENS} tokens in ")) && shown.contains("/s)"),
        "no totals and rate on the terminal:\n{shown}"
    );
    assert!(
        shown.contains(&format!("enqueued {TOKENS} of {TOKENS}")),
        "{shown}"
    );

    // Piped: the report and nothing else.
    let out = piped(&fx, &["enqueue", "--queue-url", dlq, "-"], &tokens.0).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("tokens (") && !stderr.contains("/s)"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("enqueued {TOKENS} of {TOKENS}"))
    );

    // --json on a terminal: one JSON document, no bar.
    let shown = on_terminal(
        &fx,
        &format!("enqueue --queue-url {dlq} --json -"),
        &tokens.0,
    )
    .await;
    assert!(
        !shown.contains("tokens (") && !shown.contains("/s)"),
        "{shown}"
    );
    let document: serde_json::Value =
        serde_json::from_str(shown.trim()).unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!(document["sent"].as_array().map(Vec::len), Some(TOKENS));

    // The dead-letter queue now holds 3 x 25 messages.
    let all = 3 * TOKENS;
    let shown = on_terminal(&fx, &format!("dlq list --dlq-url {dlq}"), &tokens.0).await;
    assert!(shown.contains(&format!("/{all} messages (")), "{shown}");
    assert!(
        shown.contains(&format!("dlq list: {all} messages in ")),
        "{shown}"
    );
    let out = piped(&fx, &["dlq", "list", "--dlq-url", dlq], &tokens.0).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("messages (") && !stderr.contains("/s)"),
        "{stderr}"
    );

    let shown = on_terminal(&fx, &format!("dlq redrive --dlq-url {dlq}"), &tokens.0).await;
    assert!(
        shown.contains(&format!("dlq redrive: {all} moved in ")),
        "{shown}"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, all as u64);
}
