//! `mp-resolver intake` in-process on free ports, for the HTTP and browser tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mp_resolver::config::Settings;
use mp_resolver::intake::telemetry::IntakeTelemetry;
use mp_resolver::intake::Intake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Fixture;

/// A sign-up page with a query and a fragment of its own, both of which must survive.
pub const REGISTRATION: &str = "https://seller.example/signup?plan=gold&ref=a%20b#form";

pub struct RunningIntake {
    pub base: String,
    pub admin: SocketAddr,
    pub telemetry: Arc<IntakeTelemetry>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningIntake {
    pub async fn start(sqs: aws_sdk_sqs::Client, settings: &Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin = admin_listener.local_addr().unwrap();
        let intake = Intake::new(sqs, settings).expect("intake settings");
        let telemetry = intake.telemetry().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(intake.run(listener, admin_listener, async {
            let _ = stopped.await;
        }));
        RunningIntake {
            base,
            admin,
            telemetry,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        mp_resolver::observe::admin::http_get(self.admin, path)
            .await
            .expect("admin listener answers")
    }

    /// The fulfillment listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("listener address")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

pub fn intake_settings(fx: &Fixture, edit: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = fx.settings.clone();
    settings.intake.registration_url = REGISTRATION.to_owned();
    settings.intake.readiness_interval_secs = 1;
    edit(&mut settings);
    settings
}

/// How a slow client holds its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drip {
    /// Sends a complete request head, then the body a byte at a time.
    Body,
    /// Sends the request head a byte at a time.
    Headers,
}

/// Clients that open connections to intake and trickle a fulfillment POST into them, a byte
/// every `every`, each from its own `X-Forwarded-For` address (one of nine). When the server
/// answers or closes, the client connects again, until stopped: the attack keeps its size.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    /// Requests whose head went out complete (`Drip::Body` clients), over the whole attack.
    pub heads_sent: Arc<AtomicUsize>,
    /// Connections the server answered or closed, over the whole attack.
    pub cut_off: Arc<AtomicUsize>,
    /// Attackers the server has cut off at least once: a header trickler is cut more often than a
    /// body trickler, so `cut_off` alone does not say that every attacker was.
    pub attackers_cut_off: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl SlowClients {
    pub fn start(target: SocketAddr, clients: &[(Drip, usize)], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (open, heads_sent, cut_off, attackers_cut_off) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0;
        for &(drip, count) in clients {
            for _ in 0..count {
                n += 1;
                let head = format!(
                    "POST / HTTP/1.1\r\nhost: intake\r\n\
                     content-type: application/x-www-form-urlencoded\r\n\
                     content-length: 1000\r\nx-forwarded-for: 198.51.100.{}\r\n\r\n",
                    n % 9 + 1
                );
                let counters = (open.clone(), heads_sent.clone(), cut_off.clone());
                let attackers_cut_off = attackers_cut_off.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    let mut cut_before = false;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(stream) = TcpStream::connect(target).await else {
                            tokio::time::sleep(every).await;
                            continue;
                        };
                        counters.0.fetch_add(1, Ordering::Relaxed);
                        let _open = Decrement(counters.0.clone());
                        trickle(stream, drip, head.as_bytes(), every, &counters.1).await;
                        counters.2.fetch_add(1, Ordering::Relaxed);
                        if !std::mem::replace(&mut cut_before, true) {
                            attackers_cut_off.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
        SlowClients {
            stop,
            open,
            heads_sent,
            cut_off,
            attackers_cut_off,
            tasks,
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.shutdown().await;
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Trickles one request until the server answers, closes, or resets the connection.
async fn trickle(
    mut stream: TcpStream,
    drip: Drip,
    head: &[u8],
    every: Duration,
    heads_sent: &AtomicUsize,
) {
    let (mut reader, mut writer) = stream.split();
    let mut pending: Vec<u8> = match drip {
        Drip::Body => {
            if writer.write_all(head).await.is_err() {
                return;
            }
            heads_sent.fetch_add(1, Ordering::Relaxed);
            vec![b'x'; 1000]
        }
        Drip::Headers => head.to_vec(),
    };
    pending.reverse();
    let mut answer = [0u8; 512];
    while let Some(byte) = pending.pop() {
        tokio::select! {
            // Any answer (a 408, a close) ends this request.
            _ = reader.read(&mut answer) => return,
            _ = tokio::time::sleep(every) => {
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = reader.read(&mut answer).await;
}
