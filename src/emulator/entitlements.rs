//! The Entitlement Service's data: what each customer is entitled to, set by tests, and the
//! filtering and pagination `GetEntitlements` applies to it.
//!
//! Unlike registration tokens, entitlements cannot describe themselves (the caller only sends a
//! product code and filters), so they are stored: through [`RunningEmulator::set_entitlements`]
//! (crate::emulator::RunningEmulator::set_entitlements) or `POST /emulator/entitlements`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model;

/// The most entitlements one page holds, and the page size when the caller gives none
/// (`PageSizeInteger` in the model: 1 to 25).
pub const MAX_PAGE_SIZE: usize = 25;

/// An entitlement's value: exactly one of the model's `EntitlementValue` members. Serializes as the
/// wire shape, e.g. `{"IntegerValue": 10}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntitlementValue {
    #[serde(rename = "IntegerValue")]
    Integer(i32),
    #[serde(rename = "DoubleValue")]
    Double(f64),
    #[serde(rename = "BooleanValue")]
    Boolean(bool),
    #[serde(rename = "StringValue")]
    String(String),
}

/// One dimension a customer is entitled to. Build with [`TestEntitlement::integer`] and friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestEntitlement {
    #[serde(rename = "Dimension")]
    pub dimension: String,
    #[serde(rename = "Value")]
    pub value: EntitlementValue,
    /// Unix seconds.
    #[serde(
        rename = "ExpirationDate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_date: Option<i64>,
}

impl TestEntitlement {
    pub fn new(dimension: impl Into<String>, value: EntitlementValue) -> Self {
        Self {
            dimension: dimension.into(),
            value,
            expiration_date: None,
        }
    }

    pub fn integer(dimension: impl Into<String>, value: i32) -> Self {
        Self::new(dimension, EntitlementValue::Integer(value))
    }

    pub fn double(dimension: impl Into<String>, value: f64) -> Self {
        Self::new(dimension, EntitlementValue::Double(value))
    }

    pub fn boolean(dimension: impl Into<String>, value: bool) -> Self {
        Self::new(dimension, EntitlementValue::Boolean(value))
    }

    pub fn string(dimension: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(dimension, EntitlementValue::String(value.into()))
    }

    pub fn expires_at(mut self, unix_secs: i64) -> Self {
        self.expiration_date = Some(unix_secs);
        self
    }
}

/// Everything one customer is entitled to for one product; setting it replaces that customer's
/// previous set for the product. Also the body of `POST /emulator/entitlements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerEntitlements {
    #[serde(rename = "productCode")]
    pub product_code: String,
    #[serde(rename = "customerAWSAccountId", default)]
    pub customer_aws_account_id: Option<String>,
    #[serde(rename = "customerIdentifier", default)]
    pub customer_identifier: Option<String>,
    #[serde(rename = "licenseArn", default)]
    pub license_arn: Option<String>,
    #[serde(default)]
    pub entitlements: Vec<TestEntitlement>,
}

/// Why a [`CustomerEntitlements`] holds values GetEntitlements could never return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitlementError {
    #[error("productCode must be 1 to 255 characters of [-a-zA-Z0-9/=:_.@]")]
    Product,
    #[error("give customerAWSAccountId or customerIdentifier (or both)")]
    NoCustomer,
    #[error("customerAWSAccountId must be a 12-digit AWS account id")]
    Account,
    #[error("customerIdentifier must be non-empty without whitespace")]
    Customer,
    #[error(
        "licenseArn must be a license ARN: arn:aws:license-manager::<12 digits>:license:l-<id>"
    )]
    License,
    #[error("entitlement {0}: Dimension must be non-empty without whitespace")]
    Dimension(usize),
    #[error("entitlement {0}: DoubleValue must be a finite number")]
    Double(usize),
}

impl CustomerEntitlements {
    /// A customer known by AWS account id, the identifier new integrations use.
    pub fn for_account(product_code: impl Into<String>, account: impl Into<String>) -> Self {
        Self::empty(product_code.into(), Some(account.into()), None)
    }

    /// A customer known by the legacy CustomerIdentifier.
    pub fn for_customer(product_code: impl Into<String>, customer: impl Into<String>) -> Self {
        Self::empty(product_code.into(), None, Some(customer.into()))
    }

