//! The Decider shape (Jérémie Chassaing): all validation in `decide`, `evolve` total.

/// One aggregate's rules. `evolve` is total (it never fails): all validation lives in `decide`.
pub trait Decider {
    type Command;
    type Event;
    type State: Clone + Default;
    type Error: std::error::Error;

    fn decide(
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// A terminal state accepts no further command (a released escrow, a closed period).
    fn is_terminal(_state: &Self::State) -> bool {
        false
    }
}

/// `state = events.iter().fold(State::default(), evolve)`.
pub fn fold<D: Decider>(events: &[D::Event]) -> D::State {
    events.iter().fold(D::State::default(), D::evolve)
}
