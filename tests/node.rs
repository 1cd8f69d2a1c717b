//! On a real node (`testbed/cluster`: etcd, kube-apiserver, every controller,
//! the scheduler, containerd and a kubelet): pods really start from the
//! private copy, pulled with the credentials privatize injected, and the copy
//! Job really runs privatize's own image (built by `scripts/build-image`).

mod common;
#[path = "node/harness.rs"]
mod harness;
#[path = "referrers/harness.rs"]
mod referrers;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::Value;

use common::serve_gate::target_digest;
use harness::{
    gated, image_of, node, one_at_a_time, running_digest, source_digest, wait_for, System,
};

const SCRIPT: &str = "echo \"hello from $(hostname)\"; exec sleep 3600";

/// The copy Jobs of a system, once there are `count`.
async fn jobs(system: &System, count: usize) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(system.client.clone(), &system.namespace);
    let params = ListParams::default().labels("app.kubernetes.io/managed-by=privatize");
    wait_for(&format!("{count} copy Jobs"), 30, || async {
        let jobs = api.list(&params).await.unwrap().items;
        (jobs.len() == count).then_some(jobs)
    })
    .await
}

/// Waits for a Job's `Complete` or `Failed` condition; returns its type.
async fn finished(system: &System, job: &Job) -> String {
    let api: Api<Job> = Api::namespaced(system.client.clone(), &system.namespace);
    let name = job.name_any();
    wait_for(&format!("Job {name} to finish"), 120, || async {
        let job = api.get(&name).await.unwrap();
        job.status?
            .conditions?
            .into_iter()
            .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .map(|c| c.type_)
    })
    .await
}

/// Waits until a pod runs; returns it (with its image digest in `imageID`).
async fn running(system: &System, name: &str, seconds: u64) -> Pod {
    wait_for(&format!("pod {name} to run"), seconds, || async {
        let pod = system.pod_now(name).await;
        running_digest(&pod).map(|_| pod)
    })
    .await
}

