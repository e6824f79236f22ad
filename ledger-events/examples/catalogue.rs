//! Writes `docs/events.md`: one real example of every public event type, taken from databases the engine
//! wrote (e.g. the test suites' databases, kept with `ESCROW_TEST_KEEP_DATABASES=1`), each mapped by the
//! same code the relay and the pull feed use. `ledger-events/tests/catalogue_doc.rs` checks the file
//! against the code: every type has an example, and every example decodes as the core's event of its type.
//!
//!     ESCROW_TEST_KEEP_DATABASES=1 cargo test -p ledger-cli -p escrow-ledger-tests
//!     cargo run -p ledger-events --example catalogue -- postgres://postgres@127.0.0.1:5432/postgres docs/events.md
//!
//! Every database whose name starts with `escrow_test_` is read (at most `EVENTS_PER_DATABASE` events each);
//! the first example of a type wins. Monitor events come from a monitor (`<account> > 0 <currency>`) on the
//! first account an entry touches, run over the same log.

use std::collections::BTreeMap;

use ledger_core::Balances;
use ledger_events::catalogue::public_types;
use ledger_events::model::public_event;
use ledger_events::monitor::{Monitor, Watch};
use ledger_events::{PublicEvent, running};
use ledger_store::{EventStore, PgEventStore};
use rust_decimal::Decimal;
use sqlx::PgPool;

const EVENTS_PER_DATABASE: i64 = 20_000;
const PAGE: i64 = 2_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let admin_url = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let out = args.next().unwrap_or_else(|| "docs/events.md".into());
    let admin = PgPool::connect(&admin_url).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "select datname from pg_database where datname like 'escrow\\_test\\_%' order by datname",
    )
    .fetch_all(&admin)
    .await?;
    let wanted = public_types();
    let mut examples: BTreeMap<String, PublicEvent> = BTreeMap::new();
    for name in &names {
        if examples.len() == wanted.len() {
            break;
        }
        let (base, _) = admin_url
            .rsplit_once('/')
            .ok_or("admin URL has no database")?;
        let pool = match PgPool::connect(&format!("{base}/{name}")).await {
            Ok(pool) => pool,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        if let Err(e) = collect(&pool, &mut examples).await {
            eprintln!("{name}: {e}");
        }
        pool.close().await;
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|t| !examples.contains_key(*t))
        .collect();
    std::fs::write(&out, render(&wanted, &examples))?;
    eprintln!(
        "{out}: {} of {} types from {} databases; without an example: {missing:?}",
        examples.len(),
        wanted.len(),
        names.len()
    );
    Ok(())
}

async fn collect(
    pool: &PgPool,
    examples: &mut BTreeMap<String, PublicEvent>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ledgers: Vec<String> = sqlx::query_scalar("select ledger_id from ledger.ledgers")
        .fetch_all(pool)
        .await?;
    let store = PgEventStore::new(pool.clone());
    for ledger in ledgers {
        let head = store.head_position(&ledger).await?.min(EVENTS_PER_DATABASE);
        let mut balances: Balances = running::balances_at(pool, &store, &ledger, 0).await?;
        let mut watch: Option<Watch> = None;
        let mut position = 0;
        while position < head {
            let page = store.read_log(&ledger, position, PAGE).await?;
            let Some(last) = page.last().and_then(|e| e.position) else {
                break;
            };
            for record in &page {
                let event = public_event(record, &mut balances)?;
                if watch.is_none()
                    && let Some(entry) = &event.entry
                {
                    let mut w = Watch::default();
                    let first = &entry.postings[0];
                    w.refresh(
                        vec![Monitor {
                            monitor_id: uuid::Uuid::new_v4(),
                            name: "example".into(),
                            account: first.account.clone(),
                            currency: first.currency.clone(),
                            op: ">".into(),
                            threshold: Decimal::ZERO,
                            since_position: 0,
                        }],
                        &Balances::default(),
                    );
                    watch = Some(w);
                }
                let edges = watch
                    .as_mut()
                    .map(|w| w.observe(&event, &balances, event.recorded_at))
                    .unwrap_or_default();
                for e in std::iter::once(event).chain(edges) {
                    examples.entry(e.event_type.clone()).or_insert(e);
                }
            }
            position = last;
        }
    }
    Ok(())
}

fn render(wanted: &[String], examples: &BTreeMap<String, PublicEvent>) -> String {
    let mut out = String::from(
        "# Public events: one example of each type\n\n\
         Generated by `cargo run -p ledger-events --example catalogue` from databases the engine wrote \
         (see that file); `ledger-events/tests/catalogue_doc.rs` fails when a type has no example here or an \
         example no longer decodes as its type. The envelope and the guarantees are in the README \
         (\"Events out\").\n\n\
         Each example is one message as NATS, a webhook and the pull feed deliver it (`schema_version` 1). \
         `data` holds the event's own fields (money as `{\"amount\": \"12.50\", \"currency\": \"USD\"}`); \
         `entry`, on the events that move money, holds the postings with each account's balance after them.\n\n",
    );
    let mut kind = "";
    for t in wanted {
        let this_kind = t.split('.').next().unwrap_or_default();
        if this_kind != kind {
            kind = this_kind;
            out.push_str(&format!("## `{kind}`\n\n"));
        }
        out.push_str(&format!("### `{t}`\n\n"));
        match examples.get(t) {
            Some(e) => {
                let json = serde_json::to_string_pretty(e).expect("events serialize");
                out.push_str(&format!("```json\n{json}\n```\n\n"));
            }
            None => out.push_str("No example yet.\n\n"),
        }
    }
    out
}
