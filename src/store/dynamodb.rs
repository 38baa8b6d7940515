//! The DynamoDB backend: one table, partition key `pk` (S), sort key `sk` (S), TTL on `expiresAt`,
//! every item with a `version` (N). One write is a conditional PutItem or DeleteItem; a group of
//! them is one TransactWriteItems. Reads are strongly consistent, so a task sees every write
//! acknowledged before its read began, whichever task made it.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use serde_json::{Map, Number, Value};

use super::{now_secs, Expect, Item, StoreError, Write, EXPIRES_AT, VERSION};

/// The SDK's standard retry (3 attempts) and short timeouts: the store is on the hot path, and a
/// caller that gets `Unavailable` hands its message back rather than waiting.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct DynamoDb {
    client: Client,
    table: String,
}

impl DynamoDb {
    pub(super) fn new(sdk: &SdkConfig, table: &str) -> Self {
        DynamoDb {
            client: client(sdk),
            table: table.to_owned(),
        }
    }

    pub(super) async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, &self.table))?;
        out.item.map(from_attributes).transpose()
    }

    pub(super) async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.len() == 1 {
            let Some(write) = writes.into_iter().next() else {
                return Ok(());
            };
            return self.write_one(write).await;
        }
        let items = writes
            .into_iter()
            .map(|w| transact_item(&self.table, w))
            .collect::<Result<Vec<_>, _>>()?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(e, &self.table))
    }

    async fn write_one(&self, write: Write) -> Result<(), StoreError> {
        let now = now_secs();
        match write {
            Write::Put { item, expect } => {
                let (condition, names, values) = condition(expect, now);
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(to_attributes(&item, expect)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify(e, &self.table))
            }
            Write::Delete { pk, sk, expect } => {
                let (condition, names, values) = condition(expect, now);
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(&pk))
                    .key("sk", s(&sk))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify(e, &self.table))
            }
            check @ Write::Check { .. } => self.write_group_of_one(check).await,
        }
    }

    /// A lone condition check has no single-item call: a transaction of one.
    async fn write_group_of_one(&self, write: Write) -> Result<(), StoreError> {
        let item = transact_item(&self.table, write)?;
        self.client
            .transact_write_items()
            .transact_items(item)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(e, &self.table))
    }

    pub(super) async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        // DynamoDB refuses an empty string in a key condition: no prefix, no begins_with.
        request = if sk_prefix.is_empty() {
            request.key_condition_expression("pk = :pk")
        } else {
            request
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(sk_prefix))
        };
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, &self.table))?;
            for item in page.items.unwrap_or_default() {
                out.push(from_attributes(item)?);
            }
        }
        Ok(out)
    }

    pub(super) async fn scan(&self, pk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(pk, :prefix)")
            .expression_attribute_values(":prefix", s(pk_prefix))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, &self.table))?;
            for item in page.items.unwrap_or_default() {
                out.push(from_attributes(item)?);
            }
        }
        out.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        Ok(out)
    }
}

/// The DynamoDB client: the SDK's own chain (credentials, region, `AWS_ENDPOINT_URL_DYNAMODB`),
/// its standard retry, short timeouts.
pub(super) fn client(sdk: &SdkConfig) -> Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(crate::aws::clients::KeepAlive)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

type Condition = (
    Option<String>,
    Option<HashMap<String, String>>,
    Option<HashMap<String, AttributeValue>>,
);

/// The condition expression of `expect`: an expired item counts as absent, as the TTL sweep may
/// not have removed it yet.
fn condition(expect: Expect, now: i64) -> Condition {
    match expect {
        Expect::Any => (None, None, None),
        Expect::Absent => (
            Some("attribute_not_exists(pk) OR #expires <= :now".into()),
            Some(HashMap::from([("#expires".into(), EXPIRES_AT.into())])),
            Some(HashMap::from([(":now".into(), n(now))])),
        ),
        Expect::Version(v) => (
            Some(
                "#version = :version AND (attribute_not_exists(#expires) OR #expires > :now)"
                    .into(),
            ),
            Some(HashMap::from([
                ("#version".into(), VERSION.into()),
                ("#expires".into(), EXPIRES_AT.into()),
            ])),
            Some(HashMap::from([
                (":version".into(), n(v)),
                (":now".into(), n(now)),
            ])),
        ),
    }
}

fn transact_item(table: &str, write: Write) -> Result<TransactWriteItem, StoreError> {
    let (condition, names, values) = condition(write.expect(), now_secs());
    let built =
        match write {
            Write::Put { item, expect } => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(to_attributes(&item, expect)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            ),
            Write::Delete { pk, sk, .. } => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .key("sk", s(&sk))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            ),
            Write::Check { pk, sk, .. } => TransactWriteItem::builder().condition_check(
                ConditionCheck::builder()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .key("sk", s(&sk))
                    // A check that expects anything still needs an expression: one that always holds.
                    .condition_expression(condition.unwrap_or_else(|| {
                        "attribute_not_exists(pk) OR attribute_exists(pk)".into()
                    }))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            ),
        };
    Ok(built.build())
}

