//! Project (escrow agreement) with its milestones: funding, submission, approval, release, refunds,
//! dispute resolution and cancellation, with the fee policy applied at the right moment.
//!
//! Fee policy (see ARCHITECTURE.md): the seller-paid commission `c = round_half_even(R * commission_rate)` is
//! taken at release; the buyer-paid fee `f = round_half_even(A * buyer_fee_rate)` is collected when a
//! milestone is funded, held in `Liabilities:DeferredFees:<project>` and earned at release. When escrow goes
//! back to the buyer, the buyer fee of the refunded part is returned if `return_buyer_fee_on_refund` (the
//! default), else earned; on a split the milestone fee is divided between the released and refunded parts by
//! largest remainder, so nothing is left in DeferredFees once a milestone is settled.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ctx, require_currency, require_positive, require_within_ceiling};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, MilestoneNo};
use crate::journal::{Account, EntryBuilder, JournalEntry};
use crate::money::{Currency, Money, Rate};

/// Bound on milestones per project (a limit on everything).
pub const MILESTONES_PER_PROJECT_MAX: usize = 100;
/// Marketplaces auto-approve after 14 days of silence.
pub const AUTO_APPROVE_DAYS_DEFAULT: u32 = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeePolicy {
    /// Seller-paid, deducted from each release.
    #[serde(default)]
    pub commission_rate: Rate,
    /// Buyer-paid, collected at funding, earned at release.
    #[serde(default)]
    pub buyer_fee_rate: Rate,
    /// Whether refunded escrow also returns the buyer fee of the refunded part.
    #[serde(default = "yes")]
    pub return_buyer_fee_on_refund: bool,
    /// Seller proceeds land in `Pending` (true) or `Available` (false).
    #[serde(default)]
    pub release_to_pending: bool,
    #[serde(default = "auto_approve_days")]
    pub auto_approve_days: u32,
    /// Bookings: the share of the escrow a provider keeps when the client cancels after confirmation.
    #[serde(default)]
    pub late_cancel_keep_rate: Rate,
}

/// Fee terms as a command (`create_project`, `create_quote`) states them. A rate left out takes the ledger's
/// default (`aggregates::ledger_policy`; zero without a policy); a stated rate must be within the policy. The
/// decided terms are a [`FeePolicy`], which is what events store.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeTerms {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_fee_rate: Option<Rate>,
    #[serde(default = "yes")]
    pub return_buyer_fee_on_refund: bool,
    #[serde(default)]
    pub release_to_pending: bool,
    #[serde(default = "auto_approve_days")]
    pub auto_approve_days: u32,
    #[serde(default)]
    pub late_cancel_keep_rate: Rate,
}

impl Default for FeeTerms {
    /// Both rates left to the ledger's policy; the other terms as `FeePolicy::default()`.
    fn default() -> Self {
        FeeTerms {
            commission_rate: None,
            buyer_fee_rate: None,
            ..FeePolicy::default().into()
        }
    }
}

impl From<FeePolicy> for FeeTerms {
    /// Terms stating every rate explicitly.
    fn from(p: FeePolicy) -> Self {
        FeeTerms {
            commission_rate: Some(p.commission_rate),
            buyer_fee_rate: Some(p.buyer_fee_rate),
            return_buyer_fee_on_refund: p.return_buyer_fee_on_refund,
            release_to_pending: p.release_to_pending,
            auto_approve_days: p.auto_approve_days,
            late_cancel_keep_rate: p.late_cancel_keep_rate,
        }
    }
}

impl FeeTerms {
    /// These terms with the two platform rates decided.
    pub fn with_rates(&self, commission_rate: Rate, buyer_fee_rate: Rate) -> FeePolicy {
        FeePolicy {
            commission_rate,
            buyer_fee_rate,
            return_buyer_fee_on_refund: self.return_buyer_fee_on_refund,
            release_to_pending: self.release_to_pending,
            auto_approve_days: self.auto_approve_days,
            late_cancel_keep_rate: self.late_cancel_keep_rate,
        }
    }
}

fn yes() -> bool {
    true
}
fn auto_approve_days() -> u32 {
    AUTO_APPROVE_DAYS_DEFAULT
}

