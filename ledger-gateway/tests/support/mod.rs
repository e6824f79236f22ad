//! Books for gateway tests: a callback goes through the real adapter, the real plan (with the refund
//! resolution `serve` does) and the real core (`MemoryLedger`), and the test reads the postings it made.
//! Deduplication is the executor's: a key already recorded answers `duplicate` and posts nothing; a refusal
//! is recorded under its key unless it is "not yet" (`not_found`, `too_early`: answered `unavailable`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use ledger_core::aggregates::payment::PaymentState;
use ledger_core::{
    Account, Actor, AggState, Command, CommandEnvelope, Currency, Event, Gateway, MemoryLedger,
    Money, StreamId,
};
use ledger_gateway::plan;
use ledger_gateway::{CallbackError, Secrets, authenticate_and_parse};
use rust_decimal::Decimal;
use uuid::Uuid;

/// What one delivery became: the answer and the net postings per account (debits positive), with the ids
/// the test named replaced by their names (`{user}`, `{payout}`...).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub disposition: &'static str,
    pub detail: String,
    pub postings: Vec<(String, String)>,
}

impl Delivered {
    pub fn posts(&self) -> Vec<(&str, &str)> {
        self.postings
            .iter()
            .map(|(a, m)| (a.as_str(), m.as_str()))
            .collect()
    }
}

pub struct Books {
    pub ledger: MemoryLedger,
    recorded: HashMap<String, ()>,
    names: Vec<(Uuid, String)>,
    next: u128,
    pub secrets: Secrets,
}

pub fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap()
}

pub fn money(text: &str, currency: &str) -> Money {
    Money::from_decimal(
        Decimal::from_str_exact(text).unwrap(),
        Currency::from_code(currency).unwrap(),
    )
    .unwrap()
}

impl Default for Books {
    fn default() -> Self {
        Books::new()
    }
}

impl Books {
    pub fn new() -> Books {
        Books {
            ledger: MemoryLedger::new(),
            recorded: HashMap::new(),
            names: Vec::new(),
            next: 1,
            secrets: Secrets::default(),
        }
    }

