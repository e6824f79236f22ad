//! Given / when / then over the public command set, executed through `MemoryLedger::execute` (with the
//! process-logic follow-ups). Every money-moving scenario asserts balances hand-computed from domain.md,
//! and `World::assert_sound` checks the ledger-wide invariants after each scenario: zero trial balance per
//! currency, no constrained account below zero, wallet states equal to their accounts, escrow and deferred
//! fees equal to what the project state says is held, in-transit accounts empty once terminal, replay
//! gives the same balances.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::booking::{BookingState, BookingStatus};
use ledger_core::aggregates::dispute::{DisputeState, DisputeStatus};
use ledger_core::aggregates::payment::{FundTarget, PaymentKind, PaymentState, PaymentStatus};
use ledger_core::aggregates::project::{FeePolicy, MilestoneStatus, ProjectState, ProjectStatus};
use ledger_core::aggregates::quote::{QuoteState, QuoteStatus};
use ledger_core::aggregates::service_request::{RequestStatus, ServiceRequestState};
use ledger_core::aggregates::suspense::{SuspenseState, SuspenseStatus};
use ledger_core::engine::SCHEMA_VERSION;
use ledger_core::ids::derived_id;
use ledger_core::{
    Account, Actor, AggState, Change, Command, CommandEnvelope, Currency, Event, Gateway,
    JournalEntry, MemoryLedger, Money, Outcome, Rate, Rejection, Side, StreamId,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------------------
// Fixtures: fixed ids, fixed times, small builders
// ---------------------------------------------------------------------------------------------------------

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);
const STRANGER: Uuid = Uuid::from_u128(0x0DD);
const ADMIN: Uuid = Uuid::from_u128(0xAD);
const PROJECT: Uuid = Uuid::from_u128(0x1001);
const REQUEST: Uuid = Uuid::from_u128(0x2001);
const QUOTE: Uuid = Uuid::from_u128(0x3001);
const QUOTE_2: Uuid = Uuid::from_u128(0x3002);
const PAY: Uuid = Uuid::from_u128(0x4001);
const PAY_2: Uuid = Uuid::from_u128(0x4002);
const PAYOUT: Uuid = Uuid::from_u128(0x5001);
const PAYOUT_2: Uuid = Uuid::from_u128(0x5002);
const REFUND: Uuid = Uuid::from_u128(0x6001);
const REFUND_2: Uuid = Uuid::from_u128(0x6002);
const CHARGEBACK: Uuid = Uuid::from_u128(0x7001);
const CHARGEBACK_2: Uuid = Uuid::from_u128(0x7002);
const DISPUTE: Uuid = Uuid::from_u128(0x8001);
const DISPUTE_2: Uuid = Uuid::from_u128(0x8002);
const SUSPENSE: Uuid = Uuid::from_u128(0x9001);

const GATEWAY: Actor = Actor::Gateway(Gateway::Normalized);
const STRIPE: Actor = Actor::Gateway(Gateway::Stripe);
const FINCRA: Actor = Actor::Gateway(Gateway::Fincra);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap()
}

fn day(n: i64) -> DateTime<Utc> {
    t0() + Duration::days(n)
}

fn user(id: Uuid) -> Actor {
    Actor::User(id)
}

fn admin() -> Actor {
    Actor::Admin(ADMIN)
}

fn usd(text: &str) -> Money {
    Money::parse(text, USD).expect("valid USD")
}

fn money(text: &str, currency: Currency) -> Money {
    Money::parse(text, currency).expect("valid amount")
}

fn bps(rate_bps: u32) -> Rate {
    Rate::from_bps(rate_bps).unwrap()
}

/// Commission (seller-paid) and buyer fee in basis points; everything else default.
fn fees(commission_bps: u32, buyer_fee_bps: u32) -> FeePolicy {
    FeePolicy {
        commission_rate: bps(commission_bps),
        buyer_fee_rate: bps(buyer_fee_bps),
        ..FeePolicy::default()
    }
}

fn available(user: Uuid) -> Account {
    Account::UserAvailable { user }
}

fn pending(user: Uuid) -> Account {
    Account::UserPending { user }
}

fn escrow(project: Uuid, milestone: u32) -> Account {
    Account::Escrow { project, milestone }
}

fn deferred(project: Uuid) -> Account {
    Account::DeferredFees { project }
}

fn clearing(gateway: Gateway) -> Account {
    Account::GatewayClearing(gateway)
}

fn booking_of(quote: Uuid) -> Uuid {
    derived_id(quote, "booking")
}

fn project_of(quote: Uuid) -> Uuid {
    derived_id(quote, "project")
}

/// The stored type tags of the changes, wallet mirror events left out.
fn types_of(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| {
            !matches!(c.stream, StreamId::Wallet { .. }) || is_wallet_domain_event(&c.event)
        })
        .map(|c| c.event.to_stored().0)
        .collect()
}

fn is_wallet_domain_event(event: &Event) -> bool {
    let (event_type, _) = event.to_stored();
    event_type != "Credited" && event_type != "Debited"
}

/// Event types of a command and all of its successful follow-ups, in order.
fn types(outcome: &Outcome) -> Vec<String> {
    let mut out = types_of(&outcome.changes);
    for (_, result) in &outcome.follow_ups {
        if let Ok(changes) = result {
            out.extend(types_of(changes));
        }
    }
    out
}

/// Rejection codes of the follow-ups the process logic tried.
fn follow_up_rejections(outcome: &Outcome) -> Vec<&'static str> {
    outcome
        .follow_ups
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(Rejection::code))
        .collect()
}

/// The journal entry carried by the (first) event of that type in an outcome, follow-ups included.
fn entry_of(outcome: &Outcome, event_type: &str) -> JournalEntry {
    let follow = outcome
        .follow_ups
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten();
    outcome
        .changes
        .iter()
        .chain(follow)
        .find(|c| c.event.to_stored().0 == event_type)
        .and_then(|c| c.event.entry().cloned())
        .unwrap_or_else(|| panic!("no {event_type} with an entry in {:?}", types(outcome)))
}

