//! The copy Jobs' extra CA certificates (DESIGN §10): serve's `--ca-file`
//! certificates reach every Job through the ConfigMap `install --ca-file`
//! creates, never through serve's own paths (a Job cannot see them). At
//! start serve checks the ConfigMap holds every one of them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume, VolumeMount};
use kube::api::Api;
use kube::Client;
use tracing::warn;

use crate::copy_job::{self, CA_CONFIG_MAP, CA_DIR, CA_KEY, CA_VOLUME};

/// Time the ConfigMap read may take at start.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The ConfigMap as a Job volume, mounted read-only at `CA_DIR`.
pub fn volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: CA_CONFIG_MAP.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: CA_VOLUME.into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// Fails, in one line saying how to fix it, unless the ConfigMap exists in
/// `namespace` and holds every certificate of `files`. An API that cannot be
/// reached skips the check with a warning: serve starts without the API.
pub async fn check(client: &Client, namespace: &str, files: &[PathBuf]) -> Result<()> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let found = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(CA_CONFIG_MAP)).await {
        Ok(Ok(found)) => found,
        Ok(Err(err @ kube::Error::Api(_))) => {
            return Err(err)
                .with_context(|| format!("reading ConfigMap {CA_CONFIG_MAP} in {namespace}"))
        }
        // serve starts without the API (/readyz says so): the check is then skipped.
        Ok(Err(err)) => {
            warn!(error = %err, config_map = CA_CONFIG_MAP, %namespace, "Kubernetes API not reachable: the copy Jobs' CA ConfigMap is not checked");
            return Ok(());
        }
        Err(_) => {
            warn!(config_map = CA_CONFIG_MAP, %namespace, "Kubernetes API did not answer: the copy Jobs' CA ConfigMap is not checked");
            return Ok(());
        }
    };
    let Some(found) = found else {
        bail!(
            "ConfigMap {CA_CONFIG_MAP} not found in {namespace}: copy Jobs get serve's --ca-file certificates from it; \
             create it with `privatize install --ca-file FILE ...` (or `kubectl -n {namespace} create configmap \
             {CA_CONFIG_MAP} --from-file={CA_KEY}=FILE`)"
        );
    };
    let bundle = found
        .data
        .as_ref()
        .and_then(|d| d.get(CA_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    for file in files {
        let pem =
            std::fs::read(file).with_context(|| format!("reading CA file {}", file.display()))?;
        let missing = copy_job::missing_from(&pem, bundle.as_bytes())
            .with_context(|| format!("reading CA file {}", file.display()))?;
        if missing > 0 {
            bail!(
                "ConfigMap {CA_CONFIG_MAP} in {namespace} lacks {missing} certificate(s) of CA file {}: \
                 copy Jobs would not trust them; update it with `privatize install --ca-file FILE ...` \
                 naming every CA file serve is given",
                file.display()
            );
        }
    }
    Ok(())
}
