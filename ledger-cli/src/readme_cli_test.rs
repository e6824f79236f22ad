//! `--help` and the README agree: the README's "CLI reference" is rendered from clap's own description of
//! every subcommand and flag, and this test fails when the README's copy differs (regenerate with
//! `UPDATE_README=1 cargo test -p ledger-cli --bin escrow-ledger readme`).

use clap::CommandFactory;

const START: &str = "<!-- cli-reference:start (generated from clap: UPDATE_README=1 cargo test -p ledger-cli --bin escrow-ledger readme) -->";
const END: &str = "<!-- cli-reference:end -->";

fn readme_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// One flag as the reference lists it: `--name <VALUE>` (or `--name` for a switch), or `<ARG>`.
fn flag(arg: &clap::Arg) -> Option<String> {
    let takes_value = arg.get_action().takes_values();
    let value = arg
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
    match arg.get_long() {
        Some("help" | "version") => None,
        Some(long) if takes_value => Some(format!("--{long} {value}")),
        Some(long) => Some(format!("--{long}")),
        None if arg.is_positional() => Some(value),
        None => None,
    }
}

/// One line of the table per command that runs something (not per group), depth first.
fn rows(cmd: &clap::Command, path: &str, global: &[String], out: &mut Vec<String>) {
    let subcommands: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .collect();
    if subcommands.is_empty() {
        let flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(flag)
            .filter(|f| !global.contains(f))
            .map(|f| format!("`{f}`"))
            .collect();
        let about = cmd
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default()
            .replace('|', "\\|");
        out.push(format!(
            "| `escrow-ledger {path}` | {about} | {} |",
            flags.join(" ")
        ));
        return;
    }
    for sub in subcommands {
        let next = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        rows(sub, &next, global, out);
    }
}

/// The README section: the global flags, then every command with its own flags.
pub fn reference() -> String {
    let cli = crate::Cli::command();
    let global: Vec<String> = cli.get_arguments().filter_map(flag).collect();
    let mut out = vec![
        START.to_string(),
        format!(
            "Global flags (every command): {}.",
            global
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        String::new(),
        "| command | what it does | its flags |".to_string(),
        "|---|---|---|".to_string(),
    ];
    rows(&cli, "", &global, &mut out);
    out.push(END.to_string());
    out.join("\n")
}

#[test]
fn readme_cli_reference_is_what_clap_says() {
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let generated = reference();
    let current = match (readme.find(START), readme.find(END)) {
        (Some(start), Some(end)) => &readme[start..end + END.len()],
        _ => "",
    };
    if std::env::var("UPDATE_README").is_ok_and(|v| v == "1") {
        let updated = if current.is_empty() {
            format!("{readme}\n## CLI reference\n\n{generated}\n")
        } else {
            readme.replace(current, &generated)
        };
        std::fs::write(&path, updated).expect("README.md written");
        return;
    }
    assert!(
        current == generated,
        "the README's CLI reference differs from `--help` (a command or flag was added, renamed or \
         documented differently): regenerate it with \
         `UPDATE_README=1 cargo test -p ledger-cli --bin escrow-ledger readme`"
    );
}
