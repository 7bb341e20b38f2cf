//! Keys that never leave AWS KMS (moto's KMS, started by localstack/start.sh with the small
//! patch in localstack/patches that makes `Sign` honour `MessageType=DIGEST`): an RSA-4096
//! KMS key signs every format through a worker and the real verifiers accept the outputs;
//! KMS refusals fail jobs `key_unavailable` at once, throttling is retried, and ECDSA keys
//! are refused.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use common::stack::Stack;
use common::*;
use sequoia_openpgp::crypto::mpi;
use sequoia_openpgp::types::HashAlgorithm;
use sha2::Digest;
use signet::key::PublicMaterial;

/// Fails loudly unless the KMS signs a `MessageType=DIGEST` request over the digest as
/// given, as AWS KMS does (unpatched moto 5.2 hashes it again, which no verifier accepts).
fn kms_signs_digests_as_given(s: &Stack, kms: &aws_sdk_kms::Client) {
    let key =
        s.rt.block_on(kms.create_key().key_usage(KeyUsageType::SignVerify).key_spec(KeySpec::Rsa3072).send()).unwrap();
    let id = key.key_metadata().unwrap().key_id().to_owned();
    let digest = sha2::Sha256::digest(b"what signet signs").to_vec();
    let sig =
        s.rt.block_on(
            kms.sign()
                .key_id(&id)
                .message(Blob::new(digest.clone()))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
                .send(),
        )
        .unwrap();
    let spki = s.rt.block_on(kms.get_public_key().key_id(&id).send()).unwrap();
    let public = PublicMaterial::from_spki(spki.public_key().unwrap().as_ref()).unwrap();
    let (key, _) = public.to_key(std::time::SystemTime::now()).unwrap();
    let value = mpi::Signature::RSA { s: mpi::MPI::new(sig.signature().unwrap().as_ref()) };
    key.verify(&value, HashAlgorithm::SHA256, &digest).unwrap_or_else(|e| {
        panic!(
            "the KMS at {} does not sign MessageType=DIGEST requests over the digest as given ({e}); \
             moto needs localstack/patches/moto-kms-sign-digest.py: `localstack/s3.sh restart` applies it",
            s.s3_endpoint
        )
    });
}

