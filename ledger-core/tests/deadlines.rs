//! Deadlines, one kind at a time: the event that starts the clock (and when it is due under the default
//! policy, an override, and the policy's bounds), the events that stop it, and the command it fires.
//! Driven through `MemoryLedger::execute`; the clocks come from `deadlines::Book` over the ledger's log.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::ledger_policy::{DeadlinePolicy, DurationBounds};
use ledger_core::aggregates::payment::{PaymentState, PaymentStatus};
use ledger_core::aggregates::project::{FeeTerms, MilestoneStatus, ProjectState};
use ledger_core::aggregates::quote::{QuoteState, QuoteStatus};
use ledger_core::deadlines::{Book, Deadline, DeadlineKind};
use ledger_core::{
    Account, Actor, AggState, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money,
    Rejection, StreamId,
};
use uuid::Uuid;

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);
const SELLER_2: Uuid = Uuid::from_u128(0x5E12);
const PROJECT: Uuid = Uuid::from_u128(0x1001);
const REQUEST: Uuid = Uuid::from_u128(0x2001);
const QUOTE: Uuid = Uuid::from_u128(0x3001);
const QUOTE_2: Uuid = Uuid::from_u128(0x3002);
const DEPOSIT: Uuid = Uuid::from_u128(0x4001);
const DISPUTE: Uuid = Uuid::from_u128(0x8001);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn hours(n: i64) -> DateTime<Utc> {
    t0() + Duration::hours(n)
}

fn usd(text: &str) -> Money {
    Money::parse(text, USD).unwrap()
}

fn bounds(default: u32, min: u32, max: u32) -> DurationBounds {
    DurationBounds { default, min, max }
}

struct World {
    ledger: MemoryLedger,
    book: Book,
    fed: usize,
    now: DateTime<Utc>,
    next_id: u128,
}

impl World {
    fn new() -> World {
        World {
            ledger: MemoryLedger::new(),
            book: Book::new(),
            fed: 0,
            now: t0(),
            next_id: 1,
        }
    }

    fn at(&mut self, now: DateTime<Utc>) {
        self.now = now;
    }

    fn run(&mut self, actor: Actor, command: Command) -> Result<(), Rejection> {
        self.next_id += 1;
        let env = CommandEnvelope {
            command_id: Uuid::from_u128(0xC0DE_0000 + self.next_id),
            actor,
            at: self.now,
            command,
        };
        let result = self.ledger.execute(&env).map(|_| ());
        self.feed();
        result
    }

    fn ok(&mut self, actor: Actor, command: Command) {
        let shown = format!("{command:?}");
        if let Err(r) = self.run(actor, command) {
            panic!("{shown} refused: {r:?}");
        }
    }

    fn feed(&mut self) {
        for change in &self.ledger.log()[self.fed..] {
            self.book.apply(change);
        }
        self.fed = self.ledger.log().len();
    }

    fn pending(&self, kind: DeadlineKind) -> Vec<Deadline> {
        self.book
            .pending()
            .filter(|d| d.kind == kind)
            .cloned()
            .collect()
    }

    fn only(&self, kind: DeadlineKind) -> Deadline {
        let found = self.pending(kind);
        assert_eq!(found.len(), 1, "{kind:?}: {found:?}");
        found[0].clone()
    }

    /// Fires a deadline as the timer does: its own envelope (at its due time, by the system).
    fn fire(&mut self, deadline: &Deadline) -> Result<(), Rejection> {
        let result = self.ledger.execute(&deadline.envelope()).map(|_| ());
        self.feed();
        result
    }

    fn set_deadlines(&mut self, deadlines: DeadlinePolicy) {
        let admin = Actor::Admin(Uuid::from_u128(0xAD));
        self.ok(admin, Command::SetDeadlinePolicy { deadlines });
    }

    fn balance(&self, account: Account) -> i128 {
        self.ledger.balances().balance(&account, USD)
    }

