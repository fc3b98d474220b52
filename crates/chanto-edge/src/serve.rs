//! Answering a request: host → target → path → representation → bytes, with
//! the HTTP semantics of [`crate::http`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chanto_core::manifest::Lookup;
use chanto_core::request_path::{location_path, normalize_request_path, safe_location};
use chanto_core::{Manifest, ManifestEntry, UrlStyle, route_host};
use chanto_rules::{Action, RegexBudget, RuleRequest};

use crate::http::{self, Conditionals, Precondition, RangePlan, Representation};
use crate::{Edge, TargetManifest, zerocopy};

/// The edge as a service: every request goes to one handler, observed for
/// metrics and the access log. A plain `tower::Service` with no routing
/// layers: the edge answers every path the same way, and the layers were a
/// fifth of its time serving small files.
pub fn router(edge: Arc<Edge>) -> EdgeService {
    EdgeService { edge, peer: None, zerocopy: None, secure: false, sni: None }
}

/// See [`router`].
#[derive(Clone)]
pub struct EdgeService {
    pub(crate) edge: Arc<Edge>,
    /// The connection's peer, for access policies.
    peer: Option<std::net::SocketAddr>,
    /// The connection's queue of file sends, if it is plain TCP.
    zerocopy: Option<crate::zerocopy::Jobs>,
    /// Whether the connection is TLS: its requests carry [`crate::tls::Secure`].
    secure: bool,
    /// The name the TLS client asked for (SNI), for [`crate::tls::TlsName`].
    sni: Option<Arc<str>>,
}

impl EdgeService {
    /// This service for one connection from `peer`.
    pub fn with_peer(&self, peer: std::net::SocketAddr) -> Self {
        self.for_connection(peer, None)
    }

    /// This service for one connection, which sends file bodies itself if
    /// it has `zerocopy` (HTTP/1 requests only).
    pub(crate) fn for_connection(&self, peer: std::net::SocketAddr, zerocopy: Option<crate::zerocopy::Jobs>) -> Self {
        Self { edge: self.edge.clone(), peer: Some(peer), zerocopy, secure: false, sni: None }
    }

    /// This service for one TLS connection from `peer` for the name `sni`:
    /// no zero-copy sends (bytes must go through TLS), and every request
    /// marked [`crate::tls::Secure`] and [`crate::tls::TlsName`].
    pub(crate) fn for_tls_connection(&self, peer: std::net::SocketAddr, sni: Option<Arc<str>>) -> Self {
        Self { edge: self.edge.clone(), peer: Some(peer), zerocopy: None, secure: true, sni }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for EdgeService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // The edge reads no request bodies: only GET, HEAD and OPTIONS are served.
        let (mut parts, _body) = req.into_parts();
        if self.secure {
            parts.extensions.insert(crate::tls::Secure);
            if let Some(sni) = &self.sni {
                parts.extensions.insert(crate::tls::TlsName(sni.clone()));
            }
        }
        let (edge, peer) = (self.edge.clone(), self.peer);
        match &self.zerocopy {
            Some(jobs) if parts.version <= axum::http::Version::HTTP_11 => {
                let jobs = jobs.clone();
                Box::pin(crate::zerocopy::CONNECTION.scope(jobs, async move { Ok(observe(&edge, parts, peer).await) }))
            }
            _ => Box::pin(async move { Ok(observe(&edge, parts, peer).await) }),
        }
    }
}

/// The admin listener's router: `/healthz` (the process is alive), `/readyz`
/// (send traffic? and each dependency's state: see [`crate::health`]) and
/// `/metrics`, with no metadata store to report on (an edge alone).
pub fn admin_router(edge: Arc<Edge>) -> Router {
    admin_router_with(edge, None)
}

/// [`admin_router`] that also reports on `meta` (its state in `/readyz`, its
/// pool and query counters in `/metrics`).
pub fn admin_router_with(edge: Arc<Edge>, meta: Option<Arc<dyn chanto_store::MetaStore>>) -> Router {
    type Admin = (Arc<Edge>, Option<Arc<dyn chanto_store::MetaStore>>);
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(
                |State((edge, meta)): State<Admin>,
                 axum::extract::RawQuery(q): axum::extract::RawQuery,
                 headers: HeaderMap| async move {
                    crate::health::readyz(&edge, meta.as_ref(), q.as_deref(), &headers).await
                },
            ),
        )
        .route(
            "/drain",
            axum::routing::post(|State((edge, _)): State<Admin>| async move {
                let already = edge.is_draining();
                edge.start_draining();
                if !already {
                    tracing::info!("draining (POST /drain): /readyz answers 503 from now on");
                }
                let mut resp = (
                    StatusCode::ACCEPTED,
                    "draining: /readyz answers 503 from now on; the node keeps serving for its --drain-grace, then finishes in-flight requests and exits\n",
                )
                    .into_response();
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|State((edge, meta)): State<Admin>| async move {
                let mut body = edge.metrics.render(edge.snapshot().version);
                edge.render_extra_metrics(&mut body);
                edge.overload.render_metrics(&mut body);
                crate::filter::render_metrics(&edge.filters, &mut body);
                edge.blobs.render_metrics(&mut body);
                if let Some(meta) = &meta {
                    meta.render_metrics(&mut body);
                }
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
            }),
        )
        .with_state((edge, meta))
}

