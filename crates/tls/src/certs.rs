//! Certificate files: loading with strict checks, the SNI table ([`CertSet`]) and the
//! inventory. Loading reads files and blocks, so it runs on the control thread (or at start),
//! never on a worker; the resulting set is shared read-only by every worker.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::time::Time;

/// A certificate chain (leaf first) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The chain: one or more `CERTIFICATE` blocks, the server's own certificate first.
    pub cert: PathBuf,
    /// The key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`),
    /// unencrypted.
    pub key: PathBuf,
}

/// Why a certificate pair was refused. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The list of certificates was empty.
    #[error("no certificate configured")]
    NoneConfigured,
    /// A file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: malformed PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate in the file (no CERTIFICATE PEM block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate is not valid DER/X.509.
    #[error("{}: malformed certificate: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key file holds no private key block of a supported kind.
    #[error(
        "{}: no private key in the file (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY; \
         encrypted keys are not supported)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key block does not hold a usable key.
    #[error("{}: malformed or unsupported private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the crypto provider said.
        reason: String,
    },
    /// The key is not the one the leaf certificate certifies.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The leaf certificate's not-after is in the past.
    #[error("{}: the certificate expired at {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its not-after, RFC 3339.
        not_after: String,
    },
    /// The leaf certificate's not-before is in the future.
    #[error("{}: the certificate is not valid before {not_before}", path.display())]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its not-before, RFC 3339.
        not_before: String,
    },
    /// A certificate other than the first (the default) has no DNS name, so SNI could never
    /// select it.
    #[error(
        "{}: the certificate has no DNS name (subjectAltName) and is not the first (default) \
         one, so no client could ever be given it",
        path.display()
    )]
    NoDnsName {
        /// The file.
        path: PathBuf,
    },
}

/// What the admin API shows of one loaded certificate (never anything of the key but its
/// file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The certificate chain file.
    pub cert_file: PathBuf,
    /// The key file.
    pub key_file: PathBuf,
    /// The leaf's DNS names (subjectAltName), lowercase, wildcards as `*.example.com`.
    pub dns_names: Vec<String>,
    /// Start of validity, RFC 3339 (UTC).
    pub not_before: String,
    /// End of validity, RFC 3339 (UTC).
    pub not_after: String,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub sha256: String,
    /// Whether this is the default certificate (the first), served without SNI or for
    /// unknown names.
    pub default: bool,
}

/// A certificate chain with its key, checked, and its inventory entry.
pub(crate) struct LoadedPair {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) info: CertInfo,
}

/// A set of server certificates with the SNI table: exact names, then `*.` wildcards (one
/// label), case-insensitive; the first certificate is the default. Built all-or-nothing.
pub struct CertSet {
    certs: Vec<(Arc<CertifiedKey>, CertInfo)>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    /// Loads and checks every pair (see [`CertError`]); any failure refuses the whole set.
    /// When two certificates claim a name, the earlier one serves it.
    pub fn load(pairs: &[CertPaths]) -> Result<Self, CertError> {
        Self::load_at(pairs, &crate::provider(), SystemTime::now())
    }

    pub(crate) fn load_at(
        pairs: &[CertPaths],
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        if pairs.is_empty() {
            return Err(CertError::NoneConfigured);
        }
        let mut set = Self { certs: Vec::new(), exact: HashMap::new(), wildcard: HashMap::new() };
        for (index, paths) in pairs.iter().enumerate() {
            let mut pair = load_pair(paths, provider, now)?;
            pair.info.default = index == 0;
            if index > 0 && pair.info.dns_names.is_empty() {
                return Err(CertError::NoDnsName { path: paths.cert.clone() });
            }
            for name in &pair.info.dns_names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_owned()),
                    None => set.exact.entry(name.clone()),
                };
                table.or_insert(index);
            }
            set.certs.push((pair.certified, pair.info));
        }
        Ok(set)
    }

    /// The certificate served for the SNI name `sni` (`None`: no SNI).
    pub(crate) fn select(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        &self.certs[self.index_for(sni)].0
    }

    /// The inventory entry of the certificate served for `sni` (`None`: no SNI).
    pub fn chosen_for(&self, sni: Option<&str>) -> &CertInfo {
        &self.certs[self.index_for(sni)].1
    }

    fn index_for(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&index) = self.exact.get(&name) {
            return index;
        }
        let parent = name.split_once('.').map(|(_, parent)| parent);
        parent.and_then(|parent| self.wildcard.get(parent)).copied().unwrap_or(0)
    }

    /// One entry per certificate, in configuration order.
    pub fn inventory(&self) -> Vec<CertInfo> {
        self.certs.iter().map(|(_, info)| info.clone()).collect()
    }
}

impl std::fmt::Debug for CertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSet").field("certs", &self.inventory()).finish()
    }
}

/// Reads, parses and checks one chain and its key.
pub(crate) fn load_pair(
    paths: &CertPaths,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<LoadedPair, CertError> {
    let cert_path = &paths.cert;
    let chain = load_certificates(cert_path)?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate { path: cert_path.clone() });
    };
    let bad_cert = |reason: String| CertError::BadCertificate { path: cert_path.clone(), reason };
    let parsed = Certificate::from_der(leaf).map_err(|e| bad_cert(e.to_string()))?;

    let key = match PrivateKeyDer::from_pem_slice(&read(&paths.key)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey { path: paths.key.clone() }),
        Err(e) => return Err(pem_error(&paths.key, e)),
    };
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| CertError::BadKey { path: paths.key.clone(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(chain.clone(), signer);
    match certified.keys_match() {
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch { key: paths.key.clone(), cert: cert_path.clone() });
        }
        Err(e) => return Err(bad_cert(e.to_string())),
    }

    let validity = &parsed.tbs_certificate.validity;
    let (not_before, not_after) = (rfc3339(&validity.not_before), rfc3339(&validity.not_after));
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if validity.not_after.to_unix_duration() < now {
        return Err(CertError::Expired { path: cert_path.clone(), not_after });
    }
    if validity.not_before.to_unix_duration() > now {
        return Err(CertError::NotYetValid { path: cert_path.clone(), not_before });
    }

    let info = CertInfo {
        cert_file: cert_path.clone(),
        key_file: paths.key.clone(),
        dns_names: dns_names(&parsed).map_err(bad_cert)?,
        not_before,
        not_after,
        sha256: hex(&Sha256::digest(leaf)),
        default: false,
    };
    Ok(LoadedPair { chain, key, certified: Arc::new(certified), info })
}

/// Every certificate of a PEM file, in order; an empty file gives [`CertError::NoCertificate`].
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: pem::Error) -> CertError {
    CertError::Pem { path: path.to_owned(), reason: e.to_string() }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read { path: path.to_owned(), source })
}

/// The leaf's subjectAltName DNS names, lowercase, trailing dot removed.
fn dns_names(cert: &Certificate) -> Result<Vec<String>, String> {
    let san = cert.tbs_certificate.get::<SubjectAltName>().map_err(|e| e.to_string())?;
    let Some((_, SubjectAltName(names))) = san else { return Ok(Vec::new()) };
    Ok(names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => {
                Some(dns.as_str().trim_end_matches('.').to_ascii_lowercase())
            }
            _ => None,
        })
        .collect())
}

fn rfc3339(time: &Time) -> String {
    let t = time.to_date_time();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minutes(),
        t.seconds()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
