//! Findings of the adversarial review of issues 9 and 10 (ledger-core): each test reproduces one bug found
//! by reading the landed work as a thief or as a payments engineer would.

use chrono::{DateTime, TimeZone, Utc};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::{
    Account, Actor, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money, Outcome,
    Rejection,
};
use uuid::Uuid;

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);
const SUSPENSE: Uuid = Uuid::from_u128(0x6001);

fn usd(text: &str) -> Money {
    Money::parse(text, USD).expect("valid USD")
}

fn user(id: Uuid) -> Actor {
    Actor::User(id)
}

struct World {
    ledger: MemoryLedger,
    commands: u128,
    now: DateTime<Utc>,
}

impl World {
    fn new() -> World {
        World {
            ledger: MemoryLedger::new(),
            commands: 0,
            now: Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap(),
        }
    }

    fn exec(&mut self, actor: Actor, command: Command) -> Result<Outcome, Rejection> {
        self.commands += 1;
        let env = CommandEnvelope {
            command_id: Uuid::from_u128(0xC0DE_0000_0000 + self.commands),
            actor,
            at: self.now,
            command,
        };
        self.ledger.execute(&env)
    }

    #[track_caller]
    fn ok(&mut self, actor: Actor, command: Command) -> Outcome {
        match self.exec(actor, command.clone()) {
            Ok(outcome) => {
                for (follow, result) in &outcome.follow_ups {
                    if let Err(r) = result {
                        panic!(
                            "follow-up {:?} rejected: {} ({r})",
                            follow.command,
                            r.code()
                        );
                    }
                }
                outcome
            }
            Err(r) => panic!("{command:?} by {actor} was rejected: {} ({r})", r.code()),
        }
    }

    fn bal(&self, account: Account) -> i128 {
        self.ledger.balances().balance(&account, USD)
    }

    fn deposit(&mut self, payment: Uuid, amount: Money) {
        self.ok(
            user(BUYER),
            Command::InitiateDeposit {
                payment_id: payment,
                amount,
                gateway: Gateway::Stripe,
                fund: None,
            },
        );
        self.ok(
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id: payment,
                amount,
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
    }

    /// Created by the buyer and agreed by both; nothing funded.
    fn agreed_project(&mut self, project: Uuid, milestones: &[Money]) {
        self.ok(
            user(BUYER),
            Command::CreateProject {
                project_id: project,
                buyer: BUYER,
                seller: SELLER,
                currency: USD,
                milestones: milestones.to_vec(),
                fees: FeePolicy::default().into(),
            },
        );
        self.ok(
            user(BUYER),
            Command::SubmitProjectForAgreement {
                project_id: project,
            },
        );
        self.ok(
            user(SELLER),
            Command::AgreeToProject {
                project_id: project,
            },
        );
    }

    fn fund(&mut self, project: Uuid, milestone: u32) {
        self.ok(
            user(BUYER),
            Command::FundMilestone {
                project_id: project,
                milestone,
            },
        );
    }
}

/// A verified callback of one gateway books unmatched money in suspense only against its own clearing
/// account: a Paystack callback must not move money on Stripe's clearing (issue 9, "a callback acts only on
/// what its gateway owns"; operators and timers keep every gateway).
#[test]
fn a_gateway_records_suspense_only_on_its_own_clearing() {
    let mut w = World::new();
    let on_stripe = Command::RecordSuspense {
        suspense_id: SUSPENSE,
        gateway: Gateway::Stripe,
        amount: usd("1000.00"),
        reference: "forged".into(),
        reason: "unknown reference".into(),
    };
    let r = w
        .exec(Actor::Gateway(Gateway::Paystack), on_stripe.clone())
        .expect_err("Paystack booked money on Stripe's clearing");
    assert_eq!(r.code(), "not_a_party", "{r}");
    assert_eq!(w.bal(Account::GatewayClearing(Gateway::Stripe)), 0);
    // Its own gateway and an operator may.
    w.ok(Actor::Gateway(Gateway::Stripe), on_stripe);
    w.ok(
        Actor::Admin(Uuid::from_u128(0xAD)),
        Command::RecordSuspense {
            suspense_id: Uuid::from_u128(0x6002),
            gateway: Gateway::Fincra,
            amount: usd("1.00"),
            reference: "manual".into(),
            reason: "found in the bank statement".into(),
        },
    );
}

/// A lost chargeback claws back escrow from the projects the buyer funded most recently
/// (`CHARGEBACK_PROJECTS_MAX`). Funding another milestone of an old project is recent funding: the money the
/// stolen card paid sits there, and it must be within reach, not hidden behind eight decoy projects funded
/// (and refunded) in between.
#[test]
fn a_lost_chargeback_reaches_escrow_funded_last_in_an_old_project() {
    const OLD: Uuid = Uuid::from_u128(0x1001);
    const FIRST: Uuid = Uuid::from_u128(0x4001);
    const STOLEN: Uuid = Uuid::from_u128(0x4002);
    const CHARGEBACK: Uuid = Uuid::from_u128(0x7001);
    let mut w = World::new();
    w.deposit(FIRST, usd("20.00"));
    w.agreed_project(OLD, &[usd("10.00"), usd("500.00")]);
    w.fund(OLD, 1);
    // Eight decoys, funded and cancelled by the (colluding) seller: their escrow went back to the buyer.
    for n in 0..8 {
        let decoy = Uuid::from_u128(0x2000 + n);
        w.agreed_project(decoy, &[usd("1.00")]);
        w.fund(decoy, 1);
        w.ok(user(SELLER), Command::CancelProject { project_id: decoy });
    }
    // The stolen card pays milestone 2 of the old project.
    w.deposit(STOLEN, usd("500.00"));
    w.fund(OLD, 2);
    // Escrow held in the old project: 10.00 (milestone 1) + 500.00 (milestone 2, the stolen money).
    let held = |w: &World| {
        (1..=2)
            .map(|milestone| {
                w.bal(Account::Escrow {
                    project: OLD,
                    milestone,
                })
            })
            .sum::<i128>()
    };
    assert_eq!(held(&w), 51_000);
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 1_000);
    w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::OpenChargeback {
            payment_id: STOLEN,
            chargeback_id: CHARGEBACK,
            amount: usd("500.00"),
            fee: None,
            occurred_at: None,
        },
    );
    w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::LoseChargeback {
            payment_id: STOLEN,
            chargeback_id: CHARGEBACK,
            recover_from_user: false,
        },
    );
    // The wallet's 10.00 first, then 490.00 of escrow still held for this buyer: nothing is left to a loss.
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 0);
    assert_eq!(
        held(&w),
        51_000 - 49_000,
        "the escrow the stolen money paid for is still held for the seller"
    );
}
