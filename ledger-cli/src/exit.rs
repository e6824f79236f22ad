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

/// clap's parser of a UUID argument: the refusal says what is expected (clap adds the flag's name).
pub fn uuid_arg(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| {
        format!(
            "expected a UUID such as 3f1e07d2-95b4-4c61-a8e3-1d0c6b2a9f47 (36 characters, hex digits and \
             dashes), got {text:?}"
        )
    })
}

/// A panic from writing to a closed stdout (`escrow-ledger projections status | head -1`): the reader has
/// what it wanted, so the process ends quietly, as a Unix filter does, instead of printing a panic. Any other
/// panic reaches the previous hook.
pub fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_uuid_says_what_is_expected() {
        let e = super::uuid_arg("alice").unwrap_err();
        assert!(
            e.contains("expected a UUID") && e.contains("\"alice\""),
            "{e}"
        );
        assert!(super::uuid_arg("3f1e07d2-95b4-4c61-a8e3-1d0c6b2a9f47").is_ok());
    }
}
