//! Test-only switches. The planted bug proves the model-based property test can fail.

use std::cell::Cell;

thread_local! {
    static PLANTED_BUG: Cell<bool> = const { Cell::new(false) };
}

pub fn planted_bug() -> bool {
    PLANTED_BUG.with(Cell::get)
}

pub fn set_planted_bug(on: bool) {
    PLANTED_BUG.with(|c| c.set(on));
}
