//! Property test of the deadlines (issues 11 and 18): random histories of projects (submitted, approved,
//! changes requested, disputed with a stated `respond_by`, contested, withdrawn by the opener, timed out),
//! bookings (delivered, auto-accepted; early auto-approvals refused), quotes (sent, accepted, withdrawn),
//! service requests and unpaid deposits (marked processing, failed), deadline policy overrides, with random
//! clock advances, clocks that jump backwards, and timer runs. The timer under test fires `deadlines::Book::due(now)` through
//! each deadline's own envelope; a reference model written here from the domain's rules alone (submitted
//! at + 14 days, released + 7 days, opened + min(respond_by, 14 days), valid_until, opened + 30 days,
//! initiated + 72 hours, paused while processing and restarted at max(expiry, failure); delivered + 72
//! hours; a withdrawn dispute restarts the approval clock; a `respond_by` under 48 hours is refused) says
//! what must fire. After every timer run the fired set equals the model's due
//! set; nothing fires twice (a deadline's command replayed appends nothing); after every step the trial
//! balance is zero per currency, no constrained account is below zero, and the user commands the model
//! expects to be accepted are, and only those.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::ledger_policy::DeadlinePolicy;
use ledger_core::aggregates::project::FeeTerms;
use ledger_core::deadlines::Book;
use ledger_core::ids::derived_id;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money};
use proptest::prelude::*;
use uuid::Uuid;

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);

#[derive(Clone, Debug)]
enum Op {
    NewProject {
        pending: bool,
    },
    Approve(usize),
    RequestChanges(usize),
    Resubmit(usize),
    Dispute {
        index: usize,
        respond_hours: i64,
    },
    Contest(usize),
    Withdraw(usize),
    NewBooking,
    EarlyAutoApprove(usize),
    ProcessDeposit(usize),
    FailDeposit(usize),
    SetPolicy {
        auto_approve_days: u32,
        dispute_hours: u32,
    },
    NewQuote {
        valid_hours: i64,
    },
    AcceptQuote(usize),
    WithdrawQuote(usize),
    NewDeposit,
    ConfirmDeposit(usize),
    Advance {
        hours: i64,
    },
    RunTimers,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        2 => any::<bool>().prop_map(|pending| Op::NewProject { pending }),
        1 => (0..8usize).prop_map(Op::Approve),
        1 => (0..8usize).prop_map(Op::RequestChanges),
        1 => (0..8usize).prop_map(Op::Resubmit),
        2 => (0..8usize, 1..800i64).prop_map(|(index, respond_hours)| Op::Dispute { index, respond_hours }),
        1 => (0..8usize).prop_map(Op::Contest),
        1 => (0..8usize).prop_map(Op::Withdraw),
        1 => Just(Op::NewBooking),
        1 => (0..8usize).prop_map(Op::EarlyAutoApprove),
        1 => (0..8usize).prop_map(Op::ProcessDeposit),
        1 => (0..8usize).prop_map(Op::FailDeposit),
        1 => (1..30u32, 1..600u32).prop_map(|(auto_approve_days, dispute_hours)| Op::SetPolicy { auto_approve_days, dispute_hours }),
        2 => (1..400i64).prop_map(|valid_hours| Op::NewQuote { valid_hours }),
        1 => (0..8usize).prop_map(Op::AcceptQuote),
        1 => (0..8usize).prop_map(Op::WithdrawQuote),
        1 => Just(Op::NewDeposit),
        1 => (0..8usize).prop_map(Op::ConfirmDeposit),
        3 => (1..500i64).prop_map(|hours| Op::Advance { hours }),
        // The clock jumps backwards: commands carry an earlier time than the last ones.
        1 => (-300..0i64).prop_map(|hours| Op::Advance { hours }),
        3 => Just(Op::RunTimers),
    ];
    proptest::collection::vec(op, 1..60)
}

