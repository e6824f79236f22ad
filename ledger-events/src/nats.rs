//! NATS JetStream sink: one message per event on `escrow.<ledger>.<stream kind>.<event>`, header
//! `Nats-Msg-Id` = the event id (JetStream drops a duplicate within its window, so a relay that resends a
//! batch after a crash adds nothing), body the public event as JSON. The cursor advances only after every
//! publish of a batch is acknowledged by the stream. The stream is created when missing.

use std::time::Duration;

use async_nats::jetstream::{self, context::Context, stream};

use crate::Error;
use crate::model::PublicEvent;

/// The stream's name and subjects unless configured otherwise.
pub const STREAM_DEFAULT: &str = "ESCROW";
pub const SUBJECT_PREFIX: &str = "escrow";

/// Limits of the stream when the relay creates it.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    pub name: String,
    /// Messages older than this are dropped by JetStream (0: kept for ever).
    pub max_age: Duration,
    /// Total bytes kept (-1: no limit).
    pub max_bytes: i64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// First subject token (`escrow`): the stream takes `<prefix>.>`.
    pub subject_prefix: String,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            name: STREAM_DEFAULT.to_string(),
            max_age: Duration::ZERO,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(24 * 3600),
            subject_prefix: SUBJECT_PREFIX.to_string(),
        }
    }
}

/// A connected JetStream context with its stream ensured.
pub struct NatsSink {
    js: Context,
    prefix: String,
}

/// Publishes in flight before their acknowledgements are awaited.
pub const IN_FLIGHT_MAX: usize = 1_024;

impl NatsSink {
    pub async fn connect(url: &str, limits: &StreamLimits) -> Result<NatsSink, Error> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("escrow-ledger events")
            .connect(url)
            .await
            .map_err(|e| Error::Sink(format!("cannot connect to NATS at {url}: {e}")))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: limits.name.clone(),
            subjects: vec![format!("{}.>", limits.subject_prefix)],
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            duplicate_window: limits.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Sink(format!("cannot create or find stream {}: {e}", limits.name)))?;
        Ok(NatsSink {
            js,
            prefix: limits.subject_prefix.clone(),
        })
    }

    /// Deletes a stream (the benchmark's own, afterwards).
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        self.js
            .delete_stream(name)
            .await
            .map_err(|e| Error::Sink(format!("cannot delete stream {name}: {e}")))?;
        Ok(())
    }

    /// Publishes `events` in order, pipelined (at most `IN_FLIGHT_MAX` unacknowledged: a sliding window, so
    /// the pipe never drains between chunks), and waits for every acknowledgement.
    pub async fn publish(&self, events: &[PublicEvent]) -> Result<(), Error> {
        let mut in_flight =
            std::collections::VecDeque::with_capacity(IN_FLIGHT_MAX.min(events.len()));
        for event in events {
            if in_flight.len() >= IN_FLIGHT_MAX {
                acknowledged(in_flight.pop_front()).await?;
            }
            let body = serde_json::to_vec(event).map_err(|e| Error::Invalid(e.to_string()))?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
            let ack = self
                .js
                .publish_with_headers(subject(&self.prefix, event), headers, body.into())
                .await
                .map_err(|e| Error::Sink(format!("publish of {}: {e}", event.event_id)))?;
            in_flight.push_back((event.event_id, ack));
        }
        while let Some(next) = in_flight.pop_front() {
            acknowledged(Some(next)).await?;
        }
        Ok(())
    }
}

async fn acknowledged(
    pending: Option<(uuid::Uuid, async_nats::jetstream::context::PublishAckFuture)>,
) -> Result<(), Error> {
    if let Some((event_id, ack)) = pending {
        ack.await
            .map_err(|e| Error::Sink(format!("no acknowledgement for {event_id}: {e}")))?;
    }
    Ok(())
}

/// `<prefix>.<ledger>.<stream kind>.<event>`; characters a subject token cannot hold become `_`.
pub fn subject(prefix: &str, event: &PublicEvent) -> String {
    let token = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = event
        .event_type
        .split_once('.')
        .map_or(event.event_type.as_str(), |(_, n)| n);
    format!(
        "{prefix}.{}.{}.{}",
        token(&event.ledger),
        token(&event.stream_kind),
        token(name)
    )
}
