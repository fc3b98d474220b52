//! The access guard: network lists, then basic auth against argon2id hashes.
//! A successful check is remembered (keyed by a hash of the stored hash and
//! the password), so argon2 runs once per credential, not per request; failed
//! attempts are counted per client address and throttled.
//!
//! argon2 is slow and memory-hungry on purpose, so the guard bounds what
//! sign-ins can cost the process (the edge shares it with the API and the
//! builds): only hashes with chanto's own parameters are verified
//! ([`chanto_rules::CHANTO_ARGON2`]; anything else never matches), at most
//! [`MAX_CONCURRENT_VERIFICATIONS`] run at once, at most
//! [`MAX_WAITING_VERIFICATIONS`] wait for a slot (past that: 503 with
//! `Retry-After`), and an attempt is counted against its address *before*
//! argon2 runs, so the attempt past [`MAX_FAILURES`] never runs it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
/// argon2 verifications running at once, process-wide (each holds 19 MiB
/// and a blocking thread for tens of milliseconds).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 4;
/// Sign-ins waiting for a verification slot; one more is answered 503 with
/// `Retry-After` at once instead of queueing (a browser's parallel first
/// requests fit; a flood does not grow the queue).
pub const MAX_WAITING_VERIFICATIONS: usize = 64;
/// `Retry-After` of that 503, in seconds.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Verifies a password against a PHC hash (argon2 in production).
type Verifier = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Checks credentials with memory of what passed and who keeps failing.
pub struct Guard {
    passed: quick_cache::sync::Cache<[u8; 32], ()>,
    /// Attempts per address in the current window (successes refunded).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    verifications: AtomicU64,
    verify: Verifier,
}

impl Default for Guard {
    fn default() -> Self {
        Self::with_verifier(Arc::new(verify))
    }
}

