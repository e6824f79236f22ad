//! Given / when / then for the core's limits and parties (issue 9 items 1, 7 and 11; issue 10 item 2):
//! the amount ceiling on single amounts and on sums, the bounds on command times, a gateway that may only
//! report on its own payments, a third-party creator's rights, and a lost chargeback of a buyer with a
//! thousand funded projects (bounded loads).

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::ledger_policy::RateBounds;
use ledger_core::aggregates::project::{FeePolicy, FeeTerms, ProjectStatus};
use ledger_core::engine::SCHEMA_VERSION;
use ledger_core::engine::{
    CHARGEBACK_ESCROW_SOURCES_MAX, CHARGEBACK_PROJECTS_MAX, STREAMS_PER_COMMAND_MAX,
};
use ledger_core::{
    Account, Actor, AggState, Command, CommandEnvelope, Currency, DecideError, Event, Gateway,
    MemoryLedger, Money, Outcome, Rate, Rejection, StreamId,
};
use uuid::Uuid;

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);
const AGENT: Uuid = Uuid::from_u128(0xA6E);
const STRANGER: Uuid = Uuid::from_u128(0x0DD);
const ADMIN: Uuid = Uuid::from_u128(0xAD);
const PROJECT: Uuid = Uuid::from_u128(0x1001);
const PAY: Uuid = Uuid::from_u128(0x4001);
const PAYOUT: Uuid = Uuid::from_u128(0x5001);
const CHARGEBACK: Uuid = Uuid::from_u128(0x7001);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap()
}

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
            now: t0(),
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

    /// Rejected, nothing appended; returns the rejection.
    #[track_caller]
    fn rejects(&mut self, actor: Actor, command: Command) -> Rejection {
        let before = self.ledger.log().len();
        let rejection = match self.exec(actor, command.clone()) {
            Ok(_) => panic!("{command:?} by {actor} was accepted"),
            Err(r) => r,
        };
        assert_eq!(self.ledger.log().len(), before, "a rejection appended");
        rejection
    }

    fn bal(&self, account: Account) -> i128 {
        self.ledger.balances().balance(&account, USD)
    }

    fn deposit(&mut self, payer: Uuid, payment: Uuid, amount: Money, gateway: Gateway) {
        self.ok(
            user(payer),
            Command::InitiateDeposit {
                payment_id: payment,
                amount,
                gateway,
                fund: None,
            },
        );
        self.ok(
            Actor::Gateway(gateway),
            Command::ConfirmDeposit {
                payment_id: payment,
                amount,
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
    }

    fn create_project(&mut self, by: Actor, project: Uuid, milestones: &[Money]) -> Outcome {
        self.ok(by, create_project(project, milestones))
    }

    /// Created by the buyer, agreed by both, milestone 1 funded.
    fn funded_project(&mut self, project: Uuid, amount: Money) {
        self.create_project(user(BUYER), project, &[amount]);
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
        self.ok(
            user(BUYER),
            Command::FundMilestone {
                project_id: project,
                milestone: 1,
            },
        );
    }

    fn project_status(&self, project: Uuid) -> ProjectStatus {
        match self.ledger.state(&StreamId::Project(project)) {
            Some(AggState::Project(p)) => p.status,
            other => panic!("no project: {other:?}"),
        }
    }
}

fn create_project(project: Uuid, milestones: &[Money]) -> Command {
    Command::CreateProject {
        project_id: project,
        buyer: BUYER,
        seller: SELLER,
        currency: milestones[0].currency(),
        milestones: milestones.to_vec(),
        fees: FeePolicy::default().into(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// One amount ceiling: 10^15 minor units, for single amounts and for sums.

#[test]
fn an_amount_above_the_ceiling_is_refused_and_a_million_dollars_is_ordinary() {
    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("1000000.00"), Gateway::Stripe);
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 100_000_000);
    let too_large = Money::from_minor(1_000_000_000_000_001, USD);
    let r = w.rejects(
        user(BUYER),
        Command::InitiateDeposit {
            payment_id: Uuid::from_u128(0x4002),
            amount: too_large,
            gateway: Gateway::Stripe,
            fund: None,
        },
    );
    assert_eq!(r.code(), "amount_too_large", "{r}");
    // Exactly the ceiling is still an amount.
    w.ok(
        user(BUYER),
        Command::InitiateDeposit {
            payment_id: Uuid::from_u128(0x4003),
            amount: Money::from_minor(1_000_000_000_000_000, USD),
            gateway: Gateway::Stripe,
            fund: None,
        },
    );
}

#[test]
fn a_project_whose_milestones_sum_above_the_ceiling_is_refused() {
    let mut w = World::new();
    let half = Money::from_minor(600_000_000_000_000, USD);
    let r = w.rejects(user(BUYER), create_project(PROJECT, &[half, half]));
    assert_eq!(r.code(), "amount_too_large", "{r}");
    // Milestones near i64::MAX would wrap a naive sum: refused too, never an overflow panic.
    let huge = Money::from_minor(i64::MAX / 2 + 1, USD);
    let r = w.rejects(user(BUYER), create_project(PROJECT, &[huge, huge]));
    assert_eq!(r.code(), "amount_too_large", "{r}");
}

#[test]
fn a_wallet_balance_never_grows_above_the_ceiling() {
    let mut w = World::new();
    let ceiling = Money::from_minor(1_000_000_000_000_000, USD);
    w.deposit(BUYER, PAY, ceiling, Gateway::Stripe);
    w.ok(
        user(BUYER),
        Command::InitiateDeposit {
            payment_id: Uuid::from_u128(0x4002),
            amount: usd("0.01"),
            gateway: Gateway::Stripe,
            fund: None,
        },
    );
    let r = w.rejects(
        Actor::Gateway(Gateway::Stripe),
        Command::ConfirmDeposit {
            payment_id: Uuid::from_u128(0x4002),
            amount: usd("0.01"),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
    );
    assert_eq!(r.code(), "amount_too_large", "{r}");
    assert!(r.to_string().contains("wallet balance"), "{r}");
}

#[test]
fn a_payout_whose_amount_and_fee_sum_above_the_ceiling_is_refused() {
    let mut w = World::new();
    let r = w.rejects(
        user(SELLER),
        Command::RequestPayout {
            payout_id: PAYOUT,
            amount: Money::from_minor(999_999_999_999_999, USD),
            fee: Some(Money::from_minor(2, USD)),
            gateway: Gateway::Fincra,
        },
    );
    assert_eq!(r.code(), "amount_too_large", "{r}");
}

// ---------------------------------------------------------------------------------------------------------
// Command times: `at` within 2000-01-01 .. 2200-01-01.

#[test]
fn a_command_at_an_absurd_time_is_refused_naming_the_bound() {
    for (year, bound) in [
        (1, "2000-01-01"),
        (1999, "2000-01-01"),
        (9999, "2200-01-01"),
    ] {
        let mut w = World::new();
        w.now = Utc.with_ymd_and_hms(year, 6, 1, 0, 0, 0).unwrap();
        let r = w.rejects(user(BUYER), create_project(PROJECT, &[usd("10.00")]));
        assert_eq!(r.code(), "invalid_command", "year {year}: {r}");
        assert!(r.to_string().contains(bound), "year {year}: {r}");
    }
    let mut w = World::new();
    w.now = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    w.create_project(user(BUYER), PROJECT, &[usd("10.00")]);
}

#[test]
fn a_gateway_time_of_money_movement_out_of_bounds_is_refused() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        Command::InitiateDeposit {
            payment_id: PAY,
            amount: usd("10.00"),
            gateway: Gateway::Stripe,
            fund: None,
        },
    );
    let r = w.rejects(
        Actor::Gateway(Gateway::Stripe),
        Command::ConfirmDeposit {
            payment_id: PAY,
            amount: usd("10.00"),
            gateway_fee: None,
            occurred_at: Some(Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap()),
            fee_in_suspense: None,
        },
    );
    assert_eq!(r.code(), "invalid_command", "{r}");
}

// ---------------------------------------------------------------------------------------------------------
// A gateway reports only on payments of its own gateway.

#[test]
fn another_gateway_cannot_confirm_a_payment() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        Command::InitiateDeposit {
            payment_id: PAY,
            amount: usd("10.00"),
            gateway: Gateway::Stripe,
            fund: None,
        },
    );
    let forged = Command::ConfirmDeposit {
        payment_id: PAY,
        amount: usd("1000000.00"),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    for other in [Gateway::Paystack, Gateway::Flutterwave, Gateway::Fincra] {
        let r = w.rejects(Actor::Gateway(other), forged.clone());
        assert_eq!(r.code(), "not_a_party", "{other}: {r}");
    }
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 0);
    // The payment's own gateway, and operators, keep their rights.
    w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::ConfirmDeposit {
            payment_id: PAY,
            amount: usd("10.00"),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
    );
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 1_000);
    let chargeback = Command::OpenChargeback {
        payment_id: PAY,
        chargeback_id: CHARGEBACK,
        amount: usd("5.00"),
        fee: None,
        occurred_at: None,
    };
    let r = w.rejects(Actor::Gateway(Gateway::Paystack), chargeback.clone());
    assert_eq!(r.code(), "not_a_party", "{r}");
    w.ok(Actor::Admin(ADMIN), chargeback);
}