/// Postings as sorted `(account, side, minor)` so the comparison does not depend on posting order.
fn postings(entry: &JournalEntry) -> Vec<(Account, Side, i64)> {
    let mut out: Vec<_> = entry
        .postings()
        .iter()
        .map(|p| (p.account, p.side, p.amount.minor()))
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<(Account, Side, i64)>) -> Vec<(Account, Side, i64)> {
    v.sort();
    v
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

    fn at(&mut self, now: DateTime<Utc>) -> &mut World {
        self.now = now;
        self
    }

    fn envelope(&mut self, actor: Actor, command: Command) -> CommandEnvelope {
        self.commands += 1;
        CommandEnvelope {
            command_id: Uuid::from_u128(0xC0DE_0000_0000 + self.commands),
            actor,
            at: self.now,
            command,
        }
    }

    fn exec(&mut self, actor: Actor, command: Command) -> Result<Outcome, Rejection> {
        let env = self.envelope(actor, command);
        // Bounded work: every scenario's commands stay within the documented bound of streams.
        let needed = self.ledger.streams_needed(&env);
        assert!(
            needed <= ledger_core::engine::STREAMS_PER_COMMAND_MAX,
            "{:?} needs {needed} streams",
            env.command
        );
        self.ledger.execute(&env)
    }

    /// When `command` by `actor`, then it is accepted.
    #[track_caller]
    fn ok(&mut self, actor: Actor, command: Command) -> Outcome {
        match self.exec(actor, command.clone()) {
            Ok(outcome) => outcome,
            Err(r) => panic!("{command:?} by {actor} was rejected: {} ({r})", r.code()),
        }
    }

    /// When `command` by `actor`, then it is rejected, nothing is appended and no balance moves.
    #[track_caller]
    fn rejects(&mut self, actor: Actor, command: Command) -> &'static str {
        let log_before = self.ledger.log().len();
        let balances_before = self.ledger.balances().clone();
        let rejection = match self.exec(actor, command.clone()) {
            Ok(outcome) => panic!("{command:?} by {actor} was accepted: {:?}", types(&outcome)),
            Err(r) => r,
        };
        assert_eq!(self.ledger.log().len(), log_before, "a rejection appended");
        assert_eq!(self.ledger.balances(), &balances_before);
        rejection.code()
    }

    fn bal(&self, account: Account) -> i128 {
        self.ledger.balances().balance(&account, USD)
    }

    fn bal_in(&self, account: Account, currency: Currency) -> i128 {
        self.ledger.balances().balance(&account, currency)
    }

    fn state(&self, stream: StreamId) -> &AggState {
        self.ledger
            .state(&stream)
            .unwrap_or_else(|| panic!("no state for {stream}"))
    }

    fn project(&self, id: Uuid) -> &ProjectState {
        match self.state(StreamId::Project(id)) {
            AggState::Project(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn milestone(&self, id: Uuid, no: u32) -> MilestoneStatus {
        self.project(id).milestones[no as usize - 1].status
    }

    fn booking(&self, id: Uuid) -> &BookingState {
        match self.state(StreamId::Booking(id)) {
            AggState::Booking(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn quote(&self, id: Uuid) -> &QuoteState {
        match self.state(StreamId::Quote(id)) {
            AggState::Quote(q) => q,
            other => panic!("{other:?}"),
        }
    }

    fn request(&self, id: Uuid) -> &ServiceRequestState {
        match self.state(StreamId::ServiceRequest(id)) {
            AggState::ServiceRequest(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn payment(&self, id: Uuid) -> &PaymentState {
        match self.state(StreamId::Payment(id)) {
            AggState::Payment(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn dispute(&self, id: Uuid) -> &DisputeState {
        match self.state(StreamId::Dispute(id)) {
            AggState::Dispute(d) => d,
            other => panic!("{other:?}"),
        }
    }

    fn suspense(&self, id: Uuid) -> &SuspenseState {
        match self.state(StreamId::Suspense(id)) {
            AggState::Suspense(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Then: the ledger-wide invariants hold.
    #[track_caller]
    fn assert_sound(&self) {
        let balances = self.ledger.balances();
        for (currency, imbalance) in balances.imbalance_by_currency() {
            assert_eq!(imbalance, 0, "trial balance of {currency} is not zero");
        }
        assert!(
            balances.negative_constrained().is_empty(),
            "constrained accounts below zero: {:?}",
            balances.negative_constrained()
        );
        for change in self.ledger.log() {
            if let Some(entry) = change.event.entry() {
                assert!(entry.postings().len() >= 2);
                assert!(entry.postings().iter().all(|p| p.amount.is_positive()));
            }
        }
        for (stream, state) in self.ledger.states() {
            match (stream, state) {
                (StreamId::Wallet { user, currency }, AggState::Wallet(w)) => {
                    assert_eq!(
                        i128::from(w.available_minor),
                        balances.balance(&available(*user), *currency),
                        "wallet state vs account, {stream}"
                    );
                    assert_eq!(
                        i128::from(w.pending_minor),
                        balances.balance(&pending(*user), *currency),
                        "wallet state vs account, {stream}"
                    );
                }
                (StreamId::Project(id), AggState::Project(p)) if p.exists() => {
                    let c = p.currency();
                    let mut fees_held = 0;
                    for (i, m) in p.milestones.iter().enumerate() {
                        let no = i as u32 + 1;
                        assert_eq!(
                            i128::from(m.held_minor()),
                            balances.balance(&escrow(*id, no), c),
                            "escrow of milestone {no}"
                        );
                        assert!(m.released_minor + m.refunded_minor <= m.funded_minor);
                        fees_held += i128::from(m.buyer_fee_minor);
                    }
                    assert_eq!(fees_held, balances.balance(&deferred(*id), c));
                }
                (StreamId::Payment(id), AggState::Payment(p)) => {
                    let terminal = matches!(
                        p.status,
                        PaymentStatus::Completed
                            | PaymentStatus::Failed
                            | PaymentStatus::Cancelled
                            | PaymentStatus::Reversed
                    );
                    let transit = match p.kind {
                        Some(PaymentKind::Payout) => Some(Account::PayoutsInTransit(*id)),
                        Some(PaymentKind::CardRefund) => Some(Account::RefundsInTransit(*id)),
                        _ => None,
                    };
                    if let (true, Some(account), Some(c)) = (terminal, transit, p.currency) {
                        assert_eq!(
                            balances.balance(&account, c),
                            0,
                            "{account} after {:?}",
                            p.status
                        );
                    }
                }
                _ => {}
            }
        }
        let replayed = MemoryLedger::replay(self.ledger.log());
        assert_eq!(replayed.balances(), balances, "replay differs");
    }

    // -- Given helpers -------------------------------------------------------------------------------------

    /// Given a completed deposit of `amount` by `payer` through the normalized gateway.
    fn deposit(&mut self, payer: Uuid, payment: Uuid, amount: Money) {
        self.ok(
            user(payer),
            Command::InitiateDeposit {
                payment_id: payment,
                amount,
                gateway: Gateway::Normalized,
                fund: None,
            },
        );
        self.ok(
            GATEWAY,
            Command::ConfirmDeposit {
                payment_id: payment,
                amount,
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        );
    }

    /// Given a project created by the buyer and agreed by both parties.
    fn agreed_project(&mut self, project: Uuid, milestones: &[Money], fees: FeePolicy) {
        self.ok(
            user(BUYER),
            Command::CreateProject {
                project_id: project,
                buyer: BUYER,
                seller: SELLER,
                currency: milestones[0].currency(),
                milestones: milestones.to_vec(),
                fees: fees.into(),
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

    fn fund(&mut self, project: Uuid, milestone: u32) -> Outcome {
        self.ok(
            user(BUYER),
            Command::FundMilestone {
                project_id: project,
                milestone,
            },
        )
    }

    fn submit(&mut self, project: Uuid, milestone: u32) -> Outcome {
        self.ok(
            user(SELLER),
            Command::SubmitMilestone {
                project_id: project,
                milestone,
            },
        )
    }

    fn approve(&mut self, project: Uuid, milestone: u32) -> Outcome {
        self.ok(
            user(BUYER),
            Command::ApproveMilestone {
                project_id: project,
                milestone,
            },
        )
    }

    /// Given a single-milestone project, the buyer's deposit of exactly `deposit`, and the milestone funded.
    fn funded_single(&mut self, amount: &str, fees: FeePolicy, deposit: &str) {
        self.agreed_project(PROJECT, &[usd(amount)], fees);
        self.deposit(BUYER, PAY, usd(deposit));
        self.fund(PROJECT, 1);
    }

    /// Given an open request, a sent quote by the seller and the buyer's acceptance (booking opened).
    fn accepted_quote(&mut self, amount: &str, fees: FeePolicy) -> Outcome {
        self.open_request();
        self.sent_quote(QUOTE, amount, fees);
        self.ok(user(BUYER), Command::AcceptQuote { quote_id: QUOTE })
    }

    fn open_request(&mut self) {
        self.ok(
            user(BUYER),
            Command::OpenServiceRequest {
                request_id: REQUEST,
                currency: USD,
                title: "Fix the kitchen sink".into(),
                expires_at: Some(day(30)),
            },
        );
    }

    fn draft_quote(&mut self, quote: Uuid, amount: &str, fees: FeePolicy) {
        self.ok(
            user(SELLER),
            Command::CreateQuote {
                quote_id: quote,
                request_id: REQUEST,
                amount: usd(amount),
                valid_until: day(5),
                fees: fees.into(),
            },
        );
    }

    fn sent_quote(&mut self, quote: Uuid, amount: &str, fees: FeePolicy) {
        self.draft_quote(quote, amount, fees);
        self.ok(user(SELLER), Command::SendQuote { quote_id: quote });
    }

    /// Given a booking whose escrow is funded by a deposit carrying the fund target.
    fn confirmed_booking(&mut self, amount: &str, fees: FeePolicy, deposit: &str) -> Outcome {
        self.accepted_quote(amount, fees);
        self.ok(
            user(BUYER),
            Command::InitiateDeposit {
                payment_id: PAY,
                amount: usd(deposit),
                gateway: Gateway::Normalized,
                fund: Some(FundTarget {
                    project_id: project_of(QUOTE),
                    milestone: 1,
                }),
            },
        );
        self.ok(
            GATEWAY,
            Command::ConfirmDeposit {
                payment_id: PAY,
                amount: usd(deposit),
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        )
    }

    fn open_dispute(&mut self, by: Uuid, proposed_release: &str) -> Outcome {
        self.ok(
            user(by),
            Command::OpenDispute {
                dispute_id: DISPUTE,
                project_id: PROJECT,
                milestone: 1,
                reason: "the work is incomplete".into(),
                proposed_release: usd(proposed_release),
                respond_by: day(10),
            },
        )
    }

    fn request_payout(&mut self, payout: Uuid, amount: &str, fee: &str) -> Outcome {
        self.ok(
            user(SELLER),
            Command::RequestPayout {
                payout_id: payout,
                amount: usd(amount),
                fee: Some(usd(fee)),
                gateway: Gateway::Fincra,
            },
        )
    }

    fn confirm_transfer(&mut self, actor: Actor, payment: Uuid, gateway_fee: &str) -> Outcome {
        self.ok(
            actor,
            Command::ConfirmTransfer {
                payment_id: payment,
                gateway_fee: Some(usd(gateway_fee)),
                occurred_at: None,
                fee_in_suspense: None,
            },
        )
    }

    fn fail_transfer(&mut self, actor: Actor, payment: Uuid) -> Outcome {
        self.ok(
            actor,
            Command::FailTransfer {
                payment_id: payment,
                reason: "account closed".into(),
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// ServiceRequest: Open -> {Booked, Cancelled, Expired}
// ---------------------------------------------------------------------------------------------------------

#[test]
fn service_request_is_cancelled_by_its_client_or_an_operator() {
    for actor in [user(BUYER), admin()] {
        let mut w = World::new();
        w.open_request();
        assert_eq!(w.request(REQUEST).status, RequestStatus::Open);
        assert_eq!(w.request(REQUEST).client, BUYER);
        let outcome = w.ok(
            actor,
            Command::CancelServiceRequest {
                request_id: REQUEST,
            },
        );
        assert_eq!(types(&outcome), ["ServiceRequestCancelled"]);
        assert_eq!(w.request(REQUEST).status, RequestStatus::Cancelled);
        let code = w.rejects(
            user(BUYER),
            Command::CancelServiceRequest {
                request_id: REQUEST,
            },
        );
        assert_eq!(code, "invalid_transition");
    }
}

#[test]
fn service_request_expires_only_by_the_timer_once_due() {
    let mut w = World::new();
    w.open_request(); // expires at day 30
    let expire = Command::ExpireServiceRequest {
        request_id: REQUEST,
    };
    w.at(day(30) - Duration::seconds(1));
    assert_eq!(w.rejects(Actor::System, expire.clone()), "too_early");
    w.at(day(30));
    assert_eq!(w.rejects(user(BUYER), expire.clone()), "not_a_party");
    assert_eq!(
        types(&w.ok(Actor::System, expire)),
        ["ServiceRequestExpired"]
    );
    assert_eq!(w.request(REQUEST).status, RequestStatus::Expired);
    // An expired request takes no quote.
    let quote = Command::CreateQuote {
        quote_id: QUOTE,
        request_id: REQUEST,
        amount: usd("10.00"),
        valid_until: day(40),
        fees: FeePolicy::default().into(),
    };
    assert_eq!(w.rejects(user(SELLER), quote), "invalid_transition");
}

#[test]
fn service_request_forbidden_commands() {
    let mut w = World::new();
    let open = |title: &str, id: Uuid| Command::OpenServiceRequest {
        request_id: id,
        currency: USD,
        title: title.into(),
        expires_at: None,
    };
    let other = Uuid::from_u128(0x2002);
    assert_eq!(w.rejects(Actor::System, open("x", other)), "not_a_party");
    assert_eq!(
        w.rejects(user(BUYER), open("   ", other)),
        "invalid_command"
    );
    assert_eq!(
        w.rejects(user(BUYER), open(&"x".repeat(501), other)),
        "invalid_command"
    );
    w.ok(user(BUYER), open("Paint the fence", REQUEST));
    let table: Vec<(Actor, Command, &str)> = vec![
        (user(BUYER), open("again", REQUEST), "already_exists"),
        (
            user(STRANGER),
            Command::CancelServiceRequest {
                request_id: REQUEST,
            },
            "not_a_party",
        ),
        (
            user(SELLER),
            Command::CancelServiceRequest {
                request_id: REQUEST,
            },
            "not_a_party",
        ),
        (
            Actor::System,
            Command::ExpireServiceRequest {
                request_id: REQUEST,
            },
            "too_early", // no expiry was set: the policy's 30 days apply (issue 11)
        ),
        (
            user(BUYER),
            Command::CancelServiceRequest { request_id: other },
            "not_found",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.request(REQUEST).status, RequestStatus::Open);
}

// ---------------------------------------------------------------------------------------------------------
// Quote: Draft -> Sent -> {Accepted, Declined, Withdrawn, Expired}
// ---------------------------------------------------------------------------------------------------------

#[test]
fn accepted_quote_books_the_request_and_opens_an_agreed_booking_project() {
    let mut w = World::new();
    w.open_request();
    w.draft_quote(QUOTE, "250.00", fees(1000, 250));
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Draft);
    w.ok(user(SELLER), Command::SendQuote { quote_id: QUOTE });
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Sent);
    w.at(day(1));
    let outcome = w.ok(user(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    assert_eq!(
        types(&outcome),
        [
            "QuoteAccepted",
            "ServiceRequestBooked",
            "BookingOpened",
            "ProjectCreated",
            "ProjectAgreed"
        ]
    );
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Accepted);
    assert_eq!(w.request(REQUEST).status, RequestStatus::Booked);
    assert_eq!(w.request(REQUEST).accepted_quote, Some(QUOTE));
    let booking = w.booking(booking_of(QUOTE));
    assert_eq!(booking.status, BookingStatus::PendingPayment);
    assert_eq!((booking.client, booking.provider), (BUYER, SELLER));
    assert_eq!(booking.project_id, project_of(QUOTE));
    let project = w.project(project_of(QUOTE));
    assert_eq!(project.status, ProjectStatus::Agreed);
    assert_eq!((project.buyer, project.seller), (BUYER, SELLER));
    assert_eq!(project.currency, Some(USD));
    assert_eq!(project.milestones.len(), 1);
    assert_eq!(project.milestones[0].amount_minor, 25_000);
    assert_eq!(project.fees, fees(1000, 250));
    assert_eq!(project.booking, Some(booking_of(QUOTE)));
    // No money moved yet.
    assert!(w.ledger.balances().iter().next().is_none());
    w.assert_sound();
}

#[test]
fn quote_ends_declined_withdrawn_or_expired() {
    // (sent first?, actor, command, event, final status, when)
    type Row = (
        bool,
        Actor,
        Command,
        &'static str,
        QuoteStatus,
        DateTime<Utc>,
    );
    let table: Vec<Row> = vec![
        (
            true,
            user(BUYER),
            Command::DeclineQuote { quote_id: QUOTE },
            "QuoteDeclined",
            QuoteStatus::Declined,
            day(1),
        ),
        (
            false,
            user(SELLER),
            Command::WithdrawQuote { quote_id: QUOTE },
            "QuoteWithdrawn",
            QuoteStatus::Withdrawn,
            day(1),
        ),
        (
            true,
            user(SELLER),
            Command::WithdrawQuote { quote_id: QUOTE },
            "QuoteWithdrawn",
            QuoteStatus::Withdrawn,
            day(1),
        ),
        (
            false,
            Actor::System,
            Command::ExpireQuote { quote_id: QUOTE },
            "QuoteExpired",
            QuoteStatus::Expired,
            day(5),
        ),
        (
            true,
            Actor::System,
            Command::ExpireQuote { quote_id: QUOTE },
            "QuoteExpired",
            QuoteStatus::Expired,
            day(6),
        ),
    ];
    for (sent, actor, command, event, status, at) in table {
        let mut w = World::new();
        w.open_request();
        if sent {
            w.sent_quote(QUOTE, "80.00", FeePolicy::default());
        } else {
            w.draft_quote(QUOTE, "80.00", FeePolicy::default());
        }
        w.at(at);
        assert_eq!(types(&w.ok(actor, command.clone())), [event], "{command:?}");
        assert_eq!(w.quote(QUOTE).status, status);
        // Terminal: nothing else applies, and the request is still open for other quotes.
        let accept = Command::AcceptQuote { quote_id: QUOTE };
        let code = w.rejects(user(BUYER), accept);
        assert!(
            ["invalid_transition", "quote_expired"].contains(&code),
            "{code}"
        );
        assert_eq!(w.request(REQUEST).status, RequestStatus::Open);
    }
}

#[test]
fn quote_forbidden_commands() {
    let mut w = World::new();
    w.open_request();
    let create = |quote: Uuid, amount: Money, valid_until: DateTime<Utc>| Command::CreateQuote {
        quote_id: quote,
        request_id: REQUEST,
        amount,
        valid_until,
        fees: FeePolicy::default().into(),
    };
    let q9 = Uuid::from_u128(0x3009);
    let creation: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            create(q9, money("80.00", Currency::EUR), day(5)),
            "currency_mismatch",
        ),
        (
            user(SELLER),
            create(q9, usd("0.00"), day(5)),
            "non_positive_amount",
        ),
        (
            user(SELLER),
            create(q9, usd("-1.00"), day(5)),
            "non_positive_amount",
        ),
        (
            user(SELLER),
            create(q9, usd("80.00"), t0()),
            "quote_expired",
        ),
        (user(BUYER), create(q9, usd("80.00"), day(5)), "not_a_party"),
        (
            Actor::System,
            create(q9, usd("80.00"), day(5)),
            "not_a_party",
        ),
        (
            user(SELLER),
            Command::CreateQuote {
                quote_id: q9,
                request_id: Uuid::from_u128(0x2999),
                amount: usd("80.00"),
                valid_until: day(5),
                fees: FeePolicy::default().into(),
            },
            "not_found",
        ),
    ];
    for (actor, command, code) in creation {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.draft_quote(QUOTE, "80.00", FeePolicy::default());
    let draft: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            create(QUOTE, usd("80.00"), day(5)),
            "already_exists",
        ),
        (
            user(BUYER),
            Command::AcceptQuote { quote_id: QUOTE },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::DeclineQuote { quote_id: QUOTE },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::SendQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            user(STRANGER),
            Command::SendQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::WithdrawQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            Actor::System,
            Command::ExpireQuote { quote_id: QUOTE },
            "too_early",
        ),
        (
            user(SELLER),
            Command::ExpireQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::AcceptQuote { quote_id: q9 },
            "not_found",
        ),
    ];
    for (actor, command, code) in draft {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(user(SELLER), Command::SendQuote { quote_id: QUOTE });
    let sent: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            Command::SendQuote { quote_id: QUOTE },
            "invalid_transition",
        ),
        (
            user(SELLER),
            Command::AcceptQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            user(STRANGER),
            Command::AcceptQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            Actor::System,
            Command::AcceptQuote { quote_id: QUOTE },
            "not_a_party",
        ),
        (
            user(SELLER),
            Command::DeclineQuote { quote_id: QUOTE },
            "not_a_party",
        ),
    ];
    for (actor, command, code) in sent {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Sent);
    w.assert_sound();
}

#[test]
fn accepting_an_expired_quote_is_refused() {
    // valid_until is day 5; acceptance needs at < valid_until.
    for at in [day(5), day(5) + Duration::seconds(1), day(9)] {
        let mut w = World::new();
        w.open_request();
        w.sent_quote(QUOTE, "80.00", FeePolicy::default());
        w.at(at);
        let code = w.rejects(user(BUYER), Command::AcceptQuote { quote_id: QUOTE });
        assert_eq!(code, "quote_expired", "at {at}");
        assert_eq!(w.request(REQUEST).status, RequestStatus::Open);
    }
    let mut w = World::new();
    w.open_request();
    w.sent_quote(QUOTE, "80.00", FeePolicy::default());
    w.at(day(5) - Duration::seconds(1));
    w.ok(user(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    assert_eq!(w.quote(QUOTE).status, QuoteStatus::Accepted);
}

#[test]
fn a_second_quote_cannot_be_accepted_on_a_booked_request() {
    let mut w = World::new();
    w.open_request();
    w.sent_quote(QUOTE, "80.00", FeePolicy::default());
    w.sent_quote(QUOTE_2, "70.00", FeePolicy::default());
    w.ok(user(BUYER), Command::AcceptQuote { quote_id: QUOTE });
    // Accepting one quote declined the request's other open quotes (issue 11).
    assert_eq!(w.quote(QUOTE_2).status, QuoteStatus::Declined);
    let code = w.rejects(user(BUYER), Command::AcceptQuote { quote_id: QUOTE_2 });
    assert_eq!(code, "invalid_transition");
    assert_eq!(w.request(REQUEST).accepted_quote, Some(QUOTE));
    assert!(
        w.ledger
            .state(&StreamId::Booking(booking_of(QUOTE_2)))
            .is_none()
    );
    // Nor can a new quote be made on it.
    let late = Command::CreateQuote {
        quote_id: Uuid::from_u128(0x3003),
        request_id: REQUEST,
        amount: usd("60.00"),
        valid_until: day(5),
        fees: FeePolicy::default().into(),
    };
    assert_eq!(w.rejects(user(STRANGER), late), "invalid_transition");
    // The losing quote was declined already.
    let again = Command::DeclineQuote { quote_id: QUOTE_2 };
    assert_eq!(w.rejects(user(BUYER), again), "invalid_transition");
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Booking: PendingPayment -> Confirmed -> InProgress -> Delivered -> {Accepted, AutoAccepted} -> Settled
// ---------------------------------------------------------------------------------------------------------

#[test]
fn booking_paid_delivered_and_accepted_settles_with_exact_money() {
    // Given a 200.00 quote, commission 10%, buyer fee 2.5%: the client pays 205.00.
    let mut w = World::new();
    let outcome = w.confirmed_booking("200.00", fees(1000, 250), "205.00");
    assert_eq!(
        types(&outcome),
        ["DepositSucceeded", "MilestoneFunded", "BookingConfirmed"]
    );
    let (booking, project) = (booking_of(QUOTE), project_of(QUOTE));
    assert_eq!(w.booking(booking).status, BookingStatus::Confirmed);
    assert_eq!(w.bal(clearing(Gateway::Normalized)), 20_500);
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.bal(escrow(project, 1)), 20_000);
    assert_eq!(w.bal(deferred(project)), 500);

    w.at(day(1));
    let started = w.ok(
        user(SELLER),
        Command::StartBooking {
            booking_id: booking,
        },
    );
    assert_eq!(types(&started), ["BookingStarted"]);
    assert_eq!(w.booking(booking).status, BookingStatus::InProgress);

    w.at(day(2));
    let delivered = w.ok(
        user(SELLER),
        Command::DeliverBooking {
            booking_id: booking,
        },
    );
    assert_eq!(
        types(&delivered),
        ["BookingDelivered", "MilestoneSubmitted"]
    );
    assert_eq!(w.milestone(project, 1), MilestoneStatus::Submitted);

    w.at(day(3));
    let accepted = w.ok(
        user(BUYER),
        Command::AcceptBooking {
            booking_id: booking,
        },
    );
    assert_eq!(
        types(&accepted),
        [
            "BookingAccepted",
            "MilestoneApproved",
            "MilestoneReleased",
            "ProjectCompleted",
            "EscrowProjectSettled",
            "BookingSettled"
        ]
    );
    assert_eq!(w.booking(booking).status, BookingStatus::Settled);
    assert_eq!(w.project(project).status, ProjectStatus::Completed);
    assert_eq!(w.bal(available(SELLER)), 18_000);
    assert_eq!(w.bal(Account::Commission), 2_000);
    assert_eq!(w.bal(Account::PlatformFees), 500);
    assert_eq!(w.bal(escrow(project, 1)), 0);
    assert_eq!(w.bal(deferred(project)), 0);
    w.assert_sound();
}

#[test]
fn booking_auto_accepts_after_the_configured_silence_only() {
    for days in [14_u32, 3] {
        let mut w = World::new();
        let policy = FeePolicy {
            auto_approve_days: days,
            ..FeePolicy::default()
        };
        w.confirmed_booking("100.00", policy, "100.00");
        let booking = booking_of(QUOTE);
        w.at(day(2));
        w.ok(
            user(SELLER),
            Command::DeliverBooking {
                booking_id: booking,
            },
        );
        // A quote left at the policy's default for milestones takes the policy's 72 hours for bookings
        // (issue 11); another number of days is the booking's own.
        let silence = if days == 14 {
            Duration::hours(72)
        } else {
            Duration::days(i64::from(days))
        };
        let due = day(2) + silence;
        let auto = Command::AutoAcceptBooking {
            booking_id: booking,
        };
        w.at(due - Duration::seconds(1));
        assert_eq!(w.rejects(Actor::System, auto.clone()), "too_early");
        w.at(due);
        assert_eq!(w.rejects(user(BUYER), auto.clone()), "not_a_party");
        let outcome = w.ok(Actor::System, auto);
        assert_eq!(
            types(&outcome),
            [
                "BookingAccepted",
                "MilestoneApproved",
                "MilestoneReleased",
                "ProjectCompleted",
                "EscrowProjectSettled",
                "BookingSettled"
            ]
        );
        assert_eq!(w.milestone(project_of(QUOTE), 1), MilestoneStatus::Released);
        assert_eq!(w.bal(available(SELLER)), 10_000);
        w.assert_sound();
    }
}

#[test]
fn booking_cancelled_before_payment_cancels_its_project() {
    for by in [BUYER, SELLER] {
        let mut w = World::new();
        w.accepted_quote("100.00", FeePolicy::default());
        let booking = booking_of(QUOTE);
        let outcome = w.ok(
            user(by),
            Command::CancelBooking {
                booking_id: booking,
            },
        );
        assert_eq!(
            types(&outcome),
            ["BookingCancelled", "MilestoneCancelled", "ProjectCancelled"]
        );
        assert_eq!(w.booking(booking).status, BookingStatus::Cancelled);
        assert_eq!(
            w.project(project_of(QUOTE)).status,
            ProjectStatus::Cancelled
        );
        // A cancelled booking's escrow cannot be funded any more.
        w.deposit(BUYER, PAY, usd("100.00"));
        let fund = Command::FundMilestone {
            project_id: project_of(QUOTE),
            milestone: 1,
        };
        assert_eq!(w.rejects(user(BUYER), fund), "invalid_transition");
        w.assert_sound();
    }
}

#[test]
fn booking_cancelled_late_by_the_client_keeps_the_policy_share() {
    // 100.00 with commission 10%, buyer fee 2.5%, late-cancel keep 20%: keep 20.00, refund 80.00.
    // Seller: 20.00 - 2.00 commission = 18.00. Buyer fee 2.50 split 20:80 -> 0.50 earned, 2.00 returned.
    let mut w = World::new();
    let policy = FeePolicy {
        late_cancel_keep_rate: bps(2000),
        ..fees(1000, 250)
    };
    w.confirmed_booking("100.00", policy, "102.50");
    let booking = booking_of(QUOTE);
    let outcome = w.ok(
        user(BUYER),
        Command::CancelBooking {
            booking_id: booking,
        },
    );
    assert_eq!(
        types(&outcome),
        [
            "BookingCancelled",
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(w.booking(booking).status, BookingStatus::Cancelled);
    // No follow-up was refused: a cancelled booking is not asked to settle.
    let refused: Vec<_> = outcome
        .follow_ups
        .iter()
        .filter(|(_, r)| r.is_err())
        .collect();
    assert!(refused.is_empty(), "refused follow-ups: {refused:?}");
    assert_eq!(w.bal(available(SELLER)), 1_800);
    assert_eq!(w.bal(Account::Commission), 200);
    assert_eq!(w.bal(Account::PlatformFees), 50);
    assert_eq!(w.bal(available(BUYER)), 8_200);
    assert_eq!(w.bal(escrow(project_of(QUOTE), 1)), 0);
    assert_eq!(w.bal(deferred(project_of(QUOTE))), 0);
    w.assert_sound();
}

#[test]
fn booking_cancelled_by_the_provider_after_payment_refunds_everything() {
    let mut w = World::new();
    let policy = FeePolicy {
        late_cancel_keep_rate: bps(2000),
        ..fees(1000, 250)
    };
    w.confirmed_booking("100.00", policy, "102.50");
    let booking = booking_of(QUOTE);
    w.ok(
        user(SELLER),
        Command::CancelBooking {
            booking_id: booking,
        },
    );
    assert_eq!(w.booking(booking).status, BookingStatus::Cancelled);
    assert_eq!(w.bal(available(BUYER)), 10_250);
    assert_eq!(w.bal(available(SELLER)), 0);
    assert_eq!(w.bal(Account::Commission), 0);
    assert_eq!(w.bal(Account::PlatformFees), 0);
    w.assert_sound();
}

#[test]
fn booking_forbidden_commands() {
    let mut w = World::new();
    w.accepted_quote("100.00", FeePolicy::default());
    let b = booking_of(QUOTE);
    let pending: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            Command::StartBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(SELLER),
            Command::DeliverBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::AcceptBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::ConfirmBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::SettleBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(STRANGER),
            Command::CancelBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::OpenBooking {
                booking_id: Uuid::from_u128(0xB00C),
                project_id: Uuid::from_u128(0xB00D),
                quote_id: QUOTE,
            },
            "not_a_party",
        ),
        (
            Actor::System,
            Command::OpenBooking {
                booking_id: b,
                project_id: project_of(QUOTE),
                quote_id: QUOTE,
            },
            "already_exists",
        ),
    ];
    for (actor, command, code) in pending {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.deposit(BUYER, PAY, usd("100.00"));
    w.fund(project_of(QUOTE), 1);
    assert_eq!(w.booking(b).status, BookingStatus::Confirmed);
    w.ok(user(SELLER), Command::StartBooking { booking_id: b });
    let started: Vec<(Actor, Command, &str)> = vec![
        (
            user(BUYER),
            Command::StartBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::DeliverBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(SELLER),
            Command::StartBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::AcceptBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::CancelBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            user(SELLER),
            Command::CancelBooking { booking_id: b },
            "invalid_transition",
        ),
        (
            Actor::System,
            Command::AutoAcceptBooking { booking_id: b },
            "invalid_transition",
        ),
    ];
    for (actor, command, code) in started {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(user(SELLER), Command::DeliverBooking { booking_id: b });
    let delivered: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            Command::AcceptBooking { booking_id: b },
            "not_a_party",
        ),
        (
            user(STRANGER),
            Command::AcceptBooking { booking_id: b },
            "not_a_party",
        ),
        (
            Actor::System,
            Command::AutoAcceptBooking { booking_id: b },
            "too_early",
        ),
    ];
    for (actor, command, code) in delivered {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.bal(escrow(project_of(QUOTE), 1)), 10_000);
    w.assert_sound();
}

#[test]
fn booking_dispute_marks_the_booking_and_its_resolution_settles_it() {
    let mut w = World::new();
    w.confirmed_booking("100.00", FeePolicy::default(), "100.00");
    let (b, p) = (booking_of(QUOTE), project_of(QUOTE));
    let opened = w.ok(
        user(BUYER),
        Command::OpenDispute {
            dispute_id: DISPUTE,
            project_id: p,
            milestone: 1,
            reason: "no show".into(),
            proposed_release: usd("40.00"),
            respond_by: day(7),
        },
    );
    assert_eq!(
        types(&opened),
        [
            "DisputeOpened",
            "DisputeResponseRequested",
            "MilestoneDisputed",
            "BookingDisputed"
        ]
    );
    assert_eq!(w.booking(b).status, BookingStatus::Disputed);
    let accepted = w.ok(
        user(SELLER),
        Command::AcceptDisputeProposal {
            dispute_id: DISPUTE,
        },
    );
    assert_eq!(
        types(&accepted),
        [
            "DisputeSettled",
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled",
            "BookingSettled"
        ]
    );
    assert_eq!(w.booking(b).status, BookingStatus::Settled);
    assert_eq!(w.bal(available(SELLER)), 4_000);
    assert_eq!(w.bal(available(BUYER)), 6_000);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Project and milestones
// ---------------------------------------------------------------------------------------------------------

#[test]
fn project_goes_from_draft_through_agreement() {
    let mut w = World::new();
    let create = w.ok(
        user(SELLER),
        Command::CreateProject {
            project_id: PROJECT,
            buyer: BUYER,
            seller: SELLER,
            currency: USD,
            milestones: vec![usd("100.00"), usd("50.00")],
            fees: FeePolicy::default().into(),
        },
    );
    assert_eq!(types(&create), ["ProjectCreated"]);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Draft);
    assert_eq!(w.project(PROJECT).creator, SELLER);
    let submit = Command::SubmitProjectForAgreement {
        project_id: PROJECT,
    };
    assert_eq!(w.rejects(user(BUYER), submit.clone()), "not_a_party");
    let fund = Command::FundMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    assert_eq!(w.rejects(user(BUYER), fund.clone()), "invalid_transition");
    let submitted = w.ok(user(SELLER), submit.clone());
    assert_eq!(
        types(&submitted),
        ["ProjectSubmittedForAgreement", "ProjectPartyAgreed"]
    );
    assert_eq!(w.project(PROJECT).status, ProjectStatus::AwaitingAgreement);
    assert_eq!(w.rejects(user(SELLER), submit), "invalid_transition");
    let agree = Command::AgreeToProject {
        project_id: PROJECT,
    };
    assert_eq!(w.rejects(user(SELLER), agree.clone()), "invalid_transition");
    assert_eq!(w.rejects(user(STRANGER), agree.clone()), "not_a_party");
    assert_eq!(w.rejects(user(BUYER), fund), "invalid_transition");
    let agreed = w.ok(user(BUYER), agree.clone());
    assert_eq!(types(&agreed), ["ProjectPartyAgreed", "ProjectAgreed"]);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Agreed);
    assert_eq!(w.rejects(user(BUYER), agree), "invalid_transition");
    // Funding moves it to PartiallyFunded, then Funded.
    w.deposit(BUYER, PAY, usd("150.00"));
    w.fund(PROJECT, 1);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::PartiallyFunded);
    w.fund(PROJECT, 2);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Funded);
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    assert_eq!(w.bal(escrow(PROJECT, 2)), 5_000);
    w.assert_sound();
}

#[test]
fn project_creation_is_validated() {
    let mut w = World::new();
    let create = |buyer: Uuid, seller: Uuid, milestones: Vec<Money>| Command::CreateProject {
        project_id: PROJECT,
        buyer,
        seller,
        currency: USD,
        milestones,
        fees: FeePolicy::default().into(),
    };
    let table: Vec<(Actor, Command, &str)> = vec![
        (
            user(BUYER),
            create(
                BUYER,
                SELLER,
                vec![usd("10.00"), money("10.00", Currency::EUR)],
            ),
            "currency_mismatch",
        ),
        (
            user(BUYER),
            create(BUYER, SELLER, vec![usd("0.00")]),
            "non_positive_amount",
        ),
        (
            user(BUYER),
            create(BUYER, SELLER, vec![usd("-5.00")]),
            "non_positive_amount",
        ),
        (
            user(BUYER),
            create(BUYER, SELLER, vec![]),
            "invalid_command",
        ),
        (
            user(BUYER),
            create(BUYER, BUYER, vec![usd("10.00")]),
            "invalid_command",
        ),
        // A third party (an agent, an operator) may create a project (tests/limits_and_parties.rs); timers
        // and gateways may not.
        (
            Actor::System,
            create(BUYER, SELLER, vec![usd("10.00")]),
            "not_a_party",
        ),
        (
            user(BUYER),
            Command::AgreeToProject {
                project_id: PROJECT,
            },
            "not_found",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(user(BUYER), create(BUYER, SELLER, vec![usd("10.00")]));
    let again = create(BUYER, SELLER, vec![usd("10.00")]);
    assert_eq!(w.rejects(user(BUYER), again), "already_exists");
}

#[test]
fn milestone_funding_and_release_post_the_documented_entries() {
    // Milestone 100.00 USD, commission 10%, buyer fee 2.5%.
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    w.deposit(BUYER, PAY, usd("102.50"));
    let funded = w.fund(PROJECT, 1);
    assert_eq!(types(&funded), ["MilestoneFunded"]);
    assert_eq!(
        postings(&entry_of(&funded, "MilestoneFunded")),
        sorted(vec![
            (available(BUYER), Side::Debit, 10_250),
            (escrow(PROJECT, 1), Side::Credit, 10_000),
            (deferred(PROJECT), Side::Credit, 250),
        ])
    );
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Funded);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Funded);

    w.at(day(1));
    assert_eq!(types(&w.submit(PROJECT, 1)), ["MilestoneSubmitted"]);
    w.at(day(2));
    let approved = w.approve(PROJECT, 1);
    assert_eq!(
        types(&approved),
        [
            "MilestoneApproved",
            "MilestoneReleased",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(
        postings(&entry_of(&approved, "MilestoneReleased")),
        sorted(vec![
            (escrow(PROJECT, 1), Side::Debit, 10_000),
            (deferred(PROJECT), Side::Debit, 250),
            (available(SELLER), Side::Credit, 9_000),
            (Account::Commission, Side::Credit, 1_000),
            (Account::PlatformFees, Side::Credit, 250),
        ])
    );
    assert_eq!(w.bal(available(SELLER)), 9_000);
    assert_eq!(w.bal(Account::Commission), 1_000);
    assert_eq!(w.bal(Account::PlatformFees), 250);
    assert_eq!(w.bal(escrow(PROJECT, 1)), 0);
    assert_eq!(w.bal(deferred(PROJECT)), 0);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Released);
    w.assert_sound();
}

#[test]
fn changes_requested_then_resubmitted_then_approved() {
    let mut w = World::new();
    w.funded_single("100.00", FeePolicy::default(), "100.00");
    w.submit(PROJECT, 1);
    let changes = w.ok(
        user(BUYER),
        Command::RequestChanges {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    assert_eq!(types(&changes), ["MilestoneChangesRequested"]);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::ChangesRequested);
    let approve = Command::ApproveMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    assert_eq!(w.rejects(user(BUYER), approve), "invalid_transition");
    w.submit(PROJECT, 1);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Submitted);
    w.approve(PROJECT, 1);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Released);
    assert_eq!(w.bal(available(SELLER)), 10_000);
    w.assert_sound();
}

#[test]
fn a_completed_project_is_closed_by_an_operator_only() {
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("60.00"), usd("40.00")], fees(500, 0));
    w.deposit(BUYER, PAY, usd("100.00"));
    w.fund(PROJECT, 1);
    w.fund(PROJECT, 2);
    let close = Command::CloseProject {
        project_id: PROJECT,
    };
    w.submit(PROJECT, 1);
    let first = w.approve(PROJECT, 1);
    assert_eq!(types(&first), ["MilestoneApproved", "MilestoneReleased"]);
    assert_eq!(w.rejects(admin(), close.clone()), "invalid_transition");
    w.submit(PROJECT, 2);
    let last = w.approve(PROJECT, 2);
    assert!(types(&last).contains(&"ProjectCompleted".to_string()));
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Completed);
    // 5% of 60.00 = 3.00 and of 40.00 = 2.00.
    assert_eq!(w.bal(available(SELLER)), 9_500);
    assert_eq!(w.bal(Account::Commission), 500);
    assert_eq!(w.rejects(user(BUYER), close.clone()), "not_a_party");
    assert_eq!(w.rejects(user(SELLER), close.clone()), "not_a_party");
    assert_eq!(types(&w.ok(admin(), close.clone())), ["ProjectClosed"]);
    assert_eq!(w.project(PROJECT).status, ProjectStatus::Closed);
    assert_eq!(w.rejects(admin(), close), "invalid_transition");
    w.assert_sound();
}

#[test]
fn auto_approval_only_after_the_silence_period() {
    for days in [14_u32, 3] {
        let mut w = World::new();
        let policy = FeePolicy {
            auto_approve_days: days,
            ..fees(1000, 0)
        };
        w.funded_single("100.00", policy, "100.00");
        w.at(day(1));
        w.submit(PROJECT, 1);
        let auto = Command::AutoApproveMilestone {
            project_id: PROJECT,
            milestone: 1,
        };
        let due = day(1) + Duration::days(i64::from(days));
        w.at(due - Duration::seconds(1));
        assert_eq!(w.rejects(Actor::System, auto.clone()), "too_early");
        w.at(due);
        assert_eq!(w.rejects(user(BUYER), auto.clone()), "not_a_party");
        assert_eq!(w.rejects(user(SELLER), auto.clone()), "not_a_party");
        let outcome = w.ok(Actor::System, auto.clone());
        assert_eq!(
            types(&outcome),
            [
                "MilestoneApproved",
                "MilestoneReleased",
                "ProjectCompleted",
                "EscrowProjectSettled"
            ]
        );
        assert_eq!(w.bal(available(SELLER)), 9_000);
        assert_eq!(w.bal(Account::Commission), 1_000);
        assert_eq!(w.rejects(Actor::System, auto), "invalid_transition");
        w.assert_sound();
    }
}

#[test]
fn proceeds_released_to_pending_mature_into_available() {
    let mut w = World::new();
    let policy = FeePolicy {
        release_to_pending: true,
        ..fees(1000, 0)
    };
    w.funded_single("100.00", policy, "100.00");
    w.submit(PROJECT, 1);
    w.approve(PROJECT, 1);
    assert_eq!(w.bal(pending(SELLER)), 9_000);
    assert_eq!(w.bal(available(SELLER)), 0);
    // Pending money cannot be paid out.
    let payout = Command::RequestPayout {
        payout_id: PAYOUT,
        amount: usd("10.00"),
        fee: None,
        gateway: Gateway::Fincra,
    };
    assert_eq!(
        w.rejects(user(SELLER), payout.clone()),
        "insufficient_funds"
    );
    // Pending money matures only through its release's own deadline (issue 18, finding 4): the wallet-wide
    // command is refused for everyone, whatever the amount.
    let mature = |amount: &str| Command::MaturePending {
        user: SELLER,
        amount: usd(amount),
    };
    for actor in [user(SELLER), Actor::System, admin()] {
        assert_eq!(w.rejects(actor, mature("40.00")), "invalid_command");
    }
    assert_eq!(w.bal(pending(SELLER)), 9_000);
    let early = Command::MatureRelease {
        project_id: PROJECT,
        milestone: 1,
    };
    assert_eq!(w.rejects(Actor::System, early.clone()), "too_early");
    w.at(day(30));
    let matured = w.ok(Actor::System, early);
    assert_eq!(
        types(&matured),
        ["MilestoneProceedsMatured", "PendingMatured"]
    );
    assert_eq!(
        postings(&entry_of(&matured, "PendingMatured")),
        sorted(vec![
            (pending(SELLER), Side::Debit, 9_000),
            (available(SELLER), Side::Credit, 9_000),
        ])
    );
    assert_eq!(w.bal(pending(SELLER)), 0);
    assert_eq!(w.bal(available(SELLER)), 9_000);
    w.ok(user(SELLER), payout);
    w.assert_sound();
}

#[test]
fn seller_refund_returns_escrow_and_the_buyer_fee_per_policy() {
    // (return_buyer_fee_on_refund, buyer available after, platform fees after)
    for (return_fee, buyer_after, platform_after) in [(true, 10_250, 0), (false, 10_000, 250)] {
        let mut w = World::new();
        let policy = FeePolicy {
            return_buyer_fee_on_refund: return_fee,
            ..fees(1000, 250)
        };
        w.funded_single("100.00", policy, "102.50");
        w.submit(PROJECT, 1);
        let refund = Command::RefundMilestone {
            project_id: PROJECT,
            milestone: 1,
        };
        assert_eq!(w.rejects(user(BUYER), refund.clone()), "not_a_party");
        assert_eq!(w.rejects(user(STRANGER), refund.clone()), "not_a_party");
        let outcome = w.ok(user(SELLER), refund.clone());
        assert_eq!(
            types(&outcome),
            [
                "MilestoneRefunded",
                "ProjectCompleted",
                "EscrowProjectSettled"
            ]
        );
        assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Refunded);
        assert_eq!(w.bal(available(BUYER)), buyer_after);
        assert_eq!(w.bal(Account::PlatformFees), platform_after);
        assert_eq!(w.bal(Account::Commission), 0);
        assert_eq!(w.bal(escrow(PROJECT, 1)), 0);
        assert_eq!(w.bal(deferred(PROJECT)), 0);
        assert_eq!(w.rejects(admin(), refund), "invalid_transition");
        w.assert_sound();
    }
}

#[test]
fn only_an_unfunded_milestone_can_be_cancelled() {
    let mut w = World::new();
    w.agreed_project(
        PROJECT,
        &[usd("100.00"), usd("50.00")],
        FeePolicy::default(),
    );
    w.deposit(BUYER, PAY, usd("100.00"));
    w.fund(PROJECT, 1);
    let cancel = |milestone| Command::CancelMilestone {
        project_id: PROJECT,
        milestone,
    };
    assert_eq!(w.rejects(user(BUYER), cancel(1)), "invalid_transition");
    assert_eq!(w.rejects(user(STRANGER), cancel(2)), "not_a_party");
    assert_eq!(w.rejects(user(BUYER), cancel(3)), "unknown_milestone");
    assert_eq!(types(&w.ok(user(BUYER), cancel(2))), ["MilestoneCancelled"]);
    assert_eq!(w.milestone(PROJECT, 2), MilestoneStatus::Cancelled);
    assert_eq!(w.rejects(user(BUYER), cancel(2)), "invalid_transition");
    let fund2 = Command::FundMilestone {
        project_id: PROJECT,
        milestone: 2,
    };
    assert_eq!(w.rejects(user(BUYER), fund2), "invalid_transition");
    // The remaining milestone settles the project.
    w.submit(PROJECT, 1);
    let last = w.approve(PROJECT, 1);
    assert!(types(&last).contains(&"ProjectCompleted".to_string()));
    w.assert_sound();
}

#[test]
fn cancelling_a_funded_project_refunds_the_buyer() {
    for canceller in [user(SELLER), admin()] {
        let mut w = World::new();
        w.agreed_project(PROJECT, &[usd("100.00"), usd("50.00")], fees(1000, 250));
        w.deposit(BUYER, PAY, usd("102.50"));
        w.fund(PROJECT, 1);
        let cancel = Command::CancelProject {
            project_id: PROJECT,
        };
        assert_eq!(w.rejects(user(BUYER), cancel.clone()), "not_a_party");
        assert_eq!(w.rejects(user(STRANGER), cancel.clone()), "not_a_party");
        let outcome = w.ok(canceller, cancel.clone());
        assert_eq!(
            types(&outcome),
            [
                "MilestoneRefunded",
                "MilestoneCancelled",
                "ProjectCancelled",
                "EscrowProjectSettled",
            ]
        );
        assert_eq!(w.project(PROJECT).status, ProjectStatus::Cancelled);
        assert_eq!(w.bal(available(BUYER)), 10_250);
        assert_eq!(w.bal(escrow(PROJECT, 1)), 0);
        assert_eq!(w.bal(deferred(PROJECT)), 0);
        assert_eq!(w.rejects(admin(), cancel), "invalid_transition");
        w.assert_sound();
    }
}

#[test]
fn an_unfunded_project_can_be_cancelled_by_either_party() {
    for canceller in [BUYER, SELLER] {
        let mut w = World::new();
        w.agreed_project(PROJECT, &[usd("100.00")], FeePolicy::default());
        let outcome = w.ok(
            user(canceller),
            Command::CancelProject {
                project_id: PROJECT,
            },
        );
        assert_eq!(types(&outcome), ["MilestoneCancelled", "ProjectCancelled"]);
        assert_eq!(w.project(PROJECT).status, ProjectStatus::Cancelled);
    }
}

#[test]
fn a_project_with_an_open_dispute_cannot_be_cancelled() {
    let mut w = World::new();
    w.funded_single("100.00", FeePolicy::default(), "100.00");
    w.open_dispute(BUYER, "20.00");
    let cancel = Command::CancelProject {
        project_id: PROJECT,
    };
    assert_eq!(w.rejects(user(SELLER), cancel.clone()), "open_dispute");
    assert_eq!(w.rejects(admin(), cancel), "open_dispute");
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    w.assert_sound();
}

#[test]
fn a_project_with_a_release_cannot_be_cancelled() {
    let mut w = World::new();
    w.agreed_project(
        PROJECT,
        &[usd("100.00"), usd("50.00")],
        FeePolicy::default(),
    );
    w.deposit(BUYER, PAY, usd("150.00"));
    w.fund(PROJECT, 1);
    w.fund(PROJECT, 2);
    w.submit(PROJECT, 1);
    w.approve(PROJECT, 1);
    let cancel = Command::CancelProject {
        project_id: PROJECT,
    };
    assert_eq!(
        w.rejects(user(SELLER), cancel.clone()),
        "invalid_transition"
    );
    assert_eq!(w.rejects(admin(), cancel), "invalid_transition");
    assert_eq!(w.bal(escrow(PROJECT, 2)), 5_000);
    w.assert_sound();
}

#[test]
fn milestone_forbidden_commands() {
    let mut w = World::new();
    w.agreed_project(
        PROJECT,
        &[usd("100.00"), usd("50.00")],
        FeePolicy::default(),
    );
    w.deposit(BUYER, PAY, usd("120.00"));
    w.fund(PROJECT, 1);
    let m = |milestone| (PROJECT, milestone);
    let release = |(project_id, milestone)| Command::ReleaseMilestone {
        project_id,
        milestone,
    };
    let fund = |(project_id, milestone)| Command::FundMilestone {
        project_id,
        milestone,
    };
    let submit = |(project_id, milestone)| Command::SubmitMilestone {
        project_id,
        milestone,
    };
    let approve = |(project_id, milestone)| Command::ApproveMilestone {
        project_id,
        milestone,
    };
    let changes = |(project_id, milestone)| Command::RequestChanges {
        project_id,
        milestone,
    };
    let auto = |(project_id, milestone)| Command::AutoApproveMilestone {
        project_id,
        milestone,
    };
    // Milestone 1 funded (not submitted), milestone 2 unfunded; the buyer has 20.00 left.
    let funded: Vec<(Actor, Command, &str)> = vec![
        (user(BUYER), release(m(1)), "invalid_transition"), // release before approval
        (admin(), release(m(1)), "invalid_transition"),
        (Actor::System, release(m(1)), "invalid_transition"),
        (user(BUYER), fund(m(1)), "invalid_transition"), // fund twice
        (user(SELLER), submit(m(2)), "invalid_transition"), // submit unfunded
        (user(BUYER), approve(m(1)), "invalid_transition"), // approve unsubmitted
        (user(BUYER), changes(m(1)), "invalid_transition"),
        (Actor::System, auto(m(1)), "invalid_transition"),
        (user(BUYER), fund(m(2)), "insufficient_funds"), // 50.00 needed, 20.00 held
        (user(SELLER), fund(m(2)), "not_a_party"),
        (user(STRANGER), fund(m(2)), "not_a_party"),
        (admin(), fund(m(2)), "not_a_party"),
        (user(BUYER), submit(m(1)), "not_a_party"),
        (user(STRANGER), submit(m(1)), "not_a_party"),
        (user(SELLER), release(m(1)), "not_a_party"),
        (user(STRANGER), release(m(1)), "not_a_party"),
        (user(BUYER), fund(m(9)), "unknown_milestone"),
        (user(BUYER), fund(m(0)), "unknown_milestone"),
        (user(SELLER), submit(m(9)), "unknown_milestone"),
        (user(BUYER), fund((Uuid::from_u128(0x1999), 1)), "not_found"),
    ];
    for (actor, command, code) in funded {
        assert_eq!(
            w.rejects(actor, command.clone()),
            code,
            "{actor} {command:?}"
        );
    }
    w.submit(PROJECT, 1);
    let submitted: Vec<(Actor, Command, &str)> = vec![
        (user(BUYER), release(m(1)), "invalid_transition"), // still not approved
        (user(SELLER), submit(m(1)), "invalid_transition"),
        (user(SELLER), approve(m(1)), "not_a_party"), // the seller approving their own work
        (user(STRANGER), approve(m(1)), "not_a_party"),
        (admin(), approve(m(1)), "not_a_party"),
        (user(SELLER), changes(m(1)), "not_a_party"),
        (Actor::System, auto(m(1)), "too_early"),
    ];
    for (actor, command, code) in submitted {
        assert_eq!(
            w.rejects(actor, command.clone()),
            code,
            "{actor} {command:?}"
        );
    }
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    assert_eq!(w.bal(available(SELLER)), 0);
    w.approve(PROJECT, 1);
    // Released: nothing more can leave this milestone.
    let after: Vec<(Actor, Command, &str)> = vec![
        (admin(), release(m(1)), "invalid_transition"),
        (
            user(SELLER),
            Command::RefundMilestone {
                project_id: PROJECT,
                milestone: 1,
            },
            "invalid_transition",
        ),
        (user(BUYER), fund(m(1)), "invalid_transition"),
    ];
    for (actor, command, code) in after {
        assert_eq!(
            w.rejects(actor, command.clone()),
            code,
            "{actor} {command:?}"
        );
    }
    assert_eq!(w.bal(available(SELLER)), 10_000);
    w.assert_sound();
}

#[test]
fn funding_never_mixes_currencies() {
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], FeePolicy::default());
    w.deposit(BUYER, PAY, money("200.00", Currency::EUR));
    let fund = Command::FundMilestone {
        project_id: PROJECT,
        milestone: 1,
    };
    assert_eq!(w.rejects(user(BUYER), fund), "insufficient_funds");
    assert_eq!(w.bal_in(available(BUYER), Currency::EUR), 20_000);
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Unfunded);
    w.assert_sound();
}

#[test]
fn yen_fees_round_half_even_to_whole_yen() {
    // 1010 JPY: buyer fee 2.5% = 25.25 -> 25; commission 5% = 50.5 -> 50 (half to even).
    let jpy = Currency::JPY;
    let mut w = World::new();
    w.agreed_project(PROJECT, &[money("1010", jpy)], fees(500, 250));
    w.deposit(BUYER, PAY, money("1035", jpy));
    let funded = w.fund(PROJECT, 1);
    assert_eq!(
        postings(&entry_of(&funded, "MilestoneFunded")),
        sorted(vec![
            (available(BUYER), Side::Debit, 1_035),
            (escrow(PROJECT, 1), Side::Credit, 1_010),
            (deferred(PROJECT), Side::Credit, 25),
        ])
    );
    w.submit(PROJECT, 1);
    w.approve(PROJECT, 1);
    assert_eq!(w.bal_in(available(SELLER), jpy), 960);
    assert_eq!(w.bal_in(Account::Commission, jpy), 50);
    assert_eq!(w.bal_in(Account::PlatformFees, jpy), 25);
    assert_eq!(w.bal_in(available(BUYER), jpy), 0);
    assert_eq!(w.bal(Account::Commission), 0, "nothing in USD");
    w.assert_sound();
}

#[test]
fn kwd_commission_rounds_half_even_at_three_decimals() {
    // 5% of 0.670 KWD = 33.5 fils -> 34; 5% of 0.650 KWD = 32.5 fils -> 32.
    let kwd = Currency::KWD;
    let mut w = World::new();
    let milestones = [money("0.670", kwd), money("0.650", kwd)];
    w.agreed_project(PROJECT, &milestones, fees(500, 0));
    w.deposit(BUYER, PAY, money("1.320", kwd));
    w.fund(PROJECT, 1);
    w.fund(PROJECT, 2);
    w.submit(PROJECT, 1);
    let first = w.approve(PROJECT, 1);
    assert_eq!(
        postings(&entry_of(&first, "MilestoneReleased")),
        sorted(vec![
            (escrow(PROJECT, 1), Side::Debit, 670),
            (available(SELLER), Side::Credit, 636),
            (Account::Commission, Side::Credit, 34),
        ])
    );
    w.submit(PROJECT, 2);
    w.approve(PROJECT, 2);
    assert_eq!(w.bal_in(Account::Commission, kwd), 66);
    assert_eq!(w.bal_in(available(SELLER), kwd), 1_254);
    w.assert_sound();
}

#[test]
fn an_applied_resolution_must_add_up_to_the_held_amount() {
    let mut w = World::new();
    w.funded_single("100.00", FeePolicy::default(), "100.00");
    let resolve = |release: Money, refund: Money| Command::ApplyResolution {
        project_id: PROJECT,
        milestone: 1,
        release,
        refund,
        cause: DISPUTE,
    };
    let table: Vec<(Actor, Command, &str)> = vec![
        (
            admin(),
            resolve(usd("60.00"), usd("30.00")),
            "split_mismatch",
        ),
        (
            admin(),
            resolve(usd("60.00"), usd("50.00")),
            "split_mismatch",
        ),
        (
            admin(),
            resolve(usd("-10.00"), usd("110.00")),
            "split_mismatch",
        ),
        (
            admin(),
            resolve(usd("100.01"), usd("-0.01")),
            "split_mismatch",
        ),
        (
            admin(),
            resolve(money("60.00", Currency::EUR), usd("40.00")),
            "currency_mismatch",
        ),
        (
            user(BUYER),
            resolve(usd("0.00"), usd("100.00")),
            "not_a_party",
        ),
        (
            user(SELLER),
            resolve(usd("100.00"), usd("0.00")),
            "not_a_party",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    let outcome = w.ok(admin(), resolve(usd("60.00"), usd("40.00")));
    assert_eq!(
        types(&outcome),
        [
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(w.bal(available(SELLER)), 6_000);
    assert_eq!(w.bal(available(BUYER)), 4_000);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Resolved);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Payment: deposits
// ---------------------------------------------------------------------------------------------------------

fn initiate(payment: Uuid, amount: Money, gateway: Gateway, fund: Option<FundTarget>) -> Command {
    Command::InitiateDeposit {
        payment_id: payment,
        amount,
        gateway,
        fund,
    }
}

fn confirm(payment: Uuid, amount: Money, gateway_fee: Option<Money>) -> Command {
    Command::ConfirmDeposit {
        payment_id: payment,
        amount,
        gateway_fee,
        occurred_at: None,
        fee_in_suspense: None,
    }
}

#[test]
fn deposit_success_nets_the_gateway_fee() {
    // G = 100.00, g = 2.90: Dr Clearing 97.10, Dr GatewayFees 2.90, Cr buyer 100.00.
    let mut w = World::new();
    let started = w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Stripe, None),
    );
    assert_eq!(types(&started), ["DepositInitiated"]);
    assert_eq!(w.payment(PAY).status, PaymentStatus::Pending);
    let processing = w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    assert_eq!(types(&processing), ["PaymentProcessing"]);
    let again = w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    assert!(again.changes.is_empty());
    let paid_at = t0() - Duration::minutes(5);
    w.at(t0() + Duration::minutes(1));
    let outcome = w.ok(
        STRIPE,
        Command::ConfirmDeposit {
            payment_id: PAY,
            amount: usd("100.00"),
            gateway_fee: Some(usd("2.90")),
            occurred_at: Some(paid_at),
            fee_in_suspense: None,
        },
    );
    assert_eq!(types(&outcome), ["DepositSucceeded"]);
    let entry = entry_of(&outcome, "DepositSucceeded");
    assert_eq!(
        postings(&entry),
        sorted(vec![
            (clearing(Gateway::Stripe), Side::Debit, 9_710),
            (Account::GatewayFees, Side::Debit, 290),
            (available(BUYER), Side::Credit, 10_000),
        ])
    );
    assert_eq!(entry.effective_at(), paid_at);
    assert_eq!(entry.recorded_at(), t0() + Duration::minutes(1));
    assert_eq!(w.payment(PAY).status, PaymentStatus::Completed);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    assert_eq!(w.bal(clearing(Gateway::Stripe)), 9_710);
    assert_eq!(w.bal(Account::GatewayFees), 290);
    w.assert_sound();
}

#[test]
fn a_failed_deposit_attempt_is_followed_by_an_accepted_success() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Normalized, None),
    );
    w.ok(GATEWAY, Command::MarkPaymentProcessing { payment_id: PAY });
    let failed = w.ok(
        GATEWAY,
        Command::FailDeposit {
            payment_id: PAY,
            reason: "card declined".into(),
        },
    );
    assert_eq!(types(&failed), ["DepositAttemptFailed"]);
    assert_eq!(w.payment(PAY).status, PaymentStatus::Failed);
    assert_eq!(w.bal(available(BUYER)), 0);
    let succeeded = w.ok(GATEWAY, confirm(PAY, usd("100.00"), None));
    assert_eq!(types(&succeeded), ["DepositSucceeded"]);
    assert_eq!(w.payment(PAY).status, PaymentStatus::Completed);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    assert_eq!(w.bal(clearing(Gateway::Normalized)), 10_000);
    w.assert_sound();
}

#[test]
fn a_duplicate_deposit_success_posts_once() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Normalized, None),
    );
    w.ok(GATEWAY, confirm(PAY, usd("100.00"), Some(usd("1.00"))));
    let log = w.ledger.log().len();
    // The same success again, from another delivery (new command id), even with other amounts.
    for (amount, fee) in [("100.00", "1.00"), ("100.00", "0.00"), ("150.00", "1.00")] {
        let outcome = w.ok(GATEWAY, confirm(PAY, usd(amount), Some(usd(fee))));
        assert!(outcome.changes.is_empty(), "{:?}", types(&outcome));
    }
    assert_eq!(w.ledger.log().len(), log);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    assert_eq!(w.bal(clearing(Gateway::Normalized)), 9_900);
    assert_eq!(w.bal(Account::GatewayFees), 100);
    w.assert_sound();
}

#[test]
fn a_late_deposit_failure_after_success_is_an_anomaly_without_money() {
    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("100.00"));
    let balances = w.ledger.balances().clone();
    let fail = Command::FailDeposit {
        payment_id: PAY,
        reason: "late webhook".into(),
    };
    let late = w.ok(GATEWAY, fail.clone());
    assert_eq!(types(&late), ["LateFailureIgnored"]);
    assert!(late.changes.iter().all(|c| c.event.entry().is_none()));
    assert_eq!(w.payment(PAY).status, PaymentStatus::Completed);
    assert!(w.payment(PAY).late_failure_recorded);
    assert!(w.ok(GATEWAY, fail).changes.is_empty());
    assert_eq!(w.ledger.balances(), &balances);
    w.assert_sound();
}

#[test]
fn a_deposit_is_cancelled_while_pending_or_after_a_failed_attempt() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("10.00"), Gateway::Normalized, None),
    );
    assert_eq!(
        w.rejects(user(STRANGER), Command::CancelDeposit { payment_id: PAY }),
        "not_a_party"
    );
    let cancelled = w.ok(user(BUYER), Command::CancelDeposit { payment_id: PAY });
    assert_eq!(types(&cancelled), ["DepositCancelled"]);
    assert_eq!(w.payment(PAY).status, PaymentStatus::Cancelled);

    w.ok(
        user(BUYER),
        initiate(PAY_2, usd("10.00"), Gateway::Normalized, None),
    );
    w.ok(
        GATEWAY,
        Command::FailDeposit {
            payment_id: PAY_2,
            reason: "timeout".into(),
        },
    );
    w.ok(admin(), Command::CancelDeposit { payment_id: PAY_2 });
    assert_eq!(w.payment(PAY_2).status, PaymentStatus::Cancelled);

    let mut w = World::new();
    w.deposit(BUYER, PAY, usd("10.00"));
    assert_eq!(
        w.rejects(user(BUYER), Command::CancelDeposit { payment_id: PAY }),
        "invalid_transition"
    );
    w.assert_sound();
}

#[test]
fn a_deposit_with_a_fund_target_funds_the_milestone() {
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    let target = Some(FundTarget {
        project_id: PROJECT,
        milestone: 1,
    });
    w.ok(
        user(BUYER),
        initiate(PAY, usd("102.50"), Gateway::Normalized, target),
    );
    let outcome = w.ok(GATEWAY, confirm(PAY, usd("102.50"), None));
    assert_eq!(types(&outcome), ["DepositSucceeded", "MilestoneFunded"]);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Funded);
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    assert_eq!(w.bal(deferred(PROJECT)), 250);
    w.assert_sound();
}

#[test]
fn an_underpaid_deposit_leaves_the_milestone_unfunded_and_an_overpaid_one_keeps_the_excess() {
    let target = Some(FundTarget {
        project_id: PROJECT,
        milestone: 1,
    });
    // Underpaid: 100.00 arrives for 102.50 due.
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    w.ok(
        user(BUYER),
        initiate(PAY, usd("102.50"), Gateway::Normalized, target),
    );
    let outcome = w.ok(GATEWAY, confirm(PAY, usd("100.00"), None));
    assert_eq!(types(&outcome), ["DepositSucceeded"]);
    assert_eq!(follow_up_rejections(&outcome), ["insufficient_funds"]);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Unfunded);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    w.assert_sound();
    // Overpaid: 110.00 arrives; 102.50 is escrowed, 7.50 stays in the wallet.
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    w.ok(
        user(BUYER),
        initiate(PAY, usd("102.50"), Gateway::Normalized, target),
    );
    w.ok(GATEWAY, confirm(PAY, usd("110.00"), None));
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Funded);
    assert_eq!(w.bal(available(BUYER)), 750);
    w.assert_sound();
}