/// Who a response was served for, read by [`observe`] for the access log.
#[derive(Clone)]
pub(crate) struct Served {
    pub(crate) site: Arc<str>,
    pub(crate) branch: Option<Arc<str>>,
    pub(crate) deploy: chanto_core::DeployId,
}

impl Served {
    pub(crate) fn of(target: &crate::Target) -> Self {
        Self { site: target.site.clone(), branch: target.branch.clone(), deploy: target.deploy.clone() }
    }
}

/// Answers a request, counts the response and writes its access-log line.
async fn observe(edge: &Edge, req: axum::http::request::Parts, peer: Option<std::net::SocketAddr>) -> Response {
    let started = std::time::Instant::now();
    let mut resp = handle(edge, &req, peer).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    // A HEAD answer names its length but sends no body.
    let bytes = match req.method {
        Method::HEAD => 0,
        _ => resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    edge.metrics.record(status, bytes, elapsed);
    let served = resp.extensions_mut().remove::<Served>();
    let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    log_access(edge, host, req.uri.path(), status, bytes, elapsed, served.as_ref());
    resp
}

/// Writes a response's access-log line, if the log is on.
pub(crate) fn log_access(
    edge: &Edge,
    host: &str,
    path: &str,
    status: u16,
    bytes: u64,
    elapsed: std::time::Duration,
    served: Option<&Served>,
) {
    let Some(log) = edge.access_log.get() else { return };
    let line = crate::access_log::Line {
        ts: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        host,
        path,
        status,
        bytes,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        site: served.map(|s| &*s.site),
        branch: served.and_then(|s| s.branch.as_deref()),
        deploy: served.map(|s| s.deploy.as_str()),
    };
    if !log.log(&line) {
        edge.metrics.access_log_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What every host gets from an edge node that has no routing snapshot yet.
const NO_ROUTING_PAGE: &str = "<!doctype html><meta charset=utf-8><title>Not ready</title>\n<h1>503 Not ready</h1>\n<p>This server is starting and does not know its sites yet. Try again in a moment.</p>\n";

const NOT_FOUND_PAGE: &str = "<!doctype html><meta charset=utf-8><title>Not found</title>\n<h1>404 Not found</h1>\n<p>There is nothing here.</p>\n";
const UNAVAILABLE_PAGE: &str = "<!doctype html><title>Unavailable</title><h1>503 Service unavailable</h1>\n";

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Answers one request, phase by phase (see `DESIGN.md`, "The edge's
/// request phases"): **route** (Host → site, branch, deploy), the site's
/// access policy, **rules** ([`resolve_resource`]: redirects and rewrites,
/// the resource is resolved), **guard** ([`guard_resource`]: path passwords
/// on the request path *and* on the file that will be served), then
/// **represent** and **send** ([`deliver`]). Each phase gets what the one
/// before resolved, never the raw request text again.
async fn handle(edge: &Edge, req: &axum::http::request::Parts, peer: Option<std::net::SocketAddr>) -> Response {
    // One snapshot load per request: everything below answers from it.
    let snapshot = edge.snapshot();
    let secure = is_secure(req);
    if secure && let Some(resp) = misdirected(edge, req) {
        return resp;
    }
    // A custom domain's own answers (its verification token, its redirects
    // to the primary domain and to HTTPS) come before anything else: a
    // redirect to HTTPS is for every method (308 keeps a POST a POST).
    let domain = request_host(req).and_then(|h| snapshot.domain(&domain_key(h)).cloned());
    if let Some(d) = &domain
        && let Some(resp) = domain_answer(edge, d, req, secure)
    {
        return resp;
    }
    if domain.is_none()
        && let Some(resp) = base_challenge_answer(&snapshot, req)
    {
        return resp;
    }
    handle_routed(edge, &snapshot, req, peer, secure).await
}

/// `421 Misdirected Request` (RFC 9110 §15.5.20) for a request over TLS
/// whose host the connection's certificate is not the one for: a client
/// reusing an HTTP/2 connection for another name (coalescing) gets it only
/// where the same certificate covers both, and a client asking one name in
/// SNI and another in `Host` is told to connect for that name. `None`: it is
/// this connection's to answer.
fn misdirected(edge: &Edge, req: &axum::http::request::Parts) -> Option<Response> {
    let sni = req.extensions.get::<crate::tls::TlsName>()?;
    let host = domain_key(request_host(req)?);
    if host.is_empty() || host.eq_ignore_ascii_case(&sni.0) {
        return None;
    }
    if edge.same_certificate(&sni.0, &host) {
        return None;
    }
    let mut resp = (
        StatusCode::MISDIRECTED_REQUEST,
        "421 Misdirected Request: this connection is not for this host; connect again for it\n",
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

/// A base host's ACME HTTP-01 challenge, while its certificate is ordered on
/// demand: the key authorization for its own token only (GET and HEAD).
fn base_challenge_answer(snapshot: &crate::Snapshot, req: &axum::http::request::Parts) -> Option<Response> {
    let token = req.uri.path().strip_prefix(ACME_CHALLENGE_PREFIX)?;
    let challenges = &snapshot.table().base_challenges;
    if challenges.is_empty() || !(req.method == Method::GET || req.method == Method::HEAD) {
        return None;
    }
    let host = domain_key(request_host(req)?);
    let c =
        challenges.iter().find(|c| c.host == *host && c.challenge.alpn_pem.is_none() && c.challenge.token == token)?;
    let mut resp = (StatusCode::OK, c.challenge.key_authorization.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

/// Whether the request arrived over TLS.
fn is_secure(req: &axum::http::request::Parts) -> bool {
    req.extensions.get::<crate::tls::Secure>().is_some()
}

/// The prefix of ACME HTTP-01 challenge paths: never redirected.
pub(crate) const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The path a custom domain answers its verification token on (the control
/// plane's `domains verify` fetches it).
const VERIFY_PREFIX: &str = "/.well-known/acme-challenge/chanto-";

/// `host` as custom domains are keyed: without port or trailing dot, lower case.
pub(crate) fn domain_key(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host_without_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// A custom domain's answer that is not the site's: the verification token,
/// or a redirect (to the primary domain, or from HTTP to HTTPS). Never a
/// redirect under `/.well-known/acme-challenge/`, where certificate
/// authorities must reach the name itself over plain HTTP.
fn domain_answer(
    edge: &Edge,
    d: &crate::DomainTarget,
    req: &axum::http::request::Parts,
    secure: bool,
) -> Option<Response> {
    let path = req.uri.path();
    if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PREFIX) {
        let get = req.method == Method::GET || req.method == Method::HEAD;
        let answer = if path.strip_prefix(VERIFY_PREFIX).is_some_and(|t| t == &*d.verify_token) {
            Some(d.verify_token.to_string())
        } else {
            d.challenge.as_ref().filter(|(t, _)| **t == *token).map(|(_, body)| body.to_string())
        };
        if get && let Some(answer) = answer {
            let mut resp = (StatusCode::OK, answer).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Some(resp);
        }
        return None;
    }
    let to = d.redirect(secure, |n| edge.serves_https(n))?;
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = HeaderValue::from_str(&format!("{}://{}{}", to.scheme, to.host, target)).ok()?;
    let status = if req.method == Method::GET || req.method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = plain(status, "");
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    // Browsers keep a 301 without a lifetime for ever; a site that changes
    // its primary domain should not have to wait that long.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    if secure && let Some(v) = &d.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    Some(resp)
}

/// [`handle`] once the request is past its custom domain's own answers.
async fn handle_routed(
    edge: &Edge,
    snapshot: &crate::Snapshot,
    req: &axum::http::request::Parts,
    peer: Option<std::net::SocketAddr>,
    secure: bool,
) -> Response {
    let head = req.method == Method::HEAD;
    let preflight = req.method == Method::OPTIONS;
    if req.method != Method::GET && !head && !preflight {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "<!doctype html><title>Method not allowed</title><h1>405 Method not allowed</h1>\n",
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
        return resp;
    }
    // Route.
    let Some(host) = request_host(req) else {
        return plain(StatusCode::BAD_REQUEST, "<!doctype html><title>Bad request</title><h1>400 Bad request</h1>\n");
    };
    if snapshot.version == 0 {
        // An edge node that has not loaded its first routing snapshot knows
        // no site yet: a 404 would tell visitors (and caches) a site is gone.
        let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, NO_ROUTING_PAGE);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    let Some(target) = resolve_target(edge, snapshot, host) else {
        return plain(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    };
    let visitor = Visitor::of(edge, peer, &req.headers, &req.uri, host);
    // The branch's access policy covers every path: checked before any rule runs.
    if let Some(policy) = &target.access
        && let crate::access::Verdict::Refuse(resp) =
            edge.guard.check(policy, &target.site, visitor.ip, &req.headers, preflight).await
    {
        return resp;
    }
    if preflight {
        let mut resp = plain(StatusCode::NO_CONTENT, "");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
        return resp;
    }
    // Filter: checks that depend on something outside the node.
    if !edge.filters.is_empty()
        && let Err(refused) = filter_phase(edge, req, &visitor, &target).await
    {
        return refused;
    }
    // Whatever a policy or a filter restricts (passwords, or only networks)
    // is not for shared caches: one client's answer must not reach another.
    let restricted = target.access.as_ref().is_some_and(|p| !p.is_open()) || !edge.filters.is_empty();
    // Only the access log needs to know who was served.
    let served = edge.access_log.get().map(|_| Served::of(&target));
    // Over TLS, the site's HSTS (on its custom domains and its hosts under
    // the base domain alike).
    let hsts = secure.then(|| snapshot.site_hsts(&target.site).cloned()).flatten();
    let mut resp = answer(edge, &visitor, &req.headers, target, head).await;
    if restricted {
        make_private(&mut resp);
    }
    if let Some(v) = hsts {
        resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    if let Some(served) = served {
        resp.extensions_mut().insert(served);
    }
    resp
}

/// The filter phase: each filter in turn (see [`crate::filter`]); an error
/// lets the request through or refuses it, as the filter declares.
async fn filter_phase(
    edge: &Edge,
    req: &axum::http::request::Parts,
    visitor: &Visitor<'_>,
    target: &crate::Target,
) -> Result<(), Response> {
    let request = crate::filter::FilterRequest {
        method: &req.method,
        host: visitor.host,
        uri: &req.uri,
        headers: &req.headers,
        client: visitor.ip,
        site: &target.site,
    };
    for filter in &edge.filters {
        match filter.check(&request).await {
            Ok(crate::filter::Verdict::Allow) => {}
            Ok(crate::filter::Verdict::Respond(resp)) => return Err(resp),
            Err(e) => {
                filter.count_error();
                let on_error = filter.on_error();
                tracing::warn!(filter = filter.name(), on_error = on_error.as_str(), site = %target.site, error = %e, "request filter failed");
                if on_error == crate::filter::OnError::Closed {
                    edge.overload.count(crate::sorry::Reason::FilterError);
                    let manifest = match &target.manifest {
                        TargetManifest::Loaded(m) => Some(m.clone()),
                        TargetManifest::Lazy(_) => None,
                    };
                    let head = req.method == Method::HEAD;
                    return Err(crate::sorry::response(edge, manifest.as_deref(), head).await);
                }
            }
        }
    }
    Ok(())
}

/// The host a request is for: an absolute-form target's authority (RFC
/// 9112 §3.2.2: it wins over `Host`; h2's `:authority` arrives the same
/// way), else the one `Host` field. `None` for a request with more than one
/// `Host` field, which the RFC says to refuse with 400: a proxy in front
/// might route by one and the edge by the other.
fn request_host(req: &axum::http::request::Parts) -> Option<&str> {
    let mut fields = req.headers.get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return None;
    }
    if let Some(authority) = req.uri.authority() {
        return Some(authority.as_str());
    }
    Some(field.and_then(|h| h.to_str().ok()).unwrap_or(""))
}

/// What `host` serves in `snapshot`.
pub(crate) fn resolve_target(edge: &Edge, snapshot: &crate::Snapshot, host: &str) -> Option<crate::Target> {
    if let Some(route) = route_host(host, &edge.base_domain, edge.preview_domain.as_deref()) {
        return snapshot.resolve(&route);
    }
    if let Some(d) = snapshot.domain(&domain_key(host)) {
        return snapshot.resolve(&d.route);
    }
    let site = edge.fallback_site.clone()?;
    snapshot.resolve(&chanto_core::HostRoute::Production { site })
}

/// How a deploy's paths map to files: its rules' URL style, or chanto's
/// default (pretty URLs).
pub(crate) fn url_style(manifest: &Manifest) -> UrlStyle {
    manifest.rules.as_ref().map_or(UrlStyle { pretty_urls: true, ..UrlStyle::default() }, |r| UrlStyle {
        clean_urls: r.clean_urls,
        trailing_slash: r.trailing_slash,
        pretty_urls: r.pretty_urls(),
    })
}

/// Every `X-Forwarded-For` field line, in the order they arrived.
fn forwarded_for(headers: &HeaderMap) -> Vec<&str> {
    headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect()
}

/// What a password protects must not sit in shared caches.
fn make_private(resp: &mut Response) {
    let private = match resp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        Some(cc) if cc.contains("public") => HeaderValue::from_str(&cc.replace("public", "private")).ok(),
        Some(cc) if cc.contains("private") || cc.contains("no-store") => None,
        Some(cc) => HeaderValue::from_str(&format!("private, {cc}")).ok(),
        None => Some(HeaderValue::from_static("private")),
    };
    if let Some(v) = private {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
}

/// Who asked, as the phases after routing need it: the client's address
/// (from a trusted proxy's `X-Forwarded-For`), whether the peer is such a
/// proxy (then its country header is believed), the host without port.
pub(crate) struct Visitor<'a> {
    /// The client's address.
    pub(crate) ip: std::net::IpAddr,
    /// The socket peer is a trusted proxy.
    pub(crate) via_trusted_proxy: bool,
    /// The host the request named, without a port.
    pub(crate) host: &'a str,
    /// The request's target.
    pub(crate) uri: &'a axum::http::Uri,
}

impl<'a> Visitor<'a> {
    fn of(
        edge: &Edge,
        peer: Option<std::net::SocketAddr>,
        headers: &'a HeaderMap,
        uri: &'a axum::http::Uri,
        host: &'a str,
    ) -> Self {
        let peer = peer.map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |p| p.ip());
        let via_trusted_proxy = chanto_core::access::is_trusted_proxy(peer, &edge.trusted_proxies);
        // `X-Forwarded-For` is read only from a trusted proxy.
        let ip = if via_trusted_proxy {
            chanto_core::access::client_ip(peer, &forwarded_for(headers), &edge.trusted_proxies)
        } else {
            chanto_core::access::canonical(peer)
        };
        Self { ip, via_trusted_proxy, host: host_without_port(host), uri }
    }
}

/// `host` without a `:port`.
fn host_without_port(host: &str) -> &str {
    host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// The response for a request whose host resolved to `target`.
async fn answer(
    edge: &Edge,
    visitor: &Visitor<'_>,
    headers: &HeaderMap,
    target: crate::Target,
    head: bool,
) -> Response {
    let manifest = match &target.manifest {
        TargetManifest::Loaded(m) => m.clone(),
        TargetManifest::Lazy(hash) => match edge.manifest(hash).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, deploy = %target.deploy, "permalink manifest unavailable");
                return plain(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE);
            }
        },
    };
    // The site's concurrency cap: above it, the sorry page at once. The
    // permit goes with the response body, so a long download counts until
    // its last byte.
    let permit = match manifest.rules.as_ref().and_then(|r| r.serve.max_concurrency) {
        Some(max) => match edge.overload.site_permit(&target.site, max) {
            Some(p) => Some(p),
            None => return crate::sorry::response(edge, Some(&manifest), head).await,
        },
        None => None,
    };
    let mut resp = answer_with(edge, visitor, headers, target, head, manifest).await;
    if let Some(permit) = permit {
        let body = std::mem::take(resp.body_mut());
        *resp.body_mut() = Body::new(crate::sorry::Permitted::new(body, permit));
    }
    resp
}

/// [`answer`] once the manifest is known and the site's cap passed.
async fn answer_with(
    edge: &Edge,
    visitor: &Visitor<'_>,
    headers: &HeaderMap,
    target: crate::Target,
    head: bool,
    manifest: Arc<Manifest>,
) -> Response {
    let Ok(path) = normalize_request_path(visitor.uri.path()) else {
        return plain(StatusCode::BAD_REQUEST, "<!doctype html><title>Bad request</title><h1>400 Bad request</h1>\n");
    };
    let matcher = manifest.rules.as_ref().filter(|r| !r.is_empty()).map(|r| r.matcher());
    // One budget for every look-around expression this request tries, in
    // its redirect and rewrite rules and in its header rules together.
    let mut budget = RegexBudget::default();
    // Rules.
    let resource = resolve_resource(edge, visitor, headers, &manifest, &path, matcher, &mut budget);
    // Guard.
    let protected = match matcher {
        Some(matcher) => match guard_resource(edge, matcher, &target, visitor, headers, &path, &resource).await {
            Ok(protected) => protected,
            Err(refused) => return refused,
        },
        None => false,
    };
    // Represent and send.
    let not_found = matches!(resource, Resource::NotFound);
    let mut resp = deliver(edge, headers, visitor, &manifest, resource, &target, head).await;
    if let Some(matcher) = matcher {
        apply_header_rules(&mut resp, matcher, &path, &mut budget);
        // Firebase matches header rules against the page it serves: a rule
        // whose source is `404.html` applies to the 404 answer.
        if not_found
            && manifest.rules.as_ref().is_some_and(|r| r.profile == Some(chanto_rules::Profile::Firebase))
            && manifest.files.contains_key("404.html")
        {
            apply_header_rules(&mut resp, matcher, "/404.html", &mut budget);
        }
    }
    if protected {
        make_private(&mut resp);
    }
    resp
}

/// What a request resolved to once the rules have run: the hand-off from
/// the rules phase to the guard and to representation.
pub(crate) enum Resource<'m> {
    /// A file of the deploy. `status` is `None` for an ordinary answer
    /// (validators, conditionals, ranges) and a rewrite's 404 or 410 otherwise.
    File { key: &'m str, entry: &'m ManifestEntry, status: Option<StatusCode> },
    /// A redirect to `location` (a rule's, or a slash or clean-URL redirect).
    Redirect { status: StatusCode, location: String },
    /// A proxy rule's upstream URL.
    Proxy { url: String },
    /// Nothing here: the site's 404.
    NotFound,
}

/// The rules phase: redirects and rewrites, else the files (clean URLs,
/// `dir/index.html`, slash redirects).
fn resolve_resource<'m>(
    edge: &Edge,
    visitor: &Visitor<'_>,
    headers: &HeaderMap,
    manifest: &'m Manifest,
    path: &str,
    matcher: Option<&chanto_rules::Matcher>,
    budget: &mut RegexBudget,
) -> Resource<'m> {
    let action = matcher.and_then(|m| {
        let request = rule_request(edge, visitor.host, path, visitor.uri, headers, visitor.via_trusted_proxy);
        rule_action(m, &request, manifest, budget)
    });
    let query = visitor.uri.query();
    match action {
        None => match manifest.resolve(path, url_style(manifest)) {
            Lookup::File(key, entry) => Resource::File { key, entry, status: None },
            Lookup::RedirectTo(to) => moved_permanently(location_path(&to), query),
            Lookup::AddSlash => moved_permanently(location_path(&format!("{path}/")), query),
            Lookup::NotFound => Resource::NotFound,
        },
        Some(Action::Redirect { status, location }) => Resource::Redirect {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            location: safe_location(&location),
        },
        Some(Action::Rewrite { path: to, status }) => {
            // The target's own query string (if any) does not name a file.
            // Bindings went into it encoded, so this one decoding gives the
            // path the rule meant, dot segments resolved after substitution.
            let file = to.split(['?', '#']).next().unwrap_or_default();
            let Ok(file) = normalize_request_path(file) else { return Resource::NotFound };
            let found = match manifest.lookup(&file) {
                Lookup::NotFound if url_style(manifest).pretty_urls && !file.ends_with('/') => {
                    manifest.lookup(&format!("{file}.html"))
                }
                found => found,
            };
            match found {
                Lookup::File(key, entry) => {
                    let status = (status != 200).then(|| StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND));
                    Resource::File { key, entry, status }
                }
                // A rewrite to nothing: the site's 404.
                _ => Resource::NotFound,
            }
        }
        Some(Action::Proxy { mut url }) => {
            if !url.contains('?')
                && let Some(q) = query
            {
                url.push('?');
                url.push_str(q);
            }
            Resource::Proxy { url }
        }
    }
}

/// A 301 to `location`, the request's query string kept.
fn moved_permanently(mut location: String, query: Option<&str>) -> Resource<'static> {
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    Resource::Redirect { status: StatusCode::MOVED_PERMANENTLY, location }
}

/// The guard phase for path passwords (Netlify's `Basic-Auth`): a rule
/// covering the request path *or* the file that will be served asks for
/// its users, so neither a rewrite nor a clean URL nor `dir/index.html`
/// reaches a protected file by another name. `Ok(true)`: let through, and
/// the answer is private.
async fn guard_resource(
    edge: &Edge,
    matcher: &chanto_rules::Matcher,
    target: &crate::Target,
    visitor: &Visitor<'_>,
    headers: &HeaderMap,
    path: &str,
    resource: &Resource<'_>,
) -> Result<bool, Response> {
    let served = match resource {
        Resource::File { key, .. } => Some(format!("/{key}")),
        _ => None,
    };
    let Some(users) = password_for(matcher, path, served.as_deref()) else { return Ok(false) };
    let policy = chanto_core::AccessPolicy {
        users: users
            .iter()
            .filter_map(|u| Some(chanto_core::AccessUser { user: u.user.clone(), hash: u.hash.clone()? }))
            .collect(),
        ..Default::default()
    };
    if policy.users.is_empty() {
        // Users without a stored hash can never sign in: refuse everyone.
        return Err(plain(StatusCode::FORBIDDEN, "<!doctype html><title>Forbidden</title><h1>403 Forbidden</h1>\n"));
    }
    match edge.guard.check(&policy, &target.site, visitor.ip, headers, false).await {
        crate::access::Verdict::Refuse(resp) => Err(resp),
        _ => Ok(true),
    }
}

/// The users a path-password rule wants for a request to `path` that
/// serves the file at `served` (a URL path), if any rule covers either.
pub(crate) fn password_for<'m>(
    matcher: &'m chanto_rules::Matcher,
    path: &str,
    served: Option<&str>,
) -> Option<&'m [chanto_rules::AuthUser]> {
    matcher.auth_for(path).or_else(|| served.and_then(|s| matcher.auth_for(s)))
}

