//! Commands decided per second and events folded per second on a realistic escrow mix.
//!
//! Run: `cargo bench -p ledger-core --bench decide_fold` (criterion prints elements/s as "thrpt").
//! The mix: projects of three milestones with a commission and a buyer fee, funded by gateway deposits
//! (with a gateway fee), each milestone funded, submitted, approved and released, and sellers paid out.

use std::collections::HashMap;
use std::hint::black_box;

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::engine::{self, AggState};
use ledger_core::{
    Actor, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money, Rate, StreamId,
};
use uuid::Uuid;

const PROJECTS: u128 = 2_000;

fn at(step: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(step)
}

fn id(kind: u128, n: u128) -> Uuid {
    Uuid::from_u128((kind << 64) | n)
}

struct Scenario {
    ledger: MemoryLedger,
    step: i64,
}

impl Scenario {
    fn run(&mut self, actor: Actor, command: Command) {
        self.step += 1;
        let env = CommandEnvelope {
            command_id: id(9, self.step as u128),
            actor,
            at: at(self.step),
            command,
        };
        self.ledger
            .execute(&env)
            .expect("scenario commands are valid");
    }
}

/// Builds the realistic log: every project goes through its whole lifecycle.
fn realistic_ledger() -> MemoryLedger {
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).unwrap(),
        buyer_fee_rate: Rate::from_bps(250).unwrap(),
        ..FeePolicy::default()
    };
    let mut s = Scenario {
        ledger: MemoryLedger::new(),
        step: 0,
    };
    for n in 0..PROJECTS {
        let (buyer, seller, project_id) = (id(1, n % 500), id(2, n % 300), id(3, n));
        let milestones = vec![usd(10_000), usd(25_050), usd(7_333)];
        s.run(
            Actor::User(buyer),
            Command::CreateProject {
                project_id,
                buyer,
                seller,
                currency: Currency::USD,
                milestones,
                fees: fees.into(),
            },
        );
        s.run(
            Actor::User(buyer),
            Command::SubmitProjectForAgreement { project_id },
        );
        s.run(Actor::User(seller), Command::AgreeToProject { project_id });
        let payment_id = id(4, n);
        s.run(
            Actor::User(buyer),
            Command::InitiateDeposit {
                payment_id,
                amount: usd(44_000),
                gateway: Gateway::Stripe,
                fund: None,
            },
        );
        s.run(
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id,
                amount: usd(44_000),
                gateway_fee: Some(usd(130)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
        for milestone in 1..=3 {
            s.run(
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone,
                },
            );
            s.run(
                Actor::User(seller),
                Command::SubmitMilestone {
                    project_id,
                    milestone,
                },
            );
            s.run(
                Actor::User(buyer),
                Command::ApproveMilestone {
                    project_id,
                    milestone,
                },
            );
        }
        let payout_id = id(5, n);
        s.run(
            Actor::User(seller),
            Command::RequestPayout {
                payout_id,
                amount: usd(30_000),
                fee: Some(usd(100)),
                gateway: Gateway::Stripe,
            },
        );
        s.run(
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmTransfer {
                payment_id: payout_id,
                gateway_fee: Some(usd(25)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
    }
    s.ledger
}

/// The commands a payment worker and the parties send most, each matching its project's stage (so they are
/// accepted): fund (stage 0), submit (1), approve (2), pay out (3), plus a deposit confirmation for every
/// project. Decided against the states as they stand, without applying.
fn commands_to_decide() -> Vec<CommandEnvelope> {
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let mut commands = Vec::new();
    for n in 0..PROJECTS {
        let (buyer, seller, project_id) = (id(1, n % 500), id(2, n % 300), id(3, n));
        let env = |k: u128, actor, command| CommandEnvelope {
            command_id: id(7, n * 16 + k),
            actor,
            at: at(1_000_000),
            command,
        };
        commands.push(match n % 4 {
            0 => env(
                0,
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            1 => env(
                1,
                Actor::User(seller),
                Command::SubmitMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            2 => env(
                2,
                Actor::User(buyer),
                Command::ApproveMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            _ => env(
                3,
                Actor::User(seller),
                Command::RequestPayout {
                    payout_id: id(8, n),
                    amount: usd(1_000),
                    fee: None,
                    gateway: Gateway::Stripe,
                },
            ),
        });
        commands.push(env(
            4,
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id: id(6, n),
                amount: usd(20_000),
                gateway_fee: Some(usd(60)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        ));
    }
    commands
}

/// States in each stage the commands above need: one project per stage, round robin.
fn staged_states() -> HashMap<StreamId, AggState> {
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).unwrap(),
        buyer_fee_rate: Rate::from_bps(250).unwrap(),
        ..FeePolicy::default()
    };
    let mut s = Scenario {
        ledger: MemoryLedger::new(),
        step: 0,
    };
    for n in 0..PROJECTS {
        let (buyer, seller, project_id) = (id(1, n % 500), id(2, n % 300), id(3, n));
        s.run(
            Actor::User(buyer),
            Command::CreateProject {
                project_id,
                buyer,
                seller,
                currency: Currency::USD,
                milestones: vec![usd(10_000), usd(5_000)],
                fees: fees.into(),
            },
        );
        s.run(
            Actor::User(buyer),
            Command::SubmitProjectForAgreement { project_id },
        );
        s.run(Actor::User(seller), Command::AgreeToProject { project_id });
        let payment_id = id(4, n);
        s.run(
            Actor::User(buyer),
            Command::InitiateDeposit {
                payment_id,
                amount: usd(40_000),
                gateway: Gateway::Stripe,
                fund: None,
            },
        );
        s.run(
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id,
                amount: usd(40_000),
                gateway_fee: Some(usd(100)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
        s.run(
            Actor::User(buyer),
            Command::InitiateDeposit {
                payment_id: id(6, n),
                amount: usd(20_000),
                gateway: Gateway::Stripe,
                fund: None,
            },
        );
        // Stage by n: 0 unfunded, 1 funded, 2 submitted, 3 approved-and-released.
        for (stage, command) in [
            (
                1,
                Command::FundMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                2,
                Command::SubmitMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                3,
                Command::ApproveMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
        ] {
            if n % 4 >= stage {
                let actor = if stage == 2 {
                    Actor::User(seller)
                } else {
                    Actor::User(buyer)
                };
                s.run(actor, command);
            }
        }
    }
    // Every stream the commands touch must be loaded (wallets of payees included).
    let mut states = s.ledger.states().clone();
    for n in 0..PROJECTS {
        for user in [id(1, n % 500), id(2, n % 300)] {
            let stream = StreamId::Wallet {
                user,
                currency: Currency::USD,
            };
            states
                .entry(stream)
                .or_insert_with(|| AggState::initial(&stream));
        }
        for p in [id(6, n), id(8, n)] {
            states
                .entry(StreamId::Payment(p))
                .or_insert_with(|| AggState::initial(&StreamId::Payment(p)));
        }
    }
    states
}

fn fold_benches(c: &mut Criterion) {
    let ledger = realistic_ledger();
    let log = ledger.log().to_vec();
    let mut by_stream: HashMap<StreamId, Vec<ledger_core::Event>> = HashMap::new();
    for change in &log {
        by_stream
            .entry(change.stream)
            .or_default()
            .push(change.event.clone());
    }
    let streams: Vec<(StreamId, Vec<ledger_core::Event>)> = by_stream.into_iter().collect();
    eprintln!(
        "realistic log: {} events in {} streams",
        log.len(),
        streams.len()
    );

    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(log.len() as u64));
    // Loading aggregates: each stream's events folded into its state (what the executor does on load).
    group.bench_function("aggregate_states", |b| {
        b.iter(|| {
            for (stream, events) in &streams {
                let state = events
                    .iter()
                    .fold(AggState::initial(stream), engine::evolve);
                black_box(state);
            }
        })
    });
    // A full replay: every state plus the balances of every account (what `trial-balance` does).
    group.bench_function("full_replay_with_balances", |b| {
        b.iter(|| black_box(MemoryLedger::replay(&log)))
    });
    group.finish();
}

fn decide_benches(c: &mut Criterion) {
    let states = staged_states();
    let commands = commands_to_decide();
    let accepted = commands
        .iter()
        .filter(|env| engine::decide(env, &states).is_ok())
        .count();
    eprintln!(
        "decide mix: {} commands, {} accepted, {} refused",
        commands.len(),
        accepted,
        commands.len() - accepted
    );
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(commands.len() as u64));
    group.bench_function("escrow_mix", |b| {
        b.iter(|| {
            for env in &commands {
                black_box(engine::decide(env, &states)).ok();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fold_benches, decide_benches);
criterion_main!(benches);
