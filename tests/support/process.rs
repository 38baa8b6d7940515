//! The real `mp-resolver run` binary as a child process, as ECS runs it: configured by environment
//! variables, stopped by signals, its output captured so tests can look for leaked tokens.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct WorkerProcess {
    child: Child,
    pub pid: u32,
    output: Arc<Mutex<String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl WorkerProcess {
    pub fn spawn(env: Vec<(String, String)>) -> Self {
        Self::spawn_command(&["run"], env)
    }

    /// Any subcommand (`intake`, ...), configured the same way.
    pub fn spawn_command(args: &[&str], env: Vec<(String, String)>) -> Self {
        Self::spawn_program(env!("CARGO_BIN_EXE_mp-resolver"), args, env)
    }

    /// Another build of the binary (the benches run the release one).
    pub fn spawn_program(program: &str, args: &[&str], env: Vec<(String, String)>) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mp-resolver");
        let pid = child.id().expect("pid");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = output.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
                out.push_str(&line);
                out.push('\n');
            }
        });
        WorkerProcess {
            child,
            pid,
            output,
            reader: Some(reader),
        }
    }

    /// Sends a signal by the process's own id: "-TERM", "-INT", "-KILL".
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.pid);
    }

    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker {} did not exit within {limit:?}", self.pid))
            .expect("wait for the worker");
        if let Some(reader) = self.reader.take() {
            let _ = reader.await;
        }
        status
    }

    /// Everything the process wrote to standard error so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}