impl Default for FeePolicy {
    fn default() -> Self {
        FeePolicy {
            commission_rate: Rate::ZERO,
            buyer_fee_rate: Rate::ZERO,
            return_buyer_fee_on_refund: true,
            release_to_pending: false,
            auto_approve_days: AUTO_APPROVE_DAYS_DEFAULT,
            late_cancel_keep_rate: Rate::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProjectStatus {
    #[default]
    None,
    Draft,
    AwaitingAgreement,
    Agreed,
    PartiallyFunded,
    Funded,
    Completed,
    Closed,
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MilestoneStatus {
    #[default]
    Unfunded,
    Funded,
    Submitted,
    ChangesRequested,
    Approved,
    AutoApproved,
    Released,
    Disputed,
    Resolved,
    Refunded,
    Cancelled,
    /// Its escrow was taken to cover a lost chargeback of the buyer's deposit.
    ChargedBack,
}

impl MilestoneStatus {
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Released | Self::Resolved | Self::Refunded | Self::Cancelled | Self::ChargedBack
        )
    }
    /// Escrow is held and no decision about it has been made.
    pub fn is_held_open(self) -> bool {
        matches!(
            self,
            Self::Funded | Self::Submitted | Self::ChangesRequested
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilestoneState {
    pub amount_minor: i64,
    pub buyer_fee_minor: i64,
    pub status: MilestoneStatus,
    pub before_dispute: MilestoneStatus,
    pub funded_minor: i64,
    pub released_minor: i64,
    pub refunded_minor: i64,
    #[serde(default)]
    pub charged_back_minor: i64,
    pub submitted_at: Option<DateTime<Utc>>,
    pub approved: bool,
    /// Seller proceeds of this milestone's release credited to the seller's pending balance, when they
    /// mature (`matures_at`), and whether they have.
    #[serde(default)]
    pub pending_minor: i64,
    #[serde(default)]
    pub matures_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub proceeds_matured: bool,
    /// The dispute holding this milestone now (only that dispute's own end clears or resolves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute_id: Option<Uuid>,
}

impl MilestoneState {
    /// Escrow still held for this milestone.
    pub fn held_minor(&self) -> i64 {
        self.funded_minor - self.released_minor - self.refunded_minor - self.charged_back_minor
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    pub id: Uuid,
    pub status: ProjectStatus,
    pub creator: Uuid,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub currency: Option<Currency>,
    pub fees: FeePolicy,
    pub booking: Option<Uuid>,
    pub milestones: Vec<MilestoneState>,
    pub buyer_agreed: bool,
    pub seller_agreed: bool,
    pub open_disputes: u32,
}

impl ProjectState {
    pub fn exists(&self) -> bool {
        self.status != ProjectStatus::None
    }

    pub fn currency(&self) -> Currency {
        self.currency.expect("an existing project has a currency")
    }

    pub fn is_party(&self, actor: &Actor) -> bool {
        actor.is(self.buyer) || actor.is(self.seller) || self.is_creator(actor)
    }

    /// The project's creator (a user, or the operator who created it), whatever its role in the deal.
    pub fn is_creator(&self, actor: &Actor) -> bool {
        matches!(actor, Actor::User(id) | Actor::Admin(id) if *id == self.creator)
    }

    pub fn milestone(&self, no: MilestoneNo) -> Result<&MilestoneState, Rejection> {
        (no as usize)
            .checked_sub(1)
            .and_then(|i| self.milestones.get(i))
            .ok_or(Rejection::UnknownMilestone(no))
    }

    /// Escrow still held across all milestones.
    pub fn held_minor(&self) -> i64 {
        self.milestones.iter().map(MilestoneState::held_minor).sum()
    }

    /// Where released money lands for the seller: Pending or Available, per the fee policy.
    fn seller_proceeds_account(&self) -> Account {
        if self.fees.release_to_pending {
            Account::UserPending { user: self.seller }
        } else {
            Account::UserAvailable { user: self.seller }
        }
    }

    fn money(&self, minor: i64) -> Money {
        Money::from_minor(minor, self.currency())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProject {
    pub project_id: Uuid,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub currency: Currency,
    pub milestones: Vec<Money>,
    #[serde(default)]
    pub fees: FeePolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProjectCommand {
    Create(NewProject),
    /// Opened by a booking: created already agreed by both parties (the quote was the agreement).
    CreateForBooking {
        project: NewProject,
        booking_id: Uuid,
    },
    SubmitForAgreement,
    Agree,
    Fund {
        milestone: MilestoneNo,
    },
    Submit {
        milestone: MilestoneNo,
    },
    RequestChanges {
        milestone: MilestoneNo,
    },
    Approve {
        milestone: MilestoneNo,
    },
    AutoApprove {
        milestone: MilestoneNo,
    },
    Release {
        milestone: MilestoneNo,
    },
    /// The seller (or an operator) gives the held escrow back to the buyer.
    Refund {
        milestone: MilestoneNo,
    },
    CancelMilestone {
        milestone: MilestoneNo,
    },
    MarkDisputed {
        milestone: MilestoneNo,
        dispute_id: Uuid,
    },
    WithdrawDispute {
        milestone: MilestoneNo,
        dispute_id: Uuid,
    },
    /// Applies a split decided by a dispute or a cancellation policy: `release + refund = held`.
    Resolve {
        milestone: MilestoneNo,
        release: Money,
        refund: Money,
        cause: Uuid,
    },
    Cancel,
    Close,
    /// Engine-internal: a release's pending proceeds mature; `wallet_pending_minor` is what the seller's
    /// pending balance holds now (the amount is the smaller of the two).
    MatureProceeds {
        milestone: MilestoneNo,
        wallet_pending_minor: i64,
    },
    /// Engine-internal: escrow (and then the milestone's buyer fee) taken to cover a lost chargeback.
    ChargeBack {
        milestone: MilestoneNo,
        escrow: Money,
        buyer_fee: Money,
        chargeback_id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProjectEvent {
    ProjectCreated {
        project_id: Uuid,
        creator: Uuid,
        buyer: Uuid,
        seller: Uuid,
        currency: Currency,
        milestones: Vec<Money>,
        fees: FeePolicy,
        booking_id: Option<Uuid>,
    },
    ProjectSubmittedForAgreement,
    ProjectPartyAgreed {
        party: Uuid,
    },
    ProjectAgreed,
    MilestoneFunded {
        milestone: MilestoneNo,
        amount: Money,
        buyer_fee: Money,
        entry: JournalEntry,
    },
    MilestoneSubmitted {
        milestone: MilestoneNo,
        at: DateTime<Utc>,
    },
    MilestoneChangesRequested {
        milestone: MilestoneNo,
    },
    MilestoneApproved {
        milestone: MilestoneNo,
        auto: bool,
    },
    MilestoneReleased {
        milestone: MilestoneNo,
        amount: Money,
        commission: Money,
        fee_earned: Money,
        seller_bucket_pending: bool,
        entry: JournalEntry,
        /// When the proceeds credited to pending mature (stamped by the engine from the ledger's policy).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matures_at: Option<DateTime<Utc>>,
    },
    MilestoneRefunded {
        milestone: MilestoneNo,
        amount: Money,
        fee_returned: Money,
        fee_earned: Money,
        entry: JournalEntry,
    },
    MilestoneDisputed {
        milestone: MilestoneNo,
        dispute_id: Uuid,
    },
    MilestoneDisputeWithdrawn {
        milestone: MilestoneNo,
        dispute_id: Uuid,
        /// When it was withdrawn: a milestone back in `Submitted` restarts its approval clock from here
        /// (absent in events recorded before the clock restarted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    MilestoneResolved {
        milestone: MilestoneNo,
        released: Money,
        refunded: Money,
        commission: Money,
        fee_earned: Money,
        fee_returned: Money,
        cause: Uuid,
        entry: JournalEntry,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matures_at: Option<DateTime<Utc>>,
    },
    MilestoneCancelled {
        milestone: MilestoneNo,
    },
    /// Mirror of a lost chargeback's posting to this milestone's escrow (the entry is on the payment).
    MilestoneChargedBack {
        milestone: MilestoneNo,
        escrow: Money,
        buyer_fee: Money,
        chargeback_id: Uuid,
    },
    /// A release's pending proceeds matured (the money moves on the seller's wallet stream).
    MilestoneProceedsMatured {
        milestone: MilestoneNo,
        amount: Money,
    },
    ProjectCompleted,
    ProjectCancelled,
    ProjectClosed,
}

pub struct Project;

const AGG: &str = "project";

fn validate_new(p: &NewProject) -> Result<(), Rejection> {
    if p.milestones.is_empty() || p.milestones.len() > MILESTONES_PER_PROJECT_MAX {
        return Err(Rejection::InvalidCommand(format!(
            "a project needs 1..={MILESTONES_PER_PROJECT_MAX} milestones, got {}",
            p.milestones.len()
        )));
    }
    if p.buyer == p.seller {
        return Err(Rejection::InvalidCommand(
            "buyer and seller must differ".into(),
        ));
    }
    for m in &p.milestones {
        require_currency(p.currency, *m)?;
        require_positive(*m)?;
    }
    let total: i128 = p.milestones.iter().map(|m| i128::from(m.minor())).sum();
    require_within_ceiling("a project's total", total, p.currency)?;
    Ok(())
}

fn created(p: &NewProject, creator: Uuid, booking_id: Option<Uuid>) -> ProjectEvent {
    ProjectEvent::ProjectCreated {
        project_id: p.project_id,
        creator,
        buyer: p.buyer,
        seller: p.seller,
        currency: p.currency,
        milestones: p.milestones.clone(),
        fees: p.fees,
        booking_id,
    }
}

impl Project {
    fn create(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        p: &NewProject,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if s.exists() {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: p.project_id.to_string(),
            });
        }
        validate_new(p)?;
        // The creator may be the buyer, the seller or a third party: an agent or a platform operator who
        // sets the deal up. Its rights are few (ARCHITECTURE.md, "Third-party creator"); no money moves to or
        // from it. Timers and gateways create nothing.
        let creator = match cmd.actor {
            Actor::User(id) | Actor::Admin(id) => id,
            Actor::System | Actor::Gateway(_) => {
                return Err(Rejection::not_party(
                    &cmd.actor,
                    "create a project",
                    "only a person or an operator",
                ));
            }
        };
        Ok(vec![created(p, creator, None)])
    }

    fn create_for_booking(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        p: &NewProject,
        booking: Uuid,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if s.exists() {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: p.project_id.to_string(),
            });
        }
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "open a booking project",
                "only the process logic",
            ));
        }
        validate_new(p)?;
        Ok(vec![
            created(p, p.buyer, Some(booking)),
            ProjectEvent::ProjectAgreed,
        ])
    }

    /// The creator puts a draft to its parties; a creating buyer or seller agrees by submitting.
    fn submit_for_agreement(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !s.is_creator(&cmd.actor) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "submit for agreement",
                "only the creator",
            ));
        }
        if s.status != ProjectStatus::Draft {
            return Err(Rejection::transition(AGG, s.status, "submit for agreement"));
        }
        let mut events = vec![ProjectEvent::ProjectSubmittedForAgreement];
        // A creating buyer or seller agrees by submitting; a third party's say-so is nobody's consent.
        if s.creator == s.buyer || s.creator == s.seller {
            events.push(ProjectEvent::ProjectPartyAgreed { party: s.creator });
        }
        Ok(events)
    }

    fn agree(cmd: &Ctx<ProjectCommand>, s: &ProjectState) -> Result<Vec<ProjectEvent>, Rejection> {
        if s.status != ProjectStatus::AwaitingAgreement {
            return Err(Rejection::transition(AGG, s.status, "agree"));
        }
        let party = cmd
            .actor
            .user()
            .filter(|u| *u == s.buyer || *u == s.seller)
            .ok_or_else(|| {
                Rejection::not_party(&cmd.actor, "agree to a project", "only its buyer or seller")
            })?;
        let already =
            (party == s.buyer && s.buyer_agreed) || (party == s.seller && s.seller_agreed);
        if already {
            return Err(Rejection::transition(
                AGG,
                "already agreed by this party",
                "agree",
            ));
        }
        let mut events = vec![ProjectEvent::ProjectPartyAgreed { party }];
        let both = (s.buyer_agreed || party == s.buyer) && (s.seller_agreed || party == s.seller);
        if both {
            events.push(ProjectEvent::ProjectAgreed);
        }
        Ok(events)
    }

    fn fund(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !(cmd.actor.is(s.buyer) || cmd.actor == Actor::System) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "fund a milestone",
                "only the buyer funds",
            ));
        }
        if !matches!(
            s.status,
            ProjectStatus::Agreed | ProjectStatus::PartiallyFunded | ProjectStatus::Funded
        ) {
            return Err(Rejection::transition(AGG, s.status, "fund a milestone"));
        }
        let m = s.milestone(no)?;
        if m.status != MilestoneStatus::Unfunded {
            return Err(Rejection::transition("milestone", m.status, "fund"));
        }
        let amount = s.money(m.amount_minor);
        let buyer_fee = amount.fee(s.fees.buyer_fee_rate);
        let total = amount.checked_add(buyer_fee)?;
        let entry = EntryBuilder::new(s.currency())
            .debit(Account::UserAvailable { user: s.buyer }, total)
            .credit(
                Account::Escrow {
                    project: s.id,
                    milestone: no,
                },
                amount,
            )
            .credit(Account::DeferredFees { project: s.id }, buyer_fee)
            .build(cmd.at, cmd.at)?;
        Ok(vec![ProjectEvent::MilestoneFunded {
            milestone: no,
            amount,
            buyer_fee,
            entry,
        }])
    }

    fn seller_step(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !cmd.actor.is(s.seller) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "submit work",
                "only the seller submits",
            ));
        }
        let m = s.milestone(no)?;
        if !matches!(
            m.status,
            MilestoneStatus::Funded | MilestoneStatus::ChangesRequested
        ) {
            return Err(Rejection::transition("milestone", m.status, "submit"));
        }
        Ok(vec![ProjectEvent::MilestoneSubmitted {
            milestone: no,
            at: cmd.at,
        }])
    }

    fn buyer_review(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
        approve: bool,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        let action = if approve {
            "approve"
        } else {
            "request changes"
        };
        if !cmd.actor.is(s.buyer) {
            return Err(Rejection::not_party(
                &cmd.actor,
                action,
                "only the buyer reviews work",
            ));
        }
        let m = s.milestone(no)?;
        if m.status != MilestoneStatus::Submitted {
            return Err(Rejection::transition("milestone", m.status, action));
        }
        Ok(vec![if approve {
            ProjectEvent::MilestoneApproved {
                milestone: no,
                auto: false,
            }
        } else {
            ProjectEvent::MilestoneChangesRequested { milestone: no }
        }])
    }

    fn auto_approve(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "auto-approve",
                "only the timer",
            ));
        }
        let m = s.milestone(no)?;
        if m.status != MilestoneStatus::Submitted {
            return Err(Rejection::transition("milestone", m.status, "auto-approve"));
        }
        let submitted = m
            .submitted_at
            .expect("a submitted milestone has a submission time");
        let due = submitted + Duration::days(i64::from(s.fees.auto_approve_days));
        // A booking's milestone is auto-approved by its booking's auto-acceptance, on the booking's clock.
        if s.booking.is_none() && cmd.at < due {
            return Err(Rejection::TooEarly {
                what: "auto-approval",
                due: due.to_rfc3339(),
            });
        }
        Ok(vec![ProjectEvent::MilestoneApproved {
            milestone: no,
            auto: true,
        }])
    }

    /// The pending proceeds of a release mature, once: at most what the seller's pending balance holds.
    fn mature_proceeds(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
        wallet_pending_minor: i64,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !cmd.actor.is_admin_or_system() {
            return Err(Rejection::not_party(
                &cmd.actor,
                "mature a release",
                "only timers or operators",
            ));
        }
        let m = s.milestone(no)?;
        if m.pending_minor == 0 || m.proceeds_matured {
            return Err(Rejection::InvalidCommand(format!(
                "milestone {no} has no pending proceeds to mature"
            )));
        }
        if let Some(due) = m.matures_at
            && cmd.at < due
        {
            return Err(Rejection::TooEarly {
                what: "maturation",
                due: due.to_rfc3339(),
            });
        }
        let amount = m.pending_minor.min(wallet_pending_minor.max(0));
        if amount == 0 {
            return Err(Rejection::InvalidCommand(
                "the seller's pending balance is empty".into(),
            ));
        }
        Ok(vec![ProjectEvent::MilestoneProceedsMatured {
            milestone: no,
            amount: s.money(amount),
        }])
    }

    /// Escrow (and the milestone's buyer fee) leaves towards the seller: the release entry.
    fn release(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !(cmd.actor.is(s.buyer) || cmd.actor.is_admin_or_system()) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "release escrow",
                "only the buyer, an operator or the process",
            ));
        }
        let m = s.milestone(no)?;
        if !matches!(
            m.status,
            MilestoneStatus::Approved | MilestoneStatus::AutoApproved
        ) {
            return Err(Rejection::transition("milestone", m.status, "release"));
        }
        let amount = s.money(m.held_minor());
        let (commission, net) = amount.split_fee(s.fees.commission_rate);
        let fee_earned = s.money(m.buyer_fee_minor);
        let seller = s.seller_proceeds_account();
        let entry = EntryBuilder::new(s.currency())
            .debit(
                Account::Escrow {
                    project: s.id,
                    milestone: no,
                },
                amount,
            )
            .debit(Account::DeferredFees { project: s.id }, fee_earned)
            .credit(seller, net)
            .credit(Account::Commission, commission)
            .credit(Account::PlatformFees, fee_earned)
            .build(cmd.at, cmd.at)?;
        let mut events = vec![ProjectEvent::MilestoneReleased {
            milestone: no,
            amount,
            commission,
            fee_earned,
            seller_bucket_pending: s.fees.release_to_pending,
            entry,
            matures_at: None,
        }];
        Project::completion(s, no, &mut events);
        Ok(events)
    }

    fn refund(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !(cmd.actor.is(s.seller) || matches!(cmd.actor, Actor::Admin(_))) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "refund escrow",
                "only the seller or an operator",
            ));
        }
        let m = s.milestone(no)?;
        if !m.status.is_held_open() {
            return Err(Rejection::transition("milestone", m.status, "refund"));
        }
        let mut events = vec![Project::refund_event(cmd.at, s, no)?];
        Project::completion(s, no, &mut events);
        Ok(events)
    }

    /// The full held escrow of one milestone back to the buyer's wallet, with its buyer fee per policy.
    fn refund_event(
        at: DateTime<Utc>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<ProjectEvent, Rejection> {
        let m = s.milestone(no)?;
        let amount = s.money(m.held_minor());
        let fee = s.money(m.buyer_fee_minor);
        let (fee_returned, fee_earned) = if s.fees.return_buyer_fee_on_refund {
            (fee, s.money(0))
        } else {
            (s.money(0), fee)
        };
        let entry = EntryBuilder::new(s.currency())
            .debit(
                Account::Escrow {
                    project: s.id,
                    milestone: no,
                },
                amount,
            )
            .debit(Account::DeferredFees { project: s.id }, fee)
            .credit(
                Account::UserAvailable { user: s.buyer },
                amount.checked_add(fee_returned)?,
            )
            .credit(Account::PlatformFees, fee_earned)
            .build(at, at)?;
        Ok(ProjectEvent::MilestoneRefunded {
            milestone: no,
            amount,
            fee_returned,
            fee_earned,
            entry,
        })
    }

    fn resolve(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
        release: Money,
        refund: Money,
        cause: Uuid,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !cmd.actor.is_admin_or_system() {
            return Err(Rejection::not_party(
                &cmd.actor,
                "apply a resolution",
                "only the dispute process or an operator",
            ));
        }
        let m = s.milestone(no)?;
        if !matches!(m.status, MilestoneStatus::Disputed) && !m.status.is_held_open() {
            return Err(Rejection::transition("milestone", m.status, "resolve"));
        }
        if m.status == MilestoneStatus::Disputed {
            require_holding_dispute(m, cause)?;
        }
        require_currency(s.currency(), release)?;
        require_currency(s.currency(), refund)?;
        let held = m.held_minor();
        if release.minor() < 0
            || refund.minor() < 0
            || release.minor().checked_add(refund.minor()) != Some(held)
        {
            return Err(Rejection::SplitMismatch {
                release: release.to_string(),
                refund: refund.to_string(),
                held: s.money(held).to_string(),
            });
        }
        let (commission, net) = release.split_fee(s.fees.commission_rate);
        let fee = s.money(m.buyer_fee_minor);
        let (mut fee_earned, mut fee_returned) = if held == 0 {
            (s.money(0), s.money(0))
        } else {
            let parts = fee.allocate(&[release.minor() as u64, refund.minor() as u64])?;
            (parts[0], parts[1])
        };
        if !s.fees.return_buyer_fee_on_refund {
            fee_earned = fee;
            fee_returned = s.money(0);
        }
        let seller = s.seller_proceeds_account();
        let entry = EntryBuilder::new(s.currency())
            .debit(
                Account::Escrow {
                    project: s.id,
                    milestone: no,
                },
                s.money(held),
            )
            .debit(Account::DeferredFees { project: s.id }, fee)
            .credit(seller, net)
            .credit(Account::Commission, commission)
            .credit(Account::PlatformFees, fee_earned)
            .credit(
                Account::UserAvailable { user: s.buyer },
                refund.checked_add(fee_returned)?,
            )
            .build(cmd.at, cmd.at)?;
        let mut events = vec![ProjectEvent::MilestoneResolved {
            milestone: no,
            released: release,
            refunded: refund,
            commission,
            fee_earned,
            fee_returned,
            cause,
            entry,
            matures_at: None,
        }];
        Project::completion(s, no, &mut events);
        Ok(events)
    }

    /// A dispute opened over a milestone whose escrow is held and undecided takes hold of it.
    fn mark_disputed(
        s: &ProjectState,
        no: MilestoneNo,
        dispute_id: Uuid,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        let m = s.milestone(no)?;
        if !m.status.is_held_open() {
            return Err(Rejection::transition(
                "milestone",
                m.status,
                "open a dispute",
            ));
        }
        Ok(vec![ProjectEvent::MilestoneDisputed {
            milestone: no,
            dispute_id,
        }])
    }

    /// The milestone's dispute ended without a split (withdrawn): only the process reacting to that dispute's
    /// own end may clear it (the engine checks the dispute stream), and only the dispute holding it.
    fn clear_dispute(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
        dispute_id: Uuid,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "clear a milestone's dispute",
                "only the dispute process, when its dispute is withdrawn",
            ));
        }
        let m = s.milestone(no)?;
        if m.status != MilestoneStatus::Disputed {
            return Err(Rejection::transition(
                "milestone",
                m.status,
                "withdraw a dispute",
            ));
        }
        require_holding_dispute(m, dispute_id)?;
        Ok(vec![ProjectEvent::MilestoneDisputeWithdrawn {
            milestone: no,
            dispute_id,
            at: Some(cmd.at),
        }])
    }

    /// Appends `ProjectCompleted` when settling milestone `no` settles the last open one.
    fn completion(s: &ProjectState, no: MilestoneNo, events: &mut Vec<ProjectEvent>) {
        let others_settled = s
            .milestones
            .iter()
            .enumerate()
            .all(|(i, m)| i + 1 == no as usize || m.status.is_settled());
        if others_settled {
            events.push(ProjectEvent::ProjectCompleted);
        }
    }

    fn cancel_milestone(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if !(cmd.actor.is(s.buyer)
            || s.is_creator(&cmd.actor)
            || matches!(cmd.actor, Actor::Admin(_)))
        {
            return Err(Rejection::not_party(
                &cmd.actor,
                "cancel a milestone",
                "only the buyer, the creator or an operator",
            ));
        }
        let m = s.milestone(no)?;
        if m.status != MilestoneStatus::Unfunded {
            return Err(Rejection::transition("milestone", m.status, "cancel"));
        }
        let mut events = vec![ProjectEvent::MilestoneCancelled { milestone: no }];
        if s.milestones.iter().any(|m| m.funded_minor > 0) {
            Project::completion(s, no, &mut events);
        }
        Ok(events)
    }

    /// Cancel: only if nothing was released and no dispute is open; held escrow goes back to the buyer.
    /// Before any funding either party may cancel; once escrow is held only the seller or an operator may
    /// (a buyer who wants money back while work is under way opens a dispute).
    fn cancel(cmd: &Ctx<ProjectCommand>, s: &ProjectState) -> Result<Vec<ProjectEvent>, Rejection> {
        let funded = s.milestones.iter().any(|m| m.funded_minor > 0);
        let allowed = if funded {
            cmd.actor.is(s.seller) || cmd.actor.is_admin_or_system()
        } else {
            s.is_party(&cmd.actor) || cmd.actor.is_admin_or_system()
        };
        if !allowed {
            return Err(Rejection::not_party(
                &cmd.actor,
                "cancel the project",
                "once funded only the seller or an operator",
            ));
        }
        if matches!(
            s.status,
            ProjectStatus::None
                | ProjectStatus::Completed
                | ProjectStatus::Closed
                | ProjectStatus::Cancelled
        ) {
            return Err(Rejection::transition(AGG, s.status, "cancel"));
        }
        if s.open_disputes > 0 {
            return Err(Rejection::OpenDispute("cancel the project".into()));
        }
        if s.milestones.iter().any(|m| {
            m.released_minor > 0
                || m.status.is_settled()
                    && m.status != MilestoneStatus::Cancelled
                    && m.status != MilestoneStatus::Refunded
        }) {
            return Err(Rejection::transition(
                AGG,
                "something was released",
                "cancel",
            ));
        }
        let mut events = Vec::new();
        for (i, m) in s.milestones.iter().enumerate() {
            let no = (i + 1) as MilestoneNo;
            match m.status {
                MilestoneStatus::Unfunded => {
                    events.push(ProjectEvent::MilestoneCancelled { milestone: no })
                }
                _ if m.held_minor() > 0 => events.push(Project::refund_event(cmd.at, s, no)?),
                _ => {}
            }
        }
        events.push(ProjectEvent::ProjectCancelled);
        Ok(events)
    }

    /// The chargeback process takes a milestone's held escrow (then its buyer fee) for a lost chargeback.
    fn charge_back(
        cmd: &Ctx<ProjectCommand>,
        s: &ProjectState,
        no: MilestoneNo,
        escrow: Money,
        buyer_fee: Money,
        chargeback_id: Uuid,
    ) -> Result<Vec<ProjectEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "charge escrow back",
                "only the chargeback process",
            ));
        }
        let m = s.milestone(no)?;
        if !m.status.is_held_open() {
            return Err(Rejection::transition("milestone", m.status, "charge back"));
        }
        require_currency(s.currency(), escrow)?;
        require_currency(s.currency(), buyer_fee)?;
        let too_much = escrow.minor() > m.held_minor() || buyer_fee.minor() > m.buyer_fee_minor;
        if escrow.minor() < 0 || buyer_fee.minor() < 0 || too_much {
            return Err(Rejection::AmountTooLarge {
                what: "chargeback from escrow",
                amount: escrow.to_string(),
                limit: s.money(m.held_minor()).to_string(),
            });
        }
        let mut events = vec![ProjectEvent::MilestoneChargedBack {
            milestone: no,
            escrow,
            buyer_fee,
            chargeback_id,
        }];
        if escrow.minor() == m.held_minor() {
            Project::completion(s, no, &mut events);
        }
        Ok(events)
    }

    /// An operator closes a completed project.
    fn close(cmd: &Ctx<ProjectCommand>, s: &ProjectState) -> Result<Vec<ProjectEvent>, Rejection> {
        if !cmd.actor.is_admin_or_system() {
            return Err(Rejection::not_party(
                &cmd.actor,
                "close a project",
                "only an operator",
            ));
        }
        if s.status != ProjectStatus::Completed {
            return Err(Rejection::transition(AGG, s.status, "close"));
        }
        Ok(vec![ProjectEvent::ProjectClosed])
    }
}

