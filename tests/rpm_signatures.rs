//! What signet does with the signatures an RPM already carries (issue 13): it keeps them,
//! puts its own where rpm 4 (the legacy tag of its algorithm) and rpm 6 (the `OPENPGP`
//! array) read it, adds nothing when the package is already signed by its key, and
//! `--replace` drops the others. Checked with rpm 4.18's `rpmkeys -Kv`, and with sequoia
//! against the header bytes for what rpm 4.18 cannot read (`OPENPGP`, v6 signatures).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, PackageMetadata};
use sequoia_openpgp as openpgp;

use openpgp::Packet;
use openpgp::parse::Parse;
use openpgp::serialize::MarshalInto;

const OPENPGP: u32 = 278;
const DSAHEADER: u32 = 267;
const RSAHEADER: u32 = 268;

/// The parts of an RPM file: the lead, the signature header (with its padding), the rest.
struct Parts {
    meta: PackageMetadata,
    lead: Vec<u8>,
    rest: Vec<u8>,
}

fn parts(path: &Path) -> Parts {
    let bytes = fs::read(path).unwrap();
    let meta = PackageMetadata::parse(&mut &bytes[..]).unwrap();
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let sig_len = 16 + 16 * be(96 + 8) + be(96 + 12);
    let header_at = 96 + sig_len + (8 - sig_len % 8) % 8;
    Parts { meta, lead: bytes[..96].to_vec(), rest: bytes[header_at..].to_vec() }
}

impl Parts {
    /// The main header's bytes, as signed.
    fn header(&self) -> Vec<u8> {
        let len = self.meta.header_bytes().unwrap().len();
        self.rest[..len].to_vec()
    }

    /// The decoded entries of the `OPENPGP` array (empty without one).
    fn openpgp(&self) -> Vec<Vec<u8>> {
        use base64::Engine;
        match self.meta.signature.entry(OPENPGP) {
            Ok(IndexData::StringArray(v)) => {
                v.iter().map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap()).collect()
            }
            _ => Vec::new(),
        }
    }

    fn legacy(&self, tag: u32) -> Option<Vec<u8>> {
        match self.meta.signature.entry(tag) {
            Ok(IndexData::Bin(b)) => Some(b),
            _ => None,
        }
    }

    /// Writes the package with `OPENPGP` set to `sigs` in its signature header (none: no
    /// `OPENPGP` tag at all).
    fn write_with_openpgp(&self, sigs: &[Vec<u8>], to: &Path) {
        use base64::Engine;
        let mut entries: Vec<HeaderEntry> = self
            .meta
            .signature
            .get_all_entries()
            .unwrap()
            .into_iter()
            .filter(|(t, _)| *t != OPENPGP && *t != rpm::HEADER_SIGNATURES)
            .map(|(t, d)| HeaderEntry::new(t, d))
            .collect();
        let b64: Vec<String> = sigs.iter().map(|s| base64::engine::general_purpose::STANDARD.encode(s)).collect();
        if !b64.is_empty() {
            entries.push(HeaderEntry::new(OPENPGP, IndexData::StringArray(b64)));
        }
        let signature = Header::<IndexSignatureTag>::from_entries(entries, IndexSignatureTag::HEADER_SIGNATURES);
        let meta = PackageMetadata { lead: self.meta.lead.clone(), signature, header: self.meta.header.clone() };
        let mut out = Vec::new();
        meta.write(&mut out).unwrap();
        out.truncate(out.len() - self.meta.header_bytes().unwrap().len());
        out[..96].copy_from_slice(&self.lead);
        out.extend_from_slice(&self.rest);
        fs::write(to, out).unwrap();
    }
}

/// Issuer fingerprints (uppercase hex) of a stored signature packet.
fn issuer(packet: &[u8]) -> String {
    let Ok(Packet::Signature(sig)) = Packet::from_bytes(packet) else { panic!("not a signature packet") };
    sig.issuer_fingerprints().map(|f| f.to_hex()).next().expect("an issuer fingerprint")
}

/// Checks `packet` with sequoia: a good signature by `cert` over `header`.
fn good_over(packet: &[u8], cert: &openpgp::Cert, header: &[u8]) -> bool {
    let Ok(Packet::Signature(sig)) = Packet::from_bytes(packet) else { return false };
    cert.keys().any(|ka| sig.verify_message(ka.key(), header).is_ok())
}

fn cert_of(path: &Path) -> openpgp::Cert {
    openpgp::Cert::from_file(path).unwrap()
}

