//! The customer registry: one item per subscription, the one truth a seller's application (and the
//! usage lane) reads, and what every published lifecycle event is judged against.
//!
//! ```text
//!   pk = "sub#" + licenseArn                            (new integrations)
//!   pk = "sub#" + productCode + "#" + customerIdentifier (legacy integrations)
//!   pk = "sub#agmt#" + agreementId                      (an agreement whose license is not known yet)
//!   sk = "subscription"
//!
//!   pk = "agmt#" + agreementId, sk = "subscription"     the agreement's pointer: subscriptionPk
//! ```
//!
//! Notifications arrive in any order, so an event is applied only if it is newer than the latest
//! one the item applied (its time, ties broken by the event id): an older event changes nothing
//! and is published as `stale` with the current access. Applying bumps `sequence` by one, so a
//! subscriber that keeps the highest `sequence` converges on the registry's state whatever order
//! the topic delivers in. A resolved token fills the customer's identity and sign-up (and grants a
//! subscription it creates) but never moves `latestEventAt` or flips `access`.
//!
//! Agreement events name an agreement, not a license. The agreement's pointer item leads them to
//! the subscription once a license-bearing write (a resolved token, a License Updated) named both;
//! before that they keep a subscription of their own under `sub#agmt#…`, which that write merges
//! into the license's item (histories folded: the newer latest event wins, sequences add up) and
//! deletes, in one atomic group with the pointer.
//!
//! Every write is one conditional group on the versions read (and on the absence of what was
//! absent), retried from a fresh read when another writer got there first. If the process dies
//! just before a group, nothing of it happened: the message comes back and is applied then. If it
//! dies just after, the event is in the item: its redelivery finds it applied (same event id and
//! time) and publishes the item's state without applying it twice.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{Expect, Item, Store, StoreError, Write};
use crate::contract::lifecycle::{Access, Effect, NotificationFields, Verdict};
use crate::contract::CustomerEvent;

/// The sort key of subscription and agreement items.
pub const SUBSCRIPTION_SK: &str = "subscription";
/// The partition key prefix of every subscription item.
pub const SUBSCRIPTION_PREFIX: &str = "sub#";

/// How often a conditional group is retried after losing to another writer. Events of one
/// subscription arrive in bursts (a renewal sends several at once), so each retry waits a
/// little, jittered, to let the winner's write land.
const MAX_CONFLICTS: u32 = 16;

/// The subscription item of a license.
pub fn license_pk(license_arn: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{license_arn}")
}

/// The subscription item of a legacy integration's customer.
pub fn legacy_pk(product_code: &str, customer_identifier: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{product_code}#{customer_identifier}")
}

/// The subscription an agreement keeps until its license is known.
pub fn provisional_pk(agreement_id: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}agmt#{agreement_id}")
}

/// The agreement's pointer to its subscription.
pub fn agreement_pk(agreement_id: &str) -> String {
    format!("agmt#{agreement_id}")
}

/// Who a change is about, as far as its source knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub customer_aws_account_id: Option<String>,
    pub product_code: Option<String>,
    pub license_arn: Option<String>,
    pub customer_identifier: Option<String>,
    pub agreement_id: Option<String>,
}

impl Identity {
    /// The subscription's own key, when this names it: a legacy customer of a product (legacy SNS
    /// notifications name nothing else), else a license.
    pub fn own_pk(&self) -> Option<String> {
        match (
            &self.product_code,
            &self.customer_identifier,
            &self.license_arn,
        ) {
            (Some(product), Some(customer), _) => Some(legacy_pk(product, customer)),
            (_, _, Some(license)) => Some(license_pk(license)),
            _ => None,
        }
    }

    /// Each field this lacks, taken from `other`. `true` when anything was added.
    fn fill_from(&mut self, other: &Identity) -> bool {
        let mut changed = false;
        let mut fill = |mine: &mut Option<String>, theirs: &Option<String>| {
            if mine.is_none() && theirs.is_some() {
                mine.clone_from(theirs);
                changed = true;
            }
        };
        fill(
            &mut self.customer_aws_account_id,
            &other.customer_aws_account_id,
        );
        fill(&mut self.product_code, &other.product_code);
        fill(&mut self.license_arn, &other.license_arn);
        fill(&mut self.customer_identifier, &other.customer_identifier);
        fill(&mut self.agreement_id, &other.agreement_id);
        changed
    }

    /// Whether `value` is one of the ids this names (for `customers show`).
    pub fn names(&self, value: &str) -> bool {
        [
            &self.customer_aws_account_id,
            &self.license_arn,
            &self.customer_identifier,
            &self.agreement_id,
        ]
        .into_iter()
        .any(|field| field.as_deref() == Some(value))
    }
}

