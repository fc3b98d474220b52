//! Single sign-on to the console with one OpenID Connect provider (issue 18).
//!
//! The authorization code flow with PKCE (S256), a random `state` (checked
//! against the browser's own cookie when the provider sends it back) and a
//! random `nonce` (checked inside the ID token), by the `openidconnect`
//! crate: discovery, the code exchange, and the ID token's signature (the
//! provider's JWKS), issuer, audience, expiry and nonce.
//!
//! Who signs in as whom: a chanto user is linked to the provider's
//! `issuer` + `sub` (never to a name or an email the provider lets people
//! change). A linked user signs in; an unlinked identity gets a new user
//! only when `--oidc-auto-create` (or a group mapping) gives it a role, named
//! after the username claim, and never takes over an existing user of that
//! name (an admin links such a user: `chanto users set-sso NAME SUBJECT`).
//! With a group mapping the provider is authoritative: each sign-in sets the
//! role its groups give (the highest), or the default role, or is refused.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use chanto_store::{Role, UserRecord};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// How long discovered provider metadata (endpoints, signing keys) is used
/// before it is fetched again (keys the provider rotates in are found then).
const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a sign-in may stay at the provider.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
/// How long the provider may take to answer one request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The provider and what its answers mean here (`chanto serve --oidc-*`).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: String,
    /// This installation's client id at the provider.
    pub client_id: String,
    /// Its client secret (none: a public client, PKCE alone).
    pub client_secret: Option<String>,
    /// The sign-in button's text: "Sign in with {label}".
    pub label: String,
    /// The ID token claim that names a new user (e.g. `preferred_username`, `email`).
    pub username_claim: String,
    /// The ID token claim that lists the user's groups.
    pub groups_claim: String,
    /// Group → role (the highest of the user's groups wins).
    pub group_roles: Vec<(String, Role)>,
    /// The role of a user signing in for the first time (or whose groups
    /// map to none): none means only linked users sign in.
    pub default_role: Option<Role>,
    /// Scopes asked for beside `openid profile email`.
    pub extra_scopes: Vec<String>,
}

impl OidcConfig {
    /// Checks the settings (the flags they came from are named).
    pub fn check(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.issuer).map_err(|e| {
            format!("--oidc-issuer {:?} is not a URL ({e}); give e.g. https://id.example.com", self.issuer)
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(format!(
                "--oidc-issuer {:?} is not an https:// URL (plain http is allowed on loopback only, for testing)",
                self.issuer
            ));
        }
        if self.client_id.is_empty() || self.client_id.len() > 512 || self.client_id.chars().any(char::is_control) {
            return Err("--oidc-client-id: give the client id the provider shows for this application".into());
        }
        for claim in [&self.username_claim, &self.groups_claim] {
            if claim.is_empty() || claim.len() > 128 || !claim.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "claim name {claim:?} is not a claim name; give e.g. preferred_username or groups"
                ));
            }
        }
        Ok(())
    }
}

/// Parses a `--oidc-group-role GROUP=ROLE` value.
pub fn parse_group_role(s: &str) -> Result<(String, Role), String> {
    let (group, role) =
        s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not GROUP=ROLE; give e.g. platform-team=admin"))?;
    if group.is_empty() {
        return Err(format!("{s:?} names no group; give e.g. platform-team=admin"));
    }
    Ok((group.to_owned(), role.parse::<Role>().map_err(|e| format!("{s:?}: {e}"))?))
}

/// What a sign-in carries from leaving for the provider to coming back:
/// kept in a short-lived, `HttpOnly` cookie of the browser that started it
/// (so a `state` from another browser never matches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier of the challenge sent.
    pub verifier: String,
    /// Where to go once signed in (a local path).
    pub next: String,
    /// When the sign-in started (Unix ms).
    pub started_at: i64,
}

impl Pending {
    /// The cookie value (base64url of JSON).
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a cookie value; `None` when it is not one of ours or has expired.
    pub fn decode(value: &str, now: i64) -> Option<Pending> {
        if value.len() > 2048 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
        let p: Pending = serde_json::from_slice(&bytes).ok()?;
        (now >= p.started_at && now - p.started_at <= PENDING_TTL_MS).then_some(p)
    }
}