#[test]
fn another_gateway_cannot_report_on_a_payout() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("50.00"), Gateway::Fincra);
    w.ok(
        user(SELLER),
        Command::RequestPayout {
            payout_id: PAYOUT,
            amount: usd("20.00"),
            fee: None,
            gateway: Gateway::Fincra,
        },
    );
    for command in [
        Command::ConfirmTransfer {
            payment_id: PAYOUT,
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
        Command::FailTransfer {
            payment_id: PAYOUT,
            reason: "forged".into(),
        },
    ] {
        let r = w.rejects(Actor::Gateway(Gateway::Stripe), command);
        assert_eq!(r.code(), "not_a_party", "{r}");
    }
    w.ok(
        Actor::System,
        Command::ConfirmTransfer {
            payment_id: PAYOUT,
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// A third-party creator (an agent, or a platform operator) distinct from buyer and seller.

#[test]
fn an_agent_creates_a_project_and_submits_it_but_never_agrees_funds_or_approves() {
    let mut w = World::new();
    let outcome = w.create_project(user(AGENT), PROJECT, &[usd("100.00")]);
    assert_eq!(outcome.changes.len(), 1);
    // Only the creator submits it for agreement; the agent's say-so is nobody's agreement.
    let r = w.rejects(
        user(BUYER),
        Command::SubmitProjectForAgreement {
            project_id: PROJECT,
        },
    );
    assert_eq!(r.code(), "not_a_party", "{r}");
    w.ok(
        user(AGENT),
        Command::SubmitProjectForAgreement {
            project_id: PROJECT,
        },
    );
    let r = w.rejects(
        user(AGENT),
        Command::AgreeToProject {
            project_id: PROJECT,
        },
    );
    assert_eq!(r.code(), "not_a_party", "{r}");
    w.ok(
        user(BUYER),
        Command::AgreeToProject {
            project_id: PROJECT,
        },
    );
    assert_eq!(w.project_status(PROJECT), ProjectStatus::AwaitingAgreement);
    w.ok(
        user(SELLER),
        Command::AgreeToProject {
            project_id: PROJECT,
        },
    );
    assert_eq!(w.project_status(PROJECT), ProjectStatus::Agreed);

    w.deposit(BUYER, PAY, usd("100.00"), Gateway::Stripe);
    let fund = Command::FundMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    assert_eq!(w.rejects(user(AGENT), fund.clone()).code(), "not_a_party");
    w.ok(user(BUYER), fund);
    w.ok(
        user(SELLER),
        Command::SubmitMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    for command in [
        Command::ApproveMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
        Command::ReleaseMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
        Command::RefundMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
        Command::CancelProject {
            project_id: PROJECT,
        },
    ] {
        let r = w.rejects(user(AGENT), command.clone());
        assert_eq!(r.code(), "not_a_party", "{command:?}: {r}");
    }
    w.ok(
        user(BUYER),
        Command::ApproveMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    // The money went to the seller; the agent's wallet never moved.
    assert_eq!(w.bal(Account::UserAvailable { user: SELLER }), 10_000);
    assert_eq!(w.bal(Account::UserAvailable { user: AGENT }), 0);
    assert_eq!(w.bal(Account::UserPending { user: AGENT }), 0);
}

#[test]
fn an_agent_may_cancel_before_funding() {
    let mut w = World::new();
    w.create_project(user(AGENT), PROJECT, &[usd("100.00")]);
    w.ok(
        user(AGENT),
        Command::CancelProject {
            project_id: PROJECT,
        },
    );
    assert_eq!(w.project_status(PROJECT), ProjectStatus::Cancelled);
}

#[test]
fn an_agent_may_cancel_an_unfunded_milestone_but_not_a_funded_one() {
    let mut w = World::new();
    w.create_project(user(AGENT), PROJECT, &[usd("60.00"), usd("40.00")]);
    w.ok(
        user(AGENT),
        Command::SubmitProjectForAgreement {
            project_id: PROJECT,
        },
    );
    for party in [BUYER, SELLER] {
        w.ok(
            user(party),
            Command::AgreeToProject {
                project_id: PROJECT,
            },
        );
    }
    w.deposit(BUYER, PAY, usd("60.00"), Gateway::Stripe);
    w.ok(
        user(BUYER),
        Command::FundMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    let cancel = |milestone| Command::CancelMilestone {
        project_id: PROJECT,
        milestone,
    };
    assert_eq!(
        w.rejects(user(AGENT), cancel(1)).code(),
        "invalid_transition"
    );
    w.ok(user(AGENT), cancel(2));
    // Once escrow is held the agent can no longer cancel the project.
    let r = w.rejects(
        user(AGENT),
        Command::CancelProject {
            project_id: PROJECT,
        },
    );
    assert_eq!(r.code(), "not_a_party", "{r}");
}

#[test]
fn a_platform_operator_creates_a_project_and_submits_it() {
    let mut w = World::new();
    w.create_project(Actor::Admin(ADMIN), PROJECT, &[usd("100.00")]);
    let r = w.rejects(
        Actor::Admin(Uuid::from_u128(0xAE)),
        Command::SubmitProjectForAgreement {
            project_id: PROJECT,
        },
    );
    assert_eq!(
        r.code(),
        "not_a_party",
        "another operator is not the creator: {r}"
    );
    w.ok(
        Actor::Admin(ADMIN),
        Command::SubmitProjectForAgreement {
            project_id: PROJECT,
        },
    );
    assert_eq!(w.project_status(PROJECT), ProjectStatus::AwaitingAgreement);
}

#[test]
fn timers_and_gateways_still_cannot_create_projects() {
    let mut w = World::new();
    for actor in [Actor::System, Actor::Gateway(Gateway::Stripe)] {
        let r = w.rejects(actor, create_project(PROJECT, &[usd("100.00")]));
        assert_eq!(r.code(), "not_a_party", "{actor}: {r}");
    }
    // A stranger naming itself neither buyer nor seller is a third-party creator: allowed, and harmless
    // (nothing happens until both parties agree).
    w.create_project(user(STRANGER), PROJECT, &[usd("100.00")]);
}

// ---------------------------------------------------------------------------------------------------------
// Bounded work: a lost chargeback of a buyer with 1,000 funded projects (10x today's worst case).

#[test]
fn a_buyer_with_a_thousand_funded_projects_loses_a_chargeback() {
    const PROJECTS: u128 = 1_000;
    let mut w = World::new();
    // One deposit pays for everything; the chargeback later takes it all back.
    w.deposit(BUYER, PAY, usd("10050.00"), Gateway::Stripe);
    for n in 0..PROJECTS {
        w.funded_project(Uuid::from_u128(0x10_0000 + n), usd("10.00"));
    }
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 5_000);
    w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::OpenChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
            amount: usd("10050.00"),
            fee: None,
            occurred_at: None,
        },
    );
    let outcome = w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::LoseChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
            recover_from_user: true,
        },
    );
    // The wallet covers what it can, then escrow held in the oldest projects of the wallet's index (at most
    // CHARGEBACK_PROJECTS_MAX projects, CHARGEBACK_ESCROW_SOURCES_MAX milestones), then a receivable.
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 0);
    let escrow_of = |n: u128| {
        w.bal(Account::Escrow {
            project: Uuid::from_u128(0x10_0000 + n),
            milestone: 1,
        })
    };
    let clawed: i128 = (0..PROJECTS).map(|n| 1_000 - escrow_of(n)).sum();
    let reach = CHARGEBACK_PROJECTS_MAX.min(CHARGEBACK_ESCROW_SOURCES_MAX) as u128;
    assert_eq!(clawed, 1_000 * reach as i128);
    assert_eq!(escrow_of(0), 0, "the oldest escrow is taken first");
    assert_eq!(escrow_of(reach - 1), 0);
    assert_eq!(escrow_of(reach), 1_000, "the bound stops the walk here");
    assert_eq!(
        escrow_of(PROJECTS - 1),
        1_000,
        "later projects are left alone"
    );
    let receivable = w.bal(Account::Receivable { user: BUYER });
    assert_eq!(5_000 + clawed + receivable, 1_005_000);
    assert!(!outcome.changes.is_empty());
    // The whole command (with its follow-ups) stayed within the documented bound of streams.
    let env = CommandEnvelope {
        command_id: Uuid::from_u128(0xFEED),
        actor: Actor::Gateway(Gateway::Stripe),
        at: w.now + Duration::seconds(1),
        command: Command::LoseChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
            recover_from_user: true,
        },
    };
    let loaded = w.ledger.streams_needed(&env);
    assert_eq!(
        loaded,
        2 + CHARGEBACK_PROJECTS_MAX,
        "payment, wallet, the oldest projects"
    );
    assert!(
        loaded <= STREAMS_PER_COMMAND_MAX,
        "{loaded} streams > {STREAMS_PER_COMMAND_MAX}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// The platform owns its fees: the ledger policy.

const REQUEST: Uuid = Uuid::from_u128(0x2001);
const QUOTE: Uuid = Uuid::from_u128(0x3001);

fn rate(text: &str) -> Rate {
    Rate::new(text.parse().unwrap()).unwrap()
}

fn bounds(default: &str, min: &str, max: &str) -> RateBounds {
    RateBounds {
        default: rate(default),
        min: rate(min),
        max: rate(max),
    }
}

/// Commission 10% (5..20%), buyer fee 2.5% (0..5%), payout fee 1% (0..2%).
fn set_policy(overrides_allowed: bool) -> Command {
    Command::SetFeePolicy {
        payout_fee_min: vec![],
        commission: bounds("0.10", "0.05", "0.20"),
        buyer_fee: bounds("0.025", "0", "0.05"),
        payout_fee: bounds("0.01", "0", "0.02"),
        overrides_allowed,
    }
}

fn project_with(commission: Option<&str>, buyer_fee: Option<&str>) -> Command {
    Command::CreateProject {
        project_id: PROJECT,
        buyer: BUYER,
        seller: SELLER,
        currency: USD,
        milestones: vec![usd("100.00")],
        fees: FeeTerms {
            commission_rate: commission.map(rate),
            buyer_fee_rate: buyer_fee.map(rate),
            ..FeeTerms::default()
        },
    }
}

fn quote_with(commission: Option<&str>) -> Command {
    Command::CreateQuote {
        quote_id: QUOTE,
        request_id: REQUEST,
        amount: usd("250.00"),
        valid_until: t0() + Duration::days(5),
        fees: FeeTerms {
            commission_rate: commission.map(rate),
            ..FeeTerms::default()
        },
    }
}

fn payout(amount: &str, fee: Option<&str>) -> Command {
    Command::RequestPayout {
        payout_id: PAYOUT,
        amount: usd(amount),
        fee: fee.map(usd),
        gateway: Gateway::Fincra,
    }
}

impl World {
    fn project_fees(&self) -> FeePolicy {
        match self.ledger.state(&StreamId::Project(PROJECT)) {
            Some(AggState::Project(p)) => p.fees,
            other => panic!("no project: {other:?}"),
        }
    }

    fn open_request(&mut self) {
        self.ok(
            user(BUYER),
            Command::OpenServiceRequest {
                request_id: REQUEST,
                currency: USD,
                title: "Fix the sink".into(),
                expires_at: None,
            },
        );
    }
}

#[test]
fn without_a_policy_the_beneficiary_states_any_rate_as_today() {
    let mut w = World::new();
    w.ok(user(SELLER), project_with(Some("0"), Some("0")));
    assert_eq!(w.project_fees(), FeePolicy::default());
    w.open_request();
    w.ok(user(SELLER), quote_with(Some("0")));
    w.deposit(SELLER, PAY, usd("50.00"), Gateway::Fincra);
    w.ok(user(SELLER), payout("20.00", None));
    assert_eq!(w.bal(Account::PayoutFees), 0);
}

#[test]
fn with_a_policy_a_seller_cannot_set_a_zero_commission() {
    let mut w = World::new();
    w.ok(Actor::Admin(ADMIN), set_policy(true));
    for (commission, buyer_fee) in [
        (Some("0"), None),
        (Some("0.21"), None),
        (None, Some("0.06")),
    ] {
        let r = w.rejects(user(SELLER), project_with(commission, buyer_fee));
        assert_eq!(
            r.code(),
            "fee_outside_policy",
            "{commission:?} {buyer_fee:?}: {r}"
        );
    }
    // Within the range: accepted as stated.
    w.ok(user(SELLER), project_with(Some("0.15"), Some("0")));
    assert_eq!(w.project_fees().commission_rate, rate("0.15"));
    assert_eq!(w.project_fees().buyer_fee_rate, Rate::ZERO);
}

#[test]
fn with_a_policy_a_rate_left_out_takes_the_default() {
    let mut w = World::new();
    w.ok(Actor::Admin(ADMIN), set_policy(false));
    w.ok(user(AGENT), project_with(None, None));
    assert_eq!(w.project_fees().commission_rate, rate("0.10"));
    assert_eq!(w.project_fees().buyer_fee_rate, rate("0.025"));
}

#[test]
fn without_overrides_only_the_default_may_be_stated() {
    let mut w = World::new();
    w.ok(Actor::Admin(ADMIN), set_policy(false));
    let r = w.rejects(user(BUYER), project_with(Some("0.15"), None));
    assert_eq!(r.code(), "fee_outside_policy", "{r}");
    assert!(r.to_string().contains("only the default 0.10"), "{r}");
    w.ok(user(BUYER), project_with(Some("0.1"), Some("0.025")));
}

#[test]
fn a_provider_quote_follows_the_policy_and_the_booking_inherits_it() {
    let mut w = World::new();
    w.ok(Actor::Admin(ADMIN), set_policy(true));
    w.open_request();
    let r = w.rejects(user(SELLER), quote_with(Some("0")));
    assert_eq!(r.code(), "fee_outside_policy", "{r}");
    w.ok(user(SELLER), quote_with(None));
    w.ok(user(SELLER), Command::SendQuote { quote_id: QUOTE });
    w.ok(user(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    let project = ledger_core::ids::derived_id(QUOTE, "project");
    match w.ledger.state(&StreamId::Project(project)) {
        Some(AggState::Project(p)) => {
            assert_eq!(p.fees.commission_rate, rate("0.10"));
            assert_eq!(p.fees.buyer_fee_rate, rate("0.025"));
        }
        other => panic!("no booking project: {other:?}"),
    }
}

#[test]
fn payout_fees_follow_the_policy() {
    let mut w = World::new();
    w.ok(Actor::Admin(ADMIN), set_policy(true));
    w.deposit(SELLER, PAY, usd("100.00"), Gateway::Fincra);
    let r = w.rejects(user(SELLER), payout("50.00", Some("1.01")));
    assert_eq!(r.code(), "fee_outside_policy", "2% of 50.00 is 1.00: {r}");
    // Left out: the default 1% of 50.00.
    w.ok(user(SELLER), payout("50.00", None));
    match w.ledger.state(&StreamId::Payment(PAYOUT)) {
        Some(AggState::Payment(p)) => assert_eq!(p.fee_minor, 50),
        other => panic!("no payout: {other:?}"),
    }
    assert_eq!(
        w.bal(Account::UserAvailable { user: SELLER }),
        10_000 - 5_050
    );
}

#[test]
fn only_an_operator_sets_the_policy_and_it_must_be_coherent() {
    let mut w = World::new();
    for actor in [user(BUYER), Actor::System, Actor::Gateway(Gateway::Stripe)] {
        let r = w.rejects(actor, set_policy(true));
        assert_eq!(r.code(), "not_a_party", "{actor}: {r}");
    }
    let r = w.rejects(
        Actor::Admin(ADMIN),
        Command::SetFeePolicy {
            payout_fee_min: vec![],
            commission: bounds("0.30", "0.05", "0.20"),
            buyer_fee: RateBounds::OPEN,
            payout_fee: RateBounds::OPEN,
            overrides_allowed: true,
        },
    );
    assert_eq!(r.code(), "invalid_command", "{r}");
    // The policy is an event in the log: a replay gives the same policy, a stored copy decodes back.
    let outcome = w.ok(Actor::Admin(ADMIN), set_policy(true));
    let change = &outcome.changes[0];
    assert_eq!(change.stream, StreamId::LedgerPolicy);
    assert_eq!(change.stream.to_string(), "ledger-policy");
    assert_eq!(
        "ledger-policy".parse::<StreamId>().unwrap(),
        StreamId::LedgerPolicy
    );
    let (event_type, payload) = change.event.to_stored();
    assert_eq!(event_type, "FeePolicySet");
    let decoded = Event::from_stored(
        &StreamId::LedgerPolicy,
        &event_type,
        SCHEMA_VERSION,
        payload,
    )
    .unwrap();
    assert_eq!(decoded, change.event);
    let replayed = MemoryLedger::replay(w.ledger.log());
    assert_eq!(
        replayed.state(&StreamId::LedgerPolicy),
        w.ledger.state(&StreamId::LedgerPolicy)
    );
    // A later change applies to later commands only.
    w.ok(user(SELLER), project_with(None, None));
    w.ok(
        Actor::Admin(ADMIN),
        Command::SetFeePolicy {
            payout_fee_min: vec![],
            commission: bounds("0.12", "0.12", "0.12"),
            buyer_fee: RateBounds::OPEN,
            payout_fee: RateBounds::OPEN,
            overrides_allowed: false,
        },
    );
    assert_eq!(w.project_fees().commission_rate, rate("0.10"));
}

#[test]
fn the_deciders_read_the_policy_through_need_stream() {
    let env = CommandEnvelope {
        command_id: Uuid::from_u128(1),
        actor: user(BUYER),
        at: t0(),
        command: project_with(None, None),
    };
    let mut loaded = std::collections::HashMap::new();
    loaded.insert(
        StreamId::Project(PROJECT),
        AggState::initial(&StreamId::Project(PROJECT)),
    );
    assert_eq!(
        ledger_core::engine::decide(&env, &loaded),
        Err(DecideError::NeedStream(StreamId::LedgerPolicy))
    );
}

#[test]
fn set_fee_policy_as_json() {
    let json = r#"{"type": "set_fee_policy",
        "commission": {"default": "0.10", "min": "0.05", "max": "0.20"},
        "buyer_fee": {"default": "0.025", "min": "0", "max": "0.05"},
        "payout_fee": {"default": "0.01", "min": "0", "max": "0.02"},
        "overrides_allowed": true}"#;
    let command: Command = serde_json::from_str(json).unwrap();
    assert_eq!(command, set_policy(true));
    // A create_project without rates leaves them to the policy; with them, states them.
    let json = r#"{"type": "create_project", "project_id": "00000000-0000-0000-0000-000000001001",
        "buyer": "00000000-0000-0000-0000-000000000b0b", "seller": "00000000-0000-0000-0000-000000005e11",
        "currency": "USD", "milestones": [{"amount": "100.00", "currency": "USD"}],
        "fees": {"commission_rate": "0.15"}}"#;
    let command: Command = serde_json::from_str(json).unwrap();
    assert_eq!(command, project_with(Some("0.15"), None));
}

// ---------------------------------------------------------------------------------------------------------
// Issue 18: only the right party, only at the right time (pure paths; the binary-level tests are in
// ledger-cli/tests/money_rules.rs).

/// A lost chargeback of a deposit that funded project X reaches X's escrow whatever the buyer funds after
/// it: 10 x (CHARGEBACK_PROJECTS_MAX + CHARGEBACK_ESCROW_SOURCES_MAX) later projects, more than the old
/// window (8 newest projects) by two orders of magnitude, and the command still loads a bounded number of
/// streams.
#[test]
fn a_chargeback_reaches_the_escrow_its_deposit_funded_past_any_number_of_later_projects() {
    let later = 10 * (CHARGEBACK_PROJECTS_MAX + CHARGEBACK_ESCROW_SOURCES_MAX) as u128;
    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("100.00"), Gateway::Stripe);
    let x = Uuid::from_u128(0x20_0000);
    w.create_project(user(BUYER), x, &[usd("12.50"); 8]);
    w.ok(
        user(BUYER),
        Command::SubmitProjectForAgreement { project_id: x },
    );
    w.ok(user(SELLER), Command::AgreeToProject { project_id: x });
    for m in 1..=8 {
        w.ok(
            user(BUYER),
            Command::FundMilestone {
                project_id: x,
                milestone: m,
            },
        );
    }
    for n in 0..later {
        let decoy = Uuid::from_u128(0x30_0000 + n);
        w.deposit(
            BUYER,
            Uuid::from_u128(0x40_0000 + n),
            usd("0.01"),
            Gateway::Stripe,
        );
        w.funded_project(decoy, usd("0.01"));
    }
    let lose = Command::LoseChargeback {
        payment_id: PAY,
        chargeback_id: CHARGEBACK,
        recover_from_user: true,
    };
    w.ok(
        Actor::Gateway(Gateway::Stripe),
        Command::OpenChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
            amount: usd("100.00"),
            fee: None,
            occurred_at: None,
        },
    );
    let env = CommandEnvelope {
        command_id: Uuid::from_u128(0xFEED),
        actor: Actor::Gateway(Gateway::Stripe),
        at: w.now,
        command: lose.clone(),
    };
    let loaded = w.ledger.streams_needed(&env);
    assert!(loaded <= STREAMS_PER_COMMAND_MAX, "{loaded} streams");
    w.ok(Actor::Gateway(Gateway::Stripe), lose);
    let x_held: i128 = (1..=8)
        .map(|m| {
            w.bal(Account::Escrow {
                project: x,
                milestone: m,
            })
        })
        .sum();
    assert_eq!(x_held, 0, "all of X's escrow is taken back");
    assert_eq!(w.bal(Account::Receivable { user: BUYER }), 0);
    let decoys_held: i128 = (0..later)
        .map(|n| {
            w.bal(Account::Escrow {
                project: Uuid::from_u128(0x30_0000 + n),
                milestone: 1,
            })
        })
        .sum();
    assert_eq!(decoys_held, later as i128, "later escrow untouched");
}