/// The item as DynamoDB attributes; `version` becomes what the write makes it.
fn to_attributes(item: &Item, expect: Expect) -> HashMap<String, AttributeValue> {
    let version = match expect {
        Expect::Absent => 1,
        Expect::Version(v) => v + 1,
        Expect::Any => item.version + 1,
    };
    let mut out: HashMap<String, AttributeValue> = item
        .attrs
        .iter()
        .map(|(k, v)| (k.clone(), to_attribute(v)))
        .collect();
    out.insert("pk".into(), s(&item.pk));
    out.insert("sk".into(), s(&item.sk));
    out.insert(VERSION.into(), n(version));
    if let Some(at) = item.expires_at {
        out.insert(EXPIRES_AT.into(), n(at));
    }
    out
}

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(num) => AttributeValue::N(num.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(values) => AttributeValue::L(values.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(
            map.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
    }
}

fn from_attribute(value: AttributeValue) -> Value {
    match value {
        AttributeValue::S(text) => Value::String(text),
        AttributeValue::N(num) => parse_number(&num),
        AttributeValue::Bool(b) => Value::Bool(b),
        AttributeValue::L(values) => Value::Array(values.into_iter().map(from_attribute).collect()),
        AttributeValue::M(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, from_attribute(v)))
                .collect(),
        ),
        // NULL, and types this store never writes (sets, binary): read as null.
        _ => Value::Null,
    }
}

fn parse_number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::Number(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn from_attributes(mut attrs: HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let mut key = |name: &str| match attrs.remove(name) {
        Some(AttributeValue::S(text)) => Ok(text),
        _ => Err(StoreError::Misconfigured(format!(
            "an item without a string `{name}`: is this table the store's?"
        ))),
    };
    let pk = key("pk")?;
    let sk = key("sk")?;
    let number = |v: Option<AttributeValue>| match v {
        Some(AttributeValue::N(text)) => text.parse::<i64>().ok(),
        _ => None,
    };
    let version = number(attrs.remove(VERSION)).unwrap_or(0).max(0) as u64;
    let expires_at = number(attrs.remove(EXPIRES_AT));
    let attrs: Map<String, Value> = attrs
        .into_iter()
        .map(|(k, v)| (k, from_attribute(v)))
        .collect();
    Ok(Item {
        pk,
        sk,
        version,
        expires_at,
        attrs,
    })
}

/// Turns an SDK error into what the caller does with it.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E>,
    table: &str,
) -> StoreError {
    let code = error.code().map(str::to_owned);
    let message = error.message().map(str::to_owned);
    match code.as_deref() {
        Some("ConditionalCheckFailedException") => StoreError::Conflict,
        // A transaction cancelled for a failed condition (or a concurrent transaction on the same
        // item): nothing was written, as for a lost conditional write.
        Some("TransactionCanceledException")
            if message.as_deref().is_some_and(|m| {
                m.contains("ConditionalCheckFailed") || m.contains("TransactionConflict")
            }) =>
        {
            StoreError::Conflict
        }
        Some("TransactionConflictException") => StoreError::Conflict,
        Some("ResourceNotFoundException") => StoreError::Misconfigured(format!(
            "DynamoDB table {table} does not exist (create it: `mp-resolver store create-table`, \
             or deploy/cloudformation/messaging.yaml)"
        )),
        Some(code) => StoreError::Unavailable(format!(
            "DynamoDB {code}: {}",
            message.as_deref().unwrap_or("no message")
        )),
        None => StoreError::Unavailable(format!(
            "DynamoDB: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&error)
        )),
    }
}

/// What `check` and `store create-table` learn about the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableCheck {
    /// The table exists with the store's key schema.
    Ready { status: String },
    /// No such table.
    Missing,
    /// The table exists with another key schema: not the store's.
    WrongSchema(String),
}

/// Describes `table`: whether it exists with `pk` (S, HASH) and `sk` (S, RANGE).
pub async fn describe_table(sdk: &SdkConfig, table: &str) -> Result<TableCheck, StoreError> {
    let client = client(sdk);
    let out = match client.describe_table().table_name(table).send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(TableCheck::Missing),
        Err(e) => return Err(classify(e, table)),
    };
    let Some(description) = out.table else {
        return Ok(TableCheck::Missing);
    };
    let keys: Vec<(String, String)> = description
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    let types: HashMap<String, String> = description
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    let expected = [("pk", "HASH"), ("sk", "RANGE")];
    let schema_ok = keys.len() == 2
        && expected.iter().all(|(name, kind)| {
            keys.iter().any(|(n, k)| n == name && k == kind)
                && types.get(*name).map(String::as_str) == Some("S")
        });
    if !schema_ok {
        return Ok(TableCheck::WrongSchema(format!(
            "key schema {keys:?}, expected pk (S, HASH) and sk (S, RANGE)"
        )));
    }
    Ok(TableCheck::Ready {
        status: description
            .table_status()
            .map_or("UNKNOWN".into(), |s| s.as_str().to_owned()),
    })
}

/// Creates the store's table (on demand, TTL on `expiresAt`) unless it exists; idempotent.
/// Production tables come from `deploy/`, with point-in-time recovery.
pub async fn create_table(sdk: &SdkConfig, table: &str) -> Result<TableCheck, StoreError> {
    let client = client(sdk);
    if let TableCheck::Missing = describe_table(sdk, table).await? {
        let created = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(definition("pk")?)
            .attribute_definitions(definition("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Created meanwhile by someone else: fine, checked below.
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(classify(e, table)),
        }
    }
    // Wait until ACTIVE (at once in local emulators; seconds on AWS).
    let mut check = describe_table(sdk, table).await?;
    for _ in 0..60 {
        match &check {
            TableCheck::Ready { status } if status != "ACTIVE" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                check = describe_table(sdk, table).await?;
            }
            _ => break,
        }
    }
    if let TableCheck::Ready { .. } = check {
        let ttl = client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(EXPIRES_AT)
                    .build()
                    .map_err(|e| StoreError::Misconfigured(e.to_string()))?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => {}
            // Already enabled: DynamoDB refuses to set it again.
            Err(e) if e.code() == Some("ValidationException") => {}
            Err(e) => return Err(classify(e, table)),
        }
    }
    Ok(check)
}

fn definition(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::Misconfigured(e.to_string()))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| StoreError::Misconfigured(e.to_string()))
}
