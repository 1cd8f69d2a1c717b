//! Waiting for a Deployment's rollout as `kubectl rollout status` does: the
//! controller has seen the newest generation, every replica runs it, no old
//! replica is left, and the new ones are available.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use kube::Client;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the newest generation and is available.
    Done(String),
    /// Still under way; the text says what it waits for.
    Waiting(String),
    /// The controller gave up (progress deadline exceeded).
    Failed(String),
}

/// Reads a Deployment's status against its spec. Old pods that are still
/// available never count: only replicas of the observed newest generation do.
pub fn rollout(deployment: &Deployment) -> Rollout {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    if wanted == 0 {
        // No replica to wait for (serve runs outside the cluster).
        return Rollout::Done("0 replicas wanted".into());
    }
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!(
            "generation {generation} not yet observed by the Deployment controller"
        ));
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if let Some(condition) = progressing {
        if condition.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Rollout::Failed(format!(
                "progress deadline exceeded: {}",
                condition.message.as_deref().unwrap_or("no message")
            ));
        }
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        Rollout::Waiting(format!("{updated}/{wanted} replicas updated"))
    } else if current > updated {
        Rollout::Waiting(format!(
            "{} old replicas pending termination",
            current - updated
        ))
    } else if available < updated {
        Rollout::Waiting(format!("{available}/{updated} updated replicas available"))
    } else {
        Rollout::Done(format!(
            "{available}/{wanted} replicas updated and available"
        ))
    }
}

fn message(state: &Rollout) -> &str {
    match state {
        Rollout::Done(m) | Rollout::Waiting(m) | Rollout::Failed(m) => m,
    }
}

/// Watches the Deployment until its rollout is done, with a spinner; fails
/// when the controller gives up or after `timeout`, saying where it stood.
pub async fn wait(client: &Client, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let state_of = |deployment: Option<&Deployment>| {
        deployment
            .map(rollout)
            .unwrap_or_else(|| Rollout::Waiting("not found".into()))
    };
    let finished = |deployment: Option<&Deployment>| {
        let state = state_of(deployment);
        spinner.set_message(format!("Deployment {name}: {}", message(&state)));
        !matches!(state, Rollout::Waiting(_))
    };
    let outcome = tokio::time::timeout(timeout, await_condition(api.clone(), name, finished)).await;
    let state = match outcome {
        Ok(watched) => state_of(
            watched
                .with_context(|| format!("watching Deployment {name} in {namespace}"))?
                .as_ref(),
        ),
        Err(_elapsed) => {
            let now = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading Deployment {name} in {namespace}"))?;
            spinner.abandon();
            bail!(
                "waiting for Deployment {name} in {namespace} to roll out: {} after {}s (check `kubectl -n {namespace} rollout status deployment {name}`)",
                message(&state_of(now.as_ref())),
                timeout.as_secs()
            );
        }
    };
    match state {
        Rollout::Done(text) => {
            spinner.finish_with_message(format!("Deployment {name}: {text}"));
            eprintln!(
                "{:<55} rolled out ({text})",
                format!("Deployment/{name} in {namespace}")
            );
            Ok(())
        }
        other => {
            spinner.abandon();
            bail!(
                "Deployment {name} in {namespace} did not roll out: {}",
                message(&other)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "privatize", "generation": generation},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"spec": {"containers": [{"name": "x"}]}}
            },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn available_old_replicas_do_not_finish_a_rollout() {
        // maxUnavailable 0: the old pods stay available while the new one starts.
        let old_generation = deployment(
            2,
            serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(
            rollout(&old_generation),
            Rollout::Waiting("generation 2 not yet observed by the Deployment controller".into())
        );
        let surging = deployment(
            2,
            serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
        );
        assert_eq!(
            rollout(&surging),
            Rollout::Waiting("1/2 replicas updated".into())
        );
        let draining = deployment(
            2,
            serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
        );
        assert_eq!(
            rollout(&draining),
            Rollout::Waiting("1 old replicas pending termination".into())
        );
        let starting = deployment(
            2,
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        );
        assert_eq!(
            rollout(&starting),
            Rollout::Waiting("1/2 updated replicas available".into())
        );
    }

    #[test]
    fn a_rollout_is_done_when_the_new_generation_is_updated_and_available() {
        let done = deployment(
            2,
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(
            rollout(&done),
            Rollout::Done("2/2 replicas updated and available".into())
        );
    }

    #[test]
    fn an_exceeded_progress_deadline_fails_at_once() {
        let stuck = deployment(
            2,
            serde_json::json!({
                "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"privatize-2\" has timed out progressing."}]
            }),
        );
        assert_eq!(
            rollout(&stuck),
            Rollout::Failed(
                "progress deadline exceeded: ReplicaSet \"privatize-2\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn zero_replicas_are_rolled_out_at_once_even_before_the_controller_looks() {
        let mut none = deployment(1, serde_json::Value::Null);
        none.spec.as_mut().unwrap().replicas = Some(0);
        assert_eq!(rollout(&none), Rollout::Done("0 replicas wanted".into()));
    }

    #[test]
    fn a_new_deployment_without_status_waits_for_the_controller() {
        let fresh = deployment(1, serde_json::Value::Null);
        assert_eq!(
            rollout(&fresh),
            Rollout::Waiting("generation 1 not yet observed by the Deployment controller".into())
        );
    }
}
