//! An OpenID Connect provider on loopback for the single sign-on tests:
//! discovery, a JWKS with one P-256 key, an authorization endpoint that
//! signs in whoever the test says (or refuses), and a token endpoint that
//! checks the client secret, the redirect URI and the PKCE verifier (S256)
//! of a one-time code, and answers with an ES256-signed ID token — or one
//! spoiled the way the test asks, to see chanto refuse it.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// How the next ID token is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    None,
    WrongNonce,
    BadSignature,
    WrongAudience,
    Expired,
    WrongIssuer,
}

/// Whom the provider signs in next.
#[derive(Debug, Clone)]
pub struct Person {
    pub sub: String,
    pub username: String,
    pub groups: Vec<String>,
}

struct Pending {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    challenge: String,
    person: Person,
}

struct IssuerState {
    issuer: String,
    client_id: String,
    secret: String,
    key: EcdsaKeyPair,
    person: Person,
    refuse: Option<(String, String)>,
    spoil: Spoil,
    codes: HashMap<String, Pending>,
    /// Every authorization request's query.
    pub authorize_requests: Vec<HashMap<String, String>>,
}

/// The provider; stops with the test's runtime.
pub struct Issuer {
    pub url: String,
    state: Arc<Mutex<IssuerState>>,
}

impl Issuer {
    pub async fn start(client_id: &str, secret: &str) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let state = Arc::new(Mutex::new(IssuerState {
            issuer: url.clone(),
            client_id: client_id.into(),
            secret: secret.into(),
            key,
            person: Person { sub: "nobody".into(), username: "nobody".into(), groups: vec![] },
            refuse: None,
            spoil: Spoil::None,
            codes: HashMap::new(),
            authorize_requests: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Issuer { url, state }
    }

    /// Signs this person in next (and clears any refusal or spoiling).
    pub fn sign_in_as(&self, sub: &str, username: &str, groups: &[&str]) {
        let mut s = self.state.lock().unwrap();
        s.person = Person {
            sub: sub.into(),
            username: username.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        s.refuse = None;
        s.spoil = Spoil::None;
    }

    /// Refuses the next sign-in with this OAuth error and description.
    pub fn refuse(&self, error: &str, description: &str) {
        self.state.lock().unwrap().refuse = Some((error.into(), description.into()));
    }

    pub fn spoil(&self, spoil: Spoil) {
        self.state.lock().unwrap().spoil = spoil;
    }

    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().authorize_requests.clone()
    }
}

type St = State<Arc<Mutex<IssuerState>>>;

async fn discovery(State(s): St) -> Response {
    let iss = s.lock().unwrap().issuer.clone();
    axum::Json(serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email", "groups"],
    }))
    .into_response()
}

async fn jwks(State(s): St) -> Response {
    let s = s.lock().unwrap();
    let public = s.key.public_key().as_ref(); // 0x04 || x || y
    axum::Json(serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
        "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..65]),
    }]}))
    .into_response()
}

async fn authorize(State(s): St, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    s.authorize_requests.push(q.clone());
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    if let Some((error, description)) = s.refuse.take() {
        return Redirect::to(&format!(
            "{redirect}?error={}&error_description={}&state={}",
            enc(&error),
            enc(&description),
            enc(&state)
        ))
        .into_response();
    }
    let code = format!("code-{}", s.codes.len() + 1);
    let pending = Pending {
        client_id: q.get("client_id").cloned().unwrap_or_default(),
        redirect_uri: redirect.clone(),
        nonce: q.get("nonce").cloned().unwrap_or_default(),
        challenge: q.get("code_challenge").cloned().unwrap_or_default(),
        person: s.person.clone(),
    };
    s.codes.insert(code.clone(), pending);
    Redirect::to(&format!("{redirect}?code={}&state={}", enc(&code), enc(&state))).into_response()
}

fn grant_error(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_grant", "error_description": why})))
        .into_response()
}

async fn token(State(s): St, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    // RFC 6749 2.3.1: the id and secret are form-urlencoded, then Basic.
    let decode = |v: &str| url::form_urlencoded::parse(format!("x={v}").as_bytes()).next().map(|(_, v)| v.into_owned());
    let client = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| pair.split_once(':').and_then(|(id, secret)| Some((decode(id)?, decode(secret)?))));
    if client != Some((s.client_id.clone(), s.secret.clone())) {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "invalid_client"}))).into_response();
    }
    let Some(p) = f.get("code").and_then(|c| s.codes.remove(c)) else { return grant_error("unknown or used code") };
    if f.get("redirect_uri") != Some(&p.redirect_uri) || p.client_id != s.client_id {
        return grant_error("redirect_uri or client differs from the authorization request");
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if B64.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes())) != p.challenge {
        return grant_error("PKCE verifier does not match the challenge");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let spoil = s.spoil;
    let claims = serde_json::json!({
        "iss": if spoil == Spoil::WrongIssuer { "http://127.0.0.1:1".to_owned() } else { s.issuer.clone() },
        "sub": p.person.sub,
        "aud": if spoil == Spoil::WrongAudience { "someone-else".to_owned() } else { s.client_id.clone() },
        "iat": now,
        "exp": if spoil == Spoil::Expired { now - 3600 } else { now + 300 },
        "nonce": if spoil == Spoil::WrongNonce { "another-nonce".to_owned() } else { p.nonce },
        "preferred_username": p.person.username,
        "groups": p.person.groups,
    });
    let header = B64.encode(br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#);
    let signing_input = format!("{header}.{}", B64.encode(claims.to_string()));
    let mut signature =
        s.key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap().as_ref().to_vec();
    if spoil == Spoil::BadSignature {
        signature[10] ^= 1;
    }
    let id_token = format!("{signing_input}.{}", B64.encode(signature));
    axum::Json(
        serde_json::json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
    )
    .into_response()
}
