//! The pod webhook's other paths against the apiserver: its own errors
//! (an unreachable target, a refused Job) admit the pod unchanged and are
//! counted, a dry run starts no Job, the `always` and `exists` policies, and
//! a pruned image gets its Job replaced.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::ResourceExt;

use super::common::kube::TestNamespace;
use super::common::serve_gate::{complete_job, run_job_command, GateServe};
use super::{
    common, copy_jobs, events, gates, image, is_released, jobs_when, pod, settled_jobs, wait_for,
    SERIAL,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_allows_the_pod_unchanged_and_counts_it() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-down").await;
    // Nothing listens on port 1: every presence check fails.
    let serve = GateServe::start(&ns, &["--target-registry", "127.0.0.1:1/mirror"]).await;
    let (source, _) = common::testbed().image("tiny");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("as-is", &source))
        .await
        .unwrap();
    assert_eq!(image(&created), source);
    assert!(gates(&created).is_empty());
    assert!(settled_jobs(&ns).await.is_empty());
    assert_eq!(
        serve.metric("privatize_images_allowed_unchanged_total{reason=\"presence_unknown\"}"),
        1.0
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_copy_job_keeps_the_pod_gated_until_the_gate_timeout_reverts_it() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-nojob").await;
    // Jobs go to a namespace being deleted (with its CA ConfigMap, which serve
    // checks at start): the apiserver refuses them.
    let jobs = TestNamespace::new("gate-nojob-jobs").await;
    let serve = GateServe::start(
        &ns,
        &[
            "--copy-job-namespace",
            &jobs.name,
            "--gate-timeout",
            "4s",
            // A missing image: gated only where private sources are allowed.
            "--private-source-namespaces",
            "*",
        ],
    )
    .await;
    Api::<Namespace>::all(ns.client.clone())
        .delete(&jobs.name, &Default::default())
        .await
        .unwrap();
    let source = format!(
        "{}/test/refused:v{}",
        common::testbed().source(),
        common::unique()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("waits", &source))
        .await
        .unwrap();
    // Copies start once the pod exists: the admission gates it as usual.
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    let (reverted, _) = wait_for(&pods, "waits", "reverted", is_released).await;
    assert_eq!(image(&reverted), source);
    assert!(
        serve.log().contains("copy Job not created"),
        "{}",
        serve.log()
    );
    let warnings = events(&ns, "waits", "MirrorFailed").await;
    assert_eq!(warnings.len(), 1);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_admission_rewrites_but_creates_no_job() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-dry").await;
    // A missing image: gated only where private sources are allowed.
    let serve = GateServe::start(&ns, &["--private-source-namespaces", "*"]).await;
    let source = format!(
        "{}/test/dry:v{}",
        common::testbed().source(),
        common::unique()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = pods.create(&params, &pod("dry", &source)).await.unwrap();
    assert_eq!(image(&answered), serve.target_of(&source));
    assert_eq!(gates(&answered), ["privatize.io/mirror"]);
    assert!(
        settled_jobs(&ns).await.is_empty(),
        "a dry run created a Job"
    );
    assert!(pods.get_opt("dry").await.unwrap().is_none());
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_policy_always_rewrites_at_once_and_exists_keeps_the_original_until_the_copy_lands() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-policy").await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let serve = GateServe::start(&ns, &["--swap-policy", "always"]).await;
    let (source, _) = common::testbed().image("docker-list");
    let created = pods
        .create(&PostParams::default(), &pod("always", &source))
        .await
        .unwrap();
    assert_eq!(image(&created), serve.target_of(&source));
    assert!(gates(&created).is_empty());
    assert_eq!(created.labels()["privatize.io/copy-pending"], "true");
    assert_eq!(copy_jobs(&ns).await.len(), 1);
    // Its copy started, the label goes.
    wait_for(&pods, "always", "unlabelled", |p| {
        !p.labels().contains_key("privatize.io/copy-pending")
    })
    .await;
    drop(serve);

    let ns = TestNamespace::new("gate-policy-exists").await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let serve = GateServe::start(
        &ns,
        &["--swap-policy", "exists", "--presence-cache-ttl", "1s"],
    )
    .await;
    let first = pods
        .create(&PostParams::default(), &pod("first", &source))
        .await
        .unwrap();
    assert_eq!(
        image(&first),
        source,
        "exists: the first pod keeps the original"
    );
    assert!(gates(&first).is_empty());
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1, "exists: the copy still starts");
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = pods
        .create(&PostParams::default(), &pod("later", &source))
        .await
        .unwrap();
    assert_eq!(
        image(&later),
        serve.target_of(&source),
        "exists: a later pod gets the copy"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_image_is_noticed_and_its_finished_job_replaced() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-pruned").await;
    let serve = GateServe::start(&ns, &["--presence-cache-ttl", "1s"]).await;
    let (source, _) = common::testbed().image("oci-single");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod("before", &source))
        .await
        .unwrap();
    let jobs = copy_jobs(&ns).await;
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    wait_for(&pods, "before", "released", is_released).await;
    let present = pods
        .create(&PostParams::default(), &pod("present", &source))
        .await
        .unwrap();
    assert!(gates(&present).is_empty());

    common::serve_gate::prune_from_target(&serve.target_of(&source));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = pods
        .create(&PostParams::default(), &pod("after", &source))
        .await
        .unwrap();
    assert_eq!(
        gates(&after),
        ["privatize.io/mirror"],
        "the pruned image was not noticed"
    );
    let first_uid = jobs[0].uid();
    let replaced = jobs_when(&ns, "the finished Job replaced", |jobs| {
        jobs.len() == 1 && jobs[0].uid() != first_uid
    })
    .await;
    assert_eq!(replaced[0].name_any(), jobs[0].name_any());
    assert_ne!(
        replaced[0].uid(),
        jobs[0].uid(),
        "the finished Job was not replaced"
    );
    drop(serve);
}
