//! A realistic marketplace history, generated deterministically from a seed: buyers deposit through a
//! gateway (some attempts fail first, some callbacks arrive twice), fund multi-milestone projects with a
//! commission and a buyer fee, sellers submit, buyers request changes or approve (release follows), some
//! milestones are disputed and split, some refunded; sellers withdraw, and some payouts fail.
//!
//! Used by `bench seed` (millions of events) and the benchmarks; every command goes through the real engine,
//! so the history is one the ledger itself would have written.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money, Rate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Ids of one generated history: a namespace per run keeps runs independent.
pub struct Ids {
    namespace: u128,
}

impl Ids {
    pub fn new(namespace: u64) -> Ids {
        Ids {
            namespace: u128::from(namespace) << 64,
        }
    }
    fn id(&self, kind: u8, n: u64) -> Uuid {
        Uuid::from_u128(self.namespace | (u128::from(kind) << 56) | u128::from(n))
    }
    pub fn buyer(&self, n: u64) -> Uuid {
        self.id(1, n)
    }
    pub fn seller(&self, n: u64) -> Uuid {
        self.id(2, n)
    }
    pub fn project(&self, n: u64) -> Uuid {
        self.id(3, n)
    }
    pub fn payment(&self, n: u64) -> Uuid {
        self.id(4, n)
    }
    pub fn dispute(&self, n: u64) -> Uuid {
        self.id(5, n)
    }
    pub fn command(&self, n: u64) -> Uuid {
        self.id(9, n)
    }
}

/// Drives the engine through one project's life after another.
pub struct Generator {
    pub ledger: MemoryLedger,
    /// Each accepted command with the index in `ledger.log()` of its first event (taken with the log), so
    /// that a writer of the history can keep each command with its events as the executor does.
    pub executed: Vec<(usize, CommandEnvelope)>,
    ids: Ids,
    rng: StdRng,
    commands: u64,
    payments: u64,
    projects: u64,
    buyers: u64,
    sellers: u64,
    start: DateTime<Utc>,
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

impl Generator {
    pub fn new(seed: u64, buyers: u64, sellers: u64) -> Generator {
        Generator {
            ledger: MemoryLedger::new(),
            executed: Vec::new(),
            ids: Ids::new(seed),
            rng: StdRng::seed_from_u64(seed),
            commands: 0,
            payments: 0,
            projects: 0,
            buyers: buyers.max(1),
            sellers: sellers.max(1),
            start: Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap(),
        }
    }

    /// Simulated time: one minute per command, so as-of queries have a history to walk through.
    pub fn now(&self) -> DateTime<Utc> {
        self.start + Duration::minutes(self.commands as i64)
    }

    fn run(&mut self, actor: Actor, command: Command) -> bool {
        self.commands += 1;
        let env = CommandEnvelope {
            command_id: self.ids.command(self.commands),
            actor,
            at: self.now(),
            command,
        };
        let first = self.ledger.log().len();
        let accepted = self.ledger.execute(&env).is_ok();
        if self.ledger.log().len() > first {
            self.executed.push((first, env));
        }
        accepted
    }

    fn next_payment(&mut self) -> Uuid {
        self.payments += 1;
        self.ids.payment(self.payments)
    }

    /// A buyer tops up through Stripe; 10% of deposits fail once first, 10% are confirmed twice.
    fn deposit(&mut self, buyer: Uuid, minor: i64) {
        let payment_id = self.next_payment();
        let stripe = Actor::Gateway(Gateway::Stripe);
        self.run(
            Actor::User(buyer),
            Command::InitiateDeposit {
                payment_id,
                amount: usd(minor),
                gateway: Gateway::Stripe,
                fund: None,
            },
        );
        if self.rng.random_ratio(1, 10) {
            self.run(
                stripe,
                Command::FailDeposit {
                    payment_id,
                    reason: "card_declined".into(),
                },
            );
        }
        let fee = usd(minor * 29 / 1_000 + 30);
        let confirm = Command::ConfirmDeposit {
            payment_id,
            amount: usd(minor),
            gateway_fee: Some(fee),
            occurred_at: None,
            fee_in_suspense: None,
        };
        self.run(stripe, confirm.clone());
        if self.rng.random_ratio(1, 10) {
            self.run(stripe, confirm);
        }
    }

