//! `escrow-ledger demo`: one realistic marketplace story, end to end through the real engine and store,
//! projected into the read tables, with what happened and the balances printed. Every run uses fresh ids,
//! so runs add independent stories to the selected ledger.
//!
//! The story: a client's service request gets two quotes; the accepted one opens a booking funded by a
//! gateway deposit and released on acceptance. A buyer and a seller run a three-milestone escrow project
//! with a 10% commission and a 2.5% buyer fee: a gateway outcome arrives before the "processing" notice it
//! should follow (reordered) and is delivered twice (duplicated); milestone 1 is released, milestone 2 is
//! disputed and settled by a split, milestone 3 is refunded. The seller's first payout fails at the bank,
//! the second succeeds (and its callback is delivered twice).

use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use ledger_core::aggregates::payment::FundTarget;
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::ids::derived_id;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money, Rate};
use ledger_projections::{Projection, RunnerConfig};
use ledger_store::{CommandOutcome, EventStore, Executor, PgEventStore};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

/// Above this many events, the demo skips re-checking every read table against the log (`verify` does).
const VERIFY_EVENTS_MAX: i64 = 200_000;

struct Story<'a> {
    executor: &'a Executor,
    at: DateTime<Utc>,
    steps: u32,
    refused: u32,
}

fn usd(text: &str) -> Money {
    Money::parse(text, Currency::USD).expect("demo amounts are valid USD")
}

impl Story<'_> {
    /// Runs one command and prints one line: what, and what the ledger did.
    async fn step(&mut self, what: &str, actor: Actor, command: Command) -> Result<bool, CliError> {
        self.steps += 1;
        self.at += Duration::seconds(1);
        let env = CommandEnvelope {
            command_id: Uuid::new_v4(),
            actor,
            at: self.at,
            command,
        };
        let outcome = self
            .executor
            .execute(&env, None)
            .await
            .context(format!("{what}: the store failed"))?;
        match outcome {
            CommandOutcome::Accepted {
                events, follow_ups, ..
            } => {
                let follow: Vec<String> = follow_ups.iter().map(|f| f.command.clone()).collect();
                let follow = if follow.is_empty() {
                    String::new()
                } else {
                    format!("; then {}", follow.join(", "))
                };
                println!("  ok   {what} ({} events{follow})", events.len());
                Ok(true)
            }
            CommandOutcome::Rejected { rejection, .. } => {
                self.refused += 1;
                println!("  no   {what}: {} ({})", rejection.message, rejection.code);
                Ok(false)
            }
        }
    }
}

struct Cast {
    client: Uuid,
    provider: Uuid,
    other_provider: Uuid,
    buyer: Uuid,
    seller: Uuid,
}

pub async fn run(global: &Global) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor().await?;
    let cast = Cast {
        client: Uuid::new_v4(),
        provider: Uuid::new_v4(),
        other_provider: Uuid::new_v4(),
        buyer: Uuid::new_v4(),
        seller: Uuid::new_v4(),
    };
    let mut story = Story {
        executor: &executor,
        at: Utc::now(),
        steps: 0,
        refused: 0,
    };
    println!("demo on ledger {:?}", global.ledger);
    println!(
        "  client {}  provider {}  buyer {}  seller {}",
        cast.client, cast.provider, cast.buyer, cast.seller
    );
    booking_story(&mut story, &cast).await?;
    let project_id = escrow_story(&mut story, &cast).await?;
    payout_story(&mut story, &cast).await?;
    println!(
        "{} commands sent, {} refused by the ledger as they should be",
        story.steps, story.refused
    );
    project_and_report(&pool, &global.ledger, &cast, project_id).await
}

