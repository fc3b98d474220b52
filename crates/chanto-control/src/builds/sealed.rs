//! Secrets at rest: repository credentials, webhook secrets and secret
//! variables are sealed with ChaCha20-Poly1305 under a key kept in the data
//! directory (`secret.key`, mode 0600), so a copy of the database alone
//! reveals none of them (invariant 6).

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chanto_store::random_bytes;

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// Keys [`Sealer::fingerprint`]: derived from the sealing key, so only
    /// this installation can make or compare fingerprints.
    fingerprint_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed secret that cannot be opened: the key changed or the bytes were altered.
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored secret cannot be decrypted: secret.key in the data directory is not the key it was sealed with; restore that file or set the secret again"
)]
pub struct OpenError;

impl Sealer {
    /// A sealer over a 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            fingerprint_key: blake3::derive_key("chanto platform secret fingerprint v1", &key),
        }
    }

    /// A fingerprint of a secret's value where it is used (`purpose`: the
    /// secret's address in `chanto.platform.toml`): equal values at the same
    /// place give equal fingerprints, and nothing about the value can be
    /// learned from one without the sealing key. Plans compare and keep them.
    pub fn fingerprint(&self, purpose: &str, value: &[u8]) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.fingerprint_key);
        h.update(&(purpose.len() as u64).to_le_bytes());
        h.update(purpose.as_bytes());
        h.update(value);
        h.finalize().to_hex()[..32].to_owned()
    }

    /// Reads the key at `path`, creating it (random, mode 0600) if absent
    /// and `may_create`; otherwise a missing key is an error (secrets sealed
    /// under it exist and a new key could not open them).
    pub fn load_or_create(path: &Path, may_create: bool) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::other(format!(
                        "{} holds {} bytes, not a 32-byte key; restore it from a backup",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(Self::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => Err(std::io::Error::other(format!(
                "{} is missing, but secrets sealed with it are stored; restore it from a backup (a new key could not open them)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = random_bytes();
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
                f.write_all(&key)?;
                f.sync_all()?;
                Ok(Self::new(key))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals `plain`: a random nonce followed by the ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = random_bytes();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher.encrypt(Nonce::from_slice(&nonce), plain).expect("sealing never fails for in-memory data"),
        );
        out
    }

    /// Opens what [`Sealer::seal`] made.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, body) = sealed.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| OpenError)
    }

    /// Opens a sealed UTF-8 string.
    pub fn open_string(&self, sealed: &[u8]) -> Result<String, OpenError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::new([7; 32]);
        let sealed = s.seal(b"ghp_token");
        assert!(!sealed.windows(9).any(|w| w == b"ghp_token"));
        assert_eq!(s.open(&sealed).unwrap(), b"ghp_token");
        assert_ne!(s.seal(b"ghp_token"), sealed, "nonces are random");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(s.open(&bad).is_err());
        assert!(Sealer::new([8; 32]).open(&sealed).is_err());
        assert!(s.open(b"short").is_err());
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let err = Sealer::load_or_create(&path, false).unwrap_err().to_string();
        assert!(err.contains("restore it from a backup"), "{err}");
        let sealed = Sealer::load_or_create(&path, true).unwrap().seal(b"x");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Sealer::load_or_create(&path, false).unwrap().open(&sealed).unwrap(), b"x");
        std::fs::write(&path, b"short").unwrap();
        let err = Sealer::load_or_create(&path, true).unwrap_err().to_string();
        assert!(err.contains("not a 32-byte key"), "{err}");
    }
}
