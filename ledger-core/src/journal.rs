//! The chart of accounts and double-entry journal entries that cannot be built unbalanced.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ids::{Gateway, MilestoneNo};
use crate::money::{Currency, Money};

/// Namespace of journal entry ids: `entry_id = uuid_v5(ENTRY_NAMESPACE, causing event id)`.
pub const ENTRY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e51_8c0a_2f4b_6d8e_1a3c);

/// Upper bound on postings per entry: the widest entry (a chargeback loss) has six.
pub const POSTINGS_PER_ENTRY_MAX: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Asset,
    Liability,
    Revenue,
    Expense,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Debit,
    Credit,
}

/// One account of the chart in domain.md. Every account exists once per currency; the currency travels on
/// the entry, not in the name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Account {
    GatewayClearing(Gateway),
    /// The platform's own bank account a gateway settles into (`Assets:Bank:<name>`).
    Bank(BankName),
    Chargeback(Uuid),
    Receivable {
        user: Uuid,
    },
    UserAvailable {
        user: Uuid,
    },
    UserPending {
        user: Uuid,
    },
    Escrow {
        project: Uuid,
        milestone: MilestoneNo,
    },
    PayoutsInTransit(Uuid),
    RefundsInTransit(Uuid),
    DeferredFees {
        project: Uuid,
    },
    Suspense,
    PlatformFees,
    Commission,
    PayoutFees,
    GatewayFees,
    ChargebackFees,
    ChargebackLosses,
}

impl Account {
    pub fn kind(&self) -> AccountKind {
        use Account::*;
        match self {
            GatewayClearing(_) | Bank(_) | Chargeback(_) | Receivable { .. } => AccountKind::Asset,
            UserAvailable { .. }
            | UserPending { .. }
            | Escrow { .. }
            | PayoutsInTransit(_)
            | RefundsInTransit(_)
            | DeferredFees { .. }
            | Suspense => AccountKind::Liability,
            PlatformFees | Commission | PayoutFees => AccountKind::Revenue,
            GatewayFees | ChargebackFees | ChargebackLosses => AccountKind::Expense,
        }
    }

    pub fn normal_side(&self) -> Side {
        match self.kind() {
            AccountKind::Asset | AccountKind::Expense => Side::Debit,
            AccountKind::Liability | AccountKind::Revenue => Side::Credit,
        }
    }

    /// Constrained accounts must never go below zero on their normal side; they are guarded by exactly one
    /// aggregate stream (wallet, project or payment). Unconstrained ones are never a concurrency point.
    pub fn is_constrained(&self) -> bool {
        use Account::*;
        matches!(
            self,
            UserAvailable { .. }
                | UserPending { .. }
                | Escrow { .. }
                | PayoutsInTransit(_)
                | RefundsInTransit(_)
                | DeferredFees { .. }
        )
    }

    /// Income or expense accounts: invariant 10 restricts which events may touch them.
    pub fn is_income_or_expense(&self) -> bool {
        matches!(self.kind(), AccountKind::Revenue | AccountKind::Expense)
    }

    /// The user whose wallet this account belongs to, if any.
    pub fn wallet_owner(&self) -> Option<Uuid> {
        match self {
            Account::UserAvailable { user } | Account::UserPending { user } => Some(*user),
            _ => None,
        }
    }
}

/// Longest name of a bank account (`Assets:Bank:<name>`).
pub const BANK_NAME_BYTES_MAX: usize = 32;

/// The name of one of the platform's bank accounts: 1 to 32 of `a-z`, `0-9`, `-`, starting with a letter
/// or a digit. Names are case-insensitive and kept in lower case (like the ledger's UUIDs), so the exports'
/// upper-casing for beancount stays reversible. `Copy`, like every account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BankName {
    bytes: [u8; BANK_NAME_BYTES_MAX],
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bank account name {0:?} must be 1 to 32 of a-z, 0-9 and '-', starting with a letter or digit"
)]
pub struct BadBankName(pub String);