impl From<&CustomerEvent> for Identity {
    fn from(event: &CustomerEvent) -> Self {
        Identity {
            customer_aws_account_id: Some(event.customer_aws_account_id.clone()),
            product_code: Some(event.product_code.clone()),
            license_arn: event.license_arn.clone(),
            customer_identifier: event.customer_identifier.clone(),
            agreement_id: event.agreement_id.clone(),
        }
    }
}

impl From<&NotificationFields> for Identity {
    fn from(fields: &NotificationFields) -> Self {
        Identity {
            customer_aws_account_id: fields.customer_aws_account_id.clone(),
            product_code: fields.product_code.clone(),
            license_arn: fields.license_arn.clone(),
            customer_identifier: fields.customer_identifier.clone(),
            agreement_id: fields.agreement_id.clone(),
        }
    }
}

/// Where an event stands in a subscription's history: its time, then its id for ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventMark {
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub event_type: String,
}

impl EventMark {
    /// Same event: a redelivery, or a retry after a crash.
    fn same_as(&self, other: &EventMark) -> bool {
        self.at == other.at && self.event_id == other.event_id
    }

    /// Newer than `other`: later, or as late with a greater id (any fixed rule would do; every
    /// task must pick the same winner).
    fn newer_than(&self, other: &EventMark) -> bool {
        (self.at, &self.event_id) > (other.at, &other.event_id)
    }
}