/// Represent and send: the resource's response.
async fn deliver(
    edge: &Edge,
    headers: &HeaderMap,
    visitor: &Visitor<'_>,
    manifest: &Manifest,
    resource: Resource<'_>,
    target: &crate::Target,
    head: bool,
) -> Response {
    match resource {
        Resource::File { key, entry, status: None } => represent(edge, headers, key, entry, target, head).await,
        Resource::File { entry, status: Some(status), .. } => {
            let rep = http::negotiate(accept_encoding(headers), entry);
            let mut resp = send(edge, rep, entry, None, head, status).await;
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Resource::Redirect { status, location } => {
            let mut resp = plain(status, "");
            match HeaderValue::from_str(&location) {
                Ok(v) => drop(resp.headers_mut().insert(header::LOCATION, v)),
                Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, UNAVAILABLE_PAGE),
            }
            resp
        }
        Resource::Proxy { url } => proxy(edge, headers, visitor, target, &url, head).await,
        Resource::NotFound => not_found(edge, headers, manifest, head).await,
    }
}

/// Forwards a proxy rule's request, if the site may reach the upstream.
async fn proxy(
    edge: &Edge,
    headers: &HeaderMap,
    visitor: &Visitor<'_>,
    target: &crate::Target,
    url: &str,
    head: bool,
) -> Response {
    let Some(proxy) = &edge.proxy else { return crate::proxy::not_allowed() };
    let Ok(uri) = url.parse::<axum::http::Uri>() else { return crate::proxy::not_allowed() };
    if !proxy.allows(&uri, target.proxy_origins.as_deref()) {
        return crate::proxy::not_allowed();
    }
    if !crate::proxy::confined(&uri) {
        return crate::proxy::not_confined();
    }
    let method = if head { Method::HEAD } else { Method::GET };
    proxy.forward(url, &method, headers, visitor.ip, visitor.host).await
}