    fn project(&self) -> ProjectState {
        match self.ledger.state(&StreamId::Project(PROJECT)) {
            Some(AggState::Project(p)) => p.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn quote(&self, id: Uuid) -> QuoteState {
        match self.ledger.state(&StreamId::Quote(id)) {
            Some(AggState::Quote(q)) => q.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn payment(&self, id: Uuid) -> PaymentState {
        match self.ledger.state(&StreamId::Payment(id)) {
            Some(AggState::Payment(p)) => p.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// A funded single-milestone project of 100.00 USD, 10% commission.
    fn funded(&mut self, terms: FeeTerms) {
        self.ok(
            Actor::User(BUYER),
            Command::CreateProject {
                project_id: PROJECT,
                buyer: BUYER,
                seller: SELLER,
                currency: USD,
                milestones: vec![usd("100.00")],
                fees: FeeTerms {
                    commission_rate: Some(ledger_core::Rate::from_bps(1000).unwrap()),
                    ..terms
                },
            },
        );
        let project_id = PROJECT;
        self.ok(
            Actor::User(BUYER),
            Command::SubmitProjectForAgreement { project_id },
        );
        self.ok(Actor::User(SELLER), Command::AgreeToProject { project_id });
        self.deposit(DEPOSIT, "100.00");
        let gateway = Actor::Gateway(Gateway::Stripe);
        self.ok(gateway, confirm(DEPOSIT, "100.00"));
        let fund = Command::FundMilestone {
            project_id,
            milestone: 1,
        };
        self.ok(Actor::User(BUYER), fund);
    }

    fn deposit(&mut self, payment_id: Uuid, amount: &str) {
        let initiate = Command::InitiateDeposit {
            payment_id,
            amount: usd(amount),
            gateway: Gateway::Stripe,
            fund: None,
        };
        self.ok(Actor::User(BUYER), initiate);
    }

    fn submit(&mut self) {
        let submit = Command::SubmitMilestone {
            project_id: PROJECT,
            milestone: 1,
        };
        self.ok(Actor::User(SELLER), submit);
    }

    fn request(&mut self, expires_at: Option<DateTime<Utc>>) {
        let open = Command::OpenServiceRequest {
            request_id: REQUEST,
            currency: USD,
            title: "Fix the sink".into(),
            expires_at,
        };
        self.ok(Actor::User(BUYER), open);
    }

    fn sent_quote(&mut self, quote_id: Uuid, provider: Uuid, terms: FeeTerms) {
        let create = Command::CreateQuote {
            quote_id,
            request_id: REQUEST,
            amount: usd("80.00"),
            valid_until: hours(24 * 5),
            fees: terms,
        };
        self.ok(Actor::User(provider), create);
        self.ok(Actor::User(provider), Command::SendQuote { quote_id });
    }
}

fn confirm(payment_id: Uuid, amount: &str) -> Command {
    Command::ConfirmDeposit {
        payment_id,
        amount: usd(amount),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    }
}

fn code(result: Result<(), Rejection>) -> &'static str {
    result.expect_err("refused").code()
}

#[test]
fn a_submitted_milestone_is_auto_approved_after_14_days_exactly_once() {
    let mut w = World::new();
    w.funded(FeeTerms::default());
    assert!(w.pending(DeadlineKind::AutoApproveMilestone).is_empty());
    w.at(hours(10));
    w.submit();
    let d = w.only(DeadlineKind::AutoApproveMilestone);
    assert_eq!(d.due_at, hours(10 + 24 * 14));
    assert_eq!(d.stream, StreamId::Project(PROJECT));
    assert_eq!(d.milestone, Some(1));
    assert_eq!(
        d.command(),
        Command::AutoApproveMilestone {
            project_id: PROJECT,
            milestone: 1
        }
    );
    let env = d.envelope();
    assert_eq!((env.actor, env.at), (Actor::System, d.due_at));
    // Too early is refused (transient); at the due time it approves and releases.
    let mut early = env.clone();
    early.at = d.due_at - Duration::seconds(1);
    early.command_id = Uuid::from_u128(0xEA);
    assert_eq!(code(w.ledger.execute(&early).map(|_| ())), "too_early");
    w.fire(&d).unwrap();
    assert_eq!(w.project().milestones[0].status, MilestoneStatus::Released);
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 9_000);
    assert!(w.pending(DeadlineKind::AutoApproveMilestone).is_empty());
    // The same deadline again is the same command id: nothing more moves.
    w.fire(&d).unwrap();
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 9_000);
}

#[test]
fn approval_changes_requested_or_a_dispute_stop_the_auto_approval() {
    let stoppers: Vec<(Actor, Command)> = vec![
        (
            Actor::User(BUYER),
            Command::ApproveMilestone {
                project_id: PROJECT,
                milestone: 1,
            },
        ),
        (
            Actor::User(BUYER),
            Command::RequestChanges {
                project_id: PROJECT,
                milestone: 1,
            },
        ),
        (
            Actor::User(BUYER),
            Command::OpenDispute {
                dispute_id: DISPUTE,
                project_id: PROJECT,
                milestone: 1,
                reason: "late".into(),
                proposed_release: usd("50.00"),
                respond_by: hours(24 * 100),
            },
        ),
    ];
    for (actor, stopper) in stoppers {
        let mut w = World::new();
        w.funded(FeeTerms::default());
        w.submit();
        let first = w.only(DeadlineKind::AutoApproveMilestone);
        w.at(hours(24));
        w.ok(actor, stopper.clone());
        assert!(
            w.pending(DeadlineKind::AutoApproveMilestone).is_empty(),
            "{stopper:?}"
        );
        if matches!(stopper, Command::RequestChanges { .. }) {
            // Resubmitting starts a new clock with a new id.
            w.at(hours(48));
            w.submit();
            let second = w.only(DeadlineKind::AutoApproveMilestone);
            assert_ne!(second.id, first.id);
            assert_eq!(second.due_at, hours(48 + 24 * 14));
        }
        // A deadline the world moved past is refused for good (not too early).
        let refused = w.fire(&first);
        if !matches!(stopper, Command::RequestChanges { .. }) {
            assert_ne!(code(refused), "too_early", "{stopper:?}");
        }
    }
}

#[test]
fn a_project_overrides_the_auto_approval_within_the_policy_bounds() {
    let mut w = World::new();
    w.funded(FeeTerms {
        auto_approve_days: 3,
        ..FeeTerms::default()
    });
    w.submit();
    assert_eq!(
        w.only(DeadlineKind::AutoApproveMilestone).due_at,
        hours(24 * 3)
    );

    let mut w = World::new();
    let policy = DeadlinePolicy {
        auto_approve_days: bounds(10, 5, 20),
        ..DeadlinePolicy::default()
    };
    w.set_deadlines(policy);
    // Left at the built-in default, a project takes the policy's default.
    w.funded(FeeTerms::default());
    w.submit();
    assert_eq!(
        w.only(DeadlineKind::AutoApproveMilestone).due_at,
        hours(24 * 10)
    );
    // Outside the bounds is refused.
    let create = Command::CreateProject {
        project_id: Uuid::from_u128(0x1002),
        buyer: BUYER,
        seller: SELLER,
        currency: USD,
        milestones: vec![usd("1.00")],
        fees: FeeTerms {
            auto_approve_days: 3,
            ..FeeTerms::default()
        },
    };
    assert_eq!(
        code(w.run(Actor::User(BUYER), create)),
        "fee_outside_policy"
    );
    // A policy with bounds out of order, or a zero clock, is refused.
    let admin = Actor::Admin(Uuid::from_u128(0xAD));
    for bad in [
        DeadlinePolicy {
            auto_accept_hours: bounds(10, 20, 30),
            ..DeadlinePolicy::default()
        },
        DeadlinePolicy {
            deposit_expiry_hours: bounds(0, 0, 30),
            ..DeadlinePolicy::default()
        },
    ] {
        let set = Command::SetDeadlinePolicy { deadlines: bad };
        assert_eq!(code(w.run(admin, set)), "invalid_command");
    }
    let set = Command::SetDeadlinePolicy {
        deadlines: DeadlinePolicy::default(),
    };
    assert_eq!(code(w.run(Actor::User(BUYER), set)), "not_a_party");
}

/// A confirmed booking on `QUOTE` (quote terms `terms`), delivered at hour 30.
fn delivered_booking(w: &mut World, terms: FeeTerms) -> Uuid {
    w.request(None);
    w.sent_quote(QUOTE, SELLER, terms);
    w.ok(Actor::User(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    let booking_id = ledger_core::ids::derived_id(QUOTE, "booking");
    let project_id = ledger_core::ids::derived_id(QUOTE, "project");
    w.deposit(DEPOSIT, "80.00");
    w.ok(Actor::Gateway(Gateway::Stripe), confirm(DEPOSIT, "80.00"));
    let fund = Command::FundMilestone {
        project_id,
        milestone: 1,
    };
    w.ok(Actor::User(BUYER), fund);
    w.at(hours(30));
    w.ok(Actor::User(SELLER), Command::DeliverBooking { booking_id });
    booking_id
}

#[test]
fn a_delivered_booking_is_auto_accepted_after_72_hours_or_its_quotes_days() {
    let mut w = World::new();
    let booking_id = delivered_booking(&mut w, FeeTerms::default());
    let d = w.only(DeadlineKind::AutoAcceptBooking);
    assert_eq!(d.due_at, hours(30 + 72));
    assert_eq!(d.command(), Command::AutoAcceptBooking { booking_id });
    // The booking's milestone has no clock of its own.
    assert!(w.pending(DeadlineKind::AutoApproveMilestone).is_empty());
    w.fire(&d).unwrap();
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 8_000);
    assert!(w.pending(DeadlineKind::AutoAcceptBooking).is_empty());

    let mut w = World::new();
    let terms = FeeTerms {
        auto_approve_days: 5,
        ..FeeTerms::default()
    };
    delivered_booking(&mut w, terms);
    assert_eq!(
        w.only(DeadlineKind::AutoAcceptBooking).due_at,
        hours(30 + 24 * 5)
    );

    // The client accepting stops it.
    let mut w = World::new();
    let booking_id = delivered_booking(&mut w, FeeTerms::default());
    let d = w.only(DeadlineKind::AutoAcceptBooking);
    w.ok(Actor::User(BUYER), Command::AcceptBooking { booking_id });
    assert!(w.pending(DeadlineKind::AutoAcceptBooking).is_empty());
    assert_eq!(code(w.fire(&d)), "invalid_transition");
}

#[test]
fn quotes_expire_at_their_validity_unless_accepted_declined_or_withdrawn() {
    let mut w = World::new();
    w.request(None);
    w.sent_quote(QUOTE, SELLER, FeeTerms::default());
    let d = w.only(DeadlineKind::ExpireQuote);
    assert_eq!(d.due_at, hours(24 * 5));
    assert_eq!(d.command(), Command::ExpireQuote { quote_id: QUOTE });
    w.fire(&d).unwrap();
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Expired);
    assert!(w.pending(DeadlineKind::ExpireQuote).is_empty());

    for stopper in [
        (
            Actor::User(BUYER),
            Command::DeclineQuote { quote_id: QUOTE },
        ),
        (
            Actor::User(SELLER),
            Command::WithdrawQuote { quote_id: QUOTE },
        ),
        (Actor::User(BUYER), Command::AcceptQuote { quote_id: QUOTE }),
    ] {
        let mut w = World::new();
        w.request(None);
        w.sent_quote(QUOTE, SELLER, FeeTerms::default());
        w.ok(stopper.0, stopper.1.clone());
        assert!(
            w.pending(DeadlineKind::ExpireQuote).is_empty(),
            "{stopper:?}"
        );
    }
}

#[test]
fn accepting_a_quote_declines_the_other_open_quotes_and_stops_their_clocks() {
    let mut w = World::new();
    w.request(None);
    w.sent_quote(QUOTE, SELLER, FeeTerms::default());
    w.sent_quote(QUOTE_2, SELLER_2, FeeTerms::default());
    assert_eq!(w.pending(DeadlineKind::ExpireQuote).len(), 2);
    w.ok(Actor::User(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Accepted);
    assert_eq!(w.quote(QUOTE_2).status, QuoteStatus::Declined);
    assert!(w.pending(DeadlineKind::ExpireQuote).is_empty());
    assert!(w.pending(DeadlineKind::ExpireServiceRequest).is_empty());
}

#[test]
fn service_requests_expire_after_30_days_or_at_their_own_expiry() {
    let mut w = World::new();
    w.at(hours(1));
    w.request(None);
    let d = w.only(DeadlineKind::ExpireServiceRequest);
    assert_eq!(d.due_at, hours(1 + 24 * 30));
    assert_eq!(
        d.command(),
        Command::ExpireServiceRequest {
            request_id: REQUEST
        }
    );
    w.fire(&d).unwrap();
    assert!(w.pending(DeadlineKind::ExpireServiceRequest).is_empty());

    let mut w = World::new();
    w.request(Some(hours(24 * 2)));
    assert_eq!(w.only(DeadlineKind::ExpireServiceRequest).due_at, hours(48));
    let cancel = Command::CancelServiceRequest {
        request_id: REQUEST,
    };
    w.ok(Actor::User(BUYER), cancel);
    assert!(w.pending(DeadlineKind::ExpireServiceRequest).is_empty());

    let mut w = World::new();
    let policy = DeadlinePolicy {
        request_expiry_hours: bounds(24 * 10, 1, 24 * 40),
        ..DeadlinePolicy::default()
    };
    w.set_deadlines(policy);
    w.request(None);
    assert_eq!(
        w.only(DeadlineKind::ExpireServiceRequest).due_at,
        hours(24 * 10)
    );
}

#[test]
fn pending_proceeds_mature_after_7_days_and_the_engine_computes_the_amount() {
    let mut w = World::new();
    w.funded(FeeTerms {
        release_to_pending: true,
        ..FeeTerms::default()
    });
    w.submit();
    w.at(hours(5));
    let approve = Command::ApproveMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    w.ok(Actor::User(BUYER), approve);
    assert_eq!(w.balance(Account::UserPending { user: SELLER }), 9_000);
    let d = w.only(DeadlineKind::MatureRelease);
    assert_eq!(d.due_at, hours(5 + 24 * 7));
    assert_eq!(
        d.command(),
        Command::MatureRelease {
            project_id: PROJECT,
            milestone: 1
        }
    );
    w.fire(&d).unwrap();
    assert_eq!(w.balance(Account::UserPending { user: SELLER }), 0);
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 9_000);
    assert!(w.pending(DeadlineKind::MatureRelease).is_empty());
    // Another maturation of the same release (a new command id) is refused: it matured once.
    let mut again = d.envelope();
    again.command_id = Uuid::from_u128(0xA6A1);
    assert_eq!(
        code(w.ledger.execute(&again).map(|_| ())),
        "invalid_command"
    );

    // With a maturation of 0 hours, releases go straight to available: no clock.
    let mut w = World::new();
    let policy = DeadlinePolicy {
        pending_maturity_hours: bounds(0, 0, 10),
        ..DeadlinePolicy::default()
    };
    w.set_deadlines(policy);
    w.funded(FeeTerms {
        release_to_pending: true,
        ..FeeTerms::default()
    });
    w.submit();
    let approve = Command::ApproveMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    w.ok(Actor::User(BUYER), approve);
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 9_000);
    assert!(w.pending(DeadlineKind::MatureRelease).is_empty());
}

#[test]
fn pending_money_matures_only_through_its_release_when_due() {
    let mut w = World::new();
    w.funded(FeeTerms {
        release_to_pending: true,
        ..FeeTerms::default()
    });
    w.submit();
    let approve = Command::ApproveMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    w.ok(Actor::User(BUYER), approve);
    let d = w.only(DeadlineKind::MatureRelease);
    // Nobody matures pending money by hand (issue 18, finding 4): not an operator, not the system.
    for actor in [Actor::Admin(Uuid::from_u128(0xAD)), Actor::System] {
        let by_hand = Command::MaturePending {
            user: SELLER,
            amount: usd("30.00"),
        };
        let refused = w.run(actor, by_hand).unwrap_err();
        assert_eq!(refused.code(), "invalid_command");
    }
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 0);
    w.fire(&d).unwrap();
    assert_eq!(w.balance(Account::UserPending { user: SELLER }), 0);
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 9_000);
}

