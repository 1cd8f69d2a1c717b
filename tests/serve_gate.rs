//! The pod flow against the real kube-apiserver and registries (DESIGN §4,
//! §10): `serve` registered by URL gates a pod whose image is missing,
//! starts one copy Job, and releases the pod once the test has run the Job's
//! own command and marked it complete, as a Job controller would; failures
//! revert the pod. The tests here share one lock: gated pods are watched
//! cluster-wide, so two gate tests at once would act on each other's pods.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use common::kube::TestNamespace;
use common::serve_gate::{complete_job, run_job_command, target_digest, GateServe};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Our errors, dry runs, the other swap policies and pruning (same lock).
#[path = "serve_gate/policies.rs"]
mod policies;

/// The copy-Job pod template and the CA ConfigMap (same lock).
#[path = "serve_gate/placing.rs"]
mod placing;

/// What a tenant can do through serve: forged records, caps, quota, private sources (same lock).
#[path = "serve_gate/tenants.rs"]
mod tenants;

/// Mutable tags follow their source: --tag-drift warn and sync (same lock).
#[path = "serve_gate/tags.rs"]
mod tags;

/// Platforms by what the cluster runs: --platforms auto (same lock).
#[path = "serve_gate/platforms.rs"]
mod platforms;

/// 1,000 gated pods settle within the gate timeout (same lock).
#[path = "serve_gate/scale.rs"]
mod scale;

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]}
    }))
    .unwrap()
}

