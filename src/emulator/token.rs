//! The emulator's self-describing registration tokens: `emu1.` followed by unpadded base64url of a
//! JSON object that says what the token resolves to and how it should misbehave.
//!
//! Putting the behaviour inside the token keeps the emulator stateless about customers: a test says
//! what it wants in the token it enqueues, and nothing has to be registered with the server first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::model;

/// Prefix of every token the emulator can resolve. Versioned so the scheme can change without old
/// tokens silently meaning something else.
pub const TOKEN_PREFIX: &str = "emu1.";

/// What a test token carries. Build one with [`TestToken::new`] and the chainable setters, then
/// [`TestToken::encode`] it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestToken {
    pub account: String,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    /// Unix seconds; at or after this instant the token answers `ExpiredTokenException`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Seconds after the token's first call; from then on it answers `ExpiredTokenException`, as
    /// AWS does when the seller "held on to the registration token for too long".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The first `n` calls for this token are throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u32>,
    /// After the throttled calls, the next `n` calls answer `InternalServiceErrorException`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<u32>,
}

/// Why a string is not a usable token. Deliberately carries no part of the token, so it can be
/// put in a response or a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the registration token is not an emulator token")]
    Prefix,
    #[error("the registration token is not valid base64url")]
    Base64,
    #[error("the registration token does not carry a valid JSON object")]
    Json,
    #[error("the registration token does not name an account")]
    MissingAccount,
    #[error("the registration token does not name a product")]
    MissingProduct,
    #[error("the registration token's account is not a 12-digit AWS account id")]
    Account,
    #[error("the registration token's product code does not match the API model's ProductCode")]
    Product,
    #[error("the registration token's customer identifier is not 1 to 255 characters")]
    Customer,
    #[error("the registration token's license is not a license ARN (arn:aws:license-manager::…)")]
    License,
    #[error("the registration token's agreement id is not 1 to 64 characters")]
    Agreement,
}

impl TestToken {
    pub fn new(account: impl Into<String>, product: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            product: product.into(),
            customer: None,
            license: None,
            agreement: None,
            exp: None,
            ttl: None,
            throttle: None,
            fail: None,
        }
    }

    pub fn customer(mut self, customer: impl Into<String>) -> Self {
        self.customer = Some(customer.into());
        self
    }

    pub fn license(mut self, license_arn: impl Into<String>) -> Self {
        self.license = Some(license_arn.into());
        self
    }

    pub fn agreement(mut self, agreement_id: impl Into<String>) -> Self {
        self.agreement = Some(agreement_id.into());
        self
    }

    pub fn expires_at(mut self, unix_secs: i64) -> Self {
        self.exp = Some(unix_secs);
        self
    }

    /// Expires `seconds` after the first call that reaches it (see [`TestToken::ttl`](Self#structfield.ttl)).
    pub fn ttl(mut self, seconds: u64) -> Self {
        self.ttl = Some(seconds);
        self
    }

    pub fn throttle(mut self, calls: u32) -> Self {
        self.throttle = Some(calls);
        self
    }

    pub fn fail(mut self, calls: u32) -> Self {
        self.fail = Some(calls);
        self
    }

    /// The token string, or why AWS could never answer with these values (a fixture the real
    /// service would not produce fails here rather than passing a test it should not).
    pub fn encode(&self) -> Result<String, TokenError> {
        self.validate()?;
        let json = serde_json::to_vec(self).map_err(|_| TokenError::Json)?;
        Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json)))
    }

    /// Checks each value against the `ResolveCustomer` output model, so the emulator never answers
    /// something the real service could not (the rules are in `src/emulator/model.rs`).
    pub fn validate(&self) -> Result<(), TokenError> {
        if !model::is_account_id(&self.account) {
            return Err(TokenError::Account);
        }
        if !model::is_product_code(&self.product) {
            return Err(TokenError::Product);
        }
        if self
            .customer
            .as_deref()
            .is_some_and(|c| !model::is_customer_identifier(c))
        {
            return Err(TokenError::Customer);
        }
        if self
            .license
            .as_deref()
            .is_some_and(|l| !model::is_license_arn(l))
        {
            return Err(TokenError::License);
        }
        if self
            .agreement
            .as_deref()
            .is_some_and(|a| !model::is_agreement_id(a))
        {
            return Err(TokenError::Agreement);
        }
        Ok(())
    }

    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let payload = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Base64)?;
        // Parse to a value first: serde's derived struct visitor would also accept a JSON array,
        // and the scheme promises an object.
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| TokenError::Json)?;
        if !value.is_object() {
            return Err(TokenError::Json);
        }
        let object = value.as_object();
        let has = |key: &str| {
            object
                .and_then(|o| o.get(key))
                .and_then(serde_json::Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        // Checked before the typed parse so a missing field gets its own message.
        if !has("account") {
            return Err(TokenError::MissingAccount);
        }
        if !has("product") {
            return Err(TokenError::MissingProduct);
        }
        let token: Self = serde_json::from_value(value).map_err(|_| TokenError::Json)?;
        token.validate()?;
        Ok(token)
    }

    /// Expired once the clock reaches `exp`, so `expires_at(now)` is already expired.
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.exp.is_some_and(|exp| exp <= now_unix)
    }
}

