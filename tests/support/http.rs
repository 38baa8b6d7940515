//! A plain HTTP/1.1 client for the tests that talk to `intake` and the stand-in pages: one
//! request, the whole answer, no redirects followed (the tests check the 303 itself).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Status line, headers and body as one text, for scanning.
    pub fn everything(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        out.push_str(&self.body);
        out
    }
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within 30 s"))
        .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// A form POST as a browser sends it.
pub async fn post_form(url: &str, extra_headers: &[(&str, &str)], body: &str) -> Answer {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra_headers);
    send(Method::POST, url, &headers, body.as_bytes().to_vec()).await
}

pub async fn get(url: &str) -> Answer {
    send(Method::GET, url, &[], Vec::new()).await
}
