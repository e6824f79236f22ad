//! The money columns of the read tables against the journal. The row-by-row comparison in `verify` replays
//! the same fold the workers run, so a fold that misreads the log (an underpaid deposit shown as the amount
//! asked for, a fee shown as 0) agrees with itself and goes unnoticed. Here the expected figures come from
//! the journal entries' postings alone, summed per deposit and payout, per project (per kind of movement),
//! per milestone and per account, and the tables' money columns are summed the same way.

use std::collections::{BTreeMap, HashMap};

use ledger_core::aggregates::payment::PaymentEvent;
use ledger_core::aggregates::project::ProjectEvent;
use ledger_core::engine::{Event, StreamId};
use ledger_core::journal::{Account, JournalEntry, Side};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::mismatch::Mismatch;
use crate::table::{Cell, Projection, Row, TableSpec};

/// Per project, from its own stream's entries.
#[derive(Clone, Copy, Debug, Default)]
struct ProjectMoney {
    /// Credited to its escrow accounts by fundings.
    held_in: Decimal,
    /// Credited to its deferred fees by fundings (the buyer fees).
    buyer_fees: Decimal,
    /// Debited from its escrow accounts by releases, refunds and resolutions.
    paid_out: Decimal,
    /// Net credits to `Income:Commission` and `Income:PlatformFees`.
    commission: Decimal,
    platform_fees: Decimal,
}

/// Sums of the journal of one ledger, fed event by event in log order.
#[derive(Debug, Default)]
pub struct JournalMoney {
    projects: HashMap<Uuid, ProjectMoney>,
    /// Escrow balance (credits - debits) per (project, milestone) over every entry.
    escrow_held: HashMap<(Uuid, u32), Decimal>,
    /// Per deposit: (credited to the wallet, gateway fees debited).
    deposits: HashMap<Uuid, (Decimal, Decimal)>,
    /// Per payout or card refund: what its request put in transit.
    outgoing: HashMap<Uuid, Decimal>,
    /// Per (account, currency): (debits, credits).
    accounts: BTreeMap<(String, String), (Decimal, Decimal)>,
    /// A sum left `Decimal`'s range (more than 2^32 amounts of i64::MAX): reported, never wrapped.
    overflowed: bool,
}

fn add(slot: &mut Decimal, value: Decimal, overflowed: &mut bool) {
    match slot.checked_add(value) {
        Some(sum) => *slot = sum,
        None => *overflowed = true,
    }
}

/// Net amount on `side` of the postings of `entry` to accounts matching `which`.
fn net(entry: &JournalEntry, side: Side, which: impl Fn(&Account) -> bool) -> Decimal {
    entry
        .postings()
        .iter()
        .filter(|p| which(&p.account))
        .map(|p| {
            let value = p.amount.to_decimal();
            if p.side == side { value } else { -value }
        })
        .fold(Decimal::ZERO, |sum, v| sum.checked_add(v).unwrap_or(sum))
}

impl JournalMoney {
    pub fn new() -> JournalMoney {
        JournalMoney::default()
    }

    /// Adds the entry of `event` (if it moves money) to the sums.
    pub fn feed(&mut self, stream: &StreamId, event: &Event) {
        let Some(entry) = event.entry() else { return };
        let currency = entry.currency().code().to_string();
        let overflowed = &mut self.overflowed;
        for posting in entry.postings() {
            let value = posting.amount.to_decimal();
            let slot = self
                .accounts
                .entry((posting.account.to_string(), currency.clone()))
                .or_default();
            match posting.side {
                Side::Debit => add(&mut slot.0, value, overflowed),
                Side::Credit => add(&mut slot.1, value, overflowed),
            }
            if let Account::Escrow { project, milestone } = posting.account {
                let held = self.escrow_held.entry((project, milestone)).or_default();
                let signed = if posting.side == Side::Credit {
                    value
                } else {
                    -value
                };
                add(held, signed, overflowed);
            }
        }
        match (stream, event) {
            (StreamId::Project(id), Event::Project(e)) => {
                let sums = self.projects.entry(*id).or_default();
                let escrow =
                    |a: &Account| matches!(a, Account::Escrow { project, .. } if project == id);
                match e {
                    ProjectEvent::MilestoneFunded { .. } => {
                        add(
                            &mut sums.held_in,
                            net(entry, Side::Credit, escrow),
                            overflowed,
                        );
                        let deferred = |a: &Account| matches!(a, Account::DeferredFees { project } if project == id);
                        add(
                            &mut sums.buyer_fees,
                            net(entry, Side::Credit, deferred),
                            overflowed,
                        );
                    }
                    ProjectEvent::MilestoneReleased { .. }
                    | ProjectEvent::MilestoneRefunded { .. }
                    | ProjectEvent::MilestoneResolved { .. } => {
                        add(
                            &mut sums.paid_out,
                            net(entry, Side::Debit, escrow),
                            overflowed,
                        );
                    }
                    _ => {}
                }
                let commission = net(entry, Side::Credit, |a| *a == Account::Commission);
                add(&mut sums.commission, commission, overflowed);
                let fees = net(entry, Side::Credit, |a| *a == Account::PlatformFees);
                add(&mut sums.platform_fees, fees, overflowed);
            }
            (StreamId::Payment(id), Event::Payment(PaymentEvent::DepositSucceeded { .. })) => {
                let wallet = net(entry, Side::Credit, |a| {
                    matches!(a, Account::UserAvailable { .. })
                });
                let fee = net(entry, Side::Debit, |a| *a == Account::GatewayFees);
                let slot = self.deposits.entry(*id).or_default();
                add(&mut slot.0, wallet, overflowed);
                add(&mut slot.1, fee, overflowed);
            }
            (
                StreamId::Payment(id),
                Event::Payment(
                    PaymentEvent::PayoutRequested { .. } | PaymentEvent::CardRefundRequested { .. },
                ),
            ) => {
                let transit = |a: &Account| matches!(a, Account::PayoutsInTransit(p) | Account::RefundsInTransit(p) if p == id);
                add(
                    self.outgoing.entry(*id).or_default(),
                    net(entry, Side::Credit, transit),
                    overflowed,
                );
            }
            _ => {}
        }
    }

