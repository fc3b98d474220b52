//! When to try a delivery again: exponential backoff with full jitter, `Retry-After` on 429, no retry on other
//! client errors, and a bounded number of attempts before a delivery is dead.

use crate::time::parse_imf_fixdate;

/// How one attempt at delivering a notification ended, as the IO layer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver answered with an HTTP status (SMTP callers map their replies to the nearest status).
    Status {
        /// The HTTP status code.
        code: u16,
        /// The `Retry-After` header, already converted to milliseconds ([`parse_retry_after`]).
        retry_after_ms: Option<u64>,
    },
    /// No answer in time.
    Timeout,
    /// The connection could not be made (DNS, refused, TLS); the text says why.
    ConnectError(String),
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver accepted the delivery (2xx): done.
    Delivered,
    /// Try again after this many milliseconds.
    Retry {
        /// Milliseconds to wait before the next attempt.
        after_ms: u64,
    },
    /// Give up: the delivery is marked dead and shown to the site's owners with this reason.
    Dead {
        /// Why, naming the last status or error and what would fix it.
        reason: String,
    },
}

/// How often and how patiently deliveries are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last one fails the delivery is dead. `0` counts as `1`.
    pub max_attempts: u32,
    /// The backoff cap after the first attempt, in milliseconds; it doubles after each further attempt.
    pub base_ms: u64,
    /// The longest wait between attempts, in milliseconds (also caps `Retry-After`).
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    /// 8 attempts, 1 s base, 1 h cap: with full jitter, a dead delivery has been retried for up to about 2 minutes.
    fn default() -> Self {
        RetryPolicy { max_attempts: 8, base_ms: 1_000, max_ms: 3_600_000 }
    }
}

/// The hint given with a status that will not be retried.
fn refusal_hint(code: u16) -> &'static str {
    match code {
        300..=399 => "redirects are not followed; set the webhook URL to where it redirects",
        401 | 403 => "the receiver refused the credentials; check the webhook URL's token or the receiver's secret",
        404 | 410 => "the endpoint does not exist (any more); check the webhook URL or remove the subscription",
        413 => "the body was too large for the receiver; raise its limit",
        _ => "the receiver refused the delivery; fix the endpoint or its configuration, then `chanto notify redeliver`",
    }
}

impl RetryPolicy {
    /// The backoff cap after attempt `attempt` (1-based): `min(max_ms, base_ms * 2^(attempt-1))`.
    pub fn cap_ms(&self, attempt: u32) -> u64 {
        let doubling = 1u64.checked_shl(attempt.max(1) - 1).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(doubling).min(self.max_ms)
    }

    /// Decides what follows attempt number `attempt` (1-based), which ended with `result`.
    ///
    /// `jitter` is a random number in `[0, 1)` from the caller (out-of-range values are clamped, NaN counts as 0):
    /// backoff waits `jitter * cap_ms(attempt)` ("full jitter"). 2xx is delivered. 429 waits `Retry-After` (capped at
    /// `max_ms`) or backs off when there is none; 408, 5xx, timeouts and connection errors back off; other statuses
    /// are dead at once. Anything retryable is dead once `attempt` reaches `max_attempts`.
    pub fn decide(&self, attempt: u32, result: &DeliveryResult, jitter: f64) -> Attempt {
        let attempt = attempt.max(1);
        let last = match result {
            DeliveryResult::Status { code: 200..300, .. } => return Attempt::Delivered,
            DeliveryResult::Status { code, retry_after_ms } => {
                // 408 is the receiver timing out: as transient as a timeout on our side.
                if !matches!(code, 408 | 429 | 500..600) {
                    return Attempt::Dead { reason: format!("HTTP {code}: {}", refusal_hint(*code)) };
                }
                if attempt < self.max_attempts
                    && *code == 429
                    && let Some(ms) = retry_after_ms
                {
                    return Attempt::Retry { after_ms: (*ms).min(self.max_ms) };
                }
                format!("HTTP {code}")
            }
            DeliveryResult::Timeout => "timed out".to_owned(),
            DeliveryResult::ConnectError(why) => format!("could not connect: {why}"),
        };
        if attempt >= self.max_attempts {
            return Attempt::Dead {
                reason: format!(
                    "gave up after {attempt} attempts, the last one: {last}; check that the receiver is up, then \
                     `chanto notify redeliver`"
                ),
            };
        }
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        // The float product is at most `cap`, so the conversion back cannot overflow.
        let after_ms = ((self.cap_ms(attempt) as f64) * jitter) as u64;
        Attempt::Retry { after_ms: after_ms.min(self.cap_ms(attempt)) }
    }
}

