//! Model-based property test: random sequences of valid and invalid commands across several projects,
//! wallets and payments (with duplicated and reordered gateway outcomes) run against the engine and against
//! a reference model written independently of it. The model is plain maps of balances with its own integer
//! arithmetic (its own half-even rounding and largest-remainder split); it never calls the core's posting,
//! rounding or allocation code. After every step the test checks the invariants of domain.md that apply to
//! the core (1-5, 7-10; 6 is covered by the money property tests) and that every account balance, wallet
//! and accept/reject decision (with its code) matches the model.
//!
//! Lives inside the crate (not in `tests/`) so that it can switch on the planted bug of `crate::testing`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::aggregates::ledger_policy::RateBounds;
use crate::aggregates::payment::PaymentStatus;
use crate::aggregates::project::{FeePolicy, MilestoneStatus};
use crate::engine::{AggState, Command, CommandEnvelope, Event, STREAMS_PER_COMMAND_MAX, StreamId};
use crate::ids::{Actor, Gateway};
use crate::journal::{Account, Side};
use crate::memory::MemoryLedger;
use crate::money::{Currency, Money, Rate};

const CURRENCIES: [Currency; 2] = [Currency::USD, Currency::JPY];
const GATEWAY: Gateway = Gateway::Stripe;
const USERS: u8 = 4; // 0, 1 buy; 2, 3 sell (anyone may be paid out)

fn user(n: u8) -> Uuid {
    Uuid::from_u128(0xA000 + u128::from(n))
}
fn project_id(n: u8) -> Uuid {
    Uuid::from_u128(0xB000 + u128::from(n))
}
fn payment_id(n: u8) -> Uuid {
    Uuid::from_u128(0xC000 + u128::from(n))
}
fn dispute_id(n: u8) -> Uuid {
    Uuid::from_u128(0xD000 + u128::from(n))
}

#[derive(Clone, Debug)]
enum Op {
    /// `settle_now`: the gateway confirms at once (other outcomes may still follow, duplicated or late).
    Deposit {
        pay: u8,
        buyer: u8,
        cur: u8,
        amount: i64,
        settle_now: bool,
    },
    DepositOutcome {
        pay: u8,
        success: bool,
        amount: i64,
        fee: i64,
        times: u8,
    },
    CreateProject {
        proj: u8,
        buyer: u8,
        seller: u8,
        cur: u8,
        milestones: Vec<i64>,
        commission_bps: u32,
        buyer_fee_bps: u32,
    },
    Fund {
        proj: u8,
        m: u32,
        as_buyer: bool,
    },
    Submit {
        proj: u8,
        m: u32,
        as_seller: bool,
    },
    Approve {
        proj: u8,
        m: u32,
        as_buyer: bool,
    },
    Refund {
        proj: u8,
        m: u32,
    },
    OpenDispute {
        proj: u8,
        m: u32,
        dispute: u8,
        release_pct: i64,
    },
    AcceptDispute {
        dispute: u8,
    },
    Payout {
        pay: u8,
        who: u8,
        cur: u8,
        amount: i64,
        fee: i64,
        card_refund: bool,
        /// The deposit a card refund names (only card refunds use it).
        deposit: u8,
    },
    TransferOutcome {
        pay: u8,
        success: bool,
        times: u8,
    },
    CancelProject {
        proj: u8,
    },
    /// The natural next step for a milestone, by the right party (keeps sequences deep enough to reach
    /// releases and resolutions; the other ops supply the invalid attempts).
    Progress {
        proj: u8,
        m_raw: u32,
    },
    /// The ledger's fee policy, set by an operator (or, refused, by a user). Triples are (min, default, max)
    /// in basis points.
    SetFeePolicy {
        commission: (u32, u32, u32),
        buyer_fee: (u32, u32, u32),
        payout_fee: (u32, u32, u32),
        overrides_allowed: bool,
        by_admin: bool,
    },
}

/// A rate in basis points below `max_bps`, zero (what a beneficiary would like) one time in four.
fn rate_bps(max_bps: u32) -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0_u32), 3 => 0..max_bps]
}

fn fee_policy() -> impl Strategy<Value = Op> {
    (
        bps_bounds(2_000),
        bps_bounds(1_000),
        bps_bounds(300),
        any::<bool>(),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(commission, buyer_fee, payout_fee, overrides_allowed, by_admin)| Op::SetFeePolicy {
                commission,
                buyer_fee,
                payout_fee,
                overrides_allowed,
                by_admin,
            },
        )
}

/// A sorted (min, default, max) triple of basis points below `max_bps`.
fn bps_bounds(max_bps: u32) -> impl Strategy<Value = (u32, u32, u32)> {
    prop::array::uniform3(0..max_bps).prop_map(|mut a| {
        a.sort_unstable();
        (a[0], a[1], a[2])
    })
}

