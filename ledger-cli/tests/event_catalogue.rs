//! Issue 21: one real example of every public event type. One scenario (the demo, then every path the demo
//! does not take, then the timers far in the future) must make every type the code emits (the list is read
//! from the core's event enums, so a new event type fails this test until the scenario makes it); with
//! `UPDATE_EVENT_CATALOGUE=1` it writes `docs/events.md` from what it made.

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ledger_core::ids::derived_id;
use ledger_store::testdb::TestDb;
use serde_json::{Value, json};
use support::{admin, cli, gateway, line, setup, usd, user};
use uuid::Uuid;

fn run(db: &TestDb, args: &[&str]) -> String {
    let out = cli(db, "default", args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn l(actor: Value, command: Value) -> Value {
    line(actor, command, None)
}

/// A deposit of `amount` into `u`'s wallet through Stripe, confirmed.
fn deposit(u: Uuid, d: Uuid, amount: &str, fund: Value) -> Vec<Value> {
    vec![
        l(
            user(u),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": usd(amount), "gateway": "stripe", "fund": fund}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "confirm_deposit", "payment_id": d, "amount": usd(amount), "gateway_fee": null, "occurred_at": null}),
        ),
    ]
}

/// A sent quote of `v` for a new request of `c`: (request, quote).
fn quoted(c: Uuid, v: Uuid, amount: &str) -> (Uuid, Uuid, Vec<Value>) {
    let (r, q) = (Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now();
    let lines = vec![
        l(
            user(c),
            json!({"type": "open_service_request", "request_id": r, "currency": "USD", "title": "Paint the fence",
                   "expires_at": now + Duration::days(7)}),
        ),
        l(
            user(v),
            json!({"type": "create_quote", "quote_id": q, "request_id": r, "amount": usd(amount),
                   "valid_until": now + Duration::days(3)}),
        ),
        l(user(v), json!({"type": "send_quote", "quote_id": q})),
    ];
    (r, q, lines)
}

/// A booking of `c` with `v`, paid: (booking, project).
fn paid_booking(db: &TestDb, c: Uuid, v: Uuid) -> (Uuid, Uuid) {
    let (_, q, mut lines) = quoted(c, v, "100.00");
    lines.push(l(user(c), json!({"type": "accept_quote", "quote_id": q})));
    let (b, p) = (derived_id(q, "booking"), derived_id(q, "project"));
    lines.extend(deposit(
        c,
        Uuid::new_v4(),
        "100.00",
        json!({"project_id": p, "milestone": 1}),
    ));
    setup(db, "default", &lines);
    (b, p)
}

/// An agreed project of `c` (buyer) and `v` (seller) with these milestones.
fn agreed(c: Uuid, v: Uuid, milestones: &[&str]) -> (Uuid, Vec<Value>) {
    let p = Uuid::new_v4();
    let amounts: Vec<Value> = milestones.iter().map(|a| usd(a)).collect();
    (
        p,
        vec![
            l(
                user(c),
                json!({"type": "create_project", "project_id": p, "buyer": c, "seller": v, "currency": "USD",
                       "milestones": amounts, "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0"}}),
            ),
            l(
                user(c),
                json!({"type": "submit_project_for_agreement", "project_id": p}),
            ),
            l(
                user(v),
                json!({"type": "agree_to_project", "project_id": p}),
            ),
        ],
    )
}

fn payout(u: Uuid, id: Uuid, amount: &str) -> Value {
    l(
        user(u),
        json!({"type": "request_payout", "payout_id": id, "amount": usd(amount), "fee": null, "gateway": "stripe"}),
    )
}

/// Every path the demo does not take.
fn the_other_paths(db: &TestDb) {
    let (c, v, operator) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let m = |p: Uuid, n: u32, what: &str| json!({"type": what, "project_id": p, "milestone": n});
    // Policies and periods.
    setup(
        db,
        "default",
        &[
            l(
                admin(operator),
                json!({"type": "set_deadline_policy", "deadlines": {
                    "auto_approve_days": {"default": 14, "min": 1, "max": 365},
                    "auto_accept_hours": {"default": 72, "min": 1, "max": 8760},
                    "request_expiry_hours": {"default": 720, "min": 1, "max": 8760},
                    "pending_maturity_hours": {"default": 168, "min": 0, "max": 8760},
                    "dispute_response_hours": {"default": 336, "min": 1, "max": 8760},
                    "deposit_expiry_hours": {"default": 72, "min": 1, "max": 8760},
                    "dispute_min_response_hours": 48}}),
            ),
            l(
                admin(operator),
                json!({"type": "close_periods", "through": "2020-01"}),
            ),
            l(
                admin(operator),
                json!({"type": "reopen_periods", "from": "2020-01", "reason": "a late bank statement"}),
            ),
        ],
    );
    // Bookings: one cancelled, one disputed.
    let (b1, _) = paid_booking(db, c, v);
    setup(
        db,
        "default",
        &[l(
            user(c),
            json!({"type": "cancel_booking", "booking_id": b1}),
        )],
    );
    let (b2, p2) = paid_booking(db, c, v);
    setup(
        db,
        "default",
        &[
            l(user(v), json!({"type": "start_booking", "booking_id": b2})),
            l(
                user(v),
                json!({"type": "deliver_booking", "booking_id": b2}),
            ),
            l(
                user(c),
                json!({"type": "open_dispute", "dispute_id": Uuid::new_v4(), "project_id": p2, "milestone": 1,
                       "reason": "the fence is half painted", "proposed_release": usd("50.00"),
                       "respond_by": Utc::now() + Duration::days(3)}),
            ),
        ],
    );
    // A delivered booking nobody accepts (the timers auto-accept it); a quote declined.
    let (b3, _) = paid_booking(db, c, v);
    let (_, q4, mut lines) = quoted(c, v, "70.00");
    lines.extend([
        l(user(v), json!({"type": "start_booking", "booking_id": b3})),
        l(
            user(v),
            json!({"type": "deliver_booking", "booking_id": b3}),
        ),
        l(user(c), json!({"type": "decline_quote", "quote_id": q4})),
    ]);
    setup(db, "default", &lines);
    // A quote withdrawn, its request cancelled.
    let (r3, q3, mut lines) = quoted(c, v, "80.00");
    lines.push(l(
        user(v),
        json!({"type": "withdraw_quote", "quote_id": q3}),
    ));
    lines.push(l(
        user(c),
        json!({"type": "cancel_service_request", "request_id": r3}),
    ));
    setup(db, "default", &lines);
    // Projects: a milestone cancelled, a project cancelled, a project closed.
    let (p4, mut lines) = agreed(c, v, &["50.00", "60.00"]);
    lines.extend(deposit(c, Uuid::new_v4(), "500.00", Value::Null));
    lines.push(l(user(c), m(p4, 1, "fund_milestone")));
    lines.push(l(user(c), m(p4, 2, "cancel_milestone")));
    let (p5, more) = agreed(c, v, &["70.00"]);
    lines.extend(more);
    lines.push(l(
        user(c),
        json!({"type": "cancel_project", "project_id": p5}),
    ));
    let (p6, more) = agreed(c, v, &["40.00"]);
    lines.extend(more);
    lines.extend([
        l(user(c), m(p6, 1, "fund_milestone")),
        l(user(v), m(p6, 1, "submit_milestone")),
        l(user(c), m(p6, 1, "approve_milestone")),
        l(
            admin(operator),
            json!({"type": "close_project", "project_id": p6}),
        ),
    ]);
    setup(db, "default", &lines);
    // Card refunds: one failed (its reservation released); chargebacks: won, then lost (a conflict).
    let d7 = Uuid::new_v4();
    let (refund, cb) = (Uuid::new_v4(), Uuid::new_v4());
    let mut lines = deposit(c, d7, "200.00", Value::Null);
    lines.extend([
        l(
            user(c),
            json!({"type": "request_card_refund", "refund_id": refund, "deposit_id": d7, "amount": usd("20.00"),
                   "gateway": "stripe"}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "fail_transfer", "payment_id": refund, "reason": "card expired"}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "open_chargeback", "payment_id": d7, "chargeback_id": cb, "amount": usd("5.00"),
                   "fee": null, "occurred_at": null}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "win_chargeback", "payment_id": d7, "chargeback_id": cb}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "lose_chargeback", "payment_id": d7, "chargeback_id": cb, "recover_from_user": false}),
        ),
    ]);
    // Payouts: cancelled; completed then reversed; reversed before completion (returned).
    let (po1, po2, po3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    lines.extend([
        payout(c, po1, "10.00"),
        l(
            support::system(),
            json!({"type": "record_gateway_reference", "payment_id": po1, "gateway_reference": "tr_9Qx2"}),
        ),
        l(
            user(c),
            json!({"type": "cancel_payout", "payment_id": po1}),
        ),
        payout(c, po2, "10.00"),
        l(
            gateway("stripe"),
            json!({"type": "confirm_transfer", "payment_id": po2, "gateway_fee": null, "occurred_at": null}),
        ),
        l(
            gateway("stripe"),
            json!({"type": "reverse_payout", "payment_id": po2, "occurred_at": null}),
        ),
        payout(c, po3, "10.00"),
        l(
            gateway("stripe"),
            json!({"type": "reverse_payout", "payment_id": po3, "occurred_at": null}),
        ),
    ]);
    setup(db, "default", &lines);
    // A refund made from the gateway's dashboard after the wallet paid the money out: held in suspense.
    let (u8_, d8) = (Uuid::new_v4(), Uuid::new_v4());
    let mut lines = deposit(u8_, d8, "30.00", Value::Null);
    lines.push(payout(u8_, Uuid::new_v4(), "30.00"));
    lines.push(l(
        gateway("stripe"),
        json!({"type": "record_gateway_refund", "refund_id": Uuid::new_v4(), "deposit_id": d8, "amount": usd("30.00"),
               "gateway_fee": null, "occurred_at": null, "gateway_reference": "re_dashboard_1"}),
    ));
    // Suspense: one assigned to a user, one returned.
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    for s in [s1, s2] {
        lines.push(l(
            gateway("stripe"),
            json!({"type": "record_suspense", "suspense_id": s, "gateway": "stripe", "amount": usd("15.00"),
                   "reference": format!("unknown-{s}"), "reason": "no payment with this reference"}),
        ));
    }
    lines.push(l(
        admin(operator),
        json!({"type": "assign_suspense", "suspense_id": s1, "user": c}),
    ));
    lines.push(l(
        admin(operator),
        json!({"type": "return_suspense", "suspense_id": s2}),
    ));
    setup(db, "default", &lines);
}

