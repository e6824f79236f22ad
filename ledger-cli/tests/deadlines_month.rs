//! A simulated month on PostgreSQL (issue 11): a marketplace with 200 escrow projects and 200 bookings
//! driven through `escrow-ledger apply` with explicit `at` values, one file per day, and
//! `escrow-ledger timers run --once --now T` after each day, two workers racing each time, one of them
//! SIGKILLed mid-run on day 15. Afterwards: the deadlines that fired are exactly those the scenario expects
//! (computed here, from the scenario's own rules, not from the engine), each fired by exactly one command,
//! in due order per stream; nothing due is left pending; `verify` is silent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_store::testdb::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

const CLI: &str = env!("CARGO_BIN_EXE_escrow-ledger");
const PROJECTS: u32 = 200;
const BOOKINGS: u32 = 200;
const EXTRAS: u32 = 20;
const DAYS: i64 = 36;
const NS: Uuid = Uuid::from_u128(0x6d6f_6e74_685f_7369_6d75_6c61_7465_6400);

fn id(label: &str) -> Uuid {
    Uuid::new_v5(&NS, label.as_bytes())
}

fn derived(id: Uuid, purpose: &str) -> Uuid {
    ledger_core::ids::derived_id(id, purpose)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn day(d: i64, hour: i64) -> DateTime<Utc> {
    t0() + Duration::days(d) + Duration::hours(hour)
}

fn user(id: Uuid) -> Value {
    json!({"kind": "user", "id": id})
}

fn usd(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

/// The scenario: commands per day, and the deadlines expected to fire (kind, target, due).
#[derive(Default)]
struct Scenario {
    lines: BTreeMap<i64, Vec<(DateTime<Utc>, Value)>>,
    expected: BTreeSet<(String, Uuid, DateTime<Utc>)>,
    next: u64,
}

impl Scenario {
    fn cmd(&mut self, at: DateTime<Utc>, actor: Value, command: Value) {
        self.next += 1;
        let day = (at - t0()).num_days();
        let line = json!({"actor": actor, "at": at, "idempotency_key": format!("m-{}", self.next), "command": command});
        self.lines.entry(day).or_default().push((at, line));
    }

    fn expect(&mut self, kind: &str, target: Uuid, due: DateTime<Utc>) {
        self.expected.insert((kind.to_string(), target, due));
    }

    /// A funded deposit of `amount` for `payer`, initiated and confirmed at `at`.
    fn paid(&mut self, at: DateTime<Utc>, payer: Uuid, payment: Uuid, amount: &str) {
        let initiate = json!({"type": "initiate_deposit", "payment_id": payment, "amount": usd(amount), "gateway": "stripe", "fund": null});
        self.cmd(at, user(payer), initiate);
        let confirm = json!({"type": "confirm_deposit", "payment_id": payment, "amount": usd(amount), "gateway_fee": null, "occurred_at": null});
        self.cmd(at, json!({"kind": "gateway", "id": "stripe"}), confirm);
    }

    /// Project `i`: funded on day `s`, its milestone submitted on day s+1; then by `i % 5`: left alone
    /// (0, 1), approved on day s+3 (2), changes requested and resubmitted on day s+4 then left alone (3),
    /// disputed on day s+2 and left unanswered (4). Every fourth releases to pending (maturation).
    fn project(&mut self, i: u32) {
        let s = i64::from(i % 14);
        let (p, buyer, seller) = (
            id(&format!("p-{i}")),
            id(&format!("pb-{i}")),
            id(&format!("ps-{i}")),
        );
        let pending = i.is_multiple_of(4);
        let at = day(s, 9) + Duration::minutes(i64::from(i));
        let create = json!({"type": "create_project", "project_id": p, "buyer": buyer, "seller": seller, "currency": "USD",
            "milestones": [usd("100.00")], "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0", "release_to_pending": pending}});
        self.cmd(at, user(buyer), create);
        self.cmd(
            at,
            user(buyer),
            json!({"type": "submit_project_for_agreement", "project_id": p}),
        );
        self.cmd(
            at,
            user(seller),
            json!({"type": "agree_to_project", "project_id": p}),
        );
        self.paid(at, buyer, id(&format!("pd-{i}")), "100.00");
        let fund = json!({"type": "fund_milestone", "project_id": p, "milestone": 1});
        self.cmd(at, user(buyer), fund);
        let submit = json!({"type": "submit_milestone", "project_id": p, "milestone": 1});
        self.cmd(day(s + 1, 10), user(seller), submit.clone());
        let released = match i % 5 {
            0 | 1 => {
                let due = day(s + 15, 10);
                self.expect("auto_approve_milestone", p, due);
                due
            }
            2 => {
                let approve = json!({"type": "approve_milestone", "project_id": p, "milestone": 1});
                self.cmd(day(s + 3, 9), user(buyer), approve);
                day(s + 3, 9)
            }
            3 => {
                let changes = json!({"type": "request_changes", "project_id": p, "milestone": 1});
                self.cmd(day(s + 2, 11), user(buyer), changes);
                self.cmd(day(s + 4, 10), user(seller), submit);
                let due = day(s + 18, 10);
                self.expect("auto_approve_milestone", p, due);
                due
            }
            _ => {
                let dispute = id(&format!("pq-{i}"));
                let open = json!({"type": "open_dispute", "dispute_id": dispute, "project_id": p, "milestone": 1,
                    "reason": "late", "proposed_release": usd("50.00"), "respond_by": day(s + 30, 9)});
                self.cmd(day(s + 2, 9), user(buyer), open);
                let due = day(s + 16, 9); // respond_by is at most 14 days after opening
                self.expect("time_out_dispute", dispute, due);
                due
            }
        };
        if pending {
            self.expect("mature_release", p, released + Duration::days(7));
        }
    }

    /// Booking `j`: a request on day `s` with one quote (two for every third), the first accepted (the other
    /// declined), paid, delivered on day s+2; accepted by the client that afternoon (even `j`) or left
    /// alone (odd: auto-accepted 72 hours later).
    fn booking(&mut self, j: u32) {
        let s = i64::from(j % 20);
        let (r, q, q2) = (
            id(&format!("r-{j}")),
            id(&format!("q-{j}")),
            id(&format!("q2-{j}")),
        );
        let (client, provider, other) = (
            id(&format!("c-{j}")),
            id(&format!("v-{j}")),
            id(&format!("w-{j}")),
        );
        let at = day(s, 8) + Duration::minutes(i64::from(j));
        let open = json!({"type": "open_service_request", "request_id": r, "currency": "USD", "title": format!("job {j}"), "expires_at": null});
        self.cmd(at, user(client), open);
        let quotes = if j.is_multiple_of(3) {
            vec![(q, provider), (q2, other)]
        } else {
            vec![(q, provider)]
        };
        for (quote, by) in &quotes {
            let create = json!({"type": "create_quote", "quote_id": quote, "request_id": r, "amount": usd("80.00"),
                "valid_until": day(s + 5, 0), "fees": {"commission_rate": "0.10", "buyer_fee_rate": "0"}});
            self.cmd(at, user(*by), create);
            self.cmd(
                at,
                user(*by),
                json!({"type": "send_quote", "quote_id": quote}),
            );
        }
        self.cmd(
            day(s, 12),
            user(client),
            json!({"type": "accept_quote", "quote_id": q}),
        );
        let (booking, project) = (derived(q, "booking"), derived(q, "project"));
        self.paid(day(s, 13), client, id(&format!("bd-{j}")), "80.00");
        let fund = json!({"type": "fund_milestone", "project_id": project, "milestone": 1});
        self.cmd(day(s, 13), user(client), fund);
        let deliver = json!({"type": "deliver_booking", "booking_id": booking});
        self.cmd(day(s + 2, 10), user(provider), deliver);
        if j.is_multiple_of(2) {
            let accept = json!({"type": "accept_booking", "booking_id": booking});
            self.cmd(day(s + 2, 15), user(client), accept);
        } else {
            self.expect("auto_accept_booking", booking, day(s + 5, 10));
        }
    }

    /// Left alone: requests with no taker (expire after 30 days), their quotes (expire at their validity),
    /// deposits nobody pays (expire after 72 hours).
    fn extra(&mut self, k: u32) {
        let (r, q, d) = (
            id(&format!("xr-{k}")),
            id(&format!("xq-{k}")),
            id(&format!("xd-{k}")),
        );
        let (client, provider) = (id(&format!("xc-{k}")), id(&format!("xv-{k}")));
        let at = day(0, 6) + Duration::minutes(i64::from(k));
        let open = json!({"type": "open_service_request", "request_id": r, "currency": "USD", "title": "nobody", "expires_at": null});
        self.cmd(at, user(client), open);
        self.expect("expire_service_request", r, at + Duration::days(30));
        let create = json!({"type": "create_quote", "quote_id": q, "request_id": r, "amount": usd("10.00"),
            "valid_until": day(3, 0), "fees": {}});
        self.cmd(at, user(provider), create);
        self.cmd(
            at,
            user(provider),
            json!({"type": "send_quote", "quote_id": q}),
        );
        self.expect("expire_quote", q, day(3, 0));
        let deposit = json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("5.00"), "gateway": "stripe", "fund": null});
        let start = day(i64::from(k % 10), 7);
        self.cmd(start, user(client), deposit);
        self.expect("expire_deposit", d, start + Duration::hours(72));
    }
}

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(CLI)
        .args(["--database-url", url])
        .args(args)
        .output()
        .expect("run escrow-ledger")
}

