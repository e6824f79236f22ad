//! The command executor: load -> decide (ledger-core) -> append with expected versions -> on conflict reload
//! and retry (bounded, with jitter). Also group commit: many commands in one transaction.
//!
//! A command and the follow-ups its events cause (an approval's release, a deposit's funding) are decided
//! together by `ledger_core::engine::decide_all` and appended in one atomic append, so a crash never leaves
//! an approved milestone unreleased. Every stream the decision appends to carries its expected version;
//! constrained accounts live in wallet, project and payment streams, so they are guarded, while clearing,
//! income and expense accounts belong to no stream and never become a concurrency point.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::engine::{
    self, AggState, Change, CommandEnvelope, DecideError, EventDecodeError, StreamId,
};
use ledger_core::{Account, Currency, Rejection, RejectionReport};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::outcome_log::{back_delivery, delivery_append, outcome_append};
use crate::store::{BatchRequest, EventStore, READ_LIMIT_MAX};
use crate::types::{
    AppendOutcome, AppendedEvent, EventMetadata, ExpectedVersion, IdempotencyRecord, InboxRow,
    NewEvent, Snapshot, StreamAppend, escape_nul,
};

/// Version of the fold: bump it when an `evolve` changes, so old snapshots are ignored. (2: a wallet moves
/// a project it funds again to the newest end of `escrow_projects`. 3: a milestone keeps its pending
/// proceeds and their maturity, a request its quotes, a deposit its expiry, a booking its silence in hours.
/// 4: a wallet keeps the projects holding its escrow in first-funding order and drops a settled one; a
/// milestone keeps its dispute; a dispute its split; a deposit its refunds; an approval clock restarts on
/// a withdrawn dispute.)
pub const FOLD_VERSION: i32 = 4;
/// A snapshot is written once a stream has this many events past its last snapshot.
pub const SNAPSHOT_EVERY_EVENTS: i64 = 256;
/// Bound on streams one command may load beyond its primary streams (each load round adds one). Every valid
/// command fits: the core bounds what any command with its follow-ups reads or writes
/// (`ledger_core::engine::STREAMS_PER_COMMAND_MAX`, a lost chargeback being the largest), and the assertion
/// below keeps the two in step, so `TooManyStreams` can only mean a core that broke its own bound.
pub const LOAD_ROUNDS_MAX: usize = 32;
const _: () = assert!(LOAD_ROUNDS_MAX >= engine::STREAMS_PER_COMMAND_MAX);

/// Default attempts of one command under contention (failed version checks) before `Contention`.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 8;
/// Default first backoff ceiling after a conflict (doubles per attempt, jittered from 0).
pub const BACKOFF_BASE_MS_DEFAULT: u64 = 2;
/// Default largest backoff between two attempts.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 250;
/// Default number of streams whose state the executor caches (about 1 KiB each); cleared past it.
pub const CACHE_STREAMS_MAX_DEFAULT: usize = 200_000;

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Attempts of one command before `Contention` (the first try included).
    pub attempts_max: u32,
    /// First backoff ceiling in ms; doubles per attempt up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Streams whose state is kept between commands; the cache is cleared when it grows past this.
    pub cache_streams_max: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_base_ms: BACKOFF_BASE_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            cache_streams_max: CACHE_STREAMS_MAX_DEFAULT,
        }
    }
}

/// What happened to a command. Serialized into idempotency records: a repeat gets exactly this back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandOutcome {
    Accepted {
        command_id: Uuid,
        events: Vec<AppendedEvent>,
        follow_ups: Vec<FollowUpOutcome>,
    },
    Rejected {
        command_id: Uuid,
        rejection: RejectionReport,
    },
}

impl CommandOutcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, CommandOutcome::Accepted { .. })
    }

    pub fn command_id(&self) -> Uuid {
        match self {
            CommandOutcome::Accepted { command_id, .. }
            | CommandOutcome::Rejected { command_id, .. } => *command_id,
        }
    }
}

/// Builds a delivery's inbox row from the outcome (`true` when the outcome is a replayed duplicate).
/// Builds a delivery's inbox row from the outcome being recorded: (outcome, replayed, the events the outcome
/// commits). Called once per attempt: the row of the attempt that commits is the one recorded, so its label
/// comes from the committed outcome, never from a plan made on a cache.
pub type InboxBuilder<'a> =
    &'a (dyn Fn(&CommandOutcome, bool, &[ledger_core::Event]) -> InboxRow + Send + Sync);

/// Rejection codes that mean "not yet": such a refusal is returned but never recorded under an idempotency
/// key, so the same key may succeed later. `too_early`: a due time has not passed. `not_found`: the command
/// refers to something the ledger has not recorded yet; gateways deliver in no guaranteed order (a
/// chargeback's outcome may arrive before its opening), and a recorded `not_found` would answer every
/// redelivery with the early refusal, so the outcome would never be booked. Every other refusal depends on
/// the command and the state only and is recorded like an acceptance. (`quote_expired` stays recorded: time
/// only ever turns an acceptance into that refusal, never the other way; so do `insufficient_funds` and
/// `fee_outside_policy`, which change only with the ledger's state.)
pub const TRANSIENT_REJECTIONS: [&str; 2] = ["too_early", "not_found"];

/// Whether a refusal with this code is transient (see `TRANSIENT_REJECTIONS`).
pub fn is_transient(code: &str) -> bool {
    TRANSIENT_REJECTIONS.contains(&code)
}

/// Whether this refusal of this envelope must not be recorded under its key: a transient code, or an
/// envelope time outside the core's bounds (the key compares actor and command, not `at`, so a retry
/// with a corrected time must be decided, not answered with the first time's refusal).
fn is_transient_refusal(env: &CommandEnvelope, rejection: &Rejection) -> bool {
    let at = env.at.timestamp();
    let at_out_of_bounds = !(engine::COMMAND_TIME_MIN_UNIX_SECONDS
        ..engine::COMMAND_TIME_END_UNIX_SECONDS)
        .contains(&at);
    is_transient(rejection.code()) || at_out_of_bounds
}

/// A follow-up the process logic ran inside the command's append (`rejection` when it was refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUpOutcome {
    pub command_id: Uuid,
    pub command: String,
    pub rejection: Option<RejectionReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {attempts} attempts under contention: {last}")]
    Contention { attempts: u32, last: String },
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyConflict { key: String },
    #[error("a stored event could not be read: {0}")]
    Decode(#[from] EventDecodeError),
    #[error("command {command_id} needed more than {LOAD_ROUNDS_MAX} streams")]
    TooManyStreams { command_id: Uuid },
    #[error("corrupt idempotency record for {key:?}: {reason}")]
    CorruptRecord { key: String, reason: String },
    /// The group committer this was submitted to has stopped (the process is shutting down).
    #[error("the group committer has stopped")]
    Stopped,
}

#[derive(Clone)]
struct Cached {
    state: AggState,
    version: i64,
}

/// Streams a group commit loaded for its whole batch (fresh, not from the cache).
type Prefetched = HashMap<StreamId, Cached>;

/// Most streams one prefetch read asks for.
const PREFETCH_STREAMS_PER_READ: usize = 256;

/// The cache and a batch's prefetched streams, as the core's `StateView` (a pure pre-decision that only
/// finds out which streams the batch needs).
struct PrefetchView<'a> {
    cache: &'a HashMap<StreamId, Cached>,
    prefetched: &'a Prefetched,
}

impl engine::StateView for PrefetchView<'_> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.cache
            .get(stream)
            .or_else(|| self.prefetched.get(stream))
            .map(|c| &c.state)
    }

    fn account_balance(&self, _account: &Account, _currency: Currency) -> Option<i128> {
        None
    }
}

/// Builds a delivery's inbox row, owned: group commit carries it from the submitting task to the committer.
pub type InboxRowBuilder =
    Box<dyn Fn(&CommandOutcome, bool, &[ledger_core::Event]) -> InboxRow + Send + Sync>;

/// One item of a group commit.
pub enum BatchItem {
    /// A command under its idempotency key; a callback's also builds its delivery's inbox row, which commits
    /// with the outcome (`execute_with_inbox`'s rule).
    Command {
        env: CommandEnvelope,
        key: Option<String>,
        inbox: Option<InboxRowBuilder>,
    },
    /// A delivery that runs no command (`record_inbox`'s rule: its row and its `DeliveryRecorded`).
    Record(InboxRow),
}

