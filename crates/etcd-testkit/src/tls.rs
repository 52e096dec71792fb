//! TLS material for an etcd member with client-certificate authentication: a CA, a server
//! certificate for 127.0.0.1/localhost and a client certificate, as PEM files (rcgen).

use std::path::{Path, PathBuf};

/// TLS files of a member started with [`Etcd::start_tls`](crate::Etcd::start_tls).
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The CA that signed both certificates.
    pub ca: PathBuf,
    /// etcd's certificate (server and client usage, see [`make_certs`]).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate (`CN=fulcrum`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Writes the files into `dir`.
pub(crate) fn make_certs(dir: &Path) -> TlsSetup {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, purposes| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = purposes;
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    // etcd 3.4's JSON gateway dials etcd itself with the server certificate as its client
    // certificate, so under --client-cert-auth that certificate needs ClientAuth too.
    let (server_cert, server_key) =
        leaf(vec!["127.0.0.1".into(), "localhost".into()], vec![ServerAuth, ClientAuth]);
    let (client_cert, client_key) = leaf(vec!["fulcrum".into()], vec![ClientAuth]);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    TlsSetup {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}
