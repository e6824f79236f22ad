//! The pure side of the projections: events in, rows out. No I/O, no clock.
//!
//! `Folder` keeps the state of each entity (a service request, quote, booking, project, dispute or payment)
//! by running the core's own `evolve` over its stream, and turns states into rows when asked (`drain`).
//! Facts that never change (journal entries, postings, escrow movements, audit records) are emitted as the
//! event is applied; balances are emitted as deltas that the sink adds up. The incremental runner, the
//! rebuild and `verify` all use this one fold, so a row is always the same function of the log prefix it
//! reflects.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use ledger_core::aggregates::dispute::DisputeEvent;
use ledger_core::aggregates::payment::{PaymentEvent, PaymentKind, PaymentState};
use ledger_core::aggregates::project::{ProjectEvent, ProjectState};
use ledger_core::aggregates::service_request::ServiceRequestEvent;
use ledger_core::deadlines::{Clock, ClockKey, Deadline, clocks, deadline_key};
use ledger_core::engine::{AggState, Command, Event, StreamId, evolve};
use ledger_core::ids::derived_id;
use ledger_core::journal::{Account, JournalEntry, Side};
use ledger_core::money::{Currency, Money};
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::table::{Cell, Projection, Row, TABLES, table_index};

/// Whether events of `stream` may start or stop a clock (`ledger_core::deadlines::clocks`).
fn has_clocks(stream: &StreamId) -> bool {
    !matches!(
        stream,
        StreamId::Wallet { .. } | StreamId::Suspense(_) | StreamId::LedgerPolicy
    )
}

/// Applies the clocks `event` starts and stops to its entity's deadline rows. A stopped clock is `fired`
/// when the stopping event came from the timer's own command for it (its idempotency key), else
/// `cancelled`; a clock started again under the same key replaces a pending one (cancelled).
fn fold_clocks(
    stream: &StreamId,
    entity: &mut Entity,
    before: &AggState,
    event: &Event,
    record: &RecordedEvent,
) {
    let at = record.recorded_at;
    let position = record.position.unwrap_or(0);
    let found = clocks(
        stream,
        before,
        &entity.state,
        event,
        record.event_id,
        record.stream_version,
    );
    let key = record.metadata.idempotency_key.as_deref();
    // A refused firing closed it (`DeadlineClosed`): neither fired nor cancelled by the world.
    let refused = matches!(event, Event::Deadline(_));
    let close = |entity: &mut Entity, clock_key: &ClockKey| {
        for row in entity.clocks.iter_mut() {
            if row.status == "pending" && row.deadline.key() == *clock_key {
                let fired = key == Some(deadline_key(row.deadline.id).as_str());
                row.status = match (refused, fired) {
                    (true, _) => "closed",
                    (false, true) => "fired",
                    (false, false) => "cancelled",
                };
                row.updated_at = at;
                row.position = position;
                row.dirty = true;
            }
        }
    };
    for clock in found {
        match clock {
            Clock::Start(deadline) => {
                close(entity, &deadline.key());
                entity.clocks.push(ClockRow {
                    deadline,
                    status: "pending",
                    created_at: at,
                    updated_at: at,
                    position,
                    dirty: true,
                });
            }
            Clock::Stop(clock_key) => close(entity, &clock_key),
        }
    }
}

fn clock_row(ledger: &Cell, clock: &ClockRow) -> Row {
    let d = &clock.deadline;
    let target = match d.command() {
        Command::AutoApproveMilestone { project_id, .. }
        | Command::MatureRelease { project_id, .. } => project_id,
        Command::AutoAcceptBooking { booking_id } => booking_id,
        Command::ExpireQuote { quote_id } => quote_id,
        Command::ExpireServiceRequest { request_id } => request_id,
        Command::TimeOutDispute { dispute_id } => dispute_id,
        Command::ExpireDeposit { payment_id } => payment_id,
        other => unreachable!("a deadline fires {other:?}"),
    };
    vec![
        ledger.clone(),
        Cell::Uuid(d.id),
        Cell::text(d.kind.name()),
        Cell::text(d.stream.to_string()),
        Cell::Uuid(target),
        d.milestone.map_or(Cell::Null, |m| Cell::Int(i64::from(m))),
        Cell::time(d.due_at),
        Cell::Int(d.version),
        Cell::text(clock.status),
        Cell::opt_uuid(d.parties.first().copied()),
        Cell::opt_uuid(d.parties.get(1).copied()),
        Cell::time(clock.created_at),
        Cell::time(clock.updated_at),
        Cell::Int(clock.position),
    ]
}