/// Parses a `Retry-After` header value into milliseconds to wait: delta-seconds (`"120"`), or an IMF-fixdate
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`) relative to `now_s` (a date in the past means 0). Other forms give `None`.
pub fn parse_retry_after(value: &str, now_s: i64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than fit are still "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000));
    }
    let at = parse_imf_fixdate(value)?;
    Some(u64::try_from(at.saturating_sub(now_s)).unwrap_or(0).saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> DeliveryResult {
        DeliveryResult::Status { code, retry_after_ms: None }
    }

    fn dead_reason(a: Attempt) -> String {
        match a {
            Attempt::Dead { reason } => reason,
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn decide_table() {
        let p = RetryPolicy::default();
        let retry = |after_ms| Attempt::Retry { after_ms };
        let cases: Vec<(&str, u32, DeliveryResult, f64, Attempt)> = vec![
            ("200", 1, status(200), 0.5, Attempt::Delivered),
            ("204 on the last attempt", 8, status(204), 0.5, Attempt::Delivered),
            ("500 first", 1, status(500), 0.5, retry(500)),
            ("503 third", 3, status(503), 0.5, retry(2_000)),
            ("503 jitter ~1", 3, status(503), 0.999_999, retry(3_999)),
            ("503 jitter 0", 3, status(503), 0.0, retry(0)),
            ("timeout", 2, DeliveryResult::Timeout, 0.5, retry(1_000)),
            ("connect error", 1, DeliveryResult::ConnectError("refused".into()), 1.0, retry(1_000)),
            ("408", 1, status(408), 1.0, retry(1_000)),
            (
                "429 retry-after",
                1,
                DeliveryResult::Status { code: 429, retry_after_ms: Some(120_000) },
                0.5,
                retry(120_000),
            ),
            (
                "429 retry-after capped",
                1,
                DeliveryResult::Status { code: 429, retry_after_ms: Some(86_400_000) },
                0.5,
                retry(3_600_000),
            ),
            ("429 without retry-after", 4, status(429), 0.5, retry(4_000)),
            ("NaN jitter", 2, status(502), f64::NAN, retry(0)),
            ("jitter out of range", 2, status(502), 7.0, retry(2_000)),
            ("attempt 0 counts as 1", 0, status(500), 1.0, retry(1_000)),
        ];
        for (name, attempt, result, jitter, want) in cases {
            assert_eq!(p.decide(attempt, &result, jitter), want, "{name}");
        }
    }

    #[test]
    fn client_errors_are_dead_at_once() {
        let p = RetryPolicy::default();
        let cases: &[(u16, &str)] = &[
            (404, "HTTP 404: the endpoint does not exist"),
            (410, "HTTP 410: the endpoint does not exist"),
            (401, "HTTP 401: the receiver refused the credentials"),
            (400, "HTTP 400: the receiver refused the delivery"),
            (301, "HTTP 301: redirects are not followed"),
        ];
        for (code, want) in cases {
            let reason = dead_reason(p.decide(1, &status(*code), 0.5));
            assert!(reason.starts_with(want), "{code}: {reason}");
        }
    }

    #[test]
    fn caps_grow_then_stop_at_max() {
        let p = RetryPolicy::default();
        let caps: Vec<u64> = (1..=7).map(|a| p.cap_ms(a)).collect();
        assert_eq!(caps, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000]);
        let p = RetryPolicy { max_attempts: 100, base_ms: 1_000, max_ms: 10_000 };
        assert_eq!(p.cap_ms(5), 10_000);
        assert_eq!(p.cap_ms(90), 10_000);
        assert_eq!(p.decide(90, &status(500), 0.5), Attempt::Retry { after_ms: 5_000 });
    }

    #[test]
    fn exhaustion_after_max_attempts() {
        let p = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert!(matches!(p.decide(2, &status(503), 0.5), Attempt::Retry { .. }));
        let reason = dead_reason(p.decide(3, &status(503), 0.5));
        assert!(reason.starts_with("gave up after 3 attempts, the last one: HTTP 503"), "{reason}");
        let reason = dead_reason(p.decide(3, &DeliveryResult::Timeout, 0.5));
        assert!(reason.contains("timed out"), "{reason}");
        // Retry-After does not buy attempts past the bound.
        let throttled = DeliveryResult::Status { code: 429, retry_after_ms: Some(1_000) };
        assert!(dead_reason(p.decide(3, &throttled, 0.5)).contains("HTTP 429"));
        let once = RetryPolicy { max_attempts: 0, ..p };
        assert!(matches!(once.decide(1, &DeliveryResult::Timeout, 0.5), Attempt::Dead { .. }));
    }

    #[test]
    fn parse_retry_after_table() {
        let now = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        let cases: &[(&str, Option<u64>)] = &[
            ("120", Some(120_000)),
            ("  5 ", Some(5_000)),
            ("0", Some(0)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            ("Sun, 06 Nov 1994 08:51:37 GMT", Some(120_000)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(0)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), *want, "{value:?}");
        }
    }
}
