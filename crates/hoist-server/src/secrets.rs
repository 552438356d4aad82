//! Identifiers, API keys and run tokens.
//!
//! A credential is `PREFIX_ID_SECRET`: `hk_…` for API keys, `hrt_…` for run tokens.
//! The store keeps the ID in clear (to find the row) and only a SHA-256 of the secret;
//! the secret is compared in constant time. Secrets are 190 bits of randomness, so a
//! fast hash is enough: there is nothing to brute-force.

use hoist_core::secret::Secret;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ID_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
const SECRET_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random lowercase identifier of `len` characters (5 bits each).
pub fn new_id(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

fn new_secret() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| SECRET_ALPHABET[rng.random_range(0..SECRET_ALPHABET.len())] as char)
        .collect()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn verify(secret: &str, stored_hash: &str) -> bool {
    let h = hash_secret(secret);
    h.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    RunToken,
}

impl CredentialKind {
    fn prefix(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "hk",
            CredentialKind::RunToken => "hrt",
        }
    }
}

/// A new credential: (id, full token to hand out once, hash to store).
pub fn new_credential(kind: CredentialKind) -> (String, Secret, String) {
    let id = new_id(12);
    let secret = new_secret();
    let token = Secret::new(format!("{}_{id}_{secret}", kind.prefix()));
    (id, token, hash_secret(&secret))
}

/// A new web session: (id, the cookie value `hs_ID_SECRET` to hand out once, hash to store).
pub fn new_session() -> (String, Secret, String) {
    let id = new_id(16);
    let secret = new_secret();
    let token = Secret::new(format!("hs_{id}_{secret}"));
    (id, token, hash_secret(&secret))
}

/// Splits a session cookie `hs_ID_SECRET` into id and secret.
pub fn parse_session(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("hs_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// The CSRF token of a session: derived from its secret (which only the browser
/// holds), so it is not stored and cannot be read from the database.
pub fn csrf_token(session_secret: &str) -> String {
    hex::encode(&Sha256::digest(format!("hoist-csrf:{session_secret}").as_bytes())[..16])
}

/// A random one-off token (the sign-in form's CSRF cookie).
pub fn new_nonce() -> String {
    new_secret()
}

/// Constant-time equality of two presented tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Splits a presented credential into kind, id and secret.
pub fn parse_credential(token: &str) -> Option<(CredentialKind, &str, &str)> {
    let (prefix, rest) = token.split_once('_')?;
    let kind = match prefix {
        "hk" => CredentialKind::ApiKey,
        "hrt" => CredentialKind::RunToken,
        _ => return None,
    };
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((kind, id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_roundtrip() {
        let (id, token, hash) = new_credential(CredentialKind::ApiKey);
        let (kind, pid, secret) = parse_credential(token.expose()).unwrap();
        assert_eq!(kind, CredentialKind::ApiKey);
        assert_eq!(pid, id);
        assert!(verify(secret, &hash));
        assert!(!verify("x", &hash));
        assert!(!hash.contains(secret));
        assert!(parse_credential("hk_short_x").is_none());
        assert!(parse_credential("bearer").is_none());
        let (_, t, _) = new_credential(CredentialKind::RunToken);
        assert_eq!(
            parse_credential(t.expose()).unwrap().0,
            CredentialKind::RunToken
        );
    }
}
