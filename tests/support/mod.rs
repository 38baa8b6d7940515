//! Test support: a LocalStack endpoint (given, or a container), the emulator on a free port, and a
//! fresh set of queues and a topic per test so tests run in parallel without seeing each other.
#![allow(dead_code)]

pub mod aws_stub;
pub mod faults;
pub mod http;
pub mod intake;
pub mod ledger;
pub mod process;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use mp_resolver::aws::sqs::ReceivedMessage;
use mp_resolver::aws::Clients;
use mp_resolver::config::{self, Settings, Sources};
use mp_resolver::emulator::{EmulatorSettings, RunningEmulator};
use mp_resolver::worker::Worker;
use testcontainers_modules::localstack::LocalStack;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

/// The variable that points the tests at a running LocalStack (scripts/test.sh sets it).
pub const ENDPOINT_VAR: &str = "MPR_TEST_LOCALSTACK_ENDPOINT";

/// How long a test waits for something it expects to happen before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct LocalStackHandle {
    pub endpoint: String,
    _container: Option<ContainerAsync<LocalStack>>,
}

/// A LocalStack to talk to: the one named in the environment, else a container (when Docker is
/// there), else a failure that says how to get one. Under CI a missing endpoint is a failure.
pub async fn localstack() -> LocalStackHandle {
    if let Ok(endpoint) = std::env::var(ENDPOINT_VAR) {
        if !endpoint.trim().is_empty() {
            return LocalStackHandle {
                endpoint: endpoint.trim().trim_end_matches('/').to_owned(),
                _container: None,
            };
        }
    }
    let how = format!(
        "no LocalStack for the tests. Run them with `scripts/test.sh` (it starts LocalStack from a \
         Python venv), or start one yourself (`scripts/localstack.sh start`) and set \
         {ENDPOINT_VAR}=http://127.0.0.1:4566, or run with a Docker engine available."
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {ENDPOINT_VAR} is not set: {how}");
    }
    match LocalStack::default()
        .with_env_var("SERVICES", "sqs,sns,events,sts,iam")
        .start()
        .await
    {
        Ok(container) => {
            let port = container
                .get_host_port_ipv4(4566)
                .await
                .unwrap_or_else(|e| panic!("LocalStack container has no port 4566: {e}"));
            LocalStackHandle {
                endpoint: format!("http://127.0.0.1:{port}"),
                _container: Some(container),
            }
        }
        Err(e) => panic!("{how} (starting a container failed: {e})"),
    }
}

fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"),
        ))
        .endpoint_url(endpoint)
        .build()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Standard,
    Fifo,
}

/// Queues, a topic with a subscriber queue, the emulator, and the settings that tie them together.
pub struct Fixture {
    pub localstack: LocalStackHandle,
    pub emulator: RunningEmulator,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub topic_arn: String,
    pub subscriber_url: String,
    pub settings: Settings,
    ls_config: SdkConfig,
    /// Where this fixture's workers keep their state (a fresh embedded file by default).
    pub store: store::TestStore,
    store_handle: mp_resolver::store::Store,
}

impl Fixture {
    pub async fn new(topic: Topic) -> Self {
        Self::with_env(topic, &[]).await
    }

    /// `extra` are MPR_ variables layered over the test defaults, as a deployment would set them.
    pub async fn with_env(topic: Topic, extra: &[(&str, &str)]) -> Self {
        Self::with_store(topic, store::Backend::Embedded, extra).await
    }

