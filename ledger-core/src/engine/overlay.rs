//! `Overlay`: the states after some changes, over the caller's loaded states.

use std::collections::HashMap;

use super::{AggState, Change, StateView, StreamId, evolve};

/// States after some changes, over the caller's loaded states.
pub struct Overlay<'a> {
    base: &'a dyn StateView,
    changed: HashMap<StreamId, AggState>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateView) -> Overlay<'a> {
        Overlay {
            base,
            changed: HashMap::new(),
        }
    }

    pub fn apply(&mut self, change: &Change) {
        let state = match self.changed.remove(&change.stream) {
            Some(s) => s,
            None => self
                .base
                .state(&change.stream)
                .cloned()
                .unwrap_or_else(|| AggState::initial(&change.stream)),
        };
        self.changed
            .insert(change.stream, evolve(state, &change.event));
    }

    /// The states this overlay changed (to write back into a cache after a successful append).
    pub fn into_changed(self) -> HashMap<StreamId, AggState> {
        self.changed
    }
}

impl StateView for Overlay<'_> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.changed.get(stream).or_else(|| self.base.state(stream))
    }

    fn account_balance(
        &self,
        account: &crate::journal::Account,
        currency: crate::money::Currency,
    ) -> Option<i128> {
        self.base.account_balance(account, currency)
    }
}
