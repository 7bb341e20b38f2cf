//! Signing a large RPM streams the payload: peak memory stays near the header's size.

mod common;

use common::*;

/// Runs `cmd` and returns (success, its own peak RSS in KiB), measured with wait4.
fn run_measured(cmd: &mut std::process::Command) -> (bool, i64) {
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid, writing into locals we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as libc::pid_t);
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, ru.ru_maxrss)
}

#[test]
fn signing_a_256_mib_rpm_does_not_load_the_payload() {
    let env = Env::new();
    let cert = env.generate("big", "rsa4096");
    let fx = env.path("big");
    let size: u64 = 256 * 1024 * 1024;
    ok(std::process::Command::new("bash")
        .arg(repo().join("tests/support/fixtures.sh"))
        .args(["rpm"])
        .arg(&fx)
        .args(["huge", &size.to_string()]));
    let rpm = fx.join("huge-1.0-1.noarch.rpm");
    assert!(std::fs::metadata(&rpm).unwrap().len() > size, "fixture is smaller than its payload");

    // Baseline: the same key signing a tiny package. Unsealing alone costs Argon2id's 64 MiB.
    let small = env.fixtures().join("rpm/hello-1.0-1.noarch.rpm");
    let (success, base) =
        run_measured(env.signet().args(["sign", "--key", "big", "--out"]).arg(env.path("small")).arg(&small));
    assert!(success, "signet sign (small) failed");

    let out = env.path("out");
    let (success, peak) = run_measured(env.signet().args(["sign", "--key", "big", "--out"]).arg(&out).arg(&rpm));
    assert!(success, "signet sign failed");
    assert!(
        peak < base + 16 * 1024,
        "signing 256 MiB peaked at {peak} KiB, a 6 KiB package at {base} KiB: the payload is being buffered"
    );
    accepts("verify_rpm", &[&cert, &out.join("huge-1.0-1.noarch.rpm")]);
}