    /// A fresh id, shown as `{name}` in postings.
    pub fn id(&mut self, name: &str) -> Uuid {
        let id = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 + self.next);
        self.next += 1;
        self.names.push((id, format!("{{{name}}}")));
        id
    }

    /// Names a given id (a fixture's reference) for the postings.
    pub fn name(&mut self, id: Uuid, name: &str) {
        self.names.push((id, format!("{{{name}}}")));
    }

    pub fn run(&mut self, actor: Actor, command: Command) -> ledger_core::Outcome {
        let env = CommandEnvelope {
            command_id: Uuid::new_v4(),
            actor,
            at: at(),
            command,
        };
        self.ledger
            .execute(&env)
            .unwrap_or_else(|r| panic!("setup command refused: {r:?}"))
    }

    /// A deposit initiated by `user` (pending until its gateway reports).
    pub fn pending_deposit(&mut self, gateway: Gateway, payment: Uuid, user: Uuid, amount: Money) {
        self.run(
            Actor::User(user),
            Command::InitiateDeposit {
                payment_id: payment,
                amount,
                gateway,
                fund: None,
            },
        );
    }

    /// A deposit completed by its gateway (no fee).
    pub fn completed_deposit(
        &mut self,
        gateway: Gateway,
        payment: Uuid,
        user: Uuid,
        amount: Money,
    ) {
        self.pending_deposit(gateway, payment, user, amount);
        self.run(
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

    pub fn payout(&mut self, gateway: Gateway, payout: Uuid, user: Uuid, amount: Money) {
        self.run(
            Actor::User(user),
            Command::RequestPayout {
                payout_id: payout,
                amount,
                fee: None,
                gateway,
            },
        );
    }

    pub fn card_refund(
        &mut self,
        gateway: Gateway,
        refund: Uuid,
        deposit: Uuid,
        user: Uuid,
        amount: Money,
    ) {
        self.run(
            Actor::User(user),
            Command::RequestCardRefund {
                refund_id: refund,
                deposit_id: deposit,
                amount,
                gateway,
            },
        );
    }

    pub fn payment(&self, id: Uuid) -> Option<PaymentState> {
        match self.ledger.state(&StreamId::Payment(id)) {
            Some(AggState::Payment(p)) if p.exists() => Some(p.clone()),
            _ => None,
        }
    }

    /// One delivery as `serve` handles it (authentication with `self.secrets`, then as [`Books::deliver`]).
    pub fn deliver_signed(
        &mut self,
        gateway: Gateway,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Delivered {
        match authenticate_and_parse(gateway, header, body, &self.secrets, at().timestamp()) {
            Ok(callback) => self.deliver_parsed(callback),
            Err(CallbackError::Unauthorized(e)) => refused("unauthorized", e.to_string()),
            Err(CallbackError::Unparseable(e)) => refused("unparseable", e),
        }
    }

    /// One authentic delivery: parse, resolve, plan, execute.
    pub fn deliver(&mut self, gateway: Gateway, body: &[u8]) -> Delivered {
        match ledger_gateway::parse(gateway, body) {
            Ok(callback) => self.deliver_parsed(callback),
            Err(e) => refused("unparseable", e),
        }
    }

    fn deliver_parsed(&mut self, callback: ledger_gateway::NormalizedCallback) -> Delivered {
        let mut payment = plan::payment_id(&callback).and_then(|id| self.payment(id));
        if let Some(ids) = plan::refunds_to_resolve(&callback, payment.as_ref()) {
            let refunds: Vec<PaymentState> =
                ids.iter().filter_map(|id| self.payment(*id)).collect();
            if let Some(refund) = plan::choose_refund(&callback, &refunds) {
                payment = Some(refund.clone());
            }
        }
        let plan = plan::plan(&callback, payment.as_ref(), true);
        let Some(command) = plan.command.clone() else {
            return Delivered {
                disposition: plan.disposition.as_str(),
                detail: plan.detail,
                postings: Vec::new(),
            };
        };
        if self.recorded.contains_key(&plan.dedupe_key) {
            return refused("duplicate", format!("key {} recorded", plan.dedupe_key));
        }
        let env = CommandEnvelope {
            command_id: Uuid::new_v4(),
            actor: plan::actor(callback.gateway),
            at: at(),
            command,
        };
        match self.ledger.execute(&env) {
            Err(rejection) if matches!(rejection.code(), "not_found" | "too_early") => {
                refused("unavailable", rejection.to_string())
            }
            Err(rejection) => {
                self.recorded.insert(plan.dedupe_key.clone(), ());
                refused("rejected", rejection.to_string())
            }
            Ok(outcome) => {
                self.recorded.insert(plan.dedupe_key.clone(), ());
                let events: Vec<&Event> = outcome
                    .changes
                    .iter()
                    .chain(
                        outcome
                            .follow_ups
                            .iter()
                            .filter_map(|(_, r)| r.as_ref().ok())
                            .flatten(),
                    )
                    .map(|c| &c.event)
                    .collect();
                let anomaly = events
                    .iter()
                    .any(|e| matches!(e, Event::Payment(p) if p.is_anomaly()));
                Delivered {
                    disposition: if anomaly {
                        "anomaly"
                    } else {
                        plan.disposition.as_str()
                    },
                    detail: plan.detail,
                    postings: self.postings(&events),
                }
            }
        }
    }

    /// Net effect per account (debit positive), in the entry's currency, ids replaced by their names.
    fn postings(&self, events: &[&Event]) -> Vec<(String, String)> {
        let mut net: BTreeMap<String, Decimal> = BTreeMap::new();
        for entry in events.iter().filter_map(|e| e.entry()) {
            for p in entry.postings() {
                let signed = match p.side {
                    ledger_core::Side::Debit => p.amount.to_decimal(),
                    ledger_core::Side::Credit => -p.amount.to_decimal(),
                };
                *net.entry(self.named(&p.account)).or_default() += signed;
            }
        }
        net.into_iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|(account, amount)| (account, amount.to_string()))
            .collect()
    }

    /// The account's name with the ids the test named replaced by their names, and any other id (one the
    /// ledger derived, such as a chargeback's) by `{derived}`.
    fn named(&self, account: &Account) -> String {
        account
            .to_string()
            .split(':')
            .map(|part| match Uuid::parse_str(part) {
                Ok(id) => self
                    .names
                    .iter()
                    .find(|(named, _)| *named == id)
                    .map_or_else(|| "{derived}".to_string(), |(_, name)| name.clone()),
                Err(_) => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(":")
    }

    /// An account's balance (debit positive) in `currency`, as a decimal.
    pub fn balance(&self, account: &Account, currency: &str) -> Decimal {
        let currency = Currency::from_code(currency).unwrap();
        let minor = self.ledger.balances().balance(account, currency);
        let balance = Money::from_minor(i64::try_from(minor).unwrap(), currency);
        match account.normal_side() {
            ledger_core::Side::Debit => balance.to_decimal(),
            ledger_core::Side::Credit => -balance.to_decimal(),
        }
    }
}

fn refused(disposition: &'static str, detail: String) -> Delivered {
    Delivered {
        disposition,
        detail,
        postings: Vec::new(),
    }
}

/// A header lookup over `(name, value)` pairs, case-insensitive.
pub fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    move |name: &str| {
        owned
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}