#[test]
fn a_deposit_by_a_non_party_must_not_fund_someone_elses_milestone() {
    // The buyer holds 102.50 in their wallet, not yet committed. A stranger starts a 1.00 deposit whose fund
    // target is the buyer's milestone: the follow-up funding (actor System) must not move the buyer's money.
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    w.deposit(BUYER, PAY, usd("102.50"));
    let target = Some(FundTarget {
        project_id: PROJECT,
        milestone: 1,
    });
    // Refused at the start: only the milestone's buyer may earmark a deposit for it.
    assert_eq!(
        w.rejects(
            user(STRANGER),
            initiate(PAY_2, usd("1.00"), Gateway::Normalized, target)
        ),
        "not_a_party"
    );
    let _ = w.exec(GATEWAY, confirm(PAY_2, usd("1.00"), None));
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Unfunded);
    assert_eq!(w.bal(available(BUYER)), 10_250);
    w.assert_sound();
}

#[test]
fn deposit_forbidden_commands() {
    let mut w = World::new();
    let creation: Vec<(Actor, Command, &str)> = vec![
        (
            GATEWAY,
            initiate(PAY, usd("10.00"), Gateway::Normalized, None),
            "not_a_party",
        ),
        (
            admin(),
            initiate(PAY, usd("10.00"), Gateway::Normalized, None),
            "not_a_party",
        ),
        (
            user(BUYER),
            initiate(PAY, usd("0.00"), Gateway::Normalized, None),
            "non_positive_amount",
        ),
        (GATEWAY, confirm(PAY, usd("10.00"), None), "not_found"),
    ];
    for (actor, command, code) in creation {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(
        user(BUYER),
        initiate(PAY, usd("10.00"), Gateway::Normalized, None),
    );
    let pending: Vec<(Actor, Command, &str)> = vec![
        (
            user(BUYER),
            initiate(PAY, usd("10.00"), Gateway::Normalized, None),
            "already_exists",
        ),
        (user(BUYER), confirm(PAY, usd("10.00"), None), "not_a_party"),
        (
            user(STRANGER),
            confirm(PAY, usd("10.00"), None),
            "not_a_party",
        ),
        (
            GATEWAY,
            confirm(PAY, money("10.00", Currency::EUR), None),
            "currency_mismatch",
        ),
        (
            GATEWAY,
            confirm(PAY, usd("10.00"), Some(money("0.10", Currency::EUR))),
            "currency_mismatch",
        ),
        (
            GATEWAY,
            confirm(PAY, usd("10.00"), Some(usd("10.01"))),
            "amount_too_large",
        ),
        (
            GATEWAY,
            confirm(PAY, usd("0.00"), None),
            "non_positive_amount",
        ),
        (
            GATEWAY,
            Command::ConfirmTransfer {
                payment_id: PAY,
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
            "invalid_transition",
        ),
        (
            GATEWAY,
            Command::ReversePayout {
                payment_id: PAY,
                occurred_at: None,
            },
            "invalid_transition",
        ),
        (
            user(BUYER),
            Command::MarkPaymentProcessing { payment_id: PAY },
            "not_a_party",
        ),
    ];
    for (actor, command, code) in pending {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.payment(PAY).status, PaymentStatus::Pending);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Payment: payouts
// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_completed_payout_posts_its_fees_and_clears_transit() {
    // Wallet 100.00; payout W = 50.00 with platform fee p = 1.00; gateway fee g = 0.25.
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    let requested = w.request_payout(PAYOUT, "50.00", "1.00");
    assert_eq!(types(&requested), ["PayoutRequested"]);
    assert_eq!(
        postings(&entry_of(&requested, "PayoutRequested")),
        sorted(vec![
            (available(SELLER), Side::Debit, 5_100),
            (Account::PayoutsInTransit(PAYOUT), Side::Credit, 5_100),
        ])
    );
    assert_eq!(w.bal(available(SELLER)), 4_900);
    w.ok(
        FINCRA,
        Command::MarkPaymentProcessing { payment_id: PAYOUT },
    );
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Processing);
    let completed = w.confirm_transfer(FINCRA, PAYOUT, "0.25");
    assert_eq!(types(&completed), ["PayoutCompleted"]);
    assert_eq!(
        postings(&entry_of(&completed, "PayoutCompleted")),
        sorted(vec![
            (Account::PayoutsInTransit(PAYOUT), Side::Debit, 5_100),
            (Account::GatewayFees, Side::Debit, 25),
            (clearing(Gateway::Fincra), Side::Credit, 5_025),
            (Account::PayoutFees, Side::Credit, 100),
        ])
    );
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Completed);
    assert_eq!(w.bal(Account::PayoutsInTransit(PAYOUT)), 0);
    assert_eq!(w.bal(clearing(Gateway::Fincra)), -5_025);
    assert_eq!(w.bal(Account::PayoutFees), 100);
    assert_eq!(w.bal(Account::GatewayFees), 25);
    assert_eq!(w.bal(available(SELLER)), 4_900);
    // A repeated success changes nothing.
    assert!(
        w.confirm_transfer(FINCRA, PAYOUT, "0.25")
            .changes
            .is_empty()
    );
    assert_eq!(w.bal(Account::GatewayFees), 25);
    w.assert_sound();
}