#[test]
fn an_unanswered_dispute_times_out_at_most_14_days_after_it_opens() {
    let mut w = World::new();
    w.funded(FeeTerms::default());
    w.submit();
    w.at(hours(2));
    let open = Command::OpenDispute {
        dispute_id: DISPUTE,
        project_id: PROJECT,
        milestone: 1,
        reason: "late".into(),
        proposed_release: usd("40.00"),
        respond_by: hours(24 * 60),
    };
    w.ok(Actor::User(BUYER), open.clone());
    let d = w.only(DeadlineKind::TimeOutDispute);
    assert_eq!(d.due_at, hours(2 + 24 * 14));
    assert_eq!(
        d.command(),
        Command::TimeOutDispute {
            dispute_id: DISPUTE
        }
    );
    w.fire(&d).unwrap();
    assert!(w.pending(DeadlineKind::TimeOutDispute).is_empty());
    // The proposal applied: 40.00 released (less 10%), 60.00 back to the buyer.
    assert_eq!(w.balance(Account::UserAvailable { user: SELLER }), 3_600);

    // An answer stops it; an earlier respond_by is kept.
    let mut w = World::new();
    w.funded(FeeTerms::default());
    w.submit();
    let Command::OpenDispute { .. } = open else {
        unreachable!()
    };
    let earlier = Command::OpenDispute {
        dispute_id: DISPUTE,
        project_id: PROJECT,
        milestone: 1,
        reason: "late".into(),
        proposed_release: usd("40.00"),
        respond_by: hours(24 * 3),
    };
    w.ok(Actor::User(BUYER), earlier);
    assert_eq!(w.only(DeadlineKind::TimeOutDispute).due_at, hours(72));
    let contest = Command::ContestDispute {
        dispute_id: DISPUTE,
    };
    w.ok(Actor::User(SELLER), contest);
    assert!(w.pending(DeadlineKind::TimeOutDispute).is_empty());
}

