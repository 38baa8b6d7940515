//! Where a fulfillment POST comes from. A browser sends `Origin` (or at least `Referer`) with a
//! form POST; another site could make a visitor's browser post a token to intake, so a POST that
//! names a site not on `intake.allowed_origins` is refused. A POST that names none is allowed:
//! `Origin: null` and absent headers are what a page with `Referrer-Policy: no-referrer` (or a
//! privacy setting) gives, and refusing them would turn real buyers away.

use axum::http::{header, HeaderMap};
use url::Url;

/// One entry of `intake.allowed_origins`: `scheme://host[:port]`, where a host `*.example.com`
/// stands for every subdomain of `example.com` (not `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exactly(String),
    /// The suffix with its leading dot, e.g. `.console.aws.amazon.com`.
    SubdomainOf(String),
}

impl OriginPattern {
    /// `Err` says what is wrong, for the configuration error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('/');
        let bad = |why: &str| {
            Err(format!(
                "{text:?} is not an origin ({why}); write scheme://host[:port], e.g. \
                 https://aws.amazon.com or https://*.console.aws.amazon.com"
            ))
        };
        let (wildcard, parsable) = match text.split_once("://*.") {
            Some((scheme, rest)) => (true, format!("{scheme}://{rest}")),
            None => (false, text.to_owned()),
        };
        let Ok(url) = Url::parse(&parsable) else {
            return bad("not a URL");
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return bad("no host");
        };
        if !matches!(url.scheme(), "https" | "http") {
            return bad("the scheme must be https or http");
        }
        // An origin is scheme, host and port: nothing after them.
        let rest = &parsable[url.scheme().len() + 3..];
        if rest.contains(['/', '?', '#', '@']) {
            return bad("an origin has no path, query, fragment or user");
        }
        let host = host.to_ascii_lowercase();
        Ok(OriginPattern {
            scheme: url.scheme().to_owned(),
            host: if wildcard {
                HostPattern::SubdomainOf(format!(".{host}"))
            } else {
                HostPattern::Exactly(host)
            },
            port: url.port(),
        })
    }

    fn matches(&self, origin: &Url) -> bool {
        let Some(host) = origin.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let host_ok = match &self.host {
            HostPattern::Exactly(h) => host == *h,
            HostPattern::SubdomainOf(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        };
        // `Url::port` is `None` for the scheme's default port, on both sides.
        origin.scheme() == self.scheme && host_ok && origin.port() == self.port
    }
}

/// The site a request says it was sent from, if it says one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// No `Origin` and no `Referer`, or `Origin: null`: nothing to check.
    Unnamed,
    /// The origin of `Origin`, or of `Referer` when there is no `Origin`.
    Site(Url),
    /// A header that is not a URL: no browser sends one.
    Unreadable,
}

pub fn sender(headers: &HeaderMap) -> Sender {
    let value = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).map_err(|_| ()))
    };
    let text = match (value(header::ORIGIN), value(header::REFERER)) {
        (Some(Ok("null")), _) => return Sender::Unnamed,
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return Sender::Unnamed,
    };
    match text.ok().and_then(|t| Url::parse(t).ok()) {
        Some(url) if url.host_str().is_some() => Sender::Site(url),
        _ => Sender::Unreadable,
    }
}

/// Whether a request may be taken: `Err` holds the origin (scheme, host, port: no path or query
/// of a `Referer`, which could carry anything) to log.
pub fn check(allowed: &[OriginPattern], headers: &HeaderMap) -> Result<(), String> {
    match sender(headers) {
        Sender::Unnamed => Ok(()),
        Sender::Site(url) if allowed.iter().any(|p| p.matches(&url)) => Ok(()),
        Sender::Site(url) => Err(url.origin().ascii_serialization()),
        Sender::Unreadable => Err("an unreadable Origin or Referer".to_owned()),
    }
}

/// `intake.allowed_origins`, parsed (validation has refused the entries that do not parse).
pub fn patterns(origins: &[String]) -> Vec<OriginPattern> {
    origins
        .iter()
        .filter_map(|o| OriginPattern::parse(o).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn defaults() -> Vec<OriginPattern> {
        patterns(&[
            "https://aws.amazon.com".into(),
            "https://console.aws.amazon.com".into(),
            "https://*.console.aws.amazon.com".into(),
        ])
    }

    type Headers<'a> = &'a [(&'static str, &'static [u8])];

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    #[test]
    fn allowed_and_refused_senders() {
        let allowed = defaults();
        let ok: &[Headers] = &[
            &[],
            &[("origin", b"null")],
            &[("origin", b"https://aws.amazon.com")],
            &[("origin", b"https://AWS.amazon.com:443")],
            &[("origin", b"https://us-east-1.console.aws.amazon.com")],
            &[(
                "referer",
                b"https://aws.amazon.com/marketplace/saas/ordering?productId=x",
            )],
            &[(
                "referer",
                b"https://eu-west-1.console.aws.amazon.com/marketplace/home",
            )],
            // Origin wins over Referer.
            &[
                ("origin", b"https://aws.amazon.com"),
                ("referer", b"https://evil.example/"),
            ],
        ];
        for h in ok {
            assert_eq!(check(&allowed, &headers(h)), Ok(()), "{h:?}");
        }
        let refused: &[(Headers, &str)] = &[
            (
                &[("origin", b"https://evil.example")],
                "https://evil.example",
            ),
            (
                &[("origin", b"http://aws.amazon.com")],
                "http://aws.amazon.com",
            ),
            (
                &[("origin", b"https://aws.amazon.com:8443")],
                "https://aws.amazon.com:8443",
            ),
            (
                &[("origin", b"https://aws.amazon.com.evil.example")],
                "https://aws.amazon.com.evil.example",
            ),
            (
                &[("origin", b"https://evilconsole.aws.amazon.com")],
                "https://evilconsole.aws.amazon.com",
            ),
            (&[("origin", b"https://amazon.com")], "https://amazon.com"),
            (
                &[(
                    "referer",
                    b"https://evil.example/page?x-amzn-marketplace-token=t",
                )],
                "https://evil.example",
            ),
            (
                &[("origin", b"not a url")],
                "an unreadable Origin or Referer",
            ),
            (&[("origin", b"\xff")], "an unreadable Origin or Referer"),
        ];
        for (h, logged) in refused {
            assert_eq!(
                check(&allowed, &headers(h)),
                Err((*logged).to_owned()),
                "{h:?}"
            );
        }
    }

    #[test]
    fn patterns_parse_or_say_why() {
        for good in [
            "https://aws.amazon.com",
            "http://127.0.0.1:8081",
            "https://*.example.com",
        ] {
            assert!(OriginPattern::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "aws.amazon.com",
            "https://aws.amazon.com/x",
            "ftp://x.example",
            "https://",
            "*",
        ] {
            let why = OriginPattern::parse(bad).unwrap_err();
            assert!(why.contains("scheme://host"), "{bad}: {why}");
        }
    }
}
