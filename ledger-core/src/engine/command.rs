//! `Command`, the public command set (serde: `{"type": "fund_milestone", ...}`), its envelope, the streams
//! each command certainly touches, and the checks every command passes before any decider sees it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StreamId;
use crate::aggregates::ledger_policy::{DeadlinePolicy, RateBounds};
use crate::aggregates::payment::FundTarget;
use crate::aggregates::project::FeeTerms;
use crate::aggregates::reconciliation::ReconciliationCounts;
use crate::aggregates::settlement::settlement_stream_id;
use crate::calendar::Month;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway, MilestoneNo};
use crate::journal::BankName;
use crate::money::{Currency, Money, Rate};

/// Every command the ledger accepts. JSON: `{"type": "fund_milestone", "project_id": ..., "milestone": 1}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    OpenServiceRequest {
        request_id: Uuid,
        currency: Currency,
        title: String,
        expires_at: Option<DateTime<Utc>>,
    },
    CancelServiceRequest {
        request_id: Uuid,
    },
    ExpireServiceRequest {
        request_id: Uuid,
    },
    CreateQuote {
        quote_id: Uuid,
        request_id: Uuid,
        amount: Money,
        valid_until: DateTime<Utc>,
        #[serde(default)]
        fees: FeeTerms,
    },
    SendQuote {
        quote_id: Uuid,
    },
    AcceptQuote {
        quote_id: Uuid,
    },
    DeclineQuote {
        quote_id: Uuid,
    },
    WithdrawQuote {
        quote_id: Uuid,
    },
    ExpireQuote {
        quote_id: Uuid,
    },
    /// Process: an accepted quote opens a booking backed by a single-milestone project.
    OpenBooking {
        booking_id: Uuid,
        project_id: Uuid,
        quote_id: Uuid,
    },
    ConfirmBooking {
        booking_id: Uuid,
    },
    StartBooking {
        booking_id: Uuid,
    },
    DeliverBooking {
        booking_id: Uuid,
    },
    AcceptBooking {
        booking_id: Uuid,
    },
    AutoAcceptBooking {
        booking_id: Uuid,
    },
    SettleBooking {
        booking_id: Uuid,
    },
    MarkBookingDisputed {
        booking_id: Uuid,
    },
    CancelBooking {
        booking_id: Uuid,
    },
    /// Process: applies a booking's cancellation policy to its escrow.
    ApplyBookingCancellation {
        booking_id: Uuid,
        keep_rate: Rate,
    },
    CreateProject {
        project_id: Uuid,
        buyer: Uuid,
        seller: Uuid,
        currency: Currency,
        milestones: Vec<Money>,
        #[serde(default)]
        fees: FeeTerms,
    },
    SubmitProjectForAgreement {
        project_id: Uuid,
    },
    AgreeToProject {
        project_id: Uuid,
    },
    FundMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    SubmitMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    RequestChanges {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    ApproveMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    AutoApproveMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    ReleaseMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    RefundMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    CancelMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    CancelProject {
        project_id: Uuid,
    },
    CloseProject {
        project_id: Uuid,
    },
    /// Process: a settled dispute's split applied to the milestone's escrow.
    ApplyResolution {
        project_id: Uuid,
        milestone: MilestoneNo,
        release: Money,
        refund: Money,
        cause: Uuid,
    },
    /// Process: a withdrawn dispute gives the milestone back its previous status.
    ClearMilestoneDispute {
        project_id: Uuid,
        milestone: MilestoneNo,
        dispute_id: Uuid,
    },
    InitiateDeposit {
        payment_id: Uuid,
        amount: Money,
        gateway: Gateway,
        fund: Option<FundTarget>,
    },
    MarkPaymentProcessing {
        payment_id: Uuid,
    },
    ConfirmDeposit {
        payment_id: Uuid,
        amount: Money,
        gateway_fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
        /// A fee the gateway reported with more digits than its currency has, at the nearest representable
        /// amount: debited to `Liabilities:Suspense` (not to fees) for a person to book.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee_in_suspense: Option<Money>,
    },
    FailDeposit {
        payment_id: Uuid,
        reason: String,
    },
    CancelDeposit {
        payment_id: Uuid,
    },
    RequestPayout {
        payout_id: Uuid,
        amount: Money,
        fee: Option<Money>,
        gateway: Gateway,
    },
    /// Money back to the card of a completed deposit of the same user, through its gateway (at most what it
    /// brought in, less earlier refunds and chargebacks). Anything else is a payout.
    RequestCardRefund {
        refund_id: Uuid,
        deposit_id: Uuid,
        amount: Money,
        gateway: Gateway,
    },
    /// A card refund the gateway made that the ledger never requested (issued from its dashboard), reported
    /// by its verified callback: recorded as a card refund of that deposit, taken from the payer's wallet when
    /// it still holds the money, else held in suspense (Dr Suspense, Cr Clearing) for a person.
    RecordGatewayRefund {
        refund_id: Uuid,
        deposit_id: Uuid,
        amount: Money,
        gateway_fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
        /// The gateway's id of the refund (kept on it, so that its later notices find it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway_reference: Option<String>,
    },
    /// The payout worker records the gateway's own id of a payout or card refund it sent (Paystack's refund
    /// id), so that the gateway's notice finds it by that id.
    RecordGatewayReference {
        payment_id: Uuid,
        gateway_reference: String,
    },
    /// A payout or card refund confirmed by its gateway.
    ConfirmTransfer {
        payment_id: Uuid,
        gateway_fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
        /// As in `ConfirmDeposit`: a fee with more digits than the currency, held in suspense.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee_in_suspense: Option<Money>,
    },
    /// A payout or card refund failed at its gateway.
    FailTransfer {
        payment_id: Uuid,
        reason: String,
    },
    CancelPayout {
        payment_id: Uuid,
    },
    ReversePayout {
        payment_id: Uuid,
        occurred_at: Option<DateTime<Utc>>,
    },
    OpenChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
        amount: Money,
        fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
    },
    WinChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
    },
    LoseChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
        recover_from_user: bool,
    },
    MaturePending {
        user: Uuid,
        amount: Money,
    },
    OpenDispute {
        dispute_id: Uuid,
        project_id: Uuid,
        milestone: MilestoneNo,
        reason: String,
        proposed_release: Money,
        respond_by: DateTime<Utc>,
    },
    AcceptDisputeProposal {
        dispute_id: Uuid,
    },
    ContestDispute {
        dispute_id: Uuid,
    },
    ResolveDispute {
        dispute_id: Uuid,
        release: Money,
    },
    WithdrawDispute {
        dispute_id: Uuid,
    },
    TimeOutDispute {
        dispute_id: Uuid,
    },
    RecordSuspense {
        suspense_id: Uuid,
        gateway: Gateway,
        amount: Money,
        reference: String,
        reason: String,
    },
    AssignSuspense {
        suspense_id: Uuid,
        user: Uuid,
    },
    ReturnSuspense {
        suspense_id: Uuid,
    },
    /// An operator sets the durations of the ledger's deadlines (`aggregates::ledger_policy`).
    SetDeadlinePolicy {
        deadlines: DeadlinePolicy,
    },
    /// The timer: the pending proceeds of a milestone's release mature to available (the engine computes
    /// the amount: what that release credited to pending, at most what the pending balance holds).
    MatureRelease {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    /// The timer: a deposit nobody paid by its expiry is cancelled.
    ExpireDeposit {
        payment_id: Uuid,
    },
    /// An operator sets the ledger's fee schedule (`aggregates::ledger_policy`).
    SetFeePolicy {
        commission: RateBounds,
        buyer_fee: RateBounds,
        payout_fee: RateBounds,
        overrides_allowed: bool,
        /// The least payout fee per currency (optional).
        #[serde(default)]
        payout_fee_min: Vec<Money>,
    },
    /// A gateway paid the platform's own bank account (`aggregates::settlement`): Dr
    /// `Assets:Bank:<bank_account>` amount, Dr `Expenses:GatewayFees` fee, Cr the gateway's clearing.
    RecordSettlement {
        gateway: Gateway,
        settlement_id: String,
        bank_account: BankName,
        amount: Money,
        #[serde(default)]
        fee: Option<Money>,
        occurred_at: DateTime<Utc>,
    },
    /// That a statement was reconciled (`escrow-ledger reconcile`): which one and what was found.
    RecordReconciliation {
        reconciliation_id: Uuid,
        gateway: Gateway,
        statement_sha256: String,
        format: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        counts: ReconciliationCounts,
    },
    /// An operator closes every month up to and including `through` (`aggregates::closed_periods`).
    ClosePeriods {
        through: Month,
    },
    /// An operator re-opens the months from `from` on, saying why.
    ReopenPeriods {
        from: Month,
        reason: String,
    },
    /// The timer: a deadline whose firing was refused for good is closed (`DeadlineClosed` on its stream).
    /// The engine decides the deadline's own command again first, at its due time: only one refused for
    /// good closes, so no sender can silence a clock that could still fire.
    CloseDeadline {
        deadline_id: Uuid,
        /// The command it fires (`auto_approve_milestone`, `expire_deposit`, ...).
        kind: String,
        stream: StreamId,
        milestone: Option<MilestoneNo>,
        due_at: DateTime<Utc>,
    },
}