/// The kubelet's `Pulled` notes for these pods, up to the first ` in ` (timings cut).
async fn kubelet_pulls(system: &System, pods: &[Pod]) -> Vec<String> {
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let events: Api<Event> = Api::namespaced(system.client.clone(), &system.apps);
    wait_for("the kubelet's Pulled events", 20, || async {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Pulled"))
            .filter(|e| {
                let name = e.regarding.as_ref().and_then(|r| r.name.clone());
                name.is_some_and(|n| names.contains(&n))
            })
            .filter_map(|e| e.note)
            .map(|n| n.split(" in ").next().unwrap_or_default().to_string())
            .collect();
        (notes.len() >= pods.len()).then_some(notes)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_gated_copied_by_privatizes_own_image_and_runs_from_the_private_copy() {
    let _one = one_at_a_time().await;
    let node = node();
    let system = System::start("gate").await;
    let source = node.app_image.clone();
    let source_digest = source_digest(&source);

    // 3. Two replicas: gated, rewritten, with the pull Secret; one copy Job.
    system.deployment("web", &source, 2, SCRIPT).await;
    let pods = system.pods("web", 2).await;
    let target = image_of(&pods[0]);
    assert!(
        target.starts_with(&format!("{}/", system.registry)),
        "{target}"
    );
    for pod in &pods {
        assert_eq!(image_of(pod), target);
        assert!(
            gated(pod),
            "{} was admitted without the gate",
            pod.name_any()
        );
        let secrets: Vec<&str> = pod
            .spec
            .as_ref()
            .unwrap()
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(secrets, ["privatize-ecr"]);
    }
    let jobs = jobs(&system, 1).await;

    // 4. The Job runs for real, in privatize's own image, and copies every platform.
    assert_eq!(
        finished(&system, &jobs[0]).await,
        "Complete",
        "serve: {}",
        system.serve_log()
    );
    let job_pods = Api::<Pod>::namespaced(system.client.clone(), &system.namespace)
        .list(&ListParams::default().labels(&format!("job-name={}", jobs[0].name_any())))
        .await
        .unwrap()
        .items;
    assert_eq!(job_pods.len(), 1);
    let job_pod = &job_pods[0];
    assert_eq!(image_of(job_pod), node.image);
    let id = &job_pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .image_id;
    assert!(
        id.ends_with(&node.image_digest),
        "{id} is not {}",
        node.image_digest
    );
    let log = node.log(job_pod, "sync-image");
    let result: Value = log
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("digest").is_some())
        })
        .unwrap_or_else(|| panic!("no sync-image result in the Job's log:\n{log}"));
    assert_eq!(result["digest"], source_digest.as_str(), "{result}");
    assert_eq!(target_digest(&target), source_digest);
    // Every platform: each child manifest of the source index is in the target.
    let (_, index) = common::testbed().source_manifest("testbed/busybox", "1.36");
    let index: Value = serde_json::from_slice(&index).unwrap();
    let repository = privatize::image::ImageRef::parse(&target)
        .unwrap()
        .repository;
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{index}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let (status, _) = common::testbed().target_manifest(&repository, digest);
        assert_eq!(status, 200, "{} {digest} not copied", child["platform"]);
    }
    assert_eq!(
        self::jobs(&system, 1).await.len(),
        1,
        "a second copy Job appeared"
    );

    // 5. Released, scheduled, pulled from the private copy with the injected
    //    Secret: both pods run it and say so.
    for pod in &pods {
        let pod = running(&system, &pod.name_any(), 60).await;
        assert!(!gated(&pod));
        assert_eq!(running_digest(&pod).unwrap(), source_digest);
        let log = wait_for("the app's log line", 20, || async {
            let log = node.log(&pod, "app");
            (!log.is_empty()).then_some(log)
        })
        .await;
        assert_eq!(log, format!("hello from {}\n", pod.name_any()));
    }
    // The node pulled the private copy (a 401 without the injected Secret);
    // containerStatuses[].image may name another tag of the same image.
    let pulled = kubelet_pulls(&system, &pods).await;
    assert!(
        pulled
            .iter()
            .any(|n| n == &format!("Successfully pulled image \"{target}\"")),
        "{pulled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_image_mirrored_by_a_copy_job_verifies_with_cosign_at_the_target() {
    let _one = one_at_a_time().await;
    let node = node();
    let tb = common::testbed();
    let cosign = referrers::tools();
    // busybox in a repository of its own in the "public" registry, signed
    // there with a local key: a sigstore bundle (an OCI 1.1 referrer, under
    // the referrers tag schema: distribution has no Referrers API) and a
    // legacy .sig tag.
    let source = format!(
        "{}/signed-{}/busybox:1.36",
        tb.source(),
        common::unique() % 1_000_000
    );
    let out = tb
        .privatize()
        .args(["sync-image", &node.app_image, "--target", &source])
        .args(["--target-kind", "registry"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let digest = source_digest(&source);
    let repository = source.rsplit_once(':').unwrap().0;
    cosign.sign(&format!("{repository}@{digest}"), true, false);
    cosign.sign(&format!("{repository}@{digest}"), true, true);

    // A pod of it: gated, copied by a Job in privatize's own image, running.
    let system = System::start("gate").await;
    let pod = system.pod("signed", &source, SCRIPT).await;
    let target = image_of(&pod);
    assert!(
        gated(&pod),
        "not gated: {target} {:?}\nserve: {}",
        pod.metadata.annotations,
        system.serve_log()
    );
    let jobs = jobs(&system, 1).await;
    assert_eq!(
        finished(&system, &jobs[0]).await,
        "Complete",
        "serve: {}",
        system.serve_log()
    );
    let pod = running(&system, "signed", 60).await;
    assert_eq!(running_digest(&pod).unwrap(), digest);

    // The Job brought both signatures along: cosign verifies the private copy.
    let mirrored = privatize::image::ImageRef::parse(&target).unwrap();
    let at = format!("{}/{}@{digest}", mirrored.host, mirrored.repository);
    for legacy in [false, true] {
        let verified = cosign.verify(&at, false, legacy);
        assert!(
            verified.status.success(),
            "cosign verify {at} (legacy: {legacy}): {}",
            common::stderr(&verified)
        );
    }
    let found = cosign.discover(&at, false);
    assert_eq!(found.len(), 1, "the bundle is listed: {found:?}");
    // serve counted them, from the Job's termination message.
    let copied = wait_for("the referrers metric", 20, || async {
        let n = system.metric("privatize_referrers_copied_total");
        (n > 0.0).then_some(n)
    })
    .await;
    assert_eq!(copied, 2.0, "the bundle and the .sig");
    assert_eq!(system.metric("privatize_referrers_skipped_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_for_real_reverts_and_releases_the_pods() {
    let _one = one_at_a_time().await;
    // An image that does not exist cannot be read anonymously either: only a
    // namespace allowed private sources gets it gated and copied (and failing).
    let system =
        System::start_with("gate", &[("PRIVATIZE_PRIVATE_SOURCE_NAMESPACES", "apps-*")]).await;
    let source = format!("{}/testbed/does-not-exist:1", common::testbed().source());
    system.deployment("ghost", &source, 2, SCRIPT).await;
    let pods = system.pods("ghost", 2).await;
    assert!(pods.iter().all(gated));
    let jobs = jobs(&system, 1).await;
    assert_eq!(finished(&system, &jobs[0]).await, "Failed");

    let api: Api<Pod> = Api::namespaced(system.client.clone(), &system.apps);
    for pod in &pods {
        let name = pod.name_any();
        let pod = wait_for(
            &format!("{name} to be reverted and released"),
            30,
            || async {
                let pod = api.get(&name).await.unwrap();
                (!gated(&pod)).then_some(pod)
            },
        )
        .await;
        assert_eq!(image_of(&pod), source);
        assert!(!pod.labels().contains_key("privatize.io/gated"));
    }
    // The Event follows the revert patch: wait for it.
    let events: Api<Event> = Api::namespaced(system.client.clone(), &system.apps);
    for pod in &pods {
        let notes = wait_for("the MirrorFailed Event", 20, || async {
            let notes: Vec<String> = events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("MirrorFailed")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(&pod.name_any())
                })
                .map(|e| e.note.unwrap_or_default())
                .collect();
            (!notes.is_empty()).then_some(notes)
        })
        .await;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains(&jobs[0].name_any()), "{notes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_swap_policy_always_the_pod_recovers_once_the_copy_lands() {
    let _one = one_at_a_time().await;
    let node = node();
    let system = System::start("always").await;
    let source = node.app_image.clone();
    let pod = system.pod("eager", &source, SCRIPT).await;
    assert!(!gated(&pod));
    let target = image_of(&pod);
    assert!(
        target.starts_with(&format!("{}/", system.registry)),
        "{target}"
    );
    let jobs = jobs(&system, 1).await;
    assert_eq!(finished(&system, &jobs[0]).await, "Complete");
    let pod = running(&system, "eager", 90).await;
    assert_eq!(running_digest(&pod).unwrap(), source_digest(&source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_swap_policy_exists_the_first_pod_runs_the_original_and_a_later_one_the_copy() {
    let _one = one_at_a_time().await;
    let node = node();
    let system = System::start("exists").await;
    let source = node.app_image.clone();
    let digest = source_digest(&source);
    let first = system.pod("first", &source, SCRIPT).await;
    assert_eq!(image_of(&first), source);
    let jobs = jobs(&system, 1).await;
    assert_eq!(finished(&system, &jobs[0]).await, "Complete");
    let first = running(&system, "first", 60).await;
    assert_eq!(running_digest(&first).unwrap(), digest);

    // The copy has landed (serve's presence cache may hold "missing" for a few seconds).
    let later = wait_for("a pod admitted with the copy", 30, || async {
        let name = format!("later-{}", common::unique() % 1_000_000);
        let pod = system.pod(&name, &source, SCRIPT).await;
        if image_of(&pod).starts_with(&system.registry) {
            return Some(pod);
        }
        system.delete_pod(&name).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        None
    })
    .await;
    let later = running(&system, &later.name_any(), 60).await;
    assert!(image_of(&later).starts_with(&format!("{}/", system.registry)));
    assert_eq!(running_digest(&later).unwrap(), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_pull_secret_a_pod_is_rewritten_only_where_its_node_can_pull_the_copy() {
    let _one = one_at_a_time().await;
    let node = node();
    let system = System::start_with("gate", &[("PRIVATIZE_REQUIRE_PULL_SECRET", "true")]).await;
    let source = node.app_image.clone();
    let digest = source_digest(&source);

    // Not enabled for ECR credentials: left as it is, and it runs the original.
    let plain = system.namespace("plain", false).await;
    let pod = system.pod_in(&plain, "plain", &source, SCRIPT).await;
    assert_eq!(image_of(&pod), source, "serve: {}", system.serve_log());
    assert!(!gated(&pod));
    let pod = wait_for("the unchanged pod to run", 60, || async {
        let pod = system.pod_now_in(&plain, "plain").await;
        running_digest(&pod).map(|_| pod)
    })
    .await;
    assert_eq!(running_digest(&pod).unwrap(), digest);

    // Enabled, but no pull Secret yet: serve creates it (login written), the
    // pod is rewritten with it, copied, and runs from the copy.
    let fresh = system.namespace("fresh", true).await;
    let secrets: Api<Secret> = Api::namespaced(system.client.clone(), &fresh);
    assert!(secrets.get_opt("privatize-ecr").await.unwrap().is_none());
    let pod = system.pod_in(&fresh, "fresh", &source, SCRIPT).await;
    let target = image_of(&pod);
    assert!(
        target.starts_with(&format!("{}/", system.registry)),
        "{target}; serve: {}",
        system.serve_log()
    );
    assert!(gated(&pod));
    let pull: Vec<&str> = pod
        .spec
        .as_ref()
        .unwrap()
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(pull, ["privatize-ecr"]);
    let created = secrets.get("privatize-ecr").await.unwrap();
    assert!(
        created
            .annotations()
            .contains_key("privatize.io/refreshed-at"),
        "{:?}",
        created.metadata
    );
    let jobs = jobs(&system, 1).await;
    assert_eq!(finished(&system, &jobs[0]).await, "Complete");
    let pod = wait_for("the rewritten pod to run", 90, || async {
        let pod = system.pod_now_in(&fresh, "fresh").await;
        running_digest(&pod).map(|_| pod)
    })
    .await;
    assert_eq!(image_of(&pod), target);
    assert_eq!(running_digest(&pod).unwrap(), digest);
}
