//! Routes, status codes, the request middleware (correlation id, tracing span, metrics, in-flight bound).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use ledger_core::{Actor, Command, CommandEnvelope};
use ledger_store::{CommandOutcome, ExecError};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::keys::{self, Scope};
use super::pipeline::{DeliveryError, LedgerContext, Receipt, deliver};
use super::{AppState, Limits};
use crate::outbox;

/// Bound on an `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// What a 503 asks the client to wait before retrying.
const RETRY_AFTER_SECONDS: &str = "1";
/// Namespace of command ids derived from API idempotency keys (a retry keeps its command id).
const API_COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x2c4b_81e0_5d3f_4a96_b7c1_90e2_6f8a_d435);

/// The routes, named once for the router and the OpenAPI document (`serve::openapi`).
pub const CALLBACKS: &str = "/v1/ledgers/{ledger}/callbacks/{gateway}";
pub const COMMANDS: &str = "/v1/ledgers/{ledger}/commands";
pub const OUTBOX: &str = "/v1/ledgers/{ledger}/outbox";
pub const EVENTS: &str = "/v1/ledgers/{ledger}/events";
pub const OUTBOX_CLAIM: &str = "/v1/ledgers/{ledger}/outbox/claim";
pub const GATEWAY_REFERENCE: &str = "/v1/ledgers/{ledger}/outbox/{payment}/gateway-reference";
pub const OPENAPI: &str = "/openapi.json";

pub fn router(state: Arc<AppState>, limits: &Limits) -> Router {
    // Innermost first: the body is read, then a slot taken, all inside the deadline; probes skip both.
    let api = Router::new()
        .route(CALLBACKS, post(callback))
        .route(COMMANDS, post(command))
        .route(OUTBOX, get(outbox_list))
        .route(EVENTS, get(events_feed))
        .route(OUTBOX_CLAIM, post(outbox_claim))
        .route(GATEWAY_REFERENCE, post(outbox_gateway_reference))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            (state.clone(), limits.body_limit_bytes),
            admit,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            deadline,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            OPENAPI,
            get(|| async { axum::Json(super::openapi::document()) }),
        )
        .merge(api)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// Every authentication failure looks the same: no hint of which keys, gateways or ledgers exist.
fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized")
}

/// The ledger cannot answer now (database down, contention, deadline passed): retry shortly.
fn unavailable(message: impl std::fmt::Display) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}

/// The request deadline: it covers the body, the wait for a slot and the work; past it, 503.
async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => unavailable("the request did not complete in time"),
    }
}

/// Reads the whole body (bounded) BEFORE taking an in-flight slot, so slow senders hold no slot.
async fn admit(
    State((state, limit)): State<(Arc<AppState>, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_large(limit);
    };
    let Ok(_permit) = state.in_flight.acquire().await else {
        return unavailable("shutting down");
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// 413, closing the connection: the unread rest of the body must not be taken for the next request, and the
/// client must not reuse a connection the server is about to close.
fn too_large(limit: usize) -> Response {
    let mut response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {limit} bytes or cut short"),
    );
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

/// Correlation id, span and metrics around every request.
async fn track(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let correlation = request
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::new_v4);
    request.extensions_mut().insert(Correlation(correlation));
    let route = super::metrics::Metrics::route_index(request.uri().path());
    let span = tracing::info_span!("request", correlation_id = %correlation, method = %request.method(), path = ?request.uri().path());
    let started = Instant::now();
    state.metrics.started();
    let mut response = next.run(request).instrument(span.clone()).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .metrics
        .finished(route, response.status().as_u16(), micros);
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), micros, "answered"));
    if let Ok(value) = HeaderValue::from_str(&correlation.to_string()) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