/// `rpmkeys -Kv` of `rpm` with every cert in `certs` imported: its output (it exits 1 when
/// a signature has no key).
fn rpmkeys(env: &Env, certs: &[&Path], rpm: &Path) -> String {
    let db = env.path(&format!("rpmdb-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&db).unwrap();
    for c in certs {
        ok(Command::new("rpmkeys").arg("--dbpath").arg(&db).arg("--import").arg(c));
    }
    text(&run(Command::new("rpmkeys").arg("--dbpath").arg(&db).arg("-Kv").arg(rpm)))
}

/// `Header V4 ... Signature, key ID ...: OK` lines of `rpmkeys -Kv`, as (algorithm, key id).
fn ok_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Header V4 "))
        .filter_map(|l| l.strip_suffix(": OK"))
        .filter_map(|l| l.split_once(" Signature, key ID ").map(|(a, k)| (a.to_owned(), k.to_owned())))
        .collect()
}

/// A GnuPG home with an RSA-3072 key `old@example.org`, and the RPM `rpm` signed by it
/// with `rpmsign --addsign`. Returns the key's exported certificate.
fn rpmsign_with_gpg(env: &Env, rpm: &Path) -> PathBuf {
    let gnupg = env.path("gnupg");
    fs::create_dir_all(&gnupg).unwrap();
    fs::write(
        env.path("params"),
        "%no-protection\nKey-Type: RSA\nKey-Length: 3072\nName-Real: Distribution\nName-Email: old@example.org\n%commit\n",
    )
    .unwrap();
    ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args(["--batch", "--gen-key"]).arg(env.path("params")));
    ok(Command::new("rpmsign")
        .env("GNUPGHOME", &gnupg)
        .args(["--define", "_gpg_name old@example.org", "--define", "__gpg /usr/bin/gpg", "--addsign"])
        .arg(rpm));
    let cert = env.path("old.asc");
    let armored = ok(Command::new("gpg").env("GNUPGHOME", &gnupg).args(["--armor", "--export", "old@example.org"]));
    fs::write(&cert, armored).unwrap();
    cert
}

/// The fixture `hello-1.0-1.noarch.rpm`, copied and signed by `rpmsign` with a gpg key (see
/// [`rpmsign_with_gpg`]): the package and that key's certificate.
fn distribution_signed(env: &Env) -> (PathBuf, PathBuf) {
    let pre = env.path("pre");
    fs::create_dir_all(&pre).unwrap();
    let rpm = pre.join("hello-1.0-1.noarch.rpm");
    fs::copy(env.fixtures().join("rpm/hello-1.0-1.noarch.rpm"), &rpm).unwrap();
    let theirs = rpmsign_with_gpg(env, &rpm);
    (rpm, theirs)
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn another_signature_is_kept_beside_signets_for_rpm_4_and_rpm_6_readers() {
    let env = Env::new();
    let ours = env.generate("new", "ed25519");
    let (rpm, theirs) = distribution_signed(&env);
    let (our_cert, their_cert) = (cert_of(&ours), cert_of(&theirs));
    let (our_fpr, their_fpr) = (our_cert.fingerprint().to_hex(), their_cert.fingerprint().to_hex());

    let out = env.path("out");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&out).arg(&rpm));
    let signed = out.join("hello-1.0-1.noarch.rpm");

    // rpm 4.18 sees both header signatures, each OK with its key.
    let report = rpmkeys(&env, &[&ours, &theirs], &signed);
    assert!(!report.contains("NOKEY") && !report.contains("BAD"), "{report}");
    let mut algos: Vec<String> = ok_lines(&report).into_iter().map(|(a, _)| a).collect();
    algos.sort();
    // (gpg picks SHA-512 for its RSA-3072 key.)
    assert_eq!(algos, ["EdDSA/SHA256", "RSA/SHA512"], "{report}");
    // With only signet's key, the other signature has no key: rpm reports NOKEY for it.
    assert!(rpmkeys(&env, &[&ours], &signed).contains("NOKEY"));
    // rpm 6 reads OPENPGP: both are there, the distribution's copied in first, each good
    // over the header; the legacy tags hold one each.
    let p = parts(&signed);
    let openpgp = p.openpgp();
    assert_eq!(openpgp.iter().map(|s| issuer(s)).collect::<Vec<_>>(), [their_fpr.clone(), our_fpr.clone()]);
    assert!(good_over(&openpgp[0], &their_cert, &p.header()));
    assert!(good_over(&openpgp[1], &our_cert, &p.header()));
    assert_eq!(p.legacy(DSAHEADER).as_deref(), Some(&openpgp[1][..]));
    assert_eq!(p.legacy(RSAHEADER).as_deref(), Some(&openpgp[0][..]));
    // The manifest says what stayed; nothing was replaced.
    let m = manifest(&out);
    assert_eq!(m["artifacts"][0]["kept_signatures"], serde_json::json!([their_fpr]));
    assert!(m["artifacts"][0].get("replaced_signatures").is_none(), "{m:#}");
    // signet verify with signet's key reports both and passes; with a third key it fails.
    let v = ok(env.signet().arg("verify").arg("--cert").arg(&ours).arg(&signed));
    assert!(v.contains("DSAHEADER+OPENPGP EdDSA/SHA256 signature") && v.contains(": OK"), "{v}");
    assert!(v.contains("RSAHEADER+OPENPGP RSA/SHA512 signature") && v.contains("unknown key"), "{v}");
    let third = env.generate("third", "ed25519");
    fails(env.signet().arg("verify").arg("--cert").arg(&third).arg(&signed));

    // Signed again by the same key: nothing is added, the bytes stay as they were.
    let again = env.path("again");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&again).arg(&signed));
    assert_eq!(fs::read(again.join("hello-1.0-1.noarch.rpm")).unwrap(), fs::read(&signed).unwrap());
    assert_eq!(manifest(&again)["artifacts"][0]["already_signed"], true);

    // --replace: only signet's remains, in both places.
    let replaced = env.path("replaced");
    ok(env.signet().args(["sign", "--replace", "--key", "new", "--out"]).arg(&replaced).arg(&rpm));
    let signed = replaced.join("hello-1.0-1.noarch.rpm");
    let report = rpmkeys(&env, &[&ours, &theirs], &signed);
    assert_eq!(ok_lines(&report).len(), 1, "{report}");
    assert!(!report.contains("RSA/"), "{report}");
    let p = parts(&signed);
    assert_eq!(p.openpgp().iter().map(|s| issuer(s)).collect::<Vec<_>>(), [our_fpr]);
    assert!(p.legacy(RSAHEADER).is_none());
    assert_eq!(manifest(&replaced)["artifacts"][0]["replaced_signatures"], serde_json::json!([their_fpr]));
}

