//! `verify --deep`: every recorded command decided again on the state before it.
//!
//! The executor keeps each command's envelope on the first of its events in the log (`metadata.command`,
//! with the rules version that decided it), and every keyed outcome without events of its own as a
//! `CommandOutcomeRecorded` event. Replaying the log in order, this check meets each command before its
//! events, decides it on the replayed state (`MemoryLedger::decide`, nothing changed), and then compares
//! every event of the log with what the rules produced:
//!   * an event no recorded command produced (a forged event, or one whose command was stripped);
//!   * an event that differs from what its command produces now (a forged field, or a rule change: the
//!     rules version recorded with the command tells the two apart);
//!   * a command the rules refuse now although its events are in the log;
//!   * a recorded rejection (or accepted no-op) that the rules do not give now;
//!   * events a command produces that the log lacks.
//!
//! Events written before commands were kept (a log older than this build) are counted, not judged: the
//! first event that carries a command starts the judging.

use std::collections::HashMap;

use ledger_core::engine::RULES_VERSION;
use ledger_core::outcomes::OutcomeEvent;
use ledger_core::{Change, CommandEnvelope, Event, MemoryLedger, Rejection};
use serde::Deserialize;
use uuid::Uuid;

use crate::replay::Decoded;

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    command: Option<RecordedCommand>,
}

#[derive(Deserialize)]
struct RecordedCommand {
    rules: String,
    envelope: serde_json::Value,
}

/// An event a decided command produces, waiting for its row in the log.
struct Expected {
    change: Change,
    command_id: Uuid,
    rules: String,
}

#[derive(Default)]
pub struct DeepCheck {
    expected: HashMap<Uuid, Expected>,
    judging: bool,
    pub commands: u64,
    pub outcomes: u64,
    pub unjudged: u64,
}

/// What a finding adds when the command was decided by other rules than this build's.
fn rules_note(rules: &str) -> String {
    if rules == RULES_VERSION {
        String::new()
    } else {
        format!(
            " (decided under rules {rules}, this build runs {RULES_VERSION}: a rule change between versions, not necessarily tampering)"
        )
    }
}