#[derive(Clone, Copy)]
struct Correlation(Uuid);

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    // Events out: each sink's backlog and lag behind the log (none before the first relay ran).
    if let Ok(sinks) = ledger_events::cursor::status(&state.pool).await
        && !sinks.is_empty()
    {
        text.push_str(
            "# HELP escrow_events_backlog Events of the log not yet delivered to a sink.\n",
        );
        text.push_str("# TYPE escrow_events_backlog gauge\n");
        for s in &sinks {
            text.push_str(&format!(
                "escrow_events_backlog{{ledger={:?},sink={:?}}} {}\n",
                s.ledger, s.sink, s.backlog
            ));
        }
        text.push_str(
            "# HELP escrow_events_lag_seconds Age of the oldest event not yet delivered to a sink (0: none).\n",
        );
        text.push_str("# TYPE escrow_events_lag_seconds gauge\n");
        for s in &sinks {
            text.push_str(&format!(
                "escrow_events_lag_seconds{{ledger={:?},sink={:?}}} {:.3}\n",
                s.ledger, s.sink, s.lag_seconds
            ));
        }
        text.push_str("# HELP escrow_events_delivered_total Events delivered to a sink.\n");
        text.push_str("# TYPE escrow_events_delivered_total counter\n");
        for s in &sinks {
            text.push_str(&format!(
                "escrow_events_delivered_total{{ledger={:?},sink={:?}}} {}\n",
                s.ledger, s.sink, s.delivered
            ));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// The ledger and the scope of the presented key. The key's digest is compared even when the ledger does not
/// exist, and every failure is the same 401: an unknown ledger is not told apart from a wrong key.
fn authenticate<'a>(
    state: &'a AppState,
    ledger_name: &str,
    headers: &HeaderMap,
) -> Result<(&'a LedgerContext, Scope), Box<Response>> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let digest = keys::digest(given);
    let Some(ctx) = state.ledgers.get(ledger_name) else {
        let _ = keys::ApiKeys::default().scope_of(&digest);
        return Err(Box::new(unauthorized()));
    };
    match ctx.keys.scope_of(&digest) {
        Some(scope) => Ok((ctx, scope)),
        None => Err(Box::new(unauthorized())),
    }
}

async fn callback(
    State(state): State<Arc<AppState>>,
    Path((ledger_name, segment)): Path<(String, String)>,
    axum::Extension(Correlation(correlation)): axum::Extension<Correlation>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(gateway) = ledger_gateway::gateway_from_segment(&segment) else {
        return error(StatusCode::NOT_FOUND, "unknown gateway");
    };
    // Without the ledger there are no secrets to verify with: the same 401 as a bad signature.
    let Some(ctx) = state.ledgers.get(&ledger_name) else {
        return unauthorized();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let result = deliver(ctx, gateway, &header, &body, Utc::now(), correlation).await;
    if gateway == ledger_core::Gateway::Cmi {
        return cmi_answer(&state, result);
    }
    match result {
        Ok(receipt) => {
            state.metrics.disposition(receipt.disposition);
            // Payload texts are logged with `?`: control characters come out escaped, never raw.
            tracing::info!(gateway = %gateway, event = ?receipt.gateway_event_id, disposition = receipt.disposition, "callback");
            (StatusCode::OK, axum::Json(receipt)).into_response()
        }
        Err(DeliveryError::Callback(ledger_gateway::CallbackError::Unauthorized(e))) => {
            tracing::warn!(gateway = %gateway, reason = %e, "callback refused");
            unauthorized()
        }
        Err(DeliveryError::Callback(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e @ DeliveryError::Unavailable(_)) => {
            tracing::error!(error = %e, "callback not recorded");
            unavailable(e)
        }
    }
}

/// CMI reads the answer's body, not a JSON receipt: `ACTION=POSTAUTH` when the payment is on the books (now
/// or by an earlier delivery: CMI then captures it), `APPROVED` when the report was recorded and nothing is
/// to be captured (a failed attempt, an ignored or refused report), `FAILURE` when it could not be recorded
/// (CMI calls again). Logged and counted like the other gateways' deliveries.
fn cmi_answer(state: &AppState, result: Result<Receipt, DeliveryError>) -> Response {
    let text = |status: StatusCode, body: &'static str| {
        (
            status,
            [("content-type", "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    match result {
        Ok(receipt) => {
            state.metrics.disposition(receipt.disposition);
            tracing::info!(gateway = "cmi", event = ?receipt.gateway_event_id, disposition = receipt.disposition, "callback");
            if receipt.money_in_booked() {
                text(StatusCode::OK, "ACTION=POSTAUTH")
            } else {
                text(StatusCode::OK, "APPROVED")
            }
        }
        Err(DeliveryError::Callback(ledger_gateway::CallbackError::Unauthorized(e))) => {
            tracing::warn!(gateway = "cmi", reason = %e, "callback refused");
            text(StatusCode::UNAUTHORIZED, "FAILURE")
        }
        Err(DeliveryError::Callback(e)) => {
            tracing::warn!(gateway = "cmi", reason = %e, "callback unparseable");
            text(StatusCode::UNPROCESSABLE_ENTITY, "FAILURE")
        }
        Err(e @ DeliveryError::Unavailable(_)) => {
            tracing::error!(error = %e, "callback not recorded");
            text(StatusCode::SERVICE_UNAVAILABLE, "FAILURE")
        }
    }
}

/// One command as the marketplace backend sends it: it asserts the actor (see README, trust model). `at` is
/// not accepted: the server stamps it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    command_id: Option<Uuid>,
    actor: Actor,
    at: Option<serde_json::Value>,
    command: Command,
}

/// The path of the first string (or key) holding a NUL, which PostgreSQL cannot store in text or jsonb.
fn nul_field(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value as V;
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        V::String(text) if text.contains('\0') => Some(path.to_string()),
        V::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_field(item, &format!("{path}[{i}]"))),
        V::Object(map) => map.iter().find_map(|(name, item)| {
            if name.contains('\0') {
                Some(join(&name.escape_debug().to_string()))
            } else {
                nul_field(item, &join(name))
            }
        }),
        _ => None,
    }
}

/// Money enters the ledger only on a gateway's verified word: no key confirms a deposit, and no key states
/// when money moved (`occurred_at` and a settlement's time are the gateways' own fields, read from their
/// signed callbacks). An operator's manual confirmation goes through `escrow-ledger apply` with database
/// credentials, recorded with the operator's id.
fn money_in_refusal(command: &Command) -> Option<&'static str> {
    match command {
        Command::ConfirmDeposit { .. } => Some(
            "deposits are confirmed by their gateway's verified callback; an operator's manual \
             confirmation goes through `escrow-ledger apply`",
        ),
        Command::RecordSettlement { .. } => Some(
            "settlements are reported by the gateway's verified callback or recorded by an operator \
             through `escrow-ledger apply` (they state when money moved)",
        ),
        Command::ConfirmTransfer {
            occurred_at: Some(_),
            ..
        }
        | Command::ReversePayout {
            occurred_at: Some(_),
            ..
        }
        | Command::OpenChargeback {
            occurred_at: Some(_),
            ..
        } => Some(
            "occurred_at is a gateway's own field, taken from its verified callback; over HTTP the \
             server's time applies (leave it out)",
        ),
        _ => None,
    }
}

/// The command and its stored idempotency key (`api:` namespace: never a callback's `callback:` key).
fn parse_command(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(CommandEnvelope, String), Box<Response>> {
    let refuse = |message: String| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, message));
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| refuse(format!("invalid command: {e}")))?;
    if let Some(field) = nul_field(&value, "") {
        return Err(refuse(format!(
            "field {field} contains a NUL character, which cannot be stored"
        )));
    }
    let request: CommandRequest =
        serde_json::from_value(value).map_err(|e| refuse(format!("invalid command: {e}")))?;
    if request.at.is_some() {
        return Err(refuse(
            "`at` is stamped by the server; effective times come from the gateways' own fields"
                .into(),
        ));
    }
    if matches!(request.actor, Actor::Gateway(_)) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "a gateway actor comes only from a verified callback",
        )));
    }
    if let Some(refusal) = money_in_refusal(&request.command) {
        return Err(Box::new(error(StatusCode::FORBIDDEN, refusal)));
    }
    let header = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX => Some(k),
        Some(_) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "Idempotency-Key must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII bytes"
                ),
            )));
        }
    };
    let key = match (header, request.command_id) {
        (Some(k), _) => format!("api:key:{k}"),
        (None, Some(id)) => format!("api:command:{id}"),
        (None, None) => {
            return Err(refuse(
                "every command needs an Idempotency-Key header or a top-level command_id, so that a retry \
                 can never apply twice"
                    .into(),
            ));
        }
    };
    let env = CommandEnvelope {
        command_id: request
            .command_id
            .unwrap_or_else(|| Uuid::new_v5(&API_COMMAND_NAMESPACE, key.as_bytes())),
        actor: request.actor,
        at: Utc::now(),
        command: request.command,
    };
    Ok((env, key))
}

