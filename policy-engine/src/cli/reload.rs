//! Policy files reloaded while `doppel serve` runs. Every interval the watcher reads each
//! policy file the serve config names; when its text changed it is loaded and validated like
//! `doppel check` does. A policy that fails is refused, with every problem as
//! `file:line:column: message` in the log, and the last good one stays in force: the rollout goes
//! on as it was. A valid one replaces the running policy (see
//! [`crate::rollout::Controller::replace_policy`]): the rollout keeps its phase, step and plan;
//! Envoy gets the new filter config and share; the analysis loop starts judging by the new rules
//! at its next look. Renaming the service or changing its clusters is refused: that needs a
//! restart.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use super::analysis_loop::SharedController;
use crate::policy;

/// One watched file, the service it was loaded for, and the text last seen in it.
#[derive(Debug)]
pub struct Watched {
    path: PathBuf,
    service: String,
    seen: Option<String>,
}

/// What one check of a changed file did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The new policy is in force (its service, the new generation).
    Applied(String, u64),
    /// The new text was refused; the last good policy stays (why, with positions).
    Refused(String),
}

/// Loads the policy at `path` and, when valid, puts it in force for `service` (the service the
/// file was loaded for when the engine started).
pub fn reload(controller: &SharedController, path: &std::path::Path, service: &str) -> Reload {
    let policy = match policy::load(path) {
        Ok(policy) => policy,
        Err(e) => return Reload::Refused(e.to_string()),
    };
    let mut guard = controller
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match guard.replace_policy(service, policy) {
        Ok(generation) => Reload::Applied(service.to_owned(), generation),
        Err(e) => Reload::Refused(format!("{}: {e}", path.display())),
    }
}

/// The files to watch, with the service each holds and its text now. Call it before serving,
/// when the files are the ones the engine loaded (a file that no longer loads is left out).
pub fn watched(paths: Vec<PathBuf>) -> Vec<Watched> {
    paths
        .into_iter()
        .filter_map(|path| {
            let seen = std::fs::read_to_string(&path).ok();
            let service = policy::load(&path).ok()?.service;
            Some(Watched {
                path,
                service,
                seen,
            })
        })
        .collect()
}

/// Watches `files` (from [`watched`]) every `every` until `stop` completes.
pub async fn watch(
    controller: SharedController,
    mut files: Vec<Watched>,
    every: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        for file in &mut files {
            let Ok(text) = std::fs::read_to_string(&file.path) else {
                continue;
            };
            if file.seen.as_deref() == Some(text.as_str()) {
                continue;
            }
            file.seen = Some(text);
            let path = file.path.display().to_string();
            match reload(&controller, &file.path, &file.service) {
                Reload::Applied(service, generation) => {
                    tracing::info!(service, file = path, generation, "policy reloaded");
                }
                Reload::Refused(problems) => {
                    tracing::error!(
                        file = path,
                        problems,
                        "policy refused: the last good one stays in force"
                    );
                }
            }
        }
    }
}