#[test]
fn rsa_after_rsa_takes_the_rsa_slot_and_records_the_one_it_replaced() {
    let env = Env::new();
    let ours = env.generate("new", "rsa4096");
    let (rpm, theirs) = distribution_signed(&env);
    let out = env.path("out");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&out).arg(&rpm));
    let signed = out.join("hello-1.0-1.noarch.rpm");
    // One RSA slot, now signet's: rpm 4.18 sees one signature, by signet's key.
    let report = rpmkeys(&env, &[&ours, &theirs], &signed);
    let our_id = cert_of(&ours).keyid().to_hex().to_lowercase();
    let lines = ok_lines(&report);
    assert_eq!(lines.len(), 1, "{report}");
    assert!(our_id.ends_with(&lines[0].1), "{report}");
    let their_fpr = cert_of(&theirs).fingerprint().to_hex();
    assert_eq!(manifest(&out)["artifacts"][0]["replaced_signatures"], serde_json::json!([their_fpr]));
    // The OPENPGP array holds signet's only: the replaced one is gone from the package.
    assert_eq!(parts(&signed).openpgp().len(), 1);
}

#[test]
fn a_v6_signature_in_openpgp_is_kept_when_signet_appends_its_own() {
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::packet::signature::SignatureBuilder;
    use openpgp::policy::StandardPolicy;
    use openpgp::types::SignatureType;

    let env = Env::new();
    let ours = env.generate("new", "ed25519");
    let fx = env.fixtures();
    // A v6 (RFC 9580) key, and its v6 signature over the package's header in OPENPGP, as
    // rpm 6 would store it (RHEL 10.1's packages carry such beside a v4 one).
    let (v6, _) = CertBuilder::new()
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid("v6 <v6@example.org>")
        .add_signing_subkey()
        .generate()
        .unwrap();
    let policy = StandardPolicy::new();
    let signing = v6.keys().with_policy(&policy, None).secret().for_signing().next().unwrap();
    let mut signer = signing.key().clone().into_keypair().unwrap();
    let unsigned = parts(&fx.join("rpm/hello-1.0-1.noarch.rpm"));
    let v6_sig = SignatureBuilder::new(SignatureType::Binary).sign_message(&mut signer, unsigned.header()).unwrap();
    assert_eq!(v6_sig.version(), 6);
    let v6_packet = Packet::from(v6_sig).to_vec().unwrap();
    let rpm = env.path("hello-1.0-1.noarch.rpm");
    unsigned.write_with_openpgp(std::slice::from_ref(&v6_packet), &rpm);

    let out = env.path("out");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&out).arg(&rpm));
    let signed = out.join("hello-1.0-1.noarch.rpm");
    let p = parts(&signed);
    let openpgp = p.openpgp();
    // The v6 signature is still first and still good; signet's follows it and is good.
    assert_eq!(openpgp.len(), 2);
    assert_eq!(openpgp[0], v6_packet);
    assert!(good_over(&openpgp[0], &v6, &p.header()));
    assert!(good_over(&openpgp[1], &cert_of(&ours), &p.header()));
    // rpm 4.18 reads the legacy tag: signet's signature, OK.
    let report = rpmkeys(&env, &[&ours], &signed);
    assert_eq!(ok_lines(&report).len(), 1, "{report}");
    accepts("verify_rpm", &[&ours, &signed]);
    assert_eq!(
        manifest(&out)["artifacts"][0]["kept_signatures"],
        serde_json::json!([v6.keys().subkeys().next().unwrap().key().fingerprint().to_hex()])
    );
    // signet verify names the v6 signature (a key it was not given) and passes on signet's.
    let v = ok(env.signet().arg("verify").arg("--cert").arg(&ours).arg(&signed));
    assert!(v.contains("OPENPGP Ed25519/SHA512 signature") && v.contains("unknown key"), "{v}");
}

