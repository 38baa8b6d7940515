//! The worker's actions: each one carries out what `decide` chose and reports whether it worked;
//! none of them picks another action (a failure goes back into the delivery's facts).

use std::time::Duration;

use crate::aws::sns::TopicEvent;
use crate::aws::sqs::{now_rfc3339, DeleteEntry, ReceivedMessage};
use crate::contract::{DeadLetter, DeadLetterReason, Fingerprint};
use crate::worker::batch::BatchError;
use crate::worker::decide::{Handled, Letter, Settling};
use crate::worker::events::StepFailed;
use crate::worker::lane::Lane;
use crate::worker::lease::Lease;
use crate::worker::{lock, HeldGuard, Outcome, Worker};

impl Worker {
    /// Publishes an event (a resolved customer's or a lifecycle one) through the publish batcher;
    /// its `eventId` on success, else why it failed. A held event's retry (`held`) goes alone, in
    /// one SNS attempt: the hold's own loop is its retry, and the lifecycle lane re-reads the
    /// registry before each of its turns, so an attempt never goes out on a reading that a newer
    /// event applied during the SDK's backoff has made stale.
    pub(super) async fn publish(
        &self,
        event_id: Fingerprint,
        event: TopicEvent,
        held: bool,
    ) -> Result<Fingerprint, PublishFailed> {
        let published = if held {
            self.publisher
                .publish_once(&event)
                .await
                .map_err(BatchError::from)
        } else {
            self.publishes.submit(event).await
        };
        match published {
            Ok(_) => Ok(event_id),
            Err(error) => {
                StepFailed {
                    step: "publish",
                    error: &error,
                }
                .emit(&self.telemetry);
                Err(PublishFailed {
                    refused: matches!(&error, BatchError::Entry(e) if e.is_too_long()),
                    detail: error.to_string(),
                })
            }
        }
    }

    /// What this process remembers about the message and its event: a redelivery of a message it
    /// dead-lettered (its delete was lost) or of an event it published.
    pub(super) fn observe(
        &self,
        settling: &mut Settling,
        message_id: &str,
        event_id: Option<&Fingerprint>,
    ) {
        settling.already_dead_lettered = lock(&self.dead_lettered).get(message_id).copied();
        settling.already_published = event_id.is_some_and(|id| self.was_published(id));
    }

    /// Before each decision: whether the process is stopping, and how long a held event waited.
    pub(super) fn refresh(&self, settling: &mut Settling, held: &Option<HeldGuard<'_>>) {
        settling.stopping = *self.stopping.borrow();
        if let Some(h) = held {
            settling.held_for = h.since.elapsed();
        }
    }