    /// Like [`Fixture::with_env`], with the store of `backend`'s kind.
    pub async fn with_store(topic: Topic, backend: store::Backend, extra: &[(&str, &str)]) -> Self {
        let test_store = store::TestStore::new(backend).await;
        let store_handle = test_store.open().await;
        let localstack = localstack().await;
        let ls_config = sdk_config(&localstack.endpoint);
        let sqs = aws_sdk_sqs::Client::new(&ls_config);
        let sns = aws_sdk_sns::Client::new(&ls_config);
        let name = unique("mpr");

        let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), HashMap::new()).await;
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"10"}}"#);
        let queue_url = create_queue(
            &sqs,
            &name,
            HashMap::from([(QueueAttributeName::RedrivePolicy, redrive)]),
        )
        .await;

        let fifo = topic == Topic::Fifo;
        let suffix = if fifo { ".fifo" } else { "" };
        let mut topic_req = sns.create_topic().name(format!("{name}-customers{suffix}"));
        if fifo {
            topic_req = topic_req.attributes("FifoTopic", "true");
        }
        let topic_arn = topic_req
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("topic arn");
        let mut sub_attrs = HashMap::new();
        if fifo {
            sub_attrs.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        }
        let subscriber_url =
            create_queue(&sqs, &format!("{name}-subscriber{suffix}"), sub_attrs).await;
        subscribe_raw(&sns, &topic_arn, &queue_arn(&sqs, &subscriber_url).await).await;

        let emulator = RunningEmulator::start(EmulatorSettings::default())
            .await
            .expect("start the emulator");

        let mut env: Vec<(String, String)> = [
            ("MPR_QUEUE_URL", queue_url.as_str()),
            ("MPR_DLQ_URL", dlq_url.as_str()),
            ("MPR_TOPIC_ARN", topic_arn.as_str()),
            ("MPR_WORKER__RECEIVE_WAIT_SECS", "1"),
            ("MPR_WORKER__VISIBILITY_TIMEOUT_SECS", "30"),
            ("MPR_WORKER__SHUTDOWN_GRACE_SECS", "10"),
            ("MPR_RESOLVE__INITIAL_BACKOFF_MS", "5"),
            ("MPR_RESOLVE__MAX_BACKOFF_MS", "50"),
            ("MPR_RESOLVE__ATTEMPT_TIMEOUT_MS", "3000"),
            ("MPR_RESOLVE__BUDGET_SECS", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(test_store.env());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = config::load(&Sources {
            env,
            ..Sources::default()
        })
        .expect("test settings are valid")
        .settings;

        Fixture {
            localstack,
            emulator,
            sqs,
            sns,
            queue_url,
            dlq_url,
            topic_arn,
            subscriber_url,
            settings,
            ls_config,
            store: test_store,
            store_handle,
        }
    }

    /// The worker's clients as production builds them, SQS and SNS at LocalStack and
    /// ResolveCustomer and GetEntitlements at the emulator.
    pub fn clients(&self, settings: &Settings) -> Clients {
        let emu_config = self
            .ls_config
            .to_builder()
            .endpoint_url(self.emulator.endpoint())
            .build();
        self.with_marketplace(&emu_config, settings)
    }

    /// SQS and SNS at LocalStack; the two Marketplace clients (and their credentials) from
    /// `marketplace`.
    fn with_marketplace(&self, marketplace: &SdkConfig, settings: &Settings) -> Clients {
        let chosen = Clients::from_sdk_config(marketplace, settings);
        Clients {
            metering: chosen.metering,
            entitlement: chosen.entitlement,
            marketplace_credentials: chosen.marketplace_credentials,
            ..Clients::from_sdk_config(&self.ls_config, settings)
        }
    }

    /// The production SQS client, sent to `endpoint` (e.g. a fault proxy) instead of LocalStack.
    pub fn sqs_via(&self, settings: &Settings, endpoint: &str) -> aws_sdk_sqs::Client {
        self.clients_at(settings, endpoint).sqs
    }

    /// Every client sent to `endpoint` (e.g. a fault proxy), with LocalStack's credentials.
    pub fn clients_at(&self, settings: &Settings, endpoint: &str) -> Clients {
        let config = self.ls_config.to_builder().endpoint_url(endpoint).build();
        Clients::from_sdk_config(&config, settings)
    }

    pub fn worker(&self) -> Arc<Worker> {
        self.worker_with(self.settings.clone())
    }

    pub fn worker_with(&self, settings: Settings) -> Arc<Worker> {
        self.worker_on(settings, self.store_handle.clone())
    }

    /// A worker on `store` instead of the fixture's.
    pub fn worker_on(&self, settings: Settings, store: mp_resolver::store::Store) -> Arc<Worker> {
        Worker::new(self.clients(&settings), settings, store)
    }

    /// Sends a body to the token queue; returns its message id.
    pub async fn send(&self, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send to the token queue")
            .message_id
            .expect("message id")
    }

    /// Receives the next message from the token queue the way the worker does.
    pub async fn receive_token_message(&self, worker: &Worker) -> ReceivedMessage {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut got = worker
                .queue()
                .receive(1, 1, 30)
                .await
                .expect("receive from the token queue");
            if let Some(m) = got.pop() {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no message on the token queue"
            );
        }
    }

    /// Messages visible, in flight and delayed on a queue, all together.
    pub async fn depth(&self, url: &str) -> u64 {
        let (visible, in_flight, delayed) = self.counts(url).await;
        visible + in_flight + delayed
    }

    /// Visible, in-flight and delayed counts of a queue.
    pub async fn counts(&self, url: &str) -> (u64, u64, u64) {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        let get = |name: QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    /// Waits until `n` messages have been read from `url` (deleting them), or fails.
    pub async fn collect(&self, url: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} messages on {url}, got {}",
                out.len()
            );
            out.extend(self.read_once(url, 1).await);
        }
        out
    }

    /// Reads what arrives on `url` within `wait_secs` (one long poll), deleting it.
    pub async fn read_once(&self, url: &str, wait_secs: i32) -> Vec<Received> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let mut out = Vec::new();
        for m in output.messages.unwrap_or_default() {
            self.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                .send()
                .await
                .expect("delete");
            out.push(Received {
                body: m.body.unwrap_or_default(),
                attributes: m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                    .collect(),
                group_id: m
                    .attributes
                    .unwrap_or_default()
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .cloned(),
            });
        }
        out
    }

    /// Deletes the topic (its subscription goes with it), as a misconfiguration or an outage would.
    pub async fn delete_topic(&self) {
        self.sns
            .delete_topic()
            .topic_arn(&self.topic_arn)
            .send()
            .await
            .expect("delete topic");
    }

    /// Creates the topic again under the same name (so the same ARN) and subscribes the subscriber
    /// queue to it again.
    pub async fn recreate_topic(&self) {
        let name = self.topic_arn.rsplit(':').next().expect("topic name");
        // Looked up first: a held event published between the topic's creation and its
        // subscription reaches no subscriber, so that gap is kept to the one Subscribe call.
        let subscriber_arn = queue_arn(&self.sqs, &self.subscriber_url).await;
        let arn = self
            .sns
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("topic arn");
        assert_eq!(arn, self.topic_arn);
        subscribe_raw(&self.sns, &arn, &subscriber_arn).await;
    }

    pub async fn events(&self, n: usize) -> Vec<Received> {
        self.collect(&self.subscriber_url, n).await
    }

    pub async fn dead_letters(&self, n: usize) -> Vec<Received> {
        self.collect(&self.dlq_url, n).await
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub group_id: Option<String>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("event body is JSON")
    }
    pub fn attr(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("attribute {name} missing from {:?}", self.attributes))
    }
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    mut attributes: HashMap<QueueAttributeName, String>,
) -> String {
    attributes
        .entry(QueueAttributeName::VisibilityTimeout)
        .or_insert_with(|| "30".to_owned());
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url
        .expect("queue url")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn")
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::QueueArn)
        .expect("QueueArn attribute")
}

