//! `uninstall`'s promise that no pod is left gated (DESIGN §11): once the
//! webhook configuration is gone (no new pod is gated), every pod still at
//! privatize's gate gets its recorded original images back for the images
//! under this installation's target, and the gate and label removed; the
//! copy-pending label goes too. Reverting needs no registry: the original is
//! what the pod's owner wrote.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::image::{ImageRef, TargetRegistry};
use crate::mutate::record::{is_gated, originals, under_target, COPY_PENDING_LABEL, GATED_LABEL};
use crate::mutate::settle::{revert_patch, unpend_patch};

/// What settling did.
#[derive(Debug, Default)]
pub struct Settled {
    /// Gated pods released (their mirrored images set back).
    pub released: usize,
    /// Copy-pending pods whose label was removed.
    pub unpended: usize,
    /// Pods that could not be patched (each named on stderr).
    pub failed: usize,
}

/// The target registry serve runs with (`ECR_REGISTRY` of its Deployment),
/// or `given` when there is no Deployment to read.
pub async fn installed_target(
    client: &Client,
    namespace: &str,
    deployment: &str,
    given: Option<&str>,
) -> Result<Option<TargetRegistry>> {
    let found = match Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(deployment)
        .await
    {
        Ok(found) => found,
        // The chart's pre-delete hook may not read Deployments: it is given the target.
        Err(kube::Error::Api(s)) if s.code == 403 => None,
        Err(err) => {
            return Err(err).with_context(|| format!("reading Deployment {namespace}/{deployment}"))
        }
    };
    let from_deployment = found.and_then(|d| {
        d.spec?
            .template
            .spec?
            .containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == "ECR_REGISTRY")
            .and_then(|e| e.value.clone())
    });
    match from_deployment.as_deref().or(given) {
        Some(text) if !text.trim().is_empty() => Ok(Some(TargetRegistry::parse(text)?)),
        _ => Ok(None),
    }
}

/// Releases every gated pod with images under `target` (those set back to
/// their originals; every gated pod when the target is unknown) and drops
/// every copy-pending label.
pub async fn settle_pods(client: &Client, target: Option<&TargetRegistry>) -> Result<Settled> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut settled = Settled::default();
    for (label, gated) in [(GATED_LABEL, true), (COPY_PENDING_LABEL, false)] {
        let listed = pods
            .list(&ListParams::default().labels(&format!("{label}=true")))
            .await
            .with_context(|| format!("listing pods labelled {label}"))?;
        for pod in listed {
            let ops = if gated {
                let ours = ours(&pod, target);
                // Another installation's pod (nothing under this target) is its own to release.
                if !is_gated(&pod) || (target.is_some() && ours.is_empty()) {
                    continue;
                }
                revert_patch(&pod, &ours)
            } else {
                unpend_patch(&pod)
            };
            let Some(ops) = ops else { continue };
            let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let result = Api::<Pod>::namespaced(client.clone(), &namespace)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Json::<()>(json_patch::Patch(ops)),
                )
                .await;
            match result {
                Ok(_) if gated => settled.released += 1,
                Ok(_) => settled.unpended += 1,
                // Gone, or settled by serve meanwhile.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => {
                    settled.failed += 1;
                    eprintln!("warning: releasing pod {namespace}/{name}: {err}");
                }
            }
        }
    }
    Ok(settled)
}

/// The containers whose recorded original is set back: those whose image
/// lies under the target (any, when it is unknown).
fn ours<'p>(pod: &'p Pod, target: Option<&TargetRegistry>) -> Vec<&'p str> {
    let recorded = originals(pod).unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter(|c| recorded.contains_key(&c.name))
        .filter(
            |c| match (target, c.image.as_deref().map(ImageRef::parse)) {
                (None, _) => true,
                (Some(target), Some(Ok(image))) => under_target(&image, target),
                _ => false,
            },
        )
        .map(|c| c.name.as_str())
        .collect()
}
