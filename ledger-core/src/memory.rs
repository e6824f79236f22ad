//! An in-memory ledger: the engine plus a map of stream states and the log, with the process logic run to
//! completion after each command. Used by tests, benchmarks and replays; the store's executor does the same
//! against Postgres.

use std::collections::HashMap;

use uuid::Uuid;

use crate::engine::{self, AggState, Change, CommandEnvelope, DecideError, StreamId};

/// Bound on load-and-decide rounds (each round loads one more stream).
pub const LOAD_ROUNDS_MAX: usize = 32;
const _: () = assert!(LOAD_ROUNDS_MAX >= engine::STREAMS_PER_COMMAND_MAX);
use crate::error::Rejection;
use crate::journal::Balances;

/// What one command did: its events, and the follow-up commands the process logic ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub follow_ups: Vec<(CommandEnvelope, Result<Vec<Change>, Rejection>)>,
}

#[derive(Default, Clone)]
pub struct MemoryLedger {
    states: HashMap<StreamId, AggState>,
    versions: HashMap<StreamId, u64>,
    log: Vec<Change>,
    balances: Balances,
    executed: HashMap<Uuid, Result<Outcome, Rejection>>,
}

impl MemoryLedger {
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    pub fn log(&self) -> &[Change] {
        &self.log
    }

