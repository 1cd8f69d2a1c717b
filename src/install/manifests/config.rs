//! The ConfigMaps serve reads its copy-Job settings from: the pod template
//! (`--copy-job-pod-template`) and the extra CA certificates (`--ca-file`),
//! with the volumes, mounts and env that bring them into serve's container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, EnvVar, Volume, VolumeMount};

use super::{meta, Settings};
use crate::copy_job::{
    CA_CONFIG_MAP, CA_DIR, CA_KEY, CA_VOLUME, TEMPLATE_CONFIG_MAP, TEMPLATE_DIR, TEMPLATE_KEY,
    TEMPLATE_VOLUME,
};

/// One ConfigMap privatize may render: name, key, mount, env var and content.
struct Mounted<'a> {
    config_map: &'static str,
    key: &'static str,
    volume: &'static str,
    dir: &'static str,
    env: &'static str,
    content: Option<&'a String>,
}

fn all(s: &Settings) -> [Mounted<'_>; 2] {
    [
        Mounted {
            config_map: TEMPLATE_CONFIG_MAP,
            key: TEMPLATE_KEY,
            volume: TEMPLATE_VOLUME,
            dir: TEMPLATE_DIR,
            env: "PRIVATIZE_COPY_JOB_POD_TEMPLATE",
            content: s.copy_job_pod_template.as_ref(),
        },
        Mounted {
            config_map: CA_CONFIG_MAP,
            key: CA_KEY,
            volume: CA_VOLUME,
            dir: CA_DIR,
            env: "PRIVATIZE_CA_FILE",
            content: s.registry_ca.as_ref(),
        },
    ]
}

fn config_map(s: &Settings, name: &str, data: Option<(&str, &str)>) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, Some(&s.namespace)),
        data: data.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
        ..Default::default()
    }
}

/// The ConfigMaps that are set.
pub(super) fn config_maps(s: &Settings) -> Vec<ConfigMap> {
    all(s)
        .iter()
        .filter_map(|m| Some(config_map(s, m.config_map, Some((m.key, m.content?)))))
        .collect()
}

/// The ConfigMaps that are not set (deleted when an earlier install made them).
pub(super) fn unused_config_maps(s: &Settings) -> Vec<ConfigMap> {
    all(s)
        .iter()
        .filter(|m| m.content.is_none())
        .map(|m| config_map(s, m.config_map, None))
        .collect()
}

/// serve's env, volumes and mounts for the ConfigMaps that are set.
pub(super) fn server_wiring(s: &Settings) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let (mut env, mut volumes, mut mounts) = (Vec::new(), Vec::new(), Vec::new());
    for m in all(s).iter().filter(|m| m.content.is_some()) {
        env.push(EnvVar {
            name: m.env.into(),
            value: Some(format!("{}/{}", m.dir, m.key)),
            ..Default::default()
        });
        volumes.push(Volume {
            name: m.volume.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: m.config_map.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: m.volume.into(),
            mount_path: m.dir.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (env, volumes, mounts)
}

/// The annotation on serve's pod template that follows the ConfigMaps'
/// content, so that a new template or CA bundle rolls serve out (it reads
/// them at start). None when neither is set.
pub(super) fn config_hash(s: &Settings) -> Option<(String, String)> {
    let mounted = all(s);
    if mounted.iter().all(|m| m.content.is_none()) {
        return None;
    }
    let mut bytes = Vec::new();
    for m in &mounted {
        bytes.extend(m.content.map(String::as_bytes).unwrap_or_default());
        bytes.push(0);
    }
    let digest = crate::manifest::sha256_digest(&bytes);
    let hex = digest.trim_start_matches("sha256:");
    Some((CONFIG_HASH.to_string(), hex[..16].to_string()))
}

/// Annotation key of `config_hash`.
pub const CONFIG_HASH: &str = "privatize.io/config-hash";