async fn booking_story(story: &mut Story<'_>, cast: &Cast) -> Result<(), CliError> {
    println!("service request -> quotes -> booking:");
    let request_id = Uuid::new_v4();
    let (quote_id, other_quote) = (Uuid::new_v4(), Uuid::new_v4());
    let valid_until = story.at + Duration::days(3);
    let c = cast;
    story
        .step(
            "client opens a service request",
            Actor::User(c.client),
            Command::OpenServiceRequest {
                request_id,
                currency: Currency::USD,
                title: "Fix the kitchen sink".into(),
                expires_at: Some(story.at + Duration::days(7)),
            },
        )
        .await?;
    for (quote, provider, amount) in [
        (quote_id, c.provider, "150.00"),
        (other_quote, c.other_provider, "180.00"),
    ] {
        let fees = FeePolicy {
            commission_rate: Rate::from_bps(1_000).expect("10%"),
            ..FeePolicy::default()
        };
        let create = Command::CreateQuote {
            quote_id: quote,
            request_id,
            amount: usd(amount),
            valid_until,
            fees: fees.into(),
        };
        story
            .step(
                &format!("provider quotes {amount} USD"),
                Actor::User(provider),
                create,
            )
            .await?;
        story
            .step(
                "provider sends the quote",
                Actor::User(provider),
                Command::SendQuote { quote_id: quote },
            )
            .await?;
    }
    story
        .step(
            "client accepts the 150.00 quote (the other one is declined with it)",
            Actor::User(c.client),
            Command::AcceptQuote { quote_id },
        )
        .await?;
    let booking_id = derived_id(quote_id, "booking");
    let project_id = derived_id(quote_id, "project");
    let payment_id = Uuid::new_v4();
    story
        .step(
            "client pays the booking through Stripe",
            Actor::User(c.client),
            Command::InitiateDeposit {
                payment_id,
                amount: usd("150.00"),
                gateway: Gateway::Stripe,
                fund: Some(FundTarget {
                    project_id,
                    milestone: 1,
                }),
            },
        )
        .await?;
    story
        .step(
            "Stripe confirms the payment (fee 4.65)",
            Actor::Gateway(Gateway::Stripe),
            Command::ConfirmDeposit {
                payment_id,
                amount: usd("150.00"),
                gateway_fee: Some(usd("4.65")),
                occurred_at: None,
                fee_in_suspense: None,
            },
        )
        .await?;
    for (what, actor, command) in [
        (
            "provider starts the job",
            c.provider,
            Command::StartBooking { booking_id },
        ),
        (
            "provider delivers",
            c.provider,
            Command::DeliverBooking { booking_id },
        ),
        (
            "client accepts the work",
            c.client,
            Command::AcceptBooking { booking_id },
        ),
    ] {
        story.step(what, Actor::User(actor), command).await?;
    }
    Ok(())
}

