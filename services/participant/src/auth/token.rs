//! Access tokens: JWTs whose `sub` is the user and whose [`LEDGER_CLAIM`] object holds the
//! parties and the admin flag:
//!
//! ```json
//! { "sub": "alice-app", "exp": 1767225600,
//!   "https://syncline.dev/ledger": { "actAs": ["alice"], "readAs": ["bank"], "admin": false } }
//! ```
//!
//! `exp` is required, `nbf` checked when present (both with the configured leeway), `aud` and
//! `iss` when configured. HS256 tokens are checked against a shared secret; RS256 and ES256
//! (P-256) tokens against the keys of a JWKS file, chosen by the token's `kid`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

use super::{AuthError, Failure, TokenRights};
use crate::config::{AuthConfig, AuthKind};

/// The claim holding a token's ledger rights.
pub const LEDGER_CLAIM: &str = "https://syncline.dev/ledger";

/// A token's claims (those Syncline reads).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id. (Defaults here so that a token without it is refused by the validation,
    /// which names the missing claim, rather than by a JSON error.)
    #[serde(default)]
    pub sub: String,
    /// Expiry (seconds since the epoch).
    #[serde(default)]
    pub exp: u64,
    /// Not valid before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The audience: a string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The ledger rights.
    #[serde(rename = "https://syncline.dev/ledger", default)]
    pub ledger: LedgerClaim,
}

/// The parties and the admin flag of a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LedgerClaim {
    /// Parties the user may act as (and read as).
    pub act_as: Vec<String>,
    /// Parties the user may read as.
    pub read_as: Vec<String>,
    /// Whether the user may use the admin services.
    pub admin: bool,
}

/// A verifier that could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// A key file could not be read.
    #[error("ledger_api.auth: cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file is not a JSON Web Key Set.
    #[error("ledger_api.auth: {path} is not a JSON Web Key Set")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A key the verifier cannot use.
    #[error("ledger_api.auth: {0}")]
    Key(String),
}

/// One key tokens may be signed with.
struct Key {
    kid: Option<String>,
    validation: Validation,
    key: DecodingKey,
}

/// Checks access tokens against the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, &k.validation.algorithms)).collect();
        f.debug_struct("Verifier").field("keys", &kids).finish()
    }
}

fn read(path: &Path) -> Result<String, VerifierError> {
    std::fs::read_to_string(path).map_err(|source| VerifierError::Read { path: path.into(), source })
}

fn validation(cfg: &AuthConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = cfg.leeway.as_secs();
    v.validate_nbf = true;
    v.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        // Without a configured audience a token's `aud` is not checked.
        None => v.validate_aud = false,
    }
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".into());
    }
    v
}

impl Verifier {
    /// The verifier `cfg` describes; `None` for `kind = "none"`.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Verifier>, VerifierError> {
        let keys = match cfg.kind {
            AuthKind::None => return Ok(None),
            AuthKind::Hs256 => {
                let secret = hs256_secret(cfg.secret.as_deref(), cfg.secret_file.as_deref())?;
                let key = DecodingKey::from_secret(secret.as_bytes());
                vec![Key { kid: None, validation: validation(cfg, Algorithm::HS256), key }]
            }
            AuthKind::Jwks => {
                let path = cfg.jwks_file.as_deref().ok_or_else(|| VerifierError::Key("no jwks_file".into()))?;
                let set: JwkSet = serde_json::from_str(&read(path)?)
                    .map_err(|source| VerifierError::Jwks { path: path.into(), source })?;
                jwks_keys(cfg, &set, path)?
            }
        };
        Ok(Some(Verifier { keys }))
    }

    /// The rights of the bearer token in `metadata`.
    pub fn verify_metadata(&self, metadata: &MetadataMap) -> Result<TokenRights, AuthError> {
        let Some(value) = metadata.get("authorization") else {
            return Err(AuthError::unauthenticated(
                Failure::Missing,
                "the request has no access token: send the metadata `authorization: Bearer <JWT>`",
            ));
        };
        let token = (value.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AuthError::unauthenticated(Failure::Malformed, "the authorization metadata is not `Bearer <JWT>`")
            })?;
        self.verify(token)
    }

    /// The rights `token` grants.
    pub fn verify(&self, token: &str) -> Result<TokenRights, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::unauthenticated(Failure::Malformed, format!("the access token is not a JWT: {e}"))
        })?;
        let key = self.key_for(&header)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(rejected)?.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::unauthenticated(Failure::Malformed, "the access token's user (sub) is empty"));
        }
        Ok(TokenRights {
            user_id: claims.sub,
            act_as: claims.ledger.act_as.into_iter().collect::<BTreeSet<_>>(),
            read_as: claims.ledger.read_as.into_iter().collect(),
            admin: claims.ledger.admin,
        })
    }

    /// The key a token with `header` must be signed with.
    fn key_for(&self, header: &Header) -> Result<&Key, AuthError> {
        let signature = |m: String| AuthError::unauthenticated(Failure::Signature, m);
        let key = match &header.kid {
            Some(kid) if self.keys.iter().any(|k| k.kid.is_some()) => (self.keys.iter())
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| signature(format!("the access token's key id {kid:?} is not a configured key")))?,
            _ if self.keys.len() == 1 => &self.keys[0],
            _ => {
                return Err(signature("the access token names no key id (kid) and several keys are configured".into()))
            }
        };
        if !key.validation.algorithms.contains(&header.alg) {
            return Err(signature(format!(
                "the access token's algorithm {:?} is not accepted (expected {:?})",
                header.alg, key.validation.algorithms
            )));
        }
        Ok(key)
    }
}

