//! The gate timeout holds whatever other tenants do (DESIGN §11, "Bounded
//! work"): 1,000 gated pods of 100 images from 10 namespaces, against a
//! target registry whose manifest HEADs take 300 ms, are all released or
//! reverted within `--gate-timeout` plus one sweep of their creation, and the
//! copy Jobs running at once never pass the cap. The test plays the Job
//! controller: most copies run and succeed, some fail, and a tenth never
//! finish (their pods wait for the gate timeout).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use tokio::sync::Mutex;

use super::common::front::{Action, Front};
use super::common::kube::TestNamespace;
use super::common::serve_gate::{complete_job, run_job_command, GateServe};
use super::{common, gates, image, pod, SERIAL};

const NAMESPACES: usize = 10;
const IMAGES: usize = 100;
const PODS: usize = 1000;
const GATE_TIMEOUT: Duration = Duration::from_secs(25);
const SWEEP: Duration = Duration::from_secs(5);
/// serve's default `--max-copy-jobs`.
const MAX_JOBS: usize = 20;

/// What becomes of the copy of image `k`: it runs and lands, fails, or never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Lands,
    Fails,
    Hangs,
}

fn fate(k: usize) -> Fate {
    match k % 10 {
        9 => Fate::Hangs,
        k if k % 2 == 1 => Fate::Fails,
        _ => Fate::Lands,
    }
}