/// A command with its id (idempotency and event-id derivation), actor and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub actor: Actor,
    pub at: DateTime<Utc>,
    pub command: Command,
}

/// The streams a command certainly touches; `decide` asks for the rest (wallets, related aggregates).
pub fn primary_streams(command: &Command) -> Vec<StreamId> {
    use Command as C;
    match command {
        C::CreateQuote {
            quote_id,
            request_id,
            ..
        } => vec![
            StreamId::Quote(*quote_id),
            StreamId::ServiceRequest(*request_id),
        ],
        C::OpenBooking {
            booking_id,
            project_id,
            quote_id,
        } => vec![
            StreamId::Booking(*booking_id),
            StreamId::Project(*project_id),
            StreamId::Quote(*quote_id),
        ],
        C::OpenDispute {
            dispute_id,
            project_id,
            ..
        } => vec![
            StreamId::Dispute(*dispute_id),
            StreamId::Project(*project_id),
        ],
        _ => vec![own_stream(command)],
    }
}

/// The one stream a command that names a single aggregate acts on.
fn own_stream(command: &Command) -> StreamId {
    use Command as C;
    match command {
        C::OpenServiceRequest { request_id, .. }
        | C::CancelServiceRequest { request_id }
        | C::ExpireServiceRequest { request_id } => StreamId::ServiceRequest(*request_id),
        C::CreateQuote { quote_id, .. }
        | C::SendQuote { quote_id }
        | C::AcceptQuote { quote_id }
        | C::DeclineQuote { quote_id }
        | C::WithdrawQuote { quote_id }
        | C::ExpireQuote { quote_id } => StreamId::Quote(*quote_id),
        C::OpenBooking { booking_id, .. }
        | C::ConfirmBooking { booking_id }
        | C::StartBooking { booking_id }
        | C::DeliverBooking { booking_id }
        | C::AcceptBooking { booking_id }
        | C::AutoAcceptBooking { booking_id }
        | C::SettleBooking { booking_id }
        | C::MarkBookingDisputed { booking_id }
        | C::CancelBooking { booking_id }
        | C::ApplyBookingCancellation { booking_id, .. } => StreamId::Booking(*booking_id),
        C::CreateProject { project_id, .. }
        | C::SubmitProjectForAgreement { project_id }
        | C::AgreeToProject { project_id }
        | C::FundMilestone { project_id, .. }
        | C::SubmitMilestone { project_id, .. }
        | C::RequestChanges { project_id, .. }
        | C::ApproveMilestone { project_id, .. }
        | C::AutoApproveMilestone { project_id, .. }
        | C::ReleaseMilestone { project_id, .. }
        | C::RefundMilestone { project_id, .. }
        | C::CancelMilestone { project_id, .. }
        | C::CancelProject { project_id }
        | C::CloseProject { project_id }
        | C::ApplyResolution { project_id, .. }
        | C::ClearMilestoneDispute { project_id, .. }
        | C::MatureRelease { project_id, .. } => StreamId::Project(*project_id),
        C::InitiateDeposit { .. }
        | C::MarkPaymentProcessing { .. }
        | C::ConfirmDeposit { .. }
        | C::FailDeposit { .. }
        | C::CancelDeposit { .. }
        | C::ExpireDeposit { .. }
        | C::RequestPayout { .. }
        | C::RequestCardRefund { .. }
        | C::RecordGatewayRefund { .. }
        | C::RecordGatewayReference { .. }
        | C::ConfirmTransfer { .. }
        | C::FailTransfer { .. }
        | C::CancelPayout { .. }
        | C::ReversePayout { .. }
        | C::OpenChargeback { .. }
        | C::WinChargeback { .. }
        | C::LoseChargeback { .. } => payment_stream(command),
        C::OpenDispute { dispute_id, .. }
        | C::AcceptDisputeProposal { dispute_id }
        | C::ContestDispute { dispute_id }
        | C::ResolveDispute { dispute_id, .. }
        | C::WithdrawDispute { dispute_id }
        | C::TimeOutDispute { dispute_id } => StreamId::Dispute(*dispute_id),
        C::MaturePending { .. }
        | C::RecordSuspense { .. }
        | C::AssignSuspense { .. }
        | C::ReturnSuspense { .. }
        | C::SetFeePolicy { .. }
        | C::SetDeadlinePolicy { .. } => back_office_stream(command),
        C::RecordSettlement { .. }
        | C::RecordReconciliation { .. }
        | C::ClosePeriods { .. }
        | C::ReopenPeriods { .. } => month_end_stream(command),
        C::CloseDeadline { stream, .. } => *stream,
    }
}