/// Who the provider says signed in (after every check of the ID token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer and the `sub` claim, as users are linked to them.
    pub subject: String,
    /// The `sub` claim alone (what an admin links a user to).
    pub sub: String,
    /// The username claim's value, if the token has it.
    pub username: Option<String>,
    /// The groups claim's values.
    pub groups: Vec<String>,
}

/// What a sign-in does here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign this linked user in (setting this role first, when given).
    SignIn(UserRecord, Option<Role>),
    /// Make a new user, linked, with this name and role, and sign them in.
    Create(String, Role),
}

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The highest role the groups give, if any maps.
pub fn role_of_groups(group_roles: &[(String, Role)], groups: &[String]) -> Option<Role> {
    group_roles.iter().filter(|(g, _)| groups.contains(g)).map(|(_, r)| *r).max_by_key(|r| r.max_scope())
}

/// Decides a sign-in: `linked` is the user linked to the identity, `named`
/// the user whose name the username claim gives (both looked up first).
pub fn decide(
    config: &OidcConfig,
    id: &Identity,
    linked: Option<UserRecord>,
    named: Option<UserRecord>,
) -> Result<Decision, ApiError> {
    let mapped = (!config.group_roles.is_empty()).then(|| role_of_groups(&config.group_roles, &id.groups));
    let role = match mapped {
        Some(m) => m.or(config.default_role),
        None => config.default_role,
    };
    let groups = if id.groups.is_empty() { "none".to_owned() } else { id.groups.join(", ") };
    if let Some(user) = linked {
        return match mapped {
            None => Ok(Decision::SignIn(user, None)),
            Some(_) => match role {
                Some(r) => {
                    let change = (r != user.role).then_some(r);
                    Ok(Decision::SignIn(user, change))
                }
                None => Err(refused(format!(
                    "your groups at {} ({groups}) give no role here; ask an admin to add you to a group that does",
                    config.label
                ))),
            },
        };
    }
    let link = format!("`chanto users set-sso NAME {}`", id.sub);
    let Some(role) = role else {
        return Err(refused(format!(
            "no chanto user is linked to your {} account (subject {}); an admin links one with {link}",
            config.label, id.sub
        )));
    };
    let Some(name) = id.username.as_deref().map(str::to_lowercase) else {
        return Err(refused(format!(
            "{} sent no {:?} claim to name a new user; an admin links an existing user with {link}",
            config.label, config.username_claim
        )));
    };
    crate::accounts::check_user_name(&name).map_err(|e| {
        refused(format!(
            "the {:?} claim cannot name a user here: {}; an admin links one with {link}",
            config.username_claim, e.message
        ))
    })?;
    if named.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a user named {name} exists and is not linked to your {} account; an admin links it with `chanto users set-sso {name} {}`",
                config.label, id.sub
            ),
        ));
    }
    Ok(Decision::Create(name, role))
}

/// The provider, its discovered metadata, and the HTTP client that asks it.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

fn provider_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", format!("the sign-in provider {what}: {e}"))
}

