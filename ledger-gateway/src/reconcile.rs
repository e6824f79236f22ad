//! Reconciliation: a gateway's statement against the ledger's movements at that gateway. Pure.
//!
//! A statement line and a ledger movement pair up when they name the same payment reference (the payment id we
//! handed the gateway, or a settlement's id) and the same kind; a pair is `matched` when currency, gross and
//! fee are equal, else an `amount_mismatch`. Lines with no movement are `only_at_gateway`; movements with no
//! line are `only_in_ledger` when they happened inside the statement's time range (a statement covers a
//! period, the ledger holds everything). Several lines under one (reference, kind) pair up with the movements
//! in time order; the surplus on either side is reported as missing on the other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger_core::Money;
use serde::Serialize;

/// What moved through the gateway, in the generic statement's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Money a payer sent in (a deposit's success).
    Deposit,
    /// Money sent back to a payer's card.
    Refund,
    /// Money sent out to a user (a withdrawal).
    Payout,
    /// Money the gateway took back for a disputed charge.
    Chargeback,
    /// Money the gateway paid to the platform's own bank account.
    Settlement,
}

impl MovementKind {
    pub const ALL: [MovementKind; 5] = [
        MovementKind::Deposit,
        MovementKind::Refund,
        MovementKind::Payout,
        MovementKind::Chargeback,
        MovementKind::Settlement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Deposit => "deposit",
            MovementKind::Refund => "refund",
            MovementKind::Payout => "payout",
            MovementKind::Chargeback => "chargeback",
            MovementKind::Settlement => "settlement",
        }
    }

    pub fn parse(text: &str) -> Option<MovementKind> {
        MovementKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The sign of this movement on the gateway's clearing account: money in (+1) or out (-1).
    pub fn clearing_sign(self) -> i64 {
        match self {
            MovementKind::Deposit => 1,
            _ => -1,
        }
    }
}

/// One movement, as a statement line or as the ledger booked it. `gross` and `fee` are positive or zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub reference: String,
    pub kind: MovementKind,
    pub gross: Money,
    pub fee: Money,
    pub occurred_at: DateTime<Utc>,
}

impl Movement {
    /// What this movement did to the clearing account, in minor units: a deposit brings its net in, anything
    /// else takes its gross and its fee out.
    pub fn clearing_effect_minor(&self) -> i128 {
        let gross = i128::from(self.gross.minor());
        let fee = i128::from(self.fee.minor());
        match self.kind.clearing_sign() {
            1 => gross - fee,
            _ => -(gross + fee),
        }
    }
}

/// The two sides of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub statement: Movement,
    pub ledger: Movement,
}

/// The outcome of one reconciliation, each list in (reference, kind, time) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub matched: Vec<Pair>,
    pub amount_mismatch: Vec<Pair>,
    pub only_at_gateway: Vec<Movement>,
    pub only_in_ledger: Vec<Movement>,
}

impl Report {
    /// True when every line matched and nothing is missing on either side.
    pub fn is_clean(&self) -> bool {
        self.amount_mismatch.is_empty()
            && self.only_at_gateway.is_empty()
            && self.only_in_ledger.is_empty()
    }
}

/// The inclusive time range a statement covers: its earliest and latest line. `None` for an empty statement.
pub fn statement_range(lines: &[Movement]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = lines.iter().map(|l| l.occurred_at).min()?;
    let last = lines.iter().map(|l| l.occurred_at).max()?;
    Some((first, last))
}

/// Reconciles statement lines with ledger movements. `range` bounds which unmatched ledger movements count as
/// missing from the statement (inclusive; `None` = the statement's own range, and nothing for an empty one).
pub fn reconcile(
    lines: &[Movement],
    ledger: &[Movement],
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Report {
    let range = range.or_else(|| statement_range(lines));
    type Key<'a> = (&'a str, MovementKind);
    let mut groups: BTreeMap<Key<'_>, (Vec<&Movement>, Vec<&Movement>)> = BTreeMap::new();
    for line in lines {
        groups
            .entry((line.reference.as_str(), line.kind))
            .or_default()
            .0
            .push(line);
    }
    for movement in ledger {
        groups
            .entry((movement.reference.as_str(), movement.kind))
            .or_default()
            .1
            .push(movement);
    }
    let mut report = Report::default();
    for (_, (mut at_gateway, mut in_ledger)) in groups {
        at_gateway.sort_by_key(|m| m.occurred_at);
        in_ledger.sort_by_key(|m| m.occurred_at);
        let paired = at_gateway.len().min(in_ledger.len());
        for (line, movement) in at_gateway.iter().zip(in_ledger.iter()) {
            let pair = Pair {
                statement: (*line).clone(),
                ledger: (*movement).clone(),
            };
            if line.gross == movement.gross && line.fee == movement.fee {
                report.matched.push(pair);
            } else {
                report.amount_mismatch.push(pair);
            }
        }
        report
            .only_at_gateway
            .extend(at_gateway[paired..].iter().map(|m| (*m).clone()));
        report.only_in_ledger.extend(
            in_ledger[paired..]
                .iter()
                .filter(|m| {
                    range.is_some_and(|(from, to)| m.occurred_at >= from && m.occurred_at <= to)
                })
                .map(|m| (*m).clone()),
        );
    }
    report
}

/// Per currency: the statement's net effect on clearing (deposits' net in, the rest out), in minor units.
pub fn statement_net_minor(lines: &[Movement]) -> BTreeMap<String, i128> {
    let mut net: BTreeMap<String, i128> = BTreeMap::new();
    for line in lines {
        *net.entry(line.gross.currency().code().to_string())
            .or_default() += line.clearing_effect_minor();
    }
    net
}