/// Where rows go: an in-memory merge (`MapSink`), a batch for the SQL writer, or COPY buffers.
pub trait RowSink {
    fn put(&mut self, table: usize, row: Row);
}

/// The three parties of a project, known from its first event, and the log position of that event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parties {
    pub creator: Uuid,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub position: i64,
}

#[derive(Clone, Debug)]
struct Entity {
    state: AggState,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    position: i64,
    title: Option<String>,
    reason: Option<String>,
    settled: Option<(Money, Money)>,
    /// A deposit's money as its journal entries moved it: received (credited to the wallet) and the gateway
    /// fees paid on it, in minor units (the payment state keeps the amount asked for).
    deposit_received_minor: i64,
    deposit_fee_minor: i64,
    /// Per milestone: when and at which position it last changed.
    milestone_touched: Vec<(DateTime<Utc>, i64)>,
    /// Every clock this stream started (the `deadlines` projection), with its row's status and times.
    clocks: Vec<ClockRow>,
}

/// One row of `escrow.deadlines`, kept with its entity.
#[derive(Clone, Debug)]
struct ClockRow {
    deadline: Deadline,
    status: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    position: i64,
    /// Changed since the last drain.
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("stream {stream}: event version {version} arrived but the fold holds version {held}")]
    VersionGap {
        stream: String,
        version: i64,
        held: i64,
    },
}

/// Indexes of the tables in [`TABLES`], resolved once.
struct Ids {
    service_requests: usize,
    quotes: usize,
    bookings: usize,
    projects: usize,
    milestones: usize,
    disputes: usize,
    transactions: usize,
    accounts: usize,
    journal_entries: usize,
    postings: usize,
    account_balances: usize,
    audit_log: usize,
    deadlines: usize,
}

impl Ids {
    fn resolve() -> Ids {
        Ids {
            service_requests: table_index("service_requests"),
            quotes: table_index("quotes"),
            bookings: table_index("bookings"),
            projects: table_index("projects"),
            milestones: table_index("milestones"),
            disputes: table_index("disputes"),
            transactions: table_index("transactions"),
            accounts: table_index("accounts"),
            journal_entries: table_index("journal_entries"),
            postings: table_index("postings"),
            account_balances: table_index("account_balances"),
            audit_log: table_index("audit_log"),
            deadlines: table_index("deadlines"),
        }
    }
}

pub struct Folder {
    ledger: Cell,
    active: BTreeSet<Projection>,
    entities: HashMap<StreamId, Entity>,
    parties: HashMap<Uuid, Parties>,
    dirty: BTreeSet<StreamId>,
    ids: Ids,
}

