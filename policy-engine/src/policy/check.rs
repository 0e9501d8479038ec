//! `doppel check`: validates policy files the way `promtool check rules` does. Every problem
//! of every file is one line `file:line:column: message`; the caller exits 1 when there is any.

use std::path::{Path, PathBuf};

use super::{Position, Problem, parse_in};

/// A problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    /// The file, as found from the paths given.
    pub file: PathBuf,
    /// The problem.
    pub problem: Problem,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.problem)
    }
}

/// What checking some paths found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The policy files checked.
    pub files: Vec<PathBuf>,
    /// Every problem, file by file, in file order.
    pub problems: Vec<FileProblem>,
}

/// Checks every policy file under `paths`: a file is checked whatever its name, a directory
/// contributes its `.yaml` and `.yml` files (recursively, sorted). A path that does not exist
/// or a directory without policies is a problem too, so a typo in CI cannot pass silently.
pub fn check_paths(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in paths {
        let mut files = Vec::new();
        if path.is_dir() {
            if let Err(e) = collect(path, &mut files) {
                report.problems.push(whole_file(path, "io", e.to_string()));
            }
            if files.is_empty() {
                report.problems.push(whole_file(
                    path,
                    "empty",
                    "no policy files (*.yaml, *.yml) in this directory".into(),
                ));
            }
        } else {
            files.push(path.clone());
        }
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let dir = file.parent().unwrap_or(Path::new("."));
                    if let Err(problems) = parse_in(&text, dir) {
                        report
                            .problems
                            .extend(problems.into_iter().map(|problem| FileProblem {
                                file: file.clone(),
                                problem,
                            }));
                    }
                }
                Err(e) => report.problems.push(whole_file(&file, "io", e.to_string())),
            }
            report.files.push(file);
        }
    }
    report
}

fn whole_file(path: &Path, code: &'static str, message: String) -> FileProblem {
    FileProblem {
        file: path.to_path_buf(),
        problem: Problem::new(Position { line: 1, column: 1 }, code, message),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
