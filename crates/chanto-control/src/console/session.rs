//! Console sessions: server-side, in the metadata store, found by the keyed
//! hash of a random id the browser holds in a cookie (`HttpOnly`,
//! `SameSite=Lax`, `Path=/`; `__Host-` and `Secure` when the console is
//! reached over HTTPS). A new id at every sign-in, an idle and an absolute
//! timeout, sign-out of one or every session. Each session has a CSRF
//! token every form carries.

use axum::http::{HeaderMap, HeaderValue, header};
use chanto_core::ContentHash;
use chanto_store::{Scope, SessionRecord, UserRecord, now_millis};

use crate::Control;
use crate::auth::Principal;

/// A session ends after this long unused.
pub const IDLE_TIMEOUT_MS: i64 = 12 * 3600 * 1000;
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;
/// How often a session's last use is written, at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The cookie's name over plain HTTP.
pub const COOKIE: &str = "chanto_session";
/// The cookie's name over HTTPS (the `__Host-` prefix: Secure, Path=/, no Domain).
pub const SECURE_COOKIE: &str = "__Host-chanto_session";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who, as the API's checks see them (scope: their role's).
    pub principal: Principal,
    /// The user.
    pub user: UserRecord,
    /// The token forms must carry.
    pub csrf: String,
    /// The hash the session is stored under.
    pub id_hash: ContentHash,
}

/// Whether the request reached the console over HTTPS: directly, or through
/// a proxy on this machine that says so.
pub fn is_https(headers: &HeaderMap, peer_is_loopback: bool) -> bool {
    peer_is_loopback
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn id_hash(id: &str) -> ContentHash {
    ContentHash::from_blake3(
        blake3::Hasher::new_derive_key("chanto console session v1").update(id.as_bytes()).finalize(),
    )
}

/// Whether a request reached the console over HTTPS, as
/// [`is_https`] judges it from the request's peer.
pub(super) fn request_is_https(
    headers: &HeaderMap,
    peer: &Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> bool {
    is_https(headers, peer.as_ref().is_some_and(|p| p.0.0.ip().is_loopback()))
}

/// The value of the first cookie named `secure` (a `__Host-` name) or,
/// unless the request came through the HTTPS proxy, `plain`. Over HTTPS
/// only the `__Host-` name counts: another host under the same parent
/// domain (a hosted site) can set a plain-named cookie for this host, never
/// a `__Host-` one.
pub(super) fn cookie_value(headers: &HeaderMap, plain: &str, secure: &str) -> Option<String> {
    let via_https =
        headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == secure || (*name == plain && !via_https))
        .map(|(_, value)| value.to_owned())
}

/// The session id the request's cookie carries, if any.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE, SECURE_COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A `Set-Cookie` value: named `secure` (a `__Host-` name) and `Secure` over
/// HTTPS, `plain` otherwise; always `Path=/; HttpOnly; SameSite=Lax`; for
/// `max_age` seconds (none: the browser session), or cleared with `None`.
/// `value` is cookie-safe ASCII (hex or base64url).
pub(super) fn cookie_header(
    (plain, secure): (&str, &str),
    value: Option<&str>,
    https: bool,
    max_age: Option<u32>,
) -> HeaderValue {
    let name = if https { secure } else { plain };
    let flags = if https { "; Secure" } else { "" };
    let value = match (value, max_age) {
        (Some(v), Some(age)) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}{flags}"),
        (Some(v), None) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax{flags}"),
        (None, _) => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{flags}"),
    };
    HeaderValue::from_str(&value).expect("cookie is ASCII")
}

/// The `Set-Cookie` value for a new session id (or, with `None`, one that
/// clears it).
pub fn set_cookie(id: Option<&str>, https: bool) -> HeaderValue {
    cookie_header((COOKIE, SECURE_COOKIE), id, https, None)
}

impl Control {
    /// Starts a session for `user`; returns the id for the cookie.
    pub async fn start_session(&self, user: &UserRecord) -> Result<String, chanto_store::StoreError> {
        let id = hex::encode(chanto_store::random_bytes::<32>());
        let now = now_millis();
        let record = SessionRecord {
            user_id: user.id.clone(),
            csrf: hex::encode(chanto_store::random_bytes::<16>()),
            created_at: now,
            last_seen_at: now,
        };
        self.meta.create_session(&id_hash(&id), &record).await?;
        // Now and then, forget sessions that ended.
        if chanto_store::random_bytes::<1>()[0] < 8 {
            let _ = self.meta.prune_sessions(now - IDLE_TIMEOUT_MS, now - ABSOLUTE_TIMEOUT_MS).await;
        }
        Ok(id)
    }

    /// The live session the request's cookie names, if any (an ended one is
    /// deleted).
    pub async fn session_of(&self, headers: &HeaderMap) -> Result<Option<Session>, chanto_store::StoreError> {
        let Some(id) = cookie_id(headers) else { return Ok(None) };
        let hash = id_hash(&id);
        let Some((s, user)) = self.meta.session(&hash).await? else { return Ok(None) };
        let now = now_millis();
        if now - s.last_seen_at > IDLE_TIMEOUT_MS || now - s.created_at > ABSOLUTE_TIMEOUT_MS {
            self.meta.delete_session(&hash).await?;
            return Ok(None);
        }
        if now - s.last_seen_at > TOUCH_EVERY_MS {
            self.meta.touch_session(&hash, now).await?;
        }
        let principal = Principal {
            actor: user.name.clone(),
            via: format!("session:{}", &hash.to_hex()[..12]),
            scope: user.role.max_scope(),
            user: Some(user.clone()),
        };
        Ok(Some(Session { principal, user, csrf: s.csrf, id_hash: hash }))
    }

    /// Ends one session.
    pub async fn end_session(&self, session: &Session) -> Result<(), chanto_store::StoreError> {
        self.meta.delete_session(&session.id_hash).await.map(|_| ())
    }
}

impl Session {
    /// Whether this user may do what needs `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.principal.scope >= scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let id = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {COOKIE}={id}; x=y").parse().unwrap());
        assert_eq!(cookie_id(&h), Some(id.clone()));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("{SECURE_COOKIE}={id}").parse().unwrap());
        assert_eq!(cookie_id(&h), Some(id.clone()));
        for bad in ["chanto_session=short", "chanto_session=", "session=aaaa", "chanto_session=<script>"] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, bad.parse().unwrap());
            assert_eq!(cookie_id(&h), None, "{bad}");
        }
        // Through the HTTPS proxy only the __Host- name counts: a sibling
        // host may plant a plain-named cookie (session fixation).
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
        assert_eq!(cookie_id(&h), None);
        h.insert(header::COOKIE, format!("{COOKIE}={}; {SECURE_COOKIE}={id}", "b".repeat(64)).parse().unwrap());
        assert_eq!(cookie_id(&h), Some(id));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_over_https() {
        let c = set_cookie(Some("abc"), false);
        assert_eq!(c, "chanto_session=abc; Path=/; HttpOnly; SameSite=Lax");
        let c = set_cookie(Some("abc"), true);
        assert_eq!(c, "__Host-chanto_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert!(set_cookie(None, false).to_str().unwrap().contains("Max-Age=0"));
    }
}
