//! The store for a test: a fresh embedded file, or a fresh table in the DynamoDB emulator
//! (moto's server, which `scripts/test.sh` starts and names in `MPR_TEST_DYNAMODB_ENDPOINT`).

use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use mp_resolver::store::{self, Store};

/// The variable that points the tests at a running DynamoDB emulator.
pub const DYNAMODB_ENDPOINT_VAR: &str = "MPR_TEST_DYNAMODB_ENDPOINT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Dynamodb,
}

/// Where one test's store lives, as the worker's settings and environment name it.
#[derive(Debug, Clone)]
pub struct TestStore {
    pub backend: Backend,
    /// The embedded file.
    pub path: PathBuf,
    /// The DynamoDB table, and the emulator's endpoint.
    pub table: String,
    pub endpoint: String,
}

impl TestStore {
    /// A new, empty store of `backend`'s kind (for DynamoDB, a table created with
    /// `store::create_table`, as `mp-resolver store create-table` does).
    pub async fn new(backend: Backend) -> Self {
        let name = super::unique("mpr-store");
        match backend {
            Backend::Embedded => TestStore {
                backend,
                path: std::env::temp_dir().join(format!("{name}.db")),
                table: String::new(),
                endpoint: String::new(),
            },
            Backend::Dynamodb => {
                let endpoint = dynamodb_endpoint();
                let test = TestStore {
                    backend,
                    path: PathBuf::new(),
                    table: name,
                    endpoint,
                };
                store::create_table(&test.sdk(), &test.table)
                    .await
                    .unwrap_or_else(|e| panic!("creating table {}: {e}", test.table));
                test
            }
        }
    }

    /// The SDK configuration the store's client is built from (the emulator's endpoint).
    pub fn sdk(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"),
            ))
            .endpoint_url(&self.endpoint)
            .build()
    }

    /// The store, opened as the worker opens it.
    pub async fn open(&self) -> Store {
        match self.backend {
            Backend::Embedded => Store::embedded(&self.path)
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", self.path.display())),
            Backend::Dynamodb => Store::dynamodb(&self.sdk(), &self.table),
        }
    }

    /// The `MPR_` (and SDK endpoint) variables that point a worker process at this store.
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self.backend {
            Backend::Embedded => vec![
                ("MPR_STORE__KIND", "embedded".into()),
                ("MPR_STORE__PATH", self.path.display().to_string()),
            ],
            Backend::Dynamodb => vec![
                ("MPR_STORE__KIND", "dynamodb".into()),
                ("MPR_STORE__TABLE", self.table.clone()),
                ("AWS_ENDPOINT_URL_DYNAMODB", self.endpoint.clone()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if self.backend == Backend::Embedded {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The DynamoDB emulator's endpoint. Under CI a missing one is a failure; elsewhere too, with the
/// way to get one.
pub fn dynamodb_endpoint() -> String {
    match std::env::var(DYNAMODB_ENDPOINT_VAR) {
        Ok(e) if !e.trim().is_empty() => e.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "no DynamoDB emulator for the dynamodb store's tests: run them with `scripts/test.sh` \
             (it starts moto's server from a Python venv), or start one (`scripts/moto.sh start`) \
             and set {DYNAMODB_ENDPOINT_VAR}=http://127.0.0.1:4568"
        ),
    }
}