#[test]
fn a_kms_rsa4096_key_signs_every_format_and_never_leaves_kms() {
    let s = Stack::new();
    let kms = s.kms_client(&s.s3_endpoint);
    kms_signs_digests_as_given(&s, &kms);
    let kms_env = [("SIGNET_KMS_ENDPOINT", s.s3_endpoint.as_str())];
    let signet = || {
        let mut c = s.env.signet();
        c.envs(kms_env);
        c
    };
    let made = ok(signet().args(["keys", "generate", "release", "--in", "kms", "--algo", "rsa4096"]));
    assert!(made.contains(" rsa4096 kms:arn:aws:kms:"), "{made}");

    // The record holds the certificate and the key's ARN, nothing secret; the key's
    // creation time is KMS's, so the fingerprint is stable.
    let rec = s.env.vault_record("release");
    assert_eq!(rec["kek"]["kind"], "kms-key", "{rec}");
    assert_eq!((rec["ciphertext"].as_str(), rec["wrapped_dek"].as_str()), (Some(""), Some("")), "{rec}");
    let arn = rec["kek"]["key_id"].as_str().unwrap().to_owned();
    let certs = signet::key::parse_certs(rec["public_key"].as_str().unwrap().as_bytes()).unwrap();
    assert!(certs.iter().all(|c| !c.is_tsk()), "{rec}");
    let meta = s.rt.block_on(kms.describe_key().key_id(&arn).send()).unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_spec(), Some(&KeySpec::Rsa4096));
    let created = certs[0].primary_key().key().creation_time();
    let created = created.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(created, meta.creation_date().unwrap().secs(), "the certificate's creation time is not the KMS key's");

    let cert = s.env.export("release");
    // The worker's AWS secret (moto takes any) must not reach its trace-level log.
    let aws_secret = format!("aws-secret-{}", uuid::Uuid::new_v4().simple());
    let mut env: Vec<(&str, &str)> = kms_env.to_vec();
    env.extend([("RUST_LOG", "trace"), ("AWS_SECRET_ACCESS_KEY", aws_secret.as_str())]);
    let w = s.sign_every_format_and_verify("kms-1", &env, &cert);
    let log = w.log_text();
    assert!(log.contains("kms-1") && (log.contains("TRACE") || log.contains("DEBUG")), "not the worker's trace log");
    assert!(!log.contains(&aws_secret), "the AWS secret key is in the worker's log");
    drop(w);

    // The same KMS key cannot be adopted under a second name (a revocation of one name
    // would not stop the other); another KMS key can, with its own fingerprint.
    let refused = fails(signet().args(["keys", "import", "twice", "--kms", &arn]));
    assert!(refused.contains("already in the vault as release"), "{refused}");
    let other =
        s.rt.block_on(kms.create_key().key_usage(KeyUsageType::SignVerify).key_spec(KeySpec::Rsa4096).send()).unwrap();
    let other = other.key_metadata().unwrap().arn().unwrap().to_owned();
    let adopted = ok(signet().args(["keys", "import", "adopted", "--kms", &other]));
    assert!(adopted.contains(&format!("kms:{other}")), "{adopted}");
    assert_ne!(s.env.vault_record("adopted")["fingerprint"], rec["fingerprint"]);

    // Revoked through KMS: gpg shows it revoked and workers refuse it.
    let _w = s.worker(2, &kms_env);
    s.revoke_and_check(signet(), "release", rec["fingerprint"].as_str().unwrap(), "kms-2");
}