#[test]
fn a_failed_or_cancelled_payout_returns_the_money_to_the_wallet() {
    // (processing first?, actor, command, event, final status)
    let fail = Command::FailTransfer {
        payment_id: PAYOUT,
        reason: "invalid account".into(),
    };
    let cancel = Command::CancelPayout { payment_id: PAYOUT };
    let table: Vec<(bool, Actor, Command, &str, PaymentStatus)> = vec![
        (
            false,
            FINCRA,
            fail.clone(),
            "PayoutFailed",
            PaymentStatus::Failed,
        ),
        (
            true,
            FINCRA,
            fail.clone(),
            "PayoutFailed",
            PaymentStatus::Failed,
        ),
        (true, admin(), fail, "PayoutFailed", PaymentStatus::Failed),
        (
            false,
            user(SELLER),
            cancel.clone(),
            "PayoutCancelled",
            PaymentStatus::Cancelled,
        ),
        (
            false,
            admin(),
            cancel,
            "PayoutCancelled",
            PaymentStatus::Cancelled,
        ),
    ];
    for (processing, actor, command, event, status) in table {
        let mut w = World::new();
        w.deposit(SELLER, PAY, usd("100.00"));
        w.request_payout(PAYOUT, "50.00", "1.00");
        if processing {
            w.ok(
                FINCRA,
                Command::MarkPaymentProcessing { payment_id: PAYOUT },
            );
        }
        let outcome = w.ok(actor, command.clone());
        assert_eq!(types(&outcome), [event], "{command:?}");
        assert_eq!(w.payment(PAYOUT).status, status);
        assert_eq!(w.bal(available(SELLER)), 10_000);
        assert_eq!(w.bal(Account::PayoutsInTransit(PAYOUT)), 0);
        assert_eq!(w.bal(Account::PayoutFees), 0);
        assert_eq!(w.bal(clearing(Gateway::Fincra)), 0);
        // Terminal: a repeated failure is a no-op.
        let again = w.ok(
            FINCRA,
            Command::FailTransfer {
                payment_id: PAYOUT,
                reason: "again".into(),
            },
        );
        assert!(again.changes.is_empty());
        w.assert_sound();
    }
}

