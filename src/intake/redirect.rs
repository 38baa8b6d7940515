//! Where the buyer goes next: the seller's sign-up page with `signupId` added to its query, and
//! the `signupId` itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use url::Url;

/// The query parameter the sign-up page reads.
pub const SIGNUP_ID_PARAM: &str = "signupId";

/// A fresh sign-up id: 128 random bits from the OS-seeded CSPRNG, base64url without padding
/// (22 characters, safe in a URL unescaped).
pub fn new_signup_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `Location` of the 303: `registration` with `signupId=<id>` appended to its query. An
/// existing query keeps its bytes, the fragment stays last, and the id is form-encoded.
pub fn sign_up_location(registration: &Url, signup_id: &str) -> String {
    let mut url = registration.clone();
    url.query_pairs_mut()
        .append_pair(SIGNUP_ID_PARAM, signup_id);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let cases = [
            (
                "https://example.com/signup",
                "abc",
                "https://example.com/signup?signupId=abc",
            ),
            (
                "https://example.com",
                "abc",
                "https://example.com/?signupId=abc",
            ),
            (
                "https://example.com/signup?plan=gold&utm=a%20b",
                "abc",
                "https://example.com/signup?plan=gold&utm=a%20b&signupId=abc",
            ),
            (
                "https://example.com/app#/signup?x=1",
                "abc",
                "https://example.com/app?signupId=abc#/signup?x=1",
            ),
            (
                "https://example.com/signup?",
                "a b&c=d",
                "https://example.com/signup?signupId=a+b%26c%3Dd",
            ),
            (
                "http://127.0.0.1:8081/s?q",
                "Zz-_9",
                "http://127.0.0.1:8081/s?q&signupId=Zz-_9",
            ),
        ];
        for (registration, id, expected) in cases {
            let url = Url::parse(registration).unwrap();
            assert_eq!(sign_up_location(&url, id), expected, "{registration}");
        }
    }

    #[test]
    fn signup_ids_are_url_safe_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1_000).map(|_| new_signup_id()).collect();
        assert_eq!(ids.len(), 1_000);
        for id in &ids {
            assert_eq!(id.len(), 22, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
