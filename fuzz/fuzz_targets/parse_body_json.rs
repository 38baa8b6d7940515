//! Structured bodies: a token object (or an SNS notification carrying one) built with `arbitrary`
//! and serialized with serde_json, so the fuzzer spends its time past the JSON syntax. Besides the
//! invariants in common.rs, a small reference model of the inbound contract predicts whether the
//! body is accepted, the fields it yields and whether a refusal carries the token's fingerprint.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mp_resolver::contract::{
    Fingerprint, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_VALUE_CHARS, MAX_SIGNUP_ID_CHARS, MAX_TOKEN_BYTES,
};
use serde_json::{Map, Value};

mod common;

const PRIMARY: &str = "registrationToken";
const ALIAS: &str = "x-amzn-marketplace-token";
const KNOWN_KEYS: [&str; 6] = [PRIMARY, ALIAS, "signupId", "context", "submittedAt", "Type"];

/// Longest string a `Text` builds: past every bound, short enough to keep executions fast.
const MAX_TEXT_BYTES: usize = 20_000;

/// A string, or a short one repeated (so the length bounds are reached cheaply).
#[derive(Arbitrary, Debug)]
enum Text {
    Plain(String),
    Repeat(String, u16),
}

impl Text {
    fn build(&self) -> String {
        match self {
            Text::Plain(s) => s.clone(),
            Text::Repeat(s, n) => {
                let n = usize::from(*n).min(MAX_TEXT_BYTES / s.len().max(1));
                s.repeat(n)
            }
        }
    }
}

/// A JSON value for a field: mostly strings, but every other type too, to reach the type checks.
#[derive(Arbitrary, Debug)]
enum Val {
    Str(Text),
    Null,
    Int(i64),
    Bool(bool),
    Array(Vec<Text>),
    Object(Vec<(Text, Text)>),
}

impl Val {
    fn build(&self) -> Value {
        match self {
            Val::Str(t) => Value::String(t.build()),
            Val::Null => Value::Null,
            Val::Int(i) => Value::from(*i),
            Val::Bool(b) => Value::Bool(*b),
            Val::Array(items) => Value::Array(items.iter().map(|t| t.build().into()).collect()),
            Val::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.build(), Value::String(v.build())))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Context {
    /// Entries as given (a later duplicate key replaces an earlier one, as in serde_json).
    Entries(Vec<(Text, Val)>),
    /// `count` (mod 64) distinct keys sharing one value: around the 32-entry bound.
    Many { count: u8, value: Text },
    /// Not an object at all (or `null`).
    Other(Val),
}

impl Context {
    fn build(&self) -> Value {
        match self {
            Context::Entries(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.build(), v.build()))
                    .collect(),
            ),
            Context::Many { count, value } => {
                let value = value.build();
                Value::Object(
                    (0..count % 64)
                        .map(|i| (format!("k{i}"), Value::String(value.clone())))
                        .collect(),
                )
            }
            Context::Other(v) => v.build(),
        }
    }
}

/// The token object.
#[derive(Arbitrary, Debug)]
struct Body {
    token: Option<Val>,
    alias: Option<Val>,
    /// When both are strings, make the alias equal to the token (else they rarely agree).
    alias_same_as_token: bool,
    signup_id: Option<Val>,
    context: Option<Context>,
    submitted_at: Option<Val>,
    /// Other fields, ignored by the parser (known names are dropped here).
    extras: Vec<(Text, Val)>,
}

impl Body {
    fn build(&self) -> Map<String, Value> {
        let mut object = Map::new();
        for (key, value) in &self.extras {
            let key = key.build();
            if !KNOWN_KEYS.contains(&key.as_str()) {
                object.insert(key, value.build());
            }
        }
        let token = self.token.as_ref().map(Val::build);
        if let Some(token) = &token {
            object.insert(PRIMARY.into(), token.clone());
        }
        match (&self.alias, &token) {
            (Some(_), Some(Value::String(t))) if self.alias_same_as_token => {
                object.insert(ALIAS.into(), Value::String(t.clone()));
            }
            (Some(alias), _) => {
                object.insert(ALIAS.into(), alias.build());
            }
            (None, _) => {}
        }
        if let Some(v) = &self.signup_id {
            object.insert("signupId".into(), v.build());
        }
        if let Some(c) = &self.context {
            object.insert("context".into(), c.build());
        }
        if let Some(v) = &self.submitted_at {
            object.insert("submittedAt".into(), v.build());
        }
        object
    }
}

#[derive(Arbitrary, Debug)]
enum Envelope {
    /// The token object is the body.
    Bare,
    /// `{"Type":"Notification","Message":"<the object, as a JSON string>", ...}`.
    Sns {
        /// Surround the inner JSON string with whitespace (the parser trims it).
        pad_inner: bool,
        /// Put `"Type":"Notification"` in the inner object too: it must not be unwrapped again.
        inner_type: bool,
        /// Add the other fields a real SNS notification has.
        full: bool,
    },
    /// The object itself as `Message`: refused (SNS always sends a string).
    SnsObjectMessage,
    /// An SNS notification without `Message`: refused.
    SnsNoMessage,
    /// `Message` is a string that is not a JSON object, or not a string: refused.
    SnsOtherMessage(Val),
}

#[derive(Arbitrary, Debug)]
struct Input {
    body: Body,
    envelope: Envelope,
    pretty: bool,
    /// Whitespace around the whole body (the parser trims it).
    pad: bool,
}

/// What the contract says about a body.
#[derive(Debug, PartialEq)]
enum Expected {
    Accepted {
        token: String,
        signup_id: Option<String>,
        context: BTreeMap<String, String>,
        submitted_at: Option<String>,
    },
    /// Refused; `Some(raw)` when the refusal must carry the fingerprint of the token `raw`.
    Refused(Option<String>),
}