/// The payment a deposit, transfer (payout or card refund) or chargeback command acts on.
fn payment_stream(command: &Command) -> StreamId {
    use Command as C;
    match command {
        C::InitiateDeposit { payment_id, .. }
        | C::MarkPaymentProcessing { payment_id }
        | C::ConfirmDeposit { payment_id, .. }
        | C::FailDeposit { payment_id, .. }
        | C::CancelDeposit { payment_id }
        | C::ConfirmTransfer { payment_id, .. }
        | C::FailTransfer { payment_id, .. }
        | C::CancelPayout { payment_id }
        | C::ReversePayout { payment_id, .. }
        | C::OpenChargeback { payment_id, .. }
        | C::WinChargeback { payment_id, .. }
        | C::LoseChargeback { payment_id, .. }
        | C::ExpireDeposit { payment_id }
        | C::RequestPayout {
            payout_id: payment_id,
            ..
        }
        | C::RequestCardRefund {
            refund_id: payment_id,
            ..
        }
        | C::RecordGatewayRefund {
            refund_id: payment_id,
            ..
        }
        | C::RecordGatewayReference { payment_id, .. } => StreamId::Payment(*payment_id),
        other => unreachable!("{other:?} is not a payment command"),
    }
}

/// The stream a back-office command acts on: a wallet's pending money, suspense, the ledger's policy.
fn back_office_stream(command: &Command) -> StreamId {
    use Command as C;
    match command {
        C::MaturePending { user, amount } => StreamId::Wallet {
            user: *user,
            currency: amount.currency(),
        },
        C::RecordSuspense { suspense_id, .. }
        | C::AssignSuspense { suspense_id, .. }
        | C::ReturnSuspense { suspense_id } => StreamId::Suspense(*suspense_id),
        C::SetFeePolicy { .. } | C::SetDeadlinePolicy { .. } => StreamId::LedgerPolicy,
        other => unreachable!("{other:?} is not a back-office command"),
    }
}

