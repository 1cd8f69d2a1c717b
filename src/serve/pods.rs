//! The pod webhook and the gate controller. STUB: the shell of `serve` calls
//! this API; the decision, copy Jobs and gate replace these bodies.

use std::sync::Arc;

use anyhow::Result;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::DynamicObject;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::cli::ServeArgs;

/// Everything the pod path needs between admissions.
pub struct Pods {}

impl Pods {
    pub async fn new(
        _args: &ServeArgs,
        _client: kube::Client,
        _metrics: Arc<Metrics>,
    ) -> Result<Self> {
        Ok(Self {})
    }

    /// Never fails: internal errors answer allowed-unchanged with a warning.
    pub async fn admit(&self, request: AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(&request)
    }

    /// The gate controller; returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}