/// The reference model of a token object (independent of src/message.rs's code).
fn model(object: &Map<String, Value>) -> Expected {
    use Expected::Refused;
    let field = |key: &str| object.get(key).filter(|v| !v.is_null());

    let raw = match (field(PRIMARY), field(ALIAS)) {
        (None, None) => return Refused(None),
        (Some(v), None) | (None, Some(v)) => match v.as_str() {
            Some(s) => s,
            None => return Refused(None),
        },
        (Some(a), Some(b)) => match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) if a == b => a,
            (Some(a), Some(_)) => return Refused(Some(a.to_owned())),
            _ => return Refused(None),
        },
    };
    if raw.is_empty() {
        return Refused(None);
    }
    if raw.len() > MAX_TOKEN_BYTES || !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Refused(Some(raw.to_owned()));
    }
    let refused = || Refused(Some(raw.to_owned()));

    let signup_id = match field("signupId") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_SIGNUP_ID_CHARS => Some(s.clone()),
        Some(_) => return refused(),
    };
    let context = match field("context") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) if map.len() <= MAX_CONTEXT_ENTRIES => {
            let mut context = BTreeMap::new();
            for (key, value) in map {
                match value {
                    Value::String(value)
                        if key.chars().count() <= MAX_CONTEXT_VALUE_CHARS
                            && value.chars().count() <= MAX_CONTEXT_VALUE_CHARS =>
                    {
                        context.insert(key.clone(), value.clone());
                    }
                    _ => return refused(),
                }
            }
            context
        }
        Some(_) => return refused(),
    };
    let submitted_at = match field("submittedAt") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return refused(),
    };
    Expected::Accepted {
        token: raw.to_owned(),
        signup_id,
        context,
        submitted_at,
    }
}

fn to_json(value: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.expect("a serde_json Value serializes")
}

fn sns(message: Option<Value>, full: bool) -> Value {
    let mut envelope = Map::new();
    envelope.insert("Type".into(), "Notification".into());
    if full {
        envelope.insert("MessageId".into(), "8f1c-fuzz".into());
        envelope.insert(
            "TopicArn".into(),
            "arn:aws:sns:us-east-1:123456789012:tokens".into(),
        );
        envelope.insert("Timestamp".into(), "2026-11-24T00:00:00.000Z".into());
        envelope.insert("SignatureVersion".into(), "1".into());
    }
    if let Some(message) = message {
        envelope.insert("Message".into(), message);
    }
    Value::Object(envelope)
}

fuzz_target!(|input: Input| {
    let mut object = input.body.build();
    let (outer, expected) = match &input.envelope {
        Envelope::Bare => {
            let expected = model(&object);
            (Value::Object(object), expected)
        }
        Envelope::Sns {
            pad_inner,
            inner_type,
            full,
        } => {
            if *inner_type {
                object.insert("Type".into(), "Notification".into());
            }
            let expected = model(&object);
            let mut inner = to_json(&Value::Object(object), input.pretty);
            if *pad_inner {
                inner = format!(" \n\t{inner}\r\n ");
            }
            (sns(Some(Value::String(inner)), *full), expected)
        }
        Envelope::SnsObjectMessage => (
            sns(Some(Value::Object(object)), false),
            Expected::Refused(None),
        ),
        Envelope::SnsNoMessage => (sns(None, true), Expected::Refused(None)),
        Envelope::SnsOtherMessage(message) => {
            let message = match message.build() {
                // A string is parsed as JSON: refused unless it is an object, which is the `Sns`
                // case; keep this one to strings that are not.
                Value::String(s) if s.trim_start().starts_with('{') => {
                    Value::String(format!("[{s}"))
                }
                other => other,
            };
            (sns(Some(message), false), Expected::Refused(None))
        }
    };
    let mut body = to_json(&outer, input.pretty);
    if input.pad {
        body = format!("\n  {body}\t\r\n");
    }

    let result = common::parse_and_check(&body);

    // The tokens in the body, to check that a refusal does not repeat them.
    let mut tokens = Vec::new();
    if let Some(Value::String(t)) = input.body.token.as_ref().map(Val::build) {
        tokens.push(t);
    }
    if let Some(Value::String(t)) = input.body.alias.as_ref().map(Val::build) {
        tokens.push(t);
    }

    match (&result, &expected) {
        (
            Ok(request),
            Expected::Accepted {
                token,
                signup_id,
                context,
                submitted_at,
            },
        ) => {
            assert_eq!(request.token.expose(), token, "token");
            assert_eq!(&request.signup_id, signup_id, "signupId");
            assert_eq!(&request.context, context, "context");
            assert_eq!(&request.submitted_at, submitted_at, "submittedAt");
        }
        (Err(malformed), Expected::Refused(fingerprint_of)) => {
            assert_eq!(
                malformed.fingerprint,
                fingerprint_of.as_deref().map(Fingerprint::of),
                "fingerprint of the refusal ({})",
                malformed.detail
            );
            for token in &tokens {
                if token.len() >= 16 && !common::could_be_detail_text(token) {
                    assert!(
                        !malformed.detail.contains(token.as_str()),
                        "detail repeats the token: {}",
                        malformed.detail
                    );
                }
            }
        }
        (Ok(request), Expected::Refused(_)) => {
            panic!("accepted a body the contract refuses: {request:?}")
        }
        (Err(malformed), Expected::Accepted { .. }) => {
            panic!("refused a body the contract accepts: {}", malformed.detail)
        }
    }
});
