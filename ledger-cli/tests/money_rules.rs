//! Only the right party, only at the right time (issue 18): one test per finding, through the real binary
//! (`apply`, `timers run --once`, `serve`) on a fresh database, each verdict read from the money
//! (`trial-balance --format json`), never from a status code alone. Every test here speaks JSON to the
//! binary only, so the same file ran against the main of before the fix and failed there (see the closing
//! note of issue 18).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};
use ledger_store::testdb::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

mod support;
use support::*;

/// `timers run --once` (at `now`, or the clock): the JSON lines it printed.
fn timers(db: &TestDb, ledger: &str, now: Option<DateTime<Utc>>) -> Vec<Value> {
    let mut args = vec!["timers", "run", "--once"];
    let at = now.map(iso);
    if let Some(at) = &at {
        args.extend(["--now", at]);
    }
    let out = cli(db, ledger, &args);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "timers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A confirmed stripe deposit of `amount` into `u`'s wallet, at `at`.
fn deposit_lines(u: Uuid, amount: &str, at: DateTime<Utc>) -> (Uuid, Vec<Value>) {
    let d = Uuid::new_v4();
    let lines = vec![
        line(
            user(u),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": usd(amount), "gateway": "stripe", "fund": null}),
            Some(at),
        ),
        line(
            gateway("stripe"),
            json!({"type": "confirm_deposit", "payment_id": d, "amount": usd(amount), "gateway_fee": null, "occurred_at": null}),
            Some(at),
        ),
    ];
    (d, lines)
}

/// An agreed project of `b` and `s` with these milestones (10% commission), at `at`.
fn project_lines(b: Uuid, s: Uuid, amounts: &[&str], at: DateTime<Utc>) -> (Uuid, Vec<Value>) {
    let fees = json!({"commission_rate": "0.10", "buyer_fee_rate": "0"});
    agreed_project(b, s, amounts, fees, at)
}

/// An agreed project of `b` and `s` with these milestones and fee terms, at `at`.
fn agreed_project(
    b: Uuid,
    s: Uuid,
    amounts: &[&str],
    fees: Value,
    at: DateTime<Utc>,
) -> (Uuid, Vec<Value>) {
    let p = Uuid::new_v4();
    let milestones: Vec<Value> = amounts.iter().map(|a| usd(a)).collect();
    let lines = vec![
        line(
            user(b),
            json!({"type": "create_project", "project_id": p, "buyer": b, "seller": s, "currency": "USD",
                   "milestones": milestones, "fees": fees}),
            Some(at),
        ),
        line(
            user(b),
            json!({"type": "submit_project_for_agreement", "project_id": p}),
            Some(at),
        ),
        line(
            user(s),
            json!({"type": "agree_to_project", "project_id": p}),
            Some(at),
        ),
    ];
    (p, lines)
}

fn fund(b: Uuid, p: Uuid, m: u32, at: DateTime<Utc>) -> Value {
    line(
        user(b),
        json!({"type": "fund_milestone", "project_id": p, "milestone": m}),
        Some(at),
    )
}

fn submit(s: Uuid, p: Uuid, at: DateTime<Utc>) -> Value {
    line(
        user(s),
        json!({"type": "submit_milestone", "project_id": p, "milestone": 1}),
        Some(at),
    )
}

/// A funded single-milestone project of 100.00, submitted by the seller, at `at`.
fn submitted_project(db: &TestDb, at: DateTime<Utc>) -> (Uuid, Uuid, Uuid) {
    let (b, s) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, mut lines) = deposit_lines(b, "100.00", at);
    let (p, more) = project_lines(b, s, &["100.00"], at);
    lines.extend(more);
    lines.push(fund(b, p, 1, at));
    lines.push(submit(s, p, at));
    setup(db, "default", &lines);
    (b, s, p)
}

/// A single-milestone project of `amount` (10% commission, released to the seller's pending balance),
/// funded, submitted and approved at `at`: its release credits pending, which matures 7 days on.
fn released_to_pending(b: Uuid, s: Uuid, amount: &str, at: DateTime<Utc>) -> (Uuid, Vec<Value>) {
    let fees =
        json!({"commission_rate": "0.10", "buyer_fee_rate": "0", "release_to_pending": true});
    let (p, mut lines) = agreed_project(b, s, &[amount], fees, at);
    lines.extend([
        fund(b, p, 1, at),
        submit(s, p, at),
        line(
            user(b),
            json!({"type": "approve_milestone", "project_id": p, "milestone": 1}),
            Some(at),
        ),
    ]);
    (p, lines)
}

