//! Issue 24: every example of the README runs as written, against a fresh database, in the order the README
//! gives them (one shell session, so a block may use what an earlier one made).
//!
//! Why a test that reads the README rather than `trycmd`: the examples are a story (an `apply` file, then
//! reports on what it booked, then a server and the curl calls a worker makes), with state carried from one
//! block to the next; `trycmd` runs each case on its own. The rules, which the README states too:
//!   * a fenced ` ```sh ` block runs in bash (`set -euo pipefail`) with `escrow-ledger` on `PATH`,
//!     `DATABASE_URL` naming a fresh database and the repository as working directory;
//!   * a fenced ` ```console ` block holds `$ command` lines, each followed by the output it must print
//!     (a line `...` stands for any lines, `...` inside a line for any text);
//!   * a fenced ` ```jsonl ` block is given to `escrow-ledger apply -` and every line must be accepted;
//!   * a fenced ` ```json ` block must parse (one value, or one per line);
//!   * a block preceded by `<!-- not run in CI: <why> -->` is skipped, and the README says so next to it
//!     (installing Citus, benchmarks over a million events); a smaller twin runs instead;
//!   * an indented (4-space) block mentioning `escrow-ledger` is refused: examples are fenced, so they are
//!     run or explicitly skipped.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use ledger_store::testdb::TestDb;

const SKIP: &str = "<!-- not run in CI:";

#[derive(Debug)]
enum Block {
    Sh(String),
    Console(Vec<(String, Vec<String>)>),
    Jsonl(String),
    Json(String),
}

/// The README's blocks in order, each with the line it starts on.
fn blocks(readme: &str) -> Result<Vec<(usize, Block)>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        // A fence may be indented (inside a list item): its body is indented as much.
        let indent = line.len() - line.trim_start().len();
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let start = i + 1;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let l = lines[i];
                let cut = indent.min(l.len() - l.trim_start().len());
                body.push(&l[cut..]);
                i += 1;
            }
            i += 1;
            let skipped = lines[..start - 1]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with(SKIP));
            if skipped {
                continue;
            }
            let text = body.join("\n");
            match info.trim() {
                "sh" => out.push((start, Block::Sh(text))),
                "jsonl" => out.push((start, Block::Jsonl(text))),
                "json" => out.push((start, Block::Json(text))),
                "console" => out.push((start, Block::Console(console(&body)))),
                _ => {}
            }
            continue;
        }
        // An indented block that runs the CLI must be a fenced one instead.
        let indented = line.starts_with("    ") && (i == 0 || lines[i - 1].trim().is_empty());
        if indented {
            let mut j = i;
            while j < lines.len() && (lines[j].starts_with("    ") || lines[j].trim().is_empty()) {
                if lines[j].contains("escrow-ledger ") {
                    return Err(format!(
                        "README line {}: an indented example of the CLI; fence it as ```sh (run) or mark it \
                         `{SKIP} why -->`",
                        j + 1
                    ));
                }
                j += 1;
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    Ok(out)
}

fn console(body: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in body {
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push((cmd.to_string(), Vec::new()));
        } else if let Some((_, expected)) = out.last_mut() {
            expected.push(line.to_string());
        }
    }
    out
}

