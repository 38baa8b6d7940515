//! What the token lane keeps in the store: one item per token fingerprint, moving through
//!
//! ```text
//!   (none) ──claim──▶ claimed ──answer──▶ resolved ──publish──▶ published
//!                       │  ▲                                        
//!                       │  └── a dead holder's lease expired: taken over
//!                       ├──verdict──▶ rejected (invalid, expired)
//!                       └──no answer (throttled, outage)──▶ (none)
//! ```
//!
//! `resolved` is written before the first publish try (write-ahead), so the answer outlives the
//! process; `published` and `rejected` let every later delivery, in any task, settle without a call.
//! Each step is a conditional write on the item's version, so two deliveries never both think they
//! hold the claim, and nothing a delivery learned is overwritten by one that knows less.
//!
//! If the process dies just before a step, the item still shows the step before it: a claim is
//! taken over when its lease runs out, a `resolved` item is published by the next delivery. If it
//! dies just after, the next delivery finds the step done and goes on from there. Either way no
//! second ResolveCustomer call is made for a token whose answer was stored. The one window left is
//! the call itself: a holder killed while its call is in flight leaves only its claim, and the
//! delivery that takes it over calls again (README, "What the store does not cover").

use std::time::Duration;

use serde_json::Value;

use super::registry::{Change, Registry};
use super::{now_millis, now_secs, Expect, Item, Store, StoreError, ANSWER_TTL};
use crate::contract::{CustomerEvent, DeadLetterReason, Fingerprint};

/// The sort key of every token item.
pub const TOKEN_SK: &str = "token";

/// The partition key of `fingerprint`'s item.
pub fn token_pk(fingerprint: &Fingerprint) -> String {
    format!("token#{fingerprint}")
}

/// A delivery's hold on a token: who, and until when (epoch ms). Another delivery waits for the
/// holder's answer (or publish) while it lasts, and takes over once it lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub holder: String,
    pub until_ms: i64,
}

impl Claim {
    fn is_live_for_another(&self, me: &str) -> bool {
        self.holder != me && self.until_ms > now_millis()
    }
}

/// What the store knows about one token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenState {
    /// A delivery is calling ResolveCustomer.
    Claimed(Claim),
    /// ResolveCustomer answered; the holder is publishing the event (not known to be published).
    Resolved(CustomerEvent, Claim),
    /// The event was published.
    Published(CustomerEvent),
    /// ResolveCustomer said the token can never resolve.
    Rejected {
        reason: DeadLetterReason,
        detail: String,
    },
}

impl TokenState {
    fn name(&self) -> &'static str {
        match self {
            TokenState::Claimed(_) => "claimed",
            TokenState::Resolved(..) => "resolved",
            TokenState::Published(_) => "published",
            TokenState::Rejected { .. } => "rejected",
        }
    }

    /// The item that stores this state.
    fn to_item(&self, fingerprint: &Fingerprint, version: u64) -> Item {
        let mut item = Item::new(token_pk(fingerprint), TOKEN_SK)
            .with("state", self.name())
            .with("updatedAt", crate::aws::sqs::now_rfc3339())
            .expiring_at(now_secs() + ANSWER_TTL.as_secs() as i64);
        item.version = version;
        let claimed = |item: Item, claim: &Claim| {
            item.with("holder", claim.holder.as_str())
                .with("leaseUntil", claim.until_ms)
        };
        let answered = |item: Item, event: &CustomerEvent| {
            item.with("event", event.to_json())
                .with(
                    "customerAWSAccountId",
                    event.customer_aws_account_id.as_str(),
                )
                .with("productCode", event.product_code.as_str())
        };
        match self {
            TokenState::Claimed(claim) => claimed(item, claim),
            TokenState::Resolved(event, claim) => claimed(answered(item, event), claim),
            TokenState::Published(event) => answered(item, event),
            TokenState::Rejected { reason, detail } => item
                .with("reason", reason.as_str())
                .with("detail", detail.as_str()),
        }
    }

    /// The state an item holds; `None` for an item this version cannot read (reported, not guessed).
    fn from_item(item: &Item) -> Option<Self> {
        let event = || item.str("event").and_then(CustomerEvent::from_json);
        let claim = || {
            Some(Claim {
                holder: item.str("holder")?.to_owned(),
                until_ms: item.i64("leaseUntil")?,
            })
        };
        match item.str("state")? {
            "claimed" => Some(TokenState::Claimed(claim()?)),
            "resolved" => Some(TokenState::Resolved(event()?, claim()?)),
            "published" => Some(TokenState::Published(event()?)),
            "rejected" => Some(TokenState::Rejected {
                reason: item.str("reason")?.parse().ok()?,
                detail: item.str("detail").unwrap_or_default().to_owned(),
            }),
            _ => None,
        }
    }
}

