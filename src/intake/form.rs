//! What a fulfillment request asks for, decided without I/O: the content type, the form fields
//! (from the body only, never the query string) and the token's bounds, and which answer each
//! refusal gets.

use axum::http::StatusCode;

use crate::contract::{Fingerprint, RegistrationToken, MAX_CONTEXT_VALUE_CHARS};

/// The form field AWS Marketplace posts the registration token in.
pub const TOKEN_FIELD: &str = "x-amzn-marketplace-token";
/// The optional form field naming the offer type, e.g. `free-trial`.
pub const OFFER_TYPE_FIELD: &str = "x-amzn-marketplace-offer-type";
/// The `context` key the offer type is queued under.
pub const OFFER_TYPE_CONTEXT_KEY: &str = "offerType";

/// A fulfillment POST that may be queued.
#[derive(Debug, PartialEq)]
pub struct Submission {
    pub token: RegistrationToken,
    pub offer_type: Option<String>,
}

/// Why a request is not queued. Details never hold the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not `application/x-www-form-urlencoded`.
    UnsupportedType,
    /// A body over `intake.max_body_bytes`.
    TooLarge,
    /// No token field, or an empty one.
    NoToken,
    /// A token outside the worker's bounds, two different tokens, or a bad offer type.
    BadForm {
        detail: String,
        fingerprint: Option<Fingerprint>,
    },
    /// `Origin` or `Referer` names a site not on `intake.allowed_origins`; nothing was read.
    CrossSite,
    /// The body did not arrive within `intake.body_timeout_ms`; nothing was queued.
    BodyTimeout,
    /// The client is over its limit; retry after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// The queue answered that it did not take the token (or the signupId could not be bound
    /// first): nothing was queued.
    QueueUnavailable { retry_after_secs: u64 },
    /// The queue did not answer within `intake.send_deadline_ms`: the token may be queued. A
    /// retry is safe: it carries the same signupId, and the worker resolves a token once.
    QueueNoAnswer { retry_after_secs: u64 },
    /// `intake.max_in_flight` POSTs are already waiting for the queue; nothing was queued.
    Busy { retry_after_secs: u64 },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::NoToken | Refusal::BadForm { .. } => StatusCode::BAD_REQUEST,
            Refusal::CrossSite => StatusCode::FORBIDDEN,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::QueueUnavailable { .. }
            | Refusal::QueueNoAnswer { .. }
            | Refusal::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `result` label of the requests metric and the log line.
    pub fn result(&self) -> &'static str {
        match self {
            Refusal::UnsupportedType => "unsupported_media_type",
            Refusal::TooLarge => "too_large",
            Refusal::NoToken => "no_token",
            Refusal::BadForm { .. } => "bad_form",
            Refusal::CrossSite => "cross_site",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::QueueUnavailable { .. } => "queue_unavailable",
            Refusal::QueueNoAnswer { .. } => "queue_no_answer",
            Refusal::Busy { .. } => "busy",
        }
    }

    /// `Retry-After`, for the answers that invite a retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited { retry_after_secs }
            | Refusal::QueueUnavailable { retry_after_secs }
            | Refusal::QueueNoAnswer { retry_after_secs }
            | Refusal::Busy { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

/// Whether a `Content-Type` is the form encoding browsers use for a plain `<form method=post>`
/// (parameters such as `charset` allowed).
pub fn is_form_encoded(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads the token and offer type from a form body. A field sent twice must carry the same value
/// both times: two different tokens in one request is not something Marketplace sends.
pub fn parse_form(body: &[u8]) -> Result<Submission, Refusal> {
    let mut token: Option<String> = None;
    let mut offer_type: Option<String> = None;
    for (name, value) in url::form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            TOKEN_FIELD => &mut token,
            OFFER_TYPE_FIELD => &mut offer_type,
            _ => continue,
        };
        let value = value.trim().to_owned();
        match slot {
            Some(previous) if *previous != value => {
                return Err(bad(
                    format!("the form has two different `{name}` fields"),
                    None,
                ))
            }
            _ => *slot = Some(value),
        }
    }
    let raw = token.filter(|t| !t.is_empty()).ok_or(Refusal::NoToken)?;
    let token = RegistrationToken::parse(&raw).map_err(|m| bad(m.detail, m.fingerprint))?;
    let offer_type = offer_type.filter(|o| !o.is_empty());
    if let Some(offer) = &offer_type {
        let printable = offer.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if !printable || offer.chars().count() > MAX_CONTEXT_VALUE_CHARS {
            return Err(bad(
                format!(
                    "`{OFFER_TYPE_FIELD}` must be printable ASCII, at most \
                     {MAX_CONTEXT_VALUE_CHARS} characters"
                ),
                Some(token.fingerprint()),
            ));
        }
    }
    Ok(Submission { token, offer_type })
}