    /// One publish try of a delivery's event: on success the event id is remembered, the hold
    /// (if any) ends and the message is deleted; on failure the hold starts (if it had not) and
    /// the error goes back into the delivery's facts (`None`).
    pub(super) async fn publish_then_delete<'a>(
        &'a self,
        attempt: &mut Attempt<'_, 'a>,
        settling: &mut Settling,
        (event_id, event): (Fingerprint, TopicEvent),
    ) -> Option<Fingerprint> {
        // From here, handing the message back at shutdown would publish it twice.
        attempt.lease.mark_committed();
        // A publish still unanswered when the grace period ends is given up: the process must
        // exit, and the event is kept by the `unpublished` dead-letter that follows (the stopping
        // row), rather than lost with the message left invisible.
        let mut grace_over = self.grace_over.subscribe();
        let published = tokio::select! {
            biased;
            published = self.publish(event_id, event, settling.publish_failures > 0) => published,
            _ = async {
                drop(grace_over.wait_for(|over| *over).await);
                // A quarter of the reserve more, so a publish SNS is about to answer lands; the
                // rest of the reserve's first half is the letter's (then unfinished work is aborted
                // and handed back).
                let reserve = crate::worker::shutdown::hand_back_reserve(Duration::from_secs(
                    self.settings.worker.shutdown_grace_secs,
                ));
                tokio::time::sleep(reserve / 4).await;
            } => {
                let error = "SNS did not answer before the shutdown grace period ended";
                StepFailed {
                    step: "publish",
                    error: &error,
                }
                .emit(&self.telemetry);
                Err(PublishFailed {
                    refused: false,
                    detail: error.to_owned(),
                })
            }
        };
        match published {
            Ok(event_id) => {
                self.remember_published(&event_id);
                drop(attempt.held.take());
                self.delete(attempt.lane, attempt.message, attempt.lease)
                    .await;
                Some(event_id)
            }
            Err(error) => {
                if attempt.held.is_none() {
                    attempt.held = Some(HeldGuard::start(&self.telemetry));
                }
                settling.publish_failures += 1;
                settling.publish_refused |= error.refused;
                settling.last_publish_error = Some(error.detail);
                None
            }
        }
    }

    /// Sends the body, unchanged, to the dead-letter queue with its reason.
    pub(super) async fn dead_letter(
        &self,
        lane: &Lane,
        message: &ReceivedMessage,
        reason: DeadLetterReason,
        detail: String,
        event_id: Option<Fingerprint>,
        (event, event_ref): (Option<String>, Option<String>),
    ) -> Result<(), ()> {
        let letter = DeadLetter {
            body: message.body.clone(),
            reason,
            detail: if detail.is_empty() {
                reason.as_str().to_owned()
            } else {
                detail
            },
            event_id,
            source_message_id: message.message_id.clone(),
            receive_count: message.receive_count,
            failed_at: now_rfc3339(),
            event,
            event_ref,
        };
        match lane
            .queue
            .send_dead_letter(&letter, message.group_id.as_deref())
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => {
                StepFailed {
                    step: "dead_letter",
                    error: &error,
                }
                .emit(&self.telemetry);
                Err(())
            }
        }
    }

    /// Leaves the message on the queue, visible again after `delay`. The heartbeat is settled first
    /// so a late beat cannot undo it.
    pub(super) async fn hand_back(&self, lane: &Lane, lease: &Lease, delay: Duration) {
        let _settled = lease.settle().await;
        if let Err(error) = lane
            .queue
            .change_visibility(lease.receipt_handle(), delay)
            .await
        {
            // Not fatal: the message reappears when its current visibility runs out.
            StepFailed {
                step: "hand_back",
                error: &error,
            }
            .emit(&self.telemetry);
        }
    }

    /// Deletes the message through the delete batcher. The heartbeat keeps the message hidden
    /// until the delete's entry succeeded (a slow SQS must not let it reappear and be worked on
    /// again); only then is the lease settled.
    pub(super) async fn delete(&self, lane: &Lane, message: &ReceivedMessage, lease: &Lease) {
        lease.mark_committed();
        let deleted = lane
            .deletes
            .submit(DeleteEntry {
                message_id: message.message_id.clone(),
                receipt_handle: lease.receipt_handle().to_owned(),
            })
            .await;
        if let Err(problem) = deleted {
            // Not lost: the redelivery is caught by the published-fingerprint memory, or
            // dead-lettered again by the same rule.
            StepFailed {
                step: "delete",
                error: &format_args!("{problem}; the message will come back and be recognized"),
            }
            .emit(&self.telemetry);
        }
        drop(lease.settle().await);
    }

    /// Dead-letters the message and, once the letter is out, remembers it, ends a hold and
    /// deletes the message: the outcome, or `None` when the letter could not be sent (noted in the
    /// delivery's facts: the decision table then hands the message back).
    /// Dead-letters the message. `event_ref` names the store item holding the letter's event when
    /// the worker moved it out of a letter that would be too large with it (`letter.event` is then
    /// `None`).
    pub(super) async fn retire(
        &self,
        attempt: &mut Attempt<'_, '_>,
        settling: &mut Settling,
        letter: Letter,
        event_ref: Option<String>,
    ) -> Option<Outcome> {
        let Letter {
            reason,
            detail,
            event_id,
            event,
        } = letter;
        let Attempt {
            lane,
            message,
            lease,
            ..
        } = *attempt;
        lease.mark_committed();
        if self
            .dead_letter(
                lane,
                message,
                reason,
                detail,
                event_id.clone(),
                (event, event_ref),
            )
            .await
            .is_err()
        {
            settling.dead_letter_failed = true;
            return None;
        }
        lock(&self.dead_lettered).put(message.message_id.clone(), reason);
        drop(attempt.held.take());
        self.delete(lane, message, lease).await;
        Some(Outcome::DeadLettered { reason, event_id })
    }

    /// Deletes a message this process handled before, without new work.
    pub(super) async fn settle_handled(
        &self,
        lane: &Lane,
        message: &ReceivedMessage,
        lease: &Lease,
        handled: Handled,
    ) -> Outcome {
        self.delete(lane, message, lease).await;
        match handled {
            Handled::Published(event_id) => Outcome::AlreadyPublished { event_id },
            Handled::DeadLettered(reason) => Outcome::AlreadyDeadLettered { reason },
        }
    }
}

/// Why a publish try failed: what SNS (or the batcher) said, and whether SNS refused the event
/// itself (too long), which no retry changes.
pub(super) struct PublishFailed {
    pub detail: String,
    pub refused: bool,
}

/// One delivery being worked, as the actions that settle it need it: where it came from, its
/// lease, and the hold of its event while publishing it fails.
pub(super) struct Attempt<'d, 'w> {
    pub lane: &'d Lane,
    pub message: &'d ReceivedMessage,
    pub lease: &'d Lease,
    pub held: Option<HeldGuard<'w>>,
}

impl<'d> Attempt<'d, '_> {
    pub fn new(lane: &'d Lane, message: &'d ReceivedMessage, lease: &'d Lease) -> Self {
        Attempt {
            lane,
            message,
            lease,
            held: None,
        }
    }
}
