//! One difference between a read table and what the log implies: what both `verify` (row by row against
//! the replay) and `journal_check` (money columns against the journal) report. Below both of them.

/// One difference: a row missing, unexpected or different (`expected` is the replay, `found` the
/// table), or a checkpoint problem (`table` = `projection_checkpoints`, `key` = the projection).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    pub table: String,
    pub key: String,
    pub expected: Option<String>,
    pub found: Option<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        write!(
            f,
            "{} [{}]: expected {}; found {}",
            self.table,
            self.key,
            show(&self.expected),
            show(&self.found)
        )
    }
}