#[test]
fn payout_forbidden_commands() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    let payout = |id: Uuid, amount: Money, fee: Option<Money>| Command::RequestPayout {
        payout_id: id,
        amount,
        fee,
        gateway: Gateway::Fincra,
    };
    let creation: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            payout(PAYOUT, usd("100.01"), None),
            "insufficient_funds",
        ), // overdraw
        (
            user(SELLER),
            payout(PAYOUT, usd("99.50"), Some(usd("1.00"))),
            "insufficient_funds",
        ),
        (
            user(BUYER),
            payout(PAYOUT, usd("1.00"), None),
            "insufficient_funds",
        ), // not their money
        (FINCRA, payout(PAYOUT, usd("1.00"), None), "not_a_party"),
        (admin(), payout(PAYOUT, usd("1.00"), None), "not_a_party"),
        (
            user(SELLER),
            payout(PAYOUT, usd("0.00"), None),
            "non_positive_amount",
        ),
        (
            user(SELLER),
            payout(PAYOUT, usd("10.00"), Some(usd("-1.00"))),
            "non_positive_amount",
        ),
        (
            user(SELLER),
            payout(PAYOUT, usd("10.00"), Some(money("1.00", Currency::EUR))),
            "currency_mismatch",
        ),
        (
            user(SELLER),
            payout(PAYOUT, money("10.00", Currency::EUR), None),
            "insufficient_funds",
        ),
    ];
    for (actor, command, code) in creation {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.request_payout(PAYOUT, "60.00", "0.00");
    let requested: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            payout(PAYOUT, usd("1.00"), None),
            "already_exists",
        ),
        (
            user(SELLER),
            payout(PAYOUT_2, usd("40.01"), None),
            "insufficient_funds",
        ),
        (
            user(SELLER),
            Command::ConfirmTransfer {
                payment_id: PAYOUT,
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
            "not_a_party",
        ),
        (
            user(STRANGER),
            Command::CancelPayout { payment_id: PAYOUT },
            "not_a_party",
        ),
        (
            FINCRA,
            confirm(PAYOUT, usd("60.00"), None),
            "invalid_transition",
        ),
        (
            FINCRA,
            Command::ConfirmTransfer {
                payment_id: PAYOUT,
                gateway_fee: Some(money("0.10", Currency::EUR)),
                occurred_at: None,
                fee_in_suspense: None,
            },
            "currency_mismatch",
        ),
    ];
    for (actor, command, code) in requested {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(
        FINCRA,
        Command::MarkPaymentProcessing { payment_id: PAYOUT },
    );
    let cancel = Command::CancelPayout { payment_id: PAYOUT };
    assert_eq!(w.rejects(user(SELLER), cancel), "invalid_transition");
    assert_eq!(w.bal(available(SELLER)), 4_000);
    w.assert_sound();
}

