//! The BatchMeterUsage adapter (`aws::metering::batch_meter_usage`) against the emulator, through
//! the real SDK over HTTP: every record status, every call error and how it is classified.

use std::time::{Duration, SystemTime};

use aws_sdk_marketplacemetering::config::retry::RetryConfig;
use aws_sdk_marketplacemetering::config::{Credentials, Region};
use aws_sdk_marketplacemetering::Client;
use mp_resolver::aws::metering::{
    batch_meter_usage, classify_metering, FailureKind, MeterResult, MeteredCustomer, RecordOutcome,
    UsageAllocation, UsageRecord,
};
use mp_resolver::emulator::{
    CustomerEntitlements, EmulatorSettings, RunningEmulator, Subscriber, TestEntitlement, TestToken,
};

const ACCOUNT: &str = "123456789012";
const OTHER: &str = "210987654321";
const PRODUCT: &str = "prod-abc";
const LICENSE: &str = "arn:aws:license-manager::123456789012:license:l-abc";

async fn start(settings: EmulatorSettings) -> (RunningEmulator, Client) {
    let emu = RunningEmulator::start(settings)
        .await
        .expect("emulator starts");
    let client = client(&emu, None);
    (emu, client)
}

fn client(emu: &RunningEmulator, timeout: Option<Duration>) -> Client {
    let mut timeouts = aws_sdk_marketplacemetering::config::timeout::TimeoutConfig::builder();
    timeouts.set_operation_timeout(timeout);
    let timeouts = timeouts.build();
    let config = aws_sdk_marketplacemetering::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(emu.endpoint())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .build();
    Client::from_conf(config)
}

fn subscribe(emu: &RunningEmulator, account: &str) {
    emu.subscribe(Subscriber {
        product_code: PRODUCT.into(),
        customer_aws_account_id: Some(account.into()),
        customer_identifier: None,
        license_arn: None,
    })
    .expect("valid subscriber");
}

fn record(account: &str, quantity: i32) -> UsageRecord {
    UsageRecord {
        customer: MeteredCustomer::Account {
            aws_account_id: account.into(),
            license_arn: None,
        },
        dimension: "api_calls".into(),
        quantity,
        timestamp: SystemTime::now(),
        allocations: Vec::new(),
    }
}

fn ago(record: UsageRecord, secs: u64) -> UsageRecord {
    UsageRecord {
        timestamp: SystemTime::now() - Duration::from_secs(secs),
        ..record
    }
}

fn metered(result: MeterResult) -> Vec<RecordOutcome> {
    match result {
        MeterResult::Metered(outcomes) => outcomes,
        other => panic!("not metered: {other:?}"),
    }
}

fn refused(result: MeterResult) -> String {
    match result {
        MeterResult::Refused { exception, .. } => exception,
        other => panic!("not refused: {other:?}"),
    }
}

fn failed(result: MeterResult) -> FailureKind {
    match result {
        MeterResult::Failed(failure) => failure.kind,
        other => panic!("not failed: {other:?}"),
    }
}

fn record_id(outcome: &RecordOutcome) -> &str {
    match outcome {
        RecordOutcome::Success { record_id } => record_id,
        other => panic!("not a success: {other:?}"),
    }
}

#[tokio::test]
async fn an_account_record_is_metered_and_an_identical_resend_gets_the_same_id() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    subscribe(&emu, ACCOUNT);
    // Account-only records are what the raw SDK cannot send (it adds "CustomerIdentifier": "").
    let records = [record(ACCOUNT, 3)];
    let first = metered(batch_meter_usage(&client, Some(PRODUCT), &records).await);
    let again = metered(batch_meter_usage(&client, Some(PRODUCT), &records).await);
    assert_eq!(first, again);
    assert!(!record_id(&first[0]).is_empty());
    let listed = emu.metered_records();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].metering_record_id, record_id(&first[0]));
    assert_eq!(listed[0].customer_identifier, None);
    assert_eq!(emu.stats().records_metered, 2);
}

#[tokio::test]
async fn every_record_status_in_one_call_in_the_order_given() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    subscribe(&emu, ACCOUNT);
    let hour_start = {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        // Far enough into the window that both records share an hour with `now` or the one before.
        now - now % 3600
    };
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let base = UsageRecord {
        timestamp: at(hour_start),
        ..record(ACCOUNT, 5)
    };
    let same_hour_other_quantity = UsageRecord {
        timestamp: at(hour_start + 60).min(SystemTime::now()),
        quantity: 6,
        ..base.clone()
    };
    let stranger = record(OTHER, 1);
    let outcomes = metered(
        batch_meter_usage(
            &client,
            Some(PRODUCT),
            &[stranger, base.clone(), same_hour_other_quantity],
        )
        .await,
    );
    assert_eq!(outcomes[0], RecordOutcome::CustomerNotSubscribed);
    assert!(matches!(outcomes[1], RecordOutcome::Success { .. }));
    assert_eq!(outcomes[2], RecordOutcome::DuplicateRecord);

    // Unprocessed records, injected: the first two of the next call.
    emu.configure(|s| s.metering_unprocessed = 2);
    let outcomes = metered(
        batch_meter_usage(
            &client,
            Some(PRODUCT),
            &[record(ACCOUNT, 1), base, ago(record(ACCOUNT, 1), 2 * 3600)],
        )
        .await,
    );
    assert_eq!(
        &outcomes[..2],
        [RecordOutcome::Unprocessed, RecordOutcome::Unprocessed]
    );
    assert!(matches!(outcomes[2], RecordOutcome::Success { .. }));
    assert_eq!(emu.settings().metering_unprocessed, 0);
    let stats = emu.stats();
    assert_eq!(
        (
            stats.records_metered,
            stats.records_duplicate,
            stats.records_not_subscribed,
            stats.records_unprocessed
        ),
        (2, 1, 1, 2)
    );
}

