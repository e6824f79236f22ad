//! The OpenAPI 3.1 document of `serve` (`GET /openapi.json`, `escrow-ledger openapi`). The request bodies'
//! schemas are generated from the types `serve` parses (the core's `Command`, `Actor`, `Money`... derive
//! `utoipa::ToSchema` behind ledger-core's `openapi` feature), the paths are the router's own constants, and
//! `ledger-cli/tests/openapi.rs` checks the document against the running server (every route documented,
//! each status it answers listed for its operation), so it cannot drift silently.

use serde_json::{Value, json};
use utoipa::OpenApi;

use super::http::{CALLBACKS, COMMANDS, EVENTS, GATEWAY_REFERENCE, OPENAPI, OUTBOX, OUTBOX_CLAIM};

/// The gateways a callback route takes (its `{gateway}`).
pub const GATEWAYS: [&str; 7] = [
    "stripe",
    "paystack",
    "flutterwave",
    "fincra",
    "cmi",
    "tap",
    "normalized",
];

/// A command as the backend sends it (`POST .../commands`): the actor it asserts, the command, and an
/// optional `command_id` (else the `Idempotency-Key` header names the retry). No `at`: the server stamps it.
#[derive(utoipa::ToSchema)]
#[schema(as = CommandRequest)]
#[allow(dead_code)] // a schema only: `serve::http::CommandRequest` is what parses
struct CommandRequestSchema {
    command_id: Option<uuid::Uuid>,
    actor: ledger_core::Actor,
    command: ledger_core::Command,
}

#[derive(OpenApi)]
#[openapi(components(schemas(CommandRequestSchema, ledger_events::PublicEvent)))]
struct Components;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// A callback's error: JSON, or for CMI the text it expects (`FAILURE`, so that CMI calls again).
fn callback_error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                    "text/plain": {"schema": {"type": "string"}}}
    })
}

fn unavailable() -> Value {
    json!({
        "description": "The database is unavailable or the request's deadline passed: retry after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn ledger_parameter() -> Value {
    json!({"name": "ledger", "in": "path", "required": true,
           "description": "The ledger (one per marketplace)", "schema": {"type": "string", "minLength": 1}})
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Components::openapi()).expect("the schemas serialize");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"],
               "properties": {"error": {"type": "string", "description": "What was wrong; never which keys, ledgers or gateways exist"}}}),
    );
    schemas.insert(
        "CommandOutcome".into(),
        json!({"type": "object", "required": ["status", "command_id"],
               "description": "accepted: the events appended (and the engine's follow-ups); rejected: the rule's code and message",
               "properties": {
                   "status": {"type": "string", "enum": ["accepted", "rejected"]},
                   "command_id": {"type": "string", "format": "uuid"},
                   "events": {"type": "array", "items": {"type": "object"}},
                   "follow_ups": {"type": "array", "items": {"type": "object"}},
                   "rejection": {"type": "object"}
               }}),
    );
    schemas.insert(
        "Items".into(),
        json!({"type": "object", "required": ["items"],
               "properties": {"items": {"type": "array", "items": {"type": "object",
                   "description": "An open payout or card refund: payment_id, kind, user, amount, gateway, lease"}}}}),
    );
    schemas.insert(
        "EventsPage".into(),
        json!({"type": "object", "required": ["events", "next_after"],
               "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/PublicEvent"}},
                   "next_after": {"type": "integer", "format": "int64"}}}),
    );
    schemas.insert(
        "Receipt".into(),
        json!({"type": "object", "description": "What the ledger did with the delivery: disposition (applied, duplicate, suspense, anomaly, ignored, rejected) and the command's outcome"}),
    );
    doc["components"]["securitySchemes"] = json!({
        "backendKey": {"type": "http", "scheme": "bearer",
            "description": "The marketplace backend's key (`api_key`): commands, the outbox, the events feed"},
        "payoutWorkerKey": {"type": "http", "scheme": "bearer",
            "description": "The payout workers' key (`payout_worker_key`): the outbox only"},
        "stripeSignature": {"type": "apiKey", "in": "header", "name": "Stripe-Signature",
            "description": "t=..,v1=..: hex HMAC-SHA256 of \"{t}.{body}\" with the endpoint's secret, within 300 s"},
        "paystackSignature": {"type": "apiKey", "in": "header", "name": "x-paystack-signature",
            "description": "hex HMAC-SHA512 of the body"},
        "flutterwaveSignature": {"type": "apiKey", "in": "header", "name": "flutterwave-signature",
            "description": "base64 HMAC-SHA256 of the body keyed with the secret hash"},
        "fincraSignature": {"type": "apiKey", "in": "header", "name": "signature",
            "description": "hex HMAC-SHA512 of the body"},
        "tapHashstring": {"type": "apiKey", "in": "header", "name": "hashstring",
            "description": "hex HMAC-SHA256 of the charge's named fields"},
        "escrowSignature": {"type": "apiKey", "in": "header", "name": "X-Escrow-Signature",
            "description": "t=..,v1=.. as Stripe's, with callback_secret (the normalized format)"}
    });
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "escrow-ledger serve",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Gateway callbacks, commands, the outbox and the events feed of an escrow ledger. CMI signs inside its form (HASH field)."
    });
    doc["paths"] = paths();
    doc
}