#[test]
fn a_payout_reversed_after_completion_credits_the_wallet_back() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "50.00", "1.00");
    w.confirm_transfer(FINCRA, PAYOUT, "0.00");
    assert_eq!(w.bal(clearing(Gateway::Fincra)), -5_000);
    let reverse = Command::ReversePayout {
        payment_id: PAYOUT,
        occurred_at: None,
    };
    assert_eq!(w.rejects(user(SELLER), reverse.clone()), "not_a_party");
    let reversed = w.ok(FINCRA, reverse.clone());
    assert_eq!(types(&reversed), ["PayoutReversed"]);
    assert_eq!(
        postings(&entry_of(&reversed, "PayoutReversed")),
        sorted(vec![
            (clearing(Gateway::Fincra), Side::Debit, 5_000),
            (available(SELLER), Side::Credit, 5_000),
        ])
    );
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Reversed);
    assert_eq!(w.bal(clearing(Gateway::Fincra)), 0);
    assert_eq!(w.bal(available(SELLER)), 9_900); // the 1.00 payout fee stays earned
    assert_eq!(w.bal(Account::PayoutFees), 100);
    assert!(w.ok(FINCRA, reverse).changes.is_empty());
    assert_eq!(w.bal(available(SELLER)), 9_900);
    w.assert_sound();
}

#[test]
fn a_success_after_a_failure_is_a_receivable_anomaly_and_never_overdraws() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "60.00", "0.00");
    w.fail_transfer(FINCRA, PAYOUT);
    assert_eq!(w.bal(available(SELLER)), 10_000);
    // The returned money is spent on another payout.
    w.request_payout(PAYOUT_2, "100.00", "0.00");
    assert_eq!(w.bal(available(SELLER)), 0);
    // Then the gateway says the first payout succeeded after all: 60.00 really left.
    let late = w.confirm_transfer(FINCRA, PAYOUT, "0.00");
    assert_eq!(types(&late), ["SuccessAfterFailure"]);
    assert_eq!(
        postings(&entry_of(&late, "SuccessAfterFailure")),
        sorted(vec![
            (Account::Receivable { user: SELLER }, Side::Debit, 6_000),
            (clearing(Gateway::Fincra), Side::Credit, 6_000),
        ])
    );
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Failed);
    assert!(w.payment(PAYOUT).late_success_recorded);
    assert_eq!(w.bal(available(SELLER)), 0);
    assert_eq!(w.bal(Account::Receivable { user: SELLER }), 6_000);
    assert_eq!(w.bal(clearing(Gateway::Fincra)), -6_000);
    // Reported again: recorded once.
    assert!(
        w.confirm_transfer(FINCRA, PAYOUT, "0.00")
            .changes
            .is_empty()
    );
    w.confirm_transfer(FINCRA, PAYOUT_2, "0.00");
    assert_eq!(w.bal(clearing(Gateway::Fincra)), -16_000);
    assert_eq!(w.bal(Account::Receivable { user: SELLER }), 6_000);
    w.assert_sound();
}

#[test]
fn a_late_failure_after_a_completed_payout_is_ignored() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "50.00", "0.00");
    w.confirm_transfer(FINCRA, PAYOUT, "0.00");
    let balances = w.ledger.balances().clone();
    let late = w.fail_transfer(FINCRA, PAYOUT);
    assert_eq!(types(&late), ["LateFailureIgnored"]);
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Completed);
    assert!(w.fail_transfer(FINCRA, PAYOUT).changes.is_empty());
    assert_eq!(w.ledger.balances(), &balances);
    assert_eq!(w.bal(available(SELLER)), 5_000);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Payment: card refunds and chargebacks
// ---------------------------------------------------------------------------------------------------------

/// A card refund of the deposit `PAY`.
fn card_refund(refund: Uuid, amount: &str) -> Command {
    Command::RequestCardRefund {
        refund_id: refund,
        deposit_id: PAY,
        amount: usd(amount),
        gateway: Gateway::Stripe,
    }
}

fn stripe_deposit(w: &mut World, payer: Uuid, amount: &str) {
    w.ok(
        user(payer),
        initiate(PAY, usd(amount), Gateway::Stripe, None),
    );
    w.ok(STRIPE, confirm(PAY, usd(amount), None));
}

#[test]
fn card_refund_processed_failed_and_succeeded_after_failure() {
    let mut w = World::new();
    stripe_deposit(&mut w, BUYER, "100.00");
    let requested = w.ok(user(BUYER), card_refund(REFUND, "30.00"));
    assert_eq!(
        types(&requested),
        ["DepositRefundReserved", "CardRefundRequested"]
    );
    assert_eq!(w.bal(Account::RefundsInTransit(REFUND)), 3_000);
    assert_eq!(w.bal(available(BUYER)), 7_000);
    let processed = w.confirm_transfer(STRIPE, REFUND, "0.00");
    assert_eq!(types(&processed), ["CardRefundProcessed"]);
    assert_eq!(
        postings(&entry_of(&processed, "CardRefundProcessed")),
        sorted(vec![
            (Account::RefundsInTransit(REFUND), Side::Debit, 3_000),
            (clearing(Gateway::Stripe), Side::Credit, 3_000),
        ])
    );
    assert_eq!(w.bal(Account::RefundsInTransit(REFUND)), 0);
    assert_eq!(w.bal(clearing(Gateway::Stripe)), 7_000);

    w.ok(user(BUYER), card_refund(REFUND_2, "20.00"));
    let failed = w.fail_transfer(STRIPE, REFUND_2);
    assert_eq!(
        types(&failed),
        ["CardRefundFailed", "DepositRefundReleased"]
    );
    assert_eq!(w.bal(available(BUYER)), 7_000);
    assert_eq!(w.bal(Account::RefundsInTransit(REFUND_2)), 0);
    let late = w.confirm_transfer(STRIPE, REFUND_2, "0.00");
    assert_eq!(types(&late), ["SuccessAfterFailure"]);
    assert_eq!(w.bal(Account::Receivable { user: BUYER }), 2_000);
    assert_eq!(w.bal(clearing(Gateway::Stripe)), 5_000);
    assert_eq!(w.bal(available(BUYER)), 7_000);
    w.assert_sound();
}

#[test]
fn a_card_refund_beyond_the_wallet_is_refused() {
    let mut w = World::new();
    stripe_deposit(&mut w, BUYER, "100.00");
    w.ok(user(BUYER), card_refund(REFUND, "30.00"));
    // At most what the deposit brought in less earlier refunds (and before that, the wallet's guard).
    assert_eq!(
        w.rejects(user(BUYER), card_refund(REFUND_2, "70.01")),
        "amount_too_large"
    );
    // Only the deposit's payer refunds it to its card.
    assert_eq!(
        w.rejects(user(SELLER), card_refund(REFUND_2, "1.00")),
        "not_a_party"
    );
    assert_eq!(
        w.rejects(STRIPE, card_refund(REFUND_2, "1.00")),
        "not_a_party"
    );
    assert_eq!(
        w.rejects(user(BUYER), card_refund(REFUND_2, "0.00")),
        "non_positive_amount"
    );
    let cancel = Command::CancelPayout { payment_id: REFUND };
    w.ok(user(BUYER), cancel);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    w.ok(user(BUYER), card_refund(REFUND_2, "100.00"));
    assert_eq!(w.bal(available(BUYER)), 0);
    w.assert_sound();
}

fn open_chargeback(id: Uuid, amount: &str, fee: &str) -> Command {
    Command::OpenChargeback {
        payment_id: PAY,
        chargeback_id: id,
        amount: usd(amount),
        fee: Some(usd(fee)),
        occurred_at: None,
    }
}

#[test]
fn a_chargeback_opened_then_won() {
    let mut w = World::new();
    stripe_deposit(&mut w, BUYER, "100.00");
    let opened = w.ok(STRIPE, open_chargeback(CHARGEBACK, "100.00", "15.00"));
    assert_eq!(types(&opened), ["ChargebackOpened"]);
    assert_eq!(
        postings(&entry_of(&opened, "ChargebackOpened")),
        sorted(vec![
            (Account::Chargeback(CHARGEBACK), Side::Debit, 10_000),
            (Account::ChargebackFees, Side::Debit, 1_500),
            (clearing(Gateway::Stripe), Side::Credit, 11_500),
        ])
    );
    assert_eq!(w.bal(clearing(Gateway::Stripe)), -1_500);
    assert!(
        w.ok(STRIPE, open_chargeback(CHARGEBACK, "100.00", "15.00"))
            .changes
            .is_empty()
    );
    let win = Command::WinChargeback {
        payment_id: PAY,
        chargeback_id: CHARGEBACK,
    };
    let won = w.ok(STRIPE, win.clone());
    assert_eq!(types(&won), ["ChargebackWon"]);
    assert_eq!(w.bal(clearing(Gateway::Stripe)), 8_500);
    assert_eq!(w.bal(Account::Chargeback(CHARGEBACK)), 0);
    assert_eq!(w.bal(Account::ChargebackFees), 1_500);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    assert!(w.ok(STRIPE, win).changes.is_empty());
    w.assert_sound();
}

#[test]
fn a_lost_chargeback_takes_the_wallet_first_then_a_receivable_or_a_loss() {
    // The buyer deposited 100.00 and withdrew 60.00 (completed payout): 40.00 is left in the wallet.
    for (recover, receivable, loss) in [(true, 6_000, 0), (false, 0, 6_000)] {
        let mut w = World::new();
        stripe_deposit(&mut w, BUYER, "100.00");
        w.ok(
            user(BUYER),
            Command::RequestPayout {
                payout_id: PAYOUT,
                amount: usd("60.00"),
                fee: None,
                gateway: Gateway::Stripe,
            },
        );
        w.confirm_transfer(STRIPE, PAYOUT, "0.00");
        w.ok(STRIPE, open_chargeback(CHARGEBACK, "100.00", "0.00"));
        let lost = w.ok(
            STRIPE,
            Command::LoseChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
                recover_from_user: recover,
            },
        );
        assert_eq!(types(&lost), ["ChargebackLost"]);
        assert_eq!(w.bal(available(BUYER)), 0);
        assert_eq!(w.bal(Account::Receivable { user: BUYER }), receivable);
        assert_eq!(w.bal(Account::ChargebackLosses), loss);
        assert_eq!(w.bal(Account::Chargeback(CHARGEBACK)), 0);
        w.assert_sound();
    }
}

#[test]
fn a_lost_chargeback_takes_escrow_still_held_for_the_buyer_before_a_receivable() {
    // The buyer deposited 100.00 and escrowed 60.00 of it in a funded, unreleased milestone.
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("60.00")], FeePolicy::default());
    stripe_deposit(&mut w, BUYER, "100.00");
    w.fund(PROJECT, 1);
    w.ok(STRIPE, open_chargeback(CHARGEBACK, "100.00", "0.00"));
    w.ok(
        STRIPE,
        Command::LoseChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
            recover_from_user: true,
        },
    );
    // Expected: 40.00 from the wallet, 60.00 from the escrow, nothing receivable.
    assert_eq!(w.bal(available(BUYER)), 0);
    assert_eq!(w.bal(escrow(PROJECT, 1)), 0);
    assert_eq!(w.bal(Account::Receivable { user: BUYER }), 0);
    assert_eq!(w.bal(Account::ChargebackLosses), 0);
    w.assert_sound();
}

#[test]
fn chargeback_forbidden_commands() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Stripe, None),
    );
    assert_eq!(
        w.rejects(STRIPE, open_chargeback(CHARGEBACK, "10.00", "0.00")),
        "invalid_transition"
    );
    w.ok(STRIPE, confirm(PAY, usd("100.00"), None));
    let table: Vec<(Actor, Command, &str)> = vec![
        (
            STRIPE,
            open_chargeback(CHARGEBACK, "100.01", "0.00"),
            "amount_too_large",
        ),
        (
            user(BUYER),
            open_chargeback(CHARGEBACK, "10.00", "0.00"),
            "not_a_party",
        ),
        (
            STRIPE,
            open_chargeback(CHARGEBACK, "0.00", "0.00"),
            "non_positive_amount",
        ),
        (
            STRIPE,
            Command::OpenChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
                amount: money("10.00", Currency::EUR),
                fee: None,
                occurred_at: None,
            },
            "currency_mismatch",
        ),
        (
            STRIPE,
            Command::WinChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
            },
            "not_found",
        ),
        (
            STRIPE,
            Command::LoseChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
                recover_from_user: false,
            },
            "not_found",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(STRIPE, open_chargeback(CHARGEBACK, "70.00", "0.00"));
    // A second chargeback may not take more than the deposit brought in.
    assert_eq!(
        w.rejects(STRIPE, open_chargeback(CHARGEBACK_2, "30.01", "0.00")),
        "amount_too_large"
    );
    w.ok(STRIPE, open_chargeback(CHARGEBACK_2, "30.00", "0.00"));
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Dispute: Opened -> AwaitingResponse -> {Accepted, Mediation -> Resolved}, Withdrawn, TimedOut
// ---------------------------------------------------------------------------------------------------------

/// Given the documented project: 100.00 USD, commission 10%, buyer fee 2.5%, funded and submitted.
fn disputable() -> World {
    let mut w = World::new();
    w.funded_single("100.00", fees(1000, 250), "102.50");
    w.submit(PROJECT, 1);
    w
}

#[test]
fn an_accepted_dispute_proposal_is_applied_to_the_escrow() {
    // Release 30.00: commission 3.00, seller 27.00; buyer fee 2.50 split 30:70 -> 0.75 earned, 1.75 back.
    let mut w = disputable();
    let opened = w.open_dispute(BUYER, "30.00");
    assert_eq!(
        types(&opened),
        [
            "DisputeOpened",
            "DisputeResponseRequested",
            "MilestoneDisputed"
        ]
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::AwaitingResponse);
    assert_eq!(w.dispute(DISPUTE).counterparty, SELLER);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Disputed);
    assert_eq!(w.project(PROJECT).open_disputes, 1);
    let accept = Command::AcceptDisputeProposal {
        dispute_id: DISPUTE,
    };
    assert_eq!(w.rejects(user(BUYER), accept.clone()), "not_a_party");
    assert_eq!(w.rejects(admin(), accept.clone()), "not_a_party");
    let settled = w.ok(user(SELLER), accept.clone());
    assert_eq!(
        types(&settled),
        [
            "DisputeSettled",
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(
        postings(&entry_of(&settled, "MilestoneResolved")),
        sorted(vec![
            (escrow(PROJECT, 1), Side::Debit, 10_000),
            (deferred(PROJECT), Side::Debit, 250),
            (available(SELLER), Side::Credit, 2_700),
            (Account::Commission, Side::Credit, 300),
            (Account::PlatformFees, Side::Credit, 75),
            (available(BUYER), Side::Credit, 7_175),
        ])
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::Accepted);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Resolved);
    assert_eq!(w.project(PROJECT).open_disputes, 0);
    assert_eq!(w.bal(available(SELLER)), 2_700);
    assert_eq!(w.bal(available(BUYER)), 7_175);
    assert_eq!(w.rejects(user(SELLER), accept), "invalid_transition");
    w.assert_sound();
}

