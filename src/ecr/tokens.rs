//! Edge: ECR login tokens cached per region and shared by every caller, reused for
//! at most an hour after they were fetched, with one GetAuthorizationToken per
//! region in flight at a time however many callers ask at once.
//!
//! The cache is keyed by region only: a token belongs to the AWS identity that
//! fetched it, and one process has one identity (the SDK's credential chain).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Result};
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{authorization_token, client, Token};

/// How long a fetched token is handed out: a 12-hour token is then written with at
/// least 11 hours left, and a thousand Secrets cost one call per region, not a thousand.
pub const MAX_AGE: Duration = Duration::from_secs(3600);

type Flight = Shared<BoxFuture<'static, Result<Token, Arc<str>>>>;
type FetchObserver = Box<dyn Fn(&str) + Send + Sync>;

/// ECR tokens by region.
pub struct TokenCache {
    max_age: Duration,
    regions: Mutex<HashMap<String, Arc<Region>>>,
    on_fetch: Arc<Option<FetchObserver>>,
}

#[derive(Default)]
struct Region {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<aws_sdk_ecr::Client>,
    token: Option<(Token, Instant)>,
    flight: Option<Flight>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenCache {
    /// Tokens reused for [`MAX_AGE`].
    pub fn new() -> Self {
        Self::with_max_age(MAX_AGE)
    }

    /// Tokens reused for `max_age` after they were fetched (tests use seconds).
    pub fn with_max_age(max_age: Duration) -> Self {
        Self {
            max_age,
            regions: Mutex::default(),
            on_fetch: Arc::new(None),
        }
    }

    /// Calls `observer` with the region after each successful GetAuthorizationToken
    /// (for metrics).
    pub fn on_fetch(mut self, observer: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_fetch = Arc::new(Some(Box::new(observer)));
        self
    }

    /// The cached token of `region` when it is still fresh; never calls AWS (for
    /// admissions with `dryRun: true`).
    pub fn cached(&self, region: &str) -> Option<Token> {
        let region = self.region(region);
        let state = lock(&region.state);
        self.fresh(&state)
    }

    /// A fresh token for `region`: the cached one, or one fetched now. Callers that
    /// ask while a fetch is under way wait for that fetch and share its result,
    /// failure included; a failure is not cached, so the next caller tries again.
    /// A token whose reported expiry is already past counts as valid for 12 hours
    /// from its fetch (see [`super::token_expiry`]), so nothing refetches in a loop.
    pub async fn token(&self, region: &str) -> Result<Token> {
        let entry = self.region(region);
        let flight = {
            let mut state = lock(&entry.state);
            if let Some(token) = self.fresh(&state) {
                return Ok(token);
            }
            match &state.flight {
                Some(flight) => flight.clone(),
                None => {
                    // Spawned, so a caller that gives up (its admission budget ran
                    // out) does not cancel the fetch the others wait for.
                    let task = tokio::spawn(fetch(
                        entry.clone(),
                        region.to_string(),
                        self.on_fetch.clone(),
                    ));
                    let flight = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(Arc::from(format!("the token fetch task failed: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    state.flight = Some(flight.clone());
                    flight
                }
            }
        };
        flight.await.map_err(|e| anyhow!("{e}"))
    }

    fn region(&self, region: &str) -> Arc<Region> {
        lock(&self.regions)
            .entry(region.to_string())
            .or_default()
            .clone()
    }

    fn fresh(&self, state: &State) -> Option<Token> {
        let (token, fetched) = state.token.as_ref()?;
        (fetched.elapsed() < self.max_age && token.expires_at > SystemTime::now())
            .then(|| token.clone())
    }
}

/// One GetAuthorizationToken for `region`; stores the token (or nothing, on
/// failure) and ends the flight.
async fn fetch(
    entry: Arc<Region>,
    region: String,
    on_fetch: Arc<Option<FetchObserver>>,
) -> Result<Token, Arc<str>> {
    let result = fetch_token(&entry, &region).await;
    let mut state = lock(&entry.state);
    state.flight = None;
    match result {
        Ok(token) => {
            state.token = Some((token.clone(), Instant::now()));
            drop(state);
            tracing::info!(
                region,
                expires_at = %humantime::format_rfc3339_seconds(token.expires_at),
                "ECR token fetched"
            );
            if let Some(observer) = on_fetch.as_ref() {
                observer(&region);
            }
            Ok(token)
        }
        Err(err) => {
            let message = format!("{err:#}");
            tracing::warn!(region, error = %message, "ECR token fetch failed");
            Err(Arc::from(message))
        }
    }
}

async fn fetch_token(entry: &Region, region: &str) -> Result<Token> {
    let cached = lock(&entry.state).client.clone();
    let client = match cached {
        Some(client) => client,
        None => {
            let client = client(Some(region)).await?;
            lock(&entry.state).client = Some(client.clone());
            client
        }
    };
    authorization_token(&client).await
}

/// A poisoned lock only means another caller panicked mid-update of plain data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