impl BankName {
    pub fn new(text: &str) -> Result<BankName, BadBankName> {
        let lower = text.to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= BANK_NAME_BYTES_MAX
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && lower.bytes().next().is_some_and(|b| b != b'-');
        if !ok {
            return Err(BadBankName(text.to_string()));
        }
        let mut bytes = [0u8; BANK_NAME_BYTES_MAX];
        bytes[..lower.len()].copy_from_slice(lower.as_bytes());
        Ok(BankName {
            bytes,
            len: lower.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("checked ASCII")
    }
}

impl fmt::Display for BankName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BankName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for BankName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BankName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BankName::new(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Account::*;
        match self {
            GatewayClearing(gw) => write!(f, "Assets:Gateway:{}:Clearing", gw.account_component()),
            Bank(name) => write!(f, "Assets:Bank:{name}"),
            Chargeback(id) => write!(f, "Assets:Chargebacks:{id}"),
            Receivable { user } => write!(f, "Assets:Receivable:Users:{user}"),
            UserAvailable { user } => write!(f, "Liabilities:Users:{user}:Available"),
            UserPending { user } => write!(f, "Liabilities:Users:{user}:Pending"),
            Escrow { project, milestone } => write!(f, "Liabilities:Escrow:{project}:{milestone}"),
            PayoutsInTransit(id) => write!(f, "Liabilities:PayoutsInTransit:{id}"),
            RefundsInTransit(id) => write!(f, "Liabilities:RefundsInTransit:{id}"),
            DeferredFees { project } => write!(f, "Liabilities:DeferredFees:{project}"),
            Suspense => f.write_str("Liabilities:Suspense"),
            PlatformFees => f.write_str("Income:PlatformFees"),
            Commission => f.write_str("Income:Commission"),
            PayoutFees => f.write_str("Income:PayoutFees"),
            GatewayFees => f.write_str("Expenses:GatewayFees"),
            ChargebackFees => f.write_str("Expenses:ChargebackFees"),
            ChargebackLosses => f.write_str("Expenses:ChargebackLosses"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an account of the chart")]
pub struct UnknownAccount(pub String);

impl FromStr for Account {
    type Err = UnknownAccount;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use Account::*;
        let unknown = || UnknownAccount(s.to_string());
        let uuid = |t: &str| Uuid::parse_str(t).map_err(|_| unknown());
        let parts: Vec<&str> = s.split(':').collect();
        let account = match parts.as_slice() {
            ["Assets", "Gateway", gw, "Clearing"] => {
                GatewayClearing(Gateway::from_component(gw).ok_or_else(unknown)?)
            }
            ["Assets", "Bank", name] => Bank(BankName::new(name).map_err(|_| unknown())?),
            ["Assets", "Chargebacks", id] => Chargeback(uuid(id)?),
            ["Assets", "Receivable", "Users", user] => Receivable { user: uuid(user)? },
            ["Liabilities", "Users", user, "Available"] => UserAvailable { user: uuid(user)? },
            ["Liabilities", "Users", user, "Pending"] => UserPending { user: uuid(user)? },
            ["Liabilities", "Escrow", project, m] => Escrow {
                project: uuid(project)?,
                milestone: m.parse().map_err(|_| unknown())?,
            },
            ["Liabilities", "PayoutsInTransit", id] => PayoutsInTransit(uuid(id)?),
            ["Liabilities", "RefundsInTransit", id] => RefundsInTransit(uuid(id)?),
            ["Liabilities", "DeferredFees", project] => DeferredFees {
                project: uuid(project)?,
            },
            ["Liabilities", "Suspense"] => Suspense,
            ["Income", "PlatformFees"] => PlatformFees,
            ["Income", "Commission"] => Commission,
            ["Income", "PayoutFees"] => PayoutFees,
            ["Expenses", "GatewayFees"] => GatewayFees,
            ["Expenses", "ChargebackFees"] => ChargebackFees,
            ["Expenses", "ChargebackLosses"] => ChargebackLosses,
            _ => return Err(unknown()),
        };
        Ok(account)
    }
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub side: Side,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("a journal entry needs at least two postings, got {0}")]
    TooFewPostings(usize),
    #[error("a journal entry has at most {POSTINGS_PER_ENTRY_MAX} postings, got {0}")]
    TooManyPostings(usize),
    #[error("posting to {account} is not positive ({amount})")]
    NonPositive { account: Account, amount: Money },
    #[error("posting to {account} is in {found}, the entry is in {expected}")]
    MixedCurrencies {
        account: Account,
        expected: Currency,
        found: Currency,
    },
    #[error("entry is unbalanced: debits {debits} != credits {credits}")]
    Unbalanced { debits: i64, credits: i64 },
}

/// A balanced double-entry journal entry. The only constructor validates, and deserialization goes through
/// it, so an unbalanced entry cannot exist in memory.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct JournalEntry {
    id: Uuid,
    currency: Currency,
    /// When the money moved (a gateway's paid_at, or the command's time).
    effective_at: DateTime<Utc>,
    /// When the ledger learned of it (the command's `at`).
    recorded_at: DateTime<Utc>,
    postings: Vec<Posting>,
    /// When the money really moved, for an entry whose `effective_at` was moved out of a closed period to the
    /// start of the first open month (absent otherwise, so entries from before periods read as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_effective_at: Option<DateTime<Utc>>,
}

impl JournalEntry {
    pub fn new(
        id: Uuid,
        currency: Currency,
        effective_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
        postings: Vec<Posting>,
    ) -> Result<JournalEntry, EntryError> {
        if postings.len() < 2 {
            return Err(EntryError::TooFewPostings(postings.len()));
        }
        if postings.len() > POSTINGS_PER_ENTRY_MAX {
            return Err(EntryError::TooManyPostings(postings.len()));
        }
        let (mut debits, mut credits) = (0_i64, 0_i64);
        for p in &postings {
            if p.amount.currency() != currency {
                return Err(EntryError::MixedCurrencies {
                    account: p.account,
                    expected: currency,
                    found: p.amount.currency(),
                });
            }
            if !p.amount.is_positive() {
                return Err(EntryError::NonPositive {
                    account: p.account,
                    amount: p.amount,
                });
            }
            let overflow = EntryError::Unbalanced { debits, credits };
            let total = if p.side == Side::Debit {
                &mut debits
            } else {
                &mut credits
            };
            *total = total.checked_add(p.amount.minor()).ok_or(overflow)?;
        }
        if debits != credits {
            return Err(EntryError::Unbalanced { debits, credits });
        }
        Ok(JournalEntry {
            id,
            currency,
            effective_at,
            recorded_at,
            postings,
            original_effective_at: None,
        })
    }

    pub fn id(&self) -> Uuid {
        self.id
    }
    pub fn currency(&self) -> Currency {
        self.currency
    }
    pub fn effective_at(&self) -> DateTime<Utc> {
        self.effective_at
    }
    pub fn recorded_at(&self) -> DateTime<Utc> {
        self.recorded_at
    }
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
    /// When the money really moved, when that lies in a closed period (then `effective_at` is the start of
    /// the first open month).
    pub fn original_effective_at(&self) -> Option<DateTime<Utc>> {
        self.original_effective_at
    }

    /// Moves the entry out of a closed period: `effective_at` becomes `first_open` (when it was earlier) and
    /// the time the money moved is kept. Idempotent; never moves an entry backwards.
    pub fn redate_into(&mut self, first_open: DateTime<Utc>) {
        if self.effective_at < first_open {
            self.original_effective_at.get_or_insert(self.effective_at);
            self.effective_at = first_open;
        }
    }

    /// Total of the debit side (= total of the credit side).
    pub fn total(&self) -> Money {
        let minor = self
            .postings
            .iter()
            .filter(|p| p.side == Side::Debit)
            .map(|p| p.amount.minor())
            .sum();
        Money::from_minor(minor, self.currency)
    }

    /// Signed effect on one account, positive on the account's normal side.
    pub fn effect_on(&self, account: &Account) -> i64 {
        self.postings
            .iter()
            .filter(|p| p.account == *account)
            .map(|p| {
                if p.side == account.normal_side() {
                    p.amount.minor()
                } else {
                    -p.amount.minor()
                }
            })
            .sum()
    }

    /// Entry ids are derived from the causing event, so a replay rebuilds identical entries.
    pub(crate) fn derive_id(&mut self, event_id: Uuid) {
        self.id = Uuid::new_v5(&ENTRY_NAMESPACE, event_id.as_bytes());
    }
}

#[derive(Deserialize)]
struct JournalEntryRepr {
    id: Uuid,
    currency: Currency,
    effective_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    postings: Vec<Posting>,
    #[serde(default)]
    original_effective_at: Option<DateTime<Utc>>,
}

impl<'de> Deserialize<'de> for JournalEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = JournalEntryRepr::deserialize(d)?;
        let mut entry =
            JournalEntry::new(r.id, r.currency, r.effective_at, r.recorded_at, r.postings)
                .map_err(serde::de::Error::custom)?;
        entry.original_effective_at = r.original_effective_at;
        Ok(entry)
    }
}

