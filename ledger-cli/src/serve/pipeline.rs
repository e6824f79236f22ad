//! One authentic-or-not delivery through the ledger: verify, parse, plan, execute with the dedupe key,
//! record the delivery in the inbox. Shared by `serve` (HTTP) and `ingest` (captured deliveries).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger_core::aggregates::payment::{PaymentKind, PaymentState, PaymentStatus};
use ledger_core::{AggState, Command, CommandEnvelope, Gateway, StreamId};
use ledger_gateway::plan;
use ledger_gateway::{CallbackError, CallbackKind, NormalizedCallback, Secrets};
use ledger_store::{CommandOutcome, ExecError, Executor};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One ledger as the workers see it.
pub struct LedgerContext {
    pub ledger_id: String,
    pub executor: Arc<Executor>,
    pub secrets: Secrets,
    pub keys: super::keys::ApiKeys,
    pub recover_from_user: bool,
}

/// What a delivery became (the 2xx body).
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub disposition: &'static str,
    pub gateway_event_id: String,
    pub dedupe_key: String,
    pub detail: String,
    pub command_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// The ledger could not answer (database down, contention): the gateway should retry (503).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

pub async fn deliver(
    ctx: &LedgerContext,
    pool: &PgPool,
    gateway: Gateway,
    header: &(dyn Fn(&str) -> Option<String> + Sync),
    body: &[u8],
    received_at: DateTime<Utc>,
    correlation_id: Uuid,
) -> Result<Receipt, DeliveryError> {
    let callback = ledger_gateway::authenticate_and_parse(
        gateway,
        header,
        body,
        &ctx.secrets,
        received_at.timestamp(),
    )?;
    let payment = match plan::payment_id(&callback) {
        // Planning only reads the payment (the executor checks versions when it appends): the cache will do.
        Some(id) => match ctx.executor.current_state(&StreamId::Payment(id)).await {
            Ok((AggState::Payment(state), _)) => Some(state),
            Ok(_) => None,
            Err(e) => return Err(DeliveryError::Unavailable(e.to_string())),
        },
        None => None,
    };
    let plan = plan::plan(&callback, payment.as_ref(), ctx.recover_from_user);
    let (disposition, detail, command_id) = match &plan.command {
        None => (plan.disposition.as_str(), plan.detail.clone(), None),
        Some(command) => {
            execute(
                ctx,
                &callback,
                &plan,
                command.clone(),
                payment.as_ref(),
                received_at,
            )
            .await?
        }
    };
    let receipt = Receipt {
        disposition,
        gateway_event_id: callback.event_id.clone(),
        dedupe_key: plan.dedupe_key.clone(),
        detail,
        command_id,
    };
    record(ctx, pool, &callback, &receipt, received_at, correlation_id)
        .await
        .map_err(|e| DeliveryError::Unavailable(format!("cannot record the delivery: {e}")))?;
    Ok(receipt)
}

async fn execute(
    ctx: &LedgerContext,
    callback: &NormalizedCallback,
    plan: &plan::Plan,
    command: Command,
    payment: Option<&PaymentState>,
    at: DateTime<Utc>,
) -> Result<(&'static str, String, Option<Uuid>), DeliveryError> {
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: plan::actor(callback.gateway),
        at,
        command,
    };
    let outcome = ctx.executor.execute(&env, Some(&plan.dedupe_key)).await;
    if let Ok(CommandOutcome::Accepted { events, .. }) = &outcome
        && events.is_empty()
        && matches!(plan.command, Some(Command::ConfirmDeposit { .. }))
    {
        // Another movement completed the deposit between planning and deciding (the core took this success
        // as "already applied"): it is money all the same, held like any later different success.
        return hold_after_race(ctx, callback, plan, at).await;
    }
    match outcome {
        Ok(CommandOutcome::Accepted {
            command_id, events, ..
        }) if command_id == env.command_id => {
            let disposition = if is_anomaly(callback.kind, payment) {
                "anomaly"
            } else {
                plan.disposition.as_str()
            };
            let detail = format!("{}; {} events", plan.detail, events.len());
            Ok((disposition, detail, Some(command_id)))
        }
        Ok(CommandOutcome::Rejected {
            command_id,
            rejection,
        }) if command_id == env.command_id => Ok((
            "rejected",
            format!("{}: {}", plan.detail, rejection.message),
            Some(command_id),
        )),
        Ok(
            CommandOutcome::Accepted { command_id, .. }
            | CommandOutcome::Rejected { command_id, .. },
        ) => Ok((
            "duplicate",
            format!("same outcome as command {command_id}"),
            Some(command_id),
        )),
        // The same payment outcome reported with other details (another event type, another time):
        // the first report's effect stands.
        Err(ExecError::IdempotencyConflict { .. }) => Ok((
            "duplicate",
            "same payment outcome already recorded with other details".to_string(),
            None,
        )),
        Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
    }
}

