//! Workspace-level end to end: the same realistic commands executed by the executor against PostgreSQL and by
//! the pure in-memory ledger give the same events, in the same order per stream, and the same balances; the
//! log read back from PostgreSQL replays to the same ledger. Also the in-memory store behind the same
//! executor: three paths, one ledger.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::{
    Actor, Change, Command, CommandEnvelope, Currency, Event, Gateway, MemoryLedger, Money, Rate,
    StreamId,
};
use ledger_store::testdb::TestDb;
use ledger_store::{
    CommandOutcome, DEFAULT_LEDGER, EventStore, Executor, ExecutorConfig, InMemoryEventStore,
};
use uuid::Uuid;

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

/// A small marketplace: two projects with disputes, refunds, payouts (one failing, one succeeding late).
fn commands() -> Vec<CommandEnvelope> {
    let (buyer, seller) = (Uuid::from_u128(0xB0B), Uuid::from_u128(0x5E11));
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).unwrap(),
        buyer_fee_rate: Rate::from_bps(250).unwrap(),
        ..FeePolicy::default()
    };
    let stripe = Actor::Gateway(Gateway::Stripe);
    let mut list: Vec<(Actor, Command)> = vec![
        (
            Actor::User(buyer),
            Command::InitiateDeposit {
                payment_id: Uuid::from_u128(1),
                amount: usd(50_000),
                gateway: Gateway::Stripe,
                fund: None,
            },
        ),
        (
            stripe,
            Command::FailDeposit {
                payment_id: Uuid::from_u128(1),
                reason: "declined".into(),
            },
        ),
        (
            stripe,
            Command::ConfirmDeposit {
                payment_id: Uuid::from_u128(1),
                amount: usd(50_000),
                gateway_fee: Some(usd(175)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        ),
        (
            stripe,
            Command::ConfirmDeposit {
                payment_id: Uuid::from_u128(1),
                amount: usd(50_000),
                gateway_fee: Some(usd(175)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        ),
    ];
    for p in 0..2_u128 {
        let project_id = Uuid::from_u128(0x100 + p);
        list.extend([
            (
                Actor::User(buyer),
                Command::CreateProject {
                    project_id,
                    buyer,
                    seller,
                    currency: Currency::USD,
                    milestones: vec![usd(10_000), usd(7_333)],
                    fees: fees.into(),
                },
            ),
            (
                Actor::User(buyer),
                Command::SubmitProjectForAgreement { project_id },
            ),
            (Actor::User(seller), Command::AgreeToProject { project_id }),
            (
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone: 2,
                },
            ),
            (
                Actor::User(seller),
                Command::SubmitMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                Actor::User(buyer),
                Command::ApproveMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                Actor::User(buyer),
                Command::OpenDispute {
                    dispute_id: Uuid::from_u128(0x200 + p),
                    project_id,
                    milestone: 2,
                    reason: "late".into(),
                    proposed_release: usd(3_001),
                    respond_by: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
                },
            ),
            (
                Actor::User(seller),
                Command::AcceptDisputeProposal {
                    dispute_id: Uuid::from_u128(0x200 + p),
                },
            ),
        ]);
    }
    list.extend([
        (
            Actor::User(seller),
            Command::RequestPayout {
                payout_id: Uuid::from_u128(0x300),
                amount: usd(5_000),
                fee: Some(usd(100)),
                gateway: Gateway::Stripe,
            },
        ),
        (
            stripe,
            Command::FailTransfer {
                payment_id: Uuid::from_u128(0x300),
                reason: "closed".into(),
            },
        ),
        (
            stripe,
            Command::ConfirmTransfer {
                payment_id: Uuid::from_u128(0x300),
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        ),
        (
            Actor::User(seller),
            Command::RequestPayout {
                payout_id: Uuid::from_u128(0x301),
                amount: usd(100_000),
                fee: None,
                gateway: Gateway::Stripe,
            },
        ),
    ]);
    let start = Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap();
    list.into_iter()
        .enumerate()
        .map(|(i, (actor, command))| CommandEnvelope {
            command_id: Uuid::from_u128(0xC000 + i as u128),
            actor,
            at: start + Duration::minutes(i as i64),
            command,
        })
        .collect()
}

async fn through_executor(store: Arc<dyn EventStore>) -> (Vec<bool>, MemoryLedger) {
    let executor = Executor::new(store.clone(), DEFAULT_LEDGER, ExecutorConfig::default());
    let mut accepted = Vec::new();
    for env in commands() {
        accepted.push(matches!(
            executor.execute(&env, None).await.unwrap(),
            CommandOutcome::Accepted { .. }
        ));
    }
    let mut ledger = MemoryLedger::new();
    for recorded in store.read_log(DEFAULT_LEDGER, 0, 10_000).await.unwrap() {
        let stream: StreamId = recorded.stream_id.parse().unwrap();
        let event = Event::from_stored(
            &stream,
            &recorded.event_type,
            recorded.schema_version,
            recorded.payload,
        )
        .unwrap();
        ledger.apply(Change {
            stream,
            event_id: recorded.event_id,
            event,
        });
    }
    (accepted, ledger)
}

fn per_stream(log: &[Change]) -> HashMap<StreamId, Vec<(Uuid, Event)>> {
    let mut out: HashMap<StreamId, Vec<(Uuid, Event)>> = HashMap::new();
    for c in log {
        out.entry(c.stream)
            .or_default()
            .push((c.event_id, c.event.clone()));
    }
    out
}

#[tokio::test]
async fn postgres_memory_store_and_pure_core_give_one_ledger() {
    let mut pure = MemoryLedger::new();
    let pure_accepted: Vec<bool> = commands()
        .iter()
        .map(|env| pure.execute(env).is_ok())
        .collect();
    // The last payout asks for more than the wallet holds: refused everywhere.
    assert_eq!(pure_accepted.last(), Some(&false));
    assert!(pure_accepted.iter().filter(|a| **a).count() >= 20);

    let db = TestDb::new().await;
    let (pg_accepted, from_pg) = through_executor(Arc::new(db.store())).await;
    let (mem_accepted, from_mem) = through_executor(Arc::new(InMemoryEventStore::new())).await;

    assert_eq!(pg_accepted, pure_accepted);
    assert_eq!(mem_accepted, pure_accepted);
    // Same events (ids derived from command ids, so equal across paths), same order within every stream.
    assert_eq!(per_stream(from_pg.log()), per_stream(pure.log()));
    assert_eq!(per_stream(from_mem.log()), per_stream(pure.log()));
    assert_eq!(from_pg.balances(), pure.balances());
    assert_eq!(from_pg.written_states(), pure.written_states());
    assert!(
        pure.balances()
            .imbalance_by_currency()
            .values()
            .all(|v| *v == 0)
    );
    assert!(pure.balances().negative_constrained().is_empty());
}
