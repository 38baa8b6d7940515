//! The shapes that cross the queue and the topic: the inbound token message (parsed and bounded),
//! the published customer event, and the reasons a message is dead-lettered.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod dead_letter;
pub mod lifecycle;
pub mod usage;

pub use dead_letter::{
    dlq_attr, DeadLetter, DeadLetterReason, UnknownReason, LETTER_OVERHEAD_BYTES, MAX_LETTER_BYTES,
};

/// Longest registration token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8_192;
/// Longest `signupId`, in characters.
pub const MAX_SIGNUP_ID_CHARS: usize = 256;
/// Most entries in `context`.
pub const MAX_CONTEXT_ENTRIES: usize = 32;
/// Longest `context` key or value, in characters.
pub const MAX_CONTEXT_VALUE_CHARS: usize = 1_024;

/// The `eventType` of every published event.
pub const EVENT_TYPE: &str = "marketplace.customer.resolved";
/// The `schemaVersion` of the event shape below.
pub const SCHEMA_VERSION: u32 = 1;

/// A buyer's registration token. It is a bearer secret for a few hours, so it has no `Display` and
/// its `Debug` shows only the fingerprint: it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationToken(String);

impl RegistrationToken {
    /// Checks a raw token against the inbound bounds (not empty, at most [`MAX_TOKEN_BYTES`],
    /// printable ASCII only): the same check the worker applies to every message, so a front end
    /// that uses it never queues a token the worker would dead-letter as malformed.
    pub fn parse(raw: &str) -> Result<RegistrationToken, Malformed> {
        validate_token(raw)
    }

    /// The raw token, for the one place that needs it: the ResolveCustomer request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }
}

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistrationToken({})", self.fingerprint())
    }
}

/// The token's stand-in wherever it must be named: the first 32 hex characters of its SHA-256.
/// It is the event's `eventId`, so every delivery of one token carries the same id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(raw: &str) -> Self {
        let digest = Sha256::digest(raw.as_bytes());
        Fingerprint(hex::encode(&digest[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token message that passed every bound of the inbound contract.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    pub token: RegistrationToken,
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
    pub submitted_at: Option<String>,
}

/// Why a body was refused. `detail` is written for an operator and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {detail}")]
pub struct Malformed {
    pub detail: String,
    /// Present when a token could be read, so the dead-letter can still be matched to its event id.
    pub fingerprint: Option<Fingerprint>,
}

impl Malformed {
    fn new(detail: impl Into<String>) -> Self {
        Malformed {
            detail: detail.into(),
            fingerprint: None,
        }
    }

    fn with_token(detail: impl Into<String>, raw_token: &str) -> Self {
        Malformed {
            detail: detail.into(),
            fingerprint: Some(Fingerprint::of(raw_token)),
        }
    }
}

/// Parses an SQS body in the accepted forms, in order: a JSON object, an SNS notification envelope
/// carrying that object, or a plain (non-JSON) body that is the token itself.
pub fn parse_body(body: &str) -> Result<TokenRequest, Malformed> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(Malformed::new("empty body"));
    }
    // A body that starts like JSON was meant as JSON: a parse failure is an error, not a token.
    if !trimmed.starts_with(['{', '[', '"']) {
        return parse_plain_token(trimmed);
    }
    let object = parse_json_object(trimmed)?;
    if is_sns_notification(&object) {
        return parse_token_object(&sns_message_object(&object)?);
    }
    parse_token_object(&object)
}

/// A (trimmed) body that must be one JSON object.
fn parse_json_object(trimmed: &str) -> Result<Map<String, Value>, Malformed> {
    let value: Value = serde_json::from_str(trimmed)
        .map_err(|e| Malformed::new(format!("body is not valid JSON ({})", json_error_kind(&e))))?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(Malformed::new(format!(
            "body is JSON but not an object (found {})",
            json_type(&other)
        ))),
    }
}

/// An SNS notification envelope, as SNS writes it to a subscribed queue without raw delivery.
fn is_sns_notification(object: &Map<String, Value>) -> bool {
    object.get("Type").and_then(Value::as_str) == Some("Notification")
}

fn parse_plain_token(trimmed: &str) -> Result<TokenRequest, Malformed> {
    Ok(TokenRequest {
        token: validate_token(trimmed)?,
        signup_id: None,
        context: BTreeMap::new(),
        submitted_at: None,
    })
}