#[tokio::test]
async fn customers_become_known_by_token_entitlements_or_subscription() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    // The product must be known for CustomerNotSubscribed (else InvalidProductCode).
    subscribe(&emu, "999999999999");
    let legacy = UsageRecord {
        customer: MeteredCustomer::Legacy {
            customer_identifier: "cust-1".into(),
        },
        ..record(ACCOUNT, 1)
    };
    let by_entitlement = record(OTHER, 1);
    let by_subscription = record("111111111111", 1);
    let all = [legacy, by_entitlement, by_subscription];
    assert_eq!(
        metered(batch_meter_usage(&client, Some(PRODUCT), &all).await),
        vec![RecordOutcome::CustomerNotSubscribed; 3]
    );

    let token = TestToken::new(ACCOUNT, PRODUCT)
        .customer("cust-1")
        .encode()
        .expect("valid");
    client
        .resolve_customer()
        .registration_token(token)
        .send()
        .await
        .expect("resolves");
    emu.set_entitlements(
        CustomerEntitlements::for_account(PRODUCT, OTHER)
            .with(TestEntitlement::integer("seats", 1)),
    )
    .expect("valid");
    subscribe(&emu, "111111111111");
    let outcomes = metered(batch_meter_usage(&client, Some(PRODUCT), &all).await);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::Success { .. })),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn metering_by_license_needs_no_product_code() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    emu.subscribe(Subscriber {
        product_code: PRODUCT.into(),
        customer_aws_account_id: Some(ACCOUNT.into()),
        customer_identifier: None,
        license_arn: Some(LICENSE.into()),
    })
    .expect("valid");
    let licensed = UsageRecord {
        customer: MeteredCustomer::Account {
            aws_account_id: ACCOUNT.into(),
            license_arn: Some(LICENSE.into()),
        },
        allocations: vec![
            UsageAllocation {
                quantity: 2,
                tags: vec![("team".into(), "a".into())],
            },
            UsageAllocation {
                quantity: 2,
                tags: Vec::new(),
            },
        ],
        ..record(ACCOUNT, 4)
    };
    let outcomes = metered(batch_meter_usage(&client, None, std::slice::from_ref(&licensed)).await);
    assert!(matches!(outcomes[0], RecordOutcome::Success { .. }));
    let listed = emu.metered_records();
    assert_eq!(listed[0].license_arn.as_deref(), Some(LICENSE));
    assert_eq!(listed[0].allocations.len(), 2);

    // A license of someone else's, or one never issued.
    let stranger = UsageRecord {
        customer: MeteredCustomer::Account {
            aws_account_id: OTHER.into(),
            license_arn: Some(LICENSE.into()),
        },
        ..licensed.clone()
    };
    assert_eq!(
        refused(batch_meter_usage(&client, None, &[stranger]).await),
        "InvalidLicenseException"
    );
    // Without a license, the call needs its product.
    assert_eq!(
        refused(batch_meter_usage(&client, None, &[record(ACCOUNT, 1)]).await),
        "InvalidProductCodeException"
    );
}

