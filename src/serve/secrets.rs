//! The Secret webhook: ECR credential injection into managed Secrets. STUB:
//! the shell of `serve` calls this API; injection replaces these bodies.

use std::sync::Arc;

use anyhow::Result;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::DynamicObject;

use super::metrics::Metrics;
use crate::cli::ServeArgs;

/// Everything the Secret path needs between admissions (token cache, ...).
pub struct Secrets {}

impl Secrets {
    pub async fn new(
        _args: &ServeArgs,
        _client: kube::Client,
        _metrics: Arc<Metrics>,
    ) -> Result<Self> {
        Ok(Self {})
    }

    /// Answers one Secret admission. This webhook is `failurePolicy: Fail`:
    /// a failure denies with a message.
    pub async fn admit(&self, request: AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(&request).deny("ECR credential injection is not implemented yet")
    }
}