fn open_dispute(
    by: Uuid,
    d: Uuid,
    p: Uuid,
    respond_by: DateTime<Utc>,
    release: &str,
    at: DateTime<Utc>,
) -> Value {
    line(
        user(by),
        json!({"type": "open_dispute", "dispute_id": d, "project_id": p, "milestone": 1, "reason": "not as agreed",
               "proposed_release": usd(release), "respond_by": iso(respond_by)}),
        Some(at),
    )
}

// ---------------------------------------------------------------------------------------------------------
// 1. A dispute that times out before anyone can answer.

#[tokio::test]
async fn finding_1_a_respond_by_in_the_past_or_under_the_minimum_window_is_refused() {
    let db = TestDb::new().await;
    let t0 = Utc::now() - Span::minutes(5);
    let (b, s, p) = submitted_project(&db, t0);
    let past = DateTime::parse_from_rfc3339("2000-01-02T00:00:00Z")
        .unwrap()
        .to_utc();
    let soon = t0 + Span::hours(1);
    let results = apply(
        &db,
        "default",
        &[
            open_dispute(s, Uuid::new_v4(), p, past, "100.00", t0),
            open_dispute(s, Uuid::new_v4(), p, soon, "100.00", t0),
        ],
    );
    for r in &results {
        assert_eq!(r["code"], "deadline_too_soon", "{r}");
    }
    timers(&db, "default", None);
    timers(&db, "default", Some(t0 + Span::hours(2)));
    let after = balances(&db, "default");
    assert_eq!(escrow(&after, p, 1), 10_000, "the escrow stays held");
    assert_eq!(held(&after, s), 0, "the seller got nothing");
    // Positive control: three days to answer is accepted, and the buyer contests in time.
    let d = Uuid::new_v4();
    setup(
        &db,
        "default",
        &[open_dispute(s, d, p, t0 + Span::days(3), "100.00", t0)],
    );
    setup(
        &db,
        "default",
        &[line(
            user(b),
            json!({"type": "contest_dispute", "dispute_id": d}),
            None,
        )],
    );
    assert_eq!(escrow(&balances(&db, "default"), p, 1), 10_000);
}

// ---------------------------------------------------------------------------------------------------------
// 2. Anyone could end someone else's dispute; a withdrawn one left the escrow without a clock.

#[tokio::test]
async fn finding_2_only_a_disputes_own_end_clears_its_milestone_and_withdrawal_restarts_the_clock()
{
    let db = TestDb::new().await;
    let t0 = Utc::now() - Span::minutes(5);
    let operator = Uuid::new_v4();
    // A funded (not submitted) milestone disputed by its buyer, contested by the seller: mediation.
    let (b, s) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, mut lines) = deposit_lines(b, "100.00", t0);
    let (p, more) = project_lines(b, s, &["100.00"], t0);
    lines.extend(more);
    lines.push(fund(b, p, 1, t0));
    let d = Uuid::new_v4();
    lines.push(open_dispute(b, d, p, t0 + Span::days(3), "0.00", t0));
    lines.push(line(
        user(s),
        json!({"type": "contest_dispute", "dispute_id": d}),
        Some(t0),
    ));
    setup(&db, "default", &lines);
    let clear = json!({"type": "clear_milestone_dispute", "project_id": p, "milestone": 1, "dispute_id": d});
    let stranger = Uuid::new_v4();
    for actor in [user(stranger), user(s), system(), admin(operator)] {
        let r = apply(&db, "default", &[line(actor.clone(), clear.clone(), None)]);
        assert!(
            !accepted(&r[0]),
            "clear_milestone_dispute by {actor} was accepted: {}",
            r[0]
        );
    }
    let r = apply(&db, "default", &[submit(s, p, Utc::now())]);
    assert!(
        !accepted(&r[0]),
        "the seller submitted a disputed milestone: {}",
        r[0]
    );
    timers(&db, "default", Some(Utc::now() + Span::days(30)));
    let after = balances(&db, "default");
    assert_eq!(
        escrow(&after, p, 1),
        10_000,
        "no auto-approval released the disputed escrow"
    );
    assert_eq!(held(&after, s), 0);
    // The mediator's ruling still decides: a full refund.
    setup(
        &db,
        "default",
        &[line(
            admin(operator),
            json!({"type": "resolve_dispute", "dispute_id": d, "release": usd("0.00")}),
            None,
        )],
    );
    let ruled = balances(&db, "default");
    assert_eq!(held(&ruled, b), 10_000, "the buyer got the refund");
    assert_eq!(escrow(&ruled, p, 1), 0);

    // The opener withdraws its dispute over a submitted milestone: the approval clock starts again from the
    // withdrawal (14 days), so the escrow is released then, not held for ever.
    let (b2, s2, p2) = submitted_project(&db, t0);
    let d2 = Uuid::new_v4();
    let withdrawn_at = t0 + Span::days(10);
    setup(
        &db,
        "default",
        &[
            open_dispute(b2, d2, p2, t0 + Span::days(13), "0.00", t0 + Span::days(9)),
            line(
                user(b2),
                json!({"type": "withdraw_dispute", "dispute_id": d2}),
                Some(withdrawn_at),
            ),
        ],
    );
    timers(&db, "default", Some(withdrawn_at + Span::days(13)));
    assert_eq!(
        escrow(&balances(&db, "default"), p2, 1),
        10_000,
        "the restarted clock is not due yet"
    );
    timers(
        &db,
        "default",
        Some(withdrawn_at + Span::days(14) + Span::seconds(1)),
    );
    let released = balances(&db, "default");
    assert_eq!(
        escrow(&released, p2, 1),
        0,
        "the restarted approval clock released the escrow"
    );
    assert_eq!(held(&released, s2), 9_000);
}

