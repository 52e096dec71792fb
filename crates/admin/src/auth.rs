//! JWT bearer authentication for the admin API (runs on `lb-admin`), and token minting for
//! `fulcrum token` and `--demo`.
//!
//! The accepted algorithms are an explicit list derived from the configured keys: HS256/384/512
//! for an HMAC secret, RS*/PS* for an RSA public key, ES256/ES384 for an EC key, EdDSA for an
//! Ed25519 key. Any other `alg` (including `none`, or HS* when only a public key is configured)
//! is refused before any signature check.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use fulcrum_config::AdminConfig;

/// Read access: every `GET` under `/api/v1`.
pub const SCOPE_READ: &str = "fulcrum:read";
/// Write access: every mutation; implies read.
pub const SCOPE_WRITE: &str = "fulcrum:write";

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `fulcrum:read` (or write).
    Read,
    /// `fulcrum:write`.
    Write,
}

impl Scope {
    /// The scope's name in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => SCOPE_READ,
            Scope::Write => SCOPE_WRITE,
        }
    }
}

/// Why a request was not authorised. Messages name the failure class only, never a detail
/// that would help forge a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Not `Bearer <jwt>`, or not a decodable JWT.
    #[error("malformed bearer token")]
    Malformed,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Bad signature, algorithm not accepted, missing `exp`, wrong `iss`/`aud`, ...
    #[error("invalid token")]
    Invalid,
    /// A valid token without the needed scope.
    #[error("token lacks the `{}` scope", .0.as_str())]
    InsufficientScope(Scope),
}

/// Why the configured keys are unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key file could not be read.
    #[error("admin.jwt_public_key_file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not an RSA, EC or Ed25519 public key in PEM.
    #[error("admin.jwt_public_key_file {0}: not an RSA, EC or Ed25519 public key in PEM form")]
    Format(PathBuf),
    /// Minting needs an HMAC secret.
    #[error("no HMAC secret configured (set FULCRUM_JWT_SECRET or admin.jwt_secret)")]
    NoSecret,
    /// Signing failed.
    #[error("signing the token failed: {0}")]
    Sign(String),
}

/// Verifies bearer tokens against the configured keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    public: Option<(DecodingKey, &'static [Algorithm])>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.algorithms()).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    scope: Option<String>,
}

const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC_ALGS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED_ALGS: &[Algorithm] = &[Algorithm::EdDSA];

impl Verifier {
    /// Builds a verifier from the admin settings; `Ok(None)` when no key is configured (the
    /// admin API then stays off).
    pub fn from_config(admin: &AdminConfig) -> Result<Option<Self>, KeyError> {
        let hmac = admin.jwt_secret.as_deref().map(|s| DecodingKey::from_secret(s.as_bytes()));
        let public = match &admin.jwt_public_key_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|source| KeyError::Read { path: path.clone(), source })?;
                let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, RSA_ALGS)
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    (k, EC_ALGS)
                } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                    (k, ED_ALGS)
                } else {
                    return Err(KeyError::Format(path.clone()));
                };
                Some(key)
            }
        };
        if hmac.is_none() && public.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            hmac,
            public,
            issuer: admin.jwt_issuer.clone(),
            audience: admin.jwt_audience.clone(),
            leeway_secs: admin.jwt_leeway_secs,
        }))
    }

    /// The accepted `alg` values, in a stable order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs = Vec::new();
        if self.hmac.is_some() {
            algs.extend_from_slice(HMAC_ALGS);
        }
        if let Some((_, public)) = &self.public {
            algs.extend_from_slice(public);
        }
        algs
    }

    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        if HMAC_ALGS.contains(&alg) {
            return self.hmac.as_ref();
        }
        match &self.public {
            Some((key, algs)) if algs.contains(&alg) => Some(key),
            _ => None,
        }
    }

    /// Checks an `Authorization` header value and the scope an operation needs.
    pub fn authorize(&self, header: Option<&[u8]>, needed: Scope) -> Result<(), AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = token.trim();
        // `alg: none` and unknown algorithms fail here: the header does not decode.
        let alg = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?.alg;
        let key = self.key_for(alg).ok_or(AuthError::Invalid)?;
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed
            }
            _ => AuthError::Invalid,
        })?;
        let scopes: HashSet<&str> =
            data.claims.scope.as_deref().unwrap_or_default().split_whitespace().collect();
        let granted =
            scopes.contains(SCOPE_WRITE) || (needed == Scope::Read && scopes.contains(SCOPE_READ));
        if granted { Ok(()) } else { Err(AuthError::InsufficientScope(needed)) }
    }
}

/// Claims of a minted token.
#[derive(Debug, Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token from the configured secret, valid for `ttl`, with the given
/// space-separated `scope` (and the configured `iss`/`aud`, if any).
pub fn mint(admin: &AdminConfig, scope: &str, ttl: Duration) -> Result<String, KeyError> {
    let secret = admin.jwt_secret.as_deref().ok_or(KeyError::NoSecret)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = MintClaims {
        sub: "fulcrum-cli",
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        scope,
        iss: admin.jwt_issuer.as_deref(),
        aud: admin.jwt_audience.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| KeyError::Sign(e.to_string()))
}

/// Parses a duration like `90s`, `30m`, `1h`, `7d` (a bare number means seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("invalid duration `{s}` (e.g. 90s, 30m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("invalid duration unit in `{s}` (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// A random 256-bit secret, hex encoded, for `--demo`.
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> AdminConfig {
        AdminConfig {
            jwt_secret: Some("s3cret-s3cret-s3cret-s3cret-0000".into()),
            ..Default::default()
        }
    }

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn minted_tokens_verify_with_scopes() {
        let a = admin();
        let v = Verifier::from_config(&a).unwrap().unwrap();
        let read = mint(&a, "fulcrum:read", Duration::from_secs(60)).unwrap();
        let write = mint(&a, "fulcrum:write", Duration::from_secs(60)).unwrap();
        assert_eq!(v.authorize(Some(&bearer(&read)), Scope::Read), Ok(()));
        assert_eq!(
            v.authorize(Some(&bearer(&read)), Scope::Write),
            Err(AuthError::InsufficientScope(Scope::Write))
        );
        assert_eq!(v.authorize(Some(&bearer(&write)), Scope::Read), Ok(()));
        assert_eq!(v.authorize(None, Scope::Read), Err(AuthError::Missing));
        assert_eq!(v.authorize(Some(b"Basic abc"), Scope::Read), Err(AuthError::Malformed));
        assert_eq!(v.authorize(Some(b"Bearer x.y.z"), Scope::Read), Err(AuthError::Malformed));
    }

    #[test]
    fn no_key_means_no_verifier() {
        assert!(Verifier::from_config(&AdminConfig::default()).unwrap().is_none());
        assert!(matches!(
            mint(&AdminConfig::default(), "fulcrum:read", Duration::from_secs(1)),
            Err(KeyError::NoSecret)
        ));
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("0s").is_err());
    }

    #[test]
    fn random_secrets_differ() {
        let a = random_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_secret().unwrap());
    }
}
