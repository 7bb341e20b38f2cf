//! Shared test support: run the real `signet` binary with a throwaway vault, build fixtures
//! with the real packaging tools, and check outputs with the real verifiers
//! (`tests/support/verifiers.sh`: rpmkeys, debsig-verify, gpg, sqv, apt-get, sha256sum).
#![allow(dead_code)]

pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn signet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_signet"))
}

/// Runs a command and returns its output, panicking only if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts failure and returns stdout+stderr.
#[track_caller]
pub fn fails(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(!o.status.success(), "{cmd:?} unexpectedly succeeded:\n{}", text(&o));
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A scratch directory with a vault and its passphrase file.
pub struct Env {
    pub dir: tempfile::TempDir,
}

pub const PASSPHRASE: &str = "correct horse battery staple 4711";

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("signet-test-").tempdir().expect("tempdir");
        std::fs::write(dir.path().join("passphrase"), format!("{PASSPHRASE}\n")).expect("write passphrase");
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `signet` with SIGNET_VAULT and SIGNET_VAULT_PASSPHRASE_FILE pointing into this env.
    pub fn signet(&self) -> Command {
        let mut c = Command::new(signet_bin());
        c.env("SIGNET_VAULT", format!("dir:{}", self.path("vault").display()))
            .env("SIGNET_VAULT_PASSPHRASE_FILE", self.path("passphrase"))
            .env_remove("RUST_LOG");
        c
    }

    /// Generates a key and writes its exported public key to `NAME.asc`; returns that path.
    pub fn generate(&self, name: &str, algo: &str) -> PathBuf {
        ok(self.signet().args([
            "keys",
            "generate",
            name,
            "--algo",
            algo,
            "--uid",
            &format!("{name} <{name}@example.org>"),
        ]));
        self.export(name)
    }

    pub fn export(&self, name: &str) -> PathBuf {
        let armored = ok(self.signet().args(["keys", "export", name]));
        let p = self.path(&format!("{name}.asc"));
        std::fs::write(&p, armored).expect("write cert");
        p
    }

    /// Builds the standard fixtures (RPMs, DEBs, tarball, APT and RPM repositories).
    /// The stored vault record of the active key of `name` (a `dir:` vault), as JSON.
    pub fn vault_record(&self, name: &str) -> serde_json::Value {
        let dir = self.path(&format!("vault/{name}"));
        let active = std::fs::read_to_string(dir.join("active")).expect("an active key");
        serde_json::from_slice(&std::fs::read(dir.join(format!("{}.json", active.trim()))).expect("its record"))
            .expect("a JSON record")
    }

    pub fn fixtures(&self) -> PathBuf {
        let out = self.path("fixtures");
        ok(Command::new("bash").arg(repo().join("tests/support/fixtures.sh")).arg("all").arg(&out));
        out
    }
}

/// Runs one function of `tests/support/verifiers.sh`.
pub fn verifier(func: &str, args: &[&Path]) -> Output {
    run(Command::new("bash").arg(repo().join("tests/support/verifiers.sh")).arg(func).args(args))
}

#[track_caller]
pub fn accepts(func: &str, args: &[&Path]) {
    let o = verifier(func, args);
    assert!(o.status.success(), "{func} {args:?} rejected a good signature:\n{}", text(&o));
}

#[track_caller]
pub fn rejects(func: &str, args: &[&Path]) {
    let o = verifier(func, args);
    assert!(!o.status.success(), "{func} {args:?} accepted a bad signature:\n{}", text(&o));
}

/// Copies `src` to `dst` with the byte at `offset` (negative: from the end) flipped.
pub fn tampered(src: &Path, dst: &Path, offset: i64) -> PathBuf {
    let mut b = std::fs::read(src).expect("read");
    let i = if offset < 0 { (b.len() as i64 + offset) as usize } else { offset as usize };
    b[i] ^= 0x01;
    std::fs::write(dst, b).expect("write");
    dst.to_owned()
}

/// Files (not hidden) in a directory.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Every printable form in which the secret parts of a transferable secret key could leak
/// into text: each secret MPI (and the whole serialized key) as hex (both cases) and
/// base64. Panics if `tsk` holds no unencrypted secret, so a vacuous check cannot pass.
pub fn secret_forms(tsk: &[u8]) -> Vec<String> {
    use sequoia_openpgp::crypto::mpi::SecretKeyMaterial as Mpis;
    use sequoia_openpgp::packet::key::SecretKeyMaterial;
    use sequoia_openpgp::parse::Parse;
    let cert = sequoia_openpgp::Cert::from_bytes(tsk).expect("a secret key");
    let mut values: Vec<Vec<u8>> = vec![tsk.to_vec()];
    for ka in cert.keys().secret() {
        let SecretKeyMaterial::Unencrypted(u) = ka.key().secret() else { panic!("secret key is encrypted") };
        values.extend(u.map(|m| match m {
            Mpis::EdDSA { scalar } => vec![scalar.value().to_vec()],
            Mpis::RSA { d, p, q, u } => {
                vec![d.value().to_vec(), p.value().to_vec(), q.value().to_vec(), u.value().to_vec()]
            }
            other => panic!("unexpected secret key material {:?}", other.algo()),
        }));
    }
    assert!(values.len() > 1, "no secret key material found");
    secret_text_forms(&values)
}

/// Hex (both cases) and base64 forms of raw secrets.
pub fn secret_text_forms(values: &[Vec<u8>]) -> Vec<String> {
    use base64::Engine;
    let mut forms = Vec::new();
    for v in values {
        assert!(v.len() >= 16, "too short to search for reliably");
        let h = hex::encode(v);
        forms.push(h.to_uppercase());
        forms.push(h);
        forms.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(v));
    }
    forms
}

/// Asserts that none of `secrets` occurs in any of the named texts.
#[track_caller]
pub fn assert_no_secrets(texts: &[(String, String)], secrets: &[(&str, Vec<String>)]) {
    let total: usize = texts.iter().map(|(_, t)| t.len()).sum();
    assert!(total > 0, "nothing to search");
    for (what, forms) in secrets {
        assert!(!forms.is_empty(), "no forms of {what}");
        for f in forms {
            for (name, t) in texts {
                assert!(!t.contains(f.as_str()), "{what} found in {name}");
            }
        }
    }
}

/// The members of a well-formed ar archive (a DEB from the fixtures), as (name, data), in order.
pub fn ar_members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 60 <= archive.len() {
        let name = String::from_utf8_lossy(&archive[at..at + 16]).trim_end().trim_end_matches('/').to_owned();
        let size: usize = String::from_utf8_lossy(&archive[at + 48..at + 58]).trim().parse().expect("ar member size");
        out.push((name, archive[at + 60..at + 60 + size].to_vec()));
        at += 60 + size + size % 2;
    }
    out
}
