//! The verifier harness itself: each real verifier accepts artifacts signed by the distro's
//! own tools (rpmsign, debsigs, gpg) and rejects unsigned, tampered and wrong-key ones. Without
//! this, a verifier wrapper that always said "OK" would make every other test meaningless.

mod common;

#[test]
fn verifiers_accept_good_and_reject_bad_signatures_from_distro_tools() {
    let out = common::ok(std::process::Command::new("bash").arg(common::repo().join("tests/support/selftest.sh")));
    assert!(out.contains("ok   - "), "selftest ran no checks:\n{out}");
    assert!(!out.contains("FAIL - "), "{out}");
}