// ------------------------------------------------------------------------------------------------------
// The reference model: plain records and the domain's durations, nothing from the engine.
// ------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Milestone {
    Submitted(DateTime<Utc>),
    ChangesRequested,
    /// Disputed by the buyer: times out at `due` while awaiting an answer (`None` once contested: a mediator
    /// decides, no clock); withdrawn, it goes back to submitted (a fresh clock) or changes requested.
    Disputed {
        due: Option<DateTime<Utc>>,
        was_submitted: bool,
    },
    Settled,
}

#[derive(Clone, Debug)]
struct ModelProject {
    id: Uuid,
    dispute: Uuid,
    /// Auto-approval days stamped when the project was created (the policy's default then).
    approve_days: i64,
    pending: bool,
    milestone: Milestone,
    /// When pending proceeds mature (once released to pending, until they do).
    matures: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum QuoteModel {
    Sent(DateTime<Utc>),
    Closed,
}

/// A deposit's expiry: running (due), paused while an attempt processes, or stopped (paid or expired).
#[derive(Clone, Copy, PartialEq, Debug)]
enum DepositClock {
    Running(DateTime<Utc>),
    Paused,
    Stopped,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum DepositStatus {
    Pending,
    Processing,
    Failed,
    Done,
}

#[derive(Clone, Copy, Debug)]
struct ModelDeposit {
    id: Uuid,
    /// Initiated + 72 hours.
    expiry: DateTime<Utc>,
    status: DepositStatus,
    clock: DepositClock,
}

/// The deadline policy as the model knows it: days to auto-approve, hours a dispute may wait at most.
#[derive(Clone, Copy, Debug)]
struct ModelPolicy {
    approve_days: i64,
    dispute_hours: i64,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            approve_days: 14,
            dispute_hours: 14 * 24,
        }
    }
}

#[derive(Default)]
struct Model {
    policy: ModelPolicy,
    projects: Vec<ModelProject>,
    /// Per booking: its id, its project and when it auto-accepts (until it does).
    bookings: Vec<(Uuid, Uuid, Option<DateTime<Utc>>)>,
    /// Per quote: its request, and whether the request is still open (and since when).
    quotes: Vec<(Uuid, QuoteModel, Uuid)>,
    requests: BTreeMap<Uuid, Option<DateTime<Utc>>>,
    deposits: Vec<ModelDeposit>,
}