/// The request as rules see it. The country header is read only when the
/// peer is a trusted proxy: anyone else could send any value.
pub(crate) fn rule_request<'a>(
    edge: &Edge,
    host: &'a str,
    path: &'a str,
    uri: &'a axum::http::Uri,
    headers: &'a HeaderMap,
    via_trusted_proxy: bool,
) -> RuleRequest<'a> {
    RuleRequest {
        host: host_without_port(host),
        path,
        query: uri.query(),
        country: edge
            .country_header
            .as_ref()
            .filter(|_| via_trusted_proxy)
            .and_then(|name| header_str(headers, name.clone())),
        accept_language: header_str(headers, header::ACCEPT_LANGUAGE),
    }
}

/// What the first applicable redirect or rewrite rule says, if one applies.
/// `budget` is the request's one regex budget, shared with its header rules.
pub(crate) fn rule_action(
    matcher: &chanto_rules::Matcher,
    request: &RuleRequest<'_>,
    manifest: &Manifest,
    budget: &mut RegexBudget,
) -> Option<Action> {
    let style = url_style(manifest);
    matcher
        .evaluate_within(request, |p| manifest.resolve(p, style) != Lookup::NotFound, budget)
        .map(|(action, _)| action)
}

/// Adds the headers rules give `path` (the path the visitor asked for, as
/// on Netlify). A `Set-Cookie` loses its `Domain` attribute: a deploy sets
/// cookies for its own host only, never for the base domain and so for
/// every other site under it.
pub(crate) fn apply_header_rules<B>(
    resp: &mut axum::http::Response<B>,
    matcher: &chanto_rules::Matcher,
    path: &str,
    budget: &mut RegexBudget,
) {
    for (name, value) in matcher.headers_for_within(path, budget) {
        let Ok(n) = header::HeaderName::from_bytes(name.as_bytes()) else { continue };
        let value = if n == header::SET_COOKIE { host_only_cookie(value) } else { value.to_owned() };
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(n, v);
        }
    }
}