/// The process steps of a booking and of a disputed milestone follow their cause, whoever sends them.
#[test]
fn process_steps_cannot_run_ahead_of_their_cause() {
    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("100.00"), Gateway::Stripe);
    w.funded_project(PROJECT, usd("100.00"));
    let dispute = Uuid::from_u128(0xD15);
    w.ok(
        user(BUYER),
        Command::OpenDispute {
            dispute_id: dispute,
            project_id: PROJECT,
            milestone: 1,
            reason: "late".into(),
            proposed_release: usd("0.00"),
            respond_by: w.now + Duration::days(3),
        },
    );
    // A resolution of the disputed milestone other than the dispute's own settlement.
    let resolve = |release: &str, refund: &str, cause: Uuid| Command::ApplyResolution {
        project_id: PROJECT,
        milestone: 1,
        release: usd(release),
        refund: usd(refund),
        cause,
    };
    for actor in [Actor::System, Actor::Admin(ADMIN)] {
        for cause in [dispute, STRANGER] {
            let r = w.rejects(actor, resolve("100.00", "0.00", cause));
            assert!(
                matches!(r.code(), "not_a_party" | "not_found" | "invalid_command"),
                "{r}"
            );
        }
    }
    let clear = Command::ClearMilestoneDispute {
        project_id: PROJECT,
        milestone: 1,
        dispute_id: dispute,
    };
    for actor in [
        Actor::System,
        Actor::Admin(ADMIN),
        user(BUYER),
        user(SELLER),
    ] {
        w.rejects(actor, clear.clone());
    }
    // The dispute's own end: the seller accepts the proposal (a full refund), applied once.
    w.ok(
        user(SELLER),
        Command::AcceptDisputeProposal {
            dispute_id: dispute,
        },
    );
    assert_eq!(w.bal(Account::UserAvailable { user: BUYER }), 10_000);
    w.rejects(Actor::System, resolve("0.00", "0.00", dispute));
}

