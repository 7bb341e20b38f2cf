//! Keys that never leave a PKCS#11 token: SoftHSM2 tokens made by `softhsm2-util` for each
//! test, RSA-4096 and Ed25519 keys generated in them, a worker signing every format through
//! them against the real broker and S3 server, and the real verifiers checking the outputs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::stack::Stack;
use common::*;
use signet::hsm::{Token, TokenKey};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token of one test: its config, label and PIN file.
struct Hsm {
    conf: PathBuf,
    label: String,
    pin: String,
    pin_file: PathBuf,
}

impl Hsm {
    fn new(env: &Env) -> Hsm {
        let dir = env.path("tokens");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = env.path("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", dir.display()),
        )
        .unwrap();
        let pin = format!("pin-{}", uuid::Uuid::new_v4().simple());
        let label = "signet-test".to_owned();
        ok(Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--pin",
            &pin,
            "--so-pin",
            "so-pin-1234",
        ]));
        let pin_file = env.path("pkcs11-pin");
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        Hsm { conf, label, pin, pin_file }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            ("SIGNET_PKCS11_MODULE", MODULE.into()),
            ("SIGNET_PKCS11_TOKEN", self.label.clone()),
            ("SIGNET_PKCS11_PIN_FILE", self.pin_file.display().to_string()),
        ]
    }

    fn cmd(&self, mut c: Command) -> Command {
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }
}

fn token_key_signs_every_format(algo: &str) {
    let s = Stack::new();
    let hsm = Hsm::new(&s.env);
    let made = ok(hsm.cmd(s.env.signet()).args(["keys", "generate", "release", "--in", "pkcs11", "--algo", algo]));
    assert!(made.contains("pkcs11:signet-test"), "{made}");
    let cert = s.env.export("release");

    // The vault holds the certificate and where the key is, nothing secret.
    let rec = s.env.vault_record("release");
    assert_eq!(rec["kek"]["kind"], "pkcs11", "{rec}");
    assert_eq!((rec["ciphertext"].as_str(), rec["wrapped_dek"].as_str()), (Some(""), Some("")), "{rec}");
    let public = rec["public_key"].as_str().unwrap();
    assert!(key_material_free(public), "{public}");
    // In the token the private key is sensitive and never extractable. SoftHSM2 reads its
    // config from the environment when the module is initialized; nextest runs each test
    // in a process of its own, so this sets it for this test's token only.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &hsm.conf) };
    let token = Token::open(MODULE, &hsm.label, hsm.pin.clone().into()).expect("open the token");
    let tk: TokenKey = serde_json::from_value(rec["kek"].clone()).expect("token key");
    assert!(token.is_locked_in(&tk).unwrap(), "the token key is extractable or not sensitive");
    drop(token);

    let mut env: Vec<(&str, String)> = hsm.env();
    env.push(("RUST_LOG", "trace".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let w = s.sign_every_format_and_verify("hsm-1", &env_refs, &cert);

    // The PIN appears nowhere in the worker's trace-level log.
    let log = w.log_text();
    assert!(log.contains("hsm-1"), "the log is not the worker's");
    assert!(!log.contains(&hsm.pin), "the PIN is in the worker's log");

    // Revoked through the token: the export carries the revocation, gpg shows the key
    // revoked, and the worker refuses the key from the next job.
    s.revoke_and_check(hsm.cmd(s.env.signet()), "release", rec["fingerprint"].as_str().unwrap(), "hsm-2");
}

fn key_material_free(armored: &str) -> bool {
    let certs = signet::key::parse_certs(armored.as_bytes()).unwrap();
    !armored.contains("PRIVATE KEY") && certs.iter().all(|c| !c.is_tsk())
}

#[test]
fn a_softhsm_rsa4096_key_signs_every_format_and_never_leaves_the_token() {
    token_key_signs_every_format("rsa4096");
}

#[test]
fn a_softhsm_ed25519_key_signs_every_format_and_never_leaves_the_token() {
    token_key_signs_every_format("ed25519");
}

#[test]
fn a_token_that_refuses_fails_the_job_key_unavailable_and_the_worker_goes_on() {
    let s = Stack::new();
    let hsm = Hsm::new(&s.env);
    ok(hsm.cmd(s.env.signet()).args(["keys", "generate", "release", "--in", "pkcs11", "--algo", "ed25519"]));
    s.env.generate("local", "ed25519");
    // A key pair made in the token by other means is adopted (with the right PIN); the
    // token key `release` already is cannot be adopted under a second name.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &hsm.conf) };
    let token = Token::open(MODULE, &hsm.label, hsm.pin.clone().into()).expect("open the token");
    token.generate("made-elsewhere", signet::key::Algo::Ed25519).expect("a key pair in the token");
    drop(token);
    let adopted = ok(hsm.cmd(s.env.signet()).args(["keys", "import", "adopted", "--pkcs11", "made-elsewhere"]));
    assert!(adopted.contains("pkcs11:signet-test"), "{adopted}");
    let label = s.env.vault_record("release")["kek"]["label"].as_str().unwrap().to_owned();
    let refused = fails(hsm.cmd(s.env.signet()).args(["keys", "import", "twice", "--pkcs11", &label]));
    assert!(refused.contains("already in the vault as release"), "{refused}");
    // Rotating a token key makes the new key in the token too.
    let rotated = ok(hsm.cmd(s.env.signet()).args(["keys", "rotate", "adopted"]));
    assert!(rotated.contains("active"), "{rotated}");
    assert_eq!(s.env.vault_record("adopted")["kek"]["kind"], "pkcs11", "rotation left the token");

    let fx = s.env.fixtures();
    s.upload("fx/hello-1.0.tar.gz", &fx.join("files/hello-1.0.tar.gz"));
    let wrong = s.env.path("wrong-pin");
    std::fs::write(&wrong, "not-the-pin\n").unwrap();
    let mut env = hsm.env();
    env.retain(|(k, _)| *k != "SIGNET_PKCS11_PIN_FILE");
    env.push(("SIGNET_PKCS11_PIN_FILE", wrong.display().to_string()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _w = s.worker(1, &env_refs);
    let started = std::time::Instant::now();
    let (code, ev) = s.submit_wait("wrong-pin", "release", "wrong/", &["fx/hello-1.0.tar.gz"]);
    let ev = ev.expect("an event");
    assert_eq!((code, ev.data.error.as_ref().map(|e| e.code.as_str())), (1, Some("key_unavailable")), "{ev:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "retried a refusal: {:?}", started.elapsed());
    // The same worker signs with a vault key right after.
    let (code, ev) = s.submit_wait("vault-key", "local", "local/", &["fx/hello-1.0.tar.gz"]);
    assert_eq!(code, 0, "{ev:#?}");
    assert!(s.output_keys("wrong/").is_empty());
    // A vault key revoked while the worker holds it unsealed is refused at the next job.
    let fpr = ev.unwrap().data.key_fingerprint.unwrap();
    s.revoke_and_check(hsm.cmd(s.env.signet()), "local", &fpr, "vault-key-2");
}
