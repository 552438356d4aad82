//! RS256-signed JSON Web Tokens (RFC 7519), as used by Google's JWT bearer grant and
//! Azure AD's certificate client assertions. Signing uses aws-lc-rs, which the TLS
//! stack already builds.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// Why a key cannot sign. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("no PEM private key found ({0})")]
    NoPem(#[source] rustls_pki_types::pem::Error),
    #[error("the private key is not a usable RSA key ({0})")]
    Unusable(#[source] aws_lc_rs::error::KeyRejected),
    #[error("the private key is not an RSA key; expected RSA")]
    NotRsa,
    #[error("signing the JWT with the private key failed")]
    Sign(#[source] aws_lc_rs::error::Unspecified),
}

/// The RSA private key of a PEM text (PKCS#8 `PRIVATE KEY` or PKCS#1
/// `RSA PRIVATE KEY`).
pub(crate) fn rsa_key_from_pem(pem: &str) -> Result<RsaKeyPair, JwtError> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(JwtError::NoPem)?;
    match der {
        PrivateKeyDer::Pkcs8(k) => {
            RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(JwtError::Unusable)
        }
        PrivateKeyDer::Pkcs1(k) => {
            RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(JwtError::Unusable)
        }
        _ => Err(JwtError::NotRsa),
    }
}

/// `BASE64URL(header).BASE64URL(claims).BASE64URL(RS256 signature)`.
pub(crate) fn sign_rs256(
    key: &RsaKeyPair,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, JwtError> {
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        out.as_bytes(),
        &mut sig,
    )
    .map_err(JwtError::Sign)?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn signs_verifiable_jwts() {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let key = rsa_key_from_pem(&pem).unwrap();
        let jwt = sign_rs256(
            &key,
            &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
            &serde_json::json!({"iss": "x"}),
        )
        .unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        assert!(rsa_key_from_pem("not a key").is_err());
    }
}