/// JSON lines a worker printed.
fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Two workers at `now`; with `kill`, the first is SIGKILLed after it reported its first deadline.
fn race(url: &str, now: &str, kill: bool) -> (Vec<Value>, bool) {
    let spawn = || {
        Command::new(CLI)
            .args([
                "--database-url",
                url,
                "timers",
                "run",
                "--once",
                "--now",
                now,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn timers")
    };
    let mut a = spawn();
    let b = spawn();
    let mut reported = Vec::new();
    let mut killed_mid_run = false;
    if kill {
        let mut out = BufReader::new(a.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        a.kill().expect("SIGKILL the first worker");
        let status = a.wait().unwrap();
        killed_mid_run = !status.success() && first.starts_with('{');
        if first.starts_with('{') {
            reported.push(serde_json::from_str(&first).unwrap());
        }
    } else {
        let out = a.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        reported.extend(lines(&out.stdout));
    }
    let out = b.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reported.extend(lines(&out.stdout));
    (reported, killed_mid_run)
}

#[tokio::test]
async fn a_simulated_month_fires_every_deadline_exactly_once_in_due_order() {
    let db = TestDb::new().await;
    let url = db.url();
    let mut scenario = Scenario::default();
    (0..PROJECTS).for_each(|i| scenario.project(i));
    (0..BOOKINGS).for_each(|j| scenario.booking(j));
    (0..EXTRAS).for_each(|k| scenario.extra(k));
    let dir = std::env::temp_dir().join(format!("month-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut reported = Vec::new();
    let mut killed_mid_run = false;
    let started = std::time::Instant::now();
    for d in 0..DAYS {
        if let Some(day_lines) = scenario.lines.get_mut(&d) {
            day_lines.sort_by_key(|(at, _)| *at);
            let path = dir.join(format!("day-{d}.jsonl"));
            let mut file = std::fs::File::create(&path).unwrap();
            for (_, line) in day_lines.iter() {
                writeln!(file, "{line}").unwrap();
            }
            let out = cli(url, &["apply", path.to_str().unwrap()]);
            let refused: Vec<Value> = lines(&out.stdout)
                .into_iter()
                .filter(|l| l["status"] != "accepted")
                .collect();
            assert!(refused.is_empty(), "day {d}: {refused:?}");
        }
        let now = day(d + 1, 0).to_rfc3339();
        let (handled, killed) = race(url, &now, d >= 15 && !killed_mid_run);
        killed_mid_run |= killed;
        reported.extend(handled);
    }
    let elapsed = started.elapsed();
    assert!(killed_mid_run, "no worker was killed mid-run");
    let end = day(DAYS, 0);

    // What fired: the deadlines whose stopping event carried their own key.
    let out = cli(
        url,
        &["timers", "run", "--once", "--now", &end.to_rfc3339()],
    );
    assert!(out.status.success());
    assert!(
        lines(&out.stdout).iter().all(|l| l["outcome"] != "fired"),
        "a last run fired something already due"
    );
    let fired: Vec<(String, Uuid, DateTime<Utc>, String)> = sqlx::query_as(
        "select kind, target_id, due_at, stream_id from escrow.deadlines
          where ledger_id = 'default' and status = 'fired'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: BTreeSet<(String, Uuid, DateTime<Utc>)> = fired
        .iter()
        .map(|(k, t, d, _)| (k.clone(), *t, *d))
        .collect();
    let expected: BTreeSet<(String, Uuid, DateTime<Utc>)> = scenario
        .expected
        .iter()
        .filter(|(_, _, due)| *due <= end)
        .cloned()
        .collect();
    assert_eq!(got.len(), fired.len(), "a deadline fired twice");
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nunexpected {extra:?}"
    );

    // Nothing due is left pending.
    let pending_due: i64 = sqlx::query_scalar(
        "select count(*) from escrow.deadlines where status = 'pending' and due_at <= $1",
    )
    .bind(end)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending_due, 0);

    // Exactly once: each deadline's key appended the events of one command, once.
    let per_key: Vec<(String, i64, i64)> = sqlx::query_as(
        "select metadata->>'idempotency_key', count(distinct metadata->>'correlation_id'),
                count(distinct stream_id || ':' || stream_version)
           from ledger.events where metadata->>'idempotency_key' like 'deadline:%' group by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_key.len(), fired.len(), "keys that appended events");
    assert!(per_key.iter().all(|(_, commands, _)| *commands == 1));
    let fired_lines: Vec<&Value> = reported
        .iter()
        .filter(|l| l["outcome"] == "fired")
        .collect();
    let fired_ids: BTreeSet<&str> = fired_lines
        .iter()
        .map(|l| l["deadline_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        fired_ids.len(),
        fired_lines.len(),
        "a worker reported a deadline fired twice"
    );
    assert!(
        reported.iter().all(|l| l["outcome"] != "failed"),
        "{:?}",
        reported
            .iter()
            .filter(|l| l["outcome"] == "failed")
            .collect::<Vec<_>>()
    );

    // Each fired command happened at its deadline's due time, not when a worker got to it: the journal
    // entries it booked are recorded at the due time.
    let (entries, off_time): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where (e.payload->'entry'->>'recorded_at')::timestamptz <> d.due_at)
           from ledger.events e
           join escrow.deadlines d on d.ledger_id = e.ledger_id
                and e.metadata->>'idempotency_key' = 'deadline:' || d.deadline_id
          where e.payload ? 'entry'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(entries > 0);
    assert_eq!(
        off_time, 0,
        "entries of fired deadlines not at their due time"
    );

    // In due order per stream: the positions at which a stream's deadlines fired follow their due times.
    let order: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "select d.stream_id, d.due_at, min(s.position)
           from escrow.deadlines d
           join ledger.events e on e.ledger_id = d.ledger_id
                and e.metadata->>'idempotency_key' = 'deadline:' || d.deadline_id
           join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id
          where d.status = 'fired' group by d.stream_id, d.due_at, d.deadline_id
          order by d.stream_id, d.due_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for pair in order.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(pair[0].2 < pair[1].2, "{pair:?} fired out of due order");
        }
    }

    let verify = cli(url, &["verify"]);
    assert!(
        verify.status.success() && verify.stdout.is_empty(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let kinds: BTreeMap<&str, usize> = fired.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.0.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "month: {} commands over {DAYS} days in {:.1} s; fired {kinds:?}; worker lines {}",
        scenario.next,
        elapsed.as_secs_f64(),
        reported.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}