#[tokio::test]
async fn refusals_name_the_exception_and_meter_nothing() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    subscribe(&emu, ACCOUNT);
    emu.configure(|s| {
        s.metering_dimensions
            .insert(PRODUCT.into(), vec!["api_calls".into()]);
    });
    let good = record(ACCOUNT, 2);
    let tagged = |tags: Vec<(String, String)>, quantity| UsageRecord {
        allocations: vec![UsageAllocation { quantity, tags }],
        ..good.clone()
    };
    let six_tags = (0..6).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let cases: Vec<(Option<&str>, Vec<UsageRecord>, &str)> = vec![
        // The window (24 h by default), the future beyond the clock skew.
        (
            Some(PRODUCT),
            vec![good.clone(), ago(good.clone(), 24 * 3600 + 60)],
            "TimestampOutOfBoundsException",
        ),
        (
            Some(PRODUCT),
            vec![UsageRecord {
                timestamp: SystemTime::now() + Duration::from_secs(3600),
                ..good.clone()
            }],
            "TimestampOutOfBoundsException",
        ),
        (
            Some("prod-unknown"),
            vec![good.clone()],
            "InvalidProductCodeException",
        ),
        (
            Some(PRODUCT),
            vec![UsageRecord {
                dimension: "storage".into(),
                ..good.clone()
            }],
            "InvalidUsageDimensionException",
        ),
        (
            Some(PRODUCT),
            vec![tagged(six_tags, 2)],
            "InvalidTagException",
        ),
        (
            Some(PRODUCT),
            vec![tagged(vec![("team".into(), "a|b".into())], 2)],
            "InvalidTagException",
        ),
        (
            Some(PRODUCT),
            vec![tagged(vec![("team".into(), "a".into())], 1)],
            "InvalidUsageAllocationsException",
        ),
        (Some(PRODUCT), vec![good.clone(); 26], "ValidationException"),
        (
            Some(PRODUCT),
            vec![UsageRecord {
                quantity: -1,
                ..good.clone()
            }],
            "ValidationException",
        ),
    ];
    for (product, records, exception) in cases {
        let result = batch_meter_usage(&client, product, &records).await;
        assert_eq!(refused(result), exception, "{product:?} {records:?}");
    }
    assert!(emu.metered_records().is_empty());
    // A window set shorter refuses what the default accepted.
    let two_hours_ago = [ago(good.clone(), 2 * 3600)];
    assert!(matches!(
        batch_meter_usage(&client, Some(PRODUCT), &two_hours_ago).await,
        MeterResult::Metered(_)
    ));
    emu.configure(|s| s.metering_window_hours = 1);
    let three_hours_ago = [ago(good, 3 * 3600)];
    assert_eq!(
        refused(batch_meter_usage(&client, Some(PRODUCT), &three_hours_ago).await),
        "TimestampOutOfBoundsException"
    );
}

#[tokio::test]
async fn both_identifiers_are_refused_and_classified() {
    let (emu, client) = start(EmulatorSettings::default()).await;
    subscribe(&emu, ACCOUNT);
    // The adapter's types cannot say both; the raw SDK can.
    let both = aws_sdk_marketplacemetering::types::UsageRecord::builder()
        .timestamp(SystemTime::now().into())
        .customer_identifier("cust-1")
        .customer_aws_account_id(ACCOUNT)
        .dimension("api_calls")
        .build()
        .expect("built");
    let result = client
        .batch_meter_usage()
        .product_code(PRODUCT)
        .usage_records(both)
        .send()
        .await;
    assert_eq!(
        refused(classify_metering(&[record(ACCOUNT, 0)], result)),
        "InvalidCustomerIdentifierException"
    );
}

#[tokio::test]
async fn call_failures_are_retryable_kinds() {
    let (emu, client) = start(EmulatorSettings {
        metering_quota: Some(2.0),
        ..Default::default()
    })
    .await;
    subscribe(&emu, ACCOUNT);
    let records = [record(ACCOUNT, 1)];
    // The quota's burst, then throttled.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(
            match batch_meter_usage(&client, Some(PRODUCT), &records).await {
                MeterResult::Metered(_) => "metered",
                MeterResult::Failed(f) => f.kind.as_str(),
                MeterResult::Refused { .. } => "refused",
            },
        );
    }
    assert_eq!(kinds[0], "metered", "{kinds:?}");
    assert!(kinds.contains(&"throttled"), "{kinds:?}");

    emu.configure(|s| {
        s.metering_quota = None;
        s.metering_throttle = 1;
        s.metering_fail = 1;
    });
    assert_eq!(
        failed(batch_meter_usage(&client, Some(PRODUCT), &records).await),
        FailureKind::Throttled
    );
    assert_eq!(
        failed(batch_meter_usage(&client, Some(PRODUCT), &records).await),
        FailureKind::Transient
    );
    assert!(matches!(
        batch_meter_usage(&client, Some(PRODUCT), &records).await,
        MeterResult::Metered(_)
    ));
    emu.configure(|s| s.disabled = true);
    assert_eq!(
        failed(batch_meter_usage(&client, Some(PRODUCT), &records).await),
        FailureKind::Disabled
    );
    emu.configure(|s| {
        s.disabled = false;
        s.error_rate = 1.0;
    });
    assert_eq!(
        failed(batch_meter_usage(&client, Some(PRODUCT), &records).await),
        FailureKind::Transient
    );

    // A call that times out is transient, and was still judged (and metered) on arrival.
    emu.configure(|s| {
        s.error_rate = 0.0;
        s.latency_ms = 20_000;
    });
    let impatient = self::client(&emu, Some(Duration::from_millis(1_000)));
    let later = [record(OTHER, 1)];
    subscribe(&emu, OTHER);
    assert_eq!(
        failed(batch_meter_usage(&impatient, Some(PRODUCT), &later).await),
        FailureKind::Transient
    );
    let stats = emu.stats();
    let metered_at_first = kinds.iter().filter(|k| **k == "metered").count() as u64;
    assert_eq!(stats.metering_errors, 3, "{stats:?}");
    assert_eq!(stats.records_metered, metered_at_first + 2, "{stats:?}");
    assert_eq!(emu.metered_records().len(), 2);
}
