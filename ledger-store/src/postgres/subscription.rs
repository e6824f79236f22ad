//! Live tail of the log. LISTEN is only a wake-up (notifications are lost across reconnects):
//! the subscription always re-reads from its own cursor and polls as a fallback.

use super::read;
use crate::error::Result;
use crate::store::Subscription;
use crate::types::RecordedEvent;
use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// Channel that `ledger.sequence()` notifies (payload: the ledger id) after sequencing.
pub const SEQUENCED_CHANNEL: &str = "ledger_sequenced";
/// Longest wait without a notification before reading again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most events one `next_batch` returns.
const SUBSCRIPTION_BATCH_MAX: i64 = 1_000;

pub(super) struct PgSubscription {
    pool: PgPool,
    ledger_id: String,
    position: i64,
    listener: Option<PgListener>,
}

impl PgSubscription {
    pub(super) fn new(pool: PgPool, ledger_id: &str, after_position: i64) -> Self {
        Self {
            pool,
            ledger_id: ledger_id.to_owned(),
            position: after_position,
            listener: None,
        }
    }

    /// (Re)connects the listener; failure only costs latency, so it is logged, not returned.
    async fn ensure_listener(&mut self) {
        if self.listener.is_some() {
            return;
        }
        let listener = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(SEQUENCED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(listener) => self.listener = Some(listener),
            Err(error) => tracing::warn!(%error, "LISTEN failed; polling only"),
        }
    }

    async fn wait_for_wake_up(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(POLL_INTERVAL).await;
            return;
        };
        match tokio::time::timeout(POLL_INTERVAL, listener.try_recv()).await {
            Ok(Ok(Some(_))) | Err(_) => {}
            // The connection dropped (notifications may be lost): reconnect on the next round.
            Ok(Ok(None)) | Ok(Err(_)) => self.listener = None,
        }
    }
}

#[async_trait]
impl Subscription for PgSubscription {
    async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        loop {
            // Listen before reading, so that a wake-up after the read is not missed.
            self.ensure_listener().await;
            let batch = read::read_log(
                &self.pool,
                &self.ledger_id,
                self.position,
                SUBSCRIPTION_BATCH_MAX,
            )
            .await?;
            if let Some(last) = batch.last() {
                self.position = last.position.expect("log events are sequenced");
                return Ok(batch);
            }
            self.wait_for_wake_up().await;
        }
    }

    fn position(&self) -> i64 {
        self.position
    }
}
