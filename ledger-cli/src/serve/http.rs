//! Routes, status codes, the request middleware (correlation id, tracing span, metrics, in-flight bound).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use ledger_core::{Actor, Command, CommandEnvelope};
use ledger_store::{CommandOutcome, ExecError};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::Instrument;
use uuid::Uuid;

use super::pipeline::{DeliveryError, LedgerContext, deliver};
use super::{AppState, Limits};
use crate::outbox;

/// Bound on an `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;

pub fn router(state: Arc<AppState>, limits: &Limits) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/ledgers/{ledger}/callbacks/{gateway}", post(callback))
        .route("/v1/ledgers/{ledger}/commands", post(command))
        .route("/v1/ledgers/{ledger}/outbox", get(outbox_list))
        .route("/v1/ledgers/{ledger}/outbox/claim", post(outbox_claim))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// Correlation id, span, in-flight bound and metrics around every request.
async fn track(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let correlation = request
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::new_v4);
    request.extensions_mut().insert(Correlation(correlation));
    let route = super::metrics::Metrics::route_index(request.uri().path());
    let span = tracing::info_span!("request", correlation_id = %correlation, method = %request.method(), path = %request.uri().path());
    let started = Instant::now();
    state.metrics.started();
    let permit = state.in_flight.acquire().await;
    let mut response = next.run(request).instrument(span.clone()).await;
    drop(permit);
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
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn ledger<'a>(state: &'a AppState, name: &str) -> Result<&'a LedgerContext, Box<Response>> {
    state.ledgers.get(name).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!("unknown ledger {name:?}"),
        ))
    })
}

async fn callback(
    State(state): State<Arc<AppState>>,
    Path((ledger_name, segment)): Path<(String, String)>,
    axum::Extension(Correlation(correlation)): axum::Extension<Correlation>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match ledger(&state, &ledger_name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(gateway) = ledger_gateway::gateway_from_segment(&segment) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown gateway {segment:?}"),
        );
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match deliver(
        ctx,
        &state.pool,
        gateway,
        &header,
        &body,
        Utc::now(),
        correlation,
    )
    .await
    {
        Ok(receipt) => {
            state.metrics.disposition(receipt.disposition);
            tracing::info!(gateway = %gateway, event = %receipt.gateway_event_id, disposition = receipt.disposition, "callback");
            (StatusCode::OK, axum::Json(receipt)).into_response()
        }
        Err(DeliveryError::Callback(ledger_gateway::CallbackError::Unauthorized(e))) => {
            tracing::warn!(gateway = %gateway, reason = %e, "callback refused");
            error(StatusCode::UNAUTHORIZED, e)
        }
        Err(DeliveryError::Callback(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e @ DeliveryError::Unavailable(_)) => {
            tracing::error!(error = %e, "callback not recorded");
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

/// The ledger's API key as a bearer token, compared in constant time.
fn authorize(ctx: &LedgerContext, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &ctx.api_key else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "no API key is configured for this ledger",
        )));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key",
        )))
    }
}

/// One command as the marketplace backend sends it: it asserts the actor (see README, trust model).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    command_id: Option<Uuid>,
    actor: Actor,
    at: Option<DateTime<Utc>>,
    command: Command,
}

async fn command(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match ledger(&state, &ledger_name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(r) = authorize(ctx, &headers) {
        return *r;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
        );
    }
    let request: CommandRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid command: {e}"),
            );
        }
    };
    let env = CommandEnvelope {
        command_id: request.command_id.unwrap_or_else(Uuid::new_v4),
        actor: request.actor,
        at: request.at.unwrap_or_else(Utc::now),
        command: request.command,
    };
    match ctx.executor.execute(&env, key.as_deref()).await {
        Ok(outcome @ CommandOutcome::Accepted { .. }) => {
            (StatusCode::OK, axum::Json(outcome)).into_response()
        }
        Ok(outcome @ CommandOutcome::Rejected { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(outcome)).into_response()
        }
        Err(e @ ExecError::IdempotencyConflict { .. }) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn outbox_list(
    State(state): State<Arc<AppState>>,
    Path(ledger_name): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let ctx = match ledger(&state, &ledger_name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(r) = authorize(ctx, &headers) {
        return *r;
    }
    match outbox::list(&state.pool, &ctx.ledger_id, query.limit.unwrap_or(100)).await {
        Ok(items) => axum::Json(json!({ "items": items })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
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
    let ctx = match ledger(&state, &ledger_name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(r) = authorize(ctx, &headers) {
        return *r;
    }
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
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