/// The JSON object an SNS notification envelope carries as a string in its `Message`.
fn sns_message_object(envelope: &Map<String, Value>) -> Result<Map<String, Value>, Malformed> {
    let inner = match envelope.get("Message") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(Malformed::new(format!(
                "SNS envelope `Message` must be a string, found {}",
                json_type(other)
            )))
        }
        None => return Err(Malformed::new("SNS envelope has no `Message`")),
    };
    let value: Value = serde_json::from_str(inner.trim()).map_err(|e| {
        Malformed::new(format!(
            "SNS envelope `Message` is not valid JSON ({})",
            json_error_kind(&e)
        ))
    })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(Malformed::new(format!(
            "SNS envelope `Message` must be a JSON object, found {}",
            json_type(&other)
        ))),
    }
}

fn parse_token_object(object: &Map<String, Value>) -> Result<TokenRequest, Malformed> {
    let primary = object.get("registrationToken").filter(|v| !v.is_null());
    let alias = object
        .get("x-amzn-marketplace-token")
        .filter(|v| !v.is_null());
    let raw = match (primary, alias) {
        (None, None) => {
            return Err(Malformed::new(
                "missing `registrationToken` (or `x-amzn-marketplace-token`)",
            ))
        }
        (Some(v), None) | (None, Some(v)) => expect_string(v, "registrationToken")?,
        (Some(a), Some(b)) => {
            let (a, b) = (
                expect_string(a, "registrationToken")?,
                expect_string(b, "x-amzn-marketplace-token")?,
            );
            if a != b {
                return Err(Malformed::with_token(
                    "`registrationToken` and `x-amzn-marketplace-token` disagree",
                    a,
                ));
            }
            a
        }
    };
    let token = validate_token(raw)?;
    let with_fp = |detail: String| Malformed {
        detail,
        fingerprint: Some(token.fingerprint()),
    };

    let signup_id = match optional(object, "signupId") {
        None => None,
        Some(v) => {
            let s = expect_string(v, "signupId").map_err(|m| with_fp(m.detail))?;
            if s.chars().count() > MAX_SIGNUP_ID_CHARS {
                return Err(with_fp(format!(
                    "`signupId` is longer than {MAX_SIGNUP_ID_CHARS} characters"
                )));
            }
            Some(s.to_owned())
        }
    };

    let context = match optional(object, "context") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => parse_context(map).map_err(with_fp)?,
        Some(other) => {
            return Err(with_fp(format!(
                "`context` must be an object of strings, found {}",
                json_type(other)
            )))
        }
    };

    let submitted_at = match optional(object, "submittedAt") {
        None => None,
        Some(v) => {
            let text = expect_string(v, "submittedAt").map_err(|m| with_fp(m.detail))?;
            // Subscribers parse it: only RFC 3339 is passed on.
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                return Err(with_fp(
                    "`submittedAt` must be an RFC 3339 timestamp (e.g. 2026-11-23T10:00:00Z)"
                        .into(),
                ));
            }
            Some(text.to_owned())
        }
    };

    Ok(TokenRequest {
        token,
        signup_id,
        context,
        submitted_at,
    })
}

fn parse_context(map: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    if map.len() > MAX_CONTEXT_ENTRIES {
        return Err(format!(
            "`context` has {} entries, at most {MAX_CONTEXT_ENTRIES} are allowed",
            map.len()
        ));
    }
    let mut context = BTreeMap::new();
    for (key, value) in map {
        let Value::String(value) = value else {
            return Err(format!(
                "`context` values must be strings, found {}",
                json_type(value)
            ));
        };
        if key.chars().count() > MAX_CONTEXT_VALUE_CHARS
            || value.chars().count() > MAX_CONTEXT_VALUE_CHARS
        {
            return Err(format!(
                "a `context` entry is longer than {MAX_CONTEXT_VALUE_CHARS} characters"
            ));
        }
        context.insert(key.clone(), value.clone());
    }
    Ok(context)
}

fn validate_token(raw: &str) -> Result<RegistrationToken, Malformed> {
    if raw.is_empty() {
        return Err(Malformed::new("registration token is empty"));
    }
    // Spaces are printable, but a token of nothing else is no token: the API would only be asked
    // for a certain InvalidTokenException.
    if raw.bytes().all(|b| b == b' ') {
        return Err(Malformed::new("registration token is only spaces"));
    }
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(Malformed::with_token(
            format!(
                "registration token is {} bytes, at most {MAX_TOKEN_BYTES} are allowed",
                raw.len()
            ),
            raw,
        ));
    }
    if let Some(pos) = raw.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(Malformed::with_token(
            format!("registration token has a non-printable or non-ASCII byte at offset {pos}"),
            raw,
        ));
    }
    Ok(RegistrationToken(raw.to_owned()))
}