impl Decider for Project {
    type Command = Ctx<ProjectCommand>;
    type Event = ProjectEvent;
    type State = ProjectState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<ProjectCommand>, s: &ProjectState) -> Result<Vec<ProjectEvent>, Rejection> {
        use ProjectCommand as C;
        let creating = matches!(cmd.body, C::Create(_) | C::CreateForBooking { .. });
        if !creating && !s.exists() {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        match &cmd.body {
            C::Create(p) => Project::create(cmd, s, p),
            C::CreateForBooking {
                project,
                booking_id,
            } => Project::create_for_booking(cmd, s, project, *booking_id),
            C::SubmitForAgreement => Project::submit_for_agreement(cmd, s),
            C::Agree => Project::agree(cmd, s),
            C::Fund { milestone } => Project::fund(cmd, s, *milestone),
            C::Submit { milestone } => Project::seller_step(cmd, s, *milestone),
            C::RequestChanges { milestone } => Project::buyer_review(cmd, s, *milestone, false),
            C::Approve { milestone } => Project::buyer_review(cmd, s, *milestone, true),
            C::AutoApprove { milestone } => Project::auto_approve(cmd, s, *milestone),
            C::MatureProceeds {
                milestone,
                wallet_pending_minor,
            } => Project::mature_proceeds(cmd, s, *milestone, *wallet_pending_minor),
            C::Release { milestone } => Project::release(cmd, s, *milestone),
            C::Refund { milestone } => Project::refund(cmd, s, *milestone),
            C::CancelMilestone { milestone } => Project::cancel_milestone(cmd, s, *milestone),
            C::MarkDisputed {
                milestone,
                dispute_id,
            } => Project::mark_disputed(s, *milestone, *dispute_id),
            C::WithdrawDispute {
                milestone,
                dispute_id,
            } => Project::clear_dispute(cmd, s, *milestone, *dispute_id),
            C::Resolve {
                milestone,
                release,
                refund,
                cause,
            } => Project::resolve(cmd, s, *milestone, *release, *refund, *cause),
            C::Cancel => Project::cancel(cmd, s),
            C::ChargeBack {
                milestone,
                escrow,
                buyer_fee,
                chargeback_id,
            } => Project::charge_back(cmd, s, *milestone, *escrow, *buyer_fee, *chargeback_id),
            C::Close => Project::close(cmd, s),
        }
    }

    fn evolve(mut s: ProjectState, event: &ProjectEvent) -> ProjectState {
        use ProjectEvent as E;
        match event {
            E::ProjectCreated { .. }
            | E::ProjectSubmittedForAgreement
            | E::ProjectPartyAgreed { .. }
            | E::ProjectAgreed
            | E::ProjectCompleted
            | E::ProjectCancelled
            | E::ProjectClosed => evolve_lifecycle(&mut s, event),
            E::MilestoneFunded { .. }
            | E::MilestoneSubmitted { .. }
            | E::MilestoneChangesRequested { .. }
            | E::MilestoneApproved { .. }
            | E::MilestoneCancelled { .. } => evolve_milestone_work(&mut s, event),
            E::MilestoneReleased { .. }
            | E::MilestoneRefunded { .. }
            | E::MilestoneResolved { .. }
            | E::MilestoneChargedBack { .. } => evolve_settlement(&mut s, event),
            E::MilestoneDisputed { .. } | E::MilestoneDisputeWithdrawn { .. } => {
                evolve_dispute(&mut s, event)
            }
            E::MilestoneProceedsMatured { milestone, .. } => {
                ms(&mut s, *milestone).proceeds_matured = true
            }
        }
        s
    }

    fn is_terminal(s: &ProjectState) -> bool {
        matches!(s.status, ProjectStatus::Closed | ProjectStatus::Cancelled)
    }
}