    /// Hands over the log so far and forgets it (states and balances stay): lets a generator stream a long
    /// history in bounded memory.
    pub fn take_log(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.log)
    }

    pub fn balances(&self) -> &Balances {
        &self.balances
    }

    pub fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.states.get(stream)
    }

    pub fn version(&self, stream: &StreamId) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }

    pub fn states(&self) -> &HashMap<StreamId, AggState> {
        &self.states
    }

    /// States of the streams that have events (loading a stream for a rejected command leaves an initial
    /// state behind, which a replay does not have).
    pub fn written_states(&self) -> HashMap<StreamId, AggState> {
        self.states
            .iter()
            .filter(|(s, _)| self.version(s) > 0)
            .map(|(s, a)| (*s, a.clone()))
            .collect()
    }

    /// Executes a command and the follow-ups its events cause, appending all of it at once (as the store's
    /// executor does in one transaction). A command id seen before returns the recorded outcome and appends
    /// nothing (idempotency).
    pub fn execute(&mut self, env: &CommandEnvelope) -> Result<Outcome, Rejection> {
        if let Some(previous) = self.executed.get(&env.command_id) {
            return previous.clone();
        }
        let result = self.decide_loading(env);
        if let Ok(outcome) = &result {
            for change in outcome.changes.iter().chain(
                outcome
                    .follow_ups
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .flatten(),
            ) {
                self.apply(change.clone());
            }
        }
        self.executed.insert(env.command_id, result.clone());
        result
    }

    /// Decides and appends one command without running its follow-ups (for tests of a single decider step).
    /// The loaded states with this ledger's balances (for settlements, which read a clearing balance).
    fn view<'a>(&'a self, states: &'a HashMap<StreamId, AggState>) -> WithBalances<'a> {
        WithBalances {
            states,
            balances: &self.balances,
        }
    }

    pub fn execute_one(&mut self, env: &CommandEnvelope) -> Result<Vec<Change>, Rejection> {
        for stream in engine::primary_streams(&env.command) {
            self.states
                .entry(stream)
                .or_insert_with(|| AggState::initial(&stream));
        }
        for _round in 0..LOAD_ROUNDS_MAX {
            match engine::decide(env, &self.view(&self.states)) {
                Ok(changes) => {
                    changes.iter().for_each(|c| self.apply(c.clone()));
                    return Ok(changes);
                }
                Err(DecideError::Rejected(r)) => return Err(r),
                Err(DecideError::NeedStream(stream)) => {
                    self.states.insert(stream, AggState::initial(&stream));
                }
                Err(DecideError::NeedBalance { .. }) => unreachable!("balances are always there"),
            }
        }
        panic!(
            "command {:?} needed more than {LOAD_ROUNDS_MAX} streams",
            env.command
        )
    }

    fn decide_loading(&mut self, env: &CommandEnvelope) -> Result<Outcome, Rejection> {
        for stream in engine::primary_streams(&env.command) {
            self.states
                .entry(stream)
                .or_insert_with(|| AggState::initial(&stream));
        }
        // Every stream exists in memory, so each NeedStream round adds one; commands touch few streams.
        for _round in 0..LOAD_ROUNDS_MAX {
            let decided = engine::decide_all(env, &self.view(&self.states)).map(|(d, _)| d);
            match decided {
                Ok(decision) => {
                    return Ok(Outcome {
                        changes: decision.changes,
                        follow_ups: decision.follow_ups,
                    });
                }
                Err(DecideError::Rejected(r)) => return Err(r),
                Err(DecideError::NeedStream(stream)) => {
                    self.states.insert(stream, AggState::initial(&stream));
                }
                Err(DecideError::NeedBalance { .. }) => unreachable!("balances are always there"),
            }
        }
        panic!(
            "command {:?} needed more than {LOAD_ROUNDS_MAX} streams",
            env.command
        )
    }

    /// Decides `env` (with its follow-ups) on this ledger's states as they stand, changing nothing: what
    /// `verify --deep` compares a recorded command's events with. `None` when the command needs more than
    /// `LOAD_ROUNDS_MAX` streams (the engine never appends such a command).
    pub fn decide(&self, env: &CommandEnvelope) -> Option<Result<Outcome, Rejection>> {
        let mut loaded: HashMap<StreamId, AggState> = HashMap::new();
        let state = |stream: &StreamId| {
            self.states
                .get(stream)
                .cloned()
                .unwrap_or_else(|| AggState::initial(stream))
        };
        for stream in engine::primary_streams(&env.command) {
            loaded.insert(stream, state(&stream));
        }
        for _round in 0..LOAD_ROUNDS_MAX {
            match engine::decide_all(env, &self.view(&loaded)) {
                Ok((decision, _)) => {
                    return Some(Ok(Outcome {
                        changes: decision.changes,
                        follow_ups: decision.follow_ups,
                    }));
                }
                Err(DecideError::Rejected(r)) => return Some(Err(r)),
                Err(DecideError::NeedBalance { .. }) => unreachable!("balances are always there"),
                Err(DecideError::NeedStream(stream)) => {
                    loaded.insert(stream, state(&stream));
                }
            }
        }
        None
    }

    /// How many streams deciding `env` (with its follow-ups) needs when nothing is loaded: what a store's
    /// executor loads for it, one `NeedStream` round at a time. Decides only; appends nothing.
    pub fn streams_needed(&self, env: &CommandEnvelope) -> usize {
        let mut loaded: HashMap<StreamId, AggState> = HashMap::new();
        let load = |loaded: &mut HashMap<StreamId, AggState>, stream: StreamId| {
            let state = self
                .states
                .get(&stream)
                .cloned()
                .unwrap_or_else(|| AggState::initial(&stream));
            loaded.insert(stream, state);
        };
        for stream in engine::primary_streams(&env.command) {
            load(&mut loaded, stream);
        }
        loop {
            match engine::decide_all(env, &self.view(&loaded)) {
                Ok(_) | Err(DecideError::Rejected(_)) => return loaded.len(),
                Err(DecideError::NeedBalance { .. }) => unreachable!("balances are always there"),
                Err(DecideError::NeedStream(stream)) => {
                    assert!(!loaded.contains_key(&stream), "{stream} asked for twice");
                    load(&mut loaded, stream);
                }
            }
        }
    }

    /// Appends one event: folds it into its stream's state and its entry into the balances.
    pub fn apply(&mut self, change: Change) {
        let state = self
            .states
            .remove(&change.stream)
            .unwrap_or_else(|| AggState::initial(&change.stream));
        self.states
            .insert(change.stream, engine::evolve(state, &change.event));
        *self.versions.entry(change.stream).or_insert(0) += 1;
        if let Some(entry) = change.event.entry() {
            self.balances.apply(entry);
        }
        self.log.push(change);
    }

    /// Rebuilds a ledger from a log (replay). Deterministic: the same log gives the same ledger.
    pub fn replay<'a>(log: impl IntoIterator<Item = &'a Change>) -> MemoryLedger {
        let mut ledger = MemoryLedger::new();
        for change in log {
            ledger.apply(change.clone());
        }
        ledger
    }
}

/// Loaded states plus the balances of every account (memory has them all).
struct WithBalances<'a> {
    states: &'a HashMap<StreamId, AggState>,
    balances: &'a Balances,
}

impl engine::StateView for WithBalances<'_> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.states.get(stream)
    }

    fn account_balance(
        &self,
        account: &crate::journal::Account,
        currency: crate::money::Currency,
    ) -> Option<i128> {
        Some(self.balances.balance(account, currency))
    }
}