/// A `Set-Cookie` value without its `Domain` attribute (so the cookie is
/// host-only).
pub(crate) fn host_only_cookie(value: &str) -> String {
    let mut parts = value.split(';');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for attr in parts {
        let name = attr.split('=').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("domain") {
            out.push(';');
            out.push_str(attr);
        }
    }
    out
}

/// The site's `404.html` with status 404, or chanto's own page.
async fn not_found(edge: &Edge, headers: &HeaderMap, manifest: &Manifest, head: bool) -> Response {
    match manifest.files.get("404.html") {
        Some(entry) => {
            let rep = http::negotiate(accept_encoding(headers), entry);
            let mut resp = send(edge, rep, entry, None, head, StatusCode::NOT_FOUND).await;
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => plain(StatusCode::NOT_FOUND, NOT_FOUND_PAGE),
    }
}

fn accept_encoding(h: &HeaderMap) -> Option<&str> {
    h.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok())
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A file's response: negotiation, validators, preconditions, ranges.
pub(crate) async fn represent(
    edge: &Edge,
    req: &HeaderMap,
    path: &str,
    entry: &ManifestEntry,
    target: &crate::Target,
    head: bool,
) -> Response {
    let last_modified = target.last_modified;
    let rep = http::negotiate(accept_encoding(req), entry);
    let etag = http::etag(&rep.hash);
    let conditionals = Conditionals {
        if_match: header_str(req, header::IF_MATCH),
        if_none_match: header_str(req, header::IF_NONE_MATCH),
        if_modified_since: header_str(req, header::IF_MODIFIED_SINCE),
        if_unmodified_since: header_str(req, header::IF_UNMODIFIED_SINCE),
        if_range: header_str(req, header::IF_RANGE),
    };
    let validators = |resp: &mut Response| {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::LAST_MODIFIED, target.last_modified_header.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(http::cache_control(path)));
        if !entry.variants.is_empty() {
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    };
    match http::evaluate(&conditionals, &etag, last_modified) {
        Precondition::NotModified => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            validators(&mut resp);
            return resp;
        }
        Precondition::Failed => {
            let mut resp = plain(StatusCode::PRECONDITION_FAILED, "");
            validators(&mut resp);
            return resp;
        }
        Precondition::Proceed => {}
    }
    let plan = http::plan_range(header_str(req, header::RANGE), conditionals.if_range, &etag, last_modified, rep.size);
    let mut resp = match plan {
        RangePlan::Full => send(edge, rep, entry, None, head, StatusCode::OK).await,
        RangePlan::Partial { start, end } => {
            let mut resp =
                send(edge, rep, entry, Some((start, end - start + 1)), head, StatusCode::PARTIAL_CONTENT).await;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", rep.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        RangePlan::Unsatisfiable => {
            let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", rep.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
    };
    validators(&mut resp);
    resp
}

/// Sends a representation's bytes (or a range of them): small blobs from the
/// memory cache, large ones streamed from the store.
async fn send(
    edge: &Edge,
    rep: Representation,
    entry: &ManifestEntry,
    range: Option<(u64, u64)>,
    head: bool,
    status: StatusCode,
) -> Response {
    let (start, len) = range.unwrap_or((0, rep.size));
    let zerocopy =
        if head || len < edge.zerocopy_min { None } else { zerocopy::CONNECTION.try_with(Clone::clone).ok() };
    let file = match zerocopy {
        Some(jobs) => edge.local_file(&rep.hash).await.map(|f| (jobs, f)),
        None => None,
    };
    let body = if head {
        Ok(Body::empty())
    } else if let Some((jobs, (file, stored))) = file {
        if stored != rep.size {
            return damaged_blob(&rep, stored);
        }
        edge.metrics.sendfile_responses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Body::new(zerocopy::FileBody::new(jobs, file, start, len)))
    } else if rep.size <= edge.cache_max_blob {
        match edge.cached_blob(&rep.hash).await {
            Ok(b) if b.len() as u64 != rep.size => return damaged_blob(&rep, b.len() as u64),
            Ok(b) => Ok(Body::from(b.slice(start as usize..(start + len) as usize))),
            Err(e) => Err(e),
        }
    } else if range.is_some() {
        edge.blobs.open_range(&rep.hash, start, len).await.map(Body::from_stream)
    } else {
        match edge.blobs.open(&rep.hash).await {
            Ok(o) if o.len != rep.size => return damaged_blob(&rep, o.len),
            Ok(o) => Ok(Body::from_stream(o.body)),
            Err(e) => Err(e),
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(blob = %rep.hash, error = %e, "blob unavailable");
            return plain(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE);
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&entry.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(enc) = rep.encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc.as_str()));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// The answer when a stored blob is not the size its manifest declares (a
/// truncated or damaged store): an error an operator must look at, and a
/// 500 for the visitor rather than a body that contradicts its length.
fn damaged_blob(rep: &Representation, stored: u64) -> Response {
    tracing::error!(blob = %rep.hash, declared = rep.size, stored, "blob size differs from its manifest; the store is damaged");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "<!doctype html><title>Server error</title><h1>500 Internal server error</h1>\n",
    )
}