impl BatchItem {
    /// Text and jsonb cannot hold NUL: keys are stored (and looked up) escaped.
    fn escaped(self) -> BatchItem {
        match self {
            BatchItem::Command { env, key, inbox } => BatchItem::Command {
                env,
                key: key.as_deref().map(escape_nul),
                inbox,
            },
            record => record,
        }
    }
}

/// What a group commit answers for one item.
#[derive(Debug)]
pub enum BatchAnswer {
    /// The command's outcome. `replayed`: the outcome recorded under the same key by an earlier request (an
    /// earlier batch, or the item of this batch it exactly duplicates), so this item appended no event.
    Executed {
        outcome: CommandOutcome,
        replayed: bool,
    },
    /// A delivery recorded alone.
    Recorded,
}

impl BatchAnswer {
    /// The outcome of a command item (the only kind `execute_batch` submits).
    fn into_outcome(self) -> CommandOutcome {
        match self {
            BatchAnswer::Executed { outcome, .. } => outcome,
            BatchAnswer::Recorded => unreachable!("a command item is answered with its outcome"),
        }
    }
}

fn executed(outcome: CommandOutcome) -> BatchAnswer {
    BatchAnswer::Executed {
        outcome,
        replayed: false,
    }
}

/// What one request of a group commit answers when it lands (or fails).
enum Slot {
    /// A decided command: the streams its decision read (dropped from the cache when its checks fail), what
    /// to remember if it lands, its outcome so far, and the exact duplicates that follow it.
    Command {
        index: usize,
        read: Vec<StreamId>,
        remember: Option<Box<(Loaded, engine::Decision)>>,
        outcome: CommandOutcome,
        followers: Vec<usize>,
    },
    /// A key recorded before this batch: its delivery's row only.
    Replayed {
        index: usize,
        outcome: CommandOutcome,
    },
    /// A delivery recorded alone.
    Recorded { index: usize },
}

/// A group commit as it is planned: its requests and what each answers, the streams written so far, the
/// keys of its keyed requests (to resolve exact duplicates in memory), and keys left to the slow path.
#[derive(Default)]
struct BatchBuilder {
    requests: Vec<BatchRequest>,
    slots: Vec<Slot>,
    taken: HashSet<StreamId>,
    keyed: HashMap<String, (usize, serde_json::Value)>,
    deferred: HashSet<String>,
}

impl BatchBuilder {
    fn push(&mut self, request: BatchRequest, slot: Slot) {
        self.requests.push(request);
        self.slots.push(slot);
    }

    fn push_command(
        &mut self,
        index: usize,
        keyed: Option<(String, serde_json::Value)>,
        (request, read, remember, outcome): BatchedRequest,
    ) {
        if let Some((key, compared)) = keyed {
            self.keyed.insert(key, (self.requests.len(), compared));
        }
        self.push(
            request,
            Slot::Command {
                index,
                read,
                remember: remember.map(Box::new),
                outcome,
                followers: Vec::new(),
            },
        );
    }

    /// An exact duplicate (same key, same request) of an earlier request of this batch follows it: the same
    /// outcome, replayed, its delivery's row committed with the original's request. A different request
    /// under a taken key is left to the slow path, where it meets the recorded key as a conflict.
    fn follow(
        &mut self,
        key: &str,
        request: &serde_json::Value,
        index: usize,
        inbox: Option<InboxBuilder<'_>>,
    ) -> bool {
        let Some((at, compared)) = self.keyed.get(key) else {
            return false;
        };
        if compared != request {
            self.deferred.insert(key.to_string());
            return true;
        }
        let Slot::Command {
            outcome, followers, ..
        } = &mut self.slots[*at]
        else {
            unreachable!("keyed requests are commands")
        };
        if let Some(build) = inbox {
            let row = build(outcome, true, &[]);
            let duplicate = replayed_delivery(row, key, outcome);
            let original = &mut self.requests[*at];
            original.appends.extend(duplicate.appends);
            original.inbox.extend(duplicate.inbox);
        }
        followers.push(index);
        true
    }
}

/// A replayed duplicate's delivery: backed by the outcome it repeats, it appends no event; any other row
/// gets its `DeliveryRecorded` (`Executor::replayed`'s rule).
fn replayed_delivery(row: InboxRow, key: &str, outcome: &CommandOutcome) -> BatchRequest {
    let appends = if crate::outcome_log::is_replayed_duplicate(&row, key, outcome.command_id()) {
        Vec::new()
    } else {
        vec![delivery_append(&row)]
    };
    BatchRequest {
        appends,
        idempotency: None,
        inbox: vec![row],
    }
}

/// The recorded outcome of an idempotency key, if the request is the same (compared as parsed JSON); its
/// positions are not filled.
fn replay_record(
    record: IdempotencyRecord,
    request: &serde_json::Value,
) -> Result<CommandOutcome, ExecError> {
    if &record.request != request {
        return Err(ExecError::IdempotencyConflict { key: record.key });
    }
    serde_json::from_value(record.outcome).map_err(|e| ExecError::CorruptRecord {
        key: record.key.clone(),
        reason: e.to_string(),
    })
}

/// A request of a group commit, the streams it read, what to remember if it lands, and its outcome.
type BatchedRequest = (
    BatchRequest,
    Vec<StreamId>,
    Option<(Loaded, engine::Decision)>,
    CommandOutcome,
);

/// What group commit does with one command.
enum BatchPlan {
    /// Answered without the batch (an error).
    Done(Result<CommandOutcome, ExecError>),
    /// Run through `execute` after the batch.
    SlowPath,
    /// One request of the batch's transaction (boxed: it carries the loaded states).
    Request(Box<BatchedRequest>),
}

/// States and versions a decision was made against.
#[derive(Default)]
struct Loaded {
    states: HashMap<StreamId, AggState>,
    versions: HashMap<StreamId, i64>,
    /// Streams taken from the cache (re-validated when the decision only reads them).
    from_cache: HashSet<StreamId>,
    /// Account balances a decision asked for (`DecideError::NeedBalance`), computed from the log.
    balances: HashMap<(Account, Currency), i128>,
}

/// Loaded states and the balances computed for a decision, as the core's `StateView`.
struct LoadedView<'a> {
    states: &'a HashMap<StreamId, AggState>,
    balances: &'a HashMap<(Account, Currency), i128>,
}

impl engine::StateView for LoadedView<'_> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.states.get(stream)
    }

    fn account_balance(&self, account: &Account, currency: Currency) -> Option<i128> {
        self.balances.get(&(*account, currency)).copied()
    }
}

pub struct Executor {
    store: Arc<dyn EventStore>,
    ledger_id: String,
    config: ExecutorConfig,
    cache: Mutex<HashMap<StreamId, Cached>>,
}