/// Subscribes a queue to a topic with raw message delivery (the body is the event itself).
async fn subscribe_raw(sns: &aws_sdk_sns::Client, topic_arn: &str, queue_arn: &str) {
    sns.subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("subscribe");
}

/// sha256(token), first 32 hex chars, computed independently of the library.
pub fn expected_event_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))[..32].to_owned()
}

impl Fixture {
    /// Sends many bodies to the token queue, ten per SendMessageBatch call.
    pub async fn send_all(&self, bodies: &[String]) {
        self.send_all_to(&self.queue_url, bodies).await;
    }

    /// Sends many bodies to the queue at `url`, ten per SendMessageBatch call.
    pub async fn send_all_to(&self, url: &str, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("batch entry")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send batch");
            assert!(
                out.failed.is_empty(),
                "batch send failures: {:?}",
                out.failed
            );
        }
    }

    /// Visible and in-flight counts of a queue, separately.
    pub async fn visible_and_in_flight(&self, url: &str) -> (u64, u64) {
        let (visible, in_flight, _) = self.counts(url).await;
        (visible, in_flight)
    }

    /// The environment that makes the real binary use this fixture, as a deployment would set it.
    pub fn binary_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("MPR_QUEUE_URL", self.queue_url.as_str()),
            ("MPR_DLQ_URL", self.dlq_url.as_str()),
            ("MPR_TOPIC_ARN", self.topic_arn.as_str()),
            ("MPR_WORKER__RECEIVE_WAIT_SECS", "1"),
            ("MPR_ADMIN__LISTEN", "127.0.0.1:0"),
            ("MPR_LOG__FORMAT", "json"),
            ("AWS_ENDPOINT_URL", self.localstack.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push((
            "AWS_ENDPOINT_URL_MARKETPLACE_METERING".to_owned(),
            self.emulator.endpoint(),
        ));
        env.extend(self.store.env());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// The store this fixture's workers use, opened in this process.
    pub fn store_handle(&self) -> &mp_resolver::store::Store {
        &self.store_handle
    }
}