async fn command(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match authenticate(&state, &ledger_name, &headers) {
        Ok((ctx, Scope::Backend)) => ctx,
        Ok((_, Scope::PayoutWorker)) => {
            return error(
                StatusCode::FORBIDDEN,
                "this key reads and claims the outbox only",
            );
        }
        Err(r) => return *r,
    };
    let (env, key) = match parse_command(&headers, &body) {
        Ok(parsed) => parsed,
        Err(r) => return *r,
    };
    let executed = ctx.execute(env, key).await;
    executed_answer(
        executed,
        "Idempotency-Key (or command_id) already used for a different request",
    )
}

/// A keyed command's answer: 200 accepted, 422 refused by the ledger, 409 the key taken by another request
/// (`conflict` says which), 503 when the ledger could not answer.
fn executed_answer(
    executed: Result<CommandOutcome, ExecError>,
    conflict: &'static str,
) -> Response {
    match executed {
        Ok(outcome @ CommandOutcome::Accepted { .. }) => {
            (StatusCode::OK, axum::Json(outcome)).into_response()
        }
        Ok(outcome @ CommandOutcome::Rejected { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(outcome)).into_response()
        }
        Err(ExecError::IdempotencyConflict { .. }) => error(StatusCode::CONFLICT, conflict),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    after: Option<i64>,
    limit: Option<i64>,
    wait_ms: Option<u64>,
}

/// The pull feed: `{"events": [...], "next_after": P}` after a position, long-polling up to `wait_ms` while
/// there is nothing new. The backend key only (a payout worker's key reads the outbox, not the ledger).
async fn events_feed(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let ctx = match authenticate(&state, &ledger_name, &headers) {
        Ok((ctx, Scope::Backend)) => ctx,
        Ok((_, Scope::PayoutWorker)) => {
            return error(
                StatusCode::FORBIDDEN,
                "this key reads and claims the outbox only",
            );
        }
        Err(r) => return *r,
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected ?after=<position>&limit=<1..1000>&wait_ms=<0..8000>",
        );
    };
    let store = ledger_store::PgEventStore::new(state.pool.clone());
    let page = ledger_events::feed::page(
        &state.pool,
        &store,
        &ctx.ledger_id,
        query.after.unwrap_or(0),
        query.limit.unwrap_or(100),
        Duration::from_millis(query.wait_ms.unwrap_or(0)),
    )
    .await;
    match page {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn outbox_list(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // Both scopes read and claim the outbox.
    let ctx = match authenticate(&state, &ledger_name, &headers) {
        Ok((ctx, _)) => ctx,
        Err(r) => return *r,
    };
    // A malformed query is answered in JSON like every other error (axum's own answer is plain text).
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected ?limit=<1..1000>",
        );
    };
    match outbox::list(&state.pool, &ctx.ledger_id, query.limit.unwrap_or(100)).await {
        Ok(items) => axum::Json(json!({ "items": items })).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayReferenceRequest {
    gateway_reference: String,
}

/// The payout worker records the gateway's own id of a payout or card refund it sent (Paystack's refund id),
/// so that the gateway's notice finds it by that id. Both scopes; it acts as the system, once per id.
async fn outbox_gateway_reference(
    State(state): State<Arc<AppState>>,
    Path((ledger_name, payment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match authenticate(&state, &ledger_name, &headers) {
        Ok((ctx, _)) => ctx,
        Err(r) => return *r,
    };
    let Ok(payment_id) = Uuid::parse_str(&payment) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the payment id is not a UUID",
        );
    };
    let request: GatewayReferenceRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expected {{\"gateway_reference\": \"...\"}}: {e}"),
            );
        }
    };
    if request.gateway_reference.contains('\0') {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "gateway_reference holds a NUL",
        );
    }
    let key = format!(
        "api:gateway-reference:{payment_id}:{}",
        ledger_gateway::bounded::key_part(&request.gateway_reference)
    );
    let env = CommandEnvelope {
        command_id: Uuid::new_v5(&API_COMMAND_NAMESPACE, key.as_bytes()),
        actor: Actor::System,
        at: Utc::now(),
        command: Command::RecordGatewayReference {
            payment_id,
            gateway_reference: request.gateway_reference,
        },
    };
    let executed = ctx.execute(env, key).await;
    executed_answer(
        executed,
        "this gateway reference was recorded for this payment with another request",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    worker: String,
    limit: Option<i64>,
    lease_seconds: Option<i64>,
}

async fn outbox_claim(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Both scopes read and claim the outbox.
    let ctx = match authenticate(&state, &ledger_name, &headers) {
        Ok((ctx, _)) => ctx,
        Err(r) => return *r,
    };
    let request: ClaimRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid claim: {e}"),
            );
        }
    };
    if let Err(e) = outbox::check_worker(&request.worker) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let claimed = outbox::claim(
        &state.pool,
        &ctx.ledger_id,
        &request.worker,
        request.limit.unwrap_or(10),
        request.lease_seconds.unwrap_or(60),
    )
    .await;
    match claimed {
        Ok(items) => axum::Json(json!({ "items": items })).into_response(),
        Err(e) => unavailable(e),
    }
}