    /// One project from creation to its last milestone, then the seller's withdrawal.
    pub fn project(&mut self) {
        self.projects += 1;
        let n = self.projects;
        let buyer = self.ids.buyer(n % self.buyers);
        let seller = self.ids.seller(n % self.sellers);
        let project_id = self.ids.project(n);
        let milestones: Vec<i64> = (0..self.rng.random_range(1..=4))
            .map(|_| self.rng.random_range(50..2_000) * 100)
            .collect();
        let total: i64 = milestones.iter().sum();
        let fees = FeePolicy {
            commission_rate: Rate::from_bps(1_000).expect("10% is a rate"),
            buyer_fee_rate: Rate::from_bps(250).expect("2.5% is a rate"),
            ..FeePolicy::default()
        };
        let create = Command::CreateProject {
            project_id,
            buyer,
            seller,
            currency: Currency::USD,
            milestones: milestones.iter().map(|m| usd(*m)).collect(),
            fees: fees.into(),
        };
        self.run(Actor::User(buyer), create);
        self.run(
            Actor::User(buyer),
            Command::SubmitProjectForAgreement { project_id },
        );
        self.run(Actor::User(seller), Command::AgreeToProject { project_id });
        self.deposit(buyer, total + total / 40 + 100);
        for (i, _) in milestones.iter().enumerate() {
            self.milestone(project_id, (i + 1) as u32, buyer, seller, n);
        }
        self.withdraw(seller);
    }

    fn milestone(&mut self, project_id: Uuid, milestone: u32, buyer: Uuid, seller: Uuid, n: u64) {
        if !self.run(
            Actor::User(buyer),
            Command::FundMilestone {
                project_id,
                milestone,
            },
        ) {
            return;
        }
        self.run(
            Actor::User(seller),
            Command::SubmitMilestone {
                project_id,
                milestone,
            },
        );
        let roll = self.rng.random_range(0..100);
        if roll < 15 {
            self.run(
                Actor::User(buyer),
                Command::RequestChanges {
                    project_id,
                    milestone,
                },
            );
            self.run(
                Actor::User(seller),
                Command::SubmitMilestone {
                    project_id,
                    milestone,
                },
            );
        }
        if roll >= 90 {
            self.dispute(project_id, milestone, buyer, seller, n);
        } else if roll >= 85 {
            self.run(
                Actor::User(seller),
                Command::RefundMilestone {
                    project_id,
                    milestone,
                },
            );
        } else {
            self.run(
                Actor::User(buyer),
                Command::ApproveMilestone {
                    project_id,
                    milestone,
                },
            );
        }
    }

    /// The buyer disputes and proposes a split; the seller accepts it.
    fn dispute(&mut self, project_id: Uuid, milestone: u32, buyer: Uuid, seller: Uuid, n: u64) {
        let dispute_id = self.ids.dispute(n * 8 + u64::from(milestone));
        let held = match self
            .ledger
            .state(&ledger_core::StreamId::Project(project_id))
        {
            Some(ledger_core::AggState::Project(p)) => {
                p.milestones[(milestone - 1) as usize].held_minor()
            }
            _ => return,
        };
        let open = Command::OpenDispute {
            dispute_id,
            project_id,
            milestone,
            reason: "work incomplete".into(),
            proposed_release: usd(held * self.rng.random_range(20..80) / 100),
            respond_by: self.now() + Duration::days(7),
        };
        if self.run(Actor::User(buyer), open) {
            self.run(
                Actor::User(seller),
                Command::AcceptDisputeProposal { dispute_id },
            );
        }
    }

    /// The seller withdraws most of the balance; 5% of payouts fail and go back to the wallet.
    fn withdraw(&mut self, seller: Uuid) {
        let available = match self.ledger.state(&ledger_core::StreamId::Wallet {
            user: seller,
            currency: Currency::USD,
        }) {
            Some(ledger_core::AggState::Wallet(w)) => w.available_minor,
            _ => 0,
        };
        if available < 1_000 {
            return;
        }
        let payout_id = self.next_payment();
        let request = Command::RequestPayout {
            payout_id,
            amount: usd(available - 500),
            fee: Some(usd(250)),
            gateway: Gateway::Stripe,
        };
        if !self.run(Actor::User(seller), request) {
            return;
        }
        let outcome = if self.rng.random_ratio(1, 20) {
            Command::FailTransfer {
                payment_id: payout_id,
                reason: "account_closed".into(),
            }
        } else {
            Command::ConfirmTransfer {
                payment_id: payout_id,
                gateway_fee: Some(usd(25)),
                occurred_at: None,
                fee_in_suspense: None,
            }
        };
        self.run(Actor::Gateway(Gateway::Stripe), outcome);
    }
}