/// A disputed milestone answers only to the dispute holding it (milestones disputed before the id was kept
/// hold `None`: the engine's check of the dispute stream still applies).
fn require_holding_dispute(m: &MilestoneState, dispute_id: Uuid) -> Result<(), Rejection> {
    match m.dispute_id {
        Some(holding) if holding != dispute_id => Err(Rejection::InvalidCommand(format!(
            "the milestone is held by dispute {holding}, not {dispute_id}"
        ))),
        _ => Ok(()),
    }
}

/// Evolve-side milestone access: events are valid by construction (decide checked the number).
fn ms(s: &mut ProjectState, no: MilestoneNo) -> &mut MilestoneState {
    let index = (no as usize)
        .checked_sub(1)
        .expect("milestones are numbered from 1");
    &mut s.milestones[index]
}

/// Folds the project's own lifecycle: created, agreed by its parties, then completed, cancelled or closed.
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_lifecycle(s: &mut ProjectState, event: &ProjectEvent) {
    use ProjectEvent as E;
    match event {
        E::ProjectCreated {
            project_id,
            creator,
            buyer,
            seller,
            currency,
            milestones,
            fees,
            booking_id,
        } => {
            s.id = *project_id;
            s.status = ProjectStatus::Draft;
            s.creator = *creator;
            s.buyer = *buyer;
            s.seller = *seller;
            s.currency = Some(*currency);
            s.fees = *fees;
            s.booking = *booking_id;
            s.milestones = milestones
                .iter()
                .map(|m| MilestoneState {
                    amount_minor: m.minor(),
                    ..MilestoneState::default()
                })
                .collect();
        }
        E::ProjectSubmittedForAgreement => s.status = ProjectStatus::AwaitingAgreement,
        E::ProjectPartyAgreed { party } => {
            s.buyer_agreed |= *party == s.buyer;
            s.seller_agreed |= *party == s.seller;
        }
        E::ProjectAgreed => s.status = ProjectStatus::Agreed,
        E::ProjectCompleted => s.status = ProjectStatus::Completed,
        E::ProjectCancelled => s.status = ProjectStatus::Cancelled,
        E::ProjectClosed => s.status = ProjectStatus::Closed,
        _ => {}
    }
}

