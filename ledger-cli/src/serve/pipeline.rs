//! One authentic-or-not delivery through the ledger: verify, parse, plan, execute with the dedupe key and
//! the delivery's inbox row in the same transaction (no commit is left without its row). Concurrent
//! deliveries share transactions: they go through the ledger's group committer (`GroupCommitter`), which
//! decides and appends a batch of them at once and answers each when its batch has committed. Shared by
//! `serve` (HTTP) and `ingest` (captured deliveries).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger_core::{AggState, Command, CommandEnvelope, Event, Gateway, StreamId};
use ledger_gateway::plan;
use ledger_gateway::{CallbackError, NormalizedCallback, Secrets};
use ledger_store::{
    CommandOutcome, ExecError, Executor, GroupCommitConfig, GroupCommitter, InboxRow,
};
use serde::Serialize;
use uuid::Uuid;

/// One ledger as the workers see it.
pub struct LedgerContext {
    pub ledger_id: String,
    pub executor: Arc<Executor>,
    /// Callbacks and HTTP commands go through it (group commit); the timers use the executor directly.
    pub committer: GroupCommitter,
    pub secrets: Secrets,
    pub keys: super::keys::ApiKeys,
    pub recover_from_user: bool,
}

impl LedgerContext {
    pub fn new(
        executor: Arc<Executor>,
        group_commit: GroupCommitConfig,
        secrets: Secrets,
        keys: super::keys::ApiKeys,
        recover_from_user: bool,
    ) -> LedgerContext {
        LedgerContext {
            ledger_id: executor.ledger_id().to_string(),
            committer: GroupCommitter::spawn(executor.clone(), group_commit),
            executor,
            secrets,
            keys,
            recover_from_user,
        }
    }

    /// A keyed command through group commit.
    pub async fn execute(
        &self,
        env: CommandEnvelope,
        key: String,
    ) -> Result<CommandOutcome, ExecError> {
        Ok(self.committer.submit(env, Some(key)).await?)
    }
}

/// What a delivery became (the 2xx body).
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub disposition: &'static str,
    pub gateway_event_id: String,
    pub dedupe_key: String,
    pub detail: String,
    pub command_id: Option<Uuid>,
    /// What the callback reported (not in the JSON body: CMI's answer depends on it).
    #[serde(skip)]
    pub kind: Option<ledger_gateway::CallbackKind>,
    /// Whether the ledger accepted the command this delivery (or the earlier one it repeats) ran.
    #[serde(skip)]
    pub accepted: bool,
}

