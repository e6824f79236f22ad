//! The ledger's balances at a position: the nearest balance snapshot the ledger took (digest-checked by
//! `ledger_store::balances`) plus the journal entries after it, so the balances after each delivered event
//! are exact from any starting point.

use ledger_core::Balances;
use ledger_store::{EventStore, PgEventStore};
use sqlx::PgPool;

use crate::Error;

/// Events read per page while catching the balances up.
const PAGE: i64 = 5_000;

/// The balances just after `position` (0: empty).
pub async fn balances_at(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    position: i64,
) -> Result<Balances, Error> {
    let mut start = 0;
    let mut balances = Balances::default();
    if position > 0
        && let Some(snapshot) =
            ledger_store::balances::load_at_or_before(pool, ledger, position).await?
    {
        balances = ledger_store::balances::balances_from_json(&snapshot.balances).map_err(|e| {
            Error::Decode(format!("balance snapshot at {}: {e}", snapshot.position))
        })?;
        start = snapshot.position;
    }
    while start < position {
        let page = store
            .read_log(ledger, start, PAGE.min(position - start))
            .await?;
        let Some(last) = page.last().and_then(|e| e.position) else {
            break;
        };
        for record in &page {
            let stream = record
                .stream_id
                .parse()
                .map_err(|e: ledger_core::engine::BadStreamId| Error::Decode(e.to_string()))?;
            let event = ledger_core::Event::from_stored(
                &stream,
                &record.event_type,
                record.schema_version,
                record.payload.clone(),
            )
            .map_err(|e| Error::Decode(e.to_string()))?;
            if let Some(entry) = event.entry() {
                balances.apply(entry);
            }
        }
        start = last;
    }
    Ok(balances)
}

/// The escrows' holds just after `position`, from the log's start (balance snapshots do not say since when
/// an escrow holds money): for a cursor saved before escrow-age monitors existed, once.
pub async fn holds_at(
    store: &PgEventStore,
    ledger: &str,
    position: i64,
) -> Result<crate::monitor::Holds, Error> {
    let mut balances = Balances::default();
    let mut watch = crate::monitor::Watch::default();
    let mut start = 0;
    while start < position {
        let page = store
            .read_log(ledger, start, PAGE.min(position - start))
            .await?;
        let Some(last) = page.last().and_then(|e| e.position) else {
            break;
        };
        for record in &page {
            let event = crate::model::public_event(record, &mut balances)?;
            watch.observe(&event, &balances, event.recorded_at);
        }
        start = last;
    }
    Ok(watch.holds().clone())
}