// ---------------------------------------------------------------------------------------------------------
// 3. A fee-free withdrawal through a card refund.

#[tokio::test]
async fn finding_3_a_card_refund_goes_only_to_its_own_deposit() {
    let db = TestDb::new().await;
    let t0 = Utc::now() - Span::minutes(5);
    let operator = Uuid::new_v4();
    setup(
        &db,
        "default",
        &[line(
            admin(operator),
            json!({"type": "set_fee_policy", "overrides_allowed": false,
                   "commission": {"default": "0.10", "min": "0", "max": "0.5"},
                   "buyer_fee": {"default": "0", "min": "0", "max": "0.1"},
                   "payout_fee": {"default": "0.01", "min": "0", "max": "0.05"}}),
            Some(t0),
        )],
    );
    // `up` paid 50.00 through Paystack; `un` paid 200.00 through Stripe.
    let (up, un) = (Uuid::new_v4(), Uuid::new_v4());
    let dp = Uuid::new_v4();
    let (dn, mut lines) = deposit_lines(un, "200.00", t0);
    lines.push(line(
        user(up),
        json!({"type": "initiate_deposit", "payment_id": dp, "amount": usd("50.00"), "gateway": "paystack", "fund": null}),
        Some(t0),
    ));
    lines.push(line(
        gateway("paystack"),
        json!({"type": "confirm_deposit", "payment_id": dp, "amount": usd("50.00"), "gateway_fee": null, "occurred_at": null}),
        Some(t0),
    ));
    setup(&db, "default", &lines);
    let refund = |deposit: Option<Uuid>, amount: &str| {
        let mut c = json!({"type": "request_card_refund", "refund_id": Uuid::new_v4(), "amount": usd(amount), "gateway": "paystack"});
        if let Some(d) = deposit {
            c["deposit_id"] = json!(d);
        }
        c
    };
    for (what, command) in [
        ("naming no deposit", refund(None, "100.00")),
        (
            "naming its own deposit at another gateway",
            refund(Some(dn), "100.00"),
        ),
        (
            "naming another user's Paystack deposit",
            refund(Some(dp), "20.00"),
        ),
    ] {
        let r = apply(&db, "default", &[line(user(un), command, None)]);
        assert!(
            !accepted(&r[0]),
            "a card refund {what} was accepted: {}",
            r[0]
        );
    }
    assert_eq!(
        held(&balances(&db, "default"), un),
        20_000,
        "no fee-free withdrawal left the wallet"
    );
    // More than the deposit brought in is refused too; the depositor refunds part of it to the card.
    let r = apply(
        &db,
        "default",
        &[line(user(up), refund(Some(dp), "50.01"), None)],
    );
    assert!(!accepted(&r[0]), "{}", r[0]);
    setup(
        &db,
        "default",
        &[line(user(up), refund(Some(dp), "20.00"), None)],
    );
    let after = balances(&db, "default");
    assert_eq!(held(&after, up), 3_000);
    let r = apply(
        &db,
        "default",
        &[line(user(up), refund(Some(dp), "30.01"), None)],
    );
    assert!(
        !accepted(&r[0]),
        "refunds of a deposit beyond what it brought in: {}",
        r[0]
    );
}