#[test]
fn a_kms_that_refuses_fails_the_job_at_once_and_one_that_throttles_is_retried() {
    let s = Stack::new();
    let kms = s.kms_client(&s.s3_endpoint);
    kms_signs_digests_as_given(&s, &kms);
    let signet = || {
        let mut c = s.env.signet();
        c.env("SIGNET_KMS_ENDPOINT", &s.s3_endpoint);
        c
    };

    // An ECDSA key is refused when it is adopted, saying why.
    let ec =
        s.rt.block_on(kms.create_key().key_usage(KeyUsageType::SignVerify).key_spec(KeySpec::EccNistP256).send())
            .unwrap();
    let ec = ec.key_metadata().unwrap().key_id().to_owned();
    let refused = fails(signet().args(["keys", "import", "ecdsa", "--kms", &ec]));
    assert!(refused.contains("ECDSA") && refused.contains("rpm"), "{refused}");

    ok(signet().args(["keys", "generate", "release", "--in", "kms", "--algo", "rsa4096"]));
    s.env.generate("local", "ed25519");
    let arn = s.env.vault_record("release")["kek"]["key_id"].as_str().unwrap().to_owned();
    s.upload("fx/hello-1.0.tar.gz", &s.env.fixtures().join("files/hello-1.0.tar.gz"));
    s.upload("fx/hello-1.0-1.noarch.rpm", &s.env.fixtures().join("rpm/hello-1.0-1.noarch.rpm"));

    // A KMS that throttles the first Sign calls: the worker retries them in place and the
    // job succeeds.
    let throttle = Throttle::new(&s.s3_endpoint, 3);
    let url = throttle.url();
    let w = s.worker(1, &[("SIGNET_KMS_ENDPOINT", url.as_str()), ("SIGNET_KEY_CACHE_SECONDS", "0")]);
    let (code, ev) = s.submit_wait("throttled", "release", "throttled/", &["fx/hello-1.0-1.noarch.rpm"]);
    assert_eq!(code, 0, "{ev:#?}");
    assert_eq!(throttle.throttled(), 3, "the proxy did not throttle as staged");
    assert!(throttle.signs() > 3, "no Sign call got through after the throttling");
    assert!(w.log_text().contains("KMS call failed, retrying"), "the retries are not in the worker's log");
    let rpm = s.download(&s.output, "throttled/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&s.env.export("release"), &rpm]);

    // The key disabled in KMS: the next job fails key_unavailable without retries, and the
    // same worker goes on with another key. (moto's DisableKey takes a key id, not an ARN.)
    let key_id = arn.rsplit('/').next().unwrap();
    s.rt.block_on(kms.disable_key().key_id(key_id).send()).unwrap();
    let started = Instant::now();
    let (code, ev) = s.submit_wait("disabled", "release", "disabled/", &["fx/hello-1.0.tar.gz"]);
    let ev = ev.expect("an event");
    let err = ev.data.error.as_ref().expect("a failure");
    assert_eq!((code, err.code.as_str()), (1, "key_unavailable"), "{ev:#?}");
    assert!(err.message.contains("Disabled"), "{ev:#?}");
    assert!(started.elapsed() < Duration::from_secs(20), "retried a refusal: {:?}", started.elapsed());
    assert!(s.output_keys("disabled/").is_empty());
    let (code, ev) = s.submit_wait("vault-key", "local", "local/", &["fx/hello-1.0.tar.gz"]);
    assert_eq!(code, 0, "{ev:#?}");

    // Scheduled for deletion: refused the same way.
    s.rt.block_on(kms.enable_key().key_id(key_id).send()).unwrap();
    s.rt.block_on(kms.schedule_key_deletion().key_id(key_id).pending_window_in_days(7).send()).unwrap();
    let (code, ev) = s.submit_wait("deleted", "release", "deleted/", &["fx/hello-1.0.tar.gz"]);
    let ev = ev.expect("an event");
    assert_eq!((code, ev.data.error.as_ref().map(|e| e.code.as_str())), (1, Some("key_unavailable")), "{ev:#?}");
}

/// An HTTP proxy in front of the KMS that answers the first `n` `Sign` requests with
/// KMS's throttling error and passes everything else through, one request per connection.
struct Throttle {
    port: u16,
    left: Arc<AtomicUsize>,
    throttled: Arc<AtomicUsize>,
    signs: Arc<AtomicUsize>,
}

impl Throttle {
    fn new(target_url: &str, n: usize) -> Throttle {
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Throttle {
            port: listener.local_addr().unwrap().port(),
            left: Arc::new(AtomicUsize::new(n)),
            throttled: Arc::default(),
            signs: Arc::default(),
        };
        let (left, throttled, signs) = (t.left.clone(), t.throttled.clone(), t.signs.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (target, left, throttled, signs) = (target.clone(), left.clone(), throttled.clone(), signs.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &target, &left, &throttled, &signs);
                });
            }
        });
        t
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }

    fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP message (head and a Content-Length body) from `r`.
fn read_message(r: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .transpose()
        .map_err(std::io::Error::other)?
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((head, body))
}

fn relay(
    mut client: TcpStream,
    target: &str,
    left: &AtomicUsize,
    throttled: &AtomicUsize,
    signs: &AtomicUsize,
) -> std::io::Result<()> {
    let (head, body) = read_message(&mut client)?;
    let is_sign = head.lines().any(|l| l.eq_ignore_ascii_case("x-amz-target: TrentService.Sign"));
    if is_sign {
        signs.fetch_add(1, Ordering::SeqCst);
        if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            throttled.fetch_add(1, Ordering::SeqCst);
            let msg = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            write!(
                client,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-ErrorType: ThrottlingException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            )?;
            return client.write_all(msg);
        }
    }
    let mut server = TcpStream::connect(target)?;
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    let (rhead, rbody) = read_message(&mut server)?;
    // Tell the client not to reuse this connection: each one carries one request.
    let (status, rest) = rhead.split_once("\r\n").unwrap_or((&rhead, ""));
    write!(client, "{status}\r\nConnection: close\r\n{rest}")?;
    client.write_all(&rbody)
}