/// Collects postings; zero amounts are skipped (a 0% fee posts nothing) and `build` validates.
#[derive(Debug)]
pub struct EntryBuilder {
    currency: Currency,
    postings: Vec<Posting>,
}

impl EntryBuilder {
    pub fn new(currency: Currency) -> EntryBuilder {
        EntryBuilder {
            currency,
            postings: Vec::with_capacity(6),
        }
    }

    pub fn debit(self, account: Account, amount: Money) -> EntryBuilder {
        self.post(account, Side::Debit, amount)
    }

    pub fn credit(self, account: Account, amount: Money) -> EntryBuilder {
        self.post(account, Side::Credit, amount)
    }

    fn post(mut self, account: Account, side: Side, amount: Money) -> EntryBuilder {
        if !amount.is_zero() {
            self.postings.push(Posting {
                account,
                side,
                amount,
            });
        }
        self
    }

    /// Builds with a provisional id; the engine replaces it with one derived from the carrying event.
    pub fn build(
        self,
        at: DateTime<Utc>,
        effective_at: DateTime<Utc>,
    ) -> Result<JournalEntry, EntryError> {
        JournalEntry::new(Uuid::nil(), self.currency, effective_at, at, self.postings)
    }
}

/// Balances per (account, currency), signed on the normal side (a credit-normal liability with more credits
/// than debits is positive). Folding every entry of the log gives the trial balance.
///
/// A hash map inside (a replay applies millions of postings; ordered maps made it compare keys byte by
/// byte), handed out in account order by `iter`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    debits_credits: std::collections::HashMap<(Account, Currency), (i128, i128)>,
}