// ---------------------------------------------------------------------------------------------------------
// 4. Deadline commands early.

#[tokio::test]
async fn finding_4_deadline_commands_are_refused_before_their_due_time_whoever_sends_them() {
    let db = TestDb::new().await;
    let t0 = Utc::now() - Span::minutes(5);
    let operator = Uuid::new_v4();
    // A booking delivered just now: its auto-approval waits for the booking's auto-acceptance (72 h).
    let (client, provider, request, quote) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let (_, mut lines) = deposit_lines(client, "80.00", t0);
    lines.extend([
        line(user(client), json!({"type": "open_service_request", "request_id": request, "currency": "USD", "title": "fix the sink", "expires_at": null}), Some(t0)),
        line(user(provider), json!({"type": "create_quote", "quote_id": quote, "request_id": request, "amount": usd("80.00"),
            "valid_until": iso(t0 + Span::days(5)), "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0"}}), Some(t0)),
        line(user(provider), json!({"type": "send_quote", "quote_id": quote}), Some(t0)),
        line(user(client), json!({"type": "accept_quote", "quote_id": quote}), Some(t0)),
    ]);
    let results = apply(&db, "default", &lines);
    assert!(results.iter().all(accepted), "{results:?}");
    let streams = results[5]["events"].to_string() + &results[5]["follow_ups"].to_string();
    let find = |prefix: &str| -> Uuid {
        let at = streams
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix} in {streams}"))
            + prefix.len();
        streams[at..at + 36].parse().unwrap()
    };
    let (booking, project) = (find("booking-"), find("project-"));
    setup(
        &db,
        "default",
        &[
            fund(client, project, 1, t0),
            line(
                user(provider),
                json!({"type": "deliver_booking", "booking_id": booking}),
                Some(t0),
            ),
        ],
    );
    let early = json!({"type": "auto_approve_milestone", "project_id": project, "milestone": 1});
    for actor in [system(), admin(operator)] {
        let r = apply(&db, "default", &[line(actor, early.clone(), None)]);
        assert!(!accepted(&r[0]), "{}", r[0]);
    }
    let b = balances(&db, "default");
    assert_eq!(
        escrow(&b, project, 1),
        8_000,
        "the booking's escrow stays held"
    );
    assert_eq!(held(&b, provider), 0);
    timers(&db, "default", Some(t0 + Span::hours(71)));
    assert_eq!(escrow(&balances(&db, "default"), project, 1), 8_000);
    timers(
        &db,
        "default",
        Some(t0 + Span::hours(72) + Span::seconds(2)),
    );
    let b = balances(&db, "default");
    assert_eq!(escrow(&b, project, 1), 0, "auto-accepted when due");
    assert_eq!(held(&b, provider), 7_200);

    // Pending proceeds mature only through their release's deadline.
    let (buyer, seller) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, mut lines) = deposit_lines(buyer, "100.00", t0);
    let (p, released) = released_to_pending(buyer, seller, "100.00", t0);
    lines.extend(released);
    setup(&db, "default", &lines);
    let pending = format!("Liabilities:Users:{seller}:Pending");
    let available = format!("Liabilities:Users:{seller}:Available");
    assert_eq!(bal(&balances(&db, "default"), &pending), 9_000);
    for actor in [system(), admin(operator)] {
        let r = apply(
            &db,
            "default",
            &[line(
                actor,
                json!({"type": "mature_pending", "user": seller, "amount": usd("90.00")}),
                None,
            )],
        );
        assert!(!accepted(&r[0]), "{}", r[0]);
        let r = apply(
            &db,
            "default",
            &[line(
                system(),
                json!({"type": "mature_release", "project_id": p, "milestone": 1}),
                None,
            )],
        );
        assert!(!accepted(&r[0]), "{}", r[0]);
    }
    let b = balances(&db, "default");
    assert_eq!(
        (bal(&b, &pending), bal(&b, &available)),
        (9_000, 0),
        "nothing matured early"
    );
    timers(&db, "default", Some(t0 + Span::days(7) + Span::seconds(2)));
    let b = balances(&db, "default");
    assert_eq!(
        (bal(&b, &pending), bal(&b, &available)),
        (0, 9_000),
        "matured when due"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 5. The backend key confirmed money (and backdated it). 9. A command_id taken by another request.

const BACKEND_KEY: &str = "money-rules-backend-key-0123";
const PAYSTACK_SECRET: &str = "sk_test_money_rules";

/// `serve` on a free port with the backend key and Paystack's secret; killed on drop.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = bin()
            .arg("--database-url")
            .arg(db.url())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--no-timers",
            ])
            .env("ESCROW_LEDGER_API_KEY", BACKEND_KEY)
            .env("ESCROW_LEDGER_PAYSTACK_SECRET", PAYSTACK_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..400 {
            if reqwest::get(format!("{}/healthz", server.base))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("serve did not answer /healthz");
    }

    /// POSTs a command with the backend key: (status, body).
    async fn command(&self, body: Value, idempotency_key: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/ledgers/default/commands", self.base))
            .bearer_auth(BACKEND_KEY)
            .json(&body);
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn paystack_paid(&self, deposit: Uuid, minor: i64, event_id: i64) -> (u16, String) {
        let body = format!(
            r#"{{"event":"charge.success","data":{{"id":{event_id},"reference":"{deposit}","amount":{minor},"currency":"USD","status":"success","fees":0,"paid_at":"{}"}}}}"#,
            Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let signature = ledger_gateway::verify::sign_sha512_hex(PAYSTACK_SECRET, body.as_bytes());
        let r = reqwest::Client::new()
            .post(format!(
                "{}/v1/ledgers/default/callbacks/paystack",
                self.base
            ))
            .header("x-paystack-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn finding_5_no_http_key_confirms_a_deposit_or_states_when_money_moved() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let operator = Uuid::new_v4();
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut deposits = Vec::new();
    for u in &users {
        let d = Uuid::new_v4();
        let (status, body) = server
            .command(
                json!({"actor": user(*u), "command": {"type": "initiate_deposit", "payment_id": d, "amount": usd("1.00"), "gateway": "paystack", "fund": null}}),
                Some(&Uuid::new_v4().to_string()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        deposits.push(d);
    }
    for (actor, d, amount, occurred_at) in [
        (
            system(),
            deposits[0],
            "10000000.00",
            json!("2001-01-01T00:00:00Z"),
        ),
        (
            admin(operator),
            deposits[1],
            "10000000.00",
            json!("2001-01-01T00:00:00Z"),
        ),
        (system(), deposits[2], "1.00", Value::Null),
    ] {
        let (status, body) = server
            .command(
                json!({"actor": actor, "command": {"type": "confirm_deposit", "payment_id": d, "amount": usd(amount), "gateway_fee": null, "occurred_at": occurred_at}}),
                Some(&Uuid::new_v4().to_string()),
            )
            .await;
        assert_eq!(status, 403, "confirm_deposit over HTTP as {actor}: {body}");
    }
    // No other effective time either.
    let (status, body) = server
        .command(
            json!({"actor": admin(operator), "command": {"type": "record_settlement", "gateway": "paystack", "settlement_id": "po_1",
                   "bank_account": "main", "amount": usd("1.00"), "fee": null, "occurred_at": "2001-01-01T00:00:00Z"}}),
            Some(&Uuid::new_v4().to_string()),
        )
        .await;
    assert_eq!(status, 403, "record_settlement over HTTP: {body}");
    let b = balances(&db, "default");
    for u in &users {
        assert_eq!(held(&b, *u), 0, "no wallet credited");
    }
    // Positive control: the signed callback confirms each deposit.
    for (i, (u, d)) in users.iter().zip(&deposits).enumerate() {
        let (status, body) = server.paystack_paid(*d, 100, 7_000 + i as i64).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(held(&balances(&db, "default"), *u), 100);
    }
    let export = cli(&db, "default", &["export", "--to", "csv"]);
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(!text.contains("2001-"), "nothing is dated 2001:\n{text}");
    // An operator's manual confirmation stays possible through `apply`, and `verify --manual` lists it.
    let (d, lines) = deposit_lines(Uuid::new_v4(), "5.00", Utc::now());
    let mut lines = lines;
    lines[1] = line(
        admin(operator),
        json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("5.00"), "gateway_fee": null, "occurred_at": null}),
        None,
    );
    setup(&db, "default", &lines);
    let verify = cli(&db, "default", &["verify", "--manual"]);
    let listed = String::from_utf8_lossy(&verify.stdout);
    assert!(
        listed.contains(&format!(
            "MANUAL: payment-{d} confirmed by admin:{operator}"
        )),
        "{listed}"
    );
    assert_eq!(
        listed.matches("MANUAL:").count(),
        1,
        "only the operator's: {listed}"
    );
}

#[tokio::test]
async fn finding_9_a_taken_command_id_is_a_conflict_and_small_payouts_pay_the_minimum_fee() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let u = Uuid::new_v4();
    let initiate = |d: Uuid| json!({"actor": user(u), "command": {"type": "initiate_deposit", "payment_id": d, "amount": usd("1.00"), "gateway": "paystack", "fund": null}});
    let (status, body) = server
        .command(initiate(Uuid::new_v4()), Some("first"))
        .await;
    assert_eq!(status, 200, "{body}");
    let taken: Value = serde_json::from_str(&body).unwrap();
    let taken_id = taken["command_id"].as_str().unwrap().to_string();
    // Another request naming the first one's derived command id: a conflict, on every retry.
    let mut other = initiate(Uuid::new_v4());
    other["command_id"] = json!(taken_id);
    for _ in 0..2 {
        let (status, body) = server.command(other.clone(), None).await;
        assert_eq!(status, 409, "{body}");
    }

    // A minimum payout fee per currency: 0.49 and 0.50 at 1% pay 0.01, not nothing.
    let operator = Uuid::new_v4();
    let (_, mut lines) = deposit_lines(u, "10.00", Utc::now());
    lines.push(line(
        admin(operator),
        json!({"type": "set_fee_policy", "overrides_allowed": false,
               "commission": {"default": "0.10", "min": "0", "max": "0.5"},
               "buyer_fee": {"default": "0", "min": "0", "max": "0.1"},
               "payout_fee": {"default": "0.01", "min": "0", "max": "0.05"},
               "payout_fee_min": [usd("0.01")]}),
        None,
    ));
    for amount in ["0.49", "0.50"] {
        lines.push(line(
            user(u),
            json!({"type": "request_payout", "payout_id": Uuid::new_v4(), "amount": usd(amount), "fee": null, "gateway": "stripe"}),
            None,
        ));
    }
    setup(&db, "default", &lines);
    assert_eq!(held(&balances(&db, "default"), u), 1_000 - 49 - 50 - 2);
}

// ---------------------------------------------------------------------------------------------------------
// 6. A chargeback that could not reach the escrow its deposit funded.

#[tokio::test]
async fn finding_6_a_lost_chargeback_reaches_escrow_funded_before_any_number_of_later_projects() {
    const DECOYS: usize = 100;
    let db = TestDb::new().await;
    let t0 = Utc::now() - Span::minutes(5);
    let (b, s) = (Uuid::new_v4(), Uuid::new_v4());
    let (x, mut lines) = project_lines(b, s, &["12.50"; 8], t0);
    let (d0, deposit) = deposit_lines(b, "100.00", t0);
    lines.extend(deposit);
    lines.extend((1..=8).map(|m| fund(b, x, m, t0)));
    // The buyer then funds one-cent decoys, each from an earmarked deposit of its own.
    for _ in 0..DECOYS {
        let (p, decoy) = project_lines(b, s, &["0.01"], t0);
        lines.extend(decoy);
        let d = Uuid::new_v4();
        lines.push(line(
            user(b),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("0.01"), "gateway": "stripe",
                   "fund": {"project_id": p, "milestone": 1}}),
            Some(t0),
        ));
        lines.push(line(
            gateway("stripe"),
            json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("0.01"), "gateway_fee": null, "occurred_at": null}),
            Some(t0),
        ));
    }
    setup(&db, "default", &lines);
    let x_escrow =
        |b: &BTreeMap<(String, String), i128>| (1..=8).map(|m| escrow(b, x, m)).sum::<i128>();
    assert_eq!(x_escrow(&balances(&db, "default")), 10_000);
    let chargeback = Uuid::new_v4();
    setup(
        &db,
        "default",
        &[
            line(
                gateway("stripe"),
                json!({"type": "open_chargeback", "payment_id": d0, "chargeback_id": chargeback, "amount": usd("100.00"), "fee": null, "occurred_at": null}),
                None,
            ),
            line(
                gateway("stripe"),
                json!({"type": "lose_chargeback", "payment_id": d0, "chargeback_id": chargeback, "recover_from_user": true}),
                None,
            ),
        ],
    );
    let after = balances(&db, "default");
    assert_eq!(
        x_escrow(&after),
        0,
        "the stolen deposit's escrow is taken back"
    );
    assert_eq!(
        bal(&after, &format!("Assets:Receivable:Users:{b}")),
        0,
        "no receivable while its escrow was held"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 7. Clocks that never fire or fire on nothing.

#[tokio::test]
async fn finding_7_processing_deposits_wait_and_refused_firings_close_without_starving_a_due_deadline()
 {
    const PROCESSING: usize = 1_201;
    const REFUSED: usize = 510;
    let db = TestDb::new().await;
    let ledger = "rules7";
    assert!(
        cli(&db, "default", &["ledgers", "create", ledger])
            .status
            .success()
    );
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .to_utc();
    let operator = Uuid::new_v4();
    // Deposits marked processing: their expiry waits for the outcome.
    let mut lines = Vec::new();
    let mut processing = Vec::new();
    for _ in 0..PROCESSING {
        let d = Uuid::new_v4();
        processing.push(d);
        lines.push(line(
            user(Uuid::new_v4()),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("5.00"), "gateway": "stripe", "fund": null}),
            Some(t0),
        ));
        lines.push(line(
            admin(operator),
            json!({"type": "mark_payment_processing", "payment_id": d}),
            Some(t0 + Span::minutes(5)),
        ));
    }
    // A seller whose available balance is at the amount ceiling: its releases land in pending (fine), but
    // each maturation into available is refused for good (amount_too_large), so the REFUSED maturations
    // due Mar 8 are refused firings the timer must close.
    let (buyer, seller) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, ceiling) = deposit_lines(seller, "9999999999999.99", t0);
    lines.extend(ceiling);
    let (_, funds) = deposit_lines(buyer, &format!("{REFUSED}.00"), t0);
    lines.extend(funds);
    for _ in 0..REFUSED {
        lines.extend(released_to_pending(buyer, seller, "1.00", t0).1);
    }
    setup(&db, ledger, &lines);
    let handled = timers(&db, ledger, Some(t0 + Span::days(8)));
    let closed = handled.iter().filter(|h| h["outcome"] == "closed").count();
    assert_eq!(
        closed,
        REFUSED,
        "every refused maturation is closed: {:?}",
        handled.first()
    );
    assert!(
        handled.iter().all(|h| h["kind"] != "expire_deposit"),
        "no processing deposit was expired under the gateway's feet"
    );
    let listed = cli(
        &db,
        ledger,
        &["timers", "list", "--all", "--format", "json"],
    );
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let closed_rows = rows.iter().filter(|r| r["status"] == "closed").count();
    assert_eq!(closed_rows, REFUSED, "timers list shows them closed");
    // A second pass: the closed ones are not read again.
    assert!(timers(&db, ledger, Some(t0 + Span::days(9))).is_empty());
    // A milestone submitted later, due Mar 20: nothing already refused delays it.
    let (b2, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let at = t0 + Span::days(5);
    let (_, mut lines) = deposit_lines(b2, "100.00", at);
    let (p2, project) = project_lines(b2, s2, &["100.00"], at);
    lines.extend(project);
    lines.push(fund(b2, p2, 1, at));
    lines.push(submit(s2, p2, at));
    setup(&db, ledger, &lines);
    timers(&db, ledger, Some(t0 + Span::days(20)));
    let b = balances(&db, ledger);
    assert_eq!(escrow(&b, p2, 1), 0, "the due auto-approval fired");
    assert_eq!(held(&b, s2), 9_000);
    // A processing deposit that then fails expires: its clock starts again from the failure.
    let failed = processing[0];
    setup(
        &db,
        ledger,
        &[line(
            gateway("stripe"),
            json!({"type": "fail_deposit", "payment_id": failed, "reason": "declined"}),
            Some(t0 + Span::days(21)),
        )],
    );
    let handled = timers(&db, ledger, Some(t0 + Span::days(21) + Span::seconds(1)));
    let expired: Vec<&Value> = handled
        .iter()
        .filter(|h| h["kind"] == "expire_deposit" && h["outcome"] == "fired")
        .collect();
    assert_eq!(expired.len(), 1, "{handled:?}");
    assert_eq!(expired[0]["stream"], format!("payment-{failed}"));
}