#[test]
fn an_unpaid_deposit_expires_after_3_days_and_a_payment_stops_the_clock() {
    let mut w = World::new();
    w.at(hours(1));
    w.deposit(DEPOSIT, "10.00");
    let d = w.only(DeadlineKind::ExpireDeposit);
    assert_eq!(d.due_at, hours(1 + 72));
    assert_eq!(
        d.command(),
        Command::ExpireDeposit {
            payment_id: DEPOSIT
        }
    );
    w.fire(&d).unwrap();
    assert_eq!(w.payment(DEPOSIT).status, PaymentStatus::Cancelled);
    assert!(w.pending(DeadlineKind::ExpireDeposit).is_empty());

    let mut w = World::new();
    let policy = DeadlinePolicy {
        deposit_expiry_hours: bounds(24, 1, 48),
        ..DeadlinePolicy::default()
    };
    w.set_deadlines(policy);
    w.deposit(DEPOSIT, "10.00");
    let d = w.only(DeadlineKind::ExpireDeposit);
    assert_eq!(d.due_at, hours(24));
    w.ok(Actor::Gateway(Gateway::Stripe), confirm(DEPOSIT, "10.00"));
    assert!(w.pending(DeadlineKind::ExpireDeposit).is_empty());
    assert_eq!(code(w.fire(&d)), "invalid_transition");
    // Only the timer expires a deposit.
    let expire = Command::ExpireDeposit {
        payment_id: DEPOSIT,
    };
    assert_eq!(code(w.run(Actor::User(BUYER), expire)), "not_a_party");
}