/// Tags `tag-0..tag-99` of the testbed's tiny image in the source registry.
fn push_tags(tag: &str) -> Vec<String> {
    let tb = common::testbed();
    let (tiny, _) = tb.image("tiny");
    let reference = privatize::image::ImageRef::parse(&tiny).unwrap();
    let (status, manifest) =
        tb.source_manifest(&reference.repository, reference.tag.as_deref().unwrap());
    assert_eq!(status, 200);
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    let body = std::env::temp_dir().join(format!("privatize-scale-{}", common::unique()));
    std::fs::write(&body, &manifest).unwrap();
    (0..IMAGES)
        .map(|k| {
            let url = format!(
                "http://{}/v2/{}/manifests/{tag}-{k}",
                tb.source(),
                reference.repository
            );
            let out = Command::new("curl")
                .args(["-sf", "-X", "PUT", "-H"])
                .arg(format!("Content-Type: {media_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", body.display()))
                .arg(&url)
                .output()
                .unwrap();
            assert!(out.status.success(), "pushing {url}");
            format!("{}/{}:{tag}-{k}", tb.source(), reference.repository)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_gated_pods_of_a_hundred_images_all_settle_within_the_gate_timeout_and_a_sweep()
{
    let _serial = SERIAL.lock().await;
    let tb = common::testbed();
    let sources = push_tags(&format!("scale-{}", common::unique() % 1_000_000));
    // A slow target: the source registry again, behind a front whose manifest HEADs take 300 ms.
    let front = Front::start(tb.source(), |method, path| {
        if method == "HEAD" && path.contains("/manifests/") {
            Action::ForwardAfter(Duration::from_millis(300))
        } else {
            Action::Forward
        }
    });
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        namespaces.push(TestNamespace::new(&format!("gate-scale-{i}")).await);
    }
    let target = format!("{}/scale-{}", front.addr, common::unique() % 1_000_000);
    let plain = format!("{},{}", front.addr, tb.source());
    let timeout = format!("{}s", GATE_TIMEOUT.as_secs());
    let sweep = format!("{}s", SWEEP.as_secs());
    let mut serve = GateServe::start(
        &namespaces[0],
        &[
            "--target-registry",
            &target,
            "--target-kind",
            "registry",
            "--plain-http",
            &plain,
            "--gate-timeout",
            &timeout,
            "--sweep-interval",
            &sweep,
        ],
    )
    .await;
    for ns in &namespaces[1..] {
        serve.register(ns).await;
    }
    let jobs_ns = namespaces[0].name.clone();
    let client = namespaces[0].client.clone();

    // The Job controller, played: lands, fails or leaves each copy by its image.
    let stop = Arc::new(tokio::sync::Notify::new());
    let most_running = Arc::new(Mutex::new(0usize));
    let controller = {
        let (client, jobs_ns, stop, most_running) = (
            client.clone(),
            jobs_ns.clone(),
            stop.clone(),
            most_running.clone(),
        );
        let index: HashMap<String, usize> = sources
            .iter()
            .enumerate()
            .map(|(k, s)| (s.clone(), k))
            .collect();
        tokio::spawn(async move {
            let api: Api<Job> = Api::namespaced(client.clone(), &jobs_ns);
            let mut handled = std::collections::HashSet::new();
            loop {
                let jobs = api.list(&ListParams::default()).await.unwrap().items;
                let running = jobs
                    .iter()
                    .filter(|j| {
                        j.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_none()
                    })
                    .count();
                let mut most = most_running.lock().await;
                *most = (*most).max(running);
                drop(most);
                let new: Vec<Job> = jobs
                    .into_iter()
                    .filter(|j| handled.insert(j.uid().unwrap_or_default()))
                    .collect();
                stream::iter(new)
                    .for_each_concurrent(4, |job| {
                        let (client, jobs_ns, index) = (client.clone(), jobs_ns.clone(), &index);
                        async move {
                            let source = job.annotations()["privatize.io/source"].clone();
                            match fate(index[&source]) {
                                Fate::Hangs => {}
                                Fate::Fails => complete_job(&client, &jobs_ns, &job, false).await,
                                Fate::Lands => {
                                    let copy = job.clone();
                                    let out =
                                        tokio::task::spawn_blocking(move || run_job_command(&copy))
                                            .await
                                            .unwrap();
                                    assert!(out.status.success(), "{}", common::stderr(&out));
                                    complete_job(&client, &jobs_ns, &job, true).await;
                                }
                            }
                        }
                    })
                    .await;
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        })
    };

    // 1,000 pods, 16 created at once, pod i in namespace i % 10 with image i % 100.
    // A pod whose image landed meanwhile is rewritten at once, with no gate.
    let started = Instant::now();
    let gated = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    stream::iter(0..PODS)
        .for_each_concurrent(16, |i| {
            let ns = &namespaces[i % NAMESPACES];
            let source = &sources[i % IMAGES];
            let gated = gated.clone();
            async move {
                let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
                let created = pods
                    .create(&PostParams::default(), &pod(&format!("p{i}"), source))
                    .await
                    .unwrap();
                if !gates(&created).is_empty() {
                    gated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
        .await;
    let gated = gated.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{PODS} pods created in {:.1} s, {gated} of them gated",
        started.elapsed().as_secs_f64()
    );
    assert!(gated >= PODS / 2, "only {gated} pods were gated");

    // Watch them settle: released (the mirrored image) or reverted (the source).
    let bound = GATE_TIMEOUT + SWEEP;
    let mut settled: HashMap<String, (Duration, bool)> = HashMap::new();
    let deadline = Instant::now() + bound + Duration::from_secs(60);
    while settled.len() < PODS && Instant::now() < deadline {
        for ns in &namespaces {
            let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
            for p in pods.list(&ListParams::default()).await.unwrap() {
                let key = format!("{}/{}", ns.name, p.name_any());
                if settled.contains_key(&key) || !gates(&p).is_empty() {
                    continue;
                }
                // When serve's patch landed, as the apiserver recorded it
                // (managedFields), not when this loop noticed.
                let created = p.creation_timestamp().unwrap().0;
                let patched = p
                    .metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter_map(|f| f.time.as_ref().map(|t| t.0))
                    .max()
                    .unwrap_or(created);
                let waited = (patched - created)
                    .total(k8s_openapi::jiff::Unit::Second)
                    .unwrap()
                    .max(0.0);
                let released = image(&p) != sources[index_of(&p)];
                settled.insert(key, (Duration::from_secs_f64(waited), released));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.notify_one();
    controller.await.unwrap();

    assert_eq!(settled.len(), PODS, "pods still gated after the bound");
    let mut waits: Vec<Duration> = settled.values().map(|(w, _)| *w).collect();
    waits.sort();
    let slowest = *waits.last().unwrap();
    eprintln!(
        "time from creation to release or revert: median {:.1} s, p99 {:.1} s, max {:.1} s",
        waits[waits.len() / 2].as_secs_f64(),
        waits[waits.len() * 99 / 100].as_secs_f64(),
        slowest.as_secs_f64()
    );
    let released = settled.values().filter(|(_, r)| *r).count();
    eprintln!(
        "all settled; slowest {:.1} s after its creation (bound {:.0} s); {released} released, {} reverted; at most {} copy Jobs ran at once",
        slowest.as_secs_f64(),
        bound.as_secs_f64(),
        PODS - released,
        *most_running.lock().await
    );
    // managedFields times have a resolution of one second.
    assert!(
        slowest <= bound + Duration::from_secs(1),
        "a pod waited {slowest:?}, past the gate timeout and one sweep ({bound:?})"
    );
    // Only a copy that landed releases a pod; a landing copy held back by the
    // caps (hanging copies keep their slots) may still time out.
    for (key, (_, was_released)) in &settled {
        let i: usize = key.rsplit("/p").next().unwrap().parse().unwrap();
        if fate(i % IMAGES) != Fate::Lands {
            assert!(!was_released, "pod {key} ({:?}) released", fate(i % IMAGES));
        }
    }
    assert!(released >= 100, "only {released} pods released");
    assert!(
        *most_running.lock().await <= MAX_JOBS,
        "more than {MAX_JOBS} copy Jobs ran at once"
    );
    drop(serve);
}

/// The image index of pod `p<i>`.
fn index_of(pod: &Pod) -> usize {
    pod.name_any()
        .trim_start_matches('p')
        .parse::<usize>()
        .unwrap()
        % IMAGES
}