/// The HS256 secret given itself or in a file (surrounding whitespace ignored): at least 32 bytes.
pub fn hs256_secret(secret: Option<&str>, file: Option<&Path>) -> Result<String, VerifierError> {
    let secret = match (secret, file) {
        (Some(s), _) => s.to_string(),
        (None, Some(path)) => read(path)?.trim().to_string(),
        (None, None) => return Err(VerifierError::Key("no HS256 secret (secret or secret_file)".into())),
    };
    if secret.len() < 32 {
        return Err(VerifierError::Key("the HS256 secret must have at least 32 bytes".into()));
    }
    Ok(secret)
}

/// The usable keys of a JWKS: RSA (RS256) and EC P-256 (ES256); others are skipped.
fn jwks_keys(cfg: &AuthConfig, set: &JwkSet, path: &Path) -> Result<Vec<Key>, VerifierError> {
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (_, alg) => {
                tracing::warn!(?kid, ?alg, path = %path.display(), "skipping a JWKS key that is neither RS256 nor ES256");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| VerifierError::Key(format!("{}: key {kid:?}: {e}", path.display())))?;
        keys.push(Key { kid, validation: validation(cfg, alg), key });
    }
    if keys.is_empty() {
        return Err(VerifierError::Key(format!("{} has no RS256 or ES256 key", path.display())));
    }
    Ok(keys)
}

/// A decoding error as the caller sees it.
fn rejected(e: jsonwebtoken::errors::Error) -> AuthError {
    let (failure, message) = match e.kind() {
        ErrorKind::ExpiredSignature => (Failure::Expired, "the access token has expired".to_string()),
        ErrorKind::ImmatureSignature => (Failure::NotYetValid, "the access token is not valid yet (nbf)".into()),
        ErrorKind::InvalidSignature => (Failure::Signature, "the access token's signature is invalid".into()),
        ErrorKind::InvalidAlgorithm => (Failure::Signature, "the access token's algorithm is not accepted".into()),
        ErrorKind::InvalidAudience => (Failure::AudienceOrIssuer, "the access token is not for this audience".into()),
        ErrorKind::InvalidIssuer => {
            (Failure::AudienceOrIssuer, "the access token is not from the accepted issuer".into())
        }
        ErrorKind::MissingRequiredClaim(c) => (Failure::Malformed, format!("the access token has no {c} claim")),
        _ => (Failure::Malformed, format!("the access token is not a valid JWT: {e}")),
    };
    AuthError::unauthenticated(failure, message)
}

/// The claims of `token` without checking it: for a client's defaults only (the participant
/// checks the token on every call).
pub fn unverified_claims(token: &str) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.insecure_disable_signature_validation();
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&[]), &v).ok().map(|d| d.claims)
}

