//! The API client: finds the server and token (flags → environment → the
//! file `chanto login` writes) and turns API errors into readable messages.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chanto_control::error::ErrorBody;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cli::Connection;

/// The default API URL, matching `chanto serve`'s default `--api`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

/// What `chanto login` saves.
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// API URL.
    pub server: Option<String>,
    /// API token.
    pub token: Option<String>,
}

/// The user config file: `$CHANTO_CONFIG`, else `$XDG_CONFIG_HOME/chanto/config.toml`,
/// else `~/.config/chanto/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHANTO_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("chanto").join("config.toml"))
}

/// Reads the user config file; a missing file is an empty config.
pub fn load_user_config() -> anyhow::Result<UserConfig> {
    let Some(path) = config_path() else { return Ok(UserConfig::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserConfig::default()),
        Err(e) => Err(anyhow!("reading {}: {e}", path.display())),
    }
}

/// Resolves the server and token: flags, then environment, then the user config.
pub fn resolve(conn: &Connection) -> anyhow::Result<(String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let file = load_user_config()?;
    let server =
        conn.server.clone().or_else(|| env("CHANTO_SERVER")).or(file.server).unwrap_or_else(|| DEFAULT_SERVER.into());
    let token = conn.token.clone().or_else(|| env("CHANTO_TOKEN")).or(file.token);
    Ok((server.trim_end_matches('/').to_owned(), token))
}

/// A client of one chanto API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

/// An API call's failure, keeping whether a retry could help.
#[derive(Debug)]
pub struct CallError {
    /// HTTP status, if the server answered.
    pub status: Option<u16>,
    /// The server's machine code, if it sent one.
    pub code: Option<String>,
    /// A readable description.
    pub message: String,
    /// Seconds the server asked to wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Network failures, 5xx (but not 507: a full disk stays full), 408 and 429.
    pub fn is_retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s == 408 || s == 429 || (s >= 500 && s != 501 && s != 507),
        }
    }
}

impl Client {
    /// A client for the resolved connection.
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        let (server, token) = resolve(conn)?;
        Self::with(server, token)
    }

    /// A client for an explicit server and token.
    pub fn with(server: String, token: Option<String>) -> anyhow::Result<Self> {
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            bail!(
                "server URL {server:?} must start with http:// or https:// (from --server, CHANTO_SERVER or `chanto login`)"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, server, token })
    }

    /// The API's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// What to say when the server answered with something that is not the
    /// API's JSON: a web page most likely means `--server` names the edge.
    fn not_the_api(&self, status: reqwest::StatusCode, bytes: &[u8]) -> String {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim_start().to_ascii_lowercase();
        if head.starts_with("<!doctype") || head.starts_with("<html") || head.starts_with('<') {
            format!(
                "{} answered with a web page (HTTP {status}), not the chanto API: this looks like the edge, not the API (default port 8787); check --server or CHANTO_SERVER",
                self.server
            )
        } else {
            format!(
                "{} did not answer like the chanto API (HTTP {status}): {}",
                self.server,
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).trim()
            )
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}/api/v1{path}", self.server));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Sends a request and decodes a JSON answer (or `()` for 204).
    pub async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, CallError> {
        let resp = self.send_raw(rb).await?;
        self.decode(resp).await
    }

    async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        rb.send().await.map_err(|e| CallError {
            status: None,
            code: None,
            message: format!(
                "cannot reach the chanto API at {}: {}; is `chanto serve` running? (--server, CHANTO_SERVER)",
                self.server,
                root_cause(&e)
            ),
            retry_after: None,
        })
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, CallError> {
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await.map_err(|e| CallError {
            status: None,
            code: None,
            message: format!("reading the answer from {}: {}", self.server, root_cause(&e)),
            retry_after: None,
        })?;
        if status.is_success() {
            let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(body).map_err(|e| CallError {
                status: Some(status.as_u16()),
                code: None,
                message: if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                    format!("unexpected answer from {}: {e}", self.server)
                } else {
                    self.not_the_api(status, &bytes)
                },
                retry_after: None,
            });
        }
        let (code, mut message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => {
                let mut m = b.error.message;
                if let Some(f) = b.error.field {
                    m = format!("{m} (field: {f})");
                }
                (Some(b.error.code), m)
            }
            Err(_) => (None, self.not_the_api(status, &bytes)),
        };
        if status.as_u16() == 401 && self.token.is_none() && code.as_deref() == Some("unauthorized") {
            // The API's own text is written for API clients; a CLI user needs one line.
            message = "no API token: pass --token, set CHANTO_TOKEN, or run `chanto login`".into();
        }
        Err(CallError { status: Some(status.as_u16()), code, message, retry_after })
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// PUT a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// PATCH with a JSON body.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::PATCH, path).json(body)).await
    }

    /// DELETE a resource.
    pub async fn delete(&self, path: &str) -> Result<(), CallError> {
        self.send::<serde_json::Value>(self.request(reqwest::Method::DELETE, path)).await.map(|_| ())
    }

    /// DELETE a resource that answers with what it deleted.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// GET a streamed body (a build log), after checking the status.
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, CallError> {
        let resp = self.send_raw(self.request(reqwest::Method::GET, path)).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        Err(self.decode::<serde_json::Value>(resp).await.err().unwrap_or_else(|| CallError {
            status: Some(status.as_u16()),
            code: None,
            message: format!("HTTP {status}"),
            retry_after: None,
        }))
    }

    /// POST raw bytes of a given media type, decode a JSON answer.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: reqwest::Body,
    ) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::POST, path).header("content-type", content_type).body(body)).await
    }

    /// PUT raw bytes, decode a JSON answer.
    pub async fn put_bytes<T: DeserializeOwned>(&self, path: &str, body: reqwest::Body) -> Result<T, CallError> {
        self.send(
            self.request(reqwest::Method::PUT, path).header("content-type", "application/octet-stream").body(body),
        )
        .await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes a path segment (site names and ids are safe already; this
/// keeps hostile input from changing the URL's shape).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
