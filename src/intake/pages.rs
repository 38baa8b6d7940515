//! The pages a buyer can see from `intake` and the headers every response carries. The pages are
//! static: nothing from the request is ever written into them, so nothing can leak or inject.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use super::form::Refusal;

/// No script, no style, no frame, no form target, no base, no referrer: the pages are plain text
/// in HTML.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Added to every response of the fulfillment listener.
pub fn security_headers(response: &mut Response) {
    let headers: &mut HeaderMap = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // HTTP caches on the way (a CDN in front of the ALB) must not keep anything either.
    headers.insert(
        HeaderName::from_static("pragma"),
        HeaderValue::from_static("no-cache"),
    );
}

const START_AGAIN: &str =
    "Please go back to AWS Marketplace and choose <b>Set up your account</b> \
     (or <b>Subscribe</b>) on the product again: it sends you here with a fresh registration.";

/// The title and paragraph for an answer.
pub fn refusal_page(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoToken | Refusal::BadForm { .. } => page(
            "This sign-up link is not complete",
            &format!(
                "The request did not carry a usable AWS Marketplace registration. {START_AGAIN}"
            ),
        ),
        Refusal::TooLarge => page(
            "This request is too large",
            &format!("This address only takes the short form AWS Marketplace sends. {START_AGAIN}"),
        ),
        Refusal::UnsupportedType => page(
            "This request is not a sign-up form",
            &format!("This address only takes the form AWS Marketplace sends. {START_AGAIN}"),
        ),
        Refusal::RateLimited { .. } => page(
            "Too many attempts",
            "There were too many sign-up attempts from your network in the last minute. \
             Please wait a minute, then go back to AWS Marketplace and try again.",
        ),
        Refusal::CrossSite => page(
            "This sign-up did not come from AWS Marketplace",
            &format!(
                "This address only takes the form AWS Marketplace sends, and this one was sent \
                 from another site, so nothing was recorded. If you followed a link to get \
                 here, do not use it. {START_AGAIN}"
            ),
        ),
        Refusal::BodyTimeout => page(
            "The sign-up form arrived too slowly",
            "Nothing was recorded. Please reload this page and confirm that your browser may \
             send the form again (or go back to AWS Marketplace and choose <b>Set up your \
             account</b> again).",
        ),
        Refusal::QueueUnavailable { .. } | Refusal::Busy { .. } => page(
            "Please try again in a moment",
            "We could not record your sign-up just now, and nothing was half-done. Please reload \
             this page in a few seconds and confirm that your browser may send the form again \
             (or go back to AWS Marketplace and choose <b>Set up your account</b> again).",
        ),
        Refusal::QueueNoAnswer { .. } => page(
            "Please try again in a moment",
            "Your sign-up is taking longer than it should, and we cannot tell yet whether it was \
             recorded: it may have been. Trying again is safe: it cannot sign you up twice, and \
             it continues the same sign-up. Please reload this page in a few seconds and confirm \
             that your browser may send the form again (or go back to AWS Marketplace and choose \
             <b>Set up your account</b> again).",
        ),
    }
}

/// What `GET` on the fulfillment path shows: this is not a page to visit directly.
pub fn explanation_page() -> String {
    page(
        "Sign up through AWS Marketplace",
        &format!(
            "This address is where AWS Marketplace sends you after you subscribe to the \
             product, to set up your account. {START_AGAIN}"
        ),
    )
}

fn page(title: &str, paragraph: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n<p>{paragraph}</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_says_what_to_do_next() {
        let refusals = [
            Refusal::NoToken,
            Refusal::TooLarge,
            Refusal::UnsupportedType,
            Refusal::RateLimited {
                retry_after_secs: 1,
            },
            Refusal::QueueUnavailable {
                retry_after_secs: 1,
            },
            Refusal::Busy {
                retry_after_secs: 1,
            },
            Refusal::QueueNoAnswer {
                retry_after_secs: 1,
            },
            Refusal::CrossSite,
            Refusal::BodyTimeout,
        ];
        for r in &refusals {
            let html = refusal_page(r);
            assert!(html.starts_with("<!DOCTYPE html>"), "{r:?}");
            assert!(html.contains("AWS Marketplace"), "{r:?}: {html}");
        }
        assert!(explanation_page().contains("Set up your account"));
    }

    #[test]
    fn a_503_claims_nothing_was_done_only_when_the_queue_said_so() {
        let refused = refusal_page(&Refusal::QueueUnavailable {
            retry_after_secs: 1,
        });
        let unknown = refusal_page(&Refusal::QueueNoAnswer {
            retry_after_secs: 1,
        });
        assert!(refused.contains("nothing was half-done"), "{refused}");
        assert!(!unknown.contains("nothing was"), "{unknown}");
        assert!(unknown.contains("may have been"), "{unknown}");
        assert!(unknown.contains("Trying again is safe"), "{unknown}");
    }
}