async fn escrow_story(story: &mut Story<'_>, cast: &Cast) -> Result<Uuid, CliError> {
    println!("escrow project with three milestones:");
    let c = cast;
    let project_id = Uuid::new_v4();
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).expect("10%"),
        buyer_fee_rate: Rate::from_bps(250).expect("2.5%"),
        ..FeePolicy::default()
    };
    story
        .step(
            "buyer creates the project (500 + 300 + 200 USD, 10% commission, 2.5% buyer fee)",
            Actor::User(c.buyer),
            Command::CreateProject {
                project_id,
                buyer: c.buyer,
                seller: c.seller,
                currency: Currency::USD,
                milestones: vec![usd("500.00"), usd("300.00"), usd("200.00")],
                fees: fees.into(),
            },
        )
        .await?;
    story
        .step(
            "buyer submits it for agreement",
            Actor::User(c.buyer),
            Command::SubmitProjectForAgreement { project_id },
        )
        .await?;
    story
        .step(
            "seller agrees",
            Actor::User(c.seller),
            Command::AgreeToProject { project_id },
        )
        .await?;
    let payment_id = Uuid::new_v4();
    story
        .step(
            "buyer deposits 1025.00 USD through Paystack",
            Actor::User(c.buyer),
            Command::InitiateDeposit {
                payment_id,
                amount: usd("1025.00"),
                gateway: Gateway::Paystack,
                fund: None,
            },
        )
        .await?;
    let paystack = Actor::Gateway(Gateway::Paystack);
    let confirm = Command::ConfirmDeposit {
        payment_id,
        amount: usd("1025.00"),
        gateway_fee: Some(usd("15.38")),
        occurred_at: None,
        fee_in_suspense: None,
    };
    story
        .step(
            "Paystack: charge.success (arrives first)",
            paystack,
            confirm.clone(),
        )
        .await?;
    story
        .step(
            "Paystack: 'processing' (reordered, arrives after the success)",
            paystack,
            Command::MarkPaymentProcessing { payment_id },
        )
        .await?;
    story
        .step(
            "Paystack: charge.success again (duplicate delivery)",
            paystack,
            confirm,
        )
        .await?;
    for milestone in 1..=3 {
        story
            .step(
                &format!("buyer funds milestone {milestone}"),
                Actor::User(c.buyer),
                Command::FundMilestone {
                    project_id,
                    milestone,
                },
            )
            .await?;
    }
    let submit = |milestone| Command::SubmitMilestone {
        project_id,
        milestone,
    };
    story
        .step(
            "seller submits milestone 1",
            Actor::User(c.seller),
            submit(1),
        )
        .await?;
    story
        .step(
            "buyer approves milestone 1 (released, commission and fee earned)",
            Actor::User(c.buyer),
            Command::ApproveMilestone {
                project_id,
                milestone: 1,
            },
        )
        .await?;
    story
        .step(
            "seller submits milestone 2",
            Actor::User(c.seller),
            submit(2),
        )
        .await?;
    let dispute_id = Uuid::new_v4();
    story
        .step(
            "buyer disputes milestone 2, proposing 150.00 of 300.00 to the seller",
            Actor::User(c.buyer),
            Command::OpenDispute {
                dispute_id,
                project_id,
                milestone: 2,
                reason: "half of the pages are missing".into(),
                proposed_release: usd("150.00"),
                respond_by: story.at + Duration::days(7),
            },
        )
        .await?;
    story
        .step(
            "seller accepts the split",
            Actor::User(c.seller),
            Command::AcceptDisputeProposal { dispute_id },
        )
        .await?;
    story
        .step(
            "seller refunds milestone 3",
            Actor::User(c.seller),
            Command::RefundMilestone {
                project_id,
                milestone: 3,
            },
        )
        .await?;
    Ok(project_id)
}

async fn payout_story(story: &mut Story<'_>, cast: &Cast) -> Result<(), CliError> {
    println!("payouts:");
    let c = cast;
    let stripe = Actor::Gateway(Gateway::Stripe);
    let failed = Uuid::new_v4();
    story
        .step(
            "seller withdraws 300.00 (fee 2.50)",
            Actor::User(c.seller),
            Command::RequestPayout {
                payout_id: failed,
                amount: usd("300.00"),
                fee: Some(usd("2.50")),
                gateway: Gateway::Stripe,
            },
        )
        .await?;
    story
        .step(
            "the bank rejects it (money back to the wallet)",
            stripe,
            Command::FailTransfer {
                payment_id: failed,
                reason: "account_closed".into(),
            },
        )
        .await?;
    let paid = Uuid::new_v4();
    story
        .step(
            "seller withdraws 300.00 to another account (fee 2.50)",
            Actor::User(c.seller),
            Command::RequestPayout {
                payout_id: paid,
                amount: usd("300.00"),
                fee: Some(usd("2.50")),
                gateway: Gateway::Stripe,
            },
        )
        .await?;
    let confirm = Command::ConfirmTransfer {
        payment_id: paid,
        gateway_fee: Some(usd("0.25")),
        occurred_at: None,
        fee_in_suspense: None,
    };
    story
        .step("Stripe: payout.paid", stripe, confirm.clone())
        .await?;
    story
        .step(
            "Stripe: payout.paid again (duplicate delivery)",
            stripe,
            confirm,
        )
        .await?;
    Ok(())
}