    fn empty(product_code: String, account: Option<String>, customer: Option<String>) -> Self {
        Self {
            product_code,
            customer_aws_account_id: account,
            customer_identifier: customer,
            license_arn: None,
            entitlements: Vec::new(),
        }
    }

    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.customer_aws_account_id = Some(account.into());
        self
    }

    pub fn customer(mut self, customer: impl Into<String>) -> Self {
        self.customer_identifier = Some(customer.into());
        self
    }

    pub fn license(mut self, license_arn: impl Into<String>) -> Self {
        self.license_arn = Some(license_arn.into());
        self
    }

    pub fn with(mut self, entitlement: TestEntitlement) -> Self {
        self.entitlements.push(entitlement);
        self
    }

    /// Checks every value against the Entitlement Service model (and real account/ARN formats).
    pub fn validate(&self) -> Result<(), EntitlementError> {
        if !model::is_product_code(&self.product_code) {
            return Err(EntitlementError::Product);
        }
        match (&self.customer_aws_account_id, &self.customer_identifier) {
            (None, None) => return Err(EntitlementError::NoCustomer),
            (Some(account), _) if !model::is_account_id(account) => {
                return Err(EntitlementError::Account)
            }
            (_, Some(customer)) if !model::is_non_empty_string(customer) => {
                return Err(EntitlementError::Customer)
            }
            _ => {}
        }
        if self
            .license_arn
            .as_deref()
            .is_some_and(|arn| !model::is_license_arn(arn))
        {
            return Err(EntitlementError::License);
        }
        for (i, entitlement) in self.entitlements.iter().enumerate() {
            if !model::is_non_empty_string(&entitlement.dimension) {
                return Err(EntitlementError::Dimension(i));
            }
            if matches!(entitlement.value, EntitlementValue::Double(d) if !d.is_finite()) {
                return Err(EntitlementError::Double(i));
            }
        }
        Ok(())
    }
}

/// The model's `GetEntitlementFilterName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterName {
    CustomerIdentifier,
    CustomerAwsAccountId,
    Dimension,
    LicenseArn,
}

impl FilterName {
    pub const ALL: [Self; 4] = [
        Self::CustomerIdentifier,
        Self::CustomerAwsAccountId,
        Self::Dimension,
        Self::LicenseArn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerIdentifier => "CUSTOMER_IDENTIFIER",
            Self::CustomerAwsAccountId => "CUSTOMER_AWS_ACCOUNT_ID",
            Self::Dimension => "DIMENSION",
            Self::LicenseArn => "LICENSE_ARN",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// A validated GetEntitlements request: which entitlements, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementQuery {
    pub product_code: String,
    /// Values are OR-ed within a filter, filters AND-ed, as the model documents.
    pub filter: BTreeMap<FilterName, Vec<String>>,
    pub offset: usize,
    pub page_size: usize,
}

impl EntitlementQuery {
    /// Names what is being paged through, so a NextToken only continues the query it came from.
    pub fn key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.product_code.as_bytes());
        for (name, values) in &self.filter {
            hasher.update([0]);
            hasher.update(name.as_str());
            for value in values {
                hasher.update([1]);
                hasher.update(value.as_bytes());
            }
        }
        let mut key = hex::encode(hasher.finalize());
        key.truncate(16);
        key
    }

    /// The opaque NextToken that continues this query at `offset`.
    pub fn next_token(&self, offset: usize) -> String {
        URL_SAFE_NO_PAD.encode(format!("ent1.{offset}.{}", self.key()))
    }

    /// The offset a NextToken stands for, if it came from this query.
    pub fn offset_of(&self, token: &str) -> Option<usize> {
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (offset, key) = raw.strip_prefix("ent1.")?.split_once('.')?;
        (key == self.key()).then(|| offset.parse().ok())?
    }

    fn matches(&self, set: &CustomerEntitlements, entitlement: &TestEntitlement) -> bool {
        self.filter.iter().all(|(name, values)| {
            let field = match name {
                FilterName::CustomerIdentifier => set.customer_identifier.as_deref(),
                FilterName::CustomerAwsAccountId => set.customer_aws_account_id.as_deref(),
                FilterName::Dimension => Some(entitlement.dimension.as_str()),
                FilterName::LicenseArn => set.license_arn.as_deref(),
            };
            field.is_some_and(|field| values.iter().any(|v| v == field))
        })
    }
}