#[test]
fn closing_a_deadline_needs_its_command_refused_for_good() {
    use ledger_core::deadlines::{Book, DeadlineKind};
    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("100.00"), Gateway::Stripe);
    w.funded_project(PROJECT, usd("100.00"));
    w.ok(
        user(SELLER),
        Command::SubmitMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    let mut book = Book::new();
    for change in w.ledger.log() {
        book.apply(change);
    }
    let d = book
        .pending()
        .find(|d| d.kind == DeadlineKind::AutoApproveMilestone)
        .cloned()
        .expect("an approval clock");
    let close = Command::CloseDeadline {
        deadline_id: d.id,
        kind: d.kind.name().to_string(),
        stream: d.stream,
        milestone: d.milestone,
        due_at: d.due_at,
    };
    // It can still fire: nobody closes it, not even the timer.
    assert_eq!(
        w.rejects(Actor::System, close.clone()).code(),
        "invalid_command"
    );
    assert_eq!(
        w.rejects(Actor::Admin(ADMIN), close.clone()).code(),
        "not_a_party"
    );
    // The buyer approves: the clock stops, and the timer's firing would now be refused for good.
    w.ok(
        user(BUYER),
        Command::ApproveMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    let closed = w.ok(Actor::System, close);
    let types: Vec<_> = closed
        .changes
        .iter()
        .map(|c| c.event.to_stored().0)
        .collect();
    assert_eq!(types, ["DeadlineClosed"]);
    for change in &w.ledger.log()[w.ledger.log().len() - 1..] {
        book.apply(change);
    }
    assert!(book.pending().all(|p| p.id != d.id), "the book closed it");
}
