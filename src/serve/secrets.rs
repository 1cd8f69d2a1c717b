//! The Secret webhook: validates managed Secrets (the typed request parsed by
//! `review`) and fails closed when no ECR login can be had now (one token
//! per region, cached, single flight), but returns no login: the credential
//! writer (`credentials.rs`) writes it through the API.

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use tracing::{debug, info, warn};

use super::setup::ecr_target;
use crate::cli::ServeArgs;
use crate::ecr::tokens::TokenCache;
use crate::mutate::secrets::{registries_needed, Settings};

/// Everything the Secret path needs between admissions.
pub struct Secrets {
    settings: Settings,
    tokens: Arc<TokenCache>,
}

impl Secrets {
    pub async fn new(args: &ServeArgs, tokens: Arc<TokenCache>) -> Result<Self> {
        let settings = Settings {
            registry: ecr_target(args).await?,
        };
        match &settings.registry {
            Some(registry) => info!(
                registry = %registry.host,
                region = %registry.region,
                "managed Secrets get logins for the ECR target"
            ),
            None => {
                info!("no ECR target: managed Secrets get logins only for the registries they list")
            }
        }
        Ok(Self { settings, tokens })
    }

    /// The settings the credential writer shares.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Answers one Secret admission: validates a managed Secret and fails
    /// closed (denies, naming the registry and the error) when no ECR login
    /// can be had now, but never returns a login (DESIGN §11): serve's
    /// credential writer writes it through the Kubernetes API right after.
    /// A dry run fetches nothing.
    pub async fn admit(&self, request: AdmissionRequest<Secret>) -> AdmissionResponse {
        let response = AdmissionResponse::from(&request);
        let registries = match registries_needed(&request, &self.settings) {
            Ok(registries) => registries,
            Err(denial) => {
                warn!(uid = %request.uid, reason = %denial, "managed Secret denied");
                return response.deny(denial);
            }
        };
        if request.dry_run {
            return response;
        }
        let mut asked = Vec::new();
        for registry in &registries {
            if asked.contains(&registry.region) {
                continue;
            }
            asked.push(registry.region.clone());
            if let Err(err) = self.tokens.token(&registry.region).await {
                let message = format!(
                    "getting an ECR token for {} (region {}): {err:#}",
                    registry.host, registry.region
                );
                warn!(uid = %request.uid, error = %message, "managed Secret denied");
                return response.deny(message);
            }
        }
        if !registries.is_empty() {
            // The HTTP layer's `admission` line is the one info line per review.
            debug!(uid = %request.uid, registries = ?registries.iter().map(|r| &r.host).collect::<Vec<_>>(), "managed Secret admitted; serve writes its logins");
        }
        response
    }
}