/// One entitlement as GetEntitlements returns it (the model's `Entitlement`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntitlementRecord {
    #[serde(rename = "ProductCode")]
    pub product_code: String,
    #[serde(rename = "Dimension")]
    pub dimension: String,
    #[serde(rename = "CustomerIdentifier", skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    #[serde(
        rename = "CustomerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    #[serde(rename = "Value")]
    pub value: EntitlementValue,
    /// awsJson timestamps are epoch seconds.
    #[serde(rename = "ExpirationDate", skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<i64>,
    #[serde(rename = "LicenseArn", skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
}

/// The `GetEntitlementsResult` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    #[serde(rename = "Entitlements")]
    pub entitlements: Vec<EntitlementRecord>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

type CustomerKey = (String, Option<String>, Option<String>);

/// Every customer's entitlements, in a stable order so pages do not shift between calls.
#[derive(Debug, Default)]
pub struct EntitlementStore {
    sets: BTreeMap<CustomerKey, CustomerEntitlements>,
}

impl EntitlementStore {
    /// Replaces the customer's set for the product (an empty list removes it).
    pub fn set(&mut self, set: CustomerEntitlements) -> Result<(), EntitlementError> {
        set.validate()?;
        let key = (
            set.product_code.clone(),
            set.customer_aws_account_id.clone(),
            set.customer_identifier.clone(),
        );
        if set.entitlements.is_empty() {
            self.sets.remove(&key);
        } else {
            self.sets.insert(key, set);
        }
        Ok(())
    }

