//! Property test of the deadlines (issue 11): random histories of projects (submitted, approved, changes
//! requested, disputed, answered), quotes (sent, accepted, withdrawn), service requests and unpaid deposits,
//! with random clock advances and timer runs. The timer under test fires `deadlines::Book::due(now)` through
//! each deadline's own envelope; a reference model written here from the domain's rules alone (submitted
//! at + 14 days, released + 7 days, opened + min(respond_by, 14 days), valid_until, opened + 30 days,
//! initiated + 72 hours) says what must fire. After every timer run the fired set equals the model's due
//! set; nothing fires twice (a deadline's command replayed appends nothing); after every step the trial
//! balance is zero per currency, no constrained account is below zero, and the user commands the model
//! expects to be accepted are, and only those.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::project::FeeTerms;
use ledger_core::deadlines::Book;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, MemoryLedger, Money};
use proptest::prelude::*;
use uuid::Uuid;

const USD: Currency = Currency::USD;
const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);

#[derive(Clone, Debug)]
enum Op {
    NewProject { pending: bool },
    Approve(usize),
    RequestChanges(usize),
    Resubmit(usize),
    Dispute(usize),
    Contest(usize),
    NewQuote { valid_hours: i64 },
    AcceptQuote(usize),
    WithdrawQuote(usize),
    NewDeposit,
    ConfirmDeposit(usize),
    Advance { hours: i64 },
    RunTimers,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        2 => any::<bool>().prop_map(|pending| Op::NewProject { pending }),
        1 => (0..8usize).prop_map(Op::Approve),
        1 => (0..8usize).prop_map(Op::RequestChanges),
        1 => (0..8usize).prop_map(Op::Resubmit),
        1 => (0..8usize).prop_map(Op::Dispute),
        1 => (0..8usize).prop_map(Op::Contest),
        2 => (1..400i64).prop_map(|valid_hours| Op::NewQuote { valid_hours }),
        1 => (0..8usize).prop_map(Op::AcceptQuote),
        1 => (0..8usize).prop_map(Op::WithdrawQuote),
        1 => Just(Op::NewDeposit),
        1 => (0..8usize).prop_map(Op::ConfirmDeposit),
        3 => (1..500i64).prop_map(|hours| Op::Advance { hours }),
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
    Disputed { opened: DateTime<Utc> },
    Settled,
}

#[derive(Clone, Debug)]
struct ModelProject {
    id: Uuid,
    dispute: Uuid,
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

#[derive(Default)]
struct Model {
    projects: Vec<ModelProject>,
    /// Per quote: its request, and whether the request is still open (and since when).
    quotes: Vec<(Uuid, QuoteModel, Uuid)>,
    requests: BTreeMap<Uuid, Option<DateTime<Utc>>>,
    deposits: Vec<(Uuid, Option<DateTime<Utc>>)>,
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
                    Milestone::Submitted(at) if at + Duration::days(14) <= now => {
                        next.push(("auto_approve_milestone", p.id, at + Duration::days(14)))
                    }
                    Milestone::Disputed { opened } if opened + Duration::days(14) <= now => {
                        next.push(("time_out_dispute", p.dispute, opened + Duration::days(14)))
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
            for (d, initiated) in &self.deposits {
                if let Some(due) = initiated
                    .map(|i| i + Duration::hours(72))
                    .filter(|d| *d <= now)
                {
                    next.push(("expire_deposit", *d, due));
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
            _ => {
                let d = self.deposits.iter_mut().find(|d| d.0 == target).unwrap();
                d.1 = None;
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
                        Command::TimeOutDispute { dispute_id } => dispute_id,
                        Command::ExpireQuote { quote_id } => quote_id,
                        Command::ExpireServiceRequest { request_id } => request_id,
                        Command::ExpireDeposit { payment_id } => payment_id,
                        other => panic!("unexpected {other:?}"),
                    };
                    fired.insert((d.kind.name(), target, d.due_at));
                } else {
                    self.book.close(&d.key());
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
        | Op::Dispute(i)
        | Op::Contest(i) => *i,
        _ => unreachable!(),
    };
    let Some(p) = model.projects.get(index).cloned() else {
        return;
    };
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
        Op::Dispute(_) => (
            BUYER,
            Command::OpenDispute {
                dispute_id: p.dispute,
                project_id,
                milestone,
                reason: "late".into(),
                proposed_release: usd("50.00"),
                respond_by: now + Duration::days(30),
            },
            // One dispute per project in this model (its id is fixed).
            matches!(
                p.milestone,
                Milestone::Submitted(_) | Milestone::ChangesRequested
            ) && !model_dispute_used(&p),
            Milestone::Disputed { opened: now },
        ),
        _ => (
            SELLER,
            Command::ContestDispute {
                dispute_id: p.dispute,
            },
            matches!(p.milestone, Milestone::Disputed { .. }),
            Milestone::Settled,
        ),
    };
    let accepted = run.exec(Actor::User(actor), command);
    assert_eq!(accepted, expected, "{op:?} on {p:?}");
    if accepted {
        let p = &mut model.projects[index];
        if matches!(op, Op::Approve(_)) && p.pending {
            p.matures = Some(now + Duration::days(7));
        }
        if matches!(op, Op::Dispute(_)) {
            DISPUTED.with(|d| d.borrow_mut().insert(p.id));
        }
        // A contested dispute waits for mediation: no clock (settled for this model).
        p.milestone = after;
    }
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
            let Some((quote_id, state, request)) = model.quotes.get(*i).copied() else {
                return;
            };
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
                model.quotes[*i].1 = QuoteModel::Closed;
                if matches!(op, Op::AcceptQuote(_)) {
                    model.requests.insert(request, None);
                }
            }
        }
        _ => unreachable!(),
    }
}

fn deposit_op(run: &mut Run, model: &mut Model, op: &Op) {
    match op {
        Op::NewDeposit => {
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
            model.deposits.push((payment_id, Some(run.now)));
        }
        Op::ConfirmDeposit(i) => {
            let Some((payment_id, open)) = model.deposits.get(*i).copied() else {
                return;
            };
            let confirm = Command::ConfirmDeposit {
                payment_id,
                amount: usd("7.00"),
                gateway_fee: None,
                occurred_at: None,
            };
            // Paid: its clock stops (a success after the expiry is the payment decider's business).
            if run.exec(Actor::Gateway(Gateway::Stripe), confirm) && open.is_some() {
                model.deposits[*i].1 = None;
            }
        }
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
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
                Op::Approve(_) | Op::RequestChanges(_) | Op::Resubmit(_) | Op::Dispute(_)
                | Op::Contest(_) => project_op(&mut run, &mut model, op),
                Op::NewQuote { .. } | Op::AcceptQuote(_) | Op::WithdrawQuote(_) => {
                    quote_op(&mut run, &mut model, op)
                }
                Op::NewDeposit | Op::ConfirmDeposit(_) => deposit_op(&mut run, &mut model, op),
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
