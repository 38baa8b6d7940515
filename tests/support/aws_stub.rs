//! A stand-in AWS JSON endpoint on 127.0.0.1: it answers canned responses in order, as an AWS JSON
//! service does (`x-amzn-ErrorType` and `__type` on errors), and reports each request it saw. For
//! checking what a client puts on the wire (signature, protocol, parameters) where no emulator or
//! LocalStack service exists.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One canned answer: HTTP status and JSON body (an error's body carries `__type`).
pub type Answer = (u16, Value);

/// A request the stub saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request line and headers, as sent.
    pub head: String,
    /// The body as JSON (`Null` when it is not JSON, e.g. CBOR).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Starts the stub; returns its URL and the requests it sees, one per answer.
pub async fn start(answers: Vec<Answer>) -> (String, mpsc::Receiver<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("stub address"));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for (status, body) in answers {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let header_end = loop {
                if let Some(pos) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            };
            let mut recorded = Recorded {
                head: String::from_utf8_lossy(&seen[..header_end]).into_owned(),
                body: Value::Null,
            };
            let length: usize = recorded
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while seen.len() < header_end + length {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            recorded.body = serde_json::from_slice(&seen[header_end..header_end + length])
                .unwrap_or(Value::Null);
            let text = body.to_string();
            let error_type = match body["__type"].as_str() {
                Some(t) => format!("x-amzn-ErrorType: {t}\r\n"),
                None => String::new(),
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\n{error_type}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = tx.send(recorded).await;
        }
    });
    (url, rx)
}

/// Settings for a test that builds clients only: placeholder queue and topic, `extra` MPR_
/// variables on top.
pub fn client_settings(extra: &[(&str, &str)]) -> mp_resolver::config::Settings {
    let env = [
        ("MPR_QUEUE_URL", "http://127.0.0.1:4566/000000000000/q"),
        ("MPR_DLQ_URL", "http://127.0.0.1:4566/000000000000/q-dlq"),
        ("MPR_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:t"),
        ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    mp_resolver::config::load(&mp_resolver::config::Sources {
        env,
        ..Default::default()
    })
    .expect("test settings are valid")
    .settings
}