/// `PartiallyFunded` -> `partially_funded`.
pub fn snake(debug: impl std::fmt::Debug) -> String {
    let text = format!("{debug:?}");
    let mut out = String::with_capacity(text.len() + 4);
    for (i, ch) in text.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn money(minor: i64, currency: Option<Currency>) -> Cell {
    match currency {
        Some(currency) => Cell::num(Money::from_minor(minor, currency).to_decimal()),
        None => Cell::num(Decimal::from(minor)),
    }
}

/// The sum of amounts in minor units, exact: added in i128 (no wrap: two milestones of `i64::MAX` once
/// showed a total of -0.02) and shown as a decimal; a sum beyond `numeric`'s reach in `Decimal` (96 bits,
/// more than 2^32 amounts of `i64::MAX`) becomes NULL, which the NOT NULL column refuses.
fn money_sum(mut values: impl Iterator<Item = i64>, currency: Option<Currency>) -> Cell {
    let total = values.try_fold(0_i128, |sum, v| sum.checked_add(i128::from(v)));
    let scale = currency.map_or(0, |c| u32::from(c.exponent()));
    total
        .and_then(|t| Decimal::try_from_i128_with_scale(t, scale).ok())
        .map_or(Cell::Null, Cell::num)
}

fn amount(value: Money) -> Cell {
    Cell::num(value.to_decimal())
}

fn currency_cell(currency: Option<Currency>) -> Cell {
    currency.map_or(Cell::text(""), |c| Cell::text(c.code()))
}

/// The user an account belongs to, for row-level security.
pub fn account_owner(account: &Account) -> Option<Uuid> {
    match account {
        Account::UserAvailable { user }
        | Account::UserPending { user }
        | Account::Receivable { user } => Some(*user),
        _ => None,
    }
}

/// Money on this account is not yet spendable: a user's Pending bucket, payouts and refunds in transit.
pub(crate) fn is_pending_account(account: &Account) -> bool {
    matches!(
        account,
        Account::UserPending { .. } | Account::PayoutsInTransit(_) | Account::RefundsInTransit(_)
    )
}

impl Folder {
    pub fn new(ledger_id: &str, projections: &[Projection]) -> Folder {
        Folder {
            ledger: Cell::text(ledger_id),
            active: projections.iter().copied().collect(),
            entities: HashMap::new(),
            parties: HashMap::new(),
            dirty: BTreeSet::new(),
            ids: Ids::resolve(),
        }
    }

    pub fn projections(&self) -> impl Iterator<Item = Projection> + '_ {
        self.active.iter().copied()
    }

    /// Whether this fold keeps the state of `stream` (it projects rows from it).
    pub fn tracks(&self, stream: &StreamId) -> bool {
        self.owns_entity_rows(stream) || (self.keeps_clocks() && has_clocks(stream))
    }

    /// Whether the entity table of `stream` (service_requests, projects, ...) belongs to this fold.
    fn owns_entity_rows(&self, stream: &StreamId) -> bool {
        let on = |p| self.active.contains(&p);
        match stream {
            StreamId::ServiceRequest(_) | StreamId::Quote(_) | StreamId::Booking(_) => {
                on(Projection::Marketplace)
            }
            StreamId::Project(_) | StreamId::Dispute(_) => on(Projection::Escrow),
            StreamId::Payment(_) => on(Projection::Payments),
            StreamId::Wallet { .. }
            | StreamId::Suspense(_)
            | StreamId::LedgerPolicy
            | StreamId::Settlement(_)
            | StreamId::Reconciliation(_)
            | StreamId::Periods
            | StreamId::Outcome(_) => false,
        }
    }

    fn keeps_clocks(&self) -> bool {
        self.active.contains(&Projection::Deadlines)
    }

    /// Whether this fold needs the parties of projects (for disputes and money movements).
    pub fn needs_parties(&self) -> bool {
        self.active.contains(&Projection::Escrow) || self.active.contains(&Projection::Payments)
    }

    /// The version of `stream` this fold holds (0 when it holds none).
    pub fn version(&self, stream: &StreamId) -> i64 {
        self.entities.get(stream).map_or(0, |e| e.version)
    }

    pub fn knows_parties(&self, project: &Uuid) -> bool {
        self.parties.contains_key(project)
    }

    pub fn seed_parties(&mut self, project: Uuid, parties: Parties) {
        self.parties.insert(project, parties);
    }

    /// The project whose parties the rows of `stream` need, if any.
    pub fn project_of(&self, stream: &StreamId, event: &Event) -> Option<Uuid> {
        match (stream, event) {
            (StreamId::Project(id), _) => Some(*id),
            (_, Event::Dispute(DisputeEvent::DisputeOpened { project_id, .. })) => {
                Some(*project_id)
            }
            (_, Event::Payment(PaymentEvent::DepositInitiated { fund, .. })) => {
                fund.map(|f| f.project_id)
            }
            _ => match self.entities.get(stream).map(|e| &e.state) {
                Some(AggState::Dispute(d)) => Some(d.project_id),
                Some(AggState::Payment(p)) => p.fund.map(|f| f.project_id),
                _ => None,
            },
        }
    }

    /// Forgets every entity (after a failed transaction, or to bound memory between batches).
    pub fn clear(&mut self) {
        self.entities.clear();
        self.parties.clear();
        self.dirty.clear();
    }

    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Folds one event: entity states change (rows follow at `drain`), facts go to `sink` now.
    pub fn apply(
        &mut self,
        stream: &StreamId,
        record: &RecordedEvent,
        event: &Event,
        sink: &mut dyn RowSink,
    ) -> Result<(), FoldError> {
        let position = record.position.unwrap_or(0);
        if let (
            StreamId::Project(id),
            Event::Project(ProjectEvent::ProjectCreated {
                creator,
                buyer,
                seller,
                ..
            }),
        ) = (stream, event)
            && self.needs_parties()
        {
            self.parties.insert(
                *id,
                Parties {
                    creator: *creator,
                    buyer: *buyer,
                    seller: *seller,
                    position,
                },
            );
        }
        if self.tracks(stream) {
            self.evolve_entity(stream, record, event)?;
        }
        if self.active.contains(&Projection::Payments)
            && let (StreamId::Project(project), Event::Project(e)) = (stream, event)
        {
            self.escrow_movements(*project, e, record, sink);
        }
        if self.active.contains(&Projection::Journal)
            && let Some(entry) = event.entry()
        {
            self.journal_rows(entry, record, sink);
        }
        if self.active.contains(&Projection::Audit) {
            sink.put(self.ids.audit_log, self.audit_row(record));
        }
        Ok(())
    }

    fn evolve_entity(
        &mut self,
        stream: &StreamId,
        record: &RecordedEvent,
        event: &Event,
    ) -> Result<(), FoldError> {
        let at = record.recorded_at;
        let position = record.position.unwrap_or(0);
        let held = self.version(stream);
        if held != record.stream_version - 1 {
            return Err(FoldError::VersionGap {
                stream: stream.to_string(),
                version: record.stream_version,
                held,
            });
        }
        let entity = self.entities.entry(*stream).or_insert_with(|| Entity {
            state: AggState::initial(stream),
            version: 0,
            created_at: at,
            updated_at: at,
            position,
            title: None,
            reason: None,
            settled: None,
            deposit_received_minor: 0,
            deposit_fee_minor: 0,
            milestone_touched: Vec::new(),
            clocks: Vec::new(),
        });
        let before = match &entity.state {
            AggState::Project(p) => p.milestones.clone(),
            _ => Vec::new(),
        };
        let state_before = self
            .active
            .contains(&Projection::Deadlines)
            .then(|| entity.state.clone());
        entity.state = evolve(
            std::mem::replace(&mut entity.state, AggState::initial(stream)),
            event,
        );
        if let Some(state_before) = state_before {
            fold_clocks(stream, entity, &state_before, event, record);
        }
        entity.version = record.stream_version;
        entity.updated_at = at;
        entity.position = position;
        match event {
            Event::ServiceRequest(ServiceRequestEvent::ServiceRequestOpened { title, .. }) => {
                entity.title = Some(title.clone());
            }
            Event::Dispute(DisputeEvent::DisputeOpened { reason, .. }) => {
                entity.reason = Some(reason.clone());
            }
            Event::Dispute(DisputeEvent::DisputeSettled {
                release, refund, ..
            }) => entity.settled = Some((*release, *refund)),
            // Saturating: a deposit's amounts are each below the core's ceiling; a sum past i64 cannot be
            // shown exactly anyway, and `verify` compares the row with the journal.
            Event::Payment(PaymentEvent::DepositSucceeded {
                amount,
                gateway_fee,
                ..
            }) => {
                entity.deposit_received_minor =
                    entity.deposit_received_minor.saturating_add(amount.minor());
                entity.deposit_fee_minor =
                    entity.deposit_fee_minor.saturating_add(gateway_fee.minor());
            }
            _ => {}
        }
        if let AggState::Project(p) = &entity.state {
            entity
                .milestone_touched
                .resize(p.milestones.len(), (at, position));
            for (i, m) in p.milestones.iter().enumerate() {
                if before.get(i) != Some(m) {
                    entity.milestone_touched[i] = (at, position);
                }
            }
        }
        self.dirty.insert(*stream);
        Ok(())
    }

    /// Folds a stream's earlier events without emitting anything (the incremental runner loads the
    /// history of an entity it has not seen since it started).
    pub fn seed(
        &mut self,
        stream: &StreamId,
        history: &[(RecordedEvent, Event)],
    ) -> Result<(), FoldError> {
        self.entities.remove(stream);
        for (record, event) in history {
            self.evolve_entity(stream, record, event)?;
        }
        self.dirty.remove(stream);
        if let Some(entity) = self.entities.get_mut(stream) {
            entity.clocks.iter_mut().for_each(|c| c.dirty = false);
        }
        Ok(())
    }

    /// Emits the rows of every entity changed since the last drain.
    pub fn drain(&mut self, sink: &mut dyn RowSink) {
        let dirty = std::mem::take(&mut self.dirty);
        for stream in dirty {
            if self.keeps_clocks()
                && let Some(entity) = self.entities.get_mut(&stream)
            {
                for clock in entity.clocks.iter_mut().filter(|c| c.dirty) {
                    clock.dirty = false;
                    sink.put(self.ids.deadlines, clock_row(&self.ledger, clock));
                }
            }
            if self.owns_entity_rows(&stream)
                && let Some(entity) = self.entities.get(&stream)
            {
                self.entity_rows(&stream, entity, sink);
            }
        }
    }

    fn parties_as_of(&self, project: Option<Uuid>, position: i64) -> Option<Parties> {
        project
            .and_then(|id| self.parties.get(&id))
            .filter(|p| p.position <= position)
            .copied()
    }

    fn entity_rows(&self, stream: &StreamId, e: &Entity, sink: &mut dyn RowSink) {
        let l = self.ledger.clone();
        let (created, updated, position) = (
            Cell::time(e.created_at),
            Cell::time(e.updated_at),
            Cell::Int(e.position),
        );
        match (&e.state, stream) {
            (AggState::ServiceRequest(s), StreamId::ServiceRequest(id)) => sink.put(
                self.ids.service_requests,
                vec![
                    l,
                    Cell::Uuid(*id),
                    Cell::Uuid(s.client),
                    Cell::text(e.title.clone().unwrap_or_default()),
                    currency_cell(s.currency),
                    Cell::text(snake(s.status)),
                    Cell::opt_time(s.expires_at),
                    Cell::opt_uuid(s.accepted_quote),
                    created,
                    updated,
                    position,
                ],
            ),
            (AggState::Quote(q), StreamId::Quote(id)) => sink.put(
                self.ids.quotes,
                vec![
                    l,
                    Cell::Uuid(*id),
                    Cell::Uuid(q.request_id),
                    Cell::Uuid(q.provider),
                    Cell::Uuid(q.client),
                    q.amount.map_or(Cell::num(Decimal::ZERO), amount),
                    currency_cell(q.amount.map(|a| a.currency())),
                    Cell::text(snake(q.status)),
                    Cell::opt_time(q.valid_until),
                    created,
                    updated,
                    position,
                ],
            ),
            (AggState::Booking(b), StreamId::Booking(id)) => sink.put(
                self.ids.bookings,
                vec![
                    l,
                    Cell::Uuid(*id),
                    Cell::Uuid(b.project_id),
                    Cell::Uuid(b.quote_id),
                    Cell::Uuid(b.client),
                    Cell::Uuid(b.provider),
                    Cell::text(snake(b.status)),
                    Cell::opt_time(b.delivered_at),
                    created,
                    updated,
                    position,
                ],
            ),
            (AggState::Project(p), StreamId::Project(id)) => self.project_rows(*id, p, e, sink),
            (AggState::Dispute(d), StreamId::Dispute(id)) => {
                let parties = self.parties_as_of(Some(d.project_id), e.position);
                let (released, refunded) = match e.settled {
                    Some((release, refund)) => (amount(release), amount(refund)),
                    None => (Cell::Null, Cell::Null),
                };
                sink.put(
                    self.ids.disputes,
                    vec![
                        l,
                        Cell::Uuid(*id),
                        Cell::Uuid(d.project_id),
                        Cell::Int(i64::from(d.milestone)),
                        Cell::Uuid(d.opened_by),
                        Cell::Uuid(d.counterparty),
                        Cell::opt_uuid(parties.map(|p| p.creator)),
                        Cell::opt_uuid(parties.map(|p| p.buyer)),
                        Cell::opt_uuid(parties.map(|p| p.seller)),
                        Cell::text(snake(d.status)),
                        currency_cell(d.currency),
                        money(d.held_minor, d.currency),
                        money(d.proposed_release_minor, d.currency),
                        released,
                        refunded,
                        Cell::text(e.reason.clone().unwrap_or_default()),
                        Cell::opt_time(d.respond_by),
                        created,
                        updated,
                        position,
                    ],
                );
            }
            (AggState::Payment(p), StreamId::Payment(id)) => {
                sink.put(self.ids.transactions, self.payment_row(*id, p, e));
            }
            _ => {}
        }
    }

    fn project_rows(&self, id: Uuid, p: &ProjectState, e: &Entity, sink: &mut dyn RowSink) {
        let currency = p.currency;
        let sum = |f: fn(&ledger_core::aggregates::project::MilestoneState) -> i64| {
            money_sum(p.milestones.iter().map(f), currency)
        };
        sink.put(
            self.ids.projects,
            vec![
                self.ledger.clone(),
                Cell::Uuid(id),
                Cell::Uuid(p.creator),
                Cell::Uuid(p.buyer),
                Cell::Uuid(p.seller),
                Cell::opt_uuid(p.booking),
                currency_cell(currency),
                Cell::text(snake(p.status)),
                Cell::Int(p.milestones.len() as i64),
                sum(|m| m.amount_minor),
                sum(|m| m.funded_minor),
                sum(|m| m.released_minor),
                sum(|m| m.refunded_minor),
                sum(|m| m.held_minor()),
                Cell::num(p.fees.commission_rate.as_decimal()),
                Cell::num(p.fees.buyer_fee_rate.as_decimal()),
                Cell::time(e.created_at),
                Cell::time(e.updated_at),
                Cell::Int(e.position),
            ],
        );
        for (i, m) in p.milestones.iter().enumerate() {
            let (touched_at, touched_position) = e
                .milestone_touched
                .get(i)
                .copied()
                .unwrap_or((e.updated_at, e.position));
            sink.put(
                self.ids.milestones,
                vec![
                    self.ledger.clone(),
                    Cell::Uuid(id),
                    Cell::Int(i as i64 + 1),
                    Cell::Uuid(p.creator),
                    Cell::Uuid(p.buyer),
                    Cell::Uuid(p.seller),
                    currency_cell(currency),
                    money(m.amount_minor, currency),
                    money(m.buyer_fee_minor, currency),
                    Cell::text(snake(m.status)),
                    money(m.funded_minor, currency),
                    money(m.released_minor, currency),
                    money(m.refunded_minor, currency),
                    money(m.charged_back_minor, currency),
                    money(m.held_minor(), currency),
                    Cell::opt_time(m.submitted_at),
                    Cell::time(touched_at),
                    Cell::Int(touched_position),
                ],
            );
        }
    }

    fn payment_row(&self, id: Uuid, p: &PaymentState, e: &Entity) -> Row {
        let kind = match p.kind {
            Some(PaymentKind::Deposit) | None => "deposit",
            Some(PaymentKind::Payout) => "withdrawal",
            Some(PaymentKind::CardRefund) => "refund",
        };
        let status = match snake(p.status).as_str() {
            "none" => "pending".to_string(),
            other => other.to_string(),
        };
        let project = p.fund.map(|f| f.project_id);
        let parties = self.parties_as_of(project, e.position);
        // A deposit shows what arrived and the gateway fee paid on it once money has arrived (an underpaid
        // deposit is completed with less than it asked for); until then the amount asked for, fee 0.
        let (amount_minor, fee_minor) = match p.kind {
            Some(PaymentKind::Deposit) if e.deposit_received_minor > 0 => {
                (e.deposit_received_minor, e.deposit_fee_minor)
            }
            Some(PaymentKind::Deposit) | None => (p.amount_minor, 0),
            Some(PaymentKind::Payout) | Some(PaymentKind::CardRefund) => {
                (p.amount_minor, p.fee_minor)
            }
        };
        vec![
            self.ledger.clone(),
            Cell::Uuid(id),
            Cell::text(kind),
            Cell::text(status),
            Cell::Uuid(p.user),
            Cell::opt_uuid(project),
            p.fund
                .map_or(Cell::Null, |f| Cell::Int(i64::from(f.milestone))),
            Cell::opt_uuid(parties.map(|x| x.creator)),
            Cell::opt_uuid(parties.map(|x| x.buyer)),
            Cell::opt_uuid(parties.map(|x| x.seller)),
            money(amount_minor, p.currency),
            money(fee_minor, p.currency),
            currency_cell(p.currency),
            p.gateway.map_or(Cell::Null, |g| Cell::text(g.to_string())),
            Cell::Uuid(id),
            Cell::time(e.created_at),
            Cell::time(e.updated_at),
            Cell::Int(e.position),
        ]
    }

    /// Escrow holds, releases, refunds, commissions and fees: completed when they happen.
    fn escrow_movements(
        &self,
        project: Uuid,
        event: &ProjectEvent,
        record: &RecordedEvent,
        sink: &mut dyn RowSink,
    ) {
        use ProjectEvent as P;
        let position = record.position.unwrap_or(0);
        let parties = self.parties_as_of(Some(project), position);
        let buyer = parties.map(|p| p.buyer);
        let seller = parties.map(|p| p.seller);
        let zero = |c: Currency| Money::zero(c);
        // (type, user, milestone, amount, fee, entry)
        let mut moves: Vec<Movement> = Vec::new();
        match event {
            P::MilestoneFunded {
                milestone,
                amount,
                buyer_fee,
                entry,
            } => moves.push(("escrow_hold", buyer, *milestone, *amount, *buyer_fee, entry)),
            P::MilestoneReleased {
                milestone,
                amount,
                commission,
                fee_earned,
                entry,
                ..
            } => {
                moves.push((
                    "escrow_release",
                    seller,
                    *milestone,
                    *amount,
                    *commission,
                    entry,
                ));
                moves.push((
                    "commission",
                    seller,
                    *milestone,
                    *commission,
                    zero(commission.currency()),
                    entry,
                ));
                moves.push((
                    "fee",
                    buyer,
                    *milestone,
                    *fee_earned,
                    zero(fee_earned.currency()),
                    entry,
                ));
            }
            P::MilestoneRefunded {
                milestone,
                amount,
                fee_earned,
                entry,
                ..
            } => {
                moves.push((
                    "refund",
                    buyer,
                    *milestone,
                    *amount,
                    zero(amount.currency()),
                    entry,
                ));
                moves.push((
                    "fee",
                    buyer,
                    *milestone,
                    *fee_earned,
                    zero(fee_earned.currency()),
                    entry,
                ));
            }
            P::MilestoneResolved {
                milestone,
                released,
                refunded,
                commission,
                fee_earned,
                entry,
                ..
            } => {
                moves.push((
                    "escrow_release",
                    seller,
                    *milestone,
                    *released,
                    *commission,
                    entry,
                ));
                moves.push((
                    "refund",
                    buyer,
                    *milestone,
                    *refunded,
                    zero(refunded.currency()),
                    entry,
                ));
                moves.push((
                    "commission",
                    seller,
                    *milestone,
                    *commission,
                    zero(commission.currency()),
                    entry,
                ));
                moves.push((
                    "fee",
                    buyer,
                    *milestone,
                    *fee_earned,
                    zero(fee_earned.currency()),
                    entry,
                ));
            }
            _ => {}
        }
        for (kind, user, milestone, value, fee, entry) in moves {
            if !value.is_positive() {
                continue;
            }
            sink.put(
                self.ids.transactions,
                vec![
                    self.ledger.clone(),
                    Cell::Uuid(derived_id(entry.id(), kind)),
                    Cell::text(kind),
                    Cell::text("completed"),
                    Cell::opt_uuid(user),
                    Cell::Uuid(project),
                    Cell::Int(i64::from(milestone)),
                    Cell::opt_uuid(parties.map(|p| p.creator)),
                    Cell::opt_uuid(buyer),
                    Cell::opt_uuid(seller),
                    amount(value),
                    amount(fee),
                    Cell::text(value.currency().code()),
                    Cell::Null,
                    Cell::Uuid(entry.id()),
                    Cell::time(record.recorded_at),
                    Cell::time(record.recorded_at),
                    Cell::Int(position),
                ],
            );
        }
    }

    fn journal_rows(&self, entry: &JournalEntry, record: &RecordedEvent, sink: &mut dyn RowSink) {
        let position = record.position.unwrap_or(0);
        let currency = Cell::text(entry.currency().code());
        sink.put(
            self.ids.journal_entries,
            vec![
                self.ledger.clone(),
                Cell::Uuid(entry.id()),
                Cell::Uuid(record.event_id),
                Cell::Int(position),
                Cell::text(record.stream_id.clone()),
                Cell::text(record.event_type.clone()),
                currency.clone(),
                amount(entry.total()),
                Cell::time(entry.effective_at()),
                Cell::time(entry.recorded_at()),
            ],
        );
        for (i, posting) in entry.postings().iter().enumerate() {
            let account = Cell::text(posting.account.to_string());
            let owner = Cell::opt_uuid(account_owner(&posting.account));
            let value = posting.amount.to_decimal();
            sink.put(
                self.ids.postings,
                vec![
                    self.ledger.clone(),
                    Cell::Uuid(entry.id()),
                    Cell::Int(i as i64 + 1),
                    account.clone(),
                    owner.clone(),
                    currency.clone(),
                    Cell::text(snake(posting.side)),
                    Cell::num(value),
                    Cell::Int(position),
                    Cell::time(entry.effective_at()),
                ],
            );
            sink.put(
                self.ids.accounts,
                vec![
                    self.ledger.clone(),
                    account.clone(),
                    Cell::text(snake(posting.account.kind())),
                    Cell::text(snake(posting.account.normal_side())),
                    Cell::Bool(posting.account.is_constrained()),
                    owner.clone(),
                    Cell::Int(position),
                    Cell::time(entry.effective_at()),
                ],
            );
            let (debit, credit) = match posting.side {
                Side::Debit => (value, Decimal::ZERO),
                Side::Credit => (Decimal::ZERO, value),
            };
            let balance = match posting.account.normal_side() {
                Side::Debit => debit - credit,
                Side::Credit => credit - debit,
            };
            let pending = if is_pending_account(&posting.account) {
                balance
            } else {
                Decimal::ZERO
            };
            sink.put(
                self.ids.account_balances,
                vec![
                    self.ledger.clone(),
                    account,
                    currency.clone(),
                    owner,
                    Cell::num(debit),
                    Cell::num(credit),
                    Cell::num(balance),
                    Cell::num(pending),
                    Cell::num(balance - pending),
                    Cell::Int(1),
                    Cell::Int(position),
                ],
            );
        }
    }

    fn audit_row(&self, record: &RecordedEvent) -> Row {
        let meta = &record.metadata;
        vec![
            self.ledger.clone(),
            Cell::Int(record.position.unwrap_or(0)),
            Cell::Uuid(record.event_id),
            Cell::text(record.stream_id.clone()),
            Cell::Int(record.stream_version),
            Cell::text(record.event_type.clone()),
            meta.actor.clone().map_or(Cell::Null, Cell::Text),
            Cell::opt_uuid(meta.correlation_id),
            Cell::opt_uuid(meta.causation_id),
            meta.idempotency_key.clone().map_or(Cell::Null, Cell::Text),
            Cell::time(record.recorded_at),
            Cell::opt_time(record.sequenced_at),
        ]
    }
}

