//! Invariants of `parse_body` shared by both fuzz targets.

use mp_resolver::contract::{
    parse_body, Malformed, RegistrationToken, TokenRequest, MAX_CONTEXT_ENTRIES,
    MAX_CONTEXT_VALUE_CHARS, MAX_SIGNUP_ID_CHARS, MAX_TOKEN_BYTES,
};

/// Parses `body` twice and checks every invariant; returns the (first) result.
pub fn parse_and_check(body: &str) -> Result<TokenRequest, Malformed> {
    let first = parse_body(body);
    // (4) Deterministic: the same body gives the same result, by value and as shown.
    let second = parse_body(body);
    assert_eq!(first, second, "parse_body is not deterministic");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));

    match &first {
        Ok(request) => check_ok(request),
        Err(malformed) => check_err(body, malformed),
    }
    first
}

/// (2) and (3): an accepted request is within the contract's bounds and never shows its token.
fn check_ok(request: &TokenRequest) {
    let raw = request.token.expose();
    assert!(
        (1..=MAX_TOKEN_BYTES).contains(&raw.len()),
        "accepted token of {} bytes",
        raw.len()
    );
    if let Some(pos) = raw.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        panic!(
            "accepted token has byte {:#04x} at {pos}",
            raw.as_bytes()[pos]
        );
    }
    if let Some(signup_id) = &request.signup_id {
        assert!(
            signup_id.chars().count() <= MAX_SIGNUP_ID_CHARS,
            "accepted signupId of {} chars",
            signup_id.chars().count()
        );
    }
    assert!(
        request.context.len() <= MAX_CONTEXT_ENTRIES,
        "accepted context of {} entries",
        request.context.len()
    );
    for (key, value) in &request.context {
        assert!(
            key.chars().count() <= MAX_CONTEXT_VALUE_CHARS,
            "context key too long"
        );
        assert!(
            value.chars().count() <= MAX_CONTEXT_VALUE_CHARS,
            "context value too long"
        );
    }

    let fingerprint = request.token.fingerprint();
    assert_fingerprint_shape(fingerprint.as_str());

    if raw.len() >= 8 {
        // Neither the token's Debug (its fingerprint only) nor the request's shows the raw token,
        // unless it is part of the text around it ("RegistrationToken(", field names) or of the
        // other fields, which are shown as they are: so compare with the same request under
        // another token, which shows the same text around a different fingerprint.
        let mut masked = request.clone();
        masked.token = placeholder_token(raw);
        let token_shown = format!("{:?}", request.token);
        if token_shown.contains(raw) {
            assert!(
                format!("{:?}", masked.token).contains(raw),
                "token Debug shows the raw token: {token_shown}"
            );
        }
        let shown = format!("{request:?}");
        if shown.contains(raw) {
            assert!(
                format!("{masked:?}").contains(raw),
                "request Debug shows the raw token: {shown}"
            );
        }
    }
}

/// (2) on refusal: a reason is given, and it does not repeat the body.
fn check_err(body: &str, malformed: &Malformed) {
    assert!(!malformed.detail.is_empty(), "empty detail");
    assert!(!malformed.detail.trim().is_empty(), "blank detail");
    if let Some(fingerprint) = &malformed.fingerprint {
        assert_fingerprint_shape(fingerprint.as_str());
    }
    // A refused body either starts like JSON (`{`, `[` or `"`, none of which a fixed detail
    // contains), has a byte outside 0x20..=0x7E, or is longer than any detail: so a detail that
    // contains the whole (trimmed) body is echoing it.
    let trimmed = body.trim();
    if trimmed.len() >= 16 {
        assert!(
            !malformed.detail.contains(trimmed),
            "detail repeats the body: {:?}",
            malformed.detail
        );
    }
}

fn assert_fingerprint_shape(fingerprint: &str) {
    assert_eq!(fingerprint.len(), 32, "fingerprint {fingerprint:?}");
    assert!(
        fingerprint
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "fingerprint {fingerprint:?}"
    );
}

/// A valid token that differs from `raw` (built through the public parser: the type's field is
/// private).
fn placeholder_token(raw: &str) -> RegistrationToken {
    let other = if raw == "placeholder-token" {
        "placeholder-token-2"
    } else {
        "placeholder-token"
    };
    parse_body(other).expect("placeholder token parses").token
}

/// Characters that some fixed detail text may contain (letters, digits, space, backtick, `(`, `)`,
/// `,`, `-`). A token with any other character can only appear in a detail by being echoed.
#[allow(dead_code)] // used by parse_body_json only
pub fn could_be_detail_text(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '`' | '(' | ')' | ',' | '-'))
}
