//! Reading a customer's entitlements for the lifecycle lane: every page of GetEntitlements
//! (`aws::entitlement::page`), each one paced by its own adaptive rate limit, as ResolveCustomer's
//! calls are by theirs (`resolve.rs`): the two APIs have separate quotas.

use std::sync::Arc;

use crate::aws::entitlement::{page, EntitlementsResult};
use crate::aws::metering::{Failure, FailureKind};
use crate::contract::lifecycle::EntitlementFilter;
use crate::worker::ratelimit::{AdaptiveRateLimiter, Call};

/// Pages read before the answer is treated as a fault: 100 pages of 25 is far beyond any real
/// contract, and a service repeating its `NextToken` must not keep a message forever.
pub const MAX_PAGES: usize = 100;

/// Reads entitlements under their own adaptive rate limit. The client must have its SDK retries
/// off (`aws::Clients` builds it so): each page is one request, and retrying a failed read is the
/// worker's backoff.
#[derive(Debug, Clone)]
pub struct EntitlementReader {
    client: aws_sdk_marketplaceentitlement::Client,
    limiter: Arc<AdaptiveRateLimiter>,
}

impl EntitlementReader {
    pub fn new(
        client: aws_sdk_marketplaceentitlement::Client,
        limiter: Arc<AdaptiveRateLimiter>,
    ) -> Self {
        EntitlementReader { client, limiter }
    }

    /// The rate limiter, for the receive loop (it receives only what the rate can serve) and for
    /// a delivery's first turn.
    pub fn limiter(&self) -> &AdaptiveRateLimiter {
        &self.limiter
    }

    /// Every page of the customer's entitlements for `product_code`, or why not, as a fresh
    /// delivery (behind every caller already waiting).
    pub async fn fetch(
        &self,
        product_code: &str,
        filter: &EntitlementFilter,
    ) -> EntitlementsResult {
        self.fetch_in_line(product_code, filter, tokio::time::Instant::now(), false)
            .await
    }

    /// [`EntitlementReader::fetch`] for a delivery first queued at `queued`: each page waits its
    /// turn at that place in the limiter's line (oldest first), so a retry goes before fresher
    /// deliveries; `turn_taken` when the caller already waited for the first page's turn.
    pub async fn fetch_in_line(
        &self,
        product_code: &str,
        filter: &EntitlementFilter,
        queued: tokio::time::Instant,
        mut turn_taken: bool,
    ) -> EntitlementsResult {
        let mut entitlements = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if !std::mem::take(&mut turn_taken) {
                self.limiter.acquire_for(queued).await;
            }
            match page(&self.client, product_code, filter, next_token.take()).await {
                Ok(page) => {
                    self.limiter.succeeded();
                    entitlements.extend(page.entitlements);
                    match page.next_token {
                        Some(token) => next_token = Some(token),
                        None => return EntitlementsResult::Fetched(entitlements),
                    }
                }
                Err(outcome) => {
                    self.feed_back(&outcome);
                    return outcome;
                }
            }
        }
        EntitlementsResult::Failed(Failure {
            kind: FailureKind::Transient,
            detail: format!("GetEntitlements returned more than {MAX_PAGES} pages"),
        })
    }

    /// A throttle slows the limiter down; the API's verdict on the request is an answer like any
    /// other; a failed call says nothing about the rate.
    fn feed_back(&self, outcome: &EntitlementsResult) {
        match outcome {
            EntitlementsResult::Failed(f) if f.kind == FailureKind::Throttled => {
                self.limiter.throttled(Call::First)
            }
            EntitlementsResult::Failed(_) => {}
            EntitlementsResult::Rejected { .. } | EntitlementsResult::Fetched(_) => {
                self.limiter.succeeded()
            }
        }
    }
}