/// A short, stable name for a token that is safe to log: tokens are bearer secrets in the real
/// service, so even the emulator never writes one out.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hex = hex::encode(Sha256::digest(token.as_bytes()));
    hex.truncate(12);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let token = TestToken::new("123456789012", "prod-abc")
            .customer("cust-1")
            .license("arn:aws:license-manager::123456789012:license:l-1")
            .agreement("agmt-1")
            .expires_at(4_000_000_000)
            .ttl(30)
            .throttle(2)
            .fail(1);
        let encoded = token.encode().expect("valid token");
        assert!(encoded.starts_with(TOKEN_PREFIX));
        assert!(!encoded.contains('='), "no padding: {encoded}");
        assert_eq!(TestToken::decode(&encoded), Ok(token));
    }

    #[test]
    fn minimal_token_omits_optional_members() {
        let token = TestToken::new("123456789012", "prod-abc");
        let payload = token.encode().expect("valid token");
        let json = URL_SAFE_NO_PAD
            .decode(&payload[TOKEN_PREFIX.len()..])
            .expect("own encoding is valid base64");
        assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            r#"{"account":"123456789012","product":"prod-abc"}"#
        );
        assert_eq!(TestToken::decode(&payload), Ok(token));
    }

    #[test]
    fn decodes_hand_written_json_with_unknown_members() {
        let token = TestToken::decode(&raw(
            r#"{"account":"123456789012","product":"p","exp":5,"extra":true}"#,
        ))
        .expect("valid");
        assert_eq!(token.exp, Some(5));
    }

    #[test]
    fn rejects_malformed_tokens() {
        let cases = [
            ("", TokenError::Prefix),
            ("abc", TokenError::Prefix),
            ("emu2.eyJ9", TokenError::Prefix),
            ("emu1.***", TokenError::Base64),
            // Padded base64 is not part of the scheme.
            (&format!("{TOKEN_PREFIX}e30="), TokenError::Base64),
            (&raw("not json"), TokenError::Json),
            (&raw(r#"["123456789012","prod-abc"]"#), TokenError::Json),
            (&raw(r#"{"product":"p"}"#), TokenError::MissingAccount),
            (
                &raw(r#"{"account":"","product":"p"}"#),
                TokenError::MissingAccount,
            ),
            (
                &raw(r#"{"account":7,"product":"p"}"#),
                TokenError::MissingAccount,
            ),
            (&raw(r#"{"account":"1"}"#), TokenError::MissingProduct),
            (
                &raw(r#"{"account":"1","product":"p","throttle":-1}"#),
                TokenError::Json,
            ),
            (
                &raw(r#"{"account":"1","product":"p","exp":"soon"}"#),
                TokenError::Json,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(TestToken::decode(token), Err(expected), "token {token:?}");
        }
    }

    #[test]
    fn values_aws_would_never_send_are_refused_by_the_builder_and_the_decoder() {
        let base = || TestToken::new("123456789012", "prod-abc");
        let cases = [
            (TestToken::new("1234", "prod-abc"), TokenError::Account),
            (
                TestToken::new("123456789012", "prod abc"),
                TokenError::Product,
            ),
            (base().customer("c".repeat(256)), TokenError::Customer),
            (base().license("arn:l"), TokenError::License),
            (
                base().license("arn:aws:license-manager::123456789012:license/l-1"),
                TokenError::License,
            ),
            (base().agreement(""), TokenError::Agreement),
            (base().agreement("a".repeat(65)), TokenError::Agreement),
        ];
        for (token, expected) in cases {
            assert_eq!(token.encode(), Err(expected), "{token:?}");
            // A hand-made token with the same values does not resolve either.
            let raw = raw(&serde_json::to_string(&token).expect("serializes"));
            assert_eq!(TestToken::decode(&raw), Err(expected), "{token:?}");
        }
    }

    #[test]
    fn fingerprint_is_short_and_does_not_echo_the_token() {
        let token = TestToken::new("123456789012", "prod-abc")
            .encode()
            .expect("valid token");
        let print = fingerprint(&token);
        assert_eq!(print.len(), 12);
        assert_eq!(print, fingerprint(&token));
        assert!(!token.contains(&print));
    }

    #[test]
    fn expiry_is_inclusive_of_the_exp_second() {
        let token = TestToken::new("1", "p").expires_at(100);
        assert!(!token.is_expired(99));
        assert!(token.is_expired(100));
        assert!(token.is_expired(101));
        assert!(!TestToken::new("1", "p").is_expired(i64::MAX));
    }
}
