//! Standard Webhooks signatures and endpoint secrets, and the secrets' encryption at rest.
//!
//! Guarantees:
//! - [`SigningSecret`] is the Standard Webhooks form `whsec_` + base64 of 24–64 random bytes; its `Debug` and
//!   `Display` never show the bytes ([`SigningSecret::expose`] is the one way to print it, once, at creation).
//! - [`signature`] is `v1,` + base64(HMAC-SHA256(secret bytes, `{webhook-id}.{webhook-timestamp}.{body}`)),
//!   exactly as the Standard Webhooks specification says (its test vector is a test here);
//!   [`signature_header`] joins one signature per secret with spaces (rotation: the new and the old secret both
//!   sign during the grace period).
//! - [`SecretBox`] encrypts secrets at rest with AES-256-GCM under a key from configuration
//!   (`WEBHOOK_ENCRYPTION_KEY`); the endpoint id is the associated data, so a ciphertext copied to another
//!   endpoint does not open.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret this platform generates.
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

/// Why a secret or an encrypted secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret is `whsec_` followed by base64 of 24 to 64 bytes")]
    Format,
    #[error("WEBHOOK_ENCRYPTION_KEY must be base64 of exactly 32 bytes")]
    Key,
    #[error(
        "an endpoint secret does not decrypt: wrong WEBHOOK_ENCRYPTION_KEY, or the row was changed"
    )]
    Decrypt,
}

impl SigningSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        SigningSecret(bytes)
    }

    /// Parses `whsec_…`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Format)?;
        let bytes = B64.decode(b64).map_err(|_| SecretError::Format)?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if (24..=64).contains(&bytes.len()) {
            Ok(SigningSecret(bytes))
        } else {
            Err(SecretError::Format)
        }
    }

    /// The `whsec_…` text: shown to the merchant once, never logged.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(whsec_…redacted)")
    }
}

/// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
pub fn signature(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret, space-separated, in the order given (newest first).
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// AES-256-GCM for secrets at rest.
#[derive(Clone)]
pub struct SecretBox(Aes256Gcm);

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(redacted)")
    }
}

const NONCE_BYTES: usize = 12;

impl SecretBox {
    /// The key from its configured form: base64 of 32 bytes.
    pub fn from_base64(key: &str) -> Result<Self, SecretError> {
        let bytes = B64.decode(key.trim()).map_err(|_| SecretError::Key)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretError::Key)?;
        Ok(SecretBox(cipher))
    }

    /// A fresh random key in its configured form (for `make up` and tests).
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        B64.encode(key)
    }

    /// `nonce ‖ ciphertext` of `secret`, bound to `endpoint` (associated data).
    pub fn seal(&self, endpoint: uuid::Uuid, secret: &SigningSecret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.bytes(),
                    aad: endpoint.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any short message");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The secret `sealed` holds for `endpoint`.
    pub fn open(&self, endpoint: uuid::Uuid, sealed: &[u8]) -> Result<SigningSecret, SecretError> {
        if sealed.len() <= NONCE_BYTES {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SecretError::Decrypt)?;
        let bytes = self
            .0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        SigningSecret::from_bytes(bytes).map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification (and of its reference libraries).
    #[test]
    fn the_standard_webhooks_test_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_have_the_standard_form_and_never_show_in_debug() {
        let secret = SigningSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&text[6..]));
        for bad in [
            "MfKQ9r8G",
            "whsec_!!",
            "whsec_AAAA",
            &format!("whsec_{}", B64.encode([0u8; 65])),
        ] {
            assert_eq!(SigningSecret::parse(bad), Err(SecretError::Format), "{bad}");
        }
    }

    #[test]
    fn rotation_signs_with_every_secret_space_separated() {
        let (new, old) = (SigningSecret::generate(), SigningSecret::generate());
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                signature(&new, "msg_1", 1, b"{}"),
                signature(&old, "msg_1", 1, b"{}")
            ]
        );
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_endpoint() {
        let key = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let other = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let secret = SigningSecret::generate();
        let sealed = key.seal(a, &secret);
        assert!(
            !sealed
                .windows(8)
                .any(|w| secret.bytes().windows(8).any(|s| s == w))
        );
        assert_eq!(key.open(a, &sealed).unwrap(), secret);
        assert_eq!(key.open(b, &sealed), Err(SecretError::Decrypt));
        assert_eq!(other.open(a, &sealed), Err(SecretError::Decrypt));
        assert_eq!(
            SecretBox::from_base64("c2hvcnQ=").unwrap_err(),
            SecretError::Key
        );
        assert!(!format!("{key:?}").contains("Aes"));
    }
}