fn currency_index() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0_u8), 1 => Just(1_u8)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let pay_in = 0_u8..6;
    let pay_out = 10_u8..16;
    let proj = 0_u8..3;
    let m = 1_u32..4;
    prop_oneof![
        4 => (pay_in.clone(), 0_u8..2, currency_index(), 1_i64..60_000, prop::bool::weighted(0.7))
            .prop_map(|(pay, buyer, cur, amount, settle_now)| Op::Deposit { pay, buyer, cur, amount, settle_now }),
        3 => (pay_in, any::<bool>(), 1_i64..60_000, 0_i64..300, 1_u8..4)
            .prop_map(|(pay, success, amount, fee, times)| Op::DepositOutcome { pay, success, amount, fee, times }),
        // Projects 3 and 4 exist only if created here (after a policy, perhaps); zero rates are frequent.
        3 => (0_u8..5, 0_u8..2, 2_u8..4, currency_index(), prop::collection::vec(100_i64..20_000, 1..4), rate_bps(2_000), rate_bps(1_000))
            .prop_map(|(proj, buyer, seller, cur, milestones, commission_bps, buyer_fee_bps)| Op::CreateProject {
                proj, buyer, seller, cur, milestones, commission_bps, buyer_fee_bps,
            }),
        6 => (proj.clone(), m.clone(), prop::bool::weighted(0.9)).prop_map(|(proj, m, as_buyer)| Op::Fund { proj, m, as_buyer }),
        5 => (proj.clone(), m.clone(), prop::bool::weighted(0.9)).prop_map(|(proj, m, as_seller)| Op::Submit { proj, m, as_seller }),
        5 => (proj.clone(), m.clone(), prop::bool::weighted(0.9)).prop_map(|(proj, m, as_buyer)| Op::Approve { proj, m, as_buyer }),
        1 => (proj.clone(), m.clone()).prop_map(|(proj, m)| Op::Refund { proj, m }),
        2 => (proj.clone(), m, 0_u8..4, 0_i64..=100).prop_map(|(proj, m, dispute, release_pct)| Op::OpenDispute { proj, m, dispute, release_pct }),
        2 => (0_u8..4).prop_map(|dispute| Op::AcceptDispute { dispute }),
        3 => (pay_out.clone(), 0_u8..USERS, currency_index(), 1_i64..30_000, 0_i64..200, any::<bool>(), 0_u8..8)
            .prop_map(|(pay, who, cur, amount, fee, card_refund, deposit)| Op::Payout { pay, who, cur, amount, fee, card_refund, deposit }),
        3 => (pay_out, any::<bool>(), 1_u8..4).prop_map(|(pay, success, times)| Op::TransferOutcome { pay, success, times }),
        1 => proj.clone().prop_map(|proj| Op::CancelProject { proj }),
        12 => (proj, 0_u32..12).prop_map(|(proj, m_raw)| Op::Progress { proj, m_raw }),
        1 => fee_policy(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// The reference model: its own arithmetic, its own rules, plain maps.

/// round_half_even(amount * bps / 10_000) on integers.
fn model_fee(amount: i64, bps: u32) -> i64 {
    let n = amount * i64::from(bps);
    let (q, r) = (n / 10_000, n % 10_000);
    match (2 * r).cmp(&10_000) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 == 1 => q + 1,
        _ => q,
    }
}

/// Splits `whole` in proportion to `a : b` by largest remainder, ties to the first part.
fn model_split(whole: i64, a: i64, b: i64) -> (i64, i64) {
    let total = a + b;
    let (mut x, mut y) = (whole * a / total, whole * b / total);
    if x + y < whole {
        if (whole * a) % total >= (whole * b) % total {
            x += 1
        } else {
            y += 1
        }
    }
    (x, y)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MStatus {
    Unfunded,
    Funded,
    Submitted,
    Released,
    Refunded,
    Disputed,
    Resolved,
    Cancelled,
}

#[derive(Clone, Debug)]
struct MMilestone {
    amount: i64,
    fee: i64,
    status: MStatus,
    funded: i64,
    released: i64,
    refunded: i64,
}

#[derive(Clone, Debug)]
struct MProject {
    buyer: u8,
    seller: u8,
    cur: Currency,
    commission_bps: u32,
    milestones: Vec<MMilestone>,
    buyer_fee_bps: u32,
    status: &'static str, // "agreed" | "completed" | "cancelled"
    open_disputes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PStatus {
    Pending,
    Completed,
    Failed,
}

#[derive(Clone, Debug)]
struct MPayment {
    who: u8,
    cur: Currency,
    amount: i64,
    fee: i64,
    outbound: bool,
    card_refund: bool,
    status: PStatus,
    late_success: bool,
    late_failure: bool,
    /// A deposit: what it brought in (its first success) and what card refunds of it hold.
    received: i64,
    refunded: i64,
    /// A card refund: its deposit.
    refund_of: Option<u8>,
}

#[derive(Clone, Debug)]
struct MDispute {
    proj: u8,
    m: u32,
    release: i64,
    open: bool,
}

/// The model's fee policy: (min, default, max) basis points per fee.
#[derive(Clone, Debug)]
struct MPolicy {
    commission: (u32, u32, u32),
    buyer_fee: (u32, u32, u32),
    payout_fee: (u32, u32, u32),
    overrides_allowed: bool,
}

impl MPolicy {
    /// Whether a stated value (a rate in bps, or a payout fee in minor units with its bounds computed from
    /// the amount) is allowed.
    fn allows(&self, stated: i64, (min, default, max): (i64, i64, i64)) -> bool {
        if self.overrides_allowed {
            min <= stated && stated <= max
        } else {
            stated == default
        }
    }

    fn allows_rate(&self, stated_bps: u32, (min, default, max): (u32, u32, u32)) -> bool {
        self.allows(
            i64::from(stated_bps),
            (i64::from(min), i64::from(default), i64::from(max)),
        )
    }
}

#[derive(Default, Clone, Debug)]
struct Model {
    policy: Option<MPolicy>,
    /// Expected normal-side balance of every account the model knows, per currency.
    accounts: BTreeMap<(Account, Currency), i64>,
    projects: HashMap<u8, MProject>,
    payments: HashMap<u8, MPayment>,
    disputes: HashMap<u8, MDispute>,
}

type Expect = Result<(), &'static str>;

impl Model {
    fn bal(&self, account: Account, cur: Currency) -> i64 {
        self.accounts.get(&(account, cur)).copied().unwrap_or(0)
    }
    fn add(&mut self, account: Account, cur: Currency, delta: i64) {
        *self.accounts.entry((account, cur)).or_insert(0) += delta;
    }
    fn wallet(&self, who: u8, cur: Currency) -> i64 {
        self.bal(Account::UserAvailable { user: user(who) }, cur)
    }
    fn clearing(&mut self, cur: Currency, delta: i64) {
        // Clearing is an asset: money the gateway holds for us.
        self.add(Account::GatewayClearing(GATEWAY), cur, delta);
    }

    fn deposit(&mut self, pay: u8, buyer: u8, cur: Currency, amount: i64) -> Expect {
        if self.payments.contains_key(&pay) {
            return Err("already_exists");
        }
        self.payments.insert(
            pay,
            MPayment {
                who: buyer,
                cur,
                amount,
                fee: 0,
                outbound: false,
                card_refund: false,
                status: PStatus::Pending,
                late_success: false,
                late_failure: false,
                received: 0,
                refunded: 0,
                refund_of: None,
            },
        );
        Ok(())
    }

    fn deposit_outcome(&mut self, pay: u8, success: bool, amount: i64, fee: i64) -> Expect {
        let Some(p) = self.payments.get(&pay).cloned() else {
            return Err("not_found");
        };
        if p.outbound {
            return Err("invalid_transition");
        }
        if success {
            if p.status == PStatus::Completed {
                return Ok(());
            }
            if fee > amount {
                return Err("amount_too_large");
            }
            let paid = self.payments.get_mut(&pay).unwrap();
            paid.status = PStatus::Completed;
            paid.received += amount;
            self.add(Account::UserAvailable { user: user(p.who) }, p.cur, amount);
            self.clearing(p.cur, amount - fee);
            self.add(Account::GatewayFees, p.cur, fee);
        } else if p.status == PStatus::Completed {
            self.payments.get_mut(&pay).unwrap().late_failure = true;
        } else {
            self.payments.get_mut(&pay).unwrap().status = PStatus::Failed;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_project(
        &mut self,
        proj: u8,
        buyer: u8,
        seller: u8,
        cur: Currency,
        milestones: &[i64],
        commission_bps: u32,
        buyer_fee_bps: u32,
    ) -> Expect {
        if let Some(policy) = &self.policy
            && !(policy.allows_rate(commission_bps, policy.commission)
                && policy.allows_rate(buyer_fee_bps, policy.buyer_fee))
        {
            return Err("fee_outside_policy");
        }
        if self.projects.contains_key(&proj) {
            return Err("already_exists");
        }
        let milestones = milestones
            .iter()
            .map(|a| MMilestone {
                amount: *a,
                fee: 0,
                status: MStatus::Unfunded,
                funded: 0,
                released: 0,
                refunded: 0,
            })
            .collect();
        self.projects.insert(
            proj,
            MProject {
                buyer,
                seller,
                cur,
                commission_bps,
                buyer_fee_bps,
                milestones,
                status: "agreed",
                open_disputes: 0,
            },
        );
        Ok(())
    }

    fn project_milestone(&self, proj: u8, m: u32) -> Result<(MProject, MMilestone), &'static str> {
        let p = self.projects.get(&proj).ok_or("not_found")?;
        let ms = p
            .milestones
            .get((m - 1) as usize)
            .ok_or("unknown_milestone")?;
        Ok((p.clone(), ms.clone()))
    }

    fn ms(&mut self, proj: u8, m: u32) -> &mut MMilestone {
        &mut self.projects.get_mut(&proj).unwrap().milestones[(m - 1) as usize]
    }

    fn fund(&mut self, proj: u8, m: u32, as_buyer: bool) -> Expect {
        let p = self.projects.get(&proj).ok_or("not_found")?.clone();
        if !as_buyer {
            return Err("not_a_party");
        }
        if p.status != "agreed" {
            return Err("invalid_transition");
        }
        let (_, ms) = self.project_milestone(proj, m)?;
        if ms.status != MStatus::Unfunded {
            return Err("invalid_transition");
        }
        let fee = model_fee(ms.amount, p.buyer_fee_bps);
        if self.wallet(p.buyer, p.cur) < ms.amount + fee {
            return Err("insufficient_funds");
        }
        self.add(
            Account::UserAvailable {
                user: user(p.buyer),
            },
            p.cur,
            -(ms.amount + fee),
        );
        self.add(
            Account::Escrow {
                project: project_id(proj),
                milestone: m,
            },
            p.cur,
            ms.amount,
        );
        self.add(
            Account::DeferredFees {
                project: project_id(proj),
            },
            p.cur,
            fee,
        );
        let x = self.ms(proj, m);
        x.status = MStatus::Funded;
        x.fee = fee;
        x.funded = x.amount;
        Ok(())
    }

    fn submit(&mut self, proj: u8, m: u32, as_seller: bool) -> Expect {
        self.projects.get(&proj).ok_or("not_found")?;
        if !as_seller {
            return Err("not_a_party");
        }
        let (_, ms) = self.project_milestone(proj, m)?;
        if ms.status != MStatus::Funded {
            return Err("invalid_transition");
        }
        self.ms(proj, m).status = MStatus::Submitted;
        Ok(())
    }

    /// Escrow of one milestone paid out: `release` to the seller (less commission), the rest to the buyer.
    fn settle_milestone(&mut self, proj: u8, m: u32, release: i64, status: MStatus) {
        let p = self.projects[&proj].clone();
        let ms = p.milestones[(m - 1) as usize].clone();
        let held = ms.funded - ms.released - ms.refunded;
        let refund = held - release;
        let commission = model_fee(release, p.commission_bps);
        let (fee_earned, fee_returned) = if held == 0 {
            (0, 0)
        } else {
            model_split(ms.fee, release, refund)
        };
        self.add(
            Account::Escrow {
                project: project_id(proj),
                milestone: m,
            },
            p.cur,
            -held,
        );
        self.add(
            Account::DeferredFees {
                project: project_id(proj),
            },
            p.cur,
            -ms.fee,
        );
        self.add(
            Account::UserAvailable {
                user: user(p.seller),
            },
            p.cur,
            release - commission,
        );
        self.add(Account::Commission, p.cur, commission);
        self.add(Account::PlatformFees, p.cur, fee_earned);
        self.add(
            Account::UserAvailable {
                user: user(p.buyer),
            },
            p.cur,
            refund + fee_returned,
        );
        let x = self.ms(proj, m);
        x.released += release;
        x.refunded += refund;
        x.fee = 0;
        x.status = status;
        let project = self.projects.get_mut(&proj).unwrap();
        let settled = |s: MStatus| {
            matches!(
                s,
                MStatus::Released | MStatus::Refunded | MStatus::Resolved | MStatus::Cancelled
            )
        };
        if project.milestones.iter().all(|m| settled(m.status)) {
            project.status = "completed";
        }
    }

    fn approve(&mut self, proj: u8, m: u32, as_buyer: bool) -> Expect {
        self.projects.get(&proj).ok_or("not_found")?;
        if !as_buyer {
            return Err("not_a_party");
        }
        let (_, ms) = self.project_milestone(proj, m)?;
        if ms.status != MStatus::Submitted {
            return Err("invalid_transition");
        }
        // Approval then the release follow-up: the whole held amount to the seller.
        let held = ms.funded - ms.released - ms.refunded;
        self.settle_milestone(proj, m, held, MStatus::Released);
        Ok(())
    }

    fn refund(&mut self, proj: u8, m: u32) -> Expect {
        self.projects.get(&proj).ok_or("not_found")?;
        let (_, ms) = self.project_milestone(proj, m)?;
        if !matches!(ms.status, MStatus::Funded | MStatus::Submitted) {
            return Err("invalid_transition");
        }
        self.settle_milestone(proj, m, 0, MStatus::Refunded);
        Ok(())
    }

    fn open_dispute(&mut self, proj: u8, m: u32, dispute: u8, release_pct: i64) -> Expect {
        let (_, ms) = self.project_milestone(proj, m)?;
        if self.disputes.contains_key(&dispute) {
            return Err("already_exists");
        }
        if !matches!(ms.status, MStatus::Funded | MStatus::Submitted) {
            return Err("invalid_transition");
        }
        let held = ms.funded - ms.released - ms.refunded;
        self.disputes.insert(
            dispute,
            MDispute {
                proj,
                m,
                release: held * release_pct / 100,
                open: true,
            },
        );
        self.ms(proj, m).status = MStatus::Disputed;
        self.projects.get_mut(&proj).unwrap().open_disputes += 1;
        Ok(())
    }

    fn accept_dispute(&mut self, dispute: u8) -> Expect {
        let d = self.disputes.get(&dispute).ok_or("not_found")?.clone();
        if !d.open {
            return Err("invalid_transition");
        }
        self.disputes.get_mut(&dispute).unwrap().open = false;
        self.projects.get_mut(&d.proj).unwrap().open_disputes -= 1;
        self.settle_milestone(d.proj, d.m, d.release, MStatus::Resolved);
        Ok(())
    }

    /// A card refund's checks on the deposit it names, in the engine's order.
    fn refundable(&self, pay: u8, who: u8, cur: Currency, amount: i64, deposit: u8) -> Expect {
        if deposit == pay {
            return Err("invalid_command");
        }
        let d = self.payments.get(&deposit).ok_or("not_found")?;
        if d.outbound {
            return Err("invalid_transition");
        }
        if d.who != who {
            return Err("not_a_party");
        }
        if d.status != PStatus::Completed {
            return Err("invalid_transition");
        }
        if d.cur != cur {
            return Err("currency_mismatch");
        }
        if amount > d.received - d.refunded {
            return Err("amount_too_large");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn payout(
        &mut self,
        pay: u8,
        who: u8,
        cur: Currency,
        amount: i64,
        fee: i64,
        card_refund: bool,
        deposit: u8,
    ) -> Expect {
        if card_refund {
            self.refundable(pay, who, cur, amount, deposit)?;
        }
        if let Some(policy) = &self.policy
            && !card_refund
        {
            let (min, default, max) = policy.payout_fee;
            let bounds = (
                model_fee(amount, min),
                model_fee(amount, default),
                model_fee(amount, max),
            );
            if !policy.allows(fee, bounds) {
                return Err("fee_outside_policy");
            }
        }
        if self.payments.contains_key(&pay) {
            return Err("already_exists");
        }
        let fee = if card_refund { 0 } else { fee };
        if self.wallet(who, cur) < amount + fee {
            return Err("insufficient_funds");
        }
        self.add(
            Account::UserAvailable { user: user(who) },
            cur,
            -(amount + fee),
        );
        self.add(transit(pay, card_refund), cur, amount + fee);
        self.payments.insert(
            pay,
            MPayment {
                who,
                cur,
                amount,
                fee,
                outbound: true,
                card_refund,
                status: PStatus::Pending,
                late_success: false,
                late_failure: false,
                received: 0,
                refunded: 0,
                refund_of: card_refund.then_some(deposit),
            },
        );
        if card_refund {
            self.payments.get_mut(&deposit).unwrap().refunded += amount;
        }
        Ok(())
    }

    fn transfer_outcome(&mut self, pay: u8, success: bool) -> Expect {
        let p = self.payments.get(&pay).ok_or("not_found")?.clone();
        if !p.outbound {
            return Err("invalid_transition");
        }
        let transit = transit(pay, p.card_refund);
        match (success, &p.status) {
            (true, PStatus::Pending) => {
                self.add(transit, p.cur, -(p.amount + p.fee));
                self.clearing(p.cur, -p.amount);
                self.add(Account::PayoutFees, p.cur, p.fee);
                self.payments.get_mut(&pay).unwrap().status = PStatus::Completed;
            }
            (true, PStatus::Failed) if !p.late_success => {
                // Money really left after we had given it back: a receivable, never a negative wallet.
                self.add(Account::Receivable { user: user(p.who) }, p.cur, p.amount);
                self.clearing(p.cur, -p.amount);
                self.payments.get_mut(&pay).unwrap().late_success = true;
            }
            (false, PStatus::Pending) => {
                self.add(transit, p.cur, -(p.amount + p.fee));
                self.add(
                    Account::UserAvailable { user: user(p.who) },
                    p.cur,
                    p.amount + p.fee,
                );
                self.payments.get_mut(&pay).unwrap().status = PStatus::Failed;
                // A failed card refund gives its deposit's reservation back.
                if let Some(deposit) = p.refund_of {
                    self.payments.get_mut(&deposit).unwrap().refunded -= p.amount;
                }
            }
            (false, PStatus::Completed) => self.payments.get_mut(&pay).unwrap().late_failure = true,
            _ => {}
        }
        Ok(())
    }

    fn cancel_project(&mut self, proj: u8) -> Expect {
        let p = self.projects.get(&proj).ok_or("not_found")?.clone();
        if p.status != "agreed" {
            return Err("invalid_transition");
        }
        if p.open_disputes > 0 {
            return Err("open_dispute");
        }
        if p.milestones
            .iter()
            .any(|m| m.released > 0 || matches!(m.status, MStatus::Released | MStatus::Resolved))
        {
            return Err("invalid_transition");
        }
        for (i, ms) in p.milestones.iter().enumerate() {
            let m = (i + 1) as u32;
            match ms.status {
                MStatus::Unfunded => self.ms(proj, m).status = MStatus::Cancelled,
                MStatus::Funded | MStatus::Submitted => {
                    self.settle_milestone(proj, m, 0, MStatus::Refunded)
                }
                _ => {}
            }
        }
        self.projects.get_mut(&proj).unwrap().status = "cancelled";
        Ok(())
    }
}

fn transit(pay: u8, card_refund: bool) -> Account {
    if card_refund {
        Account::RefundsInTransit(payment_id(pay))
    } else {
        Account::PayoutsInTransit(payment_id(pay))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Driving the engine.

struct Harness {
    ledger: MemoryLedger,
    model: Model,
    step: u64,
    start: DateTime<Utc>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            ledger: MemoryLedger::new(),
            model: Model::default(),
            step: 0,
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.start + Duration::seconds(self.step as i64)
    }

    /// Runs one command (with its follow-ups); returns the rejection code of the command or of a follow-up.
    fn run(&mut self, actor: Actor, command: Command) -> Result<(), String> {
        self.step += 1;
        let env = CommandEnvelope {
            command_id: Uuid::from_u128(0xF000_0000 + u128::from(self.step)),
            actor,
            at: self.now(),
            command,
        };
        // Bounded work: no command (with its follow-ups) needs more streams than the documented bound.
        let needed = self.ledger.streams_needed(&env);
        if needed > STREAMS_PER_COMMAND_MAX {
            return Err(format!(
                "{:?} needs {needed} streams > {STREAMS_PER_COMMAND_MAX}",
                env.command
            ));
        }
        let outcome = self
            .ledger
            .execute(&env)
            .map_err(|r| r.code().to_string())?;
        for (follow, result) in &outcome.follow_ups {
            if let Err(r) = result {
                return Err(format!(
                    "follow-up {:?} rejected: {} ({r})",
                    follow.command,
                    r.code()
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let cur = |c: u8| CURRENCIES[c as usize];
        let money = |minor: i64, c: Currency| Money::from_minor(minor, c);
        match op {
            Op::Deposit {
                pay,
                buyer,
                cur: c,
                amount,
                settle_now,
            } => {
                let expected = self.model.deposit(*pay, *buyer, cur(*c), *amount);
                let got = self.run(
                    Actor::User(user(*buyer)),
                    Command::InitiateDeposit {
                        payment_id: payment_id(*pay),
                        amount: money(*amount, cur(*c)),
                        gateway: GATEWAY,
                        fund: None,
                    },
                );
                let accepted = got.is_ok();
                compare(op, expected, got)?;
                if accepted && *settle_now {
                    self.apply(&Op::DepositOutcome {
                        pay: *pay,
                        success: true,
                        amount: *amount,
                        fee: amount / 50,
                        times: 1,
                    })?;
                }
                Ok(())
            }
            Op::DepositOutcome {
                pay,
                success,
                amount,
                fee,
                times,
            } => {
                let currency = self
                    .model
                    .payments
                    .get(pay)
                    .map(|p| p.cur)
                    .unwrap_or(Currency::USD);
                let expected = self.model.deposit_outcome(*pay, *success, *amount, *fee);
                for _ in 0..*times {
                    let command = if *success {
                        Command::ConfirmDeposit {
                            payment_id: payment_id(*pay),
                            amount: money(*amount, currency),
                            gateway_fee: Some(money(*fee, currency)),
                            occurred_at: None,
                            fee_in_suspense: None,
                        }
                    } else {
                        Command::FailDeposit {
                            payment_id: payment_id(*pay),
                            reason: "card declined".into(),
                        }
                    };
                    let got = self.run(Actor::Gateway(GATEWAY), command);
                    compare(op, expected, got)?;
                }
                Ok(())
            }
            Op::CreateProject {
                proj,
                buyer,
                seller,
                cur: c,
                milestones,
                commission_bps,
                buyer_fee_bps,
            } => {
                let currency = cur(*c);
                let expected = self.model.create_project(
                    *proj,
                    *buyer,
                    *seller,
                    currency,
                    milestones,
                    *commission_bps,
                    *buyer_fee_bps,
                );
                let fees = FeePolicy {
                    commission_rate: Rate::from_bps(*commission_bps).unwrap(),
                    buyer_fee_rate: Rate::from_bps(*buyer_fee_bps).unwrap(),
                    ..FeePolicy::default()
                };
                let project_id = project_id(*proj);
                let create = Command::CreateProject {
                    project_id,
                    buyer: user(*buyer),
                    seller: user(*seller),
                    currency,
                    milestones: milestones.iter().map(|m| money(*m, currency)).collect(),
                    fees: fees.into(),
                };
                let got = self.run(Actor::User(user(*buyer)), create);
                compare(op, expected, got.clone())?;
                if got.is_ok() {
                    self.run(
                        Actor::User(user(*buyer)),
                        Command::SubmitProjectForAgreement { project_id },
                    )
                    .map_err(fail)?;
                    self.run(
                        Actor::User(user(*seller)),
                        Command::AgreeToProject { project_id },
                    )
                    .map_err(fail)?;
                }
                Ok(())
            }
            Op::Fund { proj, m, as_buyer } => {
                let expected = self.model.fund(*proj, *m, *as_buyer);
                let actor = self.party(*proj, *as_buyer, true);
                let got = self.run(
                    actor,
                    Command::FundMilestone {
                        project_id: project_id(*proj),
                        milestone: *m,
                    },
                );
                compare(op, expected, got)
            }
            Op::Submit { proj, m, as_seller } => {
                let expected = self.model.submit(*proj, *m, *as_seller);
                let actor = self.party(*proj, *as_seller, false);
                let got = self.run(
                    actor,
                    Command::SubmitMilestone {
                        project_id: project_id(*proj),
                        milestone: *m,
                    },
                );
                compare(op, expected, got)
            }
            Op::Approve { proj, m, as_buyer } => {
                let expected = self.model.approve(*proj, *m, *as_buyer);
                let actor = self.party(*proj, *as_buyer, true);
                let got = self.run(
                    actor,
                    Command::ApproveMilestone {
                        project_id: project_id(*proj),
                        milestone: *m,
                    },
                );
                compare(op, expected, got)
            }
            Op::Refund { proj, m } => {
                let expected = self.model.refund(*proj, *m);
                let actor = self.party(*proj, false, true);
                let got = self.run(
                    actor,
                    Command::RefundMilestone {
                        project_id: project_id(*proj),
                        milestone: *m,
                    },
                );
                compare(op, expected, got)
            }
            Op::OpenDispute {
                proj,
                m,
                dispute,
                release_pct,
            } => {
                let held = self
                    .model
                    .project_milestone(*proj, *m)
                    .map(|(_, ms)| ms.funded - ms.released - ms.refunded)
                    .unwrap_or(0);
                let currency = self
                    .model
                    .projects
                    .get(proj)
                    .map(|p| p.cur)
                    .unwrap_or(Currency::USD);
                let expected = self.model.open_dispute(*proj, *m, *dispute, *release_pct);
                let actor = self.party(*proj, true, true);
                let got = self.run(
                    actor,
                    Command::OpenDispute {
                        dispute_id: dispute_id(*dispute),
                        project_id: project_id(*proj),
                        milestone: *m,
                        reason: "not delivered".into(),
                        proposed_release: money(held * release_pct / 100, currency),
                        respond_by: self.now() + Duration::days(7),
                    },
                );
                compare(op, expected, got)
            }
            Op::AcceptDispute { dispute } => {
                let seller = self
                    .model
                    .disputes
                    .get(dispute)
                    .map(|d| self.model.projects[&d.proj].seller)
                    .unwrap_or(2);
                let expected = self.model.accept_dispute(*dispute);
                let got = self.run(
                    Actor::User(user(seller)),
                    Command::AcceptDisputeProposal {
                        dispute_id: dispute_id(*dispute),
                    },
                );
                compare(op, expected, got)
            }
            Op::Payout {
                pay,
                who,
                cur: c,
                amount,
                fee,
                card_refund,
                deposit,
            } => {
                let currency = cur(*c);
                let expected =
                    self.model
                        .payout(*pay, *who, currency, *amount, *fee, *card_refund, *deposit);
                let command = if *card_refund {
                    Command::RequestCardRefund {
                        refund_id: payment_id(*pay),
                        deposit_id: payment_id(*deposit),
                        amount: money(*amount, currency),
                        gateway: GATEWAY,
                    }
                } else {
                    Command::RequestPayout {
                        payout_id: payment_id(*pay),
                        amount: money(*amount, currency),
                        fee: Some(money(*fee, currency)),
                        gateway: GATEWAY,
                    }
                };
                let got = self.run(Actor::User(user(*who)), command);
                compare(op, expected, got)
            }
            Op::TransferOutcome {
                pay,
                success,
                times,
            } => {
                let expected = self.model.transfer_outcome(*pay, *success);
                for _ in 0..*times {
                    let command = if *success {
                        Command::ConfirmTransfer {
                            payment_id: payment_id(*pay),
                            gateway_fee: None,
                            occurred_at: None,
                            fee_in_suspense: None,
                        }
                    } else {
                        Command::FailTransfer {
                            payment_id: payment_id(*pay),
                            reason: "account closed".into(),
                        }
                    };
                    let got = self.run(Actor::Gateway(GATEWAY), command);
                    compare(op, expected, got)?;
                }
                Ok(())
            }
            Op::SetFeePolicy {
                commission,
                buyer_fee,
                payout_fee,
                overrides_allowed,
                by_admin,
            } => {
                let policy = MPolicy {
                    commission: *commission,
                    buyer_fee: *buyer_fee,
                    payout_fee: *payout_fee,
                    overrides_allowed: *overrides_allowed,
                };
                let expected = if *by_admin {
                    self.model.policy = Some(policy);
                    Ok(())
                } else {
                    Err("not_a_party")
                };
                let bounds = |(min, default, max): (u32, u32, u32)| RateBounds {
                    default: Rate::from_bps(default).unwrap(),
                    min: Rate::from_bps(min).unwrap(),
                    max: Rate::from_bps(max).unwrap(),
                };
                let actor = if *by_admin {
                    Actor::Admin(user(9))
                } else {
                    Actor::User(user(0))
                };
                let got = self.run(
                    actor,
                    Command::SetFeePolicy {
                        payout_fee_min: vec![],
                        commission: bounds(*commission),
                        buyer_fee: bounds(*buyer_fee),
                        payout_fee: bounds(*payout_fee),
                        overrides_allowed: *overrides_allowed,
                    },
                );
                compare(op, expected, got)
            }
            Op::Progress { proj, m_raw } => {
                let Some(p) = self.model.projects.get(proj).cloned() else {
                    return Ok(());
                };
                let m = 1 + m_raw % p.milestones.len() as u32;
                let next = match p.milestones[(m - 1) as usize].status {
                    MStatus::Unfunded => Op::Fund {
                        proj: *proj,
                        m,
                        as_buyer: true,
                    },
                    MStatus::Funded => Op::Submit {
                        proj: *proj,
                        m,
                        as_seller: true,
                    },
                    MStatus::Submitted => Op::Approve {
                        proj: *proj,
                        m,
                        as_buyer: true,
                    },
                    MStatus::Disputed => {
                        let open = self
                            .model
                            .disputes
                            .iter()
                            .find(|(_, d)| d.open && d.proj == *proj && d.m == m);
                        match open {
                            Some((dispute, _)) => Op::AcceptDispute { dispute: *dispute },
                            None => return Ok(()),
                        }
                    }
                    _ => return Ok(()),
                };
                self.apply(&next)
            }
            Op::CancelProject { proj } => {
                let expected = self.model.cancel_project(*proj);
                let actor = self.party(*proj, false, true);
                let got = self.run(
                    actor,
                    Command::CancelProject {
                        project_id: project_id(*proj),
                    },
                );
                compare(op, expected, got)
            }
        }
    }

    /// The project's buyer (`buyer_role`) or seller when `right`, else the other party (a wrong actor).
    fn party(&self, proj: u8, right: bool, buyer_role: bool) -> Actor {
        let (buyer, seller) = self
            .model
            .projects
            .get(&proj)
            .map(|p| (p.buyer, p.seller))
            .unwrap_or((0, 2));
        let who = if right == buyer_role { buyer } else { seller };
        Actor::User(user(who))
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let balances = self.ledger.balances();
        // 1. Every entry: >= 2 postings, positive amounts, one currency, debits = credits.
        for change in self.ledger.log() {
            if let Some(e) = change.event.entry() {
                prop_assert!(e.postings().len() >= 2);
                let mut net = 0_i64;
                for p in e.postings() {
                    prop_assert!(p.amount.minor() > 0 && p.amount.currency() == e.currency());
                    net += if p.side == Side::Debit {
                        p.amount.minor()
                    } else {
                        -p.amount.minor()
                    };
                }
                prop_assert_eq!(net, 0, "unbalanced entry in {:?}", change.event);
            }
        }
        // 2. Trial balance is zero per currency.
        for (currency, imbalance) in balances.imbalance_by_currency() {
            prop_assert_eq!(imbalance, 0, "trial balance of {} is off", currency);
        }
        // 5. No constrained account below zero.
        prop_assert!(
            balances.negative_constrained().is_empty(),
            "negative: {:?}",
            balances.negative_constrained()
        );
        // Every account the model knows has the model's balance, and no other account holds money.
        for ((account, currency), expected) in &self.model.accounts {
            prop_assert_eq!(
                balances.balance(account, *currency),
                i128::from(*expected),
                "{} {}",
                account,
                currency
            );
        }
        for ((account, currency), _) in balances.iter() {
            let known = self
                .model
                .accounts
                .get(&(*account, *currency))
                .copied()
                .unwrap_or(0);
            prop_assert_eq!(
                balances.balance(account, *currency),
                i128::from(known),
                "unexpected {} {}",
                account,
                currency
            );
        }
        self.check_aggregates()
    }

    fn check_aggregates(&self) -> Result<(), TestCaseError> {
        let balances = self.ledger.balances();
        for (stream, state) in self.ledger.states() {
            match (stream, state) {
                // Wallet state (the guard) agrees with the journal and with the model.
                (StreamId::Wallet { user, currency }, AggState::Wallet(w)) => {
                    prop_assert!(w.available_minor >= 0 && w.pending_minor >= 0);
                    prop_assert_eq!(
                        i128::from(w.available_minor),
                        balances.balance(&Account::UserAvailable { user: *user }, *currency),
                        "wallet {}",
                        stream
                    );
                    let modelled = self
                        .model
                        .accounts
                        .get(&(Account::UserAvailable { user: *user }, *currency))
                        .copied()
                        .unwrap_or(0);
                    prop_assert_eq!(w.available_minor, modelled, "wallet {} vs model", stream);
                }
                // 3 and 4. Escrow per milestone = funded - released - refunded; released only after approval.
                (StreamId::Project(pid), AggState::Project(p)) if p.exists() => {
                    for (i, m) in p.milestones.iter().enumerate() {
                        let account = Account::Escrow {
                            project: *pid,
                            milestone: (i + 1) as u32,
                        };
                        prop_assert_eq!(
                            balances.balance(&account, p.currency()),
                            i128::from(m.held_minor())
                        );
                        prop_assert!(m.released_minor + m.refunded_minor <= m.funded_minor);
                        if m.released_minor > 0 {
                            prop_assert!(
                                m.approved || m.status == MilestoneStatus::Resolved,
                                "released without approval: {:?}",
                                m
                            );
                        }
                    }
                }
                // 9. In-transit accounts are zero once their payout/refund is terminal.
                (StreamId::Payment(pid), AggState::Payment(p)) if p.exists() => {
                    if matches!(
                        p.status,
                        PaymentStatus::Completed | PaymentStatus::Failed | PaymentStatus::Cancelled
                    ) {
                        for account in [
                            Account::PayoutsInTransit(*pid),
                            Account::RefundsInTransit(*pid),
                        ] {
                            prop_assert_eq!(balances.balance(&account, p.currency.unwrap()), 0);
                        }
                    }
                }
                _ => {}
            }
        }
        // 10. Income and expense accounts are only touched by releases, payouts, fees or chargebacks.
        for change in self.ledger.log() {
            let Some(entry) = change.event.entry() else {
                continue;
            };
            if entry
                .postings()
                .iter()
                .any(|p| p.account.is_income_or_expense())
            {
                let (event_type, _) = change.event.to_stored();
                let allowed = [
                    "MilestoneReleased",
                    "MilestoneResolved",
                    "MilestoneRefunded",
                    "PayoutCompleted",
                    "CardRefundProcessed",
                    "DepositSucceeded",
                    "SuccessAfterFailure",
                ];
                prop_assert!(
                    allowed.contains(&event_type.as_str()) || event_type.starts_with("Chargeback"),
                    "{} touched income/expense",
                    event_type
                );
            }
        }
        Ok(())
    }

    /// 7. Replay is deterministic, and a snapshot at any point plus the tail equals the full replay.
    fn check_replay(&self) -> Result<(), TestCaseError> {
        let log = self.ledger.log();
        let replayed = MemoryLedger::replay(log);
        prop_assert_eq!(replayed.balances(), self.ledger.balances());
        prop_assert_eq!(replayed.written_states(), self.ledger.written_states());
        let cut = log.len() / 2;
        let mut from_snapshot = MemoryLedger::replay(&log[..cut]);
        for change in &log[cut..] {
            from_snapshot.apply(change.clone());
        }
        prop_assert_eq!(from_snapshot.written_states(), self.ledger.written_states());
        // Events survive their JSON form.
        for change in log {
            let (event_type, payload) = change.event.to_stored();
            let decoded = Event::from_stored(
                &change.stream,
                &event_type,
                crate::engine::SCHEMA_VERSION,
                payload,
            )
            .map_err(fail)?;
            prop_assert_eq!(&decoded, &change.event);
        }
        Ok(())
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn compare(op: &Op, expected: Expect, got: Result<(), String>) -> Result<(), TestCaseError> {
    match (expected, got) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(code), Err(got)) if code == got => Ok(()),
        (expected, got) => Err(TestCaseError::fail(format!(
            "{op:?}: model expected {expected:?}, engine gave {got:?}"
        ))),
    }
}

fn run_sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op)?;
        h.check_invariants()?;
    }
    h.check_replay()
}

/// A setup that makes deep sequences likely (three projects, funded buyers), then random ops.
fn sequences() -> impl Strategy<Value = Vec<Op>> {
    let project = |proj: u8| {
        (
            0_u8..2,
            2_u8..4,
            currency_index(),
            prop::collection::vec(100_i64..20_000, 1..4),
            rate_bps(2_000),
            rate_bps(1_000),
        )
            .prop_map(
                move |(buyer, seller, cur, milestones, commission_bps, buyer_fee_bps)| {
                    Op::CreateProject {
                        proj,
                        buyer,
                        seller,
                        cur,
                        milestones,
                        commission_bps,
                        buyer_fee_bps,
                    }
                },
            )
    };
    let deposit = |pay: u8, buyer: u8| {
        (currency_index(), 10_000_i64..80_000).prop_map(move |(cur, amount)| Op::Deposit {
            pay,
            buyer,
            cur,
            amount,
            settle_now: true,
        })
    };
    let setup = (
        prop::option::weighted(0.3, fee_policy()),
        project(0),
        project(1),
        project(2),
        deposit(0, 0),
        deposit(1, 1),
        deposit(2, 0),
        deposit(3, 1),
    );
    (setup, prop::collection::vec(op_strategy(), 1..100)).prop_map(
        |((policy, a, b, c, d, e, f, g), mut ops)| {
            let mut all: Vec<Op> = policy.into_iter().collect();
            all.extend([a, b, c, d, e, f, g]);
            all.append(&mut ops);
            all
        },
    )
}

proptest! {
    // The default case count keeps `cargo test` quick; PROPTEST_CASES=10000 runs the long campaign.
    #![proptest_config(Config { cases: Config::default().cases, ..Config::default() })]
    #[test]
    fn engine_matches_the_reference_model(ops in sequences()) {
        run_sequence(&ops)?;
    }
}

/// The planted bug (a wallet credit applied twice in `Wallet::evolve`) must make the property test fail.
#[test]
fn planted_bug_is_caught_by_the_model_test() {
    crate::testing::set_planted_bug(true);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&sequences(), |ops| run_sequence(&ops));
    crate::testing::set_planted_bug(false);
    let error = result.expect_err("the planted double credit must be detected");
    assert!(
        error.to_string().contains("wallet"),
        "caught, but not by the wallet check: {error}"
    );
}

#[test]
fn model_arithmetic_matches_hand_computed_examples() {
    assert_eq!(model_fee(10_050, 500), 502);
    assert_eq!(model_fee(670, 500), 34); // 33.5 -> 34 (even)
    assert_eq!(model_fee(650, 500), 32); // 32.5 -> 32 (even)
    assert_eq!(model_split(100, 1, 2), (33, 67)); // 33.33 / 66.67: the larger remainder gets the unit
    assert_eq!(model_split(1, 1, 1), (1, 0)); // a tie goes to the first part
}
