//! The two wire protocols the emulator answers in, as the real endpoints do:
//!
//! - **awsJson 1.1**: `POST /` with `X-Amz-Target: <Service>.<Operation>`, JSON bodies. What
//!   `aws-sdk-marketplacemetering`, the AWS CLI, boto3 and older SDKs send.
//! - **Smithy RPC v2 CBOR**: `POST /service/<Service>/operation/<Operation>` with
//!   `smithy-protocol: rpc-v2-cbor`, CBOR bodies. What current `aws-sdk-marketplaceentitlement`
//!   sends by default (the Entitlement Service model declares both protocols).
//!
//! Both carry the same members, so requests are decoded into one JSON value and validated once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::wire::{self, ApiError};

pub const CBOR_CONTENT_TYPE: &str = "application/cbor";
pub const SMITHY_PROTOCOL_HEADER: &str = "smithy-protocol";
pub const RPC_V2_CBOR: &str = "rpc-v2-cbor";

/// The output member awsJson sends as epoch seconds and RPC v2 CBOR as a tag-1 timestamp.
const TIMESTAMP_MEMBERS: [&str; 1] = ["ExpirationDate"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    AwsJson,
    RpcV2Cbor,
}

impl Protocol {
    /// The request body as a JSON object, whatever it was sent as.
    pub fn decode(self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        match self {
            Self::AwsJson => wire::parse_object(body),
            // An operation without input members may send no body at all.
            Self::RpcV2Cbor if body.is_empty() => Ok(serde_json::json!({})),
            Self::RpcV2Cbor => {
                let value: serde_json::Value = ciborium::from_reader(body).map_err(|_| {
                    wire::serialization_error("Could not parse the CBOR request body")
                })?;
                if value.is_object() {
                    Ok(value)
                } else {
                    Err(wire::serialization_error(
                        "The request body must be a CBOR map",
                    ))
                }
            }
        }
    }

    /// The response for an operation's result, with a request id as the SDK reports it in errors,
    /// and errors named in `x-amzn-ErrorType` as well as in the body's `__type`.
    pub fn respond<T: Serialize>(self, result: Result<T, ApiError>) -> Response {
        let result = result
            .and_then(|output| serde_json::to_value(output).map_err(|_| wire::internal_error()));
        let error_type = result.as_ref().err().map(|error| error.code);
        let (status, body) = match result {
            Ok(output) => (StatusCode::OK, output),
            Err(error) => (error.status, error.body()),
        };
        let mut response = match self {
            Self::AwsJson => (
                status,
                [(header::CONTENT_TYPE, wire::CONTENT_TYPE)],
                body.to_string(),
            )
                .into_response(),
            Self::RpcV2Cbor => {
                let mut bytes = Vec::new();
                if ciborium::into_writer(&to_cbor(body, false), &mut bytes).is_err() {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                let mut response =
                    (status, [(header::CONTENT_TYPE, CBOR_CONTENT_TYPE)], bytes).into_response();
                response.headers_mut().insert(
                    SMITHY_PROTOCOL_HEADER,
                    HeaderValue::from_static(RPC_V2_CBOR),
                );
                response
            }
        };
        let headers = response.headers_mut();
        if let Some(code) = error_type {
            headers.insert(wire::ERROR_TYPE_HEADER, HeaderValue::from_static(code));
        }
        if let Ok(id) = HeaderValue::from_str(&request_id()) {
            headers.insert(wire::REQUEST_ID_HEADER, id);
        }
        response
    }
}

/// JSON to CBOR, turning timestamp members into tag 1 (epoch seconds) as RPC v2 CBOR requires.
fn to_cbor(value: serde_json::Value, timestamp: bool) -> ciborium::Value {
    use ciborium::Value as Cbor;
    use serde_json::Value as Json;
    let cbor = match value {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cbor::Integer(i.into()),
            (None, Some(u)) => Cbor::Integer(u.into()),
            _ => Cbor::Float(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Cbor::Text(s),
        Json::Array(items) => Cbor::Array(items.into_iter().map(|v| to_cbor(v, false)).collect()),
        Json::Object(members) => Cbor::Map(
            members
                .into_iter()
                .map(|(k, v)| {
                    let is_timestamp = TIMESTAMP_MEMBERS.contains(&k.as_str());
                    (Cbor::Text(k), to_cbor(v, is_timestamp))
                })
                .collect(),
        ),
    };
    if timestamp {
        Cbor::Tag(1, Box::new(cbor))
    } else {
        cbor
    }
}

/// A random id in UUID layout, like the real service's.
fn request_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_requests_decode_to_the_same_members_as_json() {
        let json = serde_json::json!({"ProductCode": "p", "MaxResults": 3,
                                      "Filter": {"DIMENSION": ["a", "b"]}});
        let mut cbor = Vec::new();
        ciborium::into_writer(&json, &mut cbor).expect("encodes");
        assert_eq!(Protocol::RpcV2Cbor.decode(&cbor), Ok(json.clone()));
        assert_eq!(
            Protocol::AwsJson.decode(json.to_string().as_bytes()),
            Ok(json)
        );
        assert_eq!(Protocol::RpcV2Cbor.decode(b""), Ok(serde_json::json!({})));
        let mut list = Vec::new();
        ciborium::into_writer(&["a"], &mut list).expect("encodes");
        for bad in [list.as_slice(), b"\xff\x00"] {
            assert_eq!(
                Protocol::RpcV2Cbor.decode(bad).map_err(|e| e.code),
                Err("SerializationException")
            );
        }
    }

    #[test]
    fn timestamps_become_tag_one_and_other_numbers_keep_their_type() {
        let cbor = to_cbor(
            serde_json::json!({"ExpirationDate": 1_900_000_000, "Value": {"DoubleValue": 2.0},
                               "Count": 3}),
            false,
        );
        let ciborium::Value::Map(members) = cbor else {
            panic!("a map: {cbor:?}");
        };
        let get = |key: &str| {
            members
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v.clone())
                .expect("member")
        };
        assert_eq!(
            get("ExpirationDate"),
            ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(1_900_000_000.into())))
        );
        assert_eq!(
            get("Value"),
            ciborium::Value::Map(vec![(
                ciborium::Value::Text("DoubleValue".into()),
                ciborium::Value::Float(2.0)
            )])
        );
        assert_eq!(get("Count"), ciborium::Value::Integer(3.into()));
    }

    #[test]
    fn errors_carry_their_type_in_a_header_in_both_protocols() {
        for protocol in [Protocol::AwsJson, Protocol::RpcV2Cbor] {
            let response = protocol.respond::<()>(Err(wire::throttled()));
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                response.headers()[wire::ERROR_TYPE_HEADER],
                "ThrottlingException"
            );
            assert!(response.headers().contains_key(wire::REQUEST_ID_HEADER));
            let ok = protocol.respond(Ok(serde_json::json!({})));
            assert!(!ok.headers().contains_key(wire::ERROR_TYPE_HEADER));
        }
        let cbor = Protocol::RpcV2Cbor.respond(Ok(serde_json::json!({})));
        assert_eq!(cbor.headers()[SMITHY_PROTOCOL_HEADER], RPC_V2_CBOR);
        assert_eq!(cbor.headers()[header::CONTENT_TYPE], CBOR_CONTENT_TYPE);
    }
}