#[test]
fn a_contested_dispute_is_resolved_by_a_mediator() {
    // Release 55.55: commission 5.555 -> 5.56 (half even), seller 49.99; refund 44.45.
    // Buyer fee 2.50 by 5555:4445 = 1.38875 / 1.11125 -> 1.39 earned, 1.11 returned (largest remainder).
    let mut w = disputable();
    w.open_dispute(SELLER, "100.00");
    assert_eq!(w.dispute(DISPUTE).counterparty, BUYER);
    let contest = Command::ContestDispute {
        dispute_id: DISPUTE,
    };
    assert_eq!(w.rejects(user(SELLER), contest.clone()), "not_a_party");
    let resolve = |release: Money| Command::ResolveDispute {
        dispute_id: DISPUTE,
        release,
    };
    assert_eq!(
        w.rejects(admin(), resolve(usd("55.55"))),
        "invalid_transition"
    );
    assert_eq!(
        types(&w.ok(user(BUYER), contest.clone())),
        ["DisputeContested"]
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::Mediation);
    assert_eq!(w.rejects(user(BUYER), contest), "invalid_transition");
    let table: Vec<(Actor, Command, &str)> = vec![
        (user(BUYER), resolve(usd("55.55")), "not_a_party"),
        (user(SELLER), resolve(usd("55.55")), "not_a_party"),
        (Actor::System, resolve(usd("55.55")), "not_a_party"),
        (admin(), resolve(usd("100.01")), "split_mismatch"),
        (admin(), resolve(usd("-0.01")), "split_mismatch"),
        (
            admin(),
            resolve(money("55.55", Currency::EUR)),
            "currency_mismatch",
        ),
        (
            Actor::System,
            Command::TimeOutDispute {
                dispute_id: DISPUTE,
            },
            "invalid_transition",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    let resolved = w.ok(admin(), resolve(usd("55.55")));
    assert_eq!(
        types(&resolved),
        [
            "DisputeSettled",
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::Resolved);
    assert_eq!(w.bal(available(SELLER)), 4_999);
    assert_eq!(w.bal(Account::Commission), 556);
    assert_eq!(w.bal(Account::PlatformFees), 139);
    assert_eq!(w.bal(available(BUYER)), 4_556);
    assert_eq!(w.bal(escrow(PROJECT, 1)), 0);
    assert_eq!(w.bal(deferred(PROJECT)), 0);
    w.assert_sound();
}

#[test]
fn a_withdrawn_dispute_gives_the_milestone_back() {
    let mut w = disputable();
    w.open_dispute(BUYER, "0.00");
    let withdraw = Command::WithdrawDispute {
        dispute_id: DISPUTE,
    };
    assert_eq!(w.rejects(user(SELLER), withdraw.clone()), "not_a_party");
    assert_eq!(w.rejects(admin(), withdraw.clone()), "not_a_party");
    let withdrawn = w.ok(user(BUYER), withdraw.clone());
    assert_eq!(
        types(&withdrawn),
        ["DisputeWithdrawn", "MilestoneDisputeWithdrawn"]
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::Withdrawn);
    assert_eq!(w.milestone(PROJECT, 1), MilestoneStatus::Submitted);
    assert_eq!(w.project(PROJECT).open_disputes, 0);
    assert_eq!(w.rejects(user(BUYER), withdraw), "invalid_transition");
    assert!(
        w.ledger
            .log()
            .iter()
            .all(|c| !matches!(c.stream, StreamId::Dispute(_)) || c.event.entry().is_none())
    );
    // Work goes on: approval releases as usual.
    w.approve(PROJECT, 1);
    assert_eq!(w.bal(available(SELLER)), 9_000);
    w.assert_sound();
}

#[test]
fn a_dispute_times_out_only_after_its_deadline_and_applies_the_proposal() {
    let mut w = disputable();
    w.open_dispute(BUYER, "0.00"); // full refund proposed; respond by day 10
    let timeout = Command::TimeOutDispute {
        dispute_id: DISPUTE,
    };
    w.at(day(10) - Duration::seconds(1));
    assert_eq!(w.rejects(Actor::System, timeout.clone()), "too_early");
    w.at(day(10));
    assert_eq!(w.rejects(admin(), timeout.clone()), "not_a_party");
    assert_eq!(w.rejects(user(BUYER), timeout.clone()), "not_a_party");
    let timed_out = w.ok(Actor::System, timeout);
    assert_eq!(
        types(&timed_out),
        [
            "DisputeSettled",
            "MilestoneResolved",
            "ProjectCompleted",
            "EscrowProjectSettled"
        ]
    );
    assert_eq!(w.dispute(DISPUTE).status, DisputeStatus::TimedOut);
    assert_eq!(w.bal(available(BUYER)), 10_250);
    assert_eq!(w.bal(available(SELLER)), 0);
    assert_eq!(w.bal(Account::PlatformFees), 0);
    assert_eq!(w.bal(Account::Commission), 0);
    w.assert_sound();
}

#[test]
fn dispute_forbidden_commands() {
    let mut w = World::new();
    w.agreed_project(
        PROJECT,
        &[usd("100.00"), usd("50.00"), usd("10.00")],
        FeePolicy::default(),
    );
    w.deposit(BUYER, PAY, usd("110.00"));
    w.fund(PROJECT, 1);
    w.fund(PROJECT, 3);
    w.submit(PROJECT, 3);
    w.approve(PROJECT, 3); // milestone 3 released
    let open = |id: Uuid, project: Uuid, milestone: u32, proposed: Money| Command::OpenDispute {
        dispute_id: id,
        project_id: project,
        milestone,
        reason: "late".into(),
        proposed_release: proposed,
        respond_by: day(10),
    };
    let table: Vec<(Actor, Command, &str)> = vec![
        (
            user(STRANGER),
            open(DISPUTE, PROJECT, 1, usd("10.00")),
            "not_a_party",
        ),
        (
            admin(),
            open(DISPUTE, PROJECT, 1, usd("10.00")),
            "not_a_party",
        ),
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 1, usd("100.01")),
            "split_mismatch",
        ),
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 1, usd("-1.00")),
            "split_mismatch",
        ),
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 1, money("10.00", Currency::EUR)),
            "currency_mismatch",
        ),
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 2, usd("0.00")),
            "invalid_transition",
        ), // unfunded
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 3, usd("0.00")),
            "invalid_transition",
        ), // released
        (
            user(BUYER),
            open(DISPUTE, PROJECT, 7, usd("0.00")),
            "unknown_milestone",
        ),
        (
            user(BUYER),
            open(DISPUTE, Uuid::from_u128(0x1999), 1, usd("0.00")),
            "not_found",
        ),
        (
            user(SELLER),
            Command::AcceptDisputeProposal {
                dispute_id: DISPUTE,
            },
            "not_found",
        ),
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(user(BUYER), open(DISPUTE, PROJECT, 1, usd("10.00")));
    let disputed: Vec<(Actor, Command, &str)> = vec![
        (
            user(SELLER),
            open(DISPUTE, PROJECT, 1, usd("10.00")),
            "already_exists",
        ),
        (
            user(SELLER),
            open(DISPUTE_2, PROJECT, 1, usd("10.00")),
            "invalid_transition",
        ),
        (
            admin(),
            Command::ReleaseMilestone {
                project_id: PROJECT,
                milestone: 1,
            },
            "invalid_transition",
        ),
        (
            user(SELLER),
            Command::RefundMilestone {
                project_id: PROJECT,
                milestone: 1,
            },
            "invalid_transition",
        ),
        (
            user(SELLER),
            Command::SubmitMilestone {
                project_id: PROJECT,
                milestone: 1,
            },
            "invalid_transition",
        ),
    ];
    for (actor, command, code) in disputed {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Suspense: money that cannot be matched
// ---------------------------------------------------------------------------------------------------------

fn record_suspense(amount: Money) -> Command {
    Command::RecordSuspense {
        suspense_id: SUSPENSE,
        gateway: Gateway::Paystack,
        amount,
        reference: "ref-unknown-42".into(),
        reason: "no payment with this reference".into(),
    }
}

#[test]
fn suspense_is_recorded_then_assigned_to_a_wallet() {
    let ngn = Currency::NGN;
    let paystack = Actor::Gateway(Gateway::Paystack);
    let mut w = World::new();
    let recorded = w.ok(paystack, record_suspense(money("5000.00", ngn)));
    assert_eq!(types(&recorded), ["SuspenseRecorded"]);
    assert_eq!(w.bal_in(clearing(Gateway::Paystack), ngn), 500_000);
    assert_eq!(w.bal_in(Account::Suspense, ngn), 500_000);
    assert_eq!(w.suspense(SUSPENSE).status, SuspenseStatus::Held);
    // Reported again: recorded once.
    assert!(
        w.ok(paystack, record_suspense(money("5000.00", ngn)))
            .changes
            .is_empty()
    );
    let assign = Command::AssignSuspense {
        suspense_id: SUSPENSE,
        user: SELLER,
    };
    let assigned = w.ok(admin(), assign.clone());
    assert_eq!(types(&assigned), ["SuspenseAssigned"]);
    assert_eq!(w.bal_in(Account::Suspense, ngn), 0);
    assert_eq!(w.bal_in(available(SELLER), ngn), 500_000);
    assert_eq!(w.suspense(SUSPENSE).status, SuspenseStatus::Assigned);
    assert_eq!(w.rejects(admin(), assign), "invalid_transition");
    assert_eq!(
        w.rejects(
            admin(),
            Command::ReturnSuspense {
                suspense_id: SUSPENSE
            }
        ),
        "invalid_transition"
    );
    w.assert_sound();
}

#[test]
fn suspense_is_recorded_then_returned_to_the_sender() {
    let mut w = World::new();
    w.ok(
        Actor::Gateway(Gateway::Paystack),
        record_suspense(usd("12.34")),
    );
    let returned = w.ok(
        admin(),
        Command::ReturnSuspense {
            suspense_id: SUSPENSE,
        },
    );
    assert_eq!(types(&returned), ["SuspenseReturned"]);
    assert_eq!(
        postings(&entry_of(&returned, "SuspenseReturned")),
        sorted(vec![
            (Account::Suspense, Side::Debit, 1_234),
            (clearing(Gateway::Paystack), Side::Credit, 1_234),
        ])
    );
    assert_eq!(w.bal(Account::Suspense), 0);
    assert_eq!(w.bal(clearing(Gateway::Paystack)), 0);
    assert_eq!(w.suspense(SUSPENSE).status, SuspenseStatus::Returned);
    w.assert_sound();
}

#[test]
fn suspense_forbidden_commands() {
    let mut w = World::new();
    let assign = Command::AssignSuspense {
        suspense_id: SUSPENSE,
        user: SELLER,
    };
    let table: Vec<(Actor, Command, &str)> = vec![
        (user(BUYER), record_suspense(usd("1.00")), "not_a_party"),
        (
            Actor::Gateway(Gateway::Paystack),
            record_suspense(usd("0.00")),
            "non_positive_amount",
        ),
        (admin(), assign.clone(), "invalid_transition"), // nothing recorded
    ];
    for (actor, command, code) in table {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    w.ok(
        Actor::Gateway(Gateway::Paystack),
        record_suspense(usd("1.00")),
    );
    let held: Vec<(Actor, Command, &str)> = vec![
        (GATEWAY, assign.clone(), "not_a_party"),
        (Actor::System, assign.clone(), "not_a_party"),
        (user(SELLER), assign, "not_a_party"),
        (
            GATEWAY,
            Command::ReturnSuspense {
                suspense_id: SUSPENSE,
            },
            "not_a_party",
        ),
    ];
    for (actor, command, code) in held {
        assert_eq!(w.rejects(actor, command.clone()), code, "{command:?}");
    }
    assert_eq!(w.bal(Account::Suspense), 100);
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Stored JSON, precision at the edge, idempotency
// ---------------------------------------------------------------------------------------------------------

/// Worlds that between them produce every kind of event.
fn scenario_worlds() -> Vec<World> {
    let mut worlds = Vec::new();

    // Booking, fully settled; plus a declined and an expired quote.
    let mut w = World::new();
    w.confirmed_booking("200.00", fees(1000, 250), "205.00");
    let b = booking_of(QUOTE);
    w.ok(user(SELLER), Command::StartBooking { booking_id: b });
    w.ok(user(SELLER), Command::DeliverBooking { booking_id: b });
    w.ok(user(BUYER), Command::AcceptBooking { booking_id: b });
    worlds.push(w);

    let mut w = World::new();
    w.open_request();
    w.sent_quote(QUOTE, "10.00", FeePolicy::default());
    w.draft_quote(QUOTE_2, "10.00", FeePolicy::default());
    w.ok(user(BUYER), Command::DeclineQuote { quote_id: QUOTE });
    w.ok(user(SELLER), Command::WithdrawQuote { quote_id: QUOTE_2 });
    w.ok(
        user(BUYER),
        Command::CancelServiceRequest {
            request_id: REQUEST,
        },
    );
    worlds.push(w);

    let mut w = World::new();
    w.open_request();
    w.sent_quote(QUOTE, "10.00", FeePolicy::default());
    w.at(day(5));
    w.ok(Actor::System, Command::ExpireQuote { quote_id: QUOTE });
    w.at(day(30));
    w.ok(
        Actor::System,
        Command::ExpireServiceRequest {
            request_id: REQUEST,
        },
    );
    worlds.push(w);

    let mut w = World::new();
    w.confirmed_booking("100.00", FeePolicy::default(), "100.00");
    w.ok(
        user(BUYER),
        Command::OpenDispute {
            dispute_id: DISPUTE,
            project_id: project_of(QUOTE),
            milestone: 1,
            reason: "no show".into(),
            proposed_release: usd("0.00"),
            respond_by: day(7),
        },
    );
    worlds.push(w);

    // Booking cancelled late; booking disputed.
    let mut w = World::new();
    let late = FeePolicy {
        late_cancel_keep_rate: bps(2000),
        ..fees(1000, 250)
    };
    w.confirmed_booking("100.00", late, "102.50");
    w.ok(
        user(BUYER),
        Command::CancelBooking {
            booking_id: booking_of(QUOTE),
        },
    );
    worlds.push(w);

    // Project with changes requested, pending proceeds that mature, refund, cancel, close.
    let mut w = World::new();
    let pending_policy = FeePolicy {
        release_to_pending: true,
        ..fees(1000, 250)
    };
    w.agreed_project(
        PROJECT,
        &[usd("100.00"), usd("50.00"), usd("5.00")],
        pending_policy,
    );
    w.deposit(BUYER, PAY, usd("200.00"));
    w.fund(PROJECT, 1);
    w.fund(PROJECT, 2);
    w.submit(PROJECT, 1);
    w.ok(
        user(BUYER),
        Command::RequestChanges {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    w.submit(PROJECT, 1);
    w.approve(PROJECT, 1);
    w.at(day(60));
    w.ok(
        Actor::System,
        Command::MatureRelease {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    w.ok(
        user(SELLER),
        Command::RefundMilestone {
            project_id: PROJECT,
            milestone: 2,
        },
    );
    w.ok(
        user(BUYER),
        Command::CancelMilestone {
            project_id: PROJECT,
            milestone: 3,
        },
    );
    w.ok(
        admin(),
        Command::CloseProject {
            project_id: PROJECT,
        },
    );
    worlds.push(w);

    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("10.00")], FeePolicy::default());
    w.deposit(BUYER, PAY, usd("10.00"));
    w.fund(PROJECT, 1);
    w.ok(
        user(SELLER),
        Command::CancelProject {
            project_id: PROJECT,
        },
    );
    worlds.push(w);

    // Disputes: contested and resolved; withdrawn; timed out.
    let mut w = disputable();
    w.open_dispute(SELLER, "100.00");
    w.ok(
        user(BUYER),
        Command::ContestDispute {
            dispute_id: DISPUTE,
        },
    );
    w.ok(
        admin(),
        Command::ResolveDispute {
            dispute_id: DISPUTE,
            release: usd("55.55"),
        },
    );
    worlds.push(w);
    let mut w = disputable();
    w.open_dispute(BUYER, "0.00");
    w.ok(
        user(BUYER),
        Command::WithdrawDispute {
            dispute_id: DISPUTE,
        },
    );
    worlds.push(w);
    let mut w = disputable();
    w.open_dispute(BUYER, "0.00");
    w.at(day(10));
    w.ok(
        Actor::System,
        Command::TimeOutDispute {
            dispute_id: DISPUTE,
        },
    );
    worlds.push(w);

    // Payments of every kind.
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Stripe, None),
    );
    w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    w.ok(
        STRIPE,
        Command::FailDeposit {
            payment_id: PAY,
            reason: "declined".into(),
        },
    );
    w.ok(STRIPE, confirm(PAY, usd("100.00"), Some(usd("2.90"))));
    w.ok(
        STRIPE,
        Command::FailDeposit {
            payment_id: PAY,
            reason: "late".into(),
        },
    );
    w.ok(STRIPE, open_chargeback(CHARGEBACK, "10.00", "1.50"));
    w.ok(
        STRIPE,
        Command::WinChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK,
        },
    );
    w.ok(STRIPE, open_chargeback(CHARGEBACK_2, "5.00", "0.00"));
    w.ok(
        STRIPE,
        Command::LoseChargeback {
            payment_id: PAY,
            chargeback_id: CHARGEBACK_2,
            recover_from_user: true,
        },
    );
    w.ok(user(BUYER), card_refund(REFUND, "10.00"));
    w.confirm_transfer(STRIPE, REFUND, "0.10");
    w.ok(user(BUYER), card_refund(REFUND_2, "10.00"));
    w.fail_transfer(STRIPE, REFUND_2);
    w.ok(
        user(BUYER),
        initiate(PAY_2, usd("1.00"), Gateway::Normalized, None),
    );
    w.ok(user(BUYER), Command::CancelDeposit { payment_id: PAY_2 });
    worlds.push(w);

    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "50.00", "1.00");
    w.confirm_transfer(FINCRA, PAYOUT, "0.25");
    w.fail_transfer(FINCRA, PAYOUT);
    w.ok(
        FINCRA,
        Command::ReversePayout {
            payment_id: PAYOUT,
            occurred_at: None,
        },
    );
    w.request_payout(PAYOUT_2, "10.00", "0.00");
    w.fail_transfer(FINCRA, PAYOUT_2);
    w.confirm_transfer(FINCRA, PAYOUT_2, "0.00");
    let third = Uuid::from_u128(0x5003);
    w.request_payout(third, "10.00", "0.00");
    w.ok(user(SELLER), Command::CancelPayout { payment_id: third });
    worlds.push(w);

    // Suspense.
    let mut w = World::new();
    w.ok(
        Actor::Gateway(Gateway::Paystack),
        record_suspense(money("0.670", Currency::KWD)),
    );
    w.ok(
        admin(),
        Command::AssignSuspense {
            suspense_id: SUSPENSE,
            user: SELLER,
        },
    );
    worlds.push(w);
    let mut w = World::new();
    w.ok(
        Actor::Gateway(Gateway::Paystack),
        record_suspense(money("1000", Currency::JPY)),
    );
    w.ok(
        admin(),
        Command::ReturnSuspense {
            suspense_id: SUSPENSE,
        },
    );
    worlds.push(w);

    worlds
}

#[test]
fn every_event_round_trips_through_its_stored_json() {
    let mut seen = std::collections::BTreeSet::new();
    for w in scenario_worlds() {
        w.assert_sound();
        for change in w.ledger.log() {
            let (event_type, payload) = change.event.to_stored();
            assert_eq!(payload["type"], event_type.as_str());
            let text = serde_json::to_string(&payload).unwrap();
            let reread: serde_json::Value = serde_json::from_str(&text).unwrap();
            let decoded = Event::from_stored(&change.stream, &event_type, SCHEMA_VERSION, reread)
                .unwrap_or_else(|e| panic!("{event_type}: {e}"));
            assert_eq!(decoded, change.event, "{event_type}");
            seen.insert(event_type);
        }
    }
    // The scenarios cover every event type of every aggregate.
    let expected = [
        "ServiceRequestOpened",
        "ServiceRequestBooked",
        "ServiceRequestCancelled",
        "ServiceRequestExpired",
        "QuoteExpired",
        "BookingDisputed",
        "QuoteDrafted",
        "QuoteSent",
        "QuoteAccepted",
        "QuoteDeclined",
        "QuoteWithdrawn",
        "BookingOpened",
        "BookingConfirmed",
        "BookingStarted",
        "BookingDelivered",
        "BookingAccepted",
        "BookingSettled",
        "BookingCancelled",
        "ProjectCreated",
        "ProjectSubmittedForAgreement",
        "ProjectPartyAgreed",
        "ProjectAgreed",
        "MilestoneFunded",
        "MilestoneSubmitted",
        "MilestoneChangesRequested",
        "MilestoneApproved",
        "MilestoneReleased",
        "MilestoneRefunded",
        "MilestoneDisputed",
        "MilestoneDisputeWithdrawn",
        "MilestoneResolved",
        "MilestoneCancelled",
        "ProjectCompleted",
        "ProjectCancelled",
        "ProjectClosed",
        "DepositInitiated",
        "PaymentProcessing",
        "DepositSucceeded",
        "DepositAttemptFailed",
        "DepositCancelled",
        "PayoutRequested",
        "PayoutCompleted",
        "PayoutFailed",
        "PayoutCancelled",
        "PayoutReversed",
        "CardRefundRequested",
        "CardRefundProcessed",
        "CardRefundFailed",
        "SuccessAfterFailure",
        "LateFailureIgnored",
        "ChargebackOpened",
        "ChargebackWon",
        "ChargebackLost",
        "Credited",
        "Debited",
        "PendingMatured",
        "DisputeOpened",
        "DisputeResponseRequested",
        "DisputeContested",
        "DisputeSettled",
        "DisputeWithdrawn",
        "SuspenseRecorded",
        "SuspenseAssigned",
        "SuspenseReturned",
    ];
    let missing: Vec<_> = expected.iter().filter(|t| !seen.contains(**t)).collect();
    assert!(missing.is_empty(), "not covered: {missing:?}");
}

/// Every JSON number in a payload, with the key it sits under.
fn numbers(value: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Number(_) => out.push(key.to_string()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| numbers(v, key, out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| numbers(v, k, out)),
        _ => {}
    }
}

#[test]
fn stored_amounts_are_exact_decimal_strings() {
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], fees(1000, 250));
    w.deposit(BUYER, PAY, usd("102.50"));
    let funded = w.fund(PROJECT, 1);
    let (_, payload) = funded.changes[0].event.to_stored();
    assert_eq!(payload["type"], "MilestoneFunded");
    assert_eq!(
        payload["amount"],
        serde_json::json!({"amount": "100.00", "currency": "USD"})
    );
    assert_eq!(
        payload["buyer_fee"],
        serde_json::json!({"amount": "2.50", "currency": "USD"})
    );
    let posted: Vec<(String, String)> = payload["entry"]["postings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["side"].as_str().unwrap().to_string(),
                p["amount"]["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        posted,
        [
            ("debit".to_string(), "102.50".to_string()),
            ("credit".to_string(), "100.00".to_string()),
            ("credit".to_string(), "2.50".to_string()),
        ]
    );
    // No amount anywhere is a JSON number: the only numbers are milestone numbers and day counts.
    for w in scenario_worlds() {
        for change in w.ledger.log() {
            let (event_type, payload) = change.event.to_stored();
            let mut found = Vec::new();
            numbers(&payload, "", &mut found);
            found.retain(|k| {
                ![
                    "milestone",
                    "auto_approve_days",
                    "auto_accept_days",
                    "auto_accept_hours",
                ]
                .contains(&k.as_str())
            });
            assert!(found.is_empty(), "{event_type} has numbers under {found:?}");
        }
    }
}

