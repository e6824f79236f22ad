//! What `decide` reads and returns: the loaded states (`StateView`), typed access to one stream's state
//! (asking the caller to load it when missing), `Change` (one event for one stream) and `DecideError`.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{AggState, Event, StreamId};
use crate::aggregates::booking::BookingState;
use crate::aggregates::closed_periods::PeriodsState;
use crate::aggregates::dispute::DisputeState;
use crate::aggregates::ledger_policy::LedgerPolicyState;
use crate::aggregates::payment::PaymentState;
use crate::aggregates::project::ProjectState;
use crate::aggregates::quote::QuoteState;
use crate::aggregates::reconciliation::ReconciliationState;
use crate::aggregates::service_request::ServiceRequestState;
use crate::aggregates::settlement::SettlementState;
use crate::aggregates::suspense::SuspenseState;
use crate::aggregates::wallet::WalletState;
use crate::error::Rejection;
use crate::journal::Account;
use crate::money::Currency;

/// One event to append to one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub stream: StreamId,
    pub event_id: Uuid,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The caller must load this stream and call `decide` again.
    #[error("stream {0} must be loaded first")]
    NeedStream(StreamId),
    /// The caller must provide this account's balance (`StateView::account_balance`) and decide again. Only
    /// a settlement asks (for its gateway's clearing account, which belongs to no stream).
    #[error("the balance of {account} in {currency} must be loaded first")]
    NeedBalance {
        account: Account,
        currency: Currency,
    },
}

/// The states a caller has loaded. `None` means "not loaded"; a loaded stream with no events is
/// `AggState::initial`.
pub trait StateView {
    fn state(&self, stream: &StreamId) -> Option<&AggState>;

    /// An account's balance on its normal side, in minor units, as the caller computed it from the log;
    /// `None` when not provided (the decision then asks with `DecideError::NeedBalance`).
    fn account_balance(&self, _account: &Account, _currency: Currency) -> Option<i128> {
        None
    }
}

impl StateView for std::collections::HashMap<StreamId, AggState> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.get(stream)
    }
}

impl StateView for BTreeMap<StreamId, AggState> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.get(stream)
    }
}

macro_rules! typed_state {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub(super) fn $name(view: &dyn StateView, stream: StreamId) -> Result<&$ty, DecideError> {
            match view.state(&stream) {
                Some(AggState::$variant(s)) => Ok(s),
                Some(other) => panic!("stream {stream} holds {other:?}"),
                None => Err(DecideError::NeedStream(stream)),
            }
        }
    };
}
typed_state!(request_state, ServiceRequest, ServiceRequestState);
typed_state!(quote_state, Quote, QuoteState);
typed_state!(booking_state, Booking, BookingState);
typed_state!(project_state, Project, ProjectState);
typed_state!(payment_state, Payment, PaymentState);
typed_state!(wallet_state, Wallet, WalletState);
typed_state!(dispute_state, Dispute, DisputeState);
typed_state!(suspense_state, Suspense, SuspenseState);
typed_state!(policy_state, LedgerPolicy, LedgerPolicyState);
typed_state!(settlement_state, Settlement, SettlementState);
typed_state!(reconciliation_state, Reconciliation, ReconciliationState);
typed_state!(periods_state, Periods, PeriodsState);