impl Executor {
    pub fn new(
        store: Arc<dyn EventStore>,
        ledger_id: impl Into<String>,
        config: ExecutorConfig,
    ) -> Executor {
        Executor {
            store,
            ledger_id: ledger_id.into(),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn ledger_id(&self) -> &str {
        &self.ledger_id
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Executes one command. With an idempotency key, the outcome (acceptance or rejection) is recorded in
    /// the same transaction as the events; a repeat returns it and appends nothing, also under races.
    /// A time-dependent refusal (`is_transient`) is returned but not recorded: the key may succeed later.
    pub async fn execute(
        &self,
        env: &CommandEnvelope,
        key: Option<&str>,
    ) -> Result<CommandOutcome, ExecError> {
        Ok(self.run(env, key, None).await?.0)
    }

    /// Like `execute` with a key, and says whether the outcome is a replay: the key was recorded already
    /// (by an earlier run or a racing one), so this call appended nothing. The timers report such a
    /// deadline as a duplicate.
    pub async fn execute_reporting_replay(
        &self,
        env: &CommandEnvelope,
        key: &str,
    ) -> Result<(CommandOutcome, bool), ExecError> {
        self.run(env, Some(key), None).await
    }

    /// Like `execute`; `inbox(&outcome, replayed, events)` builds the delivery's row, written in the same transaction
    /// as the outcome (a replayed duplicate, which appends nothing, gets its own one-row transaction). The
    /// outcome handed to `inbox` has no positions yet (they are assigned after the commit). On an error
    /// nothing is recorded.
    pub async fn execute_with_inbox(
        &self,
        env: &CommandEnvelope,
        key: Option<&str>,
        inbox: InboxBuilder<'_>,
    ) -> Result<CommandOutcome, ExecError> {
        Ok(self.run(env, key, Some(inbox)).await?.0)
    }

    /// A delivery that runs no command (ignored, anomaly without a command).
    /// Recorded with its log entry (`DeliveryRecorded`), in one transaction.
    pub async fn record_inbox(&self, row: InboxRow) -> Result<(), ExecError> {
        let appends = vec![delivery_append(&row)];
        self.store
            .append_with_inbox(&self.ledger_id, appends, None, Some(row))
            .await?;
        Ok(())
    }

    /// The one path of a single command: load -> decide -> record the outcome in a transaction that checks
    /// the version of every stream the decision read -> on a mismatch forget, reload and decide again.
    async fn run(
        &self,
        env: &CommandEnvelope,
        key: Option<&str>,
        inbox: Option<InboxBuilder<'_>>,
    ) -> Result<(CommandOutcome, bool), ExecError> {
        // Text and jsonb cannot hold NUL: the key is stored (and looked up) escaped.
        let key = key.map(escape_nul);
        let key = key.as_deref();
        let request = key.map(|_| idempotency_request(env));
        if let (Some(key), Some(request)) = (key, &request)
            && let Some(record) = self.store.get_idempotency(&self.ledger_id, key).await?
        {
            return Ok((self.replayed(record, request, inbox).await?, true));
        }
        let mut last = String::new();
        for attempt in 1..=self.config.attempts_max {
            let none = Prefetched::new();
            let mut loaded = self
                .load(&engine::primary_streams(&env.command), &none)
                .await?;
            let decided = self.decide_loading(env, &mut loaded, &none).await?;
            let (outcome, mut appends) = match &decided {
                Err(rejection) => (rejected(env, rejection), Vec::new()),
                Ok(decision) => (
                    accepted_skeleton(env, decision, &loaded.versions),
                    build_appends(env, key, decision, &loaded.versions),
                ),
            };
            let transient = matches!(&decided, Err(r) if is_transient_refusal(env, r));
            let record = match (key, &request) {
                (Some(key), Some(request)) if !transient => Some(IdempotencyRecord {
                    key: key.to_string(),
                    request: request.clone(),
                    outcome: serde_json::to_value(&outcome).expect("outcomes serialize"),
                }),
                _ => None,
            };
            // A transient refusal ("not yet") records nothing, not even the delivery: the gateway delivers it
            // again, and a `rejected` row would be listed by `anomalies` for ever.
            let row = inbox.filter(|_| !transient).map(|build| {
                let events: Vec<ledger_core::Event> = decided
                    .as_ref()
                    .map(|d| d.all_changes().map(|c| c.event.clone()).collect())
                    .unwrap_or_default();
                build(&outcome, false, &events)
            });
            if appends.is_empty() && record.is_none() && row.is_none() {
                // Nothing to record (an unkeyed or transient refusal, a no-op): the answer is returned only
                // once it rests on fresh state, never on the cache alone.
                if loaded.from_cache.is_empty() {
                    return Ok((outcome, false));
                }
                self.forget(loaded.from_cache.iter());
                last = "decided on cached state".into();
                continue;
            }
            appends.extend(outcome_append(env, key, &outcome, record.is_some()));
            if let Some(row) = &row {
                back_delivery(&mut appends, row, key, &outcome);
            }
            appends.extend(read_checks(&loaded, decided.as_ref().ok()));
            let result = self
                .store
                .append_with_inbox(&self.ledger_id, appends, record, row)
                .await;
            match result {
                Ok(appended) => {
                    if let Ok(decision) = &decided {
                        self.remember(&loaded, decision);
                    }
                    return Ok((with_positions(outcome, &appended), false));
                }
                Err(
                    e @ (StoreError::ConcurrencyConflict { .. }
                    | StoreError::Serialization
                    | StoreError::Deadlock
                    | StoreError::PlacementChanged { .. }),
                ) => {
                    // A check failed: the cached states of this decision are suspect, all of them.
                    last = e.to_string();
                    self.forget(loaded.states.keys());
                    self.backoff(attempt).await;
                }
                Err(StoreError::DuplicateIdempotencyKey { key }) => {
                    // A racing duplicate won: return what it recorded.
                    let record = self.recorded(&key).await?;
                    let request = request.as_ref().expect("a key has a request");
                    return Ok((self.replayed(record, request, inbox).await?, true));
                }
                Err(StoreError::DuplicateEventId { .. }) => {
                    // Event ids derive from the command id: another request already used this command id
                    // (under another key, or none). Retrying cannot help; the caller chose a taken id.
                    return Err(ExecError::IdempotencyConflict {
                        key: format!("command_id {}", env.command_id),
                    });
                }
                Err(StoreError::CommitOutcomeUnknown { reason }) => {
                    self.forget(loaded.states.keys());
                    if self.landed(&outcome, key, env).await? {
                        return Ok((outcome, false)); // committed: accepted, positions to come
                    }
                    last = reason;
                    self.backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecError::Contention {
            attempts: self.config.attempts_max,
            last,
        })
    }

    /// Whether a transaction whose COMMIT failed on the way did commit: its first event is in its stream
    /// (by event id), or its idempotency key holds this command's outcome.
    async fn landed(
        &self,
        outcome: &CommandOutcome,
        key: Option<&str>,
        env: &CommandEnvelope,
    ) -> Result<bool, ExecError> {
        if let CommandOutcome::Accepted { events, .. } = outcome
            && let Some(first) = events.first()
        {
            return self.event_landed(first).await;
        }
        let Some(key) = key else { return Ok(false) };
        let Some(record) = self.store.get_idempotency(&self.ledger_id, key).await? else {
            return Ok(false);
        };
        let recorded: Option<CommandOutcome> = serde_json::from_value(record.outcome).ok();
        Ok(recorded.is_some_and(|o| o.command_id() == env.command_id))
    }

    async fn event_landed(&self, event: &AppendedEvent) -> Result<bool, ExecError> {
        let found = self
            .store
            .read_stream(
                &self.ledger_id,
                &event.stream_id,
                event.stream_version - 1,
                1,
            )
            .await?;
        Ok(found.first().is_some_and(|r| r.event_id == event.event_id))
    }

    async fn recorded(&self, key: &str) -> Result<IdempotencyRecord, ExecError> {
        self.store
            .get_idempotency(&self.ledger_id, key)
            .await?
            .ok_or_else(|| ExecError::CorruptRecord {
                key: key.to_string(),
                reason: "duplicate reported but not found".into(),
            })
    }

    /// A repeat of a recorded key: its outcome, and the delivery's own inbox row (one-row transaction).
    async fn replayed(
        &self,
        record: IdempotencyRecord,
        request: &serde_json::Value,
        inbox: Option<InboxBuilder<'_>>,
    ) -> Result<CommandOutcome, ExecError> {
        let key = record.key.clone();
        let outcome = self.replay(record, request).await?;
        if let Some(build) = inbox {
            let row = build(&outcome, true, &[]);
            if crate::outcome_log::is_replayed_duplicate(&row, &key, outcome.command_id()) {
                // Backed by the outcome it repeats (already in the chain): a duplicate appends no event.
                self.store
                    .append_with_inbox(&self.ledger_id, Vec::new(), None, Some(row))
                    .await?;
            } else {
                self.record_inbox(row).await?;
            }
        }
        Ok(outcome)
    }

    /// All or nothing: decides the commands in order, each against the states the previous ones produced,
    /// and appends all their events (and follow-ups) in ONE append, or nothing when any is refused
    /// (`Ok(Err((index, rejection)))`). Retries the whole set on a concurrency conflict.
    pub async fn execute_atomic(
        &self,
        envs: &[CommandEnvelope],
    ) -> Result<Result<Vec<CommandOutcome>, (usize, RejectionReport)>, ExecError> {
        let mut last = String::new();
        for attempt in 1..=self.config.attempts_max {
            let mut states: HashMap<StreamId, AggState> = HashMap::new();
            let mut balances: HashMap<(Account, Currency), i128> = HashMap::new();
            let mut base_versions: HashMap<StreamId, i64> = HashMap::new();
            let mut all = Vec::with_capacity(envs.len());
            for (index, env) in envs.iter().enumerate() {
                let mut rounds = 0;
                let decision = loop {
                    let view = LoadedView {
                        states: &states,
                        balances: &balances,
                    };
                    let decided = engine::decide_all(env, &view).map(|(decision, _)| decision);
                    match decided {
                        Ok(decision) => break decision,
                        Err(DecideError::Rejected(r)) => return Ok(Err((index, r.to_report()))),
                        Err(DecideError::NeedBalance { account, currency }) => {
                            // The log's balance plus what the earlier commands of this set post to it.
                            let earlier: i128 = all
                                .iter()
                                .flat_map(|(_, d): &(&CommandEnvelope, engine::Decision)| {
                                    d.all_changes()
                                        .filter_map(|c| c.event.entry())
                                        .collect::<Vec<_>>()
                                })
                                .filter(|e| e.currency() == currency)
                                .map(|e| i128::from(e.effect_on(&account)))
                                .sum();
                            let balance = self.account_balance(&account, currency).await? + earlier;
                            balances.insert((account, currency), balance);
                        }
                        Err(DecideError::NeedStream(stream)) => {
                            rounds += 1;
                            if rounds > LOAD_ROUNDS_MAX {
                                return Err(ExecError::TooManyStreams {
                                    command_id: env.command_id,
                                });
                            }
                            let (state, version) = self.load_stream_state(&stream).await?;
                            states.insert(stream, state);
                            base_versions.insert(stream, version);
                        }
                    }
                };
                // Later commands see this one's effects.
                for change in decision.all_changes() {
                    let state = states
                        .remove(&change.stream)
                        .unwrap_or_else(|| AggState::initial(&change.stream));
                    states.insert(change.stream, engine::evolve(state, &change.event));
                }
                all.push((env, decision));
            }
            let mut order: Vec<StreamId> = Vec::new();
            let mut by_stream: HashMap<StreamId, Vec<NewEvent>> = HashMap::new();
            for (env, decision) in &all {
                let carrier = command_carrier(decision);
                for change in decision.all_changes() {
                    if !by_stream.contains_key(&change.stream) {
                        order.push(change.stream);
                    }
                    by_stream.entry(change.stream).or_default().push(new_event(
                        env,
                        None,
                        change,
                        None,
                        carrier == Some(change.event_id),
                    ));
                }
            }
            let mut appends: Vec<StreamAppend> = order
                .iter()
                .map(|stream| StreamAppend {
                    stream_id: stream.to_string(),
                    expected: expected(base_versions.get(stream).copied().unwrap_or(0)),
                    events: by_stream.remove(stream).unwrap_or_default(),
                })
                .collect();
            if appends.is_empty() {
                return Ok(Ok(all
                    .iter()
                    .map(|(env, d)| accepted_skeleton(env, d, &base_versions))
                    .collect()));
            }
            // Streams only read are checked in the same transaction, like `execute` does.
            let written: HashSet<&StreamId> = order.iter().collect();
            appends.extend(
                base_versions
                    .iter()
                    .filter(|(stream, _)| !written.contains(stream))
                    .map(|(stream, version)| StreamAppend {
                        stream_id: stream.to_string(),
                        expected: expected(*version),
                        events: Vec::new(),
                    }),
            );
            match self.store.append(&self.ledger_id, appends, None).await {
                Ok(appended) => {
                    self.forget(base_versions.keys());
                    let mut versions = base_versions.clone();
                    let outcomes = all
                        .iter()
                        .map(|(env, d)| {
                            let skeleton = accepted_skeleton(env, d, &versions);
                            for change in d.all_changes() {
                                *versions.entry(change.stream).or_insert(0) += 1;
                            }
                            with_positions(skeleton, &appended)
                        })
                        .collect();
                    return Ok(Ok(outcomes));
                }
                Err(
                    e @ (StoreError::ConcurrencyConflict { .. }
                    | StoreError::Serialization
                    | StoreError::Deadlock
                    | StoreError::PlacementChanged { .. }),
                ) => {
                    last = e.to_string();
                    self.backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecError::Contention {
            attempts: self.config.attempts_max,
            last,
        })
    }

    /// Group commit of commands alone (see `execute_items`).
    pub async fn execute_batch(
        &self,
        items: Vec<(CommandEnvelope, Option<String>)>,
    ) -> Vec<Result<CommandOutcome, ExecError>> {
        let items = items
            .into_iter()
            .map(|(env, key)| BatchItem::Command {
                env,
                key,
                inbox: None,
            })
            .collect();
        self.execute_items(items)
            .await
            .into_iter()
            .map(|answer| answer.map(BatchAnswer::into_outcome))
            .collect()
    }

    /// Group commit: every item's outcome in ONE transaction where it can be. Keys are looked up for the
    /// whole batch in one query; a key recorded before is replayed (its delivery's row joins the batch); an
    /// exact duplicate of an earlier item of the batch follows that item (same outcome, its row commits with
    /// the original's request), never decided twice; every other command is decided against the cached states
    /// and, when its streams do not overlap an earlier request's writes, joins the batch with its events,
    /// idempotency record, inbox row and version checks. The rest (overlaps, failed checks, answers that
    /// would rest on the cache alone) runs one by one through the single-command path after the batch, and
    /// so does every item of a failed request: a failed item never fails its neighbours. Results come back
    /// in input order. A command whose events committed is never run again: when the outcome of the batch's
    /// COMMIT is unknown, each item is looked up (first event by id) before anything is re-run.
    pub async fn execute_items(
        &self,
        items: Vec<BatchItem>,
    ) -> Vec<Result<BatchAnswer, ExecError>> {
        let started = std::time::Instant::now();
        let items: Vec<BatchItem> = items.into_iter().map(BatchItem::escaped).collect();
        let mut results: Vec<Option<Result<BatchAnswer, ExecError>>> =
            (0..items.len()).map(|_| None).collect();
        // `None`: the lookup failed, so every keyed item takes the single-command path (its own lookup).
        let recorded = self.recorded_keys(&items).await;
        let prefetched = self.prefetch(&items, recorded.as_ref()).await;
        let mut plan = BatchBuilder::default();
        let mut replays: Vec<(usize, CommandOutcome)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let (env, key, inbox) = match item {
                BatchItem::Record(row) => {
                    plan.push(
                        BatchRequest {
                            appends: vec![delivery_append(row)],
                            idempotency: None,
                            inbox: vec![row.clone()],
                        },
                        Slot::Recorded { index },
                    );
                    continue;
                }
                BatchItem::Command { env, key, inbox } => (env, key.as_deref(), inbox.as_deref()),
            };
            if let Some(key) = key {
                let Some(recorded) = &recorded else { continue };
                let request = idempotency_request(env);
                if let Some(record) = recorded.get(key) {
                    match replay_record(record.clone(), &request) {
                        Err(e) => results[index] = Some(Err(e)),
                        Ok(outcome) => match inbox {
                            None => replays.push((index, outcome)),
                            Some(build) => {
                                let row = build(&outcome, true, &[]);
                                plan.push(
                                    replayed_delivery(row, key, &outcome),
                                    Slot::Replayed { index, outcome },
                                );
                            }
                        },
                    }
                    continue;
                }
                if plan.follow(key, &request, index, inbox) || plan.deferred.contains(key) {
                    continue; // an exact duplicate in this batch, or one that waits for the slow path
                }
                match self
                    .plan_batch_item(env, Some(key), inbox, &mut plan.taken, &prefetched)
                    .await
                {
                    BatchPlan::Done(result) => results[index] = Some(result.map(executed)),
                    BatchPlan::SlowPath => {
                        plan.deferred.insert(key.to_string());
                    }
                    BatchPlan::Request(planned) => {
                        plan.push_command(index, Some((key.to_string(), request)), *planned)
                    }
                }
            } else {
                match self
                    .plan_batch_item(env, None, inbox, &mut plan.taken, &prefetched)
                    .await
                {
                    BatchPlan::Done(result) => results[index] = Some(result.map(executed)),
                    BatchPlan::SlowPath => {}
                    BatchPlan::Request(planned) => plan.push_command(index, None, *planned),
                }
            }
        }
        tracing::debug!(
            requests = plan.requests.len(),
            decide_ms = started.elapsed().as_millis() as u64,
            "batch decided"
        );
        if !plan.requests.is_empty() {
            self.commit_batch(plan, &items, &mut results).await;
        }
        self.answer_replays(replays, &mut results).await;
        let mut out = Vec::with_capacity(items.len());
        for (item, slot) in items.iter().zip(results) {
            out.push(match slot {
                Some(result) => result,
                None => self.run_alone(item).await,
            });
        }
        out
    }

    /// The streams a batch's commands will read that the cache does not hold, loaded together: each command
    /// is decided (purely) against the cache and what is loaded so far, every stream some decision asks for
    /// is read in one query per round, and the rounds stop when no decision asks for more. Without it, each
    /// command of the batch loaded its missing streams one by one (a new buyer's wallet: two queries), and
    /// deciding the batch cost more round trips than committing it. Best effort: a stream it could not load
    /// is loaded by the command itself.
    async fn prefetch(
        &self,
        items: &[BatchItem],
        recorded: Option<&HashMap<String, IdempotencyRecord>>,
    ) -> Prefetched {
        let mut prefetched = Prefetched::new();
        let commands: Vec<&CommandEnvelope> = items
            .iter()
            .filter_map(|item| match item {
                // A key recorded before is replayed, not decided.
                BatchItem::Command { env, key, .. } => match (key, recorded) {
                    (Some(key), Some(recorded)) if recorded.contains_key(key) => None,
                    _ => Some(env),
                },
                BatchItem::Record(_) => None,
            })
            .collect();
        for _round in 0..LOAD_ROUNDS_MAX {
            let wanted = self.streams_wanted(&commands, &prefetched);
            if wanted.is_empty() {
                break;
            }
            match self.load_many_from_store(&wanted).await {
                Ok(loaded) if !loaded.is_empty() => prefetched.extend(loaded),
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "could not prefetch a batch's streams");
                    break;
                }
            }
        }
        prefetched
    }

    /// Streams some command of `commands` needs that neither the cache nor `prefetched` holds (pure).
    fn streams_wanted(
        &self,
        commands: &[&CommandEnvelope],
        prefetched: &Prefetched,
    ) -> Vec<StreamId> {
        let cache = self.cache.lock().expect("cache lock");
        let known =
            |stream: &StreamId| cache.contains_key(stream) || prefetched.contains_key(stream);
        let mut wanted: Vec<StreamId> = Vec::new();
        let mut asked: HashSet<StreamId> = HashSet::new();
        for env in commands {
            let primary = engine::primary_streams(&env.command);
            let missing: Vec<StreamId> = primary.iter().filter(|s| !known(s)).copied().collect();
            let next = if missing.is_empty() {
                let view = PrefetchView {
                    cache: &cache,
                    prefetched,
                };
                match engine::decide_all(env, &view) {
                    Err(DecideError::NeedStream(stream)) if !known(&stream) => vec![stream],
                    _ => Vec::new(),
                }
            } else {
                missing
            };
            for stream in next {
                if asked.insert(stream) {
                    wanted.push(stream);
                }
            }
        }
        wanted
    }

    /// Fresh states of streams that have no snapshot worth reading (fewer than `SNAPSHOT_EVERY_EVENTS`
    /// events: `load_from_store` would fold them from their first event too), in one read per chunk. A
    /// stream that is longer, or a chunk whose read was cut at the limit, is left out (loaded alone later).
    async fn load_many_from_store(&self, streams: &[StreamId]) -> Result<Prefetched, ExecError> {
        let mut loaded = Prefetched::new();
        for chunk in streams.chunks(PREFETCH_STREAMS_PER_READ) {
            let ids: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
            let events = self
                .store
                .read_streams(&self.ledger_id, &ids, READ_LIMIT_MAX)
                .await?;
            if events.len() as i64 >= READ_LIMIT_MAX {
                continue;
            }
            let mut by_stream: HashMap<&str, Vec<&crate::types::RecordedEvent>> = HashMap::new();
            for event in &events {
                by_stream.entry(&event.stream_id).or_default().push(event);
            }
            for (stream, id) in chunk.iter().zip(&ids) {
                let recorded = by_stream.remove(id.as_str()).unwrap_or_default();
                if recorded.len() as i64 >= SNAPSHOT_EVERY_EVENTS {
                    continue;
                }
                let (state, version) =
                    fold_recorded(stream, (AggState::initial(stream), 0), recorded)?;
                loaded.insert(*stream, Cached { state, version });
            }
        }
        Ok(loaded)
    }

    /// The records of every key of a batch, in one query (`None` when the query failed).
    async fn recorded_keys(
        &self,
        items: &[BatchItem],
    ) -> Option<HashMap<String, IdempotencyRecord>> {
        let keys: Vec<String> = items
            .iter()
            .filter_map(|item| match item {
                BatchItem::Command { key, .. } => key.clone(),
                BatchItem::Record(_) => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if keys.is_empty() {
            return Some(HashMap::new());
        }
        match self
            .store
            .get_idempotency_many(&self.ledger_id, &keys)
            .await
        {
            Ok(records) => Some(records.into_iter().map(|r| (r.key.clone(), r)).collect()),
            Err(error) => {
                tracing::warn!(%error, "batch key lookup failed; its keyed items run one by one");
                None
            }
        }
    }

    /// Replayed outcomes without a delivery to record: their positions, looked up for all at once.
    async fn answer_replays(
        &self,
        replays: Vec<(usize, CommandOutcome)>,
        results: &mut [Option<Result<BatchAnswer, ExecError>>],
    ) {
        if replays.is_empty() {
            return;
        }
        let (indexes, outcomes): (Vec<usize>, Vec<CommandOutcome>) = replays.into_iter().unzip();
        match self.fill_positions_many(outcomes).await {
            Ok(filled) => {
                for (index, outcome) in indexes.into_iter().zip(filled) {
                    results[index] = Some(Ok(BatchAnswer::Executed {
                        outcome,
                        replayed: true,
                    }));
                }
            }
            // Left to the single-command path, which replays each with its own lookups.
            Err(error) => tracing::warn!(%error, "could not position replayed outcomes"),
        }
    }

    /// The single-command path for an item the batch did not answer.
    async fn run_alone(&self, item: &BatchItem) -> Result<BatchAnswer, ExecError> {
        match item {
            BatchItem::Command { env, key, inbox } => {
                let (outcome, replayed) = self.run(env, key.as_deref(), inbox.as_deref()).await?;
                Ok(BatchAnswer::Executed { outcome, replayed })
            }
            BatchItem::Record(row) => {
                self.record_inbox(row.clone()).await?;
                Ok(BatchAnswer::Recorded)
            }
        }
    }

    /// Decides one command of a group commit: answered now, left to the slow path, or a request of the batch
    /// (its key was looked up with the batch's).
    async fn plan_batch_item(
        &self,
        env: &CommandEnvelope,
        key: Option<&str>,
        inbox: Option<InboxBuilder<'_>>,
        taken: &mut HashSet<StreamId>,
        prefetched: &Prefetched,
    ) -> BatchPlan {
        let streams = engine::primary_streams(&env.command);
        let mut loaded = match self.load(&streams, prefetched).await {
            Ok(l) => l,
            Err(e) => return BatchPlan::Done(Err(e)),
        };
        let decided = match self.decide_loading(env, &mut loaded, prefetched).await {
            Ok(decided) => decided,
            Err(e) => return BatchPlan::Done(Err(e)),
        };
        // A command that read a stream an earlier command of this batch writes was decided on a state
        // that is about to change: it takes the slow path after the batch, accepted or not. `taken` holds
        // only written streams: commands that merely read the same stream (the fee policy, the periods
        // every money-moving decision reads) stay in the batch, each with its own version check of it.
        let read: Vec<StreamId> = loaded.states.keys().copied().collect();
        if read.iter().any(|stream| taken.contains(stream)) {
            return BatchPlan::SlowPath;
        }
        let transient = matches!(&decided, Err(r) if is_transient_refusal(env, r));
        let checks = read_checks(&loaded, decided.as_ref().ok());
        let events: Vec<ledger_core::Event> = match (&decided, inbox) {
            (Ok(decision), Some(_)) => decision.all_changes().map(|c| c.event.clone()).collect(),
            _ => Vec::new(),
        };
        let (outcome, mut appends, remember) = match decided {
            Err(rejection) => (rejected(env, &rejection), Vec::new(), None),
            Ok(decision) => {
                let appends = build_appends(env, key, &decision, &loaded.versions);
                let skeleton = accepted_skeleton(env, &decision, &loaded.versions);
                (skeleton, appends, Some((loaded, decision)))
            }
        };
        // A keyed outcome, acceptance or rejection, is recorded in the same transaction as its events; so is
        // the delivery's row (not for a transient refusal: the gateway delivers it again).
        let record = match key {
            Some(key) if !transient => Some(IdempotencyRecord {
                key: key.to_string(),
                request: idempotency_request(env),
                outcome: serde_json::to_value(&outcome).expect("outcomes serialize"),
            }),
            _ => None,
        };
        let row = inbox
            .filter(|_| !transient)
            .map(|build| build(&outcome, false, &events));
        if appends.is_empty() && record.is_none() && row.is_none() {
            // Nothing to record: `execute` answers it on fresh state (the cache alone is not enough).
            return BatchPlan::SlowPath;
        }
        if let Some((_, decision)) = &remember {
            taken.extend(decision.all_changes().map(|c| c.stream));
        }
        appends.extend(outcome_append(env, key, &outcome, record.is_some()));
        if let Some(row) = &row {
            back_delivery(&mut appends, row, key, &outcome);
        }
        appends.extend(checks);
        let request = BatchRequest {
            appends,
            idempotency: record,
            inbox: row.into_iter().collect(),
        };
        BatchPlan::Request(Box::new((request, read, remember, outcome)))
    }

    /// Appends a group commit's requests and fills their results; failed items stay `None` (slow path).
    async fn commit_batch(
        &self,
        plan: BatchBuilder,
        items: &[BatchItem],
        results: &mut [Option<Result<BatchAnswer, ExecError>>],
    ) {
        let BatchBuilder {
            requests, slots, ..
        } = plan;
        match self.store.append_batch(&self.ledger_id, requests).await {
            Ok(appended) => {
                for (slot, appended) in slots.into_iter().zip(appended) {
                    match (slot, appended) {
                        (
                            Slot::Command {
                                index,
                                remember,
                                outcome,
                                followers,
                                ..
                            },
                            Ok(appended),
                        ) => {
                            if let Some(remembered) = &remember {
                                let (loaded, decision) = &**remembered;
                                self.remember(loaded, decision);
                            }
                            let outcome = with_positions(outcome, &appended);
                            for follower in followers {
                                results[follower] = Some(Ok(BatchAnswer::Executed {
                                    outcome: outcome.clone(),
                                    replayed: true,
                                }));
                            }
                            results[index] = Some(Ok(executed(outcome)));
                        }
                        (Slot::Replayed { index, outcome }, Ok(_)) => {
                            results[index] = Some(Ok(BatchAnswer::Executed {
                                outcome,
                                replayed: true,
                            }));
                        }
                        (Slot::Recorded { index }, Ok(_)) => {
                            results[index] = Some(Ok(BatchAnswer::Recorded));
                        }
                        // A check failed (or a racing duplicate won): the slow path decides it again on
                        // fresh state (or replays the duplicate's outcome), and so its followers.
                        (Slot::Command { read, .. }, Err(_)) => self.forget(read.iter()),
                        (Slot::Replayed { .. } | Slot::Recorded { .. }, Err(_)) => {}
                    }
                }
            }
            Err(error) => {
                let unknown = matches!(error, StoreError::CommitOutcomeUnknown { .. });
                for slot in slots {
                    // Failed before COMMIT: nothing applied, the slow path runs it. COMMIT itself failed:
                    // an item that landed is accepted as it was decided, never decided again.
                    match slot {
                        Slot::Command {
                            index,
                            read,
                            outcome,
                            followers,
                            ..
                        } => {
                            self.forget(read.iter());
                            if !unknown {
                                continue;
                            }
                            let BatchItem::Command { env, key, .. } = &items[index] else {
                                continue;
                            };
                            match self.landed(&outcome, key.as_deref(), env).await {
                                Ok(true) => {
                                    for follower in followers {
                                        results[follower] = Some(Ok(BatchAnswer::Executed {
                                            outcome: outcome.clone(),
                                            replayed: true,
                                        }));
                                    }
                                    results[index] = Some(Ok(executed(outcome)));
                                }
                                Ok(false) => {}
                                Err(e) => results[index] = Some(Err(e)),
                            }
                        }
                        // A delivery row alone has no money effect: when it is unknown whether it landed,
                        // the caller answers "unavailable" and the gateway delivers again (one more row).
                        Slot::Replayed { index, .. } | Slot::Recorded { index } if unknown => {
                            results[index] =
                                Some(Err(ExecError::Store(StoreError::CommitOutcomeUnknown {
                                    reason: error.to_string(),
                                })));
                        }
                        Slot::Replayed { .. } | Slot::Recorded { .. } => {}
                    }
                }
            }
        }
    }

    /// A stream's current state and version for read-only use (planning what to do with a callback): from
    /// the cache when it has it, else loaded and cached. Decisions never rest on it alone: every append is
    /// checked against the stream's version. A stream that does not exist yet is never served from the cache
    /// (another process may have created it since), so "unknown" is always a fresh answer.
    pub async fn current_state(&self, stream: &StreamId) -> Result<(AggState, i64), ExecError> {
        let cached = self.cache.lock().expect("cache lock").get(stream).cloned();
        if let Some(c) = cached.filter(|c| c.version > 0) {
            return Ok((c.state, c.version));
        }
        let loaded = self.load_from_store(stream).await?;
        if loaded.version == 0 {
            return Ok((loaded.state, 0));
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= self.config.cache_streams_max {
            cache.clear();
        }
        cache_forward(&mut cache, *stream, loaded.clone());
        Ok((loaded.state, loaded.version))
    }

    async fn decide_loading(
        &self,
        env: &CommandEnvelope,
        loaded: &mut Loaded,
        prefetched: &Prefetched,
    ) -> Result<Result<engine::Decision, Rejection>, ExecError> {
        for _round in 0..LOAD_ROUNDS_MAX {
            // Drop the overlay (it borrows the states) before any await.
            let view = LoadedView {
                states: &loaded.states,
                balances: &loaded.balances,
            };
            let decided = engine::decide_all(env, &view).map(|(decision, _)| decision);
            match decided {
                Ok(decision) => return Ok(Ok(decision)),
                Err(DecideError::Rejected(r)) => return Ok(Err(r)),
                Err(DecideError::NeedBalance { account, currency }) => {
                    let balance = self.account_balance(&account, currency).await?;
                    loaded.balances.insert((account, currency), balance);
                }
                Err(DecideError::NeedStream(stream)) => {
                    let more = self.load(&[stream], prefetched).await?;
                    loaded.states.extend(more.states);
                    loaded.versions.extend(more.versions);
                    loaded.from_cache.extend(more.from_cache);
                }
            }
        }
        Err(ExecError::TooManyStreams {
            command_id: env.command_id,
        })
    }

    /// Loads streams from the cache, else from what a group commit loaded for its batch (`prefetched`:
    /// fresh), else from the latest snapshot plus the tail of the stream.
    async fn load(
        &self,
        streams: &[StreamId],
        prefetched: &Prefetched,
    ) -> Result<Loaded, ExecError> {
        let mut loaded = Loaded::default();
        for stream in streams {
            let cached = self.cache.lock().expect("cache lock").get(stream).cloned();
            let Cached { state, version } = match (cached, prefetched.get(stream)) {
                (Some(c), _) => {
                    loaded.from_cache.insert(*stream);
                    c
                }
                (None, Some(fresh)) => fresh.clone(),
                (None, None) => self.load_from_store(stream).await?,
            };
            loaded.states.insert(*stream, state);
            loaded.versions.insert(*stream, version);
        }
        Ok(loaded)
    }

    /// An account's balance (normal side, minor units) in one currency over the whole log. Only settlements
    /// ask (for a gateway's clearing account, which belongs to no stream). The store sums it when it can
    /// (PostgreSQL: one SQL pass over the entries' postings, every committed event, about 0.2 s per 200,000
    /// events); otherwise every sequenced event is replayed here in bounded batches.
    async fn account_balance(
        &self,
        account: &Account,
        currency: Currency,
    ) -> Result<i128, ExecError> {
        if let Some(balance) = self.summed_balance(account, currency).await? {
            return Ok(balance);
        }
        let mut balance = 0_i128;
        let mut after = 0_i64;
        loop {
            let batch = self
                .store
                .read_log(&self.ledger_id, after, READ_LIMIT_MAX)
                .await?;
            for recorded in &batch {
                after = recorded.position.unwrap_or(after).max(after);
                if recorded.payload.get("entry").is_none_or(|e| e.is_null()) {
                    continue;
                }
                let stream: StreamId = recorded.stream_id.parse().map_err(|_| {
                    ExecError::Decode(EventDecodeError::Payload {
                        stream: recorded.stream_id.clone(),
                        event_type: recorded.event_type.clone(),
                        version: recorded.schema_version,
                        message: "not a stream id".into(),
                    })
                })?;
                let event = ledger_core::Event::from_stored(
                    &stream,
                    &recorded.event_type,
                    recorded.schema_version,
                    recorded.payload.clone(),
                )?;
                if let Some(entry) = event.entry().filter(|e| e.currency() == currency) {
                    balance += i128::from(entry.effect_on(account));
                }
            }
            if (batch.len() as i64) < READ_LIMIT_MAX {
                return Ok(balance);
            }
        }
    }

    /// Snapshot (if one exists for this fold version) plus the events after it, in bounded batches.
    pub async fn load_stream_state(&self, stream: &StreamId) -> Result<(AggState, i64), ExecError> {
        let c = self.load_from_store(stream).await?;
        Ok((c.state, c.version))
    }

    async fn load_from_store(&self, stream: &StreamId) -> Result<Cached, ExecError> {
        let stream_id = stream.to_string();
        let snapshot = self
            .store
            .load_snapshot(&self.ledger_id, &stream_id, FOLD_VERSION)
            .await?;
        // The executor takes a snapshot only once a stream has SNAPSHOT_EVERY_EVENTS events: one of a shorter
        // stream (the closed periods, the fee policy, most payments) was not taken by it, and is ignored.
        let snapshot = snapshot.filter(|s| s.stream_version >= SNAPSHOT_EVERY_EVENTS);
        let (state, version) = match snapshot.and_then(|s| {
            serde_json::from_value(s.state)
                .ok()
                .map(|st| (st, s.stream_version))
        }) {
            Some((state, version)) => (state, version),
            None => (AggState::initial(stream), 0),
        };
        let mut snapshot_version = version;
        let (mut state, mut version) = self.fold_tail(stream, state, version).await?;
        // A snapshot is written by the writer role, which chooses its content: a wallet it says holds more
        // than its accounts is ignored and the stream replayed from its first event (and snapshotted again).
        if snapshot_version > 0 && !self.agrees_with_journal(stream, &state).await? {
            tracing::warn!(stream = %stream_id, snapshot_version,
                "ignoring a stream snapshot that disagrees with the journal; replaying the stream");
            (state, version) = self.fold_tail(stream, AggState::initial(stream), 0).await?;
            snapshot_version = 0;
        }
        if version - snapshot_version >= SNAPSHOT_EVERY_EVENTS {
            let snapshot = Snapshot {
                stream_id,
                stream_version: version,
                fold_version: FOLD_VERSION,
                state: serde_json::to_value(&state).expect("states serialize"),
                taken_at: chrono::Utc::now(),
            };
            // A snapshot is only a cache: failing to write one must not fail the command.
            if let Err(e) = self.store.save_snapshot(&self.ledger_id, &snapshot).await {
                tracing::warn!(error = %e, "could not save a snapshot");
            }
        }
        Ok(Cached { state, version })
    }

    /// `state` at `version` with the stream's later events folded in, in bounded batches.
    async fn fold_tail(
        &self,
        stream: &StreamId,
        mut state: AggState,
        mut version: i64,
    ) -> Result<(AggState, i64), ExecError> {
        let stream_id = stream.to_string();
        loop {
            let batch = self
                .store
                .read_stream(&self.ledger_id, &stream_id, version, READ_LIMIT_MAX)
                .await?;
            (state, version) = fold_recorded(stream, (state, version), &batch)?;
            if (batch.len() as i64) < READ_LIMIT_MAX {
                return Ok((state, version));
            }
        }
    }

    /// Whether a state folded from a snapshot agrees with the journal where the journal says what it must
    /// be: a wallet's available and pending funds are its two accounts, a project milestone's held escrow is
    /// its escrow account (each summed by the database). Other streams are not checked here (`verify`
    /// recomputes every snapshot). A store that cannot sum an account (in memory: nobody else writes its
    /// snapshots) is not asked. A concurrent append between the two reads can make them differ: the stream
    /// is then replayed, which is only slower.
    async fn agrees_with_journal(
        &self,
        stream: &StreamId,
        state: &AggState,
    ) -> Result<bool, ExecError> {
        let expected: Vec<(Account, Currency, i64)> = match (stream, state) {
            (StreamId::Wallet { user, currency }, AggState::Wallet(w)) => vec![
                (
                    Account::UserAvailable { user: *user },
                    *currency,
                    w.available_minor,
                ),
                (
                    Account::UserPending { user: *user },
                    *currency,
                    w.pending_minor,
                ),
            ],
            (StreamId::Project(project), AggState::Project(p)) => match p.currency {
                Some(currency) => p
                    .milestones
                    .iter()
                    .zip(1..)
                    .map(|(m, milestone)| {
                        let escrow = Account::Escrow {
                            project: *project,
                            milestone,
                        };
                        (escrow, currency, m.held_minor())
                    })
                    .collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        for (account, currency, held) in expected {
            let summed = self.summed_balance(&account, currency).await?;
            if summed.is_some_and(|balance| balance != i128::from(held)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// An account's balance on its normal side as the store sums it (`None`: the store cannot sum).
    async fn summed_balance(
        &self,
        account: &Account,
        currency: Currency,
    ) -> Result<Option<i128>, ExecError> {
        let summed = self
            .store
            .account_debits_minus_credits(
                &self.ledger_id,
                &account.to_string(),
                currency.code(),
                currency.exponent(),
            )
            .await?;
        Ok(
            summed.map(|debits_minus_credits| match account.normal_side() {
                ledger_core::Side::Debit => debits_minus_credits,
                ledger_core::Side::Credit => -debits_minus_credits,
            }),
        )
    }

    fn remember(&self, loaded: &Loaded, decision: &engine::Decision) {
        let mut overlay = engine::Overlay::new(&loaded.states);
        let mut versions = loaded.versions.clone();
        for change in decision.all_changes() {
            overlay.apply(change);
            *versions.entry(change.stream).or_insert(0) += 1;
        }
        let changed = overlay.into_changed();
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() + changed.len() > self.config.cache_streams_max {
            cache.clear(); // crude but bounded; the store is the source of truth
        }
        // Streams the decision only read are kept at the version it read them (the periods and the fee
        // policy every money-moving decision reads, written almost never): a later write by another writer
        // fails the read check at append, which drops them, and the command is decided again.
        // (A stream that did not exist is kept as such too: its read check is "no stream yet".)
        for (stream, state) in &loaded.states {
            let version = loaded.versions.get(stream).copied().unwrap_or(0);
            if !changed.contains_key(stream) {
                let cached = Cached {
                    state: state.clone(),
                    version,
                };
                cache_forward(&mut cache, *stream, cached);
            }
        }
        for (stream, state) in changed {
            let version = versions[&stream];
            cache_forward(&mut cache, stream, Cached { state, version });
        }
    }

    /// Whether the executor holds `stream` in its cache (for tests and diagnostics).
    pub fn is_cached(&self, stream: &StreamId) -> bool {
        self.cache.lock().expect("cache lock").contains_key(stream)
    }

    fn forget<'a>(&self, streams: impl IntoIterator<Item = &'a StreamId>) {
        let mut cache = self.cache.lock().expect("cache lock");
        for stream in streams {
            cache.remove(stream);
        }
    }

    async fn backoff(&self, attempt: u32) {
        let ceiling =
            (self.config.backoff_base_ms << attempt.min(16)).min(self.config.backoff_max_ms);
        let ms = rand::rng().random_range(0..=ceiling);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The recorded outcome of an idempotency key, if the request is the same (compared as parsed JSON).
    async fn replay(
        &self,
        record: IdempotencyRecord,
        request: &serde_json::Value,
    ) -> Result<CommandOutcome, ExecError> {
        let outcome = replay_record(record, request)?;
        self.fill_positions(outcome).await
    }

    /// `fill_positions` for many outcomes: one sequencer call and one lookup for all of their events.
    async fn fill_positions_many(
        &self,
        mut outcomes: Vec<CommandOutcome>,
    ) -> Result<Vec<CommandOutcome>, ExecError> {
        let events: Vec<AppendedEvent> = outcomes
            .iter()
            .flat_map(|o| match o {
                CommandOutcome::Accepted { events, .. } => events.clone(),
                CommandOutcome::Rejected { .. } => Vec::new(),
            })
            .collect();
        if events.is_empty() {
            return Ok(outcomes);
        }
        if let Err(error) = self.store.sequence_pending(&self.ledger_id).await {
            tracing::warn!(%error, "could not sequence before replaying outcomes");
        }
        let mut found = Vec::with_capacity(events.len());
        for chunk in events.chunks(READ_LIMIT_MAX as usize) {
            found.extend(self.store.positions_of(&self.ledger_id, chunk).await?);
        }
        let mut found = found.into_iter();
        for outcome in &mut outcomes {
            let CommandOutcome::Accepted {
                command_id, events, ..
            } = outcome
            else {
                continue;
            };
            for event in events {
                event.position =
                    found
                        .next()
                        .flatten()
                        .ok_or_else(|| ExecError::CorruptRecord {
                            key: command_id.to_string(),
                            reason: format!(
                                "recorded event {} is not in its stream",
                                event.event_id
                            ),
                        })?;
            }
        }
        Ok(outcomes)
    }

    /// Positions are assigned after commit, so a recorded outcome carries none: look them up.
    async fn fill_positions(&self, outcome: CommandOutcome) -> Result<CommandOutcome, ExecError> {
        let mut filled = self.fill_positions_many(vec![outcome]).await?;
        Ok(filled.pop().expect("one outcome in, one out"))
    }
}

/// A stream's state and version with its stored `events` (in version order) folded in.
fn fold_recorded<'a>(
    stream: &StreamId,
    (mut state, mut version): (AggState, i64),
    events: impl IntoIterator<Item = &'a crate::types::RecordedEvent>,
) -> Result<(AggState, i64), ExecError> {
    for recorded in events {
        let event = ledger_core::Event::from_stored(
            stream,
            &recorded.event_type,
            recorded.schema_version,
            recorded.payload.clone(),
        )?;
        state = engine::evolve(state, &event);
        version = recorded.stream_version;
    }
    Ok((state, version))
}

/// Caches only move forward: a state older than the one cached (a slow load racing a newer append) never
/// replaces it.
fn cache_forward(cache: &mut HashMap<StreamId, Cached>, stream: StreamId, entry: Cached) {
    match cache.get(&stream) {
        Some(current) if current.version >= entry.version => {}
        _ => {
            cache.insert(stream, entry);
        }
    }
}

/// What an idempotency key is compared on: who asked for what (not the command id or the time, which a
/// client's retry may legitimately change).
fn idempotency_request(env: &CommandEnvelope) -> serde_json::Value {
    serde_json::json!({ "actor": env.actor, "command": env.command })
}

fn rejected(env: &CommandEnvelope, rejection: &Rejection) -> CommandOutcome {
    CommandOutcome::Rejected {
        command_id: env.command_id,
        rejection: rejection.to_report(),
    }
}

/// The accepted outcome before positions are known (what the idempotency record keeps).
fn accepted_skeleton(
    env: &CommandEnvelope,
    decision: &engine::Decision,
    versions: &HashMap<StreamId, i64>,
) -> CommandOutcome {
    let mut next = versions.clone();
    let events = decision
        .all_changes()
        .map(|c| {
            let version = next.entry(c.stream).or_insert(0);
            *version += 1;
            AppendedEvent {
                event_id: c.event_id,
                stream_id: c.stream.to_string(),
                stream_version: *version,
                position: 0,
            }
        })
        .collect();
    let follow_ups = decision
        .follow_ups
        .iter()
        .map(|(f, r)| FollowUpOutcome {
            command_id: f.command_id,
            command: command_type(&f.command),
            rejection: r.as_ref().err().map(Rejection::to_report),
        })
        .collect();
    CommandOutcome::Accepted {
        command_id: env.command_id,
        events,
        follow_ups,
    }
}

fn command_type(command: &ledger_core::Command) -> String {
    serde_json::to_value(command)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// Fills stream versions and positions from the append's answer (same order as the changes).
fn with_positions(outcome: CommandOutcome, appended: &AppendOutcome) -> CommandOutcome {
    let CommandOutcome::Accepted {
        command_id,
        events,
        follow_ups,
    } = outcome
    else {
        return outcome;
    };
    let by_id: HashMap<Uuid, &AppendedEvent> =
        appended.events.iter().map(|e| (e.event_id, e)).collect();
    let events = events
        .into_iter()
        .map(|e| by_id.get(&e.event_id).map(|a| (*a).clone()).unwrap_or(e))
        .collect();
    CommandOutcome::Accepted {
        command_id,
        events,
        follow_ups,
    }
}

/// One `StreamAppend` per stream, in first-touch order (the store writes them in canonical order), each
/// guarded by the version it was decided at.
fn build_appends(
    env: &CommandEnvelope,
    key: Option<&str>,
    decision: &engine::Decision,
    versions: &HashMap<StreamId, i64>,
) -> Vec<StreamAppend> {
    let mut order: Vec<StreamId> = Vec::new();
    let mut by_stream: HashMap<StreamId, Vec<NewEvent>> = HashMap::new();
    let causes: HashMap<Uuid, Uuid> = decision
        .follow_ups
        .iter()
        .filter_map(|(f, r)| r.as_ref().ok().map(|changes| (f.command_id, changes)))
        .flat_map(|(cid, changes)| changes.iter().map(move |c| (c.event_id, cid)))
        .collect();
    let carrier = command_carrier(decision);
    for change in decision.all_changes() {
        if !by_stream.contains_key(&change.stream) {
            order.push(change.stream);
        }
        by_stream.entry(change.stream).or_default().push(new_event(
            env,
            key,
            change,
            causes.get(&change.event_id),
            carrier == Some(change.event_id),
        ));
    }
    order
        .into_iter()
        .map(|stream| StreamAppend {
            stream_id: stream.to_string(),
            expected: expected(versions.get(&stream).copied().unwrap_or(0)),
            events: by_stream.remove(&stream).unwrap_or_default(),
        })
        .collect()
}

/// The version check of every stream the decision read but does not write: an empty `StreamAppend` with
/// the version the decision saw. The store fails the request when any of them moved.
fn read_checks(loaded: &Loaded, decision: Option<&engine::Decision>) -> Vec<StreamAppend> {
    let written: HashSet<StreamId> = decision
        .map(|d| d.all_changes().map(|c| c.stream).collect())
        .unwrap_or_default();
    let mut checks: Vec<StreamAppend> = loaded
        .versions
        .iter()
        .filter(|(stream, _)| !written.contains(stream))
        .map(|(stream, version)| StreamAppend {
            stream_id: stream.to_string(),
            expected: expected(*version),
            events: Vec::new(),
        })
        .collect();
    checks.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    checks
}

fn expected(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

/// The event that carries its command's envelope: the first of the command's events in the log. The store
/// writes a transaction's events in (stream, version) order and the sequencer positions them in that order,
/// so it is the first change of the smallest stream: `verify --deep` meets the command before any of its
/// events and decides it on the state before them.
fn command_carrier(decision: &engine::Decision) -> Option<Uuid> {
    decision
        .all_changes()
        .enumerate()
        .min_by_key(|(index, c)| (c.stream.to_string(), *index))
        .map(|(_, c)| c.event_id)
}

/// What an event's metadata keeps of the command that produced it (see `command_carrier`).
fn recorded_command(env: &CommandEnvelope) -> serde_json::Value {
    serde_json::json!({ "rules": engine::RULES_VERSION, "envelope": env })
}

fn new_event(
    env: &CommandEnvelope,
    key: Option<&str>,
    change: &Change,
    follow_up: Option<&Uuid>,
    carries_command: bool,
) -> NewEvent {
    let (event_type, payload) = change.event.to_stored();
    NewEvent {
        event_id: change.event_id,
        stream_id: change.stream.to_string(),
        event_type,
        schema_version: engine::SCHEMA_VERSION,
        payload,
        metadata: EventMetadata {
            causation_id: Some(*follow_up.unwrap_or(&env.command_id)),
            correlation_id: Some(env.command_id),
            actor: Some(env.actor.to_string()),
            idempotency_key: key.map(str::to_string),
            command: carries_command.then(|| recorded_command(env)),
            delivery: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_moves_back_to_an_older_version() {
        let stream = StreamId::Payment(Uuid::from_u128(1));
        let entry = |version| Cached {
            state: AggState::initial(&stream),
            version,
        };
        let mut cache = HashMap::new();
        cache_forward(&mut cache, stream, entry(5));
        cache_forward(&mut cache, stream, entry(3));
        assert_eq!(
            cache[&stream].version, 5,
            "an older load replaced a newer state"
        );
        cache_forward(&mut cache, stream, entry(6));
        assert_eq!(cache[&stream].version, 6);
    }
}