/// One escrow money movement: (type, user, milestone, amount, fee, entry).
type Movement<'a> = (
    &'static str,
    Option<Uuid>,
    u32,
    Money,
    Money,
    &'a JournalEntry,
);

/// Rows merged in memory exactly as the SQL writer merges them (per table, by key).
#[derive(Default)]
pub struct MapSink {
    pub tables: Vec<std::collections::BTreeMap<Row, Row>>,
}

impl MapSink {
    pub fn new() -> MapSink {
        MapSink {
            tables: TABLES.iter().map(|_| Default::default()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.is_empty())
    }
}

impl RowSink for MapSink {
    fn put(&mut self, table: usize, row: Row) {
        let spec = &TABLES[table];
        let key = spec.key_of(&row).to_vec();
        match self.tables[table].entry(key) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(row);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                spec.merge_into(slot.get_mut(), row);
            }
        }
    }
}

/// Decodes a stored event of the log (its stream id and payload).
pub fn decode(record: &RecordedEvent) -> Result<(StreamId, Event), crate::Error> {
    let stream: StreamId = record
        .stream_id
        .parse()
        .map_err(|e: ledger_core::engine::BadStreamId| crate::Error::Decode(e.to_string()))?;
    let event = Event::from_stored(
        &stream,
        &record.event_type,
        record.schema_version,
        record.payload.clone(),
    )
    .map_err(|e| crate::Error::Decode(e.to_string()))?;
    Ok((stream, event))
}

/// [`decode`] that takes the payload out of `record` instead of copying it (the rebuild's hot path; the
/// payload is not needed afterwards).
pub fn decode_owned(record: &mut RecordedEvent) -> Result<(StreamId, Event), crate::Error> {
    let stream: StreamId = record
        .stream_id
        .parse()
        .map_err(|e: ledger_core::engine::BadStreamId| crate::Error::Decode(e.to_string()))?;
    let payload = std::mem::take(&mut record.payload);
    let event = Event::from_stored(&stream, &record.event_type, record.schema_version, payload)
        .map_err(|e| crate::Error::Decode(e.to_string()))?;
    Ok((stream, event))
}
