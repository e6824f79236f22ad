//! The money columns of the read tables against the journal. The row-by-row comparison in `verify` replays
//! the same fold the workers run, so a fold that misreads the log (an underpaid deposit shown as the amount
//! asked for, a fee shown as 0) agrees with itself and goes unnoticed. Here the expected figures come from
//! the journal entries' postings alone, summed per deposit and payout, per project (per kind of movement),
//! per milestone and per account, and the tables' money columns are summed the same way.

use std::collections::{BTreeMap, HashMap};

use ledger_core::aggregates::dispute::DisputeEvent;
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

/// Per milestone, from every entry that touches its escrow account.
#[derive(Clone, Copy, Debug, Default)]
struct MilestoneMoney {
    /// Escrow credits by its fundings.
    funded: Decimal,
    /// Escrow debits by its release, and the release part of a resolution.
    released: Decimal,
    /// Escrow debits by its refund, and the refund part of a resolution.
    refunded: Decimal,
    /// Net escrow debits by entries of other streams (chargebacks).
    charged_back: Decimal,
}

/// Sums of the journal of one ledger, fed event by event in log order.
#[derive(Debug, Default)]
pub struct JournalMoney {
    projects: HashMap<Uuid, ProjectMoney>,
    milestones: HashMap<(Uuid, u32), MilestoneMoney>,
    /// The buyer of each project: the wallet its fundings debit (a resolution's refund goes back to it).
    buyers: HashMap<Uuid, Uuid>,
    /// Buyer fees held per project: `DeferredFees` credits - debits.
    deferred: HashMap<Uuid, Decimal>,
    /// Each resolved milestone's split of its escrow: (released, refunded).
    resolutions: HashMap<(Uuid, u32), (Decimal, Decimal)>,
    /// Each dispute's milestone, and its escrow when the dispute was opened.
    disputes: HashMap<Uuid, ((Uuid, u32), Decimal)>,
    /// Per journal entry: its total (the sum of its debits).
    entries: HashMap<Uuid, Decimal>,
    /// Per account (as text): its normal side and whether its balance counts as pending.
    account_kinds: HashMap<String, (Side, bool)>,
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
        if let (
            StreamId::Dispute(id),
            Event::Dispute(DisputeEvent::DisputeOpened {
                project_id,
                milestone,
                ..
            }),
        ) = (stream, event)
        {
            let target = (*project_id, *milestone);
            let held = self.escrow_held.get(&target).copied().unwrap_or_default();
            self.disputes.insert(*id, (target, held));
        }
        let Some(entry) = event.entry() else { return };
        let currency = entry.currency().code().to_string();
        let overflowed = &mut self.overflowed;
        let total = entry
            .postings()
            .iter()
            .filter(|p| p.side == Side::Debit)
            .fold(Decimal::ZERO, |sum, p| {
                sum.checked_add(p.amount.to_decimal()).unwrap_or(sum)
            });
        self.entries.insert(entry.id(), total);
        let on_project = matches!(stream, StreamId::Project(_));
        for posting in entry.postings() {
            let value = posting.amount.to_decimal();
            let name = posting.account.to_string();
            if !self.account_kinds.contains_key(&name) {
                let kind = (
                    posting.account.normal_side(),
                    crate::fold::is_pending_account(&posting.account),
                );
                self.account_kinds.insert(name.clone(), kind);
            }
            let signed = if posting.side == Side::Credit {
                value
            } else {
                -value
            };
            if let Account::DeferredFees { project } = posting.account {
                add(
                    self.deferred.entry(project).or_default(),
                    signed,
                    overflowed,
                );
            }
            if let Account::Escrow { project, milestone } = posting.account
                && !on_project
            {
                let slot = self.milestones.entry((project, milestone)).or_default();
                add(&mut slot.charged_back, -signed, overflowed);
            }
            let slot = self.accounts.entry((name, currency.clone())).or_default();
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
                self.feed_milestone(*id, e, entry);
                let overflowed = &mut self.overflowed;
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
                let overflowed = &mut self.overflowed;
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
                let overflowed = &mut self.overflowed;
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

    /// A project event's entry, per milestone: funded, released, refunded, and a resolution's split (the
    /// refund is what the buyer's wallet gets back, less the buyer fee returned with it).
    fn feed_milestone(&mut self, project: Uuid, event: &ProjectEvent, entry: &JournalEntry) {
        use ProjectEvent as E;
        let milestone = match event {
            E::MilestoneFunded { milestone, .. }
            | E::MilestoneReleased { milestone, .. }
            | E::MilestoneRefunded { milestone, .. }
            | E::MilestoneResolved { milestone, .. } => *milestone,
            _ => return,
        };
        let escrow = |a: &Account| *a == Account::Escrow { project, milestone };
        let overflowed = &mut self.overflowed;
        let slot = self.milestones.entry((project, milestone)).or_default();
        match event {
            E::MilestoneFunded { .. } => {
                add(
                    &mut slot.funded,
                    net(entry, Side::Credit, escrow),
                    overflowed,
                );
                let buyer = entry.postings().iter().find_map(|p| match p.account {
                    Account::UserAvailable { user } if p.side == Side::Debit => Some(user),
                    _ => None,
                });
                if let Some(buyer) = buyer {
                    self.buyers.insert(project, buyer);
                }
            }
            E::MilestoneReleased { .. } => add(
                &mut slot.released,
                net(entry, Side::Debit, escrow),
                overflowed,
            ),
            E::MilestoneRefunded { .. } => add(
                &mut slot.refunded,
                net(entry, Side::Debit, escrow),
                overflowed,
            ),
            _ => {
                let held = net(entry, Side::Debit, escrow);
                let buyer = self.buyers.get(&project).copied();
                let to_buyer = net(
                    entry,
                    Side::Credit,
                    |a| matches!(a, Account::UserAvailable { user } if Some(*user) == buyer),
                );
                let fee_returned = net(entry, Side::Debit, |a| {
                    *a == Account::DeferredFees { project }
                })
                .checked_sub(net(entry, Side::Credit, |a| *a == Account::PlatformFees))
                .unwrap_or_default();
                let refunded = to_buyer.checked_sub(fee_returned).unwrap_or_default();
                let released = held.checked_sub(refunded).unwrap_or_default();
                add(&mut slot.released, released, overflowed);
                add(&mut slot.refunded, refunded, overflowed);
                self.resolutions
                    .insert((project, milestone), (released, refunded));
            }
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
                (Projection::Escrow, "disputes") => self.check_disputes(spec, rows, &mut out),
                (Projection::Journal, "account_balances") => {
                    self.check_balances(spec, rows, &mut out)
                }
                (Projection::Journal, "journal_entries") => {
                    self.check_entries(spec, rows, &mut out)
                }
                (Projection::Journal, "postings") => self.check_postings(spec, rows, &mut out),
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
            let of_project = |f: fn(&MilestoneMoney) -> Decimal| {
                self.milestones
                    .iter()
                    .filter(|((p, _), _)| *p == id)
                    .fold(Decimal::ZERO, |sum, (_, m)| {
                        sum.checked_add(f(m)).unwrap_or(sum)
                    })
            };
            let held: Decimal = self
                .escrow_held
                .iter()
                .filter(|((p, _), _)| *p == id)
                .fold(Decimal::ZERO, |sum, (_, v)| {
                    sum.checked_add(*v).unwrap_or(sum)
                });
            for (what, w, h) in [
                ("funded", want.held_in, get.num(row, "funded")),
                (
                    "released",
                    of_project(|m| m.released),
                    get.num(row, "released"),
                ),
                (
                    "refunded",
                    of_project(|m| m.refunded),
                    get.num(row, "refunded"),
                ),
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
        let mut buyer_fees: BTreeMap<Uuid, Decimal> = BTreeMap::new();
        for row in rows.values() {
            let Some(id) = get.uuid(row, "project_id") else {
                continue;
            };
            let milestone = u32::try_from(get.int(row, "milestone")).unwrap_or(0);
            let fee = buyer_fees.entry(id).or_default();
            *fee = fee.checked_add(get.num(row, "buyer_fee")).unwrap_or(*fee);
            let want = self
                .milestones
                .get(&(id, milestone))
                .copied()
                .unwrap_or_default();
            let held = self
                .escrow_held
                .get(&(id, milestone))
                .copied()
                .unwrap_or_default();
            for (what, w, h) in [
                ("funded", want.funded, get.num(row, "funded")),
                ("released", want.released, get.num(row, "released")),
                ("refunded", want.refunded, get.num(row, "refunded")),
                (
                    "charged_back",
                    want.charged_back,
                    get.num(row, "charged_back"),
                ),
                ("held", held, get.num(row, "held")),
            ] {
                if w != h {
                    out.push(journal_mismatch(
                        "milestones",
                        format!("project_id={id}, milestone={milestone}: {what}"),
                        w.to_string(),
                        h.to_string(),
                    ));
                }
            }
        }
        // Buyer fees are held per project (`DeferredFees`): the milestones' buyer_fee add up to it.
        for (id, found) in buyer_fees {
            let want = self.deferred.get(&id).copied().unwrap_or_default();
            if want != found {
                out.push(journal_mismatch(
                    "milestones",
                    format!("project_id={id}: sum of buyer_fee"),
                    want.to_string(),
                    found.to_string(),
                ));
            }
        }
    }

    fn check_disputes(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        for row in rows.values() {
            let Some(id) = get.uuid(row, "dispute_id") else {
                continue;
            };
            let Some((target, held)) = self.disputes.get(&id).copied() else {
                out.push(journal_mismatch(
                    "disputes",
                    format!("dispute_id={id}"),
                    "a dispute opened in the log".into(),
                    "a row for a dispute the log never opened".into(),
                ));
                continue;
            };
            let mut checks = vec![("held", Some(held), get.opt_num(row, "held"))];
            // Settled: the split its milestone's resolution moved (none before it is settled).
            let split = self.resolutions.get(&target).copied();
            let settled = get.opt_num(row, "released").is_some();
            if settled || split.is_some() && get.text(row, "status") != "withdrawn" {
                checks.push(("released", split.map(|s| s.0), get.opt_num(row, "released")));
                checks.push(("refunded", split.map(|s| s.1), get.opt_num(row, "refunded")));
            }
            for (what, w, h) in checks {
                if w != h {
                    let show = |v: Option<Decimal>| v.map_or("none".to_string(), |v| v.to_string());
                    out.push(journal_mismatch(
                        "disputes",
                        format!("dispute_id={id}: {what}"),
                        show(w),
                        show(h),
                    ));
                }
            }
        }
    }

    fn check_balances(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        let mut seen: BTreeMap<(String, String), [Decimal; 5]> = BTreeMap::new();
        for row in rows.values() {
            let key = (
                get.text(row, "account").to_string(),
                get.text(row, "currency").to_string(),
            );
            let cells = ["debits", "credits", "balance", "pending", "available"];
            seen.insert(key, cells.map(|c| get.num(row, c)));
        }
        let keys: std::collections::BTreeSet<&(String, String)> =
            self.accounts.keys().chain(seen.keys()).collect();
        for key in keys {
            let (debits, credits) = self.accounts.get(key).copied().unwrap_or_default();
            let (normal, pending) = self
                .account_kinds
                .get(&key.0)
                .copied()
                .unwrap_or((Side::Debit, false));
            let balance = match normal {
                Side::Debit => debits.checked_sub(credits),
                Side::Credit => credits.checked_sub(debits),
            }
            .unwrap_or_default();
            let held = if pending { balance } else { Decimal::ZERO };
            let want = [debits, credits, balance, held, balance - held];
            let have = seen.get(key).copied().unwrap_or_default();
            if want != have {
                let show = |v: [Decimal; 5]| {
                    format!(
                        "debits={} credits={} balance={} pending={} available={}",
                        v[0], v[1], v[2], v[3], v[4]
                    )
                };
                out.push(journal_mismatch(
                    "account_balances",
                    format!("account={}, currency={}", key.0, key.1),
                    show(want),
                    show(have),
                ));
            }
        }
    }

    fn check_entries(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        let mut seen = std::collections::HashSet::new();
        for row in rows.values() {
            let Some(id) = get.uuid(row, "entry_id") else {
                continue;
            };
            seen.insert(id);
            let want = self.entries.get(&id).copied();
            let have = get.num(row, "total");
            if want != Some(have) {
                out.push(journal_mismatch(
                    "journal_entries",
                    format!("entry_id={id}: total"),
                    want.map_or("no such entry".into(), |w| w.to_string()),
                    have.to_string(),
                ));
            }
        }
        for id in self.entries.keys().filter(|id| !seen.contains(id)) {
            out.push(journal_mismatch(
                "journal_entries",
                format!("entry_id={id}"),
                "a row".into(),
                "no row".into(),
            ));
        }
    }

    /// The postings' amounts add up, per account and side, to the journal's.
    fn check_postings(&self, spec: &TableSpec, rows: &BTreeMap<Row, Row>, out: &mut Vec<Mismatch>) {
        let get = Columns(spec);
        let mut seen: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
        for row in rows.values() {
            let key = (
                get.text(row, "account").to_string(),
                get.text(row, "currency").to_string(),
            );
            let slot = seen.entry(key).or_default();
            let amount = get.num(row, "amount");
            let side = if get.text(row, "side") == "debit" {
                &mut slot.0
            } else {
                &mut slot.1
            };
            *side = side.checked_add(amount).unwrap_or(*side);
        }
        let keys: std::collections::BTreeSet<&(String, String)> =
            self.accounts.keys().chain(seen.keys()).collect();
        for key in keys {
            let want = self.accounts.get(key).copied().unwrap_or_default();
            let have = seen.get(key).copied().unwrap_or_default();
            if want != have {
                out.push(journal_mismatch(
                    "postings",
                    format!("account={}, currency={}: sum of amount", key.0, key.1),
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

    fn opt_num(&self, row: &Row, name: &str) -> Option<Decimal> {
        match self.cell(row, name) {
            Cell::Null => None,
            cell => Some(cell.as_num()),
        }
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