fn command_type(env: &CommandEnvelope) -> String {
    serde_json::to_value(&env.command)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn refusal(r: &Rejection) -> String {
    format!("{} ({r})", r.code())
}

impl DeepCheck {
    /// Judges one event of the log, before it is applied to `memory` (the state before it).
    pub fn before_apply(
        &mut self,
        memory: &MemoryLedger,
        d: &Decoded,
        metadata: &str,
        findings: &mut Vec<String>,
    ) {
        let recorded = serde_json::from_str::<Metadata>(metadata)
            .ok()
            .and_then(|m| m.command);
        if let Some(recorded) = recorded {
            self.judging = true;
            self.decide_recorded(memory, d, recorded, findings);
        }
        match &d.event {
            Event::Outcome(OutcomeEvent::CommandOutcomeRecorded {
                command, rejection, ..
            }) => {
                self.judging = true;
                self.outcomes += 1;
                let decided = memory.decide(command);
                let agrees = match (rejection, &decided) {
                    (Some(report), Some(Err(r))) => r.code() == report.code,
                    (None, Some(Ok(o))) => {
                        o.changes.is_empty()
                            && o.follow_ups
                                .iter()
                                .all(|(_, r)| r.as_ref().is_ok_and(Vec::is_empty))
                    }
                    _ => false,
                };
                if !agrees {
                    let recorded = rejection
                        .as_ref()
                        .map_or("accepted without events".to_string(), |r| {
                            format!("refused {}", r.code)
                        });
                    let now = match &decided {
                        Some(Ok(o)) => format!("accepted with {} events", o.changes.len()),
                        Some(Err(r)) => format!("refused {}", refusal(r)),
                        None => "undecidable (too many streams)".to_string(),
                    };
                    findings.push(format!(
                        "recorded outcome {} at position {}: command {} ({}) was {recorded}, but decided again on the state before it it is {now} (a forged outcome)",
                        d.event_id,
                        d.position,
                        command.command_id,
                        command_type(command)
                    ));
                }
            }
            Event::Outcome(OutcomeEvent::DeliveryRecorded { .. }) => {} // checked against its inbox row
            _ => self.match_event(d, findings),
        }
    }

    fn decide_recorded(
        &mut self,
        memory: &MemoryLedger,
        d: &Decoded,
        recorded: RecordedCommand,
        findings: &mut Vec<String>,
    ) {
        let env: CommandEnvelope = match serde_json::from_value(recorded.envelope) {
            Ok(env) => env,
            Err(e) => {
                findings.push(format!(
                    "event {} at position {} carries a command that does not decode{}: {e}",
                    d.event_id,
                    d.position,
                    rules_note(&recorded.rules)
                ));
                return;
            }
        };
        self.commands += 1;
        match memory.decide(&env) {
            Some(Ok(outcome)) => {
                let accepted = outcome
                    .follow_ups
                    .into_iter()
                    .filter_map(|(_, r)| r.ok())
                    .flatten();
                for change in outcome.changes.into_iter().chain(accepted) {
                    self.expected.insert(
                        change.event_id,
                        Expected {
                            change,
                            command_id: env.command_id,
                            rules: recorded.rules.clone(),
                        },
                    );
                }
            }
            Some(Err(r)) => findings.push(format!(
                "command {} ({}) recorded at position {} is refused by the rules on the state before it{}: {}; its events were produced by no accepted command",
                env.command_id,
                command_type(&env),
                d.position,
                rules_note(&recorded.rules),
                refusal(&r)
            )),
            None => findings.push(format!(
                "command {} recorded at position {} needs more streams than the engine loads for one command",
                env.command_id, d.position
            )),
        }
    }

    fn match_event(&mut self, d: &Decoded, findings: &mut Vec<String>) {
        match self.expected.remove(&d.event_id) {
            Some(expected) => {
                if expected.change.stream != d.stream || expected.change.event != d.event {
                    findings.push(format!(
                        "event {} at position {} ({} on {}) differs from what command {} produces on the state before it{}",
                        d.event_id,
                        d.position,
                        d.event_type,
                        d.stream,
                        expected.command_id,
                        rules_note(&expected.rules)
                    ));
                }
            }
            None if self.judging => findings.push(format!(
                "event {} at position {} ({} on {}) was produced by no recorded command",
                d.event_id, d.position, d.event_type, d.stream
            )),
            None => self.unjudged += 1,
        }
    }

    /// The events decided commands produce that the log never held.
    pub fn finish(self, findings: &mut Vec<String>) {
        let mut missing: Vec<&Expected> = self.expected.values().collect();
        missing.sort_by_key(|e| (e.command_id, e.change.event_id));
        for e in missing {
            findings.push(format!(
                "command {} produces event {} on {} that the log does not hold{}",
                e.command_id,
                e.change.event_id,
                e.change.stream,
                rules_note(&e.rules)
            ));
        }
        tracing::info!(
            commands = self.commands,
            outcomes = self.outcomes,
            unjudged = self.unjudged,
            "deep verification"
        );
    }
}

/// Inbox rows read per page by the gateway evidence pass.
const INBOX_PAGE: i64 = 500;
/// Most `MANUAL:`/`UNSIGNED:` lines printed (each is listed, not a finding).
const LISTED_MAX: usize = 10_000;

/// One inbox row as the evidence pass reads it.
type EvidenceRow = (
    uuid::Uuid,
    String,
    Option<uuid::Uuid>,
    Vec<u8>,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
);

/// What the gateway evidence pass found besides findings: deliveries that cannot be checked again (no
/// signature kept) and gateway commands that came through no delivery (an operator's `apply`).
#[derive(Default)]
pub struct Evidence {
    pub verified: u64,
    pub listed: Vec<String>,
}

/// With the gateways' secrets (`--gateway-config`): every delivery in the inbox is authenticated again
/// against its kept signature and raw body, at the time it was received (the same tolerance as then); a
/// delivery that does not verify is a finding. Gateway commands in the log that no delivery carried are
/// listed as manual (`MANUAL:`), deliveries recorded without a signature as `UNSIGNED:`.
pub async fn gateway_evidence(
    pool: &sqlx::PgPool,
    ledger: &str,
    secrets: &ledger_gateway::Secrets,
    findings: &mut Vec<String>,
) -> Result<Evidence, crate::exit::CliError> {
    use crate::exit::Context;
    let mut evidence = Evidence::default();
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<EvidenceRow> = sqlx::query_as(
            "select delivery_id, gateway, command_id, raw_body, signature, received_at
               from ledger.inbox
              where ledger_id = $1 and delivery_id > $2
              order by delivery_id
              limit $3",
        )
        .bind(ledger)
        .bind(after)
        .bind(INBOX_PAGE)
        .fetch_all(pool)
        .await
        .context("cannot read the inbox")?;
        for (delivery, gateway, command, body, signature, received_at) in &rows {
            after = *delivery;
            let command = command.map_or("no command".to_string(), |c| format!("command {c}"));
            let Some(gw) = ledger_core::Gateway::from_component(gateway) else {
                findings.push(format!(
                    "delivery {delivery} names an unknown gateway {gateway:?} ({command})"
                ));
                continue;
            };
            let Some(lines) = signature else {
                if evidence.listed.len() < LISTED_MAX {
                    evidence.listed.push(format!(
                        "UNSIGNED: delivery {delivery} ({gateway}, {command}) was recorded without its signature (before signatures were kept, or Flutterwave's static hash): not checked again"
                    ));
                }
                continue;
            };
            let header = ledger_gateway::verify::header_from_lines(lines);
            match ledger_gateway::authenticate(gw, &header, body, secrets, received_at.timestamp())
            {
                Ok(()) => evidence.verified += 1,
                Err(e) => findings.push(format!(
                    "delivery {delivery} ({gateway}, {command}) does not verify with the configured {gateway} secret: {e}"
                )),
            }
        }
        if (rows.len() as i64) < INBOX_PAGE {
            break;
        }
    }
    let unsent: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
        "select e.metadata->'command'->'envelope'->>'command_id',
                e.metadata->'command'->'envelope'->'actor'->>'id',
                coalesce(e.metadata->'command'->'envelope'->'command'->>'type', ''),
                s.position
           from ledger.events e
           left join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id
          where e.ledger_id = $1
            and e.metadata->'command'->'envelope'->'actor'->>'kind' = 'gateway'
            and not exists (
                select 1 from ledger.inbox b
                 where b.ledger_id = $1
                   and b.command_id = (e.metadata->'command'->'envelope'->>'command_id')::uuid)
          order by s.position nulls last
          limit $2",
    )
    .bind(ledger)
    .bind(LISTED_MAX as i64)
    .fetch_all(pool)
    .await
    .context("cannot match gateway commands with their deliveries")?;
    for (command, gateway, kind, position) in unsent {
        let position = position.map_or("unsequenced".to_string(), |p| p.to_string());
        evidence.listed.push(format!(
            "MANUAL: command {command} ({kind}) as gateway {gateway} at position {position} came through no signed delivery (sent by an operator, e.g. with apply)"
        ));
    }
    Ok(evidence)
}
