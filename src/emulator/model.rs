//! The value constraints of the Marketplace API models (the Smithy models the SDKs are generated
//! from), so the emulator neither accepts fixtures nor answers values the real services never would.
//!
//! Sources: `marketplace-metering.json` (ProductCode, CustomerIdentifier, LicenseArn) and
//! `marketplace-entitlement-service.json` (NonEmptyString, ProductCode) in the AWS SDK model sets.
//! Where the model is looser than what AWS actually issues, the real format wins and says so.

/// A 12-digit AWS account id. The model's `CustomerAWSAccountId` only asks for digits, but every AWS
/// account id has exactly twelve.
pub fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// `ProductCode`: `^[-a-zA-Z0-9/=:_.@]*$`, at most 255 characters; empty is refused because the
/// operations require it.
pub fn is_product_code(value: &str) -> bool {
    (1..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/=:_.@".contains(&b))
}

/// `CustomerIdentifier`: any characters, at most 255; an absent identifier is left out rather than
/// sent empty.
pub fn is_customer_identifier(value: &str) -> bool {
    (1..=255).contains(&value.chars().count())
}

/// The Marketplace Agreement id in `Metadata.AgreementId`: 1 to 64 characters, the bounds of the
/// Agreement API's `ResourceId` it is meant to be passed to.
pub fn is_agreement_id(value: &str) -> bool {
    (1..=64).contains(&value.chars().count())
}

/// The entitlement model's `NonEmptyString`: `^\S+$`.
pub fn is_non_empty_string(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_whitespace)
}

/// A License Manager license ARN, `arn:aws:license-manager::<12 digits>:license:l-<id>`, which also
/// satisfies the model's generic `LicenseArn` pattern
/// `^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{0,62}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{0,1023}$`.
/// The model alone would accept any ARN; Marketplace only issues license ARNs (partitions such as
/// `aws-cn` and `aws-us-gov` included).
pub fn is_license_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let id = resource.strip_prefix("license:l-").unwrap_or_default();
    *arn == "arn"
        && partition
            .strip_prefix("aws")
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'))
        && *service == "license-manager"
        && region.is_empty()
        && is_account_id(account)
        && !id.is_empty()
        && resource.len() <= 1024
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(is_account_id("123456789012"));
        for bad in [
            "",
            "1",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "١٢٣٤٥٦٧٨٩٠١٢",
        ] {
            assert!(!is_account_id(bad), "{bad}");
        }
    }

    #[test]
    fn product_codes_follow_the_model_pattern() {
        assert!(is_product_code("prod-abc"));
        assert!(is_product_code("a1b2c3d4e5f6g7h8i9j0klmno"));
        assert!(is_product_code("x/y=z:_.@-"));
        assert!(is_product_code(&"p".repeat(255)));
        for bad in ["", "prod abc", "prod#1", "prödukt", &"p".repeat(256)] {
            assert!(!is_product_code(bad), "{bad}");
        }
    }

    #[test]
    fn license_arns_are_license_manager_licenses() {
        for good in [
            "arn:aws:license-manager::123456789012:license:l-abc",
            "arn:aws:license-manager::123456789012:license:l-0123456789abcdef0123456789abcdef",
            "arn:aws-us-gov:license-manager::123456789012:license:l-1",
        ] {
            assert!(is_license_arn(good), "{good}");
        }
        for bad in [
            "",
            "arn:l",
            "l-abc",
            "arn:aws:license-manager::123456789012:license/l-1",
            "arn:aws:license-manager::123456789012:license:l-",
            "arn:aws:license-manager:us-east-1:123456789012:license:l-abc",
            "arn:aws:license-manager::1234:license:l-abc",
            "arn:aws:s3:::bucket",
            "arn:azure:license-manager::123456789012:license:l-abc",
            "arn:aws:license-manager::123456789012:license:l-a b",
            "arn:aws:license-manager::123456789012:grant:g-abc",
        ] {
            assert!(!is_license_arn(bad), "{bad}");
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(is_agreement_id("agmt-1"));
        assert!(is_agreement_id(&"é".repeat(64)));
        assert!(!is_agreement_id(""));
        assert!(!is_agreement_id(&"a".repeat(65)));
        assert!(is_customer_identifier(&"ü".repeat(255)));
        assert!(!is_customer_identifier(""));
        assert!(!is_customer_identifier(&"c".repeat(256)));
    }

    #[test]
    fn non_empty_strings_have_no_whitespace() {
        assert!(is_non_empty_string("seats"));
        for bad in ["", " ", "two words", "tab\there", "line\n"] {
            assert!(!is_non_empty_string(bad), "{bad:?}");
        }
    }
}
