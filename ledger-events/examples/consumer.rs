//! An example consumer of the ledger's events on NATS JetStream: a durable pull consumer on stream `ESCROW`
//! that processes each event once, deduplicating by `event_id` (delivery is at least once), and checks that
//! positions increase per ledger.
//!
//!     cargo run -p ledger-events --example consumer -- nats://127.0.0.1:4222

use std::collections::{HashMap, HashSet, VecDeque};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use ledger_events::PublicEvent;

/// Event ids remembered for deduplication (a redelivery comes soon after the original).
const SEEN_MAX: usize = 100_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js.get_stream("ESCROW").await?;
    let consumer = stream
        .get_or_create_consumer(
            "example-consumer",
            pull::Config {
                durable_name: Some("example-consumer".into()),
                ..Default::default()
            },
        )
        .await?;
    let (mut seen, mut order): (HashSet<uuid::Uuid>, VecDeque<uuid::Uuid>) = Default::default();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let event: PublicEvent = serde_json::from_slice(&message.payload)?;
        if seen.insert(event.event_id) {
            order.push_back(event.event_id);
            if order.len() > SEEN_MAX {
                order.pop_front().map(|old| seen.remove(&old));
            }
            if let Some(previous) = last.insert(event.ledger.clone(), event.position)
                && event.position < previous
            {
                eprintln!("out of order: {} after {previous}", event.position);
            }
            println!("{} {} {}", event.position, event.event_type, event.event_id);
        }
        message.ack().await?;
    }
    Ok(())
}