    /// Compares the money columns of `projection`'s tables (`found`, in `projection.tables()` order) with
    /// the journal.
    pub fn check(
        &self,
        projection: Projection,
        found: &[(&TableSpec, &BTreeMap<Row, Row>)],
    ) -> Vec<Mismatch> {
        let mut out = Vec::new();
        if self.overflowed {
            out.push(Mismatch {
                table: "journal".into(),
                key: "sums".into(),
                expected: Some("sums within 96 bits".into()),
                found: Some("a sum of the journal overflowed".into()),
            });
        }
        for (spec, rows) in found {
            match (projection, spec.name) {
                (Projection::Payments, "transactions") => {
                    self.check_transactions(spec, rows, &mut out)
                }
                (Projection::Escrow, "projects") => self.check_projects(spec, rows, &mut out),
                (Projection::Escrow, "milestones") => self.check_milestones(spec, rows, &mut out),
                (Projection::Journal, "account_balances") => {
                    self.check_balances(spec, rows, &mut out)
                }
                _ => {}
            }
        }
        out
    }

    fn check_transactions(
        &self,
        spec: &TableSpec,
        rows: &BTreeMap<Row, Row>,
        out: &mut Vec<Mismatch>,
    ) {
        let get = Columns(spec);
        let mut projects: HashMap<Uuid, ProjectMoney> = HashMap::new();
        let mut deposits_seen = std::collections::HashSet::new();
        for row in rows.values() {
            let (kind, amount, fee) = (
                get.text(row, "type"),
                get.num(row, "amount"),
                get.num(row, "fee"),
            );
            let source = get.uuid(row, "source_id");
            let project = get.uuid(row, "project_id");
            let sums = project.map(|p| projects.entry(p).or_default());
            match (kind, sums) {
                ("deposit", _) => {
                    let Some(source) = source else { continue };
                    deposits_seen.insert(source);
                    let (received, paid) = self.deposits.get(&source).copied().unwrap_or_default();
                    // Before any money arrived the row shows the amount asked for, with no fee.
                    let expected = if received.is_zero() {
                        (amount, Decimal::ZERO)
                    } else {
                        (received, paid)
                    };
                    if (amount, fee) != expected {
                        out.push(journal_mismatch(
                            "transactions",
                            format!("deposit source_id={source}"),
                            format!("amount={} fee={}", expected.0, expected.1),
                            format!("amount={amount} fee={fee}"),
                        ));
                    }
                }
                ("withdrawal", _) | ("refund", None) => {
                    let Some(source) = source else { continue };
                    let expected = self.outgoing.get(&source).copied().unwrap_or_default();
                    if amount.checked_add(fee) != Some(expected) {
                        out.push(journal_mismatch(
                            "transactions",
                            format!("{kind} source_id={source}"),
                            format!("amount+fee={expected}"),
                            format!("amount={amount} fee={fee}"),
                        ));
                    }
                }
                ("escrow_hold", Some(s)) => {
                    s.held_in = s.held_in.checked_add(amount).unwrap_or(s.held_in);
                    s.buyer_fees = s.buyer_fees.checked_add(fee).unwrap_or(s.buyer_fees);
                }
                ("escrow_release" | "refund", Some(s)) => {
                    s.paid_out = s.paid_out.checked_add(amount).unwrap_or(s.paid_out);
                }
                ("commission", Some(s)) => {
                    s.commission = s.commission.checked_add(amount).unwrap_or(s.commission)
                }
                ("fee", Some(s)) => {
                    s.platform_fees = s
                        .platform_fees
                        .checked_add(amount)
                        .unwrap_or(s.platform_fees)
                }
                _ => {}
            }
        }
        for (source, (received, _)) in &self.deposits {
            if !received.is_zero() && !deposits_seen.contains(source) {
                out.push(journal_mismatch(
                    "transactions",
                    format!("deposit source_id={source}"),
                    format!("a deposit row of amount={received}"),
                    "no row".into(),
                ));
            }
        }
        let ids: std::collections::BTreeSet<&Uuid> =
            self.projects.keys().chain(projects.keys()).collect();
        for id in ids {
            let want = self.projects.get(id).copied().unwrap_or_default();
            let have = projects.get(id).copied().unwrap_or_default();
            for (what, w, h) in [
                ("escrow_hold amount", want.held_in, have.held_in),
                (
                    "escrow_hold fee (buyer fees)",
                    want.buyer_fees,
                    have.buyer_fees,
                ),
                (
                    "escrow_release + refund amount",
                    want.paid_out,
                    have.paid_out,
                ),
                ("commission amount", want.commission, have.commission),
                (
                    "fee amount (platform fees)",
                    want.platform_fees,
                    have.platform_fees,
                ),
            ] {
                if w != h {
                    out.push(journal_mismatch(
                        "transactions",
                        format!("project_id={id}: sum of {what}"),
                        w.to_string(),
                        h.to_string(),
                    ));
                }
            }
        }
    }