async fn wait_for<F: Fn(&Pod) -> bool>(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    ok: F,
) -> (Pod, Duration) {
    let start = Instant::now();
    loop {
        let pod = pods.get(name).await.unwrap();
        if ok(&pod) {
            return (pod, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pod {name} never {what}: {:?}",
            pod.spec
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gates(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.name)
        .collect()
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

fn is_released(pod: &Pod) -> bool {
    gates(pod).is_empty() && !pod.labels().contains_key("privatize.io/gated")
}

/// The copy Jobs in the test namespace now.
async fn jobs_now(ns: &TestNamespace) -> Vec<Job> {
    Api::<Job>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=privatize"))
        .await
        .unwrap()
        .items
}

/// The copy Jobs once `ok` holds of them: the gate controller creates them
/// shortly after a pod exists, not in the admission.
async fn jobs_when(ns: &TestNamespace, what: &str, ok: impl Fn(&[Job]) -> bool) -> Vec<Job> {
    let start = Instant::now();
    loop {
        let jobs = jobs_now(ns).await;
        if ok(&jobs) {
            return jobs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: not after 15 s ({} Jobs)",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The copy Jobs, once there is one.
async fn copy_jobs(ns: &TestNamespace) -> Vec<Job> {
    jobs_when(ns, "a copy Job", |jobs| !jobs.is_empty()).await
}

/// The copy Jobs after the gate controller has had time to make any (2 s).
async fn settled_jobs(ns: &TestNamespace) -> Vec<Job> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    jobs_now(ns).await
}

async fn events(ns: &TestNamespace, pod: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_gated_copied_by_one_job_and_released() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-flow").await;
    let serve = GateServe::start(&ns, &[]).await;
    let tb = common::testbed();
    let (source, source_digest) = tb.image("oci-index");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);

    // 1. Admitted gated, with the private image, the label and the originals.
    let created = pods
        .create(&PostParams::default(), &pod("first", &source))
        .await
        .unwrap();
    let target = image(&created);
    assert_eq!(target, serve.target_of(&source));
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    assert_eq!(created.labels()["privatize.io/gated"], "true");
    let originals: BTreeMap<String, String> =
        serde_json::from_str(&created.annotations()["privatize.io/original-images"]).unwrap();
    assert_eq!(
        originals,
        BTreeMap::from([("app".to_string(), source.clone())])
    );
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1, "exactly one copy Job");
    let job = &jobs[0];
    let pod_spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod_spec.automount_service_account_token, Some(false));

    // 2. Play the Job controller: run the Job's own command line, then mark it complete.
    let out = run_job_command(job);
    assert!(
        out.status.success(),
        "the Job's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    complete_job(&ns.client, &ns.name, job, true).await;

    // 3. Released within seconds, after a fresh HEAD.
    let (released, took) = wait_for(&pods, "first", "released", is_released).await;
    eprintln!("gate released {took:?} after the Job was marked complete");
    assert_eq!(image(&released), target);
    let digest = target_digest(&target);
    assert_eq!(
        digest, source_digest,
        "the mirrored index keeps the source digest"
    );
    assert_eq!(events(&ns, "first", "ImageMirrored").await.len(), 1);

    // 4. A second pod for the same image: no gate, rewritten at once.
    let second = pods
        .create(&PostParams::default(), &pod("second", &source))
        .await
        .unwrap();
    assert_eq!(image(&second), target);
    assert!(gates(&second).is_empty());
    assert_eq!(
        settled_jobs(&ns).await.len(),
        1,
        "no second Job for an image already mirrored"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_pod_that_exited_0_releases_the_gate_before_its_job_is_marked_complete() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-copy-pod").await;
    // No sweep for an hour: only a watch event can release the pod.
    let serve = GateServe::start(&ns, &["--sweep-interval", "1h"]).await;
    let tb = common::testbed();
    let (source, _) = tb.image("oci-index");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod("app", &source))
        .await
        .unwrap();
    let job = copy_jobs(&ns).await.remove(0);
    let out = run_job_command(&job);
    assert!(out.status.success(), "{}", common::stderr(&out));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !is_released(&pods.get("app").await.unwrap()),
        "released with neither a finished copy pod nor a sweep"
    );

    // The Job's pod as the Job controller and kubelet leave it: Succeeded,
    // while the Job itself is not marked complete yet.
    let copy: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-x1", job.name_any()), "labels": {
            "app.kubernetes.io/managed-by": "privatize", "job-name": job.name_any()
        }},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "sync-image", "image": format!("{}/unused:1", tb.target())}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &copy).await.unwrap();
    pods.patch_status(
        &copy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let (_, took) = wait_for(&pods, "app", "released", is_released).await;
    eprintln!("released {took:?} after the copy pod succeeded");
    let job = Api::<Job>::namespaced(ns.client.clone(), &ns.name)
        .get(&job.name_any())
        .await
        .unwrap();
    assert!(job
        .status
        .and_then(|s| s.conditions)
        .is_none_or(|c| c.is_empty()));
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_reverts_the_pod_with_a_warning_event() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-fail").await;
    // The image does not exist, so anonymous access to it is refused: only in a
    // namespace allowed private sources is it gated and copied (and fails).
    let serve = GateServe::start(&ns, &["--private-source-namespaces", "*"]).await;
    let source = format!(
        "{}/test/does-not-exist:v{}",
        common::testbed().source(),
        common::unique()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("doomed", &source))
        .await
        .unwrap();
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1);
    let out = run_job_command(&jobs[0]);
    assert!(!out.status.success(), "copying a missing image must fail");
    complete_job(&ns.client, &ns.name, &jobs[0], false).await;
    let (reverted, _) = wait_for(&pods, "doomed", "reverted", is_released).await;
    assert_eq!(image(&reverted), source, "the original image is back");
    let warnings = events(&ns, "doomed", "MirrorFailed").await;
    assert_eq!(warnings.len(), 1);
    let note = warnings[0].note.clone().unwrap_or_default();
    assert!(
        note.contains(&source) && note.contains(&jobs[0].name_any()),
        "{note}"
    );
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gated_past_the_gate_timeout_is_reverted() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-timeout").await;
    // A missing image: gated only where private sources are allowed (see above).
    let serve = GateServe::start(
        &ns,
        &["--gate-timeout", "3s", "--private-source-namespaces", "*"],
    )
    .await;
    let source = format!(
        "{}/test/never-copied:v{}",
        common::testbed().source(),
        common::unique()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod("waits", &source))
        .await
        .unwrap();
    let (reverted, took) = wait_for(&pods, "waits", "reverted", is_released).await;
    assert!(
        took >= Duration::from_secs(2),
        "reverted before the timeout: {took:?}"
    );
    assert_eq!(image(&reverted), source);
    let warnings = events(&ns, "waits", "MirrorFailed").await;
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0]
        .note
        .as_deref()
        .unwrap_or_default()
        .contains("gate timeout"));
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_release_each_pod_exactly_once() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-two").await;
    let first = GateServe::start(&ns, &[]).await;
    let second = GateServe::start_unregistered(&ns, &first).await;
    let (source, _) = common::testbed().image("docker-single");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let names: Vec<String> = (0..6).map(|i| format!("twin-{i}")).collect();
    for name in &names {
        let created = pods
            .create(&PostParams::default(), &pod(name, &source))
            .await
            .unwrap();
        assert_eq!(gates(&created), ["privatize.io/mirror"]);
    }
    let jobs = copy_jobs(&ns).await;
    assert_eq!(settled_jobs(&ns).await.len(), 1, "one Job for six pods");
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    for name in &names {
        let (pod, _) = wait_for(&pods, name, "released", is_released).await;
        assert_eq!(image(&pod), first.target_of(&source));
    }
    // Give the slower replica time to try too, then count: never twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in &names {
        assert_eq!(
            events(&ns, name, "ImageMirrored").await.len(),
            1,
            "{name} released twice"
        );
    }
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_serve_settles_pods_gated_while_it_was_down() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-restart").await;
    let serve = GateServe::start(&ns, &[]).await;
    let (source, _) = common::testbed().image("oci-single");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod("patient", &source))
        .await
        .unwrap();
    let jobs = copy_jobs(&ns).await;
    let port = serve.https_port;
    drop(serve);
    // While serve is down the copy lands and the Job completes.
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gates(&pods.get("patient").await.unwrap()),
        ["privatize.io/mirror"]
    );
    let serve = GateServe::start_on(&ns, &[], port).await;
    wait_for(&pods, "patient", "released after the restart", is_released).await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_an_enabled_namespace_gets_the_managed_pull_secret_once() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-pull").await;
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"privatize.io/ecr-credentials": "enabled"}}}),
            ),
        )
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "privatize-ecr"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let serve = GateServe::start(&ns, &[]).await;
    let (source, _) = common::testbed().image("tiny");
    // Mirror it first, so the pods below are rewritten at once.
    let out = serve.sync(&source);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pull_secrets = |pod: &Pod| -> Vec<String> {
        pod.spec
            .as_ref()
            .unwrap()
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect()
    };
    let mut other = pod("with-other", &source);
    other.spec.as_mut().unwrap().image_pull_secrets =
        Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "mine".into(),
        }]);
    let created = pods.create(&PostParams::default(), &other).await.unwrap();
    assert_eq!(image(&created), serve.target_of(&source));
    assert_eq!(pull_secrets(&created), ["mine", "privatize-ecr"]);
    let mut already = pod("with-managed", &source);
    already.spec.as_mut().unwrap().image_pull_secrets =
        Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "privatize-ecr".into(),
        }]);
    let created = pods.create(&PostParams::default(), &already).await.unwrap();
    assert_eq!(pull_secrets(&created), ["privatize-ecr"]);
    drop(serve);
}