/// Folds a milestone's work before any money leaves escrow: funded, submitted, reviewed, or cancelled unfunded.
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_milestone_work(s: &mut ProjectState, event: &ProjectEvent) {
    use ProjectEvent as E;
    match event {
        E::MilestoneFunded {
            milestone,
            amount,
            buyer_fee,
            ..
        } => {
            let m = ms(s, *milestone);
            m.status = MilestoneStatus::Funded;
            m.funded_minor += amount.minor();
            m.buyer_fee_minor = buyer_fee.minor();
            let all_funded = s
                .milestones
                .iter()
                .all(|m| m.status != MilestoneStatus::Unfunded);
            s.status = if all_funded {
                ProjectStatus::Funded
            } else {
                ProjectStatus::PartiallyFunded
            };
        }
        E::MilestoneSubmitted { milestone, at } => {
            let m = ms(s, *milestone);
            m.status = MilestoneStatus::Submitted;
            m.submitted_at = Some(*at);
        }
        E::MilestoneChangesRequested { milestone } => {
            ms(s, *milestone).status = MilestoneStatus::ChangesRequested
        }
        E::MilestoneApproved { milestone, auto } => {
            let m = ms(s, *milestone);
            m.status = if *auto {
                MilestoneStatus::AutoApproved
            } else {
                MilestoneStatus::Approved
            };
            m.approved = true;
        }
        E::MilestoneCancelled { milestone } => {
            ms(s, *milestone).status = MilestoneStatus::Cancelled
        }
        _ => {}
    }
}