    fn check_projects(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        for row in rows.values() {
            let Some(id) = get.uuid(row, "project_id") else {
                continue;
            };
            let want = self.projects.get(&id).copied().unwrap_or_default();
            let held: Decimal = self
                .escrow_held
                .iter()
                .filter(|((p, _), _)| *p == id)
                .fold(Decimal::ZERO, |sum, (_, v)| {
                    sum.checked_add(*v).unwrap_or(sum)
                });
            for (what, w, h) in [
                ("funded", want.held_in, get.num(row, "funded")),
                ("held", held, get.num(row, "held")),
            ] {
                if w != h {
                    out.push(journal_mismatch(
                        "projects",
                        format!("project_id={id}: {what}"),
                        w.to_string(),
                        h.to_string(),
                    ));
                }
            }
        }
    }

    fn check_milestones(
        &self,
        spec: &TableSpec,
        rows: &BTreeMap<Row, Row>,
        out: &mut Vec<Mismatch>,
    ) {
        let get = Columns(spec);
        for row in rows.values() {
            let Some(id) = get.uuid(row, "project_id") else {
                continue;
            };
            let milestone = u32::try_from(get.int(row, "milestone")).unwrap_or(0);
            let want = self
                .escrow_held
                .get(&(id, milestone))
                .copied()
                .unwrap_or_default();
            let held = get.num(row, "held");
            if want != held {
                out.push(journal_mismatch(
                    "milestones",
                    format!("project_id={id}, milestone={milestone}: held"),
                    want.to_string(),
                    held.to_string(),
                ));
            }
        }
    }

    fn check_balances(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        let mut seen: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
        for row in rows.values() {
            let key = (
                get.text(row, "account").to_string(),
                get.text(row, "currency").to_string(),
            );
            seen.insert(key, (get.num(row, "debits"), get.num(row, "credits")));
        }
        let keys: std::collections::BTreeSet<&(String, String)> =
            self.accounts.keys().chain(seen.keys()).collect();
        for key in keys {
            let want = self.accounts.get(key).copied().unwrap_or_default();
            let have = seen.get(key).copied().unwrap_or_default();
            if want != have {
                out.push(journal_mismatch(
                    "account_balances",
                    format!("account={}, currency={}", key.0, key.1),
                    format!("debits={} credits={}", want.0, want.1),
                    format!("debits={} credits={}", have.0, have.1),
                ));
            }
        }
    }
}

fn journal_mismatch(table: &str, key: String, expected: String, found: String) -> Mismatch {
    Mismatch {
        table: table.to_string(),
        key: format!("journal: {key}"),
        expected: Some(format!("{expected} (the journal's postings)")),
        found: Some(found),
    }
}

/// Column access by name for one table's rows.
struct Columns<'a>(&'a TableSpec);

impl Columns<'_> {
    fn cell<'r>(&self, row: &'r Row, name: &str) -> &'r Cell {
        let index = self
            .0
            .columns
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.0.name));
        &row[index]
    }

    fn num(&self, row: &Row, name: &str) -> Decimal {
        self.cell(row, name).as_num()
    }

    fn int(&self, row: &Row, name: &str) -> i64 {
        self.cell(row, name).as_int()
    }

    fn text<'r>(&self, row: &'r Row, name: &str) -> &'r str {
        match self.cell(row, name) {
            Cell::Text(text) => text,
            _ => "",
        }
    }

    fn uuid(&self, row: &Row, name: &str) -> Option<Uuid> {
        match self.cell(row, name) {
            Cell::Uuid(id) => Some(*id),
            _ => None,
        }
    }
}