impl Oidc {
    /// A provider (checked settings; nothing is fetched until a sign-in).
    pub fn new(config: OidcConfig) -> Result<Oidc, String> {
        config.check()?;
        // No redirects: the provider's endpoints are what discovery names
        // (following them would let a provider steer requests elsewhere).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Oidc { config, http, metadata: tokio::sync::Mutex::new(None) })
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, ApiError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer =
            IssuerUrl::new(self.config.issuer.clone()).map_err(|e| provider_error("has a bad issuer URL", e))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| provider_error("did not answer discovery", error_chain(&e)))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    async fn client(
        &self,
        redirect: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        ApiError,
    > {
        let m = self.metadata().await?;
        let redirect = RedirectUrl::new(redirect.to_owned()).map_err(|e| provider_error("redirect URL", e))?;
        Ok(CoreClient::from_provider_metadata(
            m,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Where to send the browser, and what to remember until it is back.
    pub async fn begin(&self, redirect: &str, next: String, now: i64) -> Result<(String, Pending), ApiError> {
        let client = self.client(redirect).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in ["profile", "email"].into_iter().map(str::to_owned).chain(self.config.extra_scopes.clone()) {
            request = request.add_scope(openidconnect::Scope::new(scope));
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next,
            started_at: now,
        };
        Ok((url.to_string(), pending))
    }

    /// Exchanges the code the provider sent back for an ID token, checks it
    /// (signature, issuer, audience, expiry, nonce) and reads who it names.
    /// The caller has checked `state` against `pending`.
    pub async fn finish(&self, redirect: &str, pending: Pending, code: String) -> Result<Identity, ApiError> {
        let client = self.client(redirect).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| provider_error("has no token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| provider_error("refused the code", error_chain(&e)))?;
        let id_token = token.id_token().ok_or_else(|| provider_error("sent no ID token", "none in its answer"))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| refused(format!("the ID token from {} was refused: {e}", self.config.label)))?;
        let sub = claims.subject().as_str().to_owned();
        // The signature is checked: read the claims this configuration names
        // (not all standard ones) from the same payload.
        let payload = id_token.to_string();
        let extra: serde_json::Map<String, serde_json::Value> = payload
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(identity(&self.config, claims.issuer().as_str(), &sub, &extra))
    }
}

/// Reads the identity from verified claims.
fn identity(
    config: &OidcConfig,
    issuer: &str,
    sub: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Identity {
    let username = claims.get(&config.username_claim).and_then(|v| v.as_str()).map(str::to_owned);
    let groups = match claims.get(&config.groups_claim) {
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Identity { subject: format!("{} {sub}", issuer.trim_end_matches('/')), sub: sub.to_owned(), username, groups }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://id.example.com".into(),
            client_id: "chanto".into(),
            client_secret: None,
            label: "Example ID".into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            group_roles: Vec::new(),
            default_role: None,
            extra_scopes: Vec::new(),
        }
    }

    fn user(name: &str, role: Role) -> UserRecord {
        UserRecord {
            id: format!("u_{name}"),
            name: name.into(),
            role,
            password_hash: None,
            created_at: 0,
            last_login_at: None,
            sso_subject: Some("https://id.example.com s1".into()),
        }
    }

    fn id(username: Option<&str>, groups: &[&str]) -> Identity {
        Identity {
            subject: "https://id.example.com s1".into(),
            sub: "s1".into(),
            username: username.map(str::to_owned),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn issuers_are_https_or_loopback() {
        let mut c = config();
        assert!(c.check().is_ok());
        for ok in ["http://127.0.0.1:9000", "http://localhost:8080/realms/x", "http://[::1]:1"] {
            c.issuer = ok.into();
            assert!(c.check().is_ok(), "{ok}");
        }
        for bad in ["http://id.example.com", "ftp://x", "not a url", "http://10.0.0.1"] {
            c.issuer = bad.into();
            assert!(c.check().unwrap_err().contains("--oidc-issuer"), "{bad}");
        }
        let mut c = config();
        c.groups_claim = "has space".into();
        assert!(c.check().is_err());
    }

    #[test]
    fn group_roles_parse_and_the_highest_wins() {
        assert_eq!(parse_group_role("ops=admin").unwrap(), ("ops".to_owned(), Role::Admin));
        assert_eq!(parse_group_role("a=b=viewer").unwrap(), ("a=b".to_owned(), Role::Viewer));
        assert!(parse_group_role("ops").unwrap_err().contains("GROUP=ROLE"));
        assert!(parse_group_role("=admin").is_err());
        assert!(parse_group_role("ops=root").is_err());
        let map = vec![("dev".to_owned(), Role::Developer), ("ops".to_owned(), Role::Admin)];
        assert_eq!(role_of_groups(&map, &["ops".into(), "dev".into()]), Some(Role::Admin));
        assert_eq!(role_of_groups(&map, &["dev".into()]), Some(Role::Developer));
        assert_eq!(role_of_groups(&map, &["x".into()]), None);
    }

    #[test]
    fn a_linked_user_signs_in_and_an_unlinked_one_only_with_a_role() {
        let c = config();
        // Linked: in, role untouched without a mapping.
        let d = decide(&c, &id(Some("ann"), &[]), Some(user("ann", Role::Viewer)), None).unwrap();
        assert_eq!(d, Decision::SignIn(user("ann", Role::Viewer), None));
        // Unlinked, no default role: refused, naming the subject and the fix.
        let e = decide(&c, &id(Some("ann"), &[]), None, None).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("subject s1") && e.message.contains("chanto users set-sso NAME s1"),
            "{}",
            e.message
        );
        // With a default role: created, name lowercased.
        let c = OidcConfig { default_role: Some(Role::Viewer), ..config() };
        assert_eq!(
            decide(&c, &id(Some("Ann@Example.com"), &[]), None, None).unwrap(),
            Decision::Create("ann@example.com".into(), Role::Viewer)
        );
        // Never takes over a user of that name.
        let e = decide(&c, &id(Some("ann"), &[]), None, Some(user("ann", Role::Admin))).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("chanto users set-sso ann s1"), "{}", e.message);
        // A claim that is no user name, or none.
        let e = decide(&c, &id(Some("<script>"), &[]), None, None).unwrap_err();
        assert!(e.message.contains("preferred_username"), "{}", e.message);
        assert!(decide(&c, &id(None, &[]), None, None).unwrap_err().message.contains("sent no"));
    }

    #[test]
    fn a_group_mapping_sets_the_role_at_every_sign_in() {
        let map = vec![("dev".to_owned(), Role::Developer), ("ops".to_owned(), Role::Admin)];
        let c = OidcConfig { group_roles: map.clone(), ..config() };
        assert_eq!(
            decide(&c, &id(Some("ann"), &["ops"]), None, None).unwrap(),
            Decision::Create("ann".into(), Role::Admin)
        );
        // Demoted at the provider: demoted here.
        let d = decide(&c, &id(Some("ann"), &["dev"]), Some(user("ann", Role::Admin)), None).unwrap();
        assert_eq!(d, Decision::SignIn(user("ann", Role::Admin), Some(Role::Developer)));
        // In no mapped group and no default: refused, linked or not.
        let e = decide(&c, &id(Some("ann"), &["x"]), Some(user("ann", Role::Admin)), None).unwrap_err();
        assert!(e.message.contains("(x) give no role"), "{}", e.message);
        assert!(decide(&c, &id(Some("ann"), &[]), None, None).is_err());
        // With a default role, that role.
        let c = OidcConfig { group_roles: map, default_role: Some(Role::Viewer), ..config() };
        let d = decide(&c, &id(Some("ann"), &["x"]), Some(user("ann", Role::Admin)), None).unwrap();
        assert_eq!(d, Decision::SignIn(user("ann", Role::Admin), Some(Role::Viewer)));
    }

    #[test]
    fn pending_sign_ins_round_trip_and_expire() {
        let p =
            Pending { state: "s".into(), nonce: "n".into(), verifier: "v".into(), next: "/x".into(), started_at: 1000 };
        let v = p.encode();
        assert_eq!(Pending::decode(&v, 2000), Some(p.clone()));
        assert_eq!(Pending::decode(&v, 1000 + PENDING_TTL_MS + 1), None);
        assert_eq!(Pending::decode(&v, 999), None);
        assert_eq!(Pending::decode("not base64!", 2000), None);
        assert_eq!(Pending::decode(&"A".repeat(5000), 2000), None);
    }

    #[test]
    fn claims_name_the_user_and_the_groups() {
        let c = config();
        let claims = serde_json::json!({"preferred_username": "ann", "groups": ["a", 3, "b"]});
        let i = identity(&c, "https://id.example.com/", "s1", claims.as_object().unwrap());
        assert_eq!(
            i,
            Identity {
                subject: "https://id.example.com s1".into(),
                sub: "s1".into(),
                username: Some("ann".into()),
                groups: vec!["a".into(), "b".into()]
            }
        );
        let claims = serde_json::json!({"groups": "solo"});
        assert_eq!(identity(&c, "https://i", "s", claims.as_object().unwrap()).groups, ["solo"]);
    }
}
