//! The review memory budget: what every admission review in flight may hold
//! together, across connections, and one review's share of it, given back
//! when the review is answered (or its client goes away).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use warp::http::StatusCode;

use crate::serve::metrics::Metrics;
use crate::serve::review::Refusal;

/// The memory every review in flight may hold together, across all
/// connections: request bytes while they are read, then what the parsed
/// review takes (as `review::parse_review` charges it) until it is answered.
pub struct ReviewBudget {
    limit: usize,
    held: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl ReviewBudget {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved by reviews in flight.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// `bytes` of the budget for one review, if they are free now.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: self.clone(),
            held: 0,
        };
        reservation.grow(bytes).then_some(reservation)
    }

    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if taken {
            self.metrics.review_memory_held(bytes as i64);
        }
        taken
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::SeqCst);
        self.metrics.review_memory_held(-(bytes as i64));
    }

    /// The 429 for a review that does not fit now.
    pub fn busy(&self) -> Refusal {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "serve's review memory budget is in use ({} of {} held by reviews in flight); try again",
                mib(self.held()),
                mib(self.limit)
            ),
        )
    }
}

/// One review's share of the budget, given back when dropped.
pub struct Reservation {
    budget: Arc<ReviewBudget>,
    held: usize,
}

impl Reservation {
    /// Takes `bytes` more; `false` (and nothing taken) when they are not free.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let taken = self.budget.take(bytes);
        if taken {
            self.held += bytes;
        }
        taken
    }

    /// Gives back up to `bytes`.
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.give_back(bytes);
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// `bytes` as MiB with one decimal, for refusal messages.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_budget_and_give_it_back() {
        let budget = ReviewBudget::new(100, Arc::new(Metrics::new()));
        let mut first = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none(), "only 40 left");
        assert!(!first.grow(41));
        assert_eq!(first.held(), 60);
        let second = budget.reserve(40).unwrap();
        assert_eq!(budget.held(), 100);
        first.release(50);
        assert_eq!(budget.held(), 50);
        drop(second);
        drop(first);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.busy().status, StatusCode::TOO_MANY_REQUESTS);
    }
}