/// What the registry holds for one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub pk: String,
    pub identity: Identity,
    pub agreement_status: Option<String>,
    pub access: Access,
    /// Access before the latest event applied.
    pub previous_access: Option<Access>,
    /// The latest entitlements read (a list of `{dimension, value, expiresAt}` maps).
    pub entitlements: Option<Value>,
    pub signup_id: Option<String>,
    pub context: BTreeMap<String, String>,
    /// The latest event applied; `None` while only a resolved token wrote the item.
    pub latest: Option<EventMark>,
    /// Why access is what it is: the latest event's `reason` (or `resolved`).
    pub reason: String,
    /// Grows by one per applied event.
    pub sequence: u64,
    pub updated_at: String,
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Subscription {
    fn new(pk: String, identity: Identity, access: Access, reason: &str) -> Self {
        Subscription {
            pk,
            identity,
            agreement_status: None,
            access,
            previous_access: None,
            entitlements: None,
            signup_id: None,
            context: BTreeMap::new(),
            latest: None,
            reason: reason.to_owned(),
            sequence: 0,
            updated_at: String::new(),
        }
    }

    /// What a published event says of this subscription as it stands.
    fn verdict(&self, stale: bool) -> Verdict {
        Verdict {
            access: self.access,
            previous_access: if stale {
                Some(self.access)
            } else {
                self.previous_access
            },
            sequence: self.sequence,
            stale,
            signup_id: self.signup_id.clone(),
            context: self.context.clone(),
        }
    }

    /// The item that stores this subscription, as the README documents it.
    /// Fields not known are left out rather than stored empty.
    pub fn to_item(&self) -> Item {
        let i = &self.identity;
        let mut item = Item::new(self.pk.clone(), SUBSCRIPTION_SK);
        let known = [
            ("customerAWSAccountId", &i.customer_aws_account_id),
            ("productCode", &i.product_code),
            ("licenseArn", &i.license_arn),
            ("customerIdentifier", &i.customer_identifier),
            ("agreementId", &i.agreement_id),
            ("agreementStatus", &self.agreement_status),
            ("signupId", &self.signup_id),
        ];
        for (name, value) in known {
            if let Some(value) = value {
                item = item.with(name, value.as_str());
            }
        }
        if let Some(previous) = self.previous_access {
            item = item.with("previousAccess", previous.as_str());
        }
        if let Some(entitlements) = &self.entitlements {
            item = item.with("entitlements", entitlements.clone());
        }
        let mut item = item
            .with("access", self.access.as_str())
            .with(
                "context",
                Value::Object(
                    self.context
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                        .collect(),
                ),
            )
            .with("reason", self.reason.as_str())
            .with("sequence", self.sequence)
            .with("updatedAt", self.updated_at.as_str());
        if let Some(latest) = &self.latest {
            item = item
                .with("latestEventAt", rfc3339(&latest.at))
                .with("latestEventId", latest.event_id.as_str())
                .with("latestEventType", latest.event_type.as_str());
        }
        item
    }

    /// The subscription an item holds; `None` for an item that is not one (reported by callers).
    pub fn from_item(item: &Item) -> Option<Self> {
        let text = |name: &str| item.str(name).map(str::to_owned);
        let latest = match (item.str("latestEventAt"), item.str("latestEventId")) {
            (Some(at), Some(id)) => Some(EventMark {
                at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
                event_id: id.to_owned(),
                event_type: text("latestEventType").unwrap_or_default(),
            }),
            _ => None,
        };
        let context = match item.attrs.get("context") {
            Some(Value::Object(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        Some(Subscription {
            pk: item.pk.clone(),
            identity: Identity {
                customer_aws_account_id: text("customerAWSAccountId"),
                product_code: text("productCode"),
                license_arn: text("licenseArn"),
                customer_identifier: text("customerIdentifier"),
                agreement_id: text("agreementId"),
            },
            agreement_status: text("agreementStatus"),
            access: Access::parse(item.str("access")?)?,
            previous_access: item.str("previousAccess").and_then(Access::parse),
            entitlements: item
                .attrs
                .get("entitlements")
                .filter(|v| !v.is_null())
                .cloned(),
            signup_id: text("signupId"),
            context,
            latest,
            reason: text("reason").unwrap_or_default(),
            sequence: item.attrs.get("sequence").and_then(Value::as_u64)?,
            updated_at: text("updatedAt").unwrap_or_default(),
        })
    }

    /// `other`'s history folded into this one (an agreement's provisional subscription into its
    /// license's): the state of whichever applied the newer event, both identities and sign-ups,
    /// and the sum of their sequences, so the merged sequence is above every one published.
    fn absorb(mut self, other: Subscription) -> Subscription {
        let other_newer = match (&other.latest, &self.latest) {
            (Some(theirs), Some(mine)) => theirs.newer_than(mine),
            (Some(_), None) => true,
            _ => false,
        };
        if other_newer {
            self.access = other.access;
            self.previous_access = other.previous_access;
            self.latest = other.latest;
            self.reason = other.reason;
            self.agreement_status = other.agreement_status.or(self.agreement_status);
        }
        self.identity.fill_from(&other.identity);
        if self.entitlements.is_none() {
            self.entitlements = other.entitlements;
        }
        if self.signup_id.is_none() {
            self.signup_id = other.signup_id;
            if self.context.is_empty() {
                self.context = other.context;
            }
        }
        self.sequence += other.sequence;
        self
    }
}

/// What to record in the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A token resolved: its customer, and the sign-up it came with.
    Resolved {
        identity: Identity,
        signup_id: Option<String>,
        context: BTreeMap<String, String>,
    },
    /// A lifecycle event.
    Event {
        identity: Identity,
        mark: EventMark,
        effect: Effect,
        reason: &'static str,
        agreement_status: Option<String>,
        /// What GetEntitlements answered, when it was asked and answered something.
        entitlements: Option<Value>,
    },
}

impl Change {
    pub fn resolved(event: &CustomerEvent) -> Self {
        Change::Resolved {
            identity: Identity::from(event),
            signup_id: event.signup_id.clone(),
            context: event.context.clone(),
        }
    }

    fn identity(&self) -> &Identity {
        match self {
            Change::Resolved { identity, .. } | Change::Event { identity, .. } => identity,
        }
    }
}

/// The registry's answer for one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The subscription after the change.
    pub subscription: Subscription,
    /// Whether the item must be written (`false`: it stays as it was read).
    pub changed: bool,
    /// What the change's event publishes.
    pub verdict: Verdict,
}

/// The rule, pure: `change` applied to `current` (absent: a new subscription at `pk`), at `now`.
///
/// - A resolved token creates the subscription with `grant`, or fills in what an existing one
///   lacks (identity, sign-up); it never moves `latestEventAt` or touches `access`.
/// - An event newer than the item's latest (or the first) is applied: `access` per its effect,
///   `sequence` + 1, `latestEvent*` its own.
/// - The latest event again (a redelivery) changes nothing and publishes the item as it stands.
/// - An older event changes nothing but the identity fields the item lacks, and is published
///   `stale` with the item's access.
pub fn apply(current: Option<Subscription>, pk: &str, change: &Change, now: &str) -> Applied {
    let (mut subscription, changed, stale) = match change {
        Change::Resolved {
            identity,
            signup_id,
            context,
        } => match current {
            None => {
                let mut s =
                    Subscription::new(pk.to_owned(), identity.clone(), Access::Grant, "resolved");
                s.signup_id.clone_from(signup_id);
                s.context.clone_from(context);
                (s, true, false)
            }
            Some(mut s) => {
                let mut changed = s.identity.fill_from(identity);
                if s.signup_id.is_none() && signup_id.is_some() {
                    s.signup_id.clone_from(signup_id);
                    s.context.clone_from(context);
                    changed = true;
                }
                (s, changed, false)
            }
        },
        Change::Event {
            identity,
            mark,
            effect,
            reason,
            agreement_status,
            entitlements,
        } => match current {
            Some(mut s) if s.latest.as_ref().is_some_and(|l| !mark.newer_than(l)) => {
                let redelivered = s.latest.as_ref().is_some_and(|l| l.same_as(mark));
                let changed = s.identity.fill_from(identity);
                (s, changed, !redelivered)
            }
            current => {
                let previous = current.as_ref().map(|s| s.access);
                let mut s = current.unwrap_or_else(|| {
                    Subscription::new(pk.to_owned(), identity.clone(), effect.on(None), reason)
                });
                s.identity.fill_from(identity);
                s.previous_access = previous;
                s.access = effect.on(previous);
                s.latest = Some(mark.clone());
                s.reason = (*reason).to_owned();
                s.sequence += 1;
                if agreement_status.is_some() {
                    s.agreement_status.clone_from(agreement_status);
                }
                if entitlements.is_some() {
                    s.entitlements.clone_from(entitlements);
                }
                (s, true, false)
            }
        },
    };
    if changed {
        subscription.updated_at = now.to_owned();
    }
    let verdict = subscription.verdict(stale);
    Applied {
        subscription,
        changed,
        verdict,
    }
}

/// What one change found in the store.
#[derive(Debug, Clone)]
struct Found {
    /// The subscription's item.
    pk: String,
    /// Whether `pk` is the subscription's own key (license or legacy), not an agreement's.
    own: bool,
    target: Option<(u64, Subscription)>,
    /// The agreement's provisional subscription, to merge into `target`.
    provisional: Option<(u64, Subscription)>,
    /// The agreement's pointer (its version and the subscription it names).
    pointer: Option<(u64, String)>,
    agreement: Option<String>,
}

impl Found {
    /// What a change finds in an empty store (the usual case of a resolved token: a new
    /// customer); `None` when it names no subscription.
    fn nothing(identity: &Identity) -> Option<Found> {
        let own = identity.own_pk();
        let pk = own
            .clone()
            .or_else(|| identity.agreement_id.as_deref().map(provisional_pk))?;
        Some(Found {
            pk,
            own: own.is_some(),
            target: None,
            provisional: None,
            pointer: None,
            agreement: identity.agreement_id.clone(),
        })
    }
}

fn version_or_absent<T>(read: &Option<(u64, T)>) -> Expect {
    read.as_ref()
        .map_or(Expect::Absent, |(version, _)| Expect::Version(*version))
}

/// The atomic group that records `change` over what `found` holds, and the answer. Each write
/// expects the item as it was read, so a group planned on a read that is no longer true fails
/// whole and is planned again.
fn plan(found: &Found, change: &Change, now: &str) -> (Vec<Write>, Applied) {
    let target = found.target.clone().map(|(_, s)| s);
    let current = match (target, found.provisional.clone().map(|(_, p)| p)) {
        (target, None) => target,
        (None, Some(mut provisional)) => {
            provisional.pk.clone_from(&found.pk);
            Some(provisional)
        }
        (Some(target), Some(provisional)) => Some(target.absorb(provisional)),
    };
    let mut applied = apply(current, &found.pk, change, now);
    let mut writes = Vec::new();
    let merging = found.provisional.is_some();
    if applied.changed || merging {
        applied.changed = true;
        applied.subscription.updated_at = now.to_owned();
        writes.push(Write::Put {
            item: applied.subscription.to_item(),
            expect: version_or_absent(&found.target),
        });
    }
    if let Some((version, provisional)) = &found.provisional {
        writes.push(Write::Delete {
            pk: provisional.pk.clone(),
            sk: SUBSCRIPTION_SK.to_owned(),
            expect: Expect::Version(*version),
        });
    }
    if let (Some(agreement), None) = (&found.agreement, &found.pointer) {
        if found.own {
            // The license is known now: point the agreement at it. A provisional subscription
            // created after the read must not be left behind.
            let pointer = Item::new(agreement_pk(agreement), SUBSCRIPTION_SK)
                .with("agreementId", agreement.as_str())
                .with("subscriptionPk", found.pk.as_str())
                .with("updatedAt", now);
            writes.push(Write::Put {
                item: pointer,
                expect: Expect::Absent,
            });
            if !merging {
                writes.push(Write::Check {
                    pk: provisional_pk(agreement),
                    sk: SUBSCRIPTION_SK.to_owned(),
                    expect: Expect::Absent,
                });
            }
        } else if !writes.is_empty() {
            // Writing the provisional subscription: unless a license claimed the agreement since.
            writes.push(Write::Check {
                pk: agreement_pk(agreement),
                sk: SUBSCRIPTION_SK.to_owned(),
                expect: Expect::Absent,
            });
        }
    }
    (writes, applied)
}

/// The registry's use of the store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn read(&self, pk: &str) -> Result<Option<(u64, Subscription)>, StoreError> {
        let Some(item) = self.store.get(pk, SUBSCRIPTION_SK).await? else {
            return Ok(None);
        };
        match Subscription::from_item(&item) {
            Some(s) => Ok(Some((item.version, s))),
            None => Err(unreadable(&item)),
        }
    }

    async fn pointer(&self, agreement: &str) -> Result<Option<(u64, String)>, StoreError> {
        let item = self
            .store
            .get(&agreement_pk(agreement), SUBSCRIPTION_SK)
            .await?;
        Ok(item.and_then(|i| Some((i.version, i.str("subscriptionPk")?.to_owned()))))
    }

    /// Reads what `identity`'s subscription is made of: the agreement's pointer, the item, and a
    /// provisional subscription to merge. One to three reads.
    async fn find(&self, identity: &Identity) -> Result<Option<Found>, StoreError> {
        let Some(mut found) = Found::nothing(identity) else {
            return Ok(None);
        };
        if let Some(agreement) = &found.agreement {
            found.pointer = self.pointer(agreement).await?;
        }
        if let (false, Some((_, target))) = (found.own, &found.pointer) {
            found.pk.clone_from(target);
        }
        found.target = self.read(&found.pk).await?;
        if let (true, None, Some(agreement)) = (found.own, &found.pointer, &found.agreement) {
            found.provisional = self.read(&provisional_pk(agreement)).await?;
        }
        Ok(Some(found))
    }

    /// Records `change` (a read-modify-write on the versions, retried when another writer got
    /// there first) and says what its event publishes; `None` when it names no subscription.
    pub async fn apply(&self, change: &Change) -> Result<Option<Applied>, StoreError> {
        for lost in 0..MAX_CONFLICTS {
            if lost > 0 {
                let ceiling_ms = 5 * u64::from(lost.min(8));
                let wait = rand::Rng::random_range(&mut rand::rng(), 0..=ceiling_ms);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let Some(found) = self.find(change.identity()).await? else {
                return Ok(None);
            };
            let (writes, applied) = plan(&found, change, &crate::aws::sqs::now_rfc3339());
            match self.store.write(writes).await {
                Ok(()) => return Ok(Some(applied)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(change.identity()))
    }

    /// The writes that record `change` if the store holds nothing of its subscription yet, without
    /// reading: the token lane adds them to its write-ahead group, and reads (`writes_for`) only
    /// when that group lost.
    pub fn writes_if_new(change: &Change) -> Vec<Write> {
        Found::nothing(change.identity()).map_or_else(Vec::new, |found| {
            plan(&found, change, &crate::aws::sqs::now_rfc3339()).0
        })
    }

    /// The writes that record `change` over what the store holds now.
    pub async fn writes_for(&self, change: &Change) -> Result<Vec<Write>, StoreError> {
        Ok(match self.find(change.identity()).await? {
            Some(found) => plan(&found, change, &crate::aws::sqs::now_rfc3339()).0,
            None => Vec::new(),
        })
    }

    /// The subscription `identity` names, as stored.
    pub async fn current(&self, identity: &Identity) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .find(identity)
            .await?
            .and_then(|found| found.target.or(found.provisional).map(|(_, s)| s)))
    }

    /// Every subscription (a scan: for operator commands).
    pub async fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        let items = self.store.scan(SUBSCRIPTION_PREFIX).await?;
        items
            .iter()
            .filter(|item| item.sk == SUBSCRIPTION_SK)
            .map(|item| Subscription::from_item(item).ok_or_else(|| unreadable(item)))
            .collect()
    }
}

fn unreadable(item: &Item) -> StoreError {
    StoreError::Misconfigured(format!(
        "subscription item {} is not one this version can read",
        item.pk
    ))
}

fn contended(identity: &Identity) -> StoreError {
    StoreError::Unavailable(format!(
        "subscription {}: {MAX_CONFLICTS} conditional writes in a row lost to other writers",
        identity.own_pk().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests;
