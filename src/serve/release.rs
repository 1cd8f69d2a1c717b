//! Pure: what the gate controller does with one pod of its own (its claim
//! made by `mutate::record`): release, revert, wait and start copies, or, for
//! a copy-pending pod, start copies and drop the label. The guarded patches
//! that do it are `mutate::settle`'s.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::jobs::JobState;
use crate::mutate::pods::Presence;
use crate::mutate::record::Wait;

/// What the gate knows of one copy Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub state: JobState,
    /// When the Job was marked `Failed`.
    pub failed_at: Option<Timestamp>,
    /// The copy's own last error line (its pod's termination message), if any.
    pub error: Option<String>,
}

/// What one pod's verdict is made from besides its waits.
pub struct Facts<'a> {
    /// Fresh presence by target reference (absent: unknown).
    pub presence: &'a HashMap<String, Presence>,
    /// Copy Jobs by name.
    pub jobs: &'a HashMap<String, JobInfo>,
    /// Sources a copy may not be made of (private, in a namespace that may not
    /// mirror private images), with why.
    pub refused: &'a HashMap<String, String>,
    /// When the pod was created, and now.
    pub created: Timestamp,
    pub now: Timestamp,
    pub gate_timeout: Duration,
}

impl Facts<'_> {
    fn waited(&self) -> Duration {
        let seconds = (self.now - self.created)
            .total(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(0.0)
            .max(0.0);
        Duration::from_secs_f64(seconds)
    }
}

/// What to do with a gated pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every image is in the target: remove the gate.
    Release,
    /// The copy failed for good: images back to the originals, gate removed.
    Revert {
        reason: String,
        image: String,
        /// A fixed label for metrics: `job_failed`, `timeout` or `private_source`.
        cause: &'static str,
    },
    /// Keep waiting; the waits at these indexes need a copy Job started
    /// (missing, and no Job runs for them).
    Wait { start: Vec<usize> },
}

/// What to do with a copy-pending pod (not gated: only its copies matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Every image is present or has its Job: drop the label.
    Done,
    /// Start Jobs for the waits at these indexes; keep the label meanwhile.
    Start(Vec<usize>),
    /// Past the gate timeout: drop the label without copying.
    GiveUp,
}

/// The copy Job of a wait (by name), for the caller: `jobs::job_name`.
pub type JobNames<'a> = &'a [String];

/// Decides a gated pod's fate. A Job that failed before the pod was created
/// is not this pod's failure: the copy is tried again for it.
pub fn verdict(waits: &[Wait], jobs_of: JobNames<'_>, facts: &Facts<'_>) -> Verdict {
    let missing: Vec<usize> = (0..waits.len())
        .filter(|&i| facts.presence.get(&waits[i].target.to_string()) != Some(&Presence::Present))
        .collect();
    if missing.is_empty() {
        return Verdict::Release;
    }
    for &i in &missing {
        if let Some(why) = facts.refused.get(&waits[i].source.to_string()) {
            return Verdict::Revert {
                reason: why.clone(),
                image: waits[i].source.to_string(),
                cause: "private_source",
            };
        }
    }
    for &i in &missing {
        let Some(job) = facts.jobs.get(&jobs_of[i]) else {
            continue;
        };
        let failed_for_this_pod =
            job.state == JobState::Failed && job.failed_at.is_none_or(|at| at >= facts.created);
        if failed_for_this_pod {
            let reason = match &job.error {
                Some(error) => format!("copy Job {} failed: {error}", jobs_of[i]),
                None => format!("copy Job {} failed", jobs_of[i]),
            };
            return Verdict::Revert {
                reason,
                image: waits[i].source.to_string(),
                cause: "job_failed",
            };
        }
    }
    if facts.waited() > facts.gate_timeout {
        let i = missing[0];
        return Verdict::Revert {
            reason: format!(
                "not mirrored within the gate timeout of {}s (copy Job {})",
                facts.gate_timeout.as_secs(),
                jobs_of[i]
            ),
            image: waits[i].source.to_string(),
            cause: "timeout",
        };
    }
    Verdict::Wait {
        start: to_start(waits, &missing, jobs_of, facts),
    }
}

/// Decides a copy-pending pod: its copies are started, then the label goes.
pub fn pending(waits: &[Wait], jobs_of: JobNames<'_>, facts: &Facts<'_>) -> Pending {
    if facts.waited() > facts.gate_timeout {
        return Pending::GiveUp;
    }
    let missing: Vec<usize> = (0..waits.len())
        .filter(|&i| facts.presence.get(&waits[i].target.to_string()) != Some(&Presence::Present))
        .filter(|&i| !facts.refused.contains_key(&waits[i].source.to_string()))
        .collect();
    let start = to_start(waits, &missing, jobs_of, facts);
    // An unknown presence is asked again next sweep; a running Job is enough.
    let settled = missing.iter().all(|&i| {
        facts.presence.contains_key(&waits[i].target.to_string())
            && facts.jobs.contains_key(&jobs_of[i])
            && !start.contains(&i)
    });
    if start.is_empty() && settled {
        Pending::Done
    } else {
        Pending::Start(start)
    }
}

/// Missing images (presence answered `Missing`, not just unknown) without
/// a running Job, or whose Job finished before the pod existed (the image was
/// pruned since, or the copy failed then).
fn to_start(
    waits: &[Wait],
    missing: &[usize],
    jobs_of: JobNames<'_>,
    facts: &Facts<'_>,
) -> Vec<usize> {
    missing
        .iter()
        .copied()
        .filter(|&i| facts.presence.get(&waits[i].target.to_string()) == Some(&Presence::Missing))
        .filter(|&i| match facts.jobs.get(&jobs_of[i]) {
            None => true,
            Some(job) => match job.state {
                JobState::Running => false,
                JobState::Succeeded => true,
                JobState::Failed => job.failed_at.is_some_and(|at| at < facts.created),
            },
        })
        .collect()
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
