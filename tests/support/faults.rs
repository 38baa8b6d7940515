//! A small TCP proxy that sits between the worker and a dependency (LocalStack, the emulator) and
//! injects network faults: a cut (every connection dropped, new ones refused), a black hole
//! (connections accepted, nothing answered), added latency, and connection resets. It listens on
//! 127.0.0.1 only and stops when dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Faults {
    cut: AtomicBool,
    black_hole: AtomicBool,
    latency_ms: AtomicU64,
    /// Connections accepted and passed on to the dependency.
    connections: AtomicU64,
    /// What the black hole swallowed on its way to the dependency, chunk by chunk.
    swallowed: Mutex<Vec<String>>,
}

pub struct FaultProxy {
    pub endpoint: String,
    faults: Arc<Faults>,
    /// Bumped to make every open connection close (a reset, or the start of a cut).
    generation: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<free port>` to `target` ("http://127.0.0.1:4566" or "127.0.0.1:4566").
    pub async fn start(target: &str) -> Self {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let faults = Arc::new(Faults::default());
        let (generation, _) = watch::channel(0u64);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target,
            faults.clone(),
            generation.clone(),
        ));
        FaultProxy {
            endpoint,
            faults,
            generation,
            accept_task,
        }
    }

    /// Drops every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.faults.cut.store(true, Ordering::SeqCst);
        self.reset_connections();
    }

    /// Swallows every byte in either direction, on open and new connections alike, until
    /// `restore`: requests hang without an answer until the client gives up. What was sent into it
    /// never reaches the dependency, even after `restore`. Ends a cut (new connections are
    /// accepted into the black hole), with no moment in between where a request gets through.
    pub fn black_hole(&self) {
        self.faults.black_hole.store(true, Ordering::SeqCst);
        self.faults.cut.store(false, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.faults.cut.store(false, Ordering::SeqCst);
        self.faults.black_hole.store(false, Ordering::SeqCst);
    }

    /// How many times `text` occurs in what the black hole swallowed on its way to the dependency
    /// (e.g. a batch entry's field).
    pub fn swallowed_occurrences(&self, text: &str) -> usize {
        self.faults
            .swallowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|chunk| chunk.matches(text).count())
            .sum()
    }

    /// How many chunks sent towards the dependency the black hole swallowed that contain `text`
    /// (e.g. an operation name).
    pub fn swallowed_containing(&self, text: &str) -> usize {
        self.faults
            .swallowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|chunk| chunk.contains(text))
            .count()
    }

    /// Delays every chunk forwarded in either direction.
    pub fn set_latency(&self, latency: Duration) {
        self.faults
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many connections clients have opened through the proxy (refused ones not counted).
    pub fn connections(&self) -> u64 {
        self.faults.connections.load(Ordering::SeqCst)
    }

    /// Closes every open connection (clients see a reset mid-request); new ones are accepted.
    pub fn reset_connections(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.reset_connections();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    faults: Arc<Faults>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if faults.cut.load(Ordering::SeqCst) {
            // Refused: closed before a byte is exchanged.
            drop(client);
            continue;
        }
        faults.connections.fetch_add(1, Ordering::SeqCst);
        let target = target.clone();
        let faults = faults.clone();
        let closed = generation.subscribe();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let mut closed_a = closed.clone();
            let mut closed_b = closed;
            tokio::select! {
                _ = pump(cr, uw, &faults, true) => {}
                _ = pump(ur, cw, &faults, false) => {}
                _ = closed_a.changed() => {}
                _ = closed_b.changed() => {}
            }
            // Dropping both halves closes both sockets.
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
    towards_dependency: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A cut is exact: its connections close when their task next runs, but a chunk read
        // before that (a request on a kept-alive connection) must not reach the other side.
        if faults.cut.load(Ordering::SeqCst) {
            return;
        }
        if faults.black_hole.load(Ordering::SeqCst) {
            if towards_dependency {
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                faults
                    .swallowed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(chunk);
            }
            continue;
        }
        let latency = faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