/// Folds the money leaving a milestone's escrow: released, refunded, split by a resolution, or taken by a
/// chargeback. Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_settlement(s: &mut ProjectState, event: &ProjectEvent) {
    use ProjectEvent as E;
    match event {
        E::MilestoneReleased {
            milestone,
            amount,
            commission,
            seller_bucket_pending,
            matures_at,
            ..
        } => {
            let m = ms(s, *milestone);
            m.status = MilestoneStatus::Released;
            m.released_minor += amount.minor();
            m.buyer_fee_minor = 0;
            if *seller_bucket_pending {
                m.pending_minor += amount.minor() - commission.minor();
                m.matures_at = *matures_at;
            }
        }
        E::MilestoneRefunded {
            milestone, amount, ..
        } => {
            let m = ms(s, *milestone);
            m.status = MilestoneStatus::Refunded;
            m.refunded_minor += amount.minor();
            m.buyer_fee_minor = 0;
        }
        E::MilestoneResolved {
            milestone,
            released,
            refunded,
            commission,
            matures_at,
            ..
        } => {
            let to_pending = s.fees.release_to_pending;
            let m = ms(s, *milestone);
            if to_pending {
                m.pending_minor += released.minor() - commission.minor();
                m.matures_at = *matures_at;
            }
            let was_disputed = m.status == MilestoneStatus::Disputed;
            m.status = MilestoneStatus::Resolved;
            m.dispute_id = None;
            m.released_minor += released.minor();
            m.refunded_minor += refunded.minor();
            m.buyer_fee_minor = 0;
            if was_disputed {
                s.open_disputes = s.open_disputes.saturating_sub(1);
            }
        }
        E::MilestoneChargedBack {
            milestone,
            escrow,
            buyer_fee,
            ..
        } => {
            let m = ms(s, *milestone);
            m.charged_back_minor += escrow.minor();
            m.buyer_fee_minor -= buyer_fee.minor();
            if m.held_minor() == 0 {
                m.status = MilestoneStatus::ChargedBack;
            }
        }
        _ => {}
    }
}

/// Folds a dispute holding a milestone, and its withdrawal (a resolution is a settlement).
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_dispute(s: &mut ProjectState, event: &ProjectEvent) {
    use ProjectEvent as E;
    match event {
        E::MilestoneDisputed {
            milestone,
            dispute_id,
        } => {
            let m = ms(s, *milestone);
            m.before_dispute = m.status;
            m.status = MilestoneStatus::Disputed;
            m.dispute_id = Some(*dispute_id);
            s.open_disputes += 1;
        }
        E::MilestoneDisputeWithdrawn { milestone, at, .. } => {
            let m = ms(s, *milestone);
            m.status = m.before_dispute;
            m.dispute_id = None;
            if m.status == MilestoneStatus::Submitted
                && let Some(at) = at
            {
                m.submitted_at = Some(*at);
            }
            s.open_disputes = s.open_disputes.saturating_sub(1);
        }
        _ => {}
    }
}