impl Balances {
    pub fn apply(&mut self, entry: &JournalEntry) {
        for p in entry.postings() {
            let slot = self
                .debits_credits
                .entry((p.account, entry.currency()))
                .or_insert((0, 0));
            match p.side {
                Side::Debit => slot.0 += i128::from(p.amount.minor()),
                Side::Credit => slot.1 += i128::from(p.amount.minor()),
            }
        }
    }

    /// `(debits, credits)` posted to an account, in minor units.
    pub fn debits_credits(&self, account: &Account, currency: Currency) -> (i128, i128) {
        self.debits_credits
            .get(&(*account, currency))
            .copied()
            .unwrap_or((0, 0))
    }

    /// Balance on the account's normal side.
    pub fn balance(&self, account: &Account, currency: Currency) -> i128 {
        let (d, c) = self.debits_credits(account, currency);
        if account.normal_side() == Side::Debit {
            d - c
        } else {
            c - d
        }
    }

    /// Adds raw totals to an account (loading a stored snapshot).
    pub fn add_raw(&mut self, account: Account, currency: Currency, debits: i128, credits: i128) {
        let slot = self
            .debits_credits
            .entry((account, currency))
            .or_insert((0, 0));
        slot.0 += debits;
        slot.1 += credits;
    }

    /// Every account's `(debits, credits)`, ordered by account then currency.
    pub fn iter(&self) -> impl Iterator<Item = (&(Account, Currency), &(i128, i128))> {
        let mut all: Vec<_> = self.debits_credits.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Total debits minus total credits per currency: zero for every currency of a sound ledger.
    pub fn imbalance_by_currency(&self) -> BTreeMap<Currency, i128> {
        let mut out = BTreeMap::new();
        for ((_, currency), (d, c)) in &self.debits_credits {
            *out.entry(*currency).or_insert(0) += d - c;
        }
        out
    }

    /// Constrained accounts whose normal-side balance is negative (must be empty).
    pub fn negative_constrained(&self) -> Vec<(Account, Currency, i128)> {
        let mut negative: Vec<_> = self
            .debits_credits
            .keys()
            .filter(|(a, _)| a.is_constrained())
            .map(|(a, c)| (*a, *c, self.balance(a, *c)))
            .filter(|(_, _, b)| *b < 0)
            .collect();
        negative.sort_unstable();
        negative
    }
}