fn paths() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(CALLBACKS.into(), json!({"post": {
        "operationId": "postCallback",
        "summary": "A gateway's callback, verified on its raw bytes",
        "parameters": [ledger_parameter(),
            {"name": "gateway", "in": "path", "required": true, "schema": {"type": "string", "enum": GATEWAYS}}],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
        "security": [{"stripeSignature": []}, {"paystackSignature": []}, {"flutterwaveSignature": []},
                     {"fincraSignature": []}, {"tapHashstring": []}, {"escrowSignature": []}, {}],
        "responses": {
            "200": {"description": "Applied, duplicate, suspense, anomaly, ignored or rejected by the ledger (CMI: ACTION=POSTAUTH, APPROVED or FAILURE as text)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Receipt"}},
                                "text/plain": {"schema": {"type": "string"}}}},
            "401": callback_error("A bad, missing or stale signature, a gateway without a secret, an unknown ledger"),
            "404": error_response("An unknown gateway"),
            "413": callback_error("The body is over the limit"),
            "422": callback_error("An unparseable payload"),
            "503": {"description": "The database is unavailable, the deadline passed, or the callback refers to something not recorded yet: the gateway retries",
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                                "text/plain": {"schema": {"type": "string"}}}}
        }}}));
    paths.insert(COMMANDS.into(), json!({"post": {
        "operationId": "postCommand",
        "summary": "One command, with the actor the backend asserts",
        "parameters": [ledger_parameter(),
            {"name": "Idempotency-Key", "in": "header", "required": false,
             "description": "1..=256 visible ASCII bytes; required unless the body has a command_id",
             "schema": {"type": "string", "minLength": 1, "maxLength": 256}}],
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/CommandRequest"}}}},
        "security": [{"backendKey": []}],
        "responses": {
            "200": {"description": "Accepted (or the recorded outcome of the same key and body)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandOutcome"}}}},
            "400": error_response("A malformed Idempotency-Key"),
            "401": error_response("A missing or wrong key, or an unknown ledger"),
            "403": error_response("A gateway actor, a command that only a gateway's word may send, a stated occurred_at, or the payout workers' key"),
            "409": error_response("The Idempotency-Key (or command_id) was used with another body"),
            "413": error_response("The body is over the limit"),
            "415": error_response("The body is not JSON (Content-Type)"),
            "422": {"description": "Refused by the ledger (a CommandOutcome with the rule's code), or an unparseable body, a NUL in a field, `at` given, no key and no command_id (an Error)",
                    "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/CommandOutcome"}, {"$ref": "#/components/schemas/Error"}]}}}},
            "503": unavailable()
        }}}));
    let outbox_security = json!([{"payoutWorkerKey": []}, {"backendKey": []}]);
    paths.insert(OUTBOX.into(), json!({"get": {
        "operationId": "listOutbox",
        "summary": "Open payouts and card refunds, with their leases",
        "parameters": [ledger_parameter(),
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
        "security": outbox_security,
        "responses": {
            "200": {"description": "The open items", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Items"}}}},
            "422": error_response("A malformed query"),
            "401": error_response("A missing or wrong key, or an unknown ledger"),
            "503": unavailable()
        }}}));
    paths.insert(OUTBOX_CLAIM.into(), json!({"post": {
        "operationId": "claimOutbox",
        "summary": "Claims open items for a worker, with a lease",
        "parameters": [ledger_parameter()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["worker"], "additionalProperties": false,
            "properties": {"worker": {"type": "string", "minLength": 1},
                           "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                           "lease_seconds": {"type": "integer", "minimum": 1}}}}}},
        "security": outbox_security,
        "responses": {
            "200": {"description": "The items claimed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Items"}}}},
            "401": error_response("A missing or wrong key, or an unknown ledger"),
            "413": error_response("The body is over the limit"),
            "415": error_response("The body is not JSON (Content-Type)"),
            "422": error_response("An unparseable body or a bad limit"),
            "503": unavailable()
        }}}));
    paths.insert(GATEWAY_REFERENCE.into(), json!({"post": {
        "operationId": "recordGatewayReference",
        "summary": "Keeps the gateway's own id of a payout or card refund just sent",
        "parameters": [ledger_parameter(),
            {"name": "payment", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["gateway_reference"], "additionalProperties": false,
            "properties": {"gateway_reference": {"type": "string", "minLength": 1}}}}}},
        "security": outbox_security,
        "responses": {
            "200": {"description": "Recorded (the same id again: nothing changes)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandOutcome"}}}},
            "400": error_response("A malformed payment id"),
            "401": error_response("A missing or wrong key, or an unknown ledger"),
            "409": error_response("Recorded already with another id"),
            "413": error_response("The body is over the limit"),
            "415": error_response("The body is not JSON (Content-Type)"),
            "422": {"description": "Refused by the ledger, or an unparseable body",
                    "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/CommandOutcome"}, {"$ref": "#/components/schemas/Error"}]}}}},
            "503": unavailable()
        }}}));
    paths.insert(EVENTS.into(), json!({"get": {
        "operationId": "eventsFeed",
        "summary": "The public events after a position (long-polls up to wait_ms while there is none)",
        "parameters": [ledger_parameter(),
            {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "wait_ms", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 8000}}],
        "security": [{"backendKey": []}],
        "responses": {
            "200": {"description": "A page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsPage"}}}},
            "422": error_response("A malformed query"),
            "401": error_response("A missing or wrong key, or an unknown ledger"),
            "403": error_response("The payout workers' key"),
            "503": unavailable()
        }}}));
    paths.insert("/healthz".into(), json!({"get": {"operationId": "health", "security": [],
        "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}));
    paths.insert("/metrics".into(), json!({"get": {"operationId": "metrics", "security": [],
        "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}));
    paths.insert(OPENAPI.into(), json!({"get": {"operationId": "openapi", "security": [],
        "responses": {"200": {"description": "This document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}));
    Value::Object(paths)
}
