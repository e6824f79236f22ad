//! Errors for humans: one line with the cause, and the documented exit code.

use std::fmt::Display;
use std::process::ExitCode;

/// Exit code 1: the ledger refused something or a check found a problem.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code 2: bad usage or an unusable environment (database unreachable, unreadable file).
pub const EXIT_ENVIRONMENT: u8 = 2;

#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn environment(message: impl Display) -> CliError {
        CliError {
            code: EXIT_ENVIRONMENT,
            message: message.to_string(),
        }
    }

    pub fn findings(message: impl Display) -> CliError {
        CliError {
            code: EXIT_FINDINGS,
            message: message.to_string(),
        }
    }
}

/// Adds what we were doing to a lower-level error: `cannot connect to ...: connection refused`.
pub trait Context<T> {
    fn context(self, what: impl Display) -> Result<T, CliError>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, CliError> {
        self.map_err(|e| CliError::environment(format!("{what}: {}", one_line(&e.to_string()))))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn report(error: &CliError) -> ExitCode {
    eprintln!("escrow-ledger: {}", one_line(&error.message));
    ExitCode::from(error.code)
}