/// Polls `check` (an async condition) until it holds or PATIENCE runs out.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, PATIENCE, check).await
}

/// Polls `check` until it holds or `limit` runs out.
pub async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        // Polling an external system (SQS, HTTP) has no notification to await; back off gently.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

// Helpers for the operator tools' tests (tests/ops.rs).
impl Fixture {
    /// A fresh queue beside the fixture's, FIFO or standard, with `attributes`; returns its URL.
    pub async fn extra_queue(
        &self,
        fifo: bool,
        mut attributes: HashMap<QueueAttributeName, String>,
    ) -> String {
        let mut name = unique("mpr-extra");
        if fifo {
            name.push_str(".fifo");
            attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        }
        create_queue(&self.sqs, &name, attributes).await
    }

    /// The ARN of a queue.
    pub async fn arn_of(&self, url: &str) -> String {
        queue_arn(&self.sqs, url).await
    }

    /// A fresh standard queue and its dead-letter queue, the first redriving to the second after
    /// `max_receive_count` receives: (queue URL, DLQ URL).
    pub async fn queue_with_dlq(&self, max_receive_count: u32) -> (String, String) {
        let dlq = self.extra_queue(false, HashMap::new()).await;
        let policy = serde_json::json!({
            "deadLetterTargetArn": self.arn_of(&dlq).await,
            "maxReceiveCount": max_receive_count.to_string(),
        });
        let queue = self
            .extra_queue(
                false,
                HashMap::from([(QueueAttributeName::RedrivePolicy, policy.to_string())]),
            )
            .await;
        (queue, dlq)
    }

    /// [`Fixture::clients`] with the Marketplace clients on the assumed role of
    /// `settings.marketplace`: AssumeRole goes to `sts_endpoint` (LocalStack's STS, or somewhere
    /// that does not answer), the Marketplace calls still to the emulator.
    pub async fn clients_with_role(&self, settings: &Settings, sts_endpoint: &str) -> Clients {
        let sts = self
            .ls_config
            .to_builder()
            .endpoint_url(sts_endpoint)
            .build();
        let marketplace =
            mp_resolver::aws::clients::marketplace_sdk_config(&sts, &settings.marketplace)
                .await
                .to_builder()
                .endpoint_url(self.emulator.endpoint())
                .build();
        self.with_marketplace(&marketplace, settings)
    }

    /// The production client set, with ResolveCustomer sent to `metering_endpoint` instead of
    /// the fixture's emulator.
    pub fn clients_with_metering(&self, settings: &Settings, metering_endpoint: &str) -> Clients {
        Clients {
            metering: self.clients_at(settings, metering_endpoint).metering,
            ..self.clients(settings)
        }
    }

    /// [`Fixture::clients`] with SNS sent to `sns_endpoint` (e.g. a fault proxy) instead of
    /// LocalStack.
    pub fn clients_with_sns(&self, settings: &Settings, sns_endpoint: &str) -> Clients {
        Clients {
            sns: self.clients_at(settings, sns_endpoint).sns,
            ..self.clients(settings)
        }
    }
}

/// One request to a LocalStack service the crate has no client for (EventBridge, IAM), with a
/// SigV4-shaped `Authorization` header naming `service`: LocalStack routes on the credential scope
/// (and `X-Amz-Target`, among `headers`) and does not check the signature. Panics unless it
/// answers 200; the whole response otherwise.
pub async fn localstack_request(
    endpoint: &str,
    service: &str,
    content_type: &str,
    headers: &str,
    body: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = endpoint.trim_start_matches("http://");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n{headers}\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect to LocalStack");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{service} request failed: {response}"
    );
    response
}