#[test]
fn already_signed_means_good_where_each_rpm_reads_and_the_gate_reads_the_same_way() {
    let env = Env::new();
    let ours = env.generate("new", "ed25519");
    let fx = env.fixtures();
    // As signet wrote packages before issue 13: its signature in DSAHEADER, no OPENPGP.
    let out = env.path("out");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&out).arg(fx.join("rpm/hello-1.0-1.noarch.rpm")));
    let legacy_only = env.path("legacy-only.rpm");
    parts(&out.join("hello-1.0-1.noarch.rpm")).write_with_openpgp(&[], &legacy_only);
    let before = parts(&legacy_only);
    assert!(before.openpgp().is_empty() && before.legacy(DSAHEADER).is_some());
    accepts("verify_rpm", &[&ours, &legacy_only]);

    // Without OPENPGP, rpm 6 reads the legacy tags too: both rpms see the signature, so
    // signing again with the same key leaves the package as it is.
    let again = env.path("again");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&again).arg(&legacy_only));
    assert_eq!(fs::read(again.join("legacy-only.rpm")).unwrap(), fs::read(&legacy_only).unwrap());
    assert_eq!(manifest(&again)["artifacts"][0]["already_signed"], true);

    // Once OPENPGP holds another key's signature, rpm 6 no longer reads the legacy tags:
    // signet's signature in DSAHEADER alone does not count for rpm 6. The gate says so...
    let other = env.generate("other", "ed25519");
    let o = env.path("o");
    ok(env.signet().args(["sign", "--key", "other", "--out"]).arg(&o).arg(fx.join("rpm/hello-1.0-1.noarch.rpm")));
    let theirs = parts(&o.join("hello-1.0-1.noarch.rpm")).openpgp();
    let mixed = env.path("mixed.rpm");
    before.write_with_openpgp(&theirs, &mixed);
    let err = fails(env.signet().arg("verify").arg("--cert").arg(&ours).arg(&mixed));
    assert!(err.contains("where rpm 6 reads them (OPENPGP)"), "{err}");
    ok(env.signet().arg("verify").arg("--cert").arg(&other).arg("--cert").arg(&ours).arg(&mixed));
    // ...and signing it again is not "already signed": signet's signature is appended to
    // OPENPGP beside the other key's, and takes DSAHEADER anew.
    let third = env.path("third");
    ok(env.signet().args(["sign", "--key", "new", "--out"]).arg(&third).arg(&mixed));
    let signed = third.join("mixed.rpm");
    let p = parts(&signed);
    let openpgp = p.openpgp();
    assert_eq!(openpgp.len(), 2);
    assert_eq!(openpgp[0], theirs[0]);
    assert!(good_over(&openpgp[1], &cert_of(&ours), &p.header()));
    assert_eq!(p.legacy(DSAHEADER).as_deref(), Some(&openpgp[1][..]));
    assert!(manifest(&third)["artifacts"][0].get("already_signed").is_none());
    ok(env.signet().arg("verify").arg("--cert").arg(&ours).arg(&signed));
    accepts("verify_rpm", &[&ours, &signed]);
}