/// Takes a waiting place back however the wait ends (a dropped request too).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
            return Verdict::Refuse(too_many());
        }
        if let Some((user, password)) = basic_credentials(headers) {
            // A hash without chanto's parameters (a manifest written before
            // they were enforced) is never verified: it costs what an
            // unknown user costs, and never matches.
            let stored = policy
                .users
                .iter()
                .find(|u| u.user == user)
                .filter(|u| chanto_rules::check_password_hash(&u.hash).is_ok());
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
            // Counted before argon2 runs: concurrent wrong tries from one
            // address cannot all slip past the limit while verifying.
            if !self.reserve_attempt(ip) {
                return Verdict::Refuse(too_many());
            }
            let Some(permit) = self.slot().await else {
                self.refund_attempt(ip);
                let mut resp = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Busy",
                    "Too many sign-ins at once; try again in a moment.",
                );
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECS));
                return Verdict::Refuse(resp);
            };
            self.verifications.fetch_add(1, Ordering::SeqCst);
            let (hash_owned, pw, verify) = (hash.to_owned(), password, self.verify.clone());
            // The slot goes with the work: a dropped request does not free
            // it before argon2 is done.
            let ok = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                verify(&hash_owned, &pw)
            })
            .await
            .unwrap_or(false);
            if ok && stored.is_some() {
                self.refund_attempt(ip);
                self.passed.insert(key, ());
                return Verdict::Pass;
            }
        }
        let mut resp =
            page(StatusCode::UNAUTHORIZED, "401 Password required", "This site is protected; sign in to see it.");
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", realm.replace(['"', '\\'], ""));
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Verdict::Refuse(resp)
    }

    /// A guard that verifies with `verify` (tests hold it to observe
    /// concurrency).
    fn with_verifier(verify: Verifier) -> Self {
        Self {
            passed: quick_cache::sync::Cache::new(10_000),
            failures: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            waiting: AtomicUsize::new(0),
            verifications: AtomicU64::new(0),
            verify,
        }
    }

    /// argon2 verifications started since the guard was made.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }

    /// A verification slot, after waiting behind at most
    /// [`MAX_WAITING_VERIFICATIONS`] others; `None` when that many wait.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_VERIFICATIONS {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _waiting = Waiting(&self.waiting);
        // The semaphore is never closed.
        self.slots.clone().acquire_owned().await.ok()
    }

    fn throttled(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&ip).is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    /// Counts one attempt from `ip`, or says it is over the limit.
    fn reserve_attempt(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        if entry.0 >= MAX_FAILURES {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// Gives back an attempt that turned out right (or was never verified).
    fn refund_attempt(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(&ip) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

fn too_many() -> Response {
    let mut resp =
        page(StatusCode::TOO_MANY_REQUESTS, "429 Too many attempts", "Too many wrong passwords; wait a minute.");
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(FAILURE_WINDOW.as_secs()));
    resp
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
        assert_eq!(chanto_rules::check_password_hash(DUMMY_HASH), Ok(()), "it costs what a real user costs");
        assert!(!verify(DUMMY_HASH, "password"));
    }

    /// A stand-in for argon2 that holds every verification until opened, so
    /// a test sees how many run at once (a mock: real argon2 would make the
    /// overlap depend on the machine's speed).
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        running: AtomicUsize,
        peak: AtomicUsize,
        hashes: Mutex<Vec<String>>,
    }

    impl Gate {
        fn guard(self: &Arc<Self>) -> Guard {
            let gate = self.clone();
            Guard::with_verifier(Arc::new(move |hash: &str, _pw: &str| {
                gate.hashes.lock().unwrap().push(hash.to_owned());
                let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
                gate.peak.fetch_max(now, Ordering::SeqCst);
                let mut open = gate.open.lock().unwrap();
                while !*open {
                    open = gate.opened.wait(open).unwrap();
                }
                gate.running.fetch_sub(1, Ordering::SeqCst);
                false
            }))
        }

        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    const ANN: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";

    fn policy(hash: &str) -> AccessPolicy {
        AccessPolicy {
            users: vec![chanto_core::AccessUser { user: "ann".into(), hash: hash.into() }],
            ..Default::default()
        }
    }

    fn wrong_password() -> HeaderMap {
        let mut h = HeaderMap::new();
        // ann:wrong
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YW5uOndyb25n"));
        h
    }

    fn status(v: Verdict) -> (StatusCode, Option<String>) {
        match v {
            Verdict::Pass => (StatusCode::OK, None),
            Verdict::Refuse(r) => {
                (r.status(), r.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned()))
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_attempt_past_the_limit_is_refused_without_running_argon2() {
        let gate = Arc::new(Gate::default());
        let guard = Arc::new(gate.guard());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut tries = tokio::task::JoinSet::new();
        for _ in 0..2 * MAX_FAILURES {
            let guard = guard.clone();
            tries.spawn(async move { status(guard.check(&policy(ANN), "site", ip, &wrong_password(), false).await) });
        }
        // While every verification is held, the tries past the limit must
        // already have their answer: they never wait for argon2.
        for _ in 0..MAX_FAILURES {
            // A generous bound that only turns a hang into a failure.
            let Ok(done) = tokio::time::timeout(Duration::from_secs(60), tries.join_next()).await else {
                gate.release();
                panic!("a try past the limit waited for argon2 instead of being refused");
            };
            let done = done.unwrap().unwrap();
            assert_eq!(done, (StatusCode::TOO_MANY_REQUESTS, Some("60".into())));
        }
        gate.release();
        while let Some(done) = tries.join_next().await {
            assert_eq!(done.unwrap().0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(guard.verifications(), u64::from(MAX_FAILURES));
        // The next one, later, is refused too, still without argon2.
        let later = guard.check(&policy(ANN), "site", ip, &wrong_password(), false).await;
        assert_eq!(status(later).0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(guard.verifications(), u64::from(MAX_FAILURES));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_never_exceed_the_bound_and_the_overflow_gets_503() {
        let gate = Arc::new(Gate::default());
        let guard = Arc::new(gate.guard());
        let mut tries = tokio::task::JoinSet::new();
        // One try per address, so no throttling: only the slots bound them.
        for i in 0..(MAX_CONCURRENT_VERIFICATIONS + MAX_WAITING_VERIFICATIONS) as u32 {
            let guard = guard.clone();
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            tries.spawn(async move { status(guard.check(&policy(ANN), "site", ip, &wrong_password(), false).await) });
        }
        loop {
            let running = gate.running.load(Ordering::SeqCst);
            if running > MAX_CONCURRENT_VERIFICATIONS {
                gate.release();
                panic!("{running} verifications at once");
            }
            if running == MAX_CONCURRENT_VERIFICATIONS
                && guard.waiting.load(Ordering::SeqCst) == MAX_WAITING_VERIFICATIONS
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Slots and queue full: the next sign-in is told to come back, at once.
        let overflow =
            guard.check(&policy(ANN), "site", "198.51.100.1".parse().unwrap(), &wrong_password(), false).await;
        assert_eq!(status(overflow), (StatusCode::SERVICE_UNAVAILABLE, Some(BUSY_RETRY_AFTER_SECS.to_string())));
        gate.release();
        while let Some(done) = tries.join_next().await {
            assert_eq!(done.unwrap().0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(gate.peak.load(Ordering::SeqCst), MAX_CONCURRENT_VERIFICATIONS);
        assert_eq!(guard.verifications(), (MAX_CONCURRENT_VERIFICATIONS + MAX_WAITING_VERIFICATIONS) as u64);
        assert_eq!(guard.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_hash_with_foreign_parameters_is_never_verified() {
        let gate = Arc::new(Gate::default());
        gate.release();
        let guard = gate.guard();
        let hostile =
            "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";
        let got = guard.check(&policy(hostile), "site", "192.0.2.8".parse().unwrap(), &wrong_password(), false).await;
        assert_eq!(status(got).0, StatusCode::UNAUTHORIZED);
        // It cost what an unknown user costs: the dummy hash, never the 4 GiB one.
        assert_eq!(*gate.hashes.lock().unwrap(), [DUMMY_HASH]);
    }
}