#[test]
fn a_future_event_version_is_refused() {
    let w = disputable();
    let change = &w.ledger.log()[0];
    let (event_type, payload) = change.event.to_stored();
    let err = Event::from_stored(
        &change.stream,
        &event_type,
        SCHEMA_VERSION + 1,
        payload.clone(),
    );
    assert!(err.is_err());
    let wrong_stream = Event::from_stored(&StreamId::Payment(PAY), &event_type, 1, payload);
    assert!(
        wrong_stream.is_err(),
        "a project event is not a payment event"
    );
}

#[test]
fn commands_carrying_more_digits_than_the_currency_allows_are_refused() {
    let command = |amount: &str, currency: &str| {
        format!(
            r#"{{"type": "confirm_deposit", "payment_id": "{PAY}",
                "amount": {{"amount": "{amount}", "currency": "{currency}"}}}}"#
        )
    };
    let err = serde_json::from_str::<Command>(&command("10.005", "USD")).unwrap_err();
    assert!(err.to_string().contains("more decimal places"), "{err}");
    assert!(serde_json::from_str::<Command>(&command("1000.50", "JPY")).is_err());
    assert!(serde_json::from_str::<Command>(&command("0.0335", "KWD")).is_err());
    assert!(serde_json::from_str::<Command>(&command("10.00", "XYZ")).is_err());
    let parsed = serde_json::from_str::<Command>(&command("1000.00", "JPY")).unwrap();
    assert_eq!(
        parsed,
        Command::ConfirmDeposit {
            payment_id: PAY,
            amount: money("1000", Currency::JPY),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        }
    );
    // The same rule at the typed edge, with its stable code.
    let rejection = Rejection::from(Money::parse("10.005", USD).unwrap_err());
    assert_eq!(rejection.code(), "amount_precision");
    let rejection = Rejection::from(Money::parse("1000.50", Currency::JPY).unwrap_err());
    assert_eq!(rejection.code(), "amount_precision");
}

#[test]
fn the_same_command_id_is_applied_once() {
    let mut w = World::new();
    w.agreed_project(PROJECT, &[usd("100.00")], FeePolicy::default());
    w.ok(
        user(BUYER),
        initiate(PAY, usd("100.00"), Gateway::Normalized, None),
    );
    let env = w.envelope(GATEWAY, confirm(PAY, usd("100.00"), None));
    let first = w.ledger.execute(&env).unwrap();
    let log = w.ledger.log().len();
    let second = w.ledger.execute(&env).unwrap();
    assert_eq!(first.changes, second.changes);
    assert_eq!(w.ledger.log().len(), log);
    assert_eq!(w.bal(available(BUYER)), 10_000);
    // A rejected command id stays rejected, even once the state would allow it.
    let fund = w.envelope(
        user(BUYER),
        Command::FundMilestone {
            project_id: PROJECT,
            milestone: 1,
        },
    );
    let mut early = w.ledger.clone();
    let mut fund_early = fund.clone();
    fund_early.command = Command::FundMilestone {
        project_id: PROJECT,
        milestone: 9,
    };
    assert_eq!(
        early.execute(&fund_early).unwrap_err().code(),
        "unknown_milestone"
    );
    assert_eq!(
        early.execute(&fund_early).unwrap_err().code(),
        "unknown_milestone"
    );
    w.ledger.execute(&fund).unwrap();
    w.ledger.execute(&fund).unwrap();
    assert_eq!(w.bal(escrow(PROJECT, 1)), 10_000);
    // Event ids derive from the command id: a replay of the log is identical.
    let replayed = MemoryLedger::replay(w.ledger.log());
    assert_eq!(replayed.log(), w.ledger.log());
    // Loading the (never written) ledger policy leaves an initial state behind; a replay has only written ones.
    assert_eq!(replayed.states(), &w.ledger.written_states());
    w.assert_sound();
}

#[test]
fn a_deposit_attempt_after_a_failed_one_is_processing_again_and_may_succeed() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("50.00"), Gateway::Stripe, None),
    );
    w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    w.ok(
        STRIPE,
        Command::FailDeposit {
            payment_id: PAY,
            reason: "card declined".into(),
        },
    );
    w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    match w.state(StreamId::Payment(PAY)) {
        AggState::Payment(p) => assert_eq!(p.status, PaymentStatus::Processing),
        other => panic!("{other:?}"),
    }
    w.ok(STRIPE, confirm(PAY, usd("50.00"), None));
    assert_eq!(w.bal(available(BUYER)), 5_000);
    w.assert_sound();
}

#[test]
fn a_processing_notice_arriving_after_the_outcome_changes_nothing() {
    let mut w = World::new();
    w.ok(
        user(BUYER),
        initiate(PAY, usd("20.00"), Gateway::Stripe, None),
    );
    w.ok(STRIPE, confirm(PAY, usd("20.00"), None));
    let log_before = w.ledger.log().len();
    let late = w.ok(STRIPE, Command::MarkPaymentProcessing { payment_id: PAY });
    assert!(
        late.changes.is_empty(),
        "a stale notice appended {:?}",
        types(&late)
    );
    assert_eq!(w.ledger.log().len(), log_before);
    assert_eq!(w.payment(PAY).status, PaymentStatus::Completed);
    assert_eq!(w.bal(available(BUYER)), 2_000);
    w.assert_sound();
}

/// Issue 18: a booking's process steps follow its milestone, whoever sends them: settling a booking whose
/// escrow is held (which would stop its auto-acceptance and leave the escrow without a clock), marking it
/// disputed with no dispute, and applying a cancellation with another keep rate than the one it recorded.
#[test]
fn booking_process_steps_cannot_run_ahead_of_the_milestone() {
    let mut w = World::new();
    w.confirmed_booking("100.00", fees(1000, 0), "100.00");
    let booking = booking_of(QUOTE);
    for command in [
        Command::SettleBooking {
            booking_id: booking,
        },
        Command::MarkBookingDisputed {
            booking_id: booking,
        },
    ] {
        assert_eq!(
            w.rejects(Actor::System, command.clone()),
            "invalid_transition",
            "{command:?}"
        );
    }
    w.ok(
        user(BUYER),
        Command::CancelBooking {
            booking_id: booking,
        },
    );
    let again = Command::ApplyBookingCancellation {
        booking_id: booking,
        keep_rate: bps(10_000),
    };
    assert_ne!(w.rejects(Actor::System, again), "");
    assert_eq!(
        w.bal(available(BUYER)),
        10_000,
        "the client got everything back"
    );
    w.assert_sound();
}

// ---------------------------------------------------------------------------------------------------------
// Gateways as they really deliver (issue 20): outcomes the gateways report in an order the happy path skips.
// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_payout_reversed_before_completion_ends_reversed_and_its_money_goes_back_to_the_wallet() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "40.00", "1.00");
    assert_eq!(w.bal(available(SELLER)), 5_900);
    let reversed = w.ok(
        FINCRA,
        Command::ReversePayout {
            payment_id: PAYOUT,
            occurred_at: None,
        },
    );
    assert_eq!(types(&reversed), ["PayoutReturned"]);
    assert_eq!(
        w.bal(available(SELLER)),
        10_000,
        "amount and payout fee back"
    );
    assert_eq!(w.bal(Account::PayoutsInTransit(PAYOUT)), 0);
    assert_eq!(w.payment(PAYOUT).status, PaymentStatus::Reversed);
    // The success whose notice crossed the reversal's changes nothing: out and back, nothing owed.
    assert!(
        w.confirm_transfer(FINCRA, PAYOUT, "0.00")
            .changes
            .is_empty(),
        "no receivable from a payout that came back"
    );
    assert_eq!(w.bal(Account::Receivable { user: SELLER }), 0);
    // A second reversal returns nothing more.
    let late = w.ok(
        FINCRA,
        Command::ReversePayout {
            payment_id: PAYOUT,
            occurred_at: None,
        },
    );
    assert!(late.changes.is_empty());
    w.assert_sound();
}

#[test]
fn a_chargeback_outcome_after_the_opposite_one_is_an_anomaly_and_moves_nothing() {
    for (first, second) in [("lost", "won"), ("won", "lost")] {
        let mut w = World::new();
        stripe_deposit(&mut w, BUYER, "100.00");
        w.ok(STRIPE, open_chargeback(CHARGEBACK, "100.00", "0.00"));
        let outcome = |which: &str| match which {
            "won" => Command::WinChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
            },
            _ => Command::LoseChargeback {
                payment_id: PAY,
                chargeback_id: CHARGEBACK,
                recover_from_user: true,
            },
        };
        w.ok(STRIPE, outcome(first));
        let before = (
            w.bal(available(BUYER)),
            w.bal(clearing(Gateway::Stripe)),
            w.bal(Account::Chargeback(CHARGEBACK)),
        );
        let conflicting = w.ok(STRIPE, outcome(second));
        assert_eq!(
            types(&conflicting),
            ["ChargebackOutcomeConflict"],
            "{second} after {first}"
        );
        assert_eq!(
            (
                w.bal(available(BUYER)),
                w.bal(clearing(Gateway::Stripe)),
                w.bal(Account::Chargeback(CHARGEBACK)),
            ),
            before,
            "the first outcome's money stands"
        );
        // The same outcome again is still a plain no-op.
        assert!(w.ok(STRIPE, outcome(first)).changes.is_empty());
        w.assert_sound();
    }
}

#[test]
fn a_fee_held_in_suspense_is_debited_there_not_to_fees() {
    let mut w = World::new();
    w.deposit(SELLER, PAY, usd("100.00"));
    w.request_payout(PAYOUT, "40.00", "0.00");
    let done = w.ok(
        FINCRA,
        Command::ConfirmTransfer {
            payment_id: PAYOUT,
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: Some(usd("0.88")),
        },
    );
    assert_eq!(
        postings(&entry_of(&done, "PayoutCompleted")),
        sorted(vec![
            (Account::PayoutsInTransit(PAYOUT), Side::Debit, 4_000),
            (Account::Suspense, Side::Debit, 88),
            (clearing(Gateway::Fincra), Side::Credit, 4_088),
        ])
    );
    assert_eq!(w.bal(Account::GatewayFees), 0);
    w.assert_sound();
}
