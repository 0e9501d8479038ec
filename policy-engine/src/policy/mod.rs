//! Policies: YAML files naming a service, its primary and shadow, the traffic sent to the
//! shadow, how the analysis runs, the CEL rules and their actions, promotion steps and alerts.
//!
//! - [`raw`]: the file as written (serde types with source positions).
//! - [`model`]: the validated policy the rest of the engine uses.
//! - [`validate`]: raw to model, collecting every problem with its line and column.
//! - [`expr`]: compiling and checking a rule's CEL condition against the context's schema.
//! - [`check`]: `doppel check`: every problem of every policy file under some paths.
//! - [`filter`]: the filter config document built from a policy's traffic section.
//!
//! A policy is loaded whole or refused whole ([`parse`] returns every problem it finds); the
//! caller keeps the last good one in force.

pub mod check;
pub mod expr;
pub mod filter;
pub mod model;
pub mod raw;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use model::{
    Action, Analysis, Backend, DataScope, Headers, Isolation, MatchTest, Matcher, Mirror, Mode,
    Percent, Policy, Primary, Rule, Severity, Step, Sticky, Traffic, parse_duration,
};

/// A position in a policy file: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1, in characters.
    pub column: u64,
}

impl Position {
    /// The position serde-saphyr recorded for a value.
    pub fn of(location: &serde_saphyr::Location) -> Position {
        Position {
            line: location.line().max(1),
            column: location.column().max(1),
        }
    }
}

/// One thing wrong with a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub position: Position,
    /// A stable short code (`yaml`, `unknown_reference`, `percent`, ...).
    pub code: &'static str,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl Problem {
    /// A problem at `position`.
    pub fn new(position: Position, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            position,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.position.line, self.position.column, self.message
        )
    }
}

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has problems: one line each, `file:line:column: message`.
    #[error("{}", .problems.iter().map(|p| format!("{}:{p}", .path)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: String,
        /// Its problems, in file order.
        problems: Vec<Problem>,
    },
}

/// Parses and validates a policy from its text; every problem found, in file order. A
/// `hosts:` section's inventory is not read (see [`parse_in`]).
pub fn parse(text: &str) -> Result<Policy, Vec<Problem>> {
    let raw: raw::RawPolicy = serde_saphyr::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
    validate::validate(raw, text, None)
}

/// What every refusal by [`parse`] promises, whatever the text: at least one problem, each at a
/// line and column from 1, no further down than the text goes. Lines count as YAML counts them:
/// `\n`, `\r\n` and a lone `\r` each end one (`str::lines` does not count a lone `\r`), with one
/// line of slack past the last, as the fuzz target `policy_compile` has always allowed. The target
/// checks it on any text, the regression tests on the inputs it found. Err says what is wrong.
pub fn check_refusal(text: &str, problems: &[Problem]) -> Result<(), String> {
    if problems.is_empty() {
        return Err("refused without a reason".to_string());
    }
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    let lines = u64::try_from(breaks).unwrap_or(u64::MAX).saturating_add(1);
    match problems.iter().find(|p| {
        p.position.line < 1 || p.position.column < 1 || p.position.line > lines.saturating_add(1)
    }) {
        Some(problem) => Err(format!(
            "{problem:?} is not inside the {lines} lines of the text"
        )),
        None => Ok(()),
    }
}

/// [`parse`] for a policy file in `dir`: a `hosts:` section's inventory is read from there and
/// the shadow's hosts chosen, so an inventory that cannot give them is a problem too.
pub fn parse_in(text: &str, dir: &Path) -> Result<Policy, Vec<Problem>> {
    let raw: raw::RawPolicy = serde_saphyr::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
    validate::validate(raw, text, Some(dir))
}

/// Reads, parses and validates the policy file at `path`.
pub fn load(path: &Path) -> Result<Policy, LoadError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: name.clone(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_in(&text, dir).map_err(|problems| LoadError::Invalid {
        path: name,
        problems,
    })
}

/// A YAML or structure error from the deserializer, without its own location suffix.
fn yaml_problem(e: &serde_saphyr::Error) -> Problem {
    let position = e
        .location()
        .map(|l| Position::of(&l))
        .unwrap_or(Position { line: 1, column: 1 });
    let text = e.without_snippet().to_string();
    let suffix = format!(" at line {}, column {}", position.line, position.column);
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    let code = if message.starts_with("unknown field") {
        "unknown_field"
    } else if message.starts_with("missing field") {
        "missing_field"
    } else {
        "yaml"
    };
    Problem::new(position, code, message)
}

/// The position in the file of the character at `offset` (in characters) of a string value
/// that starts at `start`: plain, quoted and block scalars are walked in step with the
/// parsed text, so a CEL error points into the expression where it is written.
pub fn position_in_value(
    text: &str,
    start: &serde_saphyr::Location,
    value: &str,
    offset: usize,
) -> Position {
    let origin = Position::of(start);
    let Some(byte) = start
        .span()
        .byte_offset()
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| text.is_char_boundary(*b))
    else {
        return origin;
    };
    let mut source = text[byte..].chars().peekable();
    let mut at = origin;
    let advance = |at: &mut Position, c: char| {
        if c == '\n' {
            at.line += 1;
            at.column = 1;
        } else {
            at.column += 1;
        }
    };
    for wanted in value.chars().take(offset + 1).enumerate() {
        let (i, wanted) = wanted;
        // Skip what the YAML syntax adds (quotes, escapes, indentation, folding).
        loop {
            match source.peek() {
                None => return at,
                Some(&c) if c == wanted => break,
                Some(&c) => {
                    advance(&mut at, c);
                    source.next();
                }
            }
        }
        if i == offset {
            return at;
        }
        if let Some(c) = source.next() {
            advance(&mut at, c);
        }
    }
    at
}

#[cfg(test)]
mod tests;