/// What a delivery found when it asked to call ResolveCustomer for its token.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// This delivery holds the claim (at `version`): call.
    Claimed { version: u64 },
    /// Another delivery holds a live claim (calling, or publishing its answer): wait for it, until
    /// `lease_until_ms` at most.
    HeldElsewhere { lease_until_ms: i64 },
    /// Answered before, and its holder is gone: publish this event, no call.
    Resolved(CustomerEvent),
    /// Published before: delete the message, no call.
    Published(CustomerEvent),
    /// Rejected before: dead-letter with this reason, no call.
    Rejected {
        reason: DeadLetterReason,
        detail: String,
    },
}

/// The token lane's use of the store, for one holder (a delivery) whose claims last `lease`.
#[derive(Debug, Clone)]
pub struct TokenLedger {
    store: Store,
    holder: String,
    lease: Duration,
}

/// How often a conditional write is retried after losing to another writer before the caller is
/// told the store is contended (each retry reads the item again first).
const MAX_CONFLICTS: u32 = 8;

impl TokenLedger {
    pub fn new(store: Store, holder: impl Into<String>, lease: Duration) -> Self {
        TokenLedger {
            store,
            holder: holder.into(),
            lease,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same ledger, claiming as `holder` (one per delivery, so two deliveries in one process
    /// tell their claims apart).
    pub fn for_holder(&self, holder: String) -> Self {
        TokenLedger {
            store: self.store.clone(),
            holder,
            lease: self.lease,
        }
    }

    /// A claim by this holder from now for one lease.
    fn claim(&self) -> Claim {
        Claim {
            holder: self.holder.clone(),
            until_ms: now_millis() + self.lease.as_millis() as i64,
        }
    }

    /// The token's state as stored, if any.
    pub async fn state(&self, fingerprint: &Fingerprint) -> Result<Option<TokenState>, StoreError> {
        Ok(self.read(fingerprint).await?.map(|(_, state)| state))
    }

    async fn read(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<(u64, TokenState)>, StoreError> {
        let Some(item) = self.store.get(&token_pk(fingerprint), TOKEN_SK).await? else {
            return Ok(None);
        };
        match TokenState::from_item(&item) {
            Some(state) => Ok(Some((item.version, state))),
            None => Err(StoreError::Misconfigured(format!(
                "token item {} has a state this version cannot read: {:?}",
                item.pk,
                item.attrs.get("state").unwrap_or(&Value::Null)
            ))),
        }
    }

    /// Claims the token for one call (and the publish of its answer), or says what the store
    /// already knows. One write when the token is new (the usual case); a read and a write
    /// otherwise.
    pub async fn begin(&self, fingerprint: &Fingerprint) -> Result<Begin, StoreError> {
        // Most tokens are new: try the claim first, read only when it loses.
        let mut known: Option<Option<(u64, TokenState)>> = Some(None);
        for _ in 0..MAX_CONFLICTS {
            let current = match known.take() {
                Some(current) => current,
                None => self.read(fingerprint).await?,
            };
            let (expect, next) = match &current {
                None => (Expect::Absent, TokenState::Claimed(self.claim())),
                Some((version, state)) => match state {
                    TokenState::Claimed(claim) | TokenState::Resolved(_, claim)
                        if claim.is_live_for_another(&self.holder) =>
                    {
                        return Ok(Begin::HeldElsewhere {
                            lease_until_ms: claim.until_ms,
                        })
                    }
                    // A lapsed claim (its holder died or overran), or this holder's own: taken over.
                    TokenState::Claimed(_) => {
                        (Expect::Version(*version), TokenState::Claimed(self.claim()))
                    }
                    // An answer whose holder is gone: this delivery publishes it, under its own
                    // claim, so the others wait for this publish in turn.
                    TokenState::Resolved(event, _) => {
                        let next = TokenState::Resolved(event.clone(), self.claim());
                        match self
                            .store
                            .put(next.to_item(fingerprint, 0), Expect::Version(*version))
                            .await
                        {
                            Ok(()) => return Ok(Begin::Resolved(event.clone())),
                            Err(StoreError::Conflict) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    TokenState::Published(event) => return Ok(Begin::Published(event.clone())),
                    TokenState::Rejected { reason, detail } => {
                        return Ok(Begin::Rejected {
                            reason: *reason,
                            detail: detail.clone(),
                        })
                    }
                },
            };
            let version = match expect {
                Expect::Version(v) => v + 1,
                _ => 1,
            };
            match self.store.put(next.to_item(fingerprint, 0), expect).await {
                Ok(()) => return Ok(Begin::Claimed { version }),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(fingerprint))
    }

    /// Writes the answer ahead of the first publish try, and with it, in the same atomic group,
    /// the customer's subscription in the registry (created with `grant`, or completed with the
    /// sign-up: `registry::apply`). When another delivery stored an answer first, that one stands
    /// and is returned (it wrote the registry): the caller publishes it instead of its own, so
    /// every delivery publishes the same event.
    ///
    /// The first try assumes a new customer and writes without reading (one store call); only a
    /// group that lost reads the token and the subscription and plans again. If the process dies
    /// just before the group, neither is written and the claim lapses; just after, both are, and
    /// the next delivery publishes the stored answer.
    pub async fn resolved(
        &self,
        fingerprint: &Fingerprint,
        claim_version: Option<u64>,
        event: &CustomerEvent,
    ) -> Result<CustomerEvent, StoreError> {
        self.write_ahead(fingerprint, claim_version, event)
            .await
            .map(|(stored, _)| stored)
    }

    /// [`TokenLedger::resolved`], also saying the item's version when this call wrote it (`None`
    /// when another delivery's answer stands), so that [`TokenLedger::published`] can write
    /// without reading first: three store calls per token (claim, answer, publish), not four.
    pub async fn write_ahead(
        &self,
        fingerprint: &Fingerprint,
        claim_version: Option<u64>,
        event: &CustomerEvent,
    ) -> Result<(CustomerEvent, Option<u64>), StoreError> {
        let next = TokenState::Resolved(event.clone(), self.claim());
        let subscription = Change::resolved(event);
        let mut known = claim_version.map(|v| (v, TokenState::Claimed(self.claim())));
        for _ in 0..MAX_CONFLICTS {
            let (current, registry) = match known.take() {
                Some(k) => (Some(k), Registry::writes_if_new(&subscription)),
                None => (
                    self.read(fingerprint).await?,
                    Registry::new(self.store.clone())
                        .writes_for(&subscription)
                        .await?,
                ),
            };
            if let Some((_, TokenState::Resolved(stored, _) | TokenState::Published(stored))) =
                &current
            {
                return Ok((stored.clone(), None));
            }
            let (expect, written) = match &current {
                None => (Expect::Absent, 1),
                Some((v, _)) => (Expect::Version(*v), v + 1),
            };
            let mut group = vec![super::Write::Put {
                item: next.to_item(fingerprint, 0),
                expect,
            }];
            group.extend(registry);
            match self.store.write(group).await {
                Ok(()) => return Ok((event.clone(), Some(written))),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(fingerprint))
    }

    /// Marks the event published, so later deliveries delete without a call or a second event.
    /// With `known_version` (the answer this delivery wrote ahead) the first try writes without
    /// reading; a write that lost reads and decides again.
    pub async fn published(
        &self,
        fingerprint: &Fingerprint,
        known_version: Option<u64>,
        event: &CustomerEvent,
    ) -> Result<(), StoreError> {
        let next = TokenState::Published(event.clone());
        self.advance(fingerprint, known_version, |current| match current {
            Some(TokenState::Published(stored)) => Step::Keep(stored.clone()),
            _ => Step::Write(Box::new(next.clone()), event.clone()),
        })
        .await
        .map(drop)
    }

    /// Records ResolveCustomer's verdict. If the store shows the token resolved meanwhile (another
    /// task's answer, or this token's own answer from before a crash), that answer is returned
    /// instead and nothing is written: a resolved token is never dead-lettered as expired.
    pub async fn rejected(
        &self,
        fingerprint: &Fingerprint,
        claim_version: Option<u64>,
        reason: DeadLetterReason,
        detail: &str,
    ) -> Result<Option<CustomerEvent>, StoreError> {
        let next = TokenState::Rejected {
            reason,
            detail: detail.to_owned(),
        };
        let mut answered = None;
        self.advance(fingerprint, claim_version, |current| match current {
            Some(TokenState::Resolved(stored, _) | TokenState::Published(stored)) => {
                answered = Some(stored.clone());
                Step::Keep(())
            }
            _ => Step::Write(Box::new(next.clone()), ()),
        })
        .await?;
        Ok(answered)
    }

    /// Gives the claim up after a call that got no answer (throttled, an outage), so the next
    /// delivery, here or in another task, may call at once. Only this claim is removed.
    pub async fn release(
        &self,
        fingerprint: &Fingerprint,
        claim_version: u64,
    ) -> Result<(), StoreError> {
        let delete = super::Write::Delete {
            pk: token_pk(fingerprint),
            sk: TOKEN_SK.to_owned(),
            expect: Expect::Version(claim_version),
        };
        match self.store.write(vec![delete]).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A read-modify-write on the version: `next` sees the current state and says what to write
    /// (or to keep what is there). With `known_version` (this delivery's claim), the first try
    /// writes without reading.
    /// Ends this holder's claim on a stored answer early (the delivery is handed back at
    /// shutdown), so the next delivery publishes it at once instead of waiting for the lease.
    /// Anything else (published meanwhile, another holder's claim) is left as it is.
    pub async fn let_go(&self, fingerprint: &Fingerprint) -> Result<(), StoreError> {
        let holder = self.holder.clone();
        self.advance(fingerprint, None, |current| match current {
            Some(TokenState::Resolved(event, claim)) if claim.holder == holder => Step::Write(
                Box::new(TokenState::Resolved(
                    event.clone(),
                    Claim {
                        holder: holder.clone(),
                        until_ms: 0,
                    },
                )),
                (),
            ),
            _ => Step::Keep(()),
        })
        .await
    }

    async fn advance<T>(
        &self,
        fingerprint: &Fingerprint,
        known_version: Option<u64>,
        mut next: impl FnMut(Option<&TokenState>) -> Step<T>,
    ) -> Result<T, StoreError> {
        let mut known = known_version.map(|v| (v, TokenState::Claimed(self.claim())));
        for _ in 0..MAX_CONFLICTS {
            let current = match known.take() {
                Some(k) => Some(k),
                None => self.read(fingerprint).await?,
            };
            let (state, value) = match next(current.as_ref().map(|(_, s)| s)) {
                Step::Keep(value) => return Ok(value),
                Step::Write(state, value) => (state, value),
            };
            let expect = current
                .as_ref()
                .map_or(Expect::Absent, |(v, _)| Expect::Version(*v));
            match self.store.put(state.to_item(fingerprint, 0), expect).await {
                Ok(()) => return Ok(value),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(fingerprint))
    }
}

enum Step<T> {
    /// Leave the item as it is and return this.
    Keep(T),
    /// Write this state and return this.
    Write(Box<TokenState>, T),
}

fn contended(fingerprint: &Fingerprint) -> StoreError {
    StoreError::Unavailable(format!(
        "token {fingerprint}: {MAX_CONFLICTS} conditional writes in a row lost to other writers"
    ))
}