/// Plans again on the payment as it is now (completed) and holds the money in suspense under its own key.
async fn hold_after_race(
    ctx: &LedgerContext,
    callback: &NormalizedCallback,
    plan: &plan::Plan,
    at: DateTime<Utc>,
) -> Result<(&'static str, String, Option<Uuid>), DeliveryError> {
    let id = plan::payment_id(callback);
    let fresh = match id {
        Some(id) => match ctx.executor.load_stream_state(&StreamId::Payment(id)).await {
            Ok((AggState::Payment(state), _)) => Some(state),
            Ok(_) => None,
            Err(e) => return Err(DeliveryError::Unavailable(e.to_string())),
        },
        None => None,
    };
    let held = plan::plan(callback, fresh.as_ref(), ctx.recover_from_user);
    let Some(Command::RecordSuspense { .. }) = &held.command else {
        return Ok((held.disposition.as_str(), held.detail, None));
    };
    let key = format!("{}:held", plan.dedupe_key);
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: plan::actor(callback.gateway),
        at,
        command: held.command.clone().expect("matched above"),
    };
    match ctx.executor.execute(&env, Some(&key)).await {
        Ok(CommandOutcome::Accepted { command_id, .. }) => {
            Ok(("suspense", held.detail.clone(), Some(command_id)))
        }
        Ok(CommandOutcome::Rejected {
            command_id,
            rejection,
        }) => Ok((
            "rejected",
            format!("{}: {}", held.detail, rejection.message),
            Some(command_id),
        )),
        Err(ExecError::IdempotencyConflict { .. }) => Ok((
            "duplicate",
            "same payment outcome already recorded".to_string(),
            None,
        )),
        Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
    }
}

/// A late failure after success, or a transfer success after failure: the core records an anomaly event.
fn is_anomaly(kind: Option<CallbackKind>, payment: Option<&PaymentState>) -> bool {
    let Some(p) = payment else { return false };
    let done = matches!(p.status, PaymentStatus::Completed | PaymentStatus::Reversed);
    let failed = matches!(p.status, PaymentStatus::Failed | PaymentStatus::Cancelled);
    let outbound = matches!(p.kind, Some(PaymentKind::Payout | PaymentKind::CardRefund));
    match kind {
        Some(
            CallbackKind::DepositFailed | CallbackKind::PayoutFailed | CallbackKind::RefundFailed,
        ) => done,
        Some(CallbackKind::PayoutSucceeded | CallbackKind::RefundProcessed) => outbound && failed,
        _ => false,
    }
}

async fn record(
    ctx: &LedgerContext,
    pool: &PgPool,
    callback: &NormalizedCallback,
    receipt: &Receipt,
    received_at: DateTime<Utc>,
    correlation_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
             payment_reference, disposition, detail, command_id, correlation_id, raw_body, received_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&ctx.ledger_id)
    .bind(Uuid::new_v4())
    .bind(callback.gateway.to_string())
    .bind(&callback.event_id)
    .bind(&callback.event_type)
    .bind(&receipt.dedupe_key)
    .bind(&callback.reference)
    .bind(receipt.disposition)
    .bind(&receipt.detail)
    .bind(receipt.command_id)
    .bind(correlation_id)
    .bind(&callback.raw_body)
    .bind(received_at)
    .execute(pool)
    .await
    .map(|_| ())
}