/// The stream a month-end command acts on: a settlement, a reconciliation run, the closed periods.
fn month_end_stream(command: &Command) -> StreamId {
    use Command as C;
    match command {
        C::RecordSettlement {
            gateway,
            settlement_id,
            ..
        } => StreamId::Settlement(settlement_stream_id(*gateway, settlement_id)),
        C::RecordReconciliation {
            reconciliation_id, ..
        } => StreamId::Reconciliation(*reconciliation_id),
        C::ClosePeriods { .. } | C::ReopenPeriods { .. } => StreamId::Periods,
        other => unreachable!("{other:?} is not a month-end command"),
    }
}

/// Earliest `at` (and time of money movement) a command may carry: 2000-01-01T00:00:00Z. A ledger records
/// what happens now; a year-1 or year-9999 time is a client bug, and it would poison as-of reports.
pub const COMMAND_TIME_MIN_UNIX_SECONDS: i64 = 946_684_800;
/// First instant no command time may reach: 2200-01-01T00:00:00Z (exclusive).
pub const COMMAND_TIME_END_UNIX_SECONDS: i64 = 7_258_118_400;

impl Command {
    /// The one stream the command names first (for a deadline's command, the stream its clock runs on).
    pub(super) fn primary_stream(&self) -> StreamId {
        own_stream(self)
    }

