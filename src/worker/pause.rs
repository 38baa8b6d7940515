//! The process-wide pause on `DisabledApiException`: the API is switched off for this seller, so
//! every call would fail the same way. Resolving stops for all messages until a probe shows the API
//! answering again.

use tokio::sync::watch;

#[derive(Debug)]
pub struct ApiPause {
    paused: watch::Sender<bool>,
}

impl Default for ApiPause {
    fn default() -> Self {
        ApiPause {
            paused: watch::Sender::new(false),
        }
    }
}

/// What `pause` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseChange {
    /// This call paused a running process: start probing.
    Started,
    AlreadyPaused,
}

impl ApiPause {
    pub fn pause(&self) -> PauseChange {
        if self.paused.send_replace(true) {
            PauseChange::AlreadyPaused
        } else {
            PauseChange::Started
        }
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Completes once the pause is lifted (at once when not paused).
    pub async fn resumed(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we are borrowed.
        let _ = rx.wait_for(|paused| !*paused).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_resume_cycle() {
        let p = std::sync::Arc::new(ApiPause::default());
        p.resumed().await;
        assert_eq!(p.pause(), PauseChange::Started);
        assert_eq!(p.pause(), PauseChange::AlreadyPaused);
        assert!(p.is_paused());
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.resumed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.resume();
        waiter.await.unwrap();
        assert!(!p.is_paused());
    }
}
