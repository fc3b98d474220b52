//! The access guard: network lists, then basic auth against argon2id hashes.
//! A successful check is remembered (keyed by a hash of the stored hash and
//! the password), so argon2 runs once per credential, not per request; failed
//! attempts are counted per client address and throttled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chanto_core::AccessPolicy;
use chanto_core::access::IpVerdict;

/// Failed attempts allowed per client address per window.
pub const MAX_FAILURES: u32 = 10;
/// The throttling window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before stale ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// Checks credentials with memory of what passed and who keeps failing.
pub struct Guard {
    passed: quick_cache::sync::Cache<[u8; 32], ()>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Default for Guard {
    fn default() -> Self {
        Self { passed: quick_cache::sync::Cache::new(10_000), failures: Mutex::new(HashMap::new()) }
    }
}

/// What the guard decided.
pub enum Verdict {
    /// Serve the request.
    Pass,
    /// Answer this instead.
    Refuse(Response),
}

impl Guard {
    /// Decides whether the client at `ip` may see what `policy` covers.
    pub async fn check(
        &self,
        policy: &AccessPolicy,
        realm: &str,
        ip: IpAddr,
        headers: &HeaderMap,
        preflight: bool,
    ) -> Verdict {
        if policy.check_ip(ip) == IpVerdict::Refuse {
            return Verdict::Refuse(page(
                StatusCode::FORBIDDEN,
                "403 Forbidden",
                "Your network may not see this site.",
            ));
        }
        if policy.users.is_empty() || (preflight && policy.allow_preflight) {
            return Verdict::Pass;
        }
        if self.throttled(ip) {
            let mut resp = page(
                StatusCode::TOO_MANY_REQUESTS,
                "429 Too many attempts",
                "Too many wrong passwords; wait a minute.",
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(FAILURE_WINDOW.as_secs()));
            return Verdict::Refuse(resp);
        }
        if let Some((user, password)) = basic_credentials(headers) {
            let stored = policy.users.iter().find(|u| u.user == user);
            // An unknown user costs the same argon2 run as a wrong password.
            let hash = stored.map_or(DUMMY_HASH, |u| u.hash.as_str());
            let key: [u8; 32] = *blake3::Hasher::new()
                .update(hash.as_bytes())
                .update(&[0])
                .update(password.as_bytes())
                .finalize()
                .as_bytes();
            if stored.is_some() && self.passed.get(&key).is_some() {
                return Verdict::Pass;
            }
            let (hash_owned, pw) = (hash.to_owned(), password);
            let ok = tokio::task::spawn_blocking(move || verify(&hash_owned, &pw)).await.unwrap_or(false);
            if ok && stored.is_some() {
                self.passed.insert(key, ());
                return Verdict::Pass;
            }
            self.failed(ip);
        }
        let mut resp =
            page(StatusCode::UNAUTHORIZED, "401 Password required", "This site is protected; sign in to see it.");
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", realm.replace(['"', '\\'], ""));
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Verdict::Refuse(resp)
    }

    fn throttled(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&ip).is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// A valid argon2id hash of a random password, for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";

fn verify(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::PasswordHash::new(hash)
        .map(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!("<!doctype html><meta charset=utf-8><title>{title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n");
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_credentials() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6czNjcjp0"));
        assert_eq!(basic_credentials(&h), Some(("alice".into(), "s3cr:t".into())));
        for bad in ["Bearer x", "Basic !!!", "Basic YWxpY2U=", "Basic"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(basic_credentials(&h), None, "{bad}");
        }
    }

    #[test]
    fn the_dummy_hash_parses_and_matches_nothing_common() {
        assert!(argon2::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify(DUMMY_HASH, "password"));
    }
}