/// Deposits' other outcomes, disputes contested and withdrawn, changes requested, a funded milestone charged
/// back, a lost chargeback, a processed card refund, proceeds maturing, settlements, reconciliations.
fn more_paths(db: &TestDb) {
    let (c, v, operator) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let m = |p: Uuid, n: u32, what: &str| json!({"type": what, "project_id": p, "milestone": n});
    let gw = |command: Value| l(gateway("stripe"), command);
    let (d1, d2, d3, d4) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let initiate = |d: Uuid, fund: Value| {
        l(
            user(c),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("100.00"), "gateway": "stripe", "fund": fund}),
        )
    };
    let confirm = |d: Uuid| {
        gw(
            json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("100.00"), "gateway_fee": null, "occurred_at": null}),
        )
    };
    let fail = |d: Uuid| {
        gw(json!({"type": "fail_deposit", "payment_id": d, "reason": "insufficient funds"}))
    };
    let mut lines = vec![
        l(
            admin(operator),
            json!({"type": "set_fee_policy", "overrides_allowed": true,
                   "commission": {"default": "0.10", "min": "0", "max": "0.20"},
                   "buyer_fee": {"default": "0", "min": "0", "max": "0.05"},
                   "payout_fee": {"default": "0", "min": "0", "max": "0.02"}}),
        ),
        // Processing, an attempt failed, then success; a failure after success is ignored.
        initiate(d1, Value::Null),
        gw(json!({"type": "mark_payment_processing", "payment_id": d1})),
        fail(d1),
        confirm(d1),
        fail(d1),
        // Cancelled, then paid after all.
        initiate(d2, Value::Null),
        l(user(c), json!({"type": "cancel_deposit", "payment_id": d2})),
        confirm(d2),
        // A processed card refund; a lost chargeback.
        initiate(d3, Value::Null),
        confirm(d3),
    ];
    let (refund, cb) = (Uuid::new_v4(), Uuid::new_v4());
    lines.extend([
        l(
            user(c),
            json!({"type": "request_card_refund", "refund_id": refund, "deposit_id": d3, "amount": usd("10.00"),
                   "gateway": "stripe"}),
        ),
        gw(json!({"type": "confirm_transfer", "payment_id": refund, "gateway_fee": null, "occurred_at": null})),
        gw(json!({"type": "open_chargeback", "payment_id": d3, "chargeback_id": cb, "amount": usd("5.00"),
                  "fee": null, "occurred_at": null})),
        gw(json!({"type": "lose_chargeback", "payment_id": d3, "chargeback_id": cb, "recover_from_user": true})),
    ]);
    // Disputes: contested, withdrawn; changes requested; released to pending (matures with the timers).
    lines.extend(deposit(c, Uuid::new_v4(), "1000.00", Value::Null));
    let (p, more) = agreed(c, v, &["100.00", "100.00", "100.00"]);
    lines.extend(more);
    let (x1, x2) = (Uuid::new_v4(), Uuid::new_v4());
    let dispute = |id: Uuid, n: u32| {
        l(
            user(c),
            json!({"type": "open_dispute", "dispute_id": id, "project_id": p, "milestone": n,
                   "reason": "not what was agreed", "proposed_release": usd("20.00"),
                   "respond_by": Utc::now() + Duration::days(3)}),
        )
    };
    lines.extend([
        l(user(c), m(p, 1, "fund_milestone")),
        l(user(c), m(p, 2, "fund_milestone")),
        l(user(c), m(p, 3, "fund_milestone")),
        l(user(v), m(p, 1, "submit_milestone")),
        l(user(c), m(p, 1, "request_changes")),
        l(user(v), m(p, 2, "submit_milestone")),
        dispute(x1, 2),
        l(
            user(v),
            json!({"type": "contest_dispute", "dispute_id": x1}),
        ),
        l(
            admin(operator),
            json!({"type": "resolve_dispute", "dispute_id": x1, "release": usd("60.00")}),
        ),
        l(user(v), m(p, 3, "submit_milestone")),
        dispute(x2, 3),
        l(
            user(c),
            json!({"type": "withdraw_dispute", "dispute_id": x2}),
        ),
    ]);
    // Released to the pending balance: matures with the timers.
    let p2 = Uuid::new_v4();
    lines.extend([
        l(
            user(c),
            json!({"type": "create_project", "project_id": p2, "buyer": c, "seller": v, "currency": "USD",
                   "milestones": [usd("30.00")],
                   "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0", "release_to_pending": true}}),
        ),
        l(user(c), json!({"type": "submit_project_for_agreement", "project_id": p2})),
        l(user(v), json!({"type": "agree_to_project", "project_id": p2})),
        l(user(c), m(p2, 1, "fund_milestone")),
        l(user(v), m(p2, 1, "submit_milestone")),
        l(user(c), m(p2, 1, "approve_milestone")),
    ]);
    // A deposit that funded a milestone, lost as a chargeback with the buyer's wallet empty: the milestone's
    // escrow goes.
    let (p3, c3, cb2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    lines.extend([
        l(
            user(c3),
            json!({"type": "create_project", "project_id": p3, "buyer": c3, "seller": v, "currency": "USD",
                   "milestones": [usd("100.00")], "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0"}}),
        ),
        l(user(c3), json!({"type": "submit_project_for_agreement", "project_id": p3})),
        l(user(v), json!({"type": "agree_to_project", "project_id": p3})),
        l(
            user(c3),
            json!({"type": "initiate_deposit", "payment_id": d4, "amount": usd("100.00"), "gateway": "stripe",
                   "fund": {"project_id": p3, "milestone": 1}}),
        ),
        confirm(d4),
        gw(json!({"type": "open_chargeback", "payment_id": d4, "chargeback_id": cb2, "amount": usd("100.00"),
                  "fee": null, "occurred_at": null})),
        gw(json!({"type": "lose_chargeback", "payment_id": d4, "chargeback_id": cb2, "recover_from_user": false})),
    ]);
    // A payout failed at the bank, then reported paid after all.
    let po = Uuid::new_v4();
    lines.extend([
        payout(c, po, "10.00"),
        gw(json!({"type": "fail_transfer", "payment_id": po, "reason": "account closed"})),
        gw(json!({"type": "confirm_transfer", "payment_id": po, "gateway_fee": null, "occurred_at": null})),
    ]);
    // The gateway paid the platform's bank; a statement reconciled.
    lines.extend([
        l(
            admin(operator),
            json!({"type": "record_settlement", "gateway": "stripe", "settlement_id": "po_catalogue_1",
                   "bank_account": "operating", "amount": usd("50.00"), "fee": null,
                   "occurred_at": Utc::now()}),
        ),
        l(
            admin(operator),
            json!({"type": "record_reconciliation", "reconciliation_id": Uuid::new_v4(), "gateway": "stripe",
                   "statement_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                   "format": "generic", "from": null, "to": null,
                   "counts": {"matched": 3, "amount_mismatch": 0, "only_at_gateway": 1, "only_in_ledger": 0}}),
        ),
    ]);
    setup(db, "default", &lines);
    // An open request with a sent quote, left to expire.
    let (_, _, lines) = quoted(c, v, "90.00");
    setup(db, "default", &lines);
    // A keyed command refused for good: its outcome is recorded.
    let refused = support::apply(db, "default", &[l(user(v), m(p, 1, "approve_milestone"))]);
    assert_eq!(refused[0]["status"], "rejected", "{}", refused[0]);
    // A gateway's delivery, ingested as `serve` would take it: recorded with its disposition (carried by its
    // command's first event); then a second report of the same movement with other details, which runs no
    // command and is recorded by a `DeliveryRecorded` of its own.
    let d5 = Uuid::new_v4();
    setup(db, "default", &[initiate(d5, Value::Null)]);
    let dir = std::env::temp_dir().join(format!("escrow-catalogue-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "catalogue-callback-secret";
    std::fs::write(
        dir.join("workers.toml"),
        format!("[ledgers.default]\ncallback_secret = \"{secret}\"\n"),
    )
    .unwrap();
    let body = format!(
        r#"{{"event_id":"evt-catalogue-1","kind":"deposit_succeeded","payment_reference":"{d5}","amount":"100.00","currency":"USD"}}"#
    );
    let now = Utc::now();
    let signature =
        ledger_gateway::verify::sign_timestamped(secret, now.timestamp(), body.as_bytes());
    let delivery = json!({"gateway": "normalized", "headers": {"X-Escrow-Signature": signature}, "body": body,
                          "received_at": now});
    let other = format!(
        r#"{{"event_id":"evt-catalogue-1","kind":"deposit_succeeded","payment_reference":"{d5}","amount":"100.00","currency":"USD","fee":"1.00"}}"#
    );
    let signature =
        ledger_gateway::verify::sign_timestamped(secret, now.timestamp(), other.as_bytes());
    let again = json!({"gateway": "normalized", "headers": {"X-Escrow-Signature": signature}, "body": other,
                       "received_at": now});
    std::fs::write(
        dir.join("deliveries.jsonl"),
        format!("{delivery}\n{again}\n"),
    )
    .unwrap();
    let config = dir.join("workers.toml");
    let file = dir.join("deliveries.jsonl");
    run(
        db,
        &[
            "ingest",
            "--config",
            config.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scenario_makes_every_public_event_type() {
    let db = TestDb::new().await;
    run(&db, &["demo"]);
    the_other_paths(&db);
    more_paths(&db);
    // Every clock, far in the future: fired, or closed where the world moved on.
    let later = (Utc::now() + Duration::days(400)).to_rfc3339();
    let out = cli(
        &db,
        "default",
        &["timers", "run", "--once", "--now", &later],
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    // A clock stopped by the world moving on, closed by the timer's process (one of each kind).
    type Clock = (Uuid, String, String, Option<i32>, DateTime<Utc>);
    let stopped: Vec<Clock> = sqlx::query_as(
        "select distinct on (kind) deadline_id, kind, stream_id, milestone, due_at
           from escrow.deadlines where status = 'cancelled' order by kind, due_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let closes: Vec<Value> = stopped
        .iter()
        .map(|(id, kind, stream, milestone, due_at)| {
            json!({"actor": support::system(), "idempotency_key": format!("deadline-closed:{id}"),
                   "at": *due_at + Duration::seconds(1),
                   "command": {"type": "close_deadline", "deadline_id": id, "kind": kind, "stream": stream,
                               "milestone": milestone, "due_at": due_at}})
        })
        .collect();
    setup(&db, "default", &closes);
    let mut examples = BTreeMap::new();
    ledger_events::catalogue::collect(&pool, &mut examples)
        .await
        .unwrap();
    let types = ledger_events::catalogue::public_types();
    let missing: Vec<&String> = types
        .iter()
        .filter(|t| !examples.contains_key(*t))
        .collect();
    // One accepted line per command type, from the envelopes the log keeps on each command's first event.
    let envelopes: Vec<Value> = sqlx::query_scalar(
        "select metadata -> 'command' -> 'envelope' from ledger.events where metadata ? 'command'
          order by ledger_id, local_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut commands: BTreeMap<String, Value> = BTreeMap::new();
    for env in envelopes {
        let Some(name) = env["command"]["type"].as_str() else {
            continue;
        };
        commands.entry(name.to_string()).or_insert_with(
            || json!({"actor": env["actor"], "at": env["at"], "command": env["command"]}),
        );
    }
    let who = support::commands_doc::who_may();
    let unsent: Vec<String> = support::commands_doc::command_types()
        .into_iter()
        .filter(|c| !commands.contains_key(c))
        .filter(|c| {
            // The engine's own follow-ups (and retired commands) have no line a sender could have sent.
            !who.get(c)
                .is_some_and(|(w, _)| w.contains("(process)") || w.contains("retired"))
        })
        .collect();
    if std::env::var("UPDATE_EVENT_CATALOGUE").is_ok_and(|v| v == "1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
        std::fs::write(path, ledger_events::catalogue::render(&types, &examples)).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md");
        std::fs::write(path, support::commands_doc::render(&commands)).unwrap();
    }
    assert!(
        unsent.is_empty(),
        "the scenario sends no {unsent:?} (commands a party, an operator, a gateway or a timer sends): add it"
    );
    assert!(
        missing.is_empty(),
        "the scenario makes no {missing:?}: add the path that does"
    );
}
