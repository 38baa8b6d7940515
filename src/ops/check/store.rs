//! The `store` check: the configured store can be opened, has the store's key schema (DynamoDB),
//! and this process can write and read it back.

use aws_config::SdkConfig;

use super::{Check, CheckResult};
use crate::config::{Settings, StoreKind};
use crate::store::{describe_table, Store, StoreError, TableCheck};

/// The item actions the task role needs on the table (deploy/iam/worker-task-policy.json).
const TABLE_ACTIONS: &str = "dynamodb:GetItem, PutItem, DeleteItem, Query, Scan, \
     ConditionCheckItem (TransactWriteItems) and DescribeTable";

pub async fn store(settings: &Settings, sdk: &SdkConfig) -> CheckResult {
    let s = &settings.store;
    match s.kind {
        StoreKind::Embedded => match Store::open(s, sdk).await {
            Ok(store) => probed(&store, "").await,
            Err(e) => CheckResult::fail(
                Check::Store,
                format!("embedded store {}: {e}", s.path),
                "set MPR_STORE__PATH to a file on a writable local disk (the image uses \
                 /var/lib/mp-resolver/state.db); on ECS with several tasks use store.kind = \
                 \"dynamodb\"",
            ),
        },
        StoreKind::Dynamodb => match describe_table(sdk, &s.table).await {
            Ok(TableCheck::Ready { status }) => {
                let store = match Store::open(s, sdk).await {
                    Ok(store) => store,
                    Err(e) => return failure(&s.table, &e),
                };
                probed(&store, &format!(" ({status})")).await
            }
            Ok(TableCheck::Missing) => CheckResult::fail(
                Check::Store,
                format!(
                    "DynamoDB table {} does not exist (or not in this region)",
                    s.table
                ),
                "deploy it with deploy/cloudformation/messaging.yaml (point-in-time recovery on), \
                 or for local use `mp-resolver store create-table`; then set MPR_STORE__TABLE",
            ),
            Ok(TableCheck::WrongSchema(detail)) => CheckResult::fail(
                Check::Store,
                format!("DynamoDB table {} is not the store's: {detail}", s.table),
                "point MPR_STORE__TABLE at a table with partition key pk (S) and sort key sk (S)",
            ),
            Err(e) => failure(&s.table, &e),
        },
    }
}

async fn probed(store: &Store, status: &str) -> CheckResult {
    match store.probe().await {
        Ok(()) => CheckResult::pass(
            Check::Store,
            format!("{}{status}: written and read back", store.describe()),
        ),
        Err(e) => failure(store.describe(), &e),
    }
}

fn failure(what: &str, error: &StoreError) -> CheckResult {
    CheckResult::fail(
        Check::Store,
        format!("store {what}: {error}"),
        format!(
            "the task role needs {TABLE_ACTIONS} on the table; check the region and \
             AWS_ENDPOINT_URL_DYNAMODB"
        ),
    )
}