impl Receipt {
    /// Whether money came in and is on the books, now or by an earlier delivery of the same movement (booked
    /// to the payment or held in suspense). A refusal, an anomaly with nothing run, or an ignored event is not.
    pub fn money_in_booked(&self) -> bool {
        self.kind == Some(ledger_gateway::CallbackKind::DepositSucceeded) && self.accepted
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// The ledger could not answer (database down, contention): the gateway should retry (503).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// One delivery: verify, parse, plan, then run the plan's command with the inbox row in the same transaction
/// (or record the row alone when there is nothing to run).
pub async fn deliver(
    ctx: &LedgerContext,
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
    // Planning only reads payments (the executor checks versions when it appends): the cache will do.
    let mut payment = match plan::payment_id(&callback) {
        Some(id) => payment_state(ctx, id).await?,
        None => None,
    };
    if let Some(ids) = plan::refunds_to_resolve(&callback, payment.as_ref()) {
        let mut refunds = Vec::with_capacity(ids.len());
        for id in ids {
            refunds.extend(payment_state(ctx, id).await?);
        }
        if let Some(refund) = plan::choose_refund(&callback, &refunds) {
            payment = Some(refund.clone());
        }
    }
    let plan = plan::plan(&callback, payment.as_ref(), ctx.recover_from_user);
    let delivery = Arc::new(Delivery {
        signature: ledger_gateway::verify::signature_lines(gateway, header),
        callback,
        plan,
        received_at,
        correlation_id,
    });
    match delivery.plan.command.clone() {
        None => {
            let receipt = delivery.receipt(
                delivery.plan.disposition.as_str(),
                delivery.plan.detail.clone(),
                None,
            );
            record_alone(ctx, &delivery, &receipt).await?;
            Ok(receipt)
        }
        Some(command) => execute(ctx, delivery, command).await,
    }
}

/// The state of payment `id`, if it exists.
async fn payment_state(
    ctx: &LedgerContext,
    id: Uuid,
) -> Result<Option<ledger_core::aggregates::payment::PaymentState>, DeliveryError> {
    match ctx.executor.current_state(&StreamId::Payment(id)).await {
        Ok((AggState::Payment(state), _)) => Ok(Some(state)),
        Ok(_) => Ok(None),
        Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
    }
}

/// What is known of one delivery once it is planned (shared with the group committer, which builds the
/// delivery's inbox row from the outcome it commits).
struct Delivery {
    callback: NormalizedCallback,
    plan: plan::Plan,
    received_at: DateTime<Utc>,
    correlation_id: Uuid,
    /// The signature header(s) it was authenticated with (`ledger_gateway::verify::signature_lines`).
    signature: Option<String>,
}

impl Delivery {
    fn receipt(
        &self,
        disposition: &'static str,
        detail: String,
        command_id: Option<Uuid>,
    ) -> Receipt {
        Receipt {
            disposition,
            gateway_event_id: self.callback.event_id.clone(),
            dedupe_key: self.plan.dedupe_key.clone(),
            detail,
            command_id,
            kind: self.callback.kind,
            accepted: false,
        }
    }

    /// The inbox row of this delivery (the store escapes NULs in its texts; the body is kept as bytes).
    fn row(&self, receipt: &Receipt) -> InboxRow {
        InboxRow {
            delivery_id: Uuid::new_v4(),
            gateway: self.callback.gateway.to_string(),
            gateway_event_id: self.callback.event_id.clone(),
            event_type: self.callback.event_type.clone(),
            dedupe_key: receipt.dedupe_key.clone(),
            payment_reference: self.callback.reference.clone(),
            disposition: receipt.disposition.to_string(),
            detail: receipt.detail.clone(),
            command_id: receipt.command_id,
            correlation_id: Some(self.correlation_id),
            raw_body: self.callback.raw_body.clone(),
            received_at: self.received_at,
            signature: self.signature.clone(),
        }
    }

    /// Whether the core took this deposit success as "already applied": another movement completed the
    /// deposit between planning and deciding. It is money all the same, held like any later success.
    fn lost_race(&self, outcome: &CommandOutcome) -> bool {
        matches!(outcome, CommandOutcome::Accepted { events, .. } if events.is_empty())
            && matches!(self.plan.command, Some(Command::ConfirmDeposit { .. }))
    }

    /// The receipt for an outcome (`replayed`: the outcome recorded by an earlier delivery; `events`: what it
    /// commits: `committed`). An anomaly is read from the committed events, never from the plan's (cached) payment state.
    fn describe(&self, outcome: &CommandOutcome, replayed: bool, committed: &[Event]) -> Receipt {
        let accepted = matches!(outcome, CommandOutcome::Accepted { .. });
        Receipt {
            accepted,
            ..self.describe_outcome(outcome, replayed, committed)
        }
    }

    fn describe_outcome(
        &self,
        outcome: &CommandOutcome,
        replayed: bool,
        committed: &[Event],
    ) -> Receipt {
        let plan = &self.plan;
        match outcome {
            _ if replayed => self.receipt(
                "duplicate",
                format!("same outcome as command {}", outcome.command_id()),
                Some(outcome.command_id()),
            ),
            CommandOutcome::Accepted { command_id, .. } if self.lost_race(outcome) => self.receipt(
                "suspense",
                format!(
                    "{}; the deposit was completed by another movement first: held in suspense",
                    plan.detail
                ),
                Some(*command_id),
            ),
            CommandOutcome::Accepted {
                command_id, events, ..
            } => {
                let disposition = if committed.iter().any(is_anomaly) {
                    "anomaly"
                } else {
                    plan.disposition.as_str()
                };
                let detail = format!("{}; {} events", plan.detail, events.len());
                self.receipt(disposition, detail, Some(*command_id))
            }
            CommandOutcome::Rejected {
                command_id,
                rejection,
            } => self.receipt(
                "rejected",
                format!("{}: {}", plan.detail, rejection.message),
                Some(*command_id),
            ),
        }
    }
}

async fn record_alone(
    ctx: &LedgerContext,
    delivery: &Delivery,
    receipt: &Receipt,
) -> Result<(), DeliveryError> {
    ctx.committer
        .record(delivery.row(receipt))
        .await
        .map_err(|e| DeliveryError::Unavailable(format!("cannot record the delivery: {e}")))
}

async fn execute(
    ctx: &LedgerContext,
    delivery: Arc<Delivery>,
    command: Command,
) -> Result<Receipt, DeliveryError> {
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: plan::actor(delivery.callback.gateway),
        at: delivery.received_at,
        command,
    };
    let key = delivery.plan.dedupe_key.clone();
    // The receipt of the attempt that committed is the one recorded (each attempt builds its own, the last
    // one commits): the answer says what the inbox row says.
    let recorded: Arc<std::sync::Mutex<Option<Receipt>>> = Arc::default();
    let row = {
        let (delivery, recorded) = (delivery.clone(), recorded.clone());
        move |outcome: &CommandOutcome, replayed: bool, events: &[Event]| {
            let receipt = delivery.describe(outcome, replayed, events);
            let row = delivery.row(&receipt);
            *recorded.lock().expect("receipt lock") = Some(receipt);
            row
        }
    };
    let submitted = ctx
        .committer
        .submit_keyed(env, Some(key), Some(Box::new(row)))
        .await
        .map_err(ExecError::from);
    let delivery = &*delivery;
    match submitted {
        Ok((outcome, replayed)) => {
            if let CommandOutcome::Rejected { rejection, .. } = &outcome
                && !replayed
                && ledger_store::executor::is_transient(&rejection.code)
            {
                // "Not yet" (out of order, or early): nothing is recorded under the key, and a 503 makes the
                // gateway deliver it again, after the event it depends on. A 200 would end its retries.
                return Err(DeliveryError::Unavailable(format!(
                    "not applicable yet ({}): {}",
                    rejection.code, rejection.message
                )));
            }
            if delivery.lost_race(&outcome) {
                // Also on a replay: a crash may have come between the two commits.
                hold_after_race(ctx, delivery).await?;
            }
            let committed = recorded.lock().expect("receipt lock").take();
            Ok(committed.unwrap_or_else(|| delivery.describe(&outcome, replayed, &[])))
        }
        // The same key with another plan: the same movement seen after the payment moved on (its first
        // report's effect stands).
        Err(ExecError::IdempotencyConflict { .. }) => {
            // The same movement's first report stands (recorded, with its effect).
            let receipt = Receipt {
                accepted: true,
                ..delivery.receipt(
                    "duplicate",
                    "same payment outcome already recorded with other details".to_string(),
                    None,
                )
            };
            record_alone(ctx, delivery, &receipt).await?;
            Ok(receipt)
        }
        Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
    }
}

/// Plans again on the payment as it is now (completed) and holds the money in suspense under its own key.
async fn hold_after_race(ctx: &LedgerContext, delivery: &Delivery) -> Result<(), DeliveryError> {
    let callback = &delivery.callback;
    let fresh = match plan::payment_id(callback) {
        Some(id) => match ctx.executor.load_stream_state(&StreamId::Payment(id)).await {
            Ok((AggState::Payment(state), _)) => Some(state),
            Ok(_) => None,
            Err(e) => return Err(DeliveryError::Unavailable(e.to_string())),
        },
        None => None,
    };
    let held = plan::plan(callback, fresh.as_ref(), ctx.recover_from_user);
    let Some(command @ Command::RecordSuspense { .. }) = held.command else {
        return Ok(());
    };
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: plan::actor(callback.gateway),
        at: delivery.received_at,
        command,
    };
    let key = format!("{}:held", delivery.plan.dedupe_key);
    match ctx.executor.execute(&env, Some(&key)).await {
        Ok(_) | Err(ExecError::IdempotencyConflict { .. }) => Ok(()),
        Err(e) => Err(DeliveryError::Unavailable(e.to_string())),
    }
}

/// The core's anomaly events (`PaymentEvent::is_anomaly`).
fn is_anomaly(event: &Event) -> bool {
    matches!(event, Event::Payment(p) if p.is_anomaly())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(disposition: &'static str, accepted: bool) -> Receipt {
        Receipt {
            disposition,
            gateway_event_id: "e".into(),
            dedupe_key: "k".into(),
            detail: String::new(),
            command_id: None,
            kind: Some(ledger_gateway::CallbackKind::DepositSucceeded),
            accepted,
        }
    }

    #[test]
    fn cmi_captures_only_money_the_ledger_accepted_also_on_a_redelivery() {
        // A redelivery of a refused success is a duplicate of a refusal: never captured.
        assert!(!receipt("duplicate", false).money_in_booked());
        assert!(receipt("duplicate", true).money_in_booked());
        assert!(receipt("applied", true).money_in_booked());
        assert!(!receipt("rejected", false).money_in_booked());
        assert!(!receipt("anomaly", false).money_in_booked());
        let failed = Receipt {
            kind: Some(ledger_gateway::CallbackKind::DepositFailed),
            ..receipt("applied", true)
        };
        assert!(!failed.money_in_booked());
    }
}
