//! Generic webhooks: the documented JSON body, its JSON Schema, and the HMAC signature receivers verify.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{Error, Event, EventKind};

/// Version of the webhook body. Fields may be added within a version; removing, renaming or retyping one bumps it.
pub const WEBHOOK_VERSION: u32 = 1;

/// Header carrying the Unix time (seconds) at which the delivery was signed.
pub const TIMESTAMP_HEADER: &str = "X-Chanto-Timestamp";

/// Header carrying `v1=<hex HMAC-SHA256>`; several comma-separated `v1=` entries may appear while secrets rotate.
pub const SIGNATURE_HEADER: &str = "X-Chanto-Signature";

#[derive(Serialize)]
struct Body<'a> {
    version: u32,
    event: &'a Event,
}

/// The generic webhook body, `{"version": 1, "event": {…}}`, as sent (and signed) byte for byte.
///
/// `event` holds every field of [`Event`], absent values as `null`; [`webhook_schema`] documents each one.
pub fn webhook_body(e: &Event) -> Vec<u8> {
    // Strings, integers and options only: serialising cannot fail.
    serde_json::to_vec(&Body { version: WEBHOOK_VERSION, event: e }).expect("an Event always serialises to JSON")
}

fn nullable(ty: &str, description: &str) -> Value {
    json!({ "type": [ty, "null"], "description": description })
}

fn nullable_url(description: &str) -> Value {
    json!({ "type": ["string", "null"], "format": "uri", "description": description })
}