/// A present, non-null field. JSON `null` counts as absent for the optional fields.
fn optional<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

fn expect_string<'a>(value: &'a Value, field: &str) -> Result<&'a str, Malformed> {
    value.as_str().ok_or_else(|| {
        Malformed::new(format!(
            "`{field}` must be a string, found {}",
            json_type(value)
        ))
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's messages can quote the input; only its category and position are safe to repeat.
fn json_error_kind(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected data",
        Category::Eof => "unexpected end of input",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

/// What ResolveCustomer said about a token that resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCustomer {
    pub customer_identifier: Option<String>,
    pub customer_aws_account_id: String,
    pub product_code: String,
    pub license_arn: Option<String>,
    pub agreement_id: Option<String>,
}

/// The event published for every resolved token (schema version 1). It is also what the store keeps
/// of a resolved token, so it reads back (`from_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerEvent {
    /// Always [`EVENT_TYPE`]; `from_json` checks it.
    #[serde(skip_deserializing, default = "customer_event_type")]
    pub event_type: &'static str,
    pub schema_version: u32,
    pub event_id: Fingerprint,
    pub customer_identifier: Option<String>,
    #[serde(rename = "customerAWSAccountId")]
    pub customer_aws_account_id: String,
    pub product_code: String,
    pub license_arn: Option<String>,
    pub agreement_id: Option<String>,
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
    pub submitted_at: Option<String>,
    pub enqueued_at: Option<String>,
    pub resolved_at: String,
    pub attempts: u32,
}

impl CustomerEvent {
    pub fn new(
        request: &TokenRequest,
        customer: ResolvedCustomer,
        enqueued_at: Option<String>,
        resolved_at: String,
        attempts: u32,
    ) -> Self {
        CustomerEvent {
            event_type: EVENT_TYPE,
            schema_version: SCHEMA_VERSION,
            event_id: request.token.fingerprint(),
            customer_identifier: customer.customer_identifier,
            customer_aws_account_id: customer.customer_aws_account_id,
            product_code: customer.product_code,
            license_arn: customer.license_arn,
            agreement_id: customer.agreement_id,
            signup_id: request.signup_id.clone(),
            context: request.context.clone(),
            submitted_at: request.submitted_at.clone(),
            enqueued_at,
            resolved_at,
            attempts,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings, maps and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The event `to_json` wrote; `None` for anything else.
    pub fn from_json(json: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(json).ok()?;
        if value.get("eventType").and_then(Value::as_str) != Some(EVENT_TYPE) {
            return None;
        }
        serde_json::from_value(value).ok()
    }

    /// What ResolveCustomer answered, as the event carries it.
    pub fn customer(&self) -> ResolvedCustomer {
        ResolvedCustomer {
            customer_identifier: self.customer_identifier.clone(),
            customer_aws_account_id: self.customer_aws_account_id.clone(),
            product_code: self.product_code.clone(),
            license_arn: self.license_arn.clone(),
            agreement_id: self.agreement_id.clone(),
        }
    }
}

fn customer_event_type() -> &'static str {
    EVENT_TYPE
}

/// Test helpers for the wire shapes: the parsers of inbound bodies (tokens here, notifications in
/// `lifecycle`) and the events' JSON.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::{Debug, Display};

    /// What `parse` makes of `body`, which must parse.
    pub fn parsed<T, E: Display>(body: &str, parse: impl Fn(&str) -> Result<T, E>) -> T {
        parse(body).unwrap_or_else(|e| panic!("{body:.80?} should parse: {e}"))
    }

    /// Why `parse` refuses `body`, which must not parse.
    pub fn refused<T: Debug, E>(body: &str, parse: impl Fn(&str) -> Result<T, E>) -> E {
        match parse(body) {
            Ok(t) => panic!("{body:.80?} should be refused, parsed as {t:?}"),
            Err(e) => e,
        }
    }

    /// The member names of a JSON object, in the order they were written.
    pub fn keys(json: &serde_json::Value) -> Vec<&str> {
        json.as_object()
            .expect("a JSON object")
            .keys()
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn submitted_at_must_be_rfc3339_and_a_token_of_spaces_is_malformed() {
        let ok = r#"{"registrationToken":"tok","submittedAt":"2026-11-23T10:00:00Z"}"#;
        assert_eq!(
            parse_body(ok).unwrap().submitted_at.as_deref(),
            Some("2026-11-23T10:00:00Z")
        );
        for bad in ["yesterday", "2026-11-23 10:00", "1700000000", ""] {
            let body = format!(r#"{{"registrationToken":"tok","submittedAt":"{bad}"}}"#);
            let err = parse_body(&body).unwrap_err();
            assert!(err.detail.contains("RFC 3339"), "{bad}: {err:?}");
            assert!(err.fingerprint.is_some(), "the token is still matched");
        }
        for spaces in [r#"{"registrationToken":"   "}"#, "\"   \""] {
            let err = parse_body(spaces).unwrap_err();
            assert!(!err.detail.is_empty(), "{spaces}");
        }
        let err = parse_body(r#"{"registrationToken":"    "}"#).unwrap_err();
        assert_eq!(err.detail, "registration token is only spaces");
    }

    use super::*;

    const TOKEN: &str = "emu1.eyJhY2NvdW50IjoiMTIzNDU2Nzg5MDEyIn0";

    fn ok(body: &str) -> TokenRequest {
        super::testing::parsed(body, parse_body)
    }

    fn bad(body: &str) -> Malformed {
        super::testing::refused(body, parse_body)
    }

    #[test]
    fn json_object_carries_every_field() {
        let r = ok(&format!(
            r#"{{"registrationToken":"{TOKEN}","signupId":"s-1","context":{{"plan":"gold"}},
                "submittedAt":"2026-11-23T10:00:00Z","unknown":[1,2]}}"#
        ));
        assert_eq!(r.token.expose(), TOKEN);
        assert_eq!(r.signup_id.as_deref(), Some("s-1"));
        assert_eq!(r.context.get("plan").map(String::as_str), Some("gold"));
        assert_eq!(r.submitted_at.as_deref(), Some("2026-11-23T10:00:00Z"));
    }

    #[test]
    fn form_field_name_is_an_alias() {
        let r = ok(&format!(r#"{{"x-amzn-marketplace-token":"{TOKEN}"}}"#));
        assert_eq!(r.token.expose(), TOKEN);
        let r = ok(&format!(
            r#"{{"x-amzn-marketplace-token":"{TOKEN}","registrationToken":"{TOKEN}"}}"#
        ));
        assert_eq!(r.token.expose(), TOKEN);
        let m = bad(&format!(
            r#"{{"x-amzn-marketplace-token":"other","registrationToken":"{TOKEN}"}}"#
        ));
        assert!(m.detail.contains("disagree"));
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let r = ok(&format!(
            r#"{{"registrationToken":"{TOKEN}","signupId":null,"context":null,"submittedAt":null}}"#
        ));
        assert_eq!(r.signup_id, None);
        assert!(r.context.is_empty());
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let inner = format!(r#"{{"registrationToken":"{TOKEN}","signupId":"s-2"}}"#);
        let envelope =
            serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner});
        let r = ok(&envelope.to_string());
        assert_eq!(r.token.expose(), TOKEN);
        assert_eq!(r.signup_id.as_deref(), Some("s-2"));
    }

    #[test]
    fn plain_body_is_the_trimmed_token() {
        let r = ok(&format!("  {TOKEN}\n"));
        assert_eq!(r.token.expose(), TOKEN);
        assert_eq!(r.signup_id, None);
    }

    #[test]
    fn token_at_the_bound_is_accepted_and_past_it_refused() {
        let at = "a".repeat(MAX_TOKEN_BYTES);
        assert_eq!(ok(&at).token.expose().len(), MAX_TOKEN_BYTES);
        let past = "a".repeat(MAX_TOKEN_BYTES + 1);
        let m = bad(&past);
        assert!(m.detail.contains("8192"), "{}", m.detail);
        assert_eq!(m.fingerprint, Some(Fingerprint::of(&past)));
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        let big_context: serde_json::Map<String, Value> = (0..33)
            .map(|i| (format!("k{i}"), Value::String("v".into())))
            .collect();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty body"),
            ("   \n".into(), "empty body"),
            ("[1,2,3]".into(), "not an object"),
            ("\"just a string\"".into(), "not an object"),
            ("{\"registrationToken\": ".into(), "not valid JSON"),
            ("{}".into(), "missing"),
            (r#"{"registrationToken":""}"#.into(), "empty"),
            (r#"{"registrationToken":42}"#.into(), "must be a string"),
            (
                r#"{"registrationToken":"a\u0007b"}"#.into(),
                "non-printable",
            ),
            (r#"{"registrationToken":"tøken"}"#.into(), "non-ASCII"),
            ("tok\u{0}en".into(), "non-printable"),
            (
                format!(r#"{{"registrationToken":"{TOKEN}","signupId":7}}"#),
                "signupId",
            ),
            (
                format!(
                    r#"{{"registrationToken":"{TOKEN}","signupId":"{}"}}"#,
                    "x".repeat(257)
                ),
                "signupId",
            ),
            (
                format!(r#"{{"registrationToken":"{TOKEN}","context":[1]}}"#),
                "context",
            ),
            (
                format!(r#"{{"registrationToken":"{TOKEN}","context":{{"a":1}}}}"#),
                "strings",
            ),
            (
                format!(
                    r#"{{"registrationToken":"{TOKEN}","context":{}}}"#,
                    Value::Object(big_context)
                ),
                "entries",
            ),
            (
                format!(
                    r#"{{"registrationToken":"{TOKEN}","context":{{"a":"{}"}}}}"#,
                    "v".repeat(1025)
                ),
                "longer than 1024",
            ),
            (
                format!(r#"{{"registrationToken":"{TOKEN}","submittedAt":1}}"#),
                "submittedAt",
            ),
            (r#"{"Type":"Notification"}"#.into(), "no `Message`"),
            (
                r#"{"Type":"Notification","Message":{"registrationToken":"x"}}"#.into(),
                "must be a string",
            ),
            (
                r#"{"Type":"Notification","Message":"not json"}"#.into(),
                "not valid JSON",
            ),
            (
                r#"{"Type":"Notification","Message":"[1]"}"#.into(),
                "must be a JSON object",
            ),
            (
                format!("{}{}", "[".repeat(200), "]".repeat(200)),
                "not valid JSON",
            ),
        ];
        for (body, expected) in cases {
            let m = bad(&body);
            assert!(
                m.detail.contains(expected),
                "body {:?}: detail {:?} should mention {expected:?}",
                body.chars().take(60).collect::<String>(),
                m.detail
            );
            assert!(
                !m.detail.contains(TOKEN),
                "detail leaks the token: {}",
                m.detail
            );
        }
    }

    #[test]
    fn fingerprint_is_32_hex_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            Fingerprint::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
    }

    #[test]
    fn token_debug_shows_only_the_fingerprint() {
        let r = ok(TOKEN);
        let shown = format!("{r:?}");
        assert!(!shown.contains(TOKEN));
        assert!(shown.contains(r.token.fingerprint().as_str()));
    }

    #[test]
    fn event_serializes_with_the_contract_names() {
        let r = ok(&format!(
            r#"{{"registrationToken":"{TOKEN}","signupId":"s"}}"#
        ));
        let customer = ResolvedCustomer {
            customer_identifier: None,
            customer_aws_account_id: "123456789012".into(),
            product_code: "prod-abc".into(),
            license_arn: Some("arn:lic".into()),
            agreement_id: None,
        };
        let event = CustomerEvent::new(&r, customer, None, "2026-11-24T00:00:00Z".into(), 2);
        let json: Value = serde_json::from_str(&event.to_json()).unwrap();
        let keys = super::testing::keys(&json);
        for key in [
            "eventType",
            "schemaVersion",
            "eventId",
            "customerIdentifier",
            "customerAWSAccountId",
            "productCode",
            "licenseArn",
            "agreementId",
            "signupId",
            "context",
            "submittedAt",
            "enqueuedAt",
            "resolvedAt",
            "attempts",
        ] {
            assert!(keys.contains(&key), "missing {key} in {keys:?}");
        }
        assert_eq!(keys.len(), 14);
        assert_eq!(json["customerIdentifier"], Value::Null);
        assert_eq!(json["eventId"], r.token.fingerprint().as_str());
        assert_eq!(json["attempts"], 2);
    }

    #[test]
    fn dead_letter_reasons_round_trip_their_wire_names() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(reason.as_str().parse::<DeadLetterReason>(), Ok(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(
            "unpublished".parse::<DeadLetterReason>(),
            Ok(DeadLetterReason::Unpublished)
        );
        assert_eq!(
            "unrecognized_notification".parse::<DeadLetterReason>(),
            Ok(DeadLetterReason::UnrecognizedNotification)
        );
        for bad in ["", "Invalid_Token", "redrive_policy", "invalid_token "] {
            assert_eq!(
                bad.parse::<DeadLetterReason>(),
                Err(UnknownReason(bad.to_owned()))
            );
        }
    }
}