/// Whether `actual` matches `expected` (`...` alone: any lines; inside a line: any text).
fn matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, tail)| line_matches(first, line) && matches(rest, tail)),
    }
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern.trim_end() == line.trim_end();
    }
    let mut rest = line.trim_end();
    for (n, part) in parts.iter().enumerate() {
        let part = if n == parts.len() - 1 {
            part.trim_end()
        } else {
            part
        };
        if n == 0 {
            let Some(tail) = rest.strip_prefix(part) else {
                return false;
            };
            rest = tail;
        } else if n == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// A console command to check: its README line, the command, the output shown, the file its output went to.
type Check = (usize, String, Vec<String>, PathBuf);

/// The README as one bash script; console outputs go to `out/<n>` for comparison afterwards.
fn script(blocks: &[(usize, Block)], out: &Path) -> (String, Vec<Check>) {
    let mut text = String::from("set -euo pipefail\n");
    let mut checks = Vec::new();
    for (line, block) in blocks {
        writeln!(text, "echo '--- README line {line}' >&2").unwrap();
        match block {
            Block::Sh(body) => {
                text.push_str(body);
                text.push('\n');
            }
            Block::Jsonl(body) => {
                writeln!(
                    text,
                    "escrow-ledger apply - <<'README_JSONL' >/dev/null || {{ echo 'README line {line}: a line of this block was not accepted' >&2; exit 1; }}\n{body}\nREADME_JSONL"
                )
                .unwrap();
            }
            Block::Console(commands) => {
                for (cmd, expected) in commands {
                    let file = out.join(format!("{}", checks.len()));
                    // The exit status is not checked here: the output is (a refusal shown in the README
                    // exits 1 and prints it).
                    writeln!(text, "{cmd} > {} 2>&1 || true", file.display()).unwrap();
                    checks.push((*line, cmd.clone(), expected.clone(), file));
                }
            }
            Block::Json(_) => {}
        }
    }
    (text, checks)
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README.md")
}

/// Runs the README's examples; `Err` says which block failed and how.
async fn run_readme(readme: &str) -> Result<(), String> {
    let blocks = blocks(readme)?;
    for (line, block) in &blocks {
        if let Block::Json(body) = block {
            let whole = serde_json::from_str::<serde_json::Value>(body).is_ok();
            let per_line = body
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok());
            if !whole && !per_line {
                return Err(format!(
                    "README line {line}: a ```json block that is not JSON"
                ));
            }
        }
    }
    let db = TestDb::new().await;
    let work = std::env::temp_dir().join(format!("escrow-readme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(work.join("out")).unwrap();
    let (text, checks) = script(&blocks, &work.join("out"));
    std::fs::write(work.join("readme.sh"), &text).unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_escrow-ledger"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("bash")
        .arg(work.join("readme.sh"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("PATH", path)
        .env("DATABASE_URL", db.url())
        .env("README_TMP", &work)
        .env_remove("ESCROW_LEDGER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    if !run.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        return Err(format!(
            "the README's examples stopped ({}):\n{}\n{}",
            run.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&run.stdout)
        ));
    }
    for (line, cmd, expected, file) in checks {
        let actual = std::fs::read_to_string(&file).unwrap_or_default();
        let actual_lines: Vec<&str> = actual.lines().collect();
        if !matches(&expected, &actual_lines) {
            return Err(format!(
                "README line {line}: `{cmd}` printed\n{actual}\nwhere the README shows\n{}",
                expected.join("\n")
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_runs_as_written() {
    if let Err(e) = run_readme(&readme()).await {
        panic!("{e}");
    }
}

#[test]
fn the_output_matcher_takes_ellipses() {
    let exp = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    assert!(matches(&exp("a\n...\nz"), &["a", "b", "c", "z"]));
    assert!(matches(&exp("a ... c"), &["a b c"]));
    assert!(!matches(&exp("a\nz"), &["a", "b", "z"]));
    assert!(line_matches("position ... of ...", "position 3 of 9"));
    assert!(!line_matches("position ... of 10", "position 3 of 9"));
}

/// `docs/commands.md` against the code: every command type has its section, with ARCHITECTURE.md's "who"
/// (which must name every type), and each example is an `apply` line of that type.
#[test]
fn the_commands_reference_covers_every_command_type_with_a_line_apply_reads() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        actor: ledger_core::Actor,
        command: ledger_core::Command,
        at: Option<chrono::DateTime<chrono::Utc>>,
    }
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/commands.md"))
            .expect("docs/commands.md");
    let sections = support::commands_doc::sections(&doc);
    let who = support::commands_doc::who_may();
    for name in support::commands_doc::command_types() {
        let row = who.get(&name).unwrap_or_else(|| {
            panic!("ARCHITECTURE.md's \"Who may send each command\" has no row for {name}")
        });
        let (_, said, example) = sections
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("docs/commands.md has no section for {name}: regenerate it"));
        assert_eq!(
            said, &row.0,
            "docs/commands.md's \"who\" of {name} is not ARCHITECTURE.md's"
        );
        if let Some(line) = example {
            let parsed: Line = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("the example of {name} is not an apply line: {e}"));
            let stored = serde_json::to_value(&parsed.command).unwrap();
            assert_eq!(
                stored["type"],
                name.as_str(),
                "the example under {name} is another command"
            );
        }
    }
    let types = support::commands_doc::command_types();
    for (name, _, _) in &sections {
        assert!(
            types.contains(name),
            "docs/commands.md documents {name}, which is no command"
        );
    }
}