async fn project_and_report(
    pool: &PgPool,
    ledger: &str,
    cast: &Cast,
    project_id: Uuid,
) -> Result<ExitCode, CliError> {
    let positions =
        ledger_projections::catch_up_all(pool, ledger, &Projection::ALL, &RunnerConfig::default())
            .await
            .context("projecting the read tables failed")?;
    let head = PgEventStore::new(pool.clone())
        .head_position(ledger)
        .await
        .context("cannot read the head")?;
    println!(
        "projected {head} events into schema escrow ({})",
        positions
            .iter()
            .map(|(p, n)| format!("{p} at {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("balances, as each user sees them (escrow.my_balances under row-level security):");
    for (name, user) in [
        ("client", cast.client),
        ("provider", cast.provider),
        ("buyer", cast.buyer),
        ("seller", cast.seller),
    ] {
        let rows = my_balances(pool, ledger, user).await?;
        let shown: Vec<String> = rows
            .iter()
            .map(|(currency, available, pending)| {
                format!("available {available} {currency}, pending {pending} {currency}")
            })
            .collect();
        println!("  {name:<9} {}", shown.join("; "));
    }
    let mut tx = projector_tx(pool).await?;
    let project: (String, String, String, String) = sqlx::query_as(
        "select status, funded::text, released::text, refunded::text
           from escrow.projects where ledger_id = $1 and project_id = $2",
    )
    .bind(ledger)
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await
    .context("cannot read the project row")?;
    println!(
        "  project  {}: funded {} released {} refunded {} USD",
        project.0, project.1, project.2, project.3
    );
    let trial: Vec<(String, String, String)> = sqlx::query_as(
        "select currency, sum(debits)::text, sum(credits)::text from escrow.account_balances
          where ledger_id = $1 group by currency order by currency",
    )
    .bind(ledger)
    .fetch_all(&mut *tx)
    .await
    .context("cannot read the trial balance")?;
    tx.rollback().await.context("rollback")?;
    for (currency, debits, credits) in trial {
        println!(
            "trial balance of ledger {ledger:?} in {currency}: debits {debits} = credits {credits}"
        );
    }
    if head > VERIFY_EVENTS_MAX {
        println!("({head} events: run `escrow-ledger verify` to re-check every read table)");
        return Ok(ExitCode::SUCCESS);
    }
    let mismatches = ledger_projections::verify::compare_with_log(pool, ledger)
        .await
        .context("cannot compare the read tables with the log")?;
    if mismatches.is_empty() {
        println!("every read table equals a replay of the log");
        Ok(ExitCode::SUCCESS)
    } else {
        for mismatch in &mismatches {
            println!("MISMATCH {mismatch}");
        }
        Err(CliError::findings(format!(
            "{} read-table rows differ from the replay of the log",
            mismatches.len()
        )))
    }
}

/// A transaction as `escrow_projector` (RLS is forced on the read tables, for their owner too).
async fn projector_tx(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, CliError> {
    let mut tx = pool.begin().await.context("cannot open a transaction")?;
    sqlx::query("set local role escrow_projector")
        .execute(&mut *tx)
        .await
        .context("cannot take the role escrow_projector")?;
    Ok(tx)
}

/// `escrow.my_balances` as the user sees it: role escrow_reader, the user's JWT claims.
async fn my_balances(
    pool: &PgPool,
    ledger: &str,
    user: Uuid,
) -> Result<Vec<(String, String, String)>, CliError> {
    let claims = serde_json::json!({
        "sub": user,
        "role": "authenticated",
        "app_metadata": { "ledger": ledger },
    });
    let mut tx = pool.begin().await.context("cannot open a transaction")?;
    sqlx::query("set local role escrow_reader")
        .execute(&mut *tx)
        .await
        .context("cannot take the role escrow_reader")?;
    // SET LOCAL, carried to Citus workers too (migration 20261201000301); set_config would not be.
    sqlx::query("select escrow.set_claims($1)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .context("cannot set the claims")?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select currency, coalesce(available, 0)::text, coalesce(pending, 0)::text
           from escrow.my_balances order by currency",
    )
    .fetch_all(&mut *tx)
    .await
    .context("cannot read escrow.my_balances")?;
    tx.rollback().await.context("rollback")?;
    Ok(rows)
}
