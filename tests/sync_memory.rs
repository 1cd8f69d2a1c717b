//! Blobs stream: copying a 210 MiB layer must not hold it in memory.

mod common;

use std::process::Stdio;

use common::{mirrored_repository, prefix, sha256, testbed};

/// Well below the 210 MiB layer: buffering it whole could not fit.
const RSS_LIMIT_KIB: i64 = 96 * 1024;

#[test]
// The child is reaped with wait4 below, which also reports its peak RSS.
#[allow(clippy::zombie_processes)]
fn memory_does_not_grow_with_layer_size() {
    let tb = testbed();
    let (reference, digest) = tb.image("large");
    let p = prefix("memory");
    let log = std::env::temp_dir().join(format!("{p}.log"));
    let mut cmd = tb.privatize();
    cmd.args([
        "sync-image",
        "--target-kind",
        "ecr",
        "--to",
        &format!("{}/{p}", tb.target()),
        &reference,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call; `usage` is a valid out-parameter for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "copy of the large image failed:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        usage.ru_maxrss < RSS_LIMIT_KIB,
        "peak RSS {} KiB for a 210 MiB layer",
        usage.ru_maxrss
    );

    let (code, bytes) = tb.target_manifest(&mirrored_repository(&p, "test/large"), "v1");
    assert_eq!((code, sha256(&bytes)), (200, digest));
}