#[test]
fn a_due_time_is_rounded_up_to_the_microsecond_postgresql_keeps() {
    let mut w = World::new();
    w.at(hours(1) + Duration::nanoseconds(520_348_089));
    w.deposit(DEPOSIT, "10.00");
    let d = w.only(DeadlineKind::ExpireDeposit);
    assert_eq!(d.due_at, hours(1 + 72) + Duration::nanoseconds(520_349_000));
    // Fired at the stored (rounded) time, it is not too early.
    w.fire(&d).unwrap();
    assert_eq!(w.payment(DEPOSIT).status, PaymentStatus::Cancelled);
}

/// Issue 18: every deadline-driven command is refused before its due time, whoever sends it (the timer's
/// `System`, an operator, either party), and appends nothing; at its due time the timer's is accepted.
/// One row per kind and path: a project's auto-approval, a booking's (which waits for the booking's
/// auto-acceptance), the auto-acceptance, a quote's and a request's expiry, a release's maturation, a
/// dispute's time-out, an unpaid deposit's expiry.
#[test]
fn every_deadline_command_is_refused_before_its_due_time_whoever_sends_it() {
    type Setup = fn(&mut World) -> (Command, DateTime<Utc>);
    let admin = Actor::Admin(Uuid::from_u128(0xAD));
    let rows: [(&str, Setup); 8] = [
        ("project auto-approval", |w| {
            w.funded(FeeTerms::default());
            w.submit();
            let d = w.only(DeadlineKind::AutoApproveMilestone);
            (d.command(), d.due_at)
        }),
        ("booking auto-approval", |w| {
            let (command, due) = booking_acceptance(w);
            let Command::AutoAcceptBooking { booking_id } = command else {
                unreachable!()
            };
            let project_id = match w.ledger.state(&StreamId::Booking(booking_id)) {
                Some(AggState::Booking(b)) => b.project_id,
                other => panic!("{other:?}"),
            };
            let auto = Command::AutoApproveMilestone {
                project_id,
                milestone: 1,
            };
            (auto, due)
        }),
        ("booking auto-acceptance", booking_acceptance),
        ("quote expiry", |w| {
            w.request(None);
            w.sent_quote(QUOTE, SELLER, FeeTerms::default());
            let d = w.only(DeadlineKind::ExpireQuote);
            (d.command(), d.due_at)
        }),
        ("request expiry", |w| {
            w.request(Some(hours(100)));
            let d = w.only(DeadlineKind::ExpireServiceRequest);
            (d.command(), d.due_at)
        }),
        ("release maturation", |w| {
            w.funded(FeeTerms {
                release_to_pending: true,
                ..FeeTerms::default()
            });
            w.submit();
            let approve = Command::ApproveMilestone {
                project_id: PROJECT,
                milestone: 1,
            };
            w.ok(Actor::User(BUYER), approve);
            let d = w.only(DeadlineKind::MatureRelease);
            (d.command(), d.due_at)
        }),
        ("dispute time-out", |w| {
            w.funded(FeeTerms::default());
            let open = Command::OpenDispute {
                dispute_id: DISPUTE,
                project_id: PROJECT,
                milestone: 1,
                reason: "late".into(),
                proposed_release: usd("100.00"),
                respond_by: w.now + Duration::days(3),
            };
            w.ok(Actor::User(SELLER), open);
            let d = w.only(DeadlineKind::TimeOutDispute);
            (d.command(), d.due_at)
        }),
        ("deposit expiry", |w| {
            w.deposit(DEPOSIT, "10.00");
            let d = w.only(DeadlineKind::ExpireDeposit);
            (d.command(), d.due_at)
        }),
    ];
    for (what, setup) in rows {
        let mut w = World::new();
        let (command, due) = setup(&mut w);
        let before = w.ledger.log().len();
        w.at(due - Duration::seconds(1));
        for actor in [
            Actor::System,
            admin,
            Actor::User(BUYER),
            Actor::User(SELLER),
        ] {
            let refused = w.run(actor, command.clone());
            assert!(
                refused.is_err(),
                "{what}: {command:?} by {actor} accepted before {due}"
            );
        }
        assert_eq!(
            code(w.run(Actor::System, command.clone())),
            "too_early",
            "{what}"
        );
        assert_eq!(w.ledger.log().len(), before, "{what}: a refusal appended");
        if what == "booking auto-approval" {
            continue; // its due time is the booking's: the auto-acceptance row fires it
        }
        w.at(due);
        w.ok(Actor::System, command);
    }
}

/// A delivered booking's auto-acceptance command and due time.
fn booking_acceptance(w: &mut World) -> (Command, DateTime<Utc>) {
    delivered_booking(w, FeeTerms::default());
    let d = w.only(DeadlineKind::AutoAcceptBooking);
    (d.command(), d.due_at)
}
