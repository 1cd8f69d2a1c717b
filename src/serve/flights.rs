//! A small keyed cache with single flight: concurrent callers for one key
//! share one running lookup, and its answer is kept for a time the answer
//! itself chooses. Used for presence HEADs and copy-Job creation, so a burst
//! of admissions for one new image costs one call, not a thousand.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, (V, Duration)>>;

struct Entry<V: Clone> {
    started: Instant,
    flight: Flight<V>,
}

/// Keyed single-flight cache.
pub struct Flights<V: Clone> {
    entries: Mutex<HashMap<String, Entry<V>>>,
}

impl<V: Clone + Send + Sync + 'static> Default for Flights<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    /// The cached or in-flight answer for `key`, or a new one from `lookup`,
    /// which returns the answer and how long to keep it. The flag says
    /// whether the answer was shared (a cache hit or a joined flight).
    pub async fn get<F>(&self, key: &str, lookup: impl FnOnce() -> F) -> (V, bool)
    where
        F: Future<Output = (V, Duration)> + Send + 'static,
    {
        let (flight, shared) = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let fresh = entries.get(key).filter(|entry| match entry.flight.peek() {
                None => true,
                Some((_, keep)) => entry.started + *keep > now,
            });
            match fresh {
                Some(entry) => (entry.flight.clone(), true),
                None => {
                    if entries.len() > 10_000 {
                        entries.retain(|_, e| match e.flight.peek() {
                            None => true,
                            Some((_, keep)) => e.started + *keep > now,
                        });
                    }
                    let flight = lookup().boxed().shared();
                    entries.insert(
                        key.to_string(),
                        Entry {
                            started: now,
                            flight: flight.clone(),
                        },
                    );
                    (flight, false)
                }
            }
        };
        (flight.await.0, shared)
    }

    /// Forgets a key, so the next `get` looks it up again.
    pub fn forget(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_lookup() {
        let flights = Arc::new(Flights::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, calls) = (flights.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .get("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (7, Duration::from_secs(60))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().0, 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_with_no_lifetime_is_not_reused() {
        let flights = Flights::<u32>::default();
        let (a, shared_a) = flights.get("k", || async { (1, Duration::ZERO) }).await;
        let (b, shared_b) = flights.get("k", || async { (2, Duration::ZERO) }).await;
        assert_eq!((a, shared_a, b, shared_b), (1, false, 2, false));
        let (c, _) = flights
            .get("k", || async { (3, Duration::from_secs(60)) })
            .await;
        let (d, shared_d) = flights
            .get("k", || async { (4, Duration::from_secs(60)) })
            .await;
        assert_eq!((c, d, shared_d), (3, 3, true));
        flights.forget("k");
        assert_eq!(
            flights.get("k", || async { (5, Duration::ZERO) }).await.0,
            5
        );
    }
}