fn bad(detail: String, fingerprint: Option<Fingerprint>) -> Refusal {
    Refusal::BadForm {
        detail,
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases = [
            (Some("application/x-www-form-urlencoded"), true),
            (
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                true,
            ),
            (Some("Application/X-WWW-Form-URLEncoded"), true),
            (Some("multipart/form-data; boundary=x"), false),
            (Some("application/json"), false),
            (Some("text/plain"), false),
            (Some(""), false),
            (None, false),
        ];
        for (ct, expected) in cases {
            assert_eq!(is_form_encoded(ct), expected, "{ct:?}");
        }
    }

    #[test]
    fn forms() {
        let long = "t".repeat(8_193);
        let long_form = format!("x-amzn-marketplace-token={long}");
        // (body, Ok((token, offer type)) or Err(result label))
        type Expected<'a> = Result<(&'a str, Option<&'a str>), &'static str>;
        let cases: Vec<(&str, Expected)> = vec![
            ("x-amzn-marketplace-token=abc", Ok(("abc", None))),
            (
                "x-amzn-marketplace-token=a%2Bb%3D&x-amzn-marketplace-offer-type=free-trial",
                Ok(("a+b=", Some("free-trial"))),
            ),
            ("x-amzn-marketplace-token=+abc+", Ok(("abc", None))),
            (
                "other=1&x-amzn-marketplace-token=abc&x-amzn-marketplace-token=abc",
                Ok(("abc", None)),
            ),
            (
                "x-amzn-marketplace-token=abc&x-amzn-marketplace-offer-type=",
                Ok(("abc", None)),
            ),
            ("", Err("no_token")),
            ("x-amzn-marketplace-token=", Err("no_token")),
            ("x-amzn-marketplace-token=++", Err("no_token")),
            ("registrationToken=abc", Err("no_token")),
            (
                "x-amzn-marketplace-token=a&x-amzn-marketplace-token=b",
                Err("bad_form"),
            ),
            ("x-amzn-marketplace-token=a%07b", Err("bad_form")),
            ("x-amzn-marketplace-token=caf%C3%A9", Err("bad_form")),
            ("x-amzn-marketplace-token=%FF%FE", Err("bad_form")),
            (long_form.as_str(), Err("bad_form")),
            (
                "x-amzn-marketplace-token=abc&x-amzn-marketplace-offer-type=%0A",
                Ok(("abc", None)),
            ),
            (
                "x-amzn-marketplace-token=abc&x-amzn-marketplace-offer-type=a%07",
                Err("bad_form"),
            ),
        ];
        for (body, expected) in cases {
            let got = parse_form(body.as_bytes());
            match (got, expected) {
                (Ok(s), Ok((token, offer))) => {
                    assert_eq!(s.token.expose(), token, "{body}");
                    assert_eq!(s.offer_type.as_deref(), offer, "{body}");
                }
                (Err(r), Err(result)) => assert_eq!(r.result(), result, "{body}"),
                (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_refused_token_is_named_by_its_fingerprint_only() {
        let secret = format!("secret-{}\u{7}", "s".repeat(10));
        let body = format!(
            "x-amzn-marketplace-token={}",
            secret.replace('\u{7}', "%07")
        );
        let refusal = parse_form(body.as_bytes()).unwrap_err();
        let Refusal::BadForm {
            detail,
            fingerprint,
        } = &refusal
        else {
            panic!("{refusal:?}")
        };
        assert_eq!(fingerprint.as_ref(), Some(&Fingerprint::of(&secret)));
        assert!(!format!("{detail}{refusal:?}").contains("secret-"));
    }

    #[test]
    fn statuses() {
        let cases = [
            (Refusal::UnsupportedType, 415, None),
            (Refusal::TooLarge, 413, None),
            (Refusal::NoToken, 400, None),
            (bad("x".into(), None), 400, None),
            (
                Refusal::RateLimited {
                    retry_after_secs: 2,
                },
                429,
                Some(2),
            ),
            (
                Refusal::QueueUnavailable {
                    retry_after_secs: 5,
                },
                503,
                Some(5),
            ),
            (
                Refusal::QueueNoAnswer {
                    retry_after_secs: 5,
                },
                503,
                Some(5),
            ),
            (
                Refusal::Busy {
                    retry_after_secs: 5,
                },
                503,
                Some(5),
            ),
            (Refusal::CrossSite, 403, None),
            (Refusal::BodyTimeout, 408, None),
        ];
        for (refusal, status, retry) in cases {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.retry_after_secs(), retry, "{refusal:?}");
        }
    }
}
