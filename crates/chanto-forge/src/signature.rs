//! Proof that a delivery comes from the forge: HMAC signatures (GitHub, Gitea/Forgejo) and GitLab's shared token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Forge, Headers, WebhookError, check_size, header};

type HmacSha256 = Hmac<Sha256>;

/// GitHub's signature header: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(crate) const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
/// GitLab's token header: the secret itself.
pub(crate) const GITLAB_TOKEN: &str = "X-Gitlab-Token";
/// Gitea's signature header: `<hex HMAC-SHA256(secret, body)>`.
pub(crate) const GITEA_SIGNATURE: &str = "X-Gitea-Signature";
/// Forgejo's signature header, same form as Gitea's.
pub(crate) const FORGEJO_SIGNATURE: &str = "X-Forgejo-Signature";

/// Key under which GitLab tokens are hashed before comparison (any fixed value works; see [`tokens_match`]).
const TOKEN_COMPARISON_KEY: &[u8] = b"chanto-forge gitlab token comparison";

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of every length, so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Hex (lowercase) HMAC-SHA256 of `body` under `secret`: the value of GitHub's `X-Hub-Signature-256` after
/// `sha256=`, and the whole value of Gitea's `X-Gitea-Signature` and Forgejo's `X-Forgejo-Signature`.
pub fn sign_hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks the request is from the forge.
///
/// - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
/// - GitLab: `X-Gitlab-Token` equal to the secret.
/// - Gitea/Forgejo: `X-Gitea-Signature` or `X-Forgejo-Signature: <hex HMAC-SHA256(secret, body)>`.
///
/// Comparisons take the same time whatever the bytes compared. An empty `secret` is an error: chanto never
/// accepts unsigned webhooks. Bodies over [`crate::MAX_BODY_BYTES`] are refused before any hashing.
pub fn verify(forge: Forge, headers: Headers<'_>, body: &[u8], secret: &[u8]) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    check_size(body)?;
    match forge {
        Forge::GitHub => {
            let value = header(headers, GITHUB_SIGNATURE)
                .ok_or(WebhookError::MissingSignature { forge, header: GITHUB_SIGNATURE })?;
            let hex = value.trim().strip_prefix("sha256=").ok_or(WebhookError::MalformedSignature {
                forge,
                header: GITHUB_SIGNATURE,
                expected: "sha256=<64 hex digits>",
            })?;
            check_hmac(forge, GITHUB_SIGNATURE, "sha256=<64 hex digits>", hex, body, secret)
        }
        Forge::GitLab => {
            let token =
                header(headers, GITLAB_TOKEN).ok_or(WebhookError::MissingSignature { forge, header: GITLAB_TOKEN })?;
            if tokens_match(token.as_bytes(), secret) { Ok(()) } else { Err(WebhookError::BadToken) }
        }
        Forge::Gitea => {
            // Forgejo sends both headers with the same value; older Gitea only the first.
            let (name, value) = [GITEA_SIGNATURE, FORGEJO_SIGNATURE]
                .into_iter()
                .find_map(|name| header(headers, name).map(|value| (name, value)))
                .ok_or(WebhookError::MissingSignature {
                    forge,
                    header: "X-Gitea-Signature (or X-Forgejo-Signature)",
                })?;
            let value = value.trim();
            // Tolerate a GitHub-style prefix: it costs nothing and some proxies rewrite the header that way.
            let hex = value.strip_prefix("sha256=").unwrap_or(value);
            check_hmac(forge, name, "<64 hex digits>", hex, body, secret)
        }
    }
}

fn check_hmac(
    forge: Forge,
    header: &'static str,
    expected: &'static str,
    hex_signature: &str,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let signature = match hex::decode(hex_signature) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => return Err(WebhookError::MalformedSignature { forge, header, expected }),
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| WebhookError::BadSignature { forge, header })
}

/// Compares a GitLab token with the secret in constant time.
///
/// Both are hashed under a fixed key first, so the comparison (`verify_slice`, constant-time) sees two equal-length
/// digests: neither the secret's bytes nor its length leak through timing.
fn tokens_match(token: &[u8], secret: &[u8]) -> bool {
    let mut expected = mac(TOKEN_COMPARISON_KEY);
    expected.update(secret);
    let expected = expected.finalize().into_bytes();
    let mut given = mac(TOKEN_COMPARISON_KEY);
    given.update(token);
    given.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2, so the signing helper is checked against an independent vector.
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            sign_hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The example from GitHub's "Validating webhook deliveries" documentation.
    #[test]
    fn github_documented_example() {
        let sig = sign_hmac_sha256_hex(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(sig, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }

    #[test]
    fn tokens() {
        assert!(tokens_match(b"s3cret", b"s3cret"));
        assert!(!tokens_match(b"s3cret", b"s3cre"));
        assert!(!tokens_match(b"", b"s3cret"));
        assert!(!tokens_match(b"S3CRET", b"s3cret"));
    }
}
