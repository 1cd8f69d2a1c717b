//! Pure: the guarded JSON Patches that take privatize's marks off a pod —
//! release (gate and label), revert (recorded originals back, then the
//! gate), and dropping the copy-pending label. Each `test`s what it changes
//! first, so two replicas (or serve and `uninstall`) never release twice or
//! undo each other. Used by serve's gate and by `uninstall`.

use json_patch::{PatchOperation, RemoveOperation, ReplaceOperation, TestOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::record::{gate_index, originals, COPY_PENDING_LABEL, GATE, GATED_LABEL};

/// Removes the gate and the label, guarded by a `test` that the gate is
/// still where we saw it. `None` when the pod carries no gate. Also what a
/// refused revert falls back to: the pod is released with its images as they are.
pub fn release_patch(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let mut ops = gate_guard(pod)?;
    ops.extend(label_removal(pod, GATED_LABEL));
    Some(ops)
}

/// Sets the images of the containers `names` back to their recorded originals (the
/// gate passes only those whose record it verified), then removes the gate
/// and label.
pub fn revert_patch(pod: &Pod, names: &[&str]) -> Option<Vec<PatchOperation>> {
    let mut ops = gate_guard(pod)?;
    let originals = originals(pod).unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (field, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            if !names.contains(&c.name.as_str()) {
                continue;
            }
            let (Some(current), Some(original)) = (c.image.as_deref(), originals.get(&c.name))
            else {
                continue;
            };
            if current == original {
                continue;
            }
            let path = format!("/spec/{field}/{i}/image");
            ops.push(PatchOperation::Test(TestOperation {
                path: pointer(&path),
                value: Value::String(current.to_string()),
            }));
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: pointer(&path),
                value: Value::String(original.clone()),
            }));
        }
    }
    ops.extend(label_removal(pod, GATED_LABEL));
    Some(ops)
}

/// Drops the copy-pending label (guarded by a `test` of its value).
pub fn unpend_patch(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let path = pointer(&format!("/metadata/labels/{}", escape(COPY_PENDING_LABEL)));
    pod.metadata
        .labels
        .as_ref()?
        .get(COPY_PENDING_LABEL)
        .map(|value| {
            vec![
                PatchOperation::Test(TestOperation {
                    path: path.clone(),
                    value: Value::String(value.clone()),
                }),
                PatchOperation::Remove(RemoveOperation { path }),
            ]
        })
}

fn gate_guard(pod: &Pod) -> Option<Vec<PatchOperation>> {
    let index = gate_index(pod)?;
    let gates = format!("/spec/schedulingGates/{index}");
    Some(vec![
        PatchOperation::Test(TestOperation {
            path: pointer(&format!("{gates}/name")),
            value: Value::String(GATE.to_string()),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&gates),
        }),
    ])
}

fn label_removal(pod: &Pod, label: &str) -> Option<PatchOperation> {
    let labels = pod.metadata.labels.as_ref()?;
    labels.contains_key(label).then(|| {
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&format!("/metadata/labels/{}", escape(label))),
        })
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn pointer(path: &str) -> json_patch::jsonptr::PointerBuf {
    json_patch::jsonptr::PointerBuf::parse(path).expect("paths built here are valid JSON pointers")
}
