//! Keys sealed with AWS KMS (moto's KMS and S3, started by localstack/start.sh): signing,
//! rotation, what the sealed blob holds, and a KMS that refuses to unwrap.

mod common;

use aws_sdk_kms::primitives::Blob;
use common::stack::Stack;
use common::*;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};
use signet::vault::seal::{KekInfo, SealedKey};

const RPM: &str = "fx/hello-1.0-1.noarch.rpm";

/// Every OpenPGP packet tag sequoia finds in `bytes` (nothing if it is not OpenPGP).
fn packet_tags(bytes: &[u8]) -> Vec<sequoia_openpgp::packet::Tag> {
    let mut tags = Vec::new();
    let Ok(mut ppr) = PacketParser::from_bytes(bytes) else { return tags };
    while let PacketParserResult::Some(pp) = ppr {
        tags.push(pp.packet.tag());
        match pp.recurse() {
            Ok((_, next)) => ppr = next,
            Err(_) => break,
        }
    }
    tags
}

/// Whether `bytes` hold a whole OpenPGP key with secret key material.
fn parses_as_secret_key(bytes: &[u8]) -> bool {
    sequoia_openpgp::Cert::from_bytes(bytes).is_ok_and(|c| c.is_tsk())
}

fn is_secret(tag: &sequoia_openpgp::packet::Tag) -> bool {
    use sequoia_openpgp::packet::Tag;
    matches!(tag, Tag::SecretKey | Tag::SecretSubkey)
}