type Due = (&'static str, Uuid, DateTime<Utc>);

impl Model {
    /// Everything due at `now`, fired in due order: firings that start clocks already due fire too.
    fn fire_due(&mut self, now: DateTime<Utc>) -> BTreeSet<Due> {
        let mut fired = BTreeSet::new();
        loop {
            let mut next: Vec<Due> = Vec::new();
            for p in &self.projects {
                match p.milestone {
                    Milestone::Submitted(at) if at + Duration::days(p.approve_days) <= now => next
                        .push((
                            "auto_approve_milestone",
                            p.id,
                            at + Duration::days(p.approve_days),
                        )),
                    Milestone::Disputed { due: Some(due), .. } if due <= now => {
                        next.push(("time_out_dispute", p.dispute, due))
                    }
                    _ => {}
                }
                if let Some(due) = p.matures.filter(|due| *due <= now) {
                    next.push(("mature_release", p.id, due));
                }
            }
            for (q, state, _) in &self.quotes {
                if let QuoteModel::Sent(until) = state
                    && *until <= now
                {
                    next.push(("expire_quote", *q, *until));
                }
            }
            for (r, opened) in &self.requests {
                if let Some(due) = opened.map(|o| o + Duration::days(30)).filter(|d| *d <= now) {
                    next.push(("expire_service_request", *r, due));
                }
            }
            for d in &self.deposits {
                if let DepositClock::Running(due) = d.clock
                    && due <= now
                {
                    next.push(("expire_deposit", d.id, due));
                }
            }
            for (b, _, due) in &self.bookings {
                if let Some(due) = due.filter(|d| *d <= now) {
                    next.push(("auto_accept_booking", *b, due));
                }
            }
            if next.is_empty() {
                return fired;
            }
            for item in next {
                self.apply_firing(item);
                fired.insert(item);
            }
        }
    }

    fn apply_firing(&mut self, (kind, target, due): Due) {
        match kind {
            "auto_approve_milestone" | "time_out_dispute" => {
                let p = self
                    .projects
                    .iter_mut()
                    .find(|p| p.id == target || p.dispute == target)
                    .unwrap();
                p.milestone = Milestone::Settled;
                // A release to pending matures 7 days after it (a time-out releases what was proposed).
                p.matures = p.pending.then(|| due + Duration::days(7));
            }
            "mature_release" => {
                let p = self.projects.iter_mut().find(|p| p.id == target).unwrap();
                p.matures = None;
            }
            "expire_quote" => {
                let q = self.quotes.iter_mut().find(|q| q.0 == target).unwrap();
                q.1 = QuoteModel::Closed;
            }
            "expire_service_request" => {
                self.requests.insert(target, None);
            }
            "auto_accept_booking" => {
                let b = self.bookings.iter_mut().find(|b| b.0 == target).unwrap();
                b.2 = None;
            }
            _ => {
                let d = self.deposits.iter_mut().find(|d| d.id == target).unwrap();
                d.clock = DepositClock::Stopped;
                d.status = DepositStatus::Done;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------
// Driving the engine.
// ------------------------------------------------------------------------------------------------------

struct Run {
    ledger: MemoryLedger,
    book: Book,
    fed: usize,
    now: DateTime<Utc>,
    next: u128,
    fired_ids: BTreeSet<Uuid>,
    fired_now: Vec<ledger_core::deadlines::Deadline>,
}

fn usd(text: &str) -> Money {
    Money::parse(text, USD).unwrap()
}

impl Run {
    fn id(&mut self) -> Uuid {
        self.next += 1;
        Uuid::from_u128(0x1000_0000 + self.next)
    }

    fn exec(&mut self, actor: Actor, command: Command) -> bool {
        let env = CommandEnvelope {
            command_id: self.id(),
            actor,
            at: self.now,
            command,
        };
        let accepted = self.ledger.execute(&env).is_ok();
        self.feed();
        accepted
    }

    fn must(&mut self, actor: Actor, command: Command) {
        let shown = format!("{command:?}");
        assert!(self.exec(actor, command), "{shown} refused");
    }

    fn feed(&mut self) {
        for change in &self.ledger.log()[self.fed..] {
            self.book.apply(change);
        }
        self.fed = self.ledger.log().len();
    }

    /// The timer: everything the book says is due, in due order, each by its own envelope; repeated until
    /// nothing due is left. Returns what fired (accepted).
    fn timers(&mut self) -> BTreeSet<Due> {
        let mut fired = BTreeSet::new();
        let mut tried = BTreeSet::new();
        loop {
            let due: Vec<_> = self
                .book
                .due(self.now)
                .into_iter()
                .filter(|d| !tried.contains(&d.id))
                .collect();
            if due.is_empty() {
                return fired;
            }
            for d in due {
                tried.insert(d.id);
                let outcome = self.ledger.execute(&d.envelope());
                self.feed();
                if outcome.is_ok() {
                    assert!(self.fired_ids.insert(d.id), "{d:?} fired twice");
                    self.fired_now.push(d.clone());
                    let target = match d.command() {
                        Command::AutoApproveMilestone { project_id, .. }
                        | Command::MatureRelease { project_id, .. } => project_id,
                        Command::AutoAcceptBooking { booking_id } => booking_id,
                        Command::TimeOutDispute { dispute_id } => dispute_id,
                        Command::ExpireQuote { quote_id } => quote_id,
                        Command::ExpireServiceRequest { request_id } => request_id,
                        Command::ExpireDeposit { payment_id } => payment_id,
                        other => panic!("unexpected {other:?}"),
                    };
                    fired.insert((d.kind.name(), target, d.due_at));
                } else {
                    // A clock that runs must be able to fire: a refused firing is a clock that should
                    // have stopped (issue 18: "clocks that fire on nothing").
                    panic!("{d:?} was refused: {outcome:?}");
                }
            }
        }
    }

    fn assert_sound(&self) {
        let balances = self.ledger.balances();
        for (currency, imbalance) in balances.imbalance_by_currency() {
            assert_eq!(imbalance, 0, "trial balance of {currency}");
        }
        assert!(balances.negative_constrained().is_empty());
    }
}

fn new_project(run: &mut Run, model: &mut Model, pending: bool) {
    if model.projects.len() >= 8 {
        return;
    }
    let (id, deposit, dispute) = (run.id(), run.id(), run.id());
    let terms = FeeTerms {
        release_to_pending: pending,
        ..FeeTerms::default()
    };
    let create = Command::CreateProject {
        project_id: id,
        buyer: BUYER,
        seller: SELLER,
        currency: USD,
        milestones: vec![usd("100.00")],
        fees: terms,
    };
    run.must(Actor::User(BUYER), create);
    let project_id = id;
    run.must(
        Actor::User(BUYER),
        Command::SubmitProjectForAgreement { project_id },
    );
    run.must(Actor::User(SELLER), Command::AgreeToProject { project_id });
    let initiate = Command::InitiateDeposit {
        payment_id: deposit,
        amount: usd("100.00"),
        gateway: Gateway::Stripe,
        fund: None,
    };
    run.must(Actor::User(BUYER), initiate);
    let confirm = Command::ConfirmDeposit {
        payment_id: deposit,
        amount: usd("100.00"),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    run.must(Actor::Gateway(Gateway::Stripe), confirm);
    let m = 1;
    run.must(
        Actor::User(BUYER),
        Command::FundMilestone {
            project_id,
            milestone: m,
        },
    );
    run.must(
        Actor::User(SELLER),
        Command::SubmitMilestone {
            project_id,
            milestone: m,
        },
    );
    model.projects.push(ModelProject {
        id,
        dispute,
        approve_days: model.policy.approve_days,
        pending,
        milestone: Milestone::Submitted(run.now),
        matures: None,
    });
}

fn project_op(run: &mut Run, model: &mut Model, op: &Op) {
    let index = match op {
        Op::Approve(i)
        | Op::RequestChanges(i)
        | Op::Resubmit(i)
        | Op::Dispute { index: i, .. }
        | Op::Contest(i)
        | Op::Withdraw(i) => *i,
        _ => unreachable!(),
    };
    // Indices wrap around what exists, so most operations act on something.
    let Some(index) = index.checked_rem(model.projects.len()) else {
        return;
    };
    let p = model.projects[index].clone();
    let (project_id, milestone, now) = (p.id, 1, run.now);
    let submitted = matches!(p.milestone, Milestone::Submitted(_));
    let (actor, command, expected, after) = match op {
        Op::Approve(_) => (
            BUYER,
            Command::ApproveMilestone {
                project_id,
                milestone,
            },
            submitted,
            Milestone::Settled,
        ),
        Op::RequestChanges(_) => (
            BUYER,
            Command::RequestChanges {
                project_id,
                milestone,
            },
            submitted,
            Milestone::ChangesRequested,
        ),
        Op::Resubmit(_) => (
            SELLER,
            Command::SubmitMilestone {
                project_id,
                milestone,
            },
            p.milestone == Milestone::ChangesRequested,
            Milestone::Submitted(now),
        ),
        Op::Dispute { respond_hours, .. } => {
            // The least time to answer is 48 hours (never more than the most a dispute may wait); the
            // clock runs to `respond_by`, at most the policy's hours after the opening.
            let window = 48.min(model.policy.dispute_hours);
            let due = now + Duration::hours((*respond_hours).min(model.policy.dispute_hours));
            (
                BUYER,
                Command::OpenDispute {
                    dispute_id: p.dispute,
                    project_id,
                    milestone,
                    reason: "late".into(),
                    proposed_release: usd("50.00"),
                    respond_by: now + Duration::hours(*respond_hours),
                },
                // One dispute per project in this model (its id is fixed).
                matches!(
                    p.milestone,
                    Milestone::Submitted(_) | Milestone::ChangesRequested
                ) && !model_dispute_used(&p)
                    && *respond_hours >= window,
                Milestone::Disputed {
                    due: Some(due),
                    was_submitted: submitted,
                },
            )
        }
        Op::Withdraw(_) => {
            let (disputed, was_submitted) = match p.milestone {
                Milestone::Disputed { was_submitted, .. } => (true, was_submitted),
                _ => (false, false),
            };
            (
                BUYER,
                Command::WithdrawDispute {
                    dispute_id: p.dispute,
                },
                disputed,
                // Back under review: a submitted milestone's approval clock restarts now.
                if was_submitted {
                    Milestone::Submitted(now)
                } else {
                    Milestone::ChangesRequested
                },
            )
        }
        _ => {
            let (awaiting, was_submitted) = match p.milestone {
                Milestone::Disputed {
                    due: Some(_),
                    was_submitted,
                } => (true, was_submitted),
                _ => (false, false),
            };
            (
                SELLER,
                Command::ContestDispute {
                    dispute_id: p.dispute,
                },
                awaiting,
                // Mediation: an operator decides, no clock runs.
                Milestone::Disputed {
                    due: None,
                    was_submitted,
                },
            )
        }
    };
    let accepted = run.exec(Actor::User(actor), command);
    assert_eq!(accepted, expected, "{op:?} on {p:?} at {now}");
    if accepted {
        let p = &mut model.projects[index];
        if matches!(op, Op::Approve(_)) && p.pending {
            p.matures = Some(now + Duration::days(7));
        }
        if matches!(op, Op::Dispute { .. }) {
            DISPUTED.with(|d| d.borrow_mut().insert(p.id));
        }
        p.milestone = after;
    }
}

/// A booking: request, quote, acceptance, payment and delivery now; it auto-accepts 72 hours on.
fn new_booking(run: &mut Run, model: &mut Model) {
    if model.bookings.len() >= 8 {
        return;
    }
    let (request_id, quote_id, deposit) = (run.id(), run.id(), run.id());
    let open = Command::OpenServiceRequest {
        request_id,
        currency: USD,
        title: "fix the sink".into(),
        expires_at: None,
    };
    run.must(Actor::User(BUYER), open);
    let create = Command::CreateQuote {
        quote_id,
        request_id,
        amount: usd("20.00"),
        valid_until: run.now + Duration::days(5),
        fees: FeeTerms::default(),
    };
    run.must(Actor::User(SELLER), create);
    run.must(Actor::User(SELLER), Command::SendQuote { quote_id });
    run.must(Actor::User(BUYER), Command::AcceptQuote { quote_id });
    let (booking_id, project_id) = (
        derived_id(quote_id, "booking"),
        derived_id(quote_id, "project"),
    );
    let initiate = Command::InitiateDeposit {
        payment_id: deposit,
        amount: usd("20.00"),
        gateway: Gateway::Stripe,
        fund: None,
    };
    run.must(Actor::User(BUYER), initiate);
    let confirm = Command::ConfirmDeposit {
        payment_id: deposit,
        amount: usd("20.00"),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    run.must(Actor::Gateway(Gateway::Stripe), confirm);
    let fund = Command::FundMilestone {
        project_id,
        milestone: 1,
    };
    run.must(Actor::User(BUYER), fund);
    run.must(Actor::User(SELLER), Command::DeliverBooking { booking_id });
    model
        .bookings
        .push((booking_id, project_id, Some(run.now + Duration::hours(72))));
}

/// The system (or anyone) auto-approving a booking's milestone itself: never accepted, before or after
/// the booking's own auto-acceptance.
fn early_auto_approve(run: &mut Run, model: &Model, index: usize) {
    let Some(index) = index.checked_rem(model.bookings.len()) else {
        return;
    };
    let (_, project_id, _) = model.bookings[index];
    let auto = Command::AutoApproveMilestone {
        project_id,
        milestone: 1,
    };
    assert!(
        !run.exec(Actor::System, auto),
        "a booking auto-approved by hand"
    );
}

fn set_policy(run: &mut Run, model: &mut Model, auto_approve_days: u32, dispute_hours: u32) {
    let mut deadlines = DeadlinePolicy::default();
    deadlines.auto_approve_days.default = auto_approve_days;
    deadlines.dispute_response_hours.default = dispute_hours;
    run.must(
        Actor::Admin(Uuid::from_u128(0xAD)),
        Command::SetDeadlinePolicy { deadlines },
    );
    model.policy = ModelPolicy {
        approve_days: i64::from(auto_approve_days),
        dispute_hours: i64::from(dispute_hours),
    };
}

thread_local! {
    static DISPUTED: std::cell::RefCell<BTreeSet<Uuid>> = const { std::cell::RefCell::new(BTreeSet::new()) };
}

fn model_dispute_used(p: &ModelProject) -> bool {
    DISPUTED.with(|d| d.borrow().contains(&p.id))
}

fn quote_op(run: &mut Run, model: &mut Model, op: &Op) {
    match op {
        Op::NewQuote { valid_hours } => {
            if model.quotes.len() >= 8 {
                return;
            }
            let (request_id, quote_id) = (run.id(), run.id());
            let open = Command::OpenServiceRequest {
                request_id,
                currency: USD,
                title: "job".into(),
                expires_at: None,
            };
            run.must(Actor::User(BUYER), open);
            let valid_until = run.now + Duration::hours(*valid_hours);
            let create = Command::CreateQuote {
                quote_id,
                request_id,
                amount: usd("20.00"),
                valid_until,
                fees: FeeTerms::default(),
            };
            run.must(Actor::User(SELLER), create);
            run.must(Actor::User(SELLER), Command::SendQuote { quote_id });
            model.requests.insert(request_id, Some(run.now));
            model
                .quotes
                .push((quote_id, QuoteModel::Sent(valid_until), request_id));
        }
        Op::AcceptQuote(i) | Op::WithdrawQuote(i) => {
            let Some(i) = i.checked_rem(model.quotes.len()) else {
                return;
            };
            let (quote_id, state, request) = model.quotes[i];
            let sent = matches!(state, QuoteModel::Sent(until) if run.now < until);
            let request_open = model.requests.get(&request).copied().flatten().is_some();
            let (actor, command, expected) = if matches!(op, Op::AcceptQuote(_)) {
                (
                    BUYER,
                    Command::AcceptQuote { quote_id },
                    sent && request_open,
                )
            } else {
                let withdrawable = matches!(state, QuoteModel::Sent(_));
                (SELLER, Command::WithdrawQuote { quote_id }, withdrawable)
            };
            let accepted = run.exec(Actor::User(actor), command);
            assert_eq!(accepted, expected, "{op:?}");
            if accepted {
                model.quotes[i].1 = QuoteModel::Closed;
                if matches!(op, Op::AcceptQuote(_)) {
                    model.requests.insert(request, None);
                }
            }
        }
        _ => unreachable!(),
    }
}

fn deposit_op(run: &mut Run, model: &mut Model, op: &Op) {
    if let Op::NewDeposit = op {
        if model.deposits.len() >= 8 {
            return;
        }
        let payment_id = run.id();
        let initiate = Command::InitiateDeposit {
            payment_id,
            amount: usd("7.00"),
            gateway: Gateway::Stripe,
            fund: None,
        };
        run.must(Actor::User(BUYER), initiate);
        let expiry = run.now + Duration::hours(72);
        model.deposits.push(ModelDeposit {
            id: payment_id,
            expiry,
            status: DepositStatus::Pending,
            clock: DepositClock::Running(expiry),
        });
        return;
    }
    let (Op::ConfirmDeposit(i) | Op::ProcessDeposit(i) | Op::FailDeposit(i)) = op else {
        unreachable!()
    };
    let Some(i) = i.checked_rem(model.deposits.len()) else {
        return;
    };
    let d = model.deposits[i];
    let payment_id = d.id;
    let now = run.now;
    let (actor, command, next) = match op {
        // Paid: its clock stops (a success after the expiry is the payment decider's business).
        Op::ConfirmDeposit(_) => (
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id,
                amount: usd("7.00"),
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
            (DepositStatus::Done, DepositClock::Stopped),
        ),
        // Processing: the expiry waits for the attempt's outcome.
        Op::ProcessDeposit(_) => (
            Actor::Admin(Uuid::from_u128(0xAD)),
            Command::MarkPaymentProcessing { payment_id },
            match d.status {
                DepositStatus::Pending | DepositStatus::Failed => {
                    (DepositStatus::Processing, DepositClock::Paused)
                }
                _ => (d.status, d.clock),
            },
        ),
        // Failed: a processing attempt's failure restarts the expiry, due at the later of the two.
        _ => (
            Actor::Gateway(Gateway::Stripe),
            Command::FailDeposit {
                payment_id,
                reason: "declined".into(),
            },
            match d.status {
                DepositStatus::Processing => (
                    DepositStatus::Failed,
                    DepositClock::Running(d.expiry.max(now)),
                ),
                DepositStatus::Pending => (DepositStatus::Failed, d.clock),
                _ => (d.status, d.clock),
            },
        ),
    };
    let shown = format!("{op:?} on {d:?}");
    assert!(run.exec(actor, command), "{shown} refused");
    let d = &mut model.deposits[i];
    (d.status, d.clock) = next;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
    #[test]
    fn the_timers_fire_exactly_the_reference_models_due_deadlines(ops in ops()) {
        DISPUTED.with(|d| d.borrow_mut().clear());
        let mut run = Run {
            ledger: MemoryLedger::new(),
            book: Book::new(),
            fed: 0,
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            next: 0,
            fired_ids: BTreeSet::new(),
            fired_now: Vec::new(),
        };
        let mut model = Model::default();
        for op in &ops {
            match op {
                Op::NewProject { pending } => new_project(&mut run, &mut model, *pending),
                Op::Approve(_) | Op::RequestChanges(_) | Op::Resubmit(_) | Op::Dispute { .. }
                | Op::Contest(_) | Op::Withdraw(_) => project_op(&mut run, &mut model, op),
                Op::NewBooking => new_booking(&mut run, &mut model),
                Op::EarlyAutoApprove(i) => early_auto_approve(&mut run, &model, *i),
                Op::SetPolicy { auto_approve_days, dispute_hours } => {
                    set_policy(&mut run, &mut model, *auto_approve_days, *dispute_hours)
                }
                Op::NewQuote { .. } | Op::AcceptQuote(_) | Op::WithdrawQuote(_) => {
                    quote_op(&mut run, &mut model, op)
                }
                Op::NewDeposit | Op::ConfirmDeposit(_) | Op::ProcessDeposit(_) | Op::FailDeposit(_) => {
                    deposit_op(&mut run, &mut model, op)
                }
                Op::Advance { hours } => run.now += Duration::hours(*hours),
                Op::RunTimers => {
                    let expected = model.fire_due(run.now);
                    run.fired_now.clear();
                    let fired = run.timers();
                    prop_assert_eq!(&fired, &expected, "at {}", run.now);
                    let again: Vec<_> = run.book.due(run.now);
                    prop_assert!(again.is_empty(), "still due after a run: {:?}", again);
                    // Firing again (a second worker, a restart, a replay) appends nothing.
                    let appended = run.ledger.log().len();
                    for d in std::mem::take(&mut run.fired_now) {
                        prop_assert!(run.ledger.execute(&d.envelope()).is_ok());
                    }
                    prop_assert_eq!(appended, run.ledger.log().len());
                }
            }
            run.assert_sound();
        }
    }
}