    /// Every amount the command carries (each must be within the amount ceiling).
    fn amounts(&self) -> Vec<Money> {
        use Command as C;
        match self {
            C::CreateQuote { amount, .. }
            | C::InitiateDeposit { amount, .. }
            | C::RequestCardRefund { amount, .. }
            | C::MaturePending { amount, .. }
            | C::RecordSuspense { amount, .. } => vec![*amount],
            C::CreateProject { milestones, .. } => milestones.clone(),
            C::ApplyResolution {
                release, refund, ..
            } => vec![*release, *refund],
            C::ConfirmDeposit {
                amount,
                gateway_fee,
                fee_in_suspense,
                ..
            } => [Some(*amount), *gateway_fee, *fee_in_suspense]
                .into_iter()
                .flatten()
                .collect(),
            C::RecordGatewayRefund {
                amount,
                gateway_fee,
                ..
            } => [Some(*amount), *gateway_fee]
                .into_iter()
                .flatten()
                .collect(),
            C::RequestPayout { amount, fee, .. }
            | C::OpenChargeback { amount, fee, .. }
            | C::RecordSettlement { amount, fee, .. } => {
                [Some(*amount), *fee].into_iter().flatten().collect()
            }
            C::ConfirmTransfer {
                gateway_fee,
                fee_in_suspense,
                ..
            } => [*gateway_fee, *fee_in_suspense]
                .into_iter()
                .flatten()
                .collect(),
            C::OpenDispute {
                proposed_release, ..
            } => vec![*proposed_release],
            C::ResolveDispute { release, .. } => vec![*release],
            C::SetFeePolicy { payout_fee_min, .. } => payout_fee_min.clone(),
            // The rest carry no amount (a new command with one must be listed above).
            _ => vec![],
        }
    }

    /// Every time the command carries besides its `at`: when money moved, deadlines.
    fn times(&self) -> Vec<DateTime<Utc>> {
        use Command as C;
        match self {
            C::OpenServiceRequest { expires_at, .. } => expires_at.iter().copied().collect(),
            C::CreateQuote { valid_until, .. } => vec![*valid_until],
            C::OpenDispute { respond_by, .. } => vec![*respond_by],
            C::ConfirmDeposit { occurred_at, .. }
            | C::ConfirmTransfer { occurred_at, .. }
            | C::ReversePayout { occurred_at, .. }
            | C::OpenChargeback { occurred_at, .. } => occurred_at.iter().copied().collect(),
            C::RecordSettlement { occurred_at, .. } => vec![*occurred_at],
            C::CloseDeadline { due_at, .. } => vec![*due_at],
            C::RecordReconciliation { from, to, .. } => {
                from.iter().chain(to.iter()).copied().collect()
            }
            _ => vec![],
        }
    }
}

/// The checks every command passes before any decider sees it: sane times, amounts within the ceiling.
pub(super) fn check_envelope(env: &CommandEnvelope) -> Result<(), Rejection> {
    let min = DateTime::<Utc>::from_timestamp(COMMAND_TIME_MIN_UNIX_SECONDS, 0)
        .expect("a valid constant");
    let end = DateTime::<Utc>::from_timestamp(COMMAND_TIME_END_UNIX_SECONDS, 0)
        .expect("a valid constant");
    for (what, time) in std::iter::once(("at", env.at))
        .chain(env.command.times().into_iter().map(|t| ("a time", t)))
    {
        if time < min || time >= end {
            return Err(Rejection::InvalidCommand(format!(
                "{what} of {} is outside {} .. {} (exclusive)",
                time.to_rfc3339(),
                min.format("%Y-%m-%d"),
                end.format("%Y-%m-%d"),
            )));
        }
    }
    for amount in env.command.amounts() {
        crate::aggregates::require_within_ceiling(
            "an amount",
            i128::from(amount.minor()),
            amount.currency(),
        )?;
    }
    Ok(())
}
