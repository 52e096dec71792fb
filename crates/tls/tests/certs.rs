//! Certificate loading: key formats, the inventory, and every refusal naming its file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use fulcrum_tls::{CertError, CertPaths, CertSet, ServerError, ServerOptions, TlsAcceptor};
use sha2::{Digest, Sha256};

fn load(pairs: &[CertPaths]) -> Result<CertSet, CertError> {
    CertSet::load(pairs)
}

/// The error, which must name `file`.
fn refused(pairs: &[CertPaths], file: &Path) -> CertError {
    let err = load(pairs).expect_err("the set must be refused");
    let text = err.to_string();
    assert!(text.contains(&*file.to_string_lossy()), "{text:?} does not name {file:?}");
    err
}

#[test]
fn the_inventory_describes_each_certificate_and_never_the_key() {
    let pki = Pki::new("ca");
    let a = pki.server("a", &["Example.COM", "*.example.com", "127.0.0.1"]);
    let b = pki.cert("b", &["b.test"], Spec { not_after: (2049, 12, 31), ..Spec::default() });
    let set = load(&[a.clone(), b.clone()]).unwrap();
    let inventory = set.inventory();
    assert_eq!(inventory.len(), 2);

    let first = &inventory[0];
    assert_eq!(first.cert_file, a.cert);
    assert_eq!(first.key_file, a.key);
    assert_eq!(first.dns_names, vec!["example.com", "*.example.com"]);
    assert_eq!(first.not_before, "2020-01-01T00:00:00Z");
    assert_eq!(first.not_after, "2090-01-01T00:00:00Z");
    assert!(first.default);
    let pem = std::fs::read(&a.cert).unwrap();
    let der = rustls_pki_der(&pem);
    let expected: String = Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first.sha256, expected);

    assert_eq!(inventory[1].not_after, "2049-12-31T00:00:00Z");
    assert!(!inventory[1].default);
    let debug = format!("{set:?}");
    let key_pem = std::fs::read_to_string(&a.key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!debug.contains(key_body), "the key leaked into Debug output");
}

fn rustls_pki_der(pem: &[u8]) -> Vec<u8> {
    use fulcrum_tls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

#[test]
fn keys_load_as_pkcs8_sec1_and_pkcs1() {
    let pki = Pki::new("ca");
    let ec = pki.server("ec", &["ec.test"]);
    let rsa = pki.cert("rsa", &["rsa.test"], Spec { rsa: true, ..Spec::default() });
    let sec1 = CertPaths { key: pki.traditional_key(&ec, "ec-sec1.key"), ..ec.clone() };
    let pkcs1 = CertPaths { key: pki.traditional_key(&rsa, "rsa-pkcs1.key"), ..rsa.clone() };
    let text = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert!(text(&ec.key).contains("BEGIN PRIVATE KEY"));
    assert!(text(&sec1.key).contains("BEGIN EC PRIVATE KEY"));
    assert!(text(&pkcs1.key).contains("BEGIN RSA PRIVATE KEY"));
    for pair in [ec, sec1, rsa, pkcs1] {
        load(std::slice::from_ref(&pair)).unwrap_or_else(|e| panic!("{pair:?}: {e}"));
    }
}

#[test]
fn a_missing_or_unreadable_file_is_named() {
    let pki = Pki::new("ca");
    let good = pki.server("good", &["good.test"]);
    let missing = pki.dir.path().join("nope.crt");
    let err = refused(&[CertPaths { cert: missing.clone(), key: good.key.clone() }], &missing);
    assert!(matches!(err, CertError::Read { .. }), "{err}");

    let missing_key = pki.dir.path().join("nope.key");
    let err =
        refused(&[CertPaths { cert: good.cert.clone(), key: missing_key.clone() }], &missing_key);
    assert!(matches!(err, CertError::Read { .. }), "{err}");

    // A directory cannot be read as a file (root reads any file, so no permission test).
    let dir = pki.dir.path().to_owned();
    let err = refused(&[CertPaths { cert: dir.clone(), key: good.key }], &dir);
    assert!(matches!(err, CertError::Read { .. }), "{err}");
}

#[test]
fn a_pem_without_a_certificate_is_named() {
    let pki = Pki::new("ca");
    let good = pki.server("good", &["good.test"]);
    // The key file in the place of the chain: PEM, but no CERTIFICATE block.
    let err = refused(&[CertPaths { cert: good.key.clone(), key: good.key.clone() }], &good.key);
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
    let empty = pki.file("empty.crt", "");
    let err = refused(&[CertPaths { cert: empty.clone(), key: good.key }], &empty);
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
}

#[test]
fn malformed_pem_certificates_and_keys_are_named() {
    let pki = Pki::new("ca");
    let good = pki.server("good", &["good.test"]);

    let broken = pki.file("broken.crt", "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n");
    let err = refused(&[CertPaths { cert: broken.clone(), key: good.key.clone() }], &broken);
    assert!(matches!(err, CertError::Pem { .. }), "{err}");

    let junk_cert = pki.file(
        "junk.crt",
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    );
    let err = refused(&[CertPaths { cert: junk_cert.clone(), key: good.key.clone() }], &junk_cert);
    assert!(matches!(err, CertError::BadCertificate { .. }), "{err}");

    let no_key = pki.file("nokey.key", "just text\n");
    let err = refused(&[CertPaths { cert: good.cert.clone(), key: no_key.clone() }], &no_key);
    assert!(matches!(err, CertError::NoKey { .. }), "{err}");

    let junk_key = pki.file(
        "junk.key",
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    );
    let err = refused(&[CertPaths { cert: good.cert, key: junk_key.clone() }], &junk_key);
    assert!(matches!(err, CertError::BadKey { .. }), "{err}");
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_named_with_both_files() {
    let pki = Pki::new("ca");
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let swapped = CertPaths { cert: a.cert.clone(), key: b.key.clone() };
    let err = refused(std::slice::from_ref(&swapped), &b.key);
    assert!(err.to_string().contains(&*a.cert.to_string_lossy()), "{err}");
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let pki = Pki::new("ca");
    let expired = pki.cert(
        "expired",
        &["old.test"],
        Spec { not_before: (2000, 1, 1), not_after: (2001, 1, 1), ..Spec::default() },
    );
    let err = refused(std::slice::from_ref(&expired), &expired.cert);
    assert!(
        matches!(&err, CertError::Expired { not_after, .. } if not_after == "2001-01-01T00:00:00Z"),
        "{err}"
    );

    let future = pki.cert(
        "future",
        &["new.test"],
        Spec { not_before: (2100, 1, 1), not_after: (2101, 1, 1), ..Spec::default() },
    );
    let err = refused(std::slice::from_ref(&future), &future.cert);
    assert!(
        matches!(&err, CertError::NotYetValid { not_before, .. } if not_before == "2100-01-01T00:00:00Z"),
        "{err}"
    );
}

#[test]
fn a_set_is_all_or_nothing() {
    let pki = Pki::new("ca");
    let good = pki.server("good", &["good.test"]);
    let no_name = pki.server("noname", &["127.0.0.1"]);
    // Without DNS names only the default certificate could ever be served.
    load(std::slice::from_ref(&no_name)).unwrap();
    let err = refused(&[good.clone(), no_name.clone()], &no_name.cert);
    assert!(matches!(err, CertError::NoDnsName { .. }), "{err}");

    assert!(matches!(load(&[]), Err(CertError::NoneConfigured)));
    let err = TlsAcceptor::new(&ServerOptions::new(vec![good, no_name])).unwrap_err();
    assert!(matches!(err, ServerError::Certs(CertError::NoDnsName { .. })), "{err}");
}
