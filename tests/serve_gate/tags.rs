//! Mutable tags follow their source (`--tag-drift`): a pod of a mirrored tag
//! whose source tag moved starts from the current copy, ungated; under
//! `warn` the admission says so (kubectl prints it) and the metric counts
//! it; under `sync` one copy Job moves the mirror's tag to what the source
//! tag is now, and never to a build the source tag has left.

use super::*;

/// A tag of its own in the source registry, pointing at `test/tiny`'s image:
/// (its reference, the digest it points at).
fn own_source_tag(prefix: &str) -> (String, String) {
    let tb = common::testbed();
    let source = format!("{}/{prefix}/app:v1", tb.source());
    let digest = move_source_tag(&source, "tiny");
    (source, digest)
}

/// Points the source tag at a test image's build; its digest.
fn move_source_tag(source: &str, image: &str) -> String {
    let tb = common::testbed();
    let (reference, digest) = tb.image(image);
    let out = tb
        .privatize()
        .args(["sync-image", &reference, "--target", source])
        .args(["--target-kind", "registry", "--copy-referrers=false"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    digest
}

/// Creates a pod with kubectl, which prints the admission's warnings: its stderr.
fn kubectl_create(ns: &TestNamespace, name: &str, image: &str) -> String {
    let kubeconfig = common::kube::kubeconfig_path();
    let kubectl = kubeconfig.parent().unwrap().join("bin/kubectl");
    let manifest = serde_json::to_string(&pod(name, image)).unwrap();
    let path = std::env::temp_dir().join(format!("privatize-pod-{}.json", common::unique()));
    std::fs::write(&path, manifest).unwrap();
    let out = std::process::Command::new(kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args(["create", "-n", &ns.name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl create: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_warn_a_drifted_tag_is_reported_and_the_pod_runs_the_current_copy() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("drift-warn").await;
    let serve = GateServe::start(&ns, &["--tag-recheck-interval", "3s"]).await;
    let prefix = common::prefix("drift-warn");
    let (source, old) = own_source_tag(&prefix);
    common::assert_ok(&serve.sync(&source));
    let target = serve.target_of(&source);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);

    // In step: no warning.
    let said = kubectl_create(&ns, "before", &source);
    assert!(!said.contains("Warning"), "{said}");
    assert_eq!(
        serve.metric("privatize_tags_drifted_total{done=\"warned\"}"),
        0.0
    );

    // The source tag moves on (a rebuild upstream). Within the interval the
    // answer read for "before" stands (no HEAD per admission) ...
    let new = move_source_tag(&source, "oci-single");
    let said = kubectl_create(&ns, "cached", &source);
    assert!(
        !said.contains("Warning"),
        "read again within the interval: {said}"
    );
    // ... and once it has passed, the next pod is told, and runs the
    // mirror's copy at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let said = kubectl_create(&ns, "after", &source);
    let expected = format!(
        "Warning: {target}: the mirror's v1 is {old}, {source} is {new} now: the pod runs the mirror's copy (PRIVATIZE_TAG_DRIFT=warn)"
    );
    assert!(said.contains(&expected), "{said}\nwanted: {expected}");
    let after = pods.get("after").await.unwrap();
    assert_eq!(image(&after), target);
    assert!(gates(&after).is_empty());
    // (The periodic pass, every 3 s here, may have counted the earlier pods too.)
    assert!(serve.metric("privatize_tags_drifted_total{done=\"warned\"}") >= 1.0);
    assert!(serve
        .log()
        .contains("a mirrored tag drifted from its source"));
    // Nothing moved, no Job.
    assert_eq!(target_digest(&target), old);
    assert!(jobs_now(&ns).await.is_empty());

    // Told again for the next pod, from what was read.
    let said = kubectl_create(&ns, "third", &source);
    assert!(said.contains(&expected), "{said}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_sync_one_job_moves_the_tag_forward_and_never_back() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("drift-sync").await;
    let serve = GateServe::start(&ns, &["--tag-drift", "sync"]).await;
    let prefix = common::prefix("drift-sync");
    let (source, old) = own_source_tag(&prefix);
    common::assert_ok(&serve.sync(&source));
    let target = serve.target_of(&source);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);

    let new = move_source_tag(&source, "oci-single");
    let said = kubectl_create(&ns, "first", &source);
    assert!(
        said.contains("a copy Job moves the tag (PRIVATIZE_TAG_DRIFT=sync)"),
        "{said}"
    );
    let first = pods.get("first").await.unwrap();
    assert_eq!(image(&first), target);
    assert!(gates(&first).is_empty(), "a drifted tag gates nothing");
    // One Job, for the source pinned at what its tag is now; a second pod adds none.
    kubectl_create(&ns, "second", &source);
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1, "one copy Job");
    let args = jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[1], format!("{source}@{new}"), "{args:?}");
    assert_eq!(args[3], format!("{target}@{new}"), "{args:?}");
    assert_eq!(
        serve.metric("privatize_tags_drifted_total{done=\"synced\"}"),
        2.0
    );

    // The Job moves the mirror's tag to the new build.
    let out = run_job_command(&jobs[0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    assert_eq!(target_digest(&target), new);
    // One run per build: a later pod (the drift still cached) does not run
    // that Job again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    kubectl_create(&ns, "third", &source);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = jobs_now(&ns).await;
    assert_eq!(now.len(), 1);
    assert_eq!(
        now[0].uid(),
        jobs[0].uid(),
        "the finished Job was run again"
    );

    // Never back: the source tag moves again before the next Job runs; that
    // Job (pinned at the build the tag has left) leaves the tag alone.
    let newer = move_source_tag(&source, "docker-single");
    let (stale_source, stale_target) = (format!("{source}@{old}"), format!("{target}@{old}"));
    let out = common::testbed()
        .privatize()
        .args([
            "sync-image",
            &stale_source,
            "--target",
            &stale_target,
            "--target-kind",
            "ecr",
        ])
        .output()
        .unwrap();
    common::assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tag v1 not moved"));
    assert_eq!(target_digest(&target), new, "the tag went back");
    assert_ne!(newer, new);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_pass_tells_every_pod_of_a_drifted_tag_with_an_event() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("drift-pass").await;
    let serve = GateServe::start(&ns, &["--tag-recheck-interval", "2s"]).await;
    let prefix = common::prefix("drift-pass");
    let (source, old) = own_source_tag(&prefix);
    common::assert_ok(&serve.sync(&source));
    let target = serve.target_of(&source);
    // Two pods admitted in step (no warning), and one that runs the mirror
    // under a record its tenant forged (it names another source).
    for name in ["one", "two"] {
        let said = kubectl_create(&ns, name, &source);
        assert!(!said.contains("Warning"), "{said}");
    }
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // The forged record names an image that exists and differs from the
    // mirror's: believed, it would be a drift, and under sync a copy of the
    // tenant's image onto the shared tag.
    let evil = format!("{}/{prefix}/evil:v1", common::testbed().source());
    move_source_tag(&evil, "docker-single");
    let mut forged = pod("forged", &target);
    forged.metadata.annotations = Some(BTreeMap::from([(
        "privatize.io/original-images".to_string(),
        json!({ "app": evil }).to_string(),
    )]));
    pods.create(&PostParams::default(), &forged).await.unwrap();

    // The source tag moves; no pod is admitted: the pass finds both.
    let new = move_source_tag(&source, "oci-single");
    let expected = format!("{target}: the mirror's v1 is {old}, {source} is {new} now");
    for name in ["one", "two"] {
        let start = Instant::now();
        let notes = loop {
            let notes: Vec<String> = events(&ns, name, "TagDrifted")
                .await
                .into_iter()
                .filter_map(|e| e.note)
                .collect();
            if !notes.is_empty() || start.elapsed() > Duration::from_secs(20) {
                break notes;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(notes.len(), 1, "{name}: {notes:?}\n{}", serve.log());
        assert!(notes[0].starts_with(&expected), "{notes:?}");
    }
    // Told once per pod and build: a few more passes add no Event.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(events(&ns, "one", "TagDrifted").await.len(), 1);
    assert!(
        events(&ns, "forged", "TagDrifted").await.is_empty(),
        "a forged record was believed"
    );
    assert_eq!(
        serve.metric("privatize_tags_drifted_total{done=\"warned\"}"),
        1.0
    );
    assert_eq!(image(&pods.get("one").await.unwrap()), target);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pin_digests_every_pod_runs_the_copy_it_was_admitted_with() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("drift-pin").await;
    let serve = GateServe::start(
        &ns,
        &[
            "--pin-digests",
            "--tag-drift",
            "sync",
            "--tag-recheck-interval",
            "1s",
        ],
    )
    .await;
    let prefix = common::prefix("drift-pin");
    let (source, old) = own_source_tag(&prefix);
    common::assert_ok(&serve.sync(&source));
    let target = serve.target_of(&source);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);

    kubectl_create(&ns, "first", &source);
    assert_eq!(
        image(&pods.get("first").await.unwrap()),
        format!("{target}@{old}")
    );
    // The source moves and the mirror follows (sync): the running pod keeps
    // its bytes.
    let new = move_source_tag(&source, "oci-single");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let said = kubectl_create(&ns, "second", &source);
    assert!(said.contains("a copy Job moves the tag"), "{said}");
    assert_eq!(
        image(&pods.get("second").await.unwrap()),
        format!("{target}@{old}"),
        "admitted with the copy that is there now"
    );
    let jobs = copy_jobs(&ns).await;
    let out = run_job_command(&jobs[0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(target_digest(&target), new);
    assert_eq!(
        image(&pods.get("first").await.unwrap()),
        format!("{target}@{old}")
    );
    drop(serve);
}