/// An HS256 token for `claims` signed with `secret` (development and tests).
pub fn mint_hs256(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
}

/// Seconds since the epoch (for `exp`).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn claims(exp_in: i64) -> Claims {
        Claims {
            sub: "app".into(),
            exp: (now_secs() as i64 + exp_in) as u64,
            ledger: LedgerClaim { act_as: vec!["alice".into()], read_as: vec!["bob".into()], admin: true },
            ..Default::default()
        }
    }

    fn verifier(cfg: AuthConfig) -> Verifier {
        Verifier::from_config(&cfg).unwrap().unwrap()
    }

    fn unauthenticated(e: AuthError) -> (Failure, String) {
        match e {
            AuthError::Unauthenticated { failure, message } => (failure, message),
            e => panic!("not unauthenticated: {e:?}"),
        }
    }

    #[test]
    fn a_valid_hs256_token_grants_its_claims() {
        let v = verifier(AuthConfig::hs256(SECRET));
        let r = v.verify(&mint_hs256(&claims(60), SECRET.as_bytes()).unwrap()).unwrap();
        assert_eq!(r.user_id, "app");
        assert!(r.act_as.contains("alice") && r.read_as.contains("bob") && r.admin);
    }

    #[test]
    fn wrong_secret_expiry_audience_and_garbage_are_refused() {
        let v = verifier(AuthConfig::hs256(SECRET));
        let other = mint_hs256(&claims(60), b"another secret of at least 32 bytes!").unwrap();
        assert_eq!(unauthenticated(v.verify(&other).unwrap_err()).0, Failure::Signature);
        // Past the 10 s leeway.
        let expired = mint_hs256(&claims(-30), SECRET.as_bytes()).unwrap();
        let e = v.verify(&expired).unwrap_err();
        assert_eq!(e.error_id(), "ACCESS_TOKEN_EXPIRED");
        assert_eq!(unauthenticated(e), (Failure::Expired, "the access token has expired".into()));
        // Within the leeway.
        v.verify(&mint_hs256(&claims(-5), SECRET.as_bytes()).unwrap()).unwrap();
        let early = Claims { nbf: Some(now_secs() + 60), ..claims(120) };
        let e = v.verify(&mint_hs256(&early, SECRET.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(unauthenticated(e).0, Failure::NotYetValid);
        assert_eq!(unauthenticated(v.verify("not.a.jwt").unwrap_err()).0, Failure::Malformed);
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "app"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let (f, m) = unauthenticated(v.verify(&no_exp).unwrap_err());
        assert_eq!((f, m.as_str()), (Failure::Malformed, "the access token has no exp claim"));
        let aud = verifier(AuthConfig { audience: Some("ledger".into()), ..AuthConfig::hs256(SECRET) });
        let e = aud.verify(&mint_hs256(&claims(60), SECRET.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(unauthenticated(e).0, Failure::Malformed, "aud required when configured");
        let wrong = Claims { aud: Some("other".into()), ..claims(60) };
        let e = aud.verify(&mint_hs256(&wrong, SECRET.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(unauthenticated(e).0, Failure::AudienceOrIssuer);
        let right = Claims { aud: Some(serde_json::json!(["x", "ledger"])), ..claims(60) };
        aud.verify(&mint_hs256(&right, SECRET.as_bytes()).unwrap()).unwrap();
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let v = verifier(AuthConfig::hs256(SECRET));
        let mut m = MetadataMap::new();
        assert_eq!(unauthenticated(v.verify_metadata(&m).unwrap_err()).0, Failure::Missing);
        m.insert("authorization", "Basic abc".parse().unwrap());
        let (f, msg) = unauthenticated(v.verify_metadata(&m).unwrap_err());
        assert_eq!((f, msg.as_str()), (Failure::Malformed, "the authorization metadata is not `Bearer <JWT>`"));
        let t = mint_hs256(&claims(60), SECRET.as_bytes()).unwrap();
        m.insert("authorization", format!("Bearer {t}").parse().unwrap());
        assert_eq!(v.verify_metadata(&m).unwrap().user_id, "app");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Verifier::from_config(&AuthConfig::hs256("short")).is_err());
        assert!(Verifier::from_config(&AuthConfig::default()).unwrap().is_none());
    }
}