// ---------------------------------------------------------------------------------------------------------
// 8. Two settlements could overdraw a clearing account (two real processes).

#[tokio::test]
async fn finding_8_concurrent_settlements_from_two_processes_never_overdraw_a_clearing_account() {
    const CURRENCIES: [&str; 30] = [
        "USD", "EUR", "GBP", "NGN", "KES", "GHS", "ZAR", "CAD", "AUD", "CHF", "SEK", "NOK", "DKK",
        "PLN", "CZK", "HUF", "INR", "MXN", "BRL", "SGD", "NZD", "HKD", "ILS", "THB", "PHP", "MYR",
        "EGP", "MAD", "TRY", "AED",
    ];
    let db = TestDb::new().await;
    let ledger = "rules8";
    assert!(
        cli(&db, "default", &["ledgers", "create", ledger])
            .status
            .success()
    );
    let (b, operator) = (Uuid::new_v4(), Uuid::new_v4());
    let money = |amount: &str, c: &str| json!({"amount": amount, "currency": c});
    let mut lines = Vec::new();
    for c in CURRENCIES {
        let d = Uuid::new_v4();
        lines.push(line(
            user(b),
            json!({"type": "initiate_deposit", "payment_id": d, "amount": money("100.00", c), "gateway": "stripe", "fund": null}),
            None,
        ));
        lines.push(line(
            gateway("stripe"),
            json!({"type": "confirm_deposit", "payment_id": d, "amount": money("100.00", c), "gateway_fee": null, "occurred_at": null}),
            None,
        ));
    }
    setup(&db, ledger, &lines);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let occurred = iso(Utc::now());
    let mut children = Vec::new();
    for side in ["a", "b"] {
        let settlements: Vec<Value> = CURRENCIES
            .iter()
            .map(|c| {
                line(
                    admin(operator),
                    json!({"type": "record_settlement", "gateway": "stripe", "settlement_id": format!("po_{side}_{c}"),
                           "bank_account": "main", "amount": money("60.00", c), "fee": null, "occurred_at": occurred}),
                    None,
                )
            })
            .collect();
        let body = jsonl(&settlements);
        let mut child = spawn_apply(&db, ledger);
        children.push((child.stdin.take().unwrap(), body, child));
    }
    // Both processes are running (connected) before either gets its input.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut running = Vec::new();
    for (mut stdin, body, child) in children {
        stdin.write_all(body.as_bytes()).unwrap();
        drop(stdin);
        running.push(child);
    }
    for child in running {
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(&db, ledger, &["trial-balance", "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut overdrawn = Vec::new();
    let mut untouched = Vec::new();
    for c in CURRENCIES {
        let row = report["rows"].as_array().unwrap().iter().find(|r| {
            r["account"].as_str().unwrap_or("").to_lowercase() == "assets:gateway:stripe:clearing"
                && r["currency"] == c
        });
        let (debit, credit) = row.map_or(("0".to_string(), "0".to_string()), |r| {
            (
                r["debit"].as_str().unwrap_or("0").to_string(),
                r["credit"].as_str().unwrap_or("0").to_string(),
            )
        });
        let minor = |t: &str| -> i128 {
            let (w, f) = t.split_once('.').unwrap_or((t, ""));
            w.parse::<i128>().unwrap() * 10_i128.pow(f.len() as u32)
                + f.parse::<i128>().unwrap_or(0)
        };
        let scale = |t: &str| t.split_once('.').map_or(0, |(_, f)| f.len());
        let exp = scale(&debit).max(scale(&credit)) as u32;
        let norm = |t: &str| minor(t) * 10_i128.pow(exp - scale(t) as u32);
        let balance = norm(&debit) - norm(&credit);
        let hundred = 100 * 10_i128.pow(exp);
        if balance < 0 {
            overdrawn.push(format!("{c} {balance}"));
        }
        if balance == hundred {
            untouched.push(c);
        }
    }
    assert!(
        overdrawn.is_empty(),
        "clearing accounts below zero: {overdrawn:?}"
    );
    assert!(
        untouched.is_empty(),
        "neither settlement accepted in {untouched:?}"
    );
}
