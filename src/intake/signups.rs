//! Which `signupId` a token gets. The worker publishes one event per token, and that event must
//! carry the id the buyer's sign-up page ends with, also when the browser posts the same token
//! twice (a double click, the back button, a retry after an answer that never arrived). So the id
//! is bound to the token's fingerprint *before* the token is sent, in one atomic step: "the id
//! already bound to this token, or bind this new one". Every send of a token then carries the
//! one id every answer for it names.
//!
//! [`SignupIds`] is the seam: [`InProcessSignupIds`] agrees within one process (tests);
//! [`StoredSignupIds`], what `mp-resolver intake` uses, agrees across every intake task sharing the
//! store (`[store]`: an embedded file on one machine, DynamoDB on ECS), its `bind` a conditional
//! create.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Mutex;

use lru::LruCache;

use crate::contract::Fingerprint;
use crate::store::{Expect, Item, Store, StoreError};

/// What [`SignupIds::bind`] returns: a boxed future, so intake holds any implementation as
/// `dyn SignupIds` chosen at start, not as a type parameter.
pub type Binding<'a> = Pin<Box<dyn Future<Output = Result<String, SignupIdError>> + Send + 'a>>;

/// The ids could not be consulted; nothing was sent, so the buyer's retry is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signupId store did not answer: {0}")]
pub struct SignupIdError(pub String);

pub trait SignupIds: Send + Sync {
    /// The `signupId` bound to `token`: the one an earlier request bound, or `proposed`, bound
    /// now. Atomic: of two concurrent calls for one token, both get the same id.
    fn bind<'a>(&'a self, token: &'a Fingerprint, proposed: String) -> Binding<'a>;
}

/// The recently bound ids of this process: a bounded LRU under one mutex, looked up and bound in
/// one step while the lock is held.
pub struct InProcessSignupIds {
    ids: Mutex<LruCache<Fingerprint, String>>,
}

impl InProcessSignupIds {
    pub fn new(capacity: NonZeroUsize) -> Self {
        InProcessSignupIds {
            ids: Mutex::new(crate::cache::growing_lru(capacity)),
        }
    }

    fn bind_now(&self, token: &Fingerprint, proposed: String) -> String {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.get_or_insert(token.clone(), || proposed).clone()
    }
}

impl SignupIds for InProcessSignupIds {
    fn bind<'a>(&'a self, token: &'a Fingerprint, proposed: String) -> Binding<'a> {
        let bound = self.bind_now(token, proposed);
        Box::pin(std::future::ready(Ok(bound)))
    }
}

/// The signupIds every intake task shares: one store item per token fingerprint, bound by a
/// conditional create. Of two tasks binding the same token at once, one create wins and the other
/// reads the winner's id. Dies before the create: nothing bound, nothing sent (the buyer's retry
/// binds again). Dies after it: the id stands and every later POST of the token gets it.
pub struct StoredSignupIds {
    store: Store,
}

impl StoredSignupIds {
    pub fn new(store: Store) -> Self {
        StoredSignupIds { store }
    }
}

/// How long a token's signupId is kept: as long as the worker keeps its answer.
const SIGNUP_TTL_SECS: i64 = crate::store::ANSWER_TTL.as_secs() as i64;

fn signup_pk(token: &Fingerprint) -> String {
    format!("signup#{token}")
}

impl SignupIds for StoredSignupIds {
    fn bind<'a>(&'a self, token: &'a Fingerprint, proposed: String) -> Binding<'a> {
        Box::pin(async move {
            let pk = signup_pk(token);
            let item = Item::new(pk.clone(), "signup")
                .with("signupId", proposed.as_str())
                .with("boundAt", crate::aws::sqs::now_rfc3339())
                .expiring_at(crate::store::now_secs() + SIGNUP_TTL_SECS);
            let failed = |e: StoreError| SignupIdError(e.to_string());
            match self.store.put(item, Expect::Absent).await {
                Ok(()) => Ok(proposed),
                Err(StoreError::Conflict) => {
                    let bound = self.store.get(&pk, "signup").await.map_err(failed)?;
                    bound
                        .and_then(|item| item.str("signupId").map(str::to_owned))
                        .ok_or_else(|| {
                            SignupIdError("a bound signupId vanished between two reads".into())
                        })
                }
                Err(e) => Err(failed(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_binding_wins_until_it_is_evicted() {
        let ids = InProcessSignupIds::new(NonZeroUsize::new(2).unwrap());
        let (a, b, c) = (
            Fingerprint::of("token-a"),
            Fingerprint::of("token-b"),
            Fingerprint::of("token-c"),
        );
        assert_eq!(ids.bind(&a, "A1".into()).await.unwrap(), "A1");
        assert_eq!(ids.bind(&a, "A2".into()).await.unwrap(), "A1");
        assert_eq!(ids.bind(&b, "B1".into()).await.unwrap(), "B1");
        // `a` was used more recently than `b`, so `b` goes when `c` comes.
        assert_eq!(ids.bind(&a, "A3".into()).await.unwrap(), "A1");
        assert_eq!(ids.bind(&c, "C1".into()).await.unwrap(), "C1");
        assert_eq!(ids.bind(&b, "B2".into()).await.unwrap(), "B2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_binds_of_one_token_agree() {
        let ids = std::sync::Arc::new(InProcessSignupIds::new(NonZeroUsize::new(10).unwrap()));
        let token = Fingerprint::of("token");
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (ids, token) = (ids.clone(), token.clone());
                tokio::spawn(async move { ids.bind(&token, format!("id-{i}")).await.unwrap() })
            })
            .collect();
        let mut bound = std::collections::HashSet::new();
        for t in tasks {
            bound.insert(t.await.unwrap());
        }
        assert_eq!(bound.len(), 1, "{bound:?}");
    }
}
