//! The ECR token cache against moto, through a counting front: GetAuthorizationToken
//! calls per region are counted where they reach the API. Each test uses regions
//! of its own, so the tests can share the front and run at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use common::aws_counter::{AwsCounter, GET_AUTHORIZATION_TOKEN};
use privatize::ecr::tokens::TokenCache;

/// moto's deterministic password for the default account.
const MOTO_PASSWORD: &str = "123456789012-auth-token";
/// How long the front holds each GetAuthorizationToken: every concurrent caller
/// arrives while the first call is still under way.
const HOLD: Duration = Duration::from_millis(400);

/// The counting front, with the AWS SDK of this process pointed at it (set once,
/// before any client exists).
fn counter() -> &'static AwsCounter {
    static COUNTER: OnceLock<AwsCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let moto = common::testbed().env["MOTO_ENDPOINT"].clone();
        let counter = AwsCounter::start(&moto, HOLD);
        let none = std::env::temp_dir().join("privatize-no-aws-config");
        for (key, value) in [
            ("AWS_ENDPOINT_URL", counter.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_MAX_ATTEMPTS", "1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", none.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", none.display().to_string()),
        ] {
            std::env::set_var(key, value);
        }
        counter
    })
}

fn fetches(region: &str) -> usize {
    counter().calls(GET_AUTHORIZATION_TOKEN, region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_lookups_make_one_call_per_region() {
    counter();
    let observed = Arc::new(AtomicUsize::new(0));
    let seen = observed.clone();
    let cache = Arc::new(TokenCache::new().on_fetch(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let regions = ["eu-west-1", "us-west-2"];
    let lookups: Vec<_> = (0..200)
        .map(|i| {
            let cache = cache.clone();
            let region = regions[i % 2];
            tokio::spawn(async move { cache.token(region).await })
        })
        .collect();
    for lookup in lookups {
        let token = lookup.await.unwrap().unwrap();
        assert_eq!(token.username, "AWS");
        assert_eq!(token.password, MOTO_PASSWORD);
    }
    for region in regions {
        assert_eq!(
            fetches(region),
            1,
            "GetAuthorizationToken calls in {region}"
        );
    }
    assert_eq!(observed.load(Ordering::SeqCst), 2, "fetches observed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_expiry_from_moto_counts_as_twelve_hours_and_nothing_refetches() {
    counter();
    let region = "ap-southeast-1";
    let cache = TokenCache::new();
    let before = SystemTime::now();
    let token = cache.token(region).await.unwrap();
    // moto reports 2015-01-01: the token is trusted for 12 h from its fetch.
    let twelve_hours = Duration::from_secs(12 * 3600);
    assert!(token.expires_at >= before + twelve_hours);
    assert!(token.expires_at <= SystemTime::now() + twelve_hours);
    for _ in 0..50 {
        assert_eq!(
            cache.token(region).await.unwrap().expires_at,
            token.expires_at
        );
    }
    assert_eq!(fetches(region), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_older_than_max_age_is_fetched_again() {
    counter();
    let region = "eu-central-1";
    let cache = TokenCache::with_max_age(Duration::from_secs(1));
    assert!(cache.cached(region).is_none());
    cache.token(region).await.unwrap();
    assert!(cache.cached(region).is_some());
    cache.token(region).await.unwrap();
    assert_eq!(fetches(region), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(cache.cached(region).is_none(), "stale after max age");
    cache.token(region).await.unwrap();
    assert_eq!(fetches(region), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_lookups_never_call_aws() {
    counter();
    let region = "sa-east-1";
    let cache = TokenCache::new();
    for _ in 0..10 {
        assert!(cache.cached(region).is_none());
    }
    tokio::time::sleep(HOLD).await;
    assert_eq!(fetches(region), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_shared_by_its_waiters_and_not_cached() {
    let counter = counter();
    let region = "ca-central-1";
    counter.fail_next(region, 1);
    let cache = Arc::new(TokenCache::new());
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token(region).await })
        })
        .collect();
    for lookup in lookups {
        let error = lookup.await.unwrap().unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.starts_with("getting an ECR authorization token: ")
                && message.contains("injected failure"),
            "{message}"
        );
    }
    assert_eq!(fetches(region), 1, "one call for every waiter");
    assert!(cache.cached(region).is_none());
    let token = cache.token(region).await.unwrap();
    assert_eq!(token.password, MOTO_PASSWORD);
    assert_eq!(fetches(region), 2, "the failure was not cached");
}