/// The JSON Schema (draft 2020-12) of [`webhook_body`], to publish for receivers.
///
/// Objects do not forbid unknown properties: receivers must ignore fields added within a version.
pub fn webhook_schema() -> Value {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    let urls = json!({
        "type": "object",
        "description": "Links for the event. Each is an absolute http(s) URL, or null when it does not apply.",
        "required": ["branch", "permalink", "log"],
        "properties": {
            "branch": nullable_url("Where the branch is served; follows the branch to later deploys."),
            "permalink": nullable_url("Where this very deploy is served, forever."),
            "log": nullable_url("The build log in the chanto console."),
        },
    });
    let event = json!({
        "type": "object",
        "description": "One thing that happened to a site.",
        "required": [
            "id", "kind", "at_ms", "site", "branch", "commit", "build_id", "deploy_id", "pull_request", "urls",
            "duration_ms", "author", "message", "error", "from_fork", "domain", "expires_at_ms", "hint"
        ],
        "properties": {
            "id": { "type": "string", "minLength": 1,
                    "description": "Unique id of the event; the same on every redelivery, so drop duplicates by it." },
            "kind": { "type": "string", "enum": kinds, "description": "What happened." },
            "at_ms": { "type": "integer", "description": "When it happened, in milliseconds since the Unix epoch (UTC)." },
            "site": { "type": "string", "description": "Name of the site." },
            "branch": { "type": "string", "description": "The branch environment: the git branch, or pr-<n> for a pull request's preview." },
            "commit": nullable("string", "The full commit id built or deployed, when known."),
            "build_id": nullable("string", "Id of the build, for build events and deploys made by a build."),
            "deploy_id": nullable("string", "Id of the deploy, once there is one."),
            "pull_request": { "type": ["integer", "null"], "minimum": 1,
                              "description": "Number of the pull request, for previews." },
            "urls": { "$ref": "#/$defs/urls" },
            "duration_ms": { "type": ["integer", "null"], "minimum": 0,
                             "description": "How long the build took, in milliseconds, for finished builds." },
            "author": nullable("string", "Author of the commit."),
            "message": nullable("string", "The commit message as written: untrusted, escape it before display."),
            "error": nullable("string", "Why a build failed (the last lines of its log or the runner's error), or why a \
                                         certificate order failed: untrusted, escape it before display."),
            "from_fork": { "type": "boolean",
                           "description": "The build ran a fork's pull request: sandboxed, without secret variables." },
            "domain": nullable("string", "The custom domain a certificate.* event is about, e.g. example.com."),
            "expires_at_ms": { "type": ["integer", "null"],
                               "description": "certificate.expiring: when the domain's certificate stops being valid, \
                                               in milliseconds since the Unix epoch (UTC)." },
            "hint": nullable("string", "certificate.*: what to do about it, in words."),
        },
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:chanto:webhook:v1",
        "title": "chanto webhook",
        "description": "Body of a chanto generic webhook delivery. Verify X-Chanto-Signature over \
                        \"{X-Chanto-Timestamp}.{raw body}\" before trusting it.",
        "type": "object",
        "required": ["version", "event"],
        "properties": {
            "version": { "const": WEBHOOK_VERSION, "description": "Version of this body's shape." },
            "event": { "$ref": "#/$defs/event" },
        },
        "$defs": { "event": event, "urls": urls },
    })
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp_s: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signing headers of a delivery: `X-Chanto-Timestamp` (Unix seconds) and `X-Chanto-Signature`
/// (`v1=` + hex HMAC-SHA256 with `secret` over `"{timestamp}.{body}"`).
///
/// `secret` must not be empty ([`verify`] refuses an empty secret).
pub fn sign(secret: &[u8], timestamp_s: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signature = hex::encode(mac(secret, timestamp_s, body).finalize().into_bytes());
    vec![(TIMESTAMP_HEADER, timestamp_s.to_string()), (SIGNATURE_HEADER, format!("v1={signature}"))]
}

/// What a receiver runs on a delivery: checks the signature in constant time, then that the timestamp is within
/// `tolerance_s` seconds of `now_s` (refusing replays of old deliveries).
///
/// `headers` looks a header up by name (case-insensitively, as HTTP requires). `body` must be the raw bytes
/// received. The signature header may list several comma-separated `v1=` entries; one matching is enough.
pub fn verify(
    secret: &[u8],
    headers: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), Error> {
    if secret.is_empty() {
        return Err(Error::EmptySecret);
    }
    let timestamp = headers(TIMESTAMP_HEADER).ok_or(Error::MissingHeader { header: TIMESTAMP_HEADER })?;
    let timestamp_s: i64 = timestamp
        .trim()
        .parse()
        .ok()
        .filter(|_| timestamp.trim().bytes().all(|b| b.is_ascii_digit()))
        .ok_or(Error::MalformedHeader { header: TIMESTAMP_HEADER, expected: "<unix seconds>" })?;
    let signature = headers(SIGNATURE_HEADER).ok_or(Error::MissingHeader { header: SIGNATURE_HEADER })?;
    let candidates: Vec<Vec<u8>> = signature
        .split(',')
        .filter_map(|entry| entry.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .filter(|raw| raw.len() == 32)
        .collect();
    if candidates.is_empty() {
        return Err(Error::MalformedHeader { header: SIGNATURE_HEADER, expected: "v1=<64 hex digits>" });
    }
    let expected = mac(secret, timestamp_s, body);
    // `verify_slice` compares in constant time; every candidate is checked so timing does not reveal which matched.
    let matched = candidates.iter().fold(false, |acc, c| expected.clone().verify_slice(c).is_ok() | acc);
    if !matched {
        return Err(Error::BadSignature);
    }
    let skew_s = now_s.abs_diff(timestamp_s);
    let tolerance = u64::try_from(tolerance_s).unwrap_or(0);
    if skew_s > tolerance {
        return Err(Error::StaleTimestamp { skew_s, tolerance_s: tolerance });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventUrls;
    use crate::fixtures::{event, hostile_failure};
    use proptest::prelude::*;

    /// A small structural JSON Schema check: `type`, `const`, `enum`, `required`, `properties`, `minimum`,
    /// `minLength` and local `$ref`s; enough to catch a body and its schema drifting apart.
    fn check(schema: &Value, root: &Value, value: &Value, path: &str) -> Result<(), String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let target = root.pointer(r.trim_start_matches('#')).ok_or(format!("{path}: dangling $ref {r}"))?;
            return check(target, root, value, path);
        }
        if let Some(ty) = schema.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{path}: bad type in schema")),
            };
            let ok = types.iter().any(|t| match *t {
                "object" => value.is_object(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "null" => value.is_null(),
                "array" => value.is_array(),
                "boolean" => value.is_boolean(),
                "number" => value.is_number(),
                _ => false,
            });
            if !ok {
                return Err(format!("{path}: {value} is not {types:?}"));
            }
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            return Err(format!("{path}: {value} is not {c}"));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!("{path}: {value} not in enum"));
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_i64), value.as_i64())
            && n < min
        {
            return Err(format!("{path}: {n} < {min}"));
        }
        if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str())
            && (s.chars().count() as u64) < min
        {
            return Err(format!("{path}: shorter than {min}"));
        }
        if let Some(object) = value.as_object() {
            for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = key.as_str().unwrap();
                if !object.contains_key(key) {
                    return Err(format!("{path}: missing required key {key}"));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    if let Some(v) = object.get(key) {
                        check(sub, root, v, &format!("{path}.{key}"))?;
                    }
                }
                // Every field the body has is documented.
                for key in object.keys() {
                    if !props.contains_key(key) {
                        return Err(format!("{path}: undocumented key {key}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(body: &[u8]) -> Result<(), String> {
        let schema = webhook_schema();
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        check(&schema, &schema, &value, "$")
    }

    #[test]
    fn schema_documents_every_field() {
        let schema = webhook_schema();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        for def in ["event", "urls"] {
            let d = &schema["$defs"][def];
            let props = d["properties"].as_object().unwrap();
            let required: Vec<&str> = d["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(props.len(), required.len(), "{def}: every property is required");
            for (key, p) in props {
                assert!(required.contains(&key.as_str()), "{def}.{key} required");
                let described = p.get("description").is_some() || p.get("$ref").is_some();
                assert!(described, "{def}.{key} has no description");
            }
        }
    }

    #[test]
    fn sample_bodies_validate() {
        for kind in EventKind::ALL {
            assert_eq!(validate(&webhook_body(&event(kind))), Ok(()), "{kind}");
        }
        let sparse = Event {
            commit: None,
            build_id: None,
            deploy_id: None,
            urls: EventUrls::default(),
            duration_ms: None,
            author: None,
            message: None,
            pull_request: Some(3),
            ..hostile_failure()
        };
        assert_eq!(validate(&webhook_body(&sparse)), Ok(()));
    }

    #[test]
    fn the_check_is_not_vacuous() {
        let mut v: Value = serde_json::from_slice(&webhook_body(&event(EventKind::BuildFailed))).unwrap();
        v["event"]["kind"] = json!("build_failed");
        assert!(validate(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v: Value = serde_json::from_slice(&webhook_body(&event(EventKind::BuildFailed))).unwrap();
        v["event"].as_object_mut().unwrap().remove("urls");
        assert!(validate(&serde_json::to_vec(&v).unwrap()).unwrap_err().contains("urls"));
        v["version"] = json!(2);
        assert!(validate(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn body_shape_is_stable() {
        let body: Value = serde_json::from_slice(&webhook_body(&event(EventKind::BuildSucceeded))).unwrap();
        assert_eq!(body["version"], 1);
        assert_eq!(body["event"]["kind"], "build.succeeded");
        assert_eq!(body["event"]["pull_request"], Value::Null);
        assert_eq!(body["event"]["urls"]["log"], "https://chanto.example.org/sites/blog/builds/b_42/log");
        let back: Event = serde_json::from_value(body["event"].clone()).unwrap();
        assert_eq!(back, event(EventKind::BuildSucceeded));
    }

    #[test]
    fn certificate_bodies_carry_domain_expiry_and_hint_and_validate() {
        for e in [
            crate::fixtures::certificate(EventKind::CertificateFailed),
            crate::fixtures::certificate(EventKind::CertificateExpiring),
            crate::fixtures::hostile_certificate(),
        ] {
            assert_eq!(validate(&webhook_body(&e)), Ok(()), "{}", e.kind);
        }
        let body: Value =
            serde_json::from_slice(&webhook_body(&crate::fixtures::certificate(EventKind::CertificateExpiring)))
                .unwrap();
        assert_eq!(body["event"]["kind"], "certificate.expiring");
        assert_eq!(body["event"]["domain"], "example.com");
        assert_eq!(body["event"]["expires_at_ms"], 1_709_622_489_123i64 + 5 * 86_400_000);
        assert!(body["event"]["hint"].as_str().unwrap().contains("attempt 1"));
        // Build events carry the new fields as null (every field is always present).
        let body: Value = serde_json::from_slice(&webhook_body(&event(EventKind::BuildFailed))).unwrap();
        for key in ["domain", "expires_at_ms", "hint"] {
            assert_eq!(body["event"][key], Value::Null, "{key}");
            assert!(body["event"].as_object().unwrap().contains_key(key), "{key}");
        }
        // A payload stored before these fields existed still reads.
        let mut old = body["event"].clone();
        for key in ["domain", "expires_at_ms", "hint"] {
            old.as_object_mut().unwrap().remove(key);
        }
        assert_eq!(serde_json::from_value::<Event>(old).unwrap(), event(EventKind::BuildFailed));
    }

    fn lookup(headers: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }

    const SECRET: &[u8] = b"whsec_test";
    const NOW: i64 = 1_709_622_489;

    #[test]
    fn sign_format() {
        let headers = sign(SECRET, NOW, b"{}");
        assert_eq!(headers[0], ("X-Chanto-Timestamp", "1709622489".to_owned()));
        assert_eq!(headers[1].0, "X-Chanto-Signature");
        let sig = headers[1].1.strip_prefix("v1=").unwrap();
        assert_eq!(sig.len(), 64);
        // Independent recomputation over "{timestamp}.{body}".
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(b"1709622489.{}");
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn verify_table() {
        let body = webhook_body(&event(EventKind::BuildFailed));
        let good = sign(SECRET, NOW, &body);
        let sig = good[1].1.clone();
        let ts = good[0].1.clone();
        type Case<'a> = (&'a str, &'a [u8], Vec<(&'static str, String)>, &'a [u8], i64, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            ("round trip", SECRET, good.clone(), &body, NOW, Ok(())),
            ("within tolerance", SECRET, good.clone(), &body, NOW + 300, Ok(())),
            (
                "lowercase header names",
                SECRET,
                vec![("x-chanto-timestamp", ts.clone()), ("x-chanto-signature", sig.clone())],
                &body,
                NOW,
                Ok(()),
            ),
            (
                "rotation list",
                SECRET,
                vec![(TIMESTAMP_HEADER, ts.clone()), (SIGNATURE_HEADER, format!("v1={}, {sig}", "0".repeat(64)))],
                &body,
                NOW,
                Ok(()),
            ),
            ("tampered body", SECRET, good.clone(), b"{\"version\":1}", NOW, Err("bad_signature")),
            ("wrong secret", b"other", good.clone(), &body, NOW, Err("bad_signature")),
            ("empty secret", b"", good.clone(), &body, NOW, Err("empty_secret")),
            ("replay", SECRET, good.clone(), &body, NOW + 301, Err("stale_timestamp")),
            ("from the future", SECRET, good.clone(), &body, NOW - 301, Err("stale_timestamp")),
            (
                "timestamp moved",
                SECRET,
                vec![(TIMESTAMP_HEADER, (NOW + 1).to_string()), (SIGNATURE_HEADER, sig.clone())],
                &body,
                NOW,
                Err("bad_signature"),
            ),
            ("missing timestamp", SECRET, vec![(SIGNATURE_HEADER, sig.clone())], &body, NOW, Err("missing_header")),
            ("missing signature", SECRET, vec![(TIMESTAMP_HEADER, ts.clone())], &body, NOW, Err("missing_header")),
            (
                "garbled timestamp",
                SECRET,
                vec![(TIMESTAMP_HEADER, "+17e8".into()), (SIGNATURE_HEADER, sig.clone())],
                &body,
                NOW,
                Err("malformed_header"),
            ),
            (
                "unknown scheme",
                SECRET,
                vec![(TIMESTAMP_HEADER, ts.clone()), (SIGNATURE_HEADER, "v0=abcd".into())],
                &body,
                NOW,
                Err("malformed_header"),
            ),
        ];
        for (name, secret, headers, body, now, want) in cases {
            let got = verify(secret, &lookup(headers), body, now, 300).map_err(|e| e.code());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn verify_errors_name_the_header() {
        let err = verify(SECRET, &lookup(vec![]), b"", NOW, 300).unwrap_err();
        assert!(err.to_string().starts_with("X-Chanto-Timestamp header is missing"), "{err}");
        assert_eq!(err.status(), 400);
        let body = b"{}";
        let err = verify(SECRET, &lookup(sign(SECRET, NOW - 1000, body)), body, NOW, 300).unwrap_err();
        assert_eq!(err, Error::StaleTimestamp { skew_s: 1000, tolerance_s: 300 });
        assert!(err.to_string().contains("1000 s away"), "{err}");
        assert_eq!(err.status(), 401);
    }

    proptest! {
        #[test]
        fn any_event_body_validates(
            id in "\\PC{1,20}", kind in 0usize..EventKind::ALL.len(), at_ms in any::<i64>(), site in "\\PC{0,20}",
            branch in "\\PC{0,30}", message in proptest::option::of("\\PC{0,200}"),
            pr in proptest::option::of(1u64..u64::MAX), duration in proptest::option::of(any::<u64>()),
        ) {
            let e = Event {
                id, kind: EventKind::ALL[kind], at_ms, site, branch, message, pull_request: pr, duration_ms: duration,
                ..event(EventKind::BuildQueued)
            };
            let body = webhook_body(&e);
            prop_assert_eq!(validate(&body), Ok(()));
            let headers = sign(SECRET, NOW, &body);
            prop_assert!(verify(SECRET, &lookup(headers), &body, NOW, 0).is_ok());
        }
    }
}