    /// One page of the entitlements the query selects. A NextToken is given only while more follow.
    pub fn query(&self, query: &EntitlementQuery) -> Page {
        let matching = self
            .sets
            .values()
            .filter(|set| set.product_code == query.product_code)
            .flat_map(|set| set.entitlements.iter().map(move |e| (set, e)))
            .filter(|(set, e)| query.matches(set, e));
        let mut entitlements = Vec::new();
        let mut more = false;
        for (set, entitlement) in matching.skip(query.offset) {
            if entitlements.len() == query.page_size {
                more = true;
                break;
            }
            entitlements.push(EntitlementRecord {
                product_code: set.product_code.clone(),
                dimension: entitlement.dimension.clone(),
                customer_identifier: set.customer_identifier.clone(),
                customer_aws_account_id: set.customer_aws_account_id.clone(),
                value: entitlement.value.clone(),
                expiration_date: entitlement.expiration_date,
                license_arn: set.license_arn.clone(),
            });
        }
        let next_token = more.then(|| query.next_token(query.offset + entitlements.len()));
        Page {
            entitlements,
            next_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const OTHER: &str = "210987654321";
    const LICENSE: &str = "arn:aws:license-manager::123456789012:license:l-abc";

    fn query(filter: &[(FilterName, &[&str])], page_size: usize) -> EntitlementQuery {
        EntitlementQuery {
            product_code: "prod-abc".to_owned(),
            filter: filter
                .iter()
                .map(|(name, values)| (*name, values.iter().map(|v| (*v).to_owned()).collect()))
                .collect(),
            offset: 0,
            page_size,
        }
    }

    fn store() -> EntitlementStore {
        let mut store = EntitlementStore::default();
        let sets = [
            CustomerEntitlements::for_account("prod-abc", ACCOUNT)
                .license(LICENSE)
                .with(TestEntitlement::integer("seats", 10))
                .with(TestEntitlement::boolean("sso", true).expires_at(1_900_000_000)),
            CustomerEntitlements::for_customer("prod-abc", "cust-2")
                .account(OTHER)
                .with(TestEntitlement::string("tier", "gold")),
            CustomerEntitlements::for_account("prod-other", ACCOUNT)
                .with(TestEntitlement::double("storage", 1.5)),
        ];
        for set in sets {
            store.set(set).expect("valid");
        }
        store
    }

    fn dimensions(page: &Page) -> Vec<&str> {
        page.entitlements
            .iter()
            .map(|e| e.dimension.as_str())
            .collect()
    }

    #[test]
    fn filters_or_within_and_across_keys() {
        let store = store();
        type Filter<'a> = &'a [(FilterName, &'a [&'a str])];
        let cases: [(Filter, &[&str]); 6] = [
            (&[], &["seats", "sso", "tier"]),
            (
                &[(FilterName::CustomerAwsAccountId, &[ACCOUNT])],
                &["seats", "sso"],
            ),
            (&[(FilterName::CustomerIdentifier, &["cust-2"])], &["tier"]),
            (
                &[(FilterName::Dimension, &["sso", "tier"])],
                &["sso", "tier"],
            ),
            (&[(FilterName::LicenseArn, &[LICENSE])], &["seats", "sso"]),
            (
                &[
                    (FilterName::CustomerAwsAccountId, &[ACCOUNT, OTHER]),
                    (FilterName::Dimension, &["tier"]),
                ],
                &["tier"],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                dimensions(&store.query(&query(filter, 25))),
                expected,
                "{filter:?}"
            );
        }
    }

    #[test]
    fn pages_until_the_last_one_without_a_token() {
        let store = store();
        let mut q = query(&[], 2);
        let first = store.query(&q);
        assert_eq!(dimensions(&first), ["seats", "sso"]);
        let token = first.next_token.expect("more follow");
        q.offset = q.offset_of(&token).expect("own token");
        let second = store.query(&q);
        assert_eq!(dimensions(&second), ["tier"]);
        assert_eq!(second.next_token, None);
        // A page that ends exactly at the last entitlement has no token either.
        assert_eq!(store.query(&query(&[], 3)).next_token, None);
    }

    #[test]
    fn tokens_only_continue_their_own_query() {
        let q = query(&[(FilterName::Dimension, &["seats"])], 1);
        let token = q.next_token(7);
        assert_eq!(q.offset_of(&token), Some(7));
        assert_eq!(query(&[], 1).offset_of(&token), None);
        for bad in ["", "x", "ent1.7", "ZW50MS54LnkK"] {
            assert_eq!(q.offset_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn setting_replaces_the_customers_set_and_empty_removes_it() {
        let mut store = store();
        let replacement = CustomerEntitlements::for_account("prod-abc", ACCOUNT)
            .license(LICENSE)
            .with(TestEntitlement::integer("seats", 20));
        store.set(replacement).expect("valid");
        let page = store.query(&query(
            &[(FilterName::CustomerAwsAccountId, &[ACCOUNT])],
            25,
        ));
        assert_eq!(page.entitlements.len(), 1);
        assert_eq!(page.entitlements[0].value, EntitlementValue::Integer(20));
        store
            .set(CustomerEntitlements::for_account("prod-abc", ACCOUNT).license(LICENSE))
            .expect("valid");
        assert_eq!(dimensions(&store.query(&query(&[], 25))), ["tier"]);
    }

    #[test]
    fn rejects_values_the_service_would_never_return() {
        let base = || CustomerEntitlements::for_account("prod-abc", ACCOUNT);
        let cases = [
            (
                CustomerEntitlements::for_account("prod abc", ACCOUNT),
                EntitlementError::Product,
            ),
            (
                CustomerEntitlements::for_account("prod-abc", "42"),
                EntitlementError::Account,
            ),
            (
                CustomerEntitlements::for_customer("prod-abc", "a b"),
                EntitlementError::Customer,
            ),
            (base().license("arn:l"), EntitlementError::License),
            (
                base().with(TestEntitlement::integer("", 1)),
                EntitlementError::Dimension(0),
            ),
            (
                base()
                    .with(TestEntitlement::integer("a", 1))
                    .with(TestEntitlement::double("b", f64::NAN)),
                EntitlementError::Double(1),
            ),
        ];
        for (set, expected) in cases {
            assert_eq!(EntitlementStore::default().set(set), Err(expected));
        }
        let mut nobody = base();
        nobody.customer_aws_account_id = None;
        assert_eq!(nobody.validate(), Err(EntitlementError::NoCustomer));
    }

    #[test]
    fn records_serialize_as_the_wire_shape() {
        let page = store().query(&query(&[(FilterName::Dimension, &["sso"])], 25));
        assert_eq!(
            serde_json::to_value(page).expect("serializes"),
            serde_json::json!({"Entitlements": [{
                "ProductCode": "prod-abc", "Dimension": "sso", "CustomerAWSAccountId": ACCOUNT,
                "Value": {"BooleanValue": true}, "ExpirationDate": 1_900_000_000,
                "LicenseArn": LICENSE,
            }]})
        );
    }
}