#[test]
fn kms_sealed_keys_sign_rotate_and_fail_closed_when_kms_refuses() {
    let s = Stack::new();
    let kms = s.kms_client(&s.s3_endpoint);
    let kms_key = s.rt.block_on(kms.create_key().description(&s.ns).send()).unwrap();
    let kms_key = kms_key.key_metadata().unwrap().key_id().to_owned();
    let prefix = format!("{}/", s.ns);
    let vault = format!("s3://signet-vault/{prefix}?kms-key-id={kms_key}");
    let signet = || {
        let mut c = s.signet();
        c.env("SIGNET_VAULT", &vault).env("SIGNET_KMS_ENDPOINT", &s.s3_endpoint).env("RUST_LOG", "trace");
        c
    };
    let mut printed = Vec::new();
    let mut keep = |what: &str, out: String| {
        printed.push((what.to_owned(), out.clone()));
        out
    };

    // A KMS-sealed key (no passphrase involved) ...
    let generated = keep(
        "keys generate",
        ok(signet().args(["keys", "generate", "release"]).env_remove("SIGNET_VAULT_PASSPHRASE_FILE")),
    );
    let fpr1 = generated.split_whitespace().nth(1).unwrap().to_owned();
    // ... and a passphrase-sealed one in the same S3 vault.
    let local_vault = format!("s3://signet-vault/{prefix}");
    keep("keys generate local", ok(signet().env("SIGNET_VAULT", &local_vault).args(["keys", "generate", "local"])));
    let cert1 = s.env.path("release-1.asc");
    std::fs::write(&cert1, keep("export", ok(signet().args(["keys", "export", "release"])))).unwrap();
    let local_cert = s.env.path("local.asc");
    std::fs::write(&local_cert, ok(signet().args(["keys", "export", "local"]))).unwrap();

    // The sealed record in S3 holds no secret key in the clear: not as a whole, not in any
    // field. Unwrapping its data key with KMS, as the worker does, does yield the key.
    let record_key = format!("{prefix}release/{fpr1}.json");
    let blob = std::fs::read(s.download("signet-vault", &record_key)).unwrap();
    let record: SealedKey = serde_json::from_slice(&blob).unwrap();
    assert!(!packet_tags(&blob).iter().any(is_secret));
    let ciphertext = hex::decode(&record.ciphertext).unwrap();
    let wrapped = hex::decode(&record.wrapped_dek).unwrap();
    // (Random ciphertext may well start with bytes that read as a packet header, so the
    // check is that no secret key parses out of it; that the key's bytes appear nowhere,
    // in any encoding, is checked once it is known, below.)
    for field in [&ciphertext, &wrapped] {
        assert!(!parses_as_secret_key(field), "a secret key in the sealed record");
    }
    assert!(packet_tags(record.public_key.as_bytes()).iter().all(|t| !is_secret(t)));
    let KekInfo::AwsKms { key_id } = &record.kek else { panic!("not KMS-sealed: {:?}", record.kek) };
    let dek =
        s.rt.block_on(
            kms.decrypt()
                .key_id(key_id)
                .ciphertext_blob(Blob::new(wrapped))
                .encryption_context("signet:format", &record.format)
                .encryption_context("signet:key", "release")
                .encryption_context("signet:fingerprint", &fpr1)
                .send(),
        )
        .expect("KMS unwraps the data key under the documented encryption context");
    let dek = dek.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(dek.len(), 32);
    let tsk1 = {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(dek.as_slice().into());
        let aad = format!("{}\0release\0{fpr1}", record.format);
        let (nonce, ct) = ciphertext.split_at(24);
        cipher.decrypt(nonce.into(), Payload { msg: ct, aad: aad.as_bytes() }).expect("the data key opens the record")
    };
    assert!(packet_tags(&tsk1).iter().any(is_secret), "the sealed payload is the secret key");
    assert_no_secrets(
        &[("the sealed record".into(), String::from_utf8_lossy(&blob).into_owned())],
        &[("the release key", secret_forms(&tsk1))],
    );

    // The worker signs with it; rpmkeys accepts the result.
    let fx = s.env.fixtures();
    s.upload(RPM, &fx.join("rpm/hello-1.0-1.noarch.rpm"));
    let kms_env = [
        ("SIGNET_VAULT", vault.as_str()),
        ("SIGNET_KMS_ENDPOINT", s.s3_endpoint.as_str()),
        ("SIGNET_KEY_CACHE_SECONDS", "0"),
        ("RUST_LOG", "trace"),
    ];
    let mut w1 = s.worker(1, &kms_env);
    let (code, ev1) = s.submit_wait("kms-1", "release", "kms/1/", &[RPM]);
    let ev1 = ev1.expect("event");
    assert_eq!((code, ev1.data.key_fingerprint.as_deref()), (0, Some(fpr1.as_str())), "{ev1:#?}");
    let rpm1 = s.download(&s.output, "kms/1/hello-1.0-1.noarch.rpm");
    accepts("verify_rpm", &[&cert1, &rpm1]);

    // Rotation: a new key under the same name becomes active; the old one stays listed and
    // exported, new jobs sign with the new key, and both keys' signatures verify.
    let rotated = keep("keys rotate", ok(signet().args(["keys", "rotate", "release"])));
    let fpr2 = rotated.split_whitespace().nth(1).unwrap().to_owned();
    assert_ne!(fpr1, fpr2);
    let list = keep("keys list", ok(signet().args(["keys", "list", "--json"])));
    let listed: Vec<serde_json::Value> = list.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let release: Vec<_> = listed.iter().filter(|k| k["name"] == "release").collect();
    assert_eq!(release.len(), 2, "{list}");
    assert!(release.iter().any(|k| k["fingerprint"] == fpr1.as_str() && k["active"] == false), "{list}");
    assert!(release.iter().any(|k| k["fingerprint"] == fpr2.as_str() && k["active"] == true), "{list}");
    let both = s.env.path("release-both.asc");
    std::fs::write(&both, ok(signet().args(["keys", "export", "release"]))).unwrap();
    let certs = signet::key::parse_certs(&std::fs::read(&both).unwrap()).unwrap();
    let mut fprs: Vec<String> = certs.iter().map(|c| c.fingerprint().to_hex()).collect();
    fprs.sort();
    let mut want = vec![fpr1.clone(), fpr2.clone()];
    want.sort();
    assert_eq!(fprs, want);
    let (code, ev2) = s.submit_wait("kms-2", "release", "kms/2/", &[RPM]);
    let ev2 = ev2.expect("event");
    assert_eq!((code, ev2.data.key_fingerprint.as_deref()), (0, Some(fpr2.as_str())), "{ev2:#?}");
    let rpm2 = s.download(&s.output, "kms/2/hello-1.0-1.noarch.rpm");
    rejects("verify_rpm", &[&cert1, &rpm2]);
    accepts("verify_rpm", &[&both, &rpm2]);
    accepts("verify_rpm", &[&both, &rpm1]);
    w1.signal(libc::SIGTERM);
    w1.wait(30);

    // A worker whose KMS refuses to unwrap this key's data key: here a KMS region that does
    // not hold the key (moto enforces neither key policies nor key state on Decrypt; a
    // refusal is a 4xx from KMS either way). Jobs for the key fail at once as
    // key_unavailable, naming the key; the worker stays up and signs with its other key.
    let mut refused_env = kms_env.to_vec();
    refused_env.push(("AWS_REGION", "eu-west-1"));
    let w2 = s.worker(2, &refused_env);
    let (code, ev3) = s.submit_wait("kms-refused", "release", "kms/3/", &[RPM]);
    let ev3 = ev3.expect("event");
    let err = ev3.data.error.clone().expect("failed");
    assert_eq!((code, err.code.as_str()), (1, "key_unavailable"), "{ev3:#?}");
    assert!(
        err.message.contains(&format!("key release ({fpr2})")) && err.message.contains(&kms_key),
        "{}",
        err.message
    );
    assert_eq!(s.dead_letters(1), vec!["kms-refused".to_owned()]);
    assert!(s.output_keys("kms/3/").is_empty());
    assert!(!w2.log_text().contains("retrying"), "a refusal must not be retried");
    let (code, ev4) = s.submit_wait("after-refusal", "local", "kms/4/", &[RPM]);
    assert_eq!(code, 0, "{ev4:#?}");
    accepts("verify_rpm", &[&local_cert, &s.download(&s.output, "kms/4/hello-1.0-1.noarch.rpm")]);

    // Neither the data key nor the key material nor the passphrase is in anything printed.
    let tsk2 = {
        let v = signet::vault::Vault::open(
            &vault,
            None,
            &signet::vault::aws::AwsEndpoints { s3: Some(s.s3_endpoint.clone()), kms: Some(s.s3_endpoint.clone()) },
        )
        .unwrap();
        v.signing_key(&"release".parse().unwrap()).unwrap().to_secret_bytes().unwrap()
    };
    let mut texts = printed;
    texts.push(("worker 1 log".into(), w1.log_text()));
    texts.push(("worker 2 log".into(), w2.log_text()));
    texts.push(("events".into(), ok(s.signet().arg("events"))));
    assert_no_secrets(
        &texts,
        &[
            ("the KMS data key", secret_text_forms(&[dek])),
            ("the first release key", secret_forms(&tsk1)),
            ("the rotated release key", secret_forms(&tsk2)),
            ("the vault passphrase", vec![PASSPHRASE.to_owned()]),
        ],
    );
}
