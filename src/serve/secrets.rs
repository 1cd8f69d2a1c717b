//! The Secret webhook: fresh ECR logins injected into managed Secrets. Takes
//! the typed Secret request (parsed by `review`), looks up one token per region
//! (cached, single flight), and answers with `mutate::secrets`' decision. Fails closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use tracing::{debug, info, warn};

use super::metrics::Metrics;
use super::setup::ecr_target;
use crate::cli::ServeArgs;
use crate::ecr::tokens::TokenCache;
use crate::ecr::Token;
use crate::mutate::secrets::{decide, registries_needed, Decision, Settings};

/// Everything the Secret path needs between admissions.
pub struct Secrets {
    settings: Settings,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
}

impl Secrets {
    pub async fn new(
        args: &ServeArgs,
        metrics: Arc<Metrics>,
        tokens: Arc<TokenCache>,
    ) -> Result<Self> {
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
        Ok(Self {
            settings,
            tokens,
            metrics,
        })
    }

    /// Answers one Secret admission. This webhook is `failurePolicy: Fail`: a
    /// managed Secret that cannot get fresh logins is denied, with a message
    /// naming the registry and the error.
    pub async fn admit(&self, request: AdmissionRequest<Secret>) -> AdmissionResponse {
        let response = AdmissionResponse::from(&request);
        let registries = match registries_needed(&request, &self.settings) {
            Ok(registries) => registries,
            Err(denial) => {
                warn!(uid = %request.uid, reason = %denial, "managed Secret denied");
                return response.deny(denial);
            }
        };
        let mut tokens: HashMap<String, Token> = HashMap::new();
        let mut by_region: HashMap<&str, Token> = HashMap::new();
        for registry in &registries {
            let token = match by_region.get(registry.region.as_str()) {
                Some(token) => token.clone(),
                // dryRun fetches nothing: only a cached token may be shown.
                None if request.dry_run => match self.tokens.cached(&registry.region) {
                    Some(token) => token,
                    None => {
                        let message = format!(
                            "dry run: no ECR token for {} is cached, so the Secret is shown \
                             without its login (a real request fetches one)",
                            registry.host
                        );
                        return with_warning(response, message);
                    }
                },
                None => match self.tokens.token(&registry.region).await {
                    Ok(token) => token,
                    Err(err) => {
                        let message = format!(
                            "getting an ECR token for {} (region {}): {err:#}",
                            registry.host, registry.region
                        );
                        warn!(uid = %request.uid, error = %message, "managed Secret denied");
                        return response.deny(message);
                    }
                },
            };
            by_region.insert(&registry.region, token.clone());
            tokens.insert(registry.host.clone(), token);
        }
        match decide(&request, &self.settings, &tokens, SystemTime::now()) {
            Ok(Decision::Unchanged(_)) => response,
            Ok(Decision::Inject(injection)) => {
                let expires_at = humantime::format_rfc3339_seconds(injection.expires_at);
                match response.with_patch(json_patch::Patch(injection.patch)) {
                    Ok(response) => {
                        if !request.dry_run {
                            self.metrics.secret_injected();
                        }
                        // The HTTP layer's `admission` line is the one info line per review.
                        debug!(
                            uid = %request.uid,
                            registries = ?injection.registries,
                            %expires_at,
                            dry_run = request.dry_run,
                            "ECR logins injected"
                        );
                        response
                    }
                    Err(err) => AdmissionResponse::from(&request)
                        .deny(format!("encoding the Secret patch: {err}")),
                }
            }
            Err(denial) => {
                warn!(uid = %request.uid, reason = %denial, "managed Secret denied");
                response.deny(denial)
            }
        }
    }
}

fn with_warning(mut response: AdmissionResponse, message: String) -> AdmissionResponse {
    response.warnings.get_or_insert_with(Vec::new).push(message);
    response
}
