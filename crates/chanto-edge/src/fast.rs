//! The HTTP/1.1 fast path: plain GET and HEAD requests for files, answered
//! from ready-made responses without going through hyper.
//!
//! Every plain-TCP connection starts here. A request is *plain* when it is
//! `GET` or `HEAD` over HTTP/1.1 with an origin-form target, carries no body
//! and no `Range`, and asks for nothing else of the connection (`Connection`
//! is absent, `keep-alive` or `close`; no `Upgrade`, `Expect` or
//! `Transfer-Encoding`).
//! Its answer depends only on the `Host`, the target and `Accept-Encoding`
//! when, in addition, the node has no request filter, its deploy has no
//! access policy and no concurrency cap, no rule but header
//! rules applies to it (and none reads request headers), and the file comes
//! whole from memory or from a local file. Such an answer is rendered once,
//! by the same code as every other response ([`crate::serve::represent`]),
//! and kept in the routing snapshot it was made from
//! ([`crate::Snapshot::responses`]), keyed by those three: a new snapshot
//! starts with only the answers of the sites it did not change (copied when
//! it is built), so an answer never outlives the deploy it came from and a
//! request is still answered from one snapshot. Its `304 Not Modified`
//! twin answers conditional requests, which [`crate::http::evaluate`]
//! decides as for every request.
//!
//! Anything else — another method, a request hyper would refuse, `h2c`, a
//! file streamed from a remote store, a protected deploy — hands the connection,
//! with the bytes read so far, to hyper for good ([`crate::server`]). So the
//! fast path only ever answers what hyper's path would answer the same way;
//! it is an optimisation, not a second HTTP implementation of the edge.
//!
//! It keeps hyper's bounds: headers must arrive within the header-read
//! timeout (counted, as hyper does, from the end of the previous response),
//! heads over the size limit or with too many fields go to hyper to be
//! refused, and a graceful shutdown closes idle connections and lets a
//! response being written finish.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use chanto_core::manifest::Lookup;
use chanto_core::request_path::normalize_request_path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{Conditionals, Precondition};
use crate::serve::Served;
use crate::{Edge, TargetManifest};

/// Bytes a connection's read buffer starts with: most request heads fit.
const INITIAL_BUF: usize = 4096;

/// Most header fields the fast path parses; a request with more goes to
/// hyper, which applies the configured limit.
const MAX_HEADERS: usize = 64;

/// Bytes of ready-made responses a snapshot keeps (heads, and bodies that
/// mostly share their memory with the blob cache).
pub(crate) const RESPONSE_CACHE_BYTES: u64 = 16 << 20;

/// A ready-made answer to a plain request.
pub(crate) struct Ready {
    /// Status line and header lines of the `200 OK`, without `date` and the
    /// blank line that ends the head.
    ok: Bytes,
    /// The same for the `304 Not Modified` answer to a matching conditional.
    not_modified: Bytes,
    body: ReadyBody,
    etag: String,
    last_modified: SystemTime,
    served: Served,
}

/// Where a ready-made answer's body comes from.
enum ReadyBody {
    /// The blob cache's bytes.
    Memory(Bytes),
    /// A blob file, sent with `sendfile` from the page cache.
    File(Arc<std::fs::File>, u64),
}

impl ReadyBody {
    fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(_, len) => *len,
        }
    }
}

#[derive(Clone)]
struct ReadyWeight;

impl quick_cache::Weighter<Box<[u8]>, Arc<Ready>> for ReadyWeight {
    fn weight(&self, key: &Box<[u8]>, val: &Arc<Ready>) -> u64 {
        let body = match &val.body {
            ReadyBody::Memory(b) => b.len(),
            ReadyBody::File(..) => 0,
        };
        (key.len() + val.ok.len() + val.not_modified.len() + body + 128) as u64
    }
}

/// Ready-made responses by request (`host \n target \n accept-encoding`).
pub(crate) struct ResponseCache(quick_cache::sync::Cache<Box<[u8]>, Arc<Ready>, ReadyWeight>);

impl ResponseCache {
    pub(crate) fn new(bytes: u64) -> Self {
        Self(quick_cache::sync::Cache::with_weighter((bytes / 2048).max(16) as usize, bytes, ReadyWeight))
    }

    /// Copies into `into` the answers of the sites `keep` says did not
    /// change (their answers are still exactly what they would be made).
    pub(crate) fn carry_over(&self, into: &ResponseCache, keep: impl Fn(&str) -> bool) {
        for (key, ready) in self.0.iter() {
            if keep(&ready.served.site) {
                into.0.insert(key, ready);
            }
        }
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(RESPONSE_CACHE_BYTES)
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("len", &self.0.len()).finish()
    }
}

/// What the fast path makes of one parsed request.
enum Plan<'a> {
    /// Answer it here.
    Plain(PlainRequest<'a>),
    /// Give the connection to hyper.
    Handoff,
}

/// A plain request's parts that its answer depends on.
struct PlainRequest<'a> {
    head: bool,
    /// `Connection: close`: the last request on this connection.
    close: bool,
    host: &'a str,
    target: &'a str,
    accept_encoding: Option<&'a str>,
    conditionals: Conditionals<'a>,
}

/// A header value as `HeaderValue::to_str` accepts it (visible ASCII, space
/// and tab), so both paths read the same strings.
fn header_text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) { std::str::from_utf8(v).ok() } else { None }
}

/// Sorts a parsed request into plain or not.
fn plan<'a>(req: &httparse::Request<'_, 'a>) -> Plan<'a> {
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Plan::Handoff,
    };
    let (Some(target), Some(1)) = (req.path, req.version) else { return Plan::Handoff };
    if !target.starts_with('/') {
        return Plan::Handoff;
    }
    let (mut host, mut accept_encoding, mut close) = (None, None, false);
    let mut c = Conditionals::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let slot = match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => &mut host,
            15 if name.eq_ignore_ascii_case(b"accept-encoding") => &mut accept_encoding,
            8 if name.eq_ignore_ascii_case(b"if-match") => &mut c.if_match,
            13 if name.eq_ignore_ascii_case(b"if-none-match") => &mut c.if_none_match,
            17 if name.eq_ignore_ascii_case(b"if-modified-since") => &mut c.if_modified_since,
            19 if name.eq_ignore_ascii_case(b"if-unmodified-since") => &mut c.if_unmodified_since,
            8 if name.eq_ignore_ascii_case(b"if-range") => &mut c.if_range,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                if h.value.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Plan::Handoff;
                }
                continue;
            }
            // A body, a change of protocol or framing, or a part of the file.
            5 if name.eq_ignore_ascii_case(b"range") => return Plan::Handoff,
            6 if name.eq_ignore_ascii_case(b"expect") => return Plan::Handoff,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Plan::Handoff,
            14 if name.eq_ignore_ascii_case(b"content-length") => return Plan::Handoff,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Plan::Handoff,
            _ => continue,
        };
        // Repeated, or not text: let hyper's path read it as it does.
        if slot.is_some() {
            return Plan::Handoff;
        }
        let Some(text) = header_text(h.value) else { return Plan::Handoff };
        *slot = Some(text);
    }
    let Some(host) = host else { return Plan::Handoff };
    Plan::Plain(PlainRequest { head, close, host, target, accept_encoding, conditionals: c })
}

/// The cache key of a plain request.
fn key_of(out: &mut Vec<u8>, req: &PlainRequest<'_>) {
    out.clear();
    out.extend_from_slice(req.host.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(req.target.as_bytes());
    out.push(b'\n');
    if let Some(ae) = req.accept_encoding {
        out.push(b'+');
        out.extend_from_slice(ae.as_bytes());
    }
}

/// Renders the answer to a plain request, if it is one the fast path may
/// keep: a file of an open deploy without rules, from memory or a local file.
async fn render(edge: &Edge, snapshot: &crate::Snapshot, req: &PlainRequest<'_>) -> Option<Ready> {
    // hyper refuses targets `Uri` does not parse; so does the fast path.
    let uri: axum::http::Uri = req.target.parse().ok()?;
    // A custom domain that redirects, and the ACME and verification paths,
    // are hyper's path.
    if let Some(d) = snapshot.domain(&crate::serve::domain_key(req.host))
        && (d.redirect(false, |n| edge.serves_https(n)).is_some()
            || uri.path().starts_with(crate::serve::ACME_CHALLENGE_PREFIX))
    {
        return None;
    }
    let target = crate::serve::resolve_target(edge, snapshot, req.host)?;
    if target.access.is_some() {
        return None;
    }
    let manifest = match &target.manifest {
        TargetManifest::Loaded(m) => m.clone(),
        TargetManifest::Lazy(hash) => edge.manifest(hash).await.ok()?,
    };
    // A site's concurrency cap counts requests: hyper's path.
    if manifest.rules.as_ref().is_some_and(|r| r.serve.max_concurrency.is_some()) {
        return None;
    }
    let path = normalize_request_path(uri.path()).ok()?;
    let mut headers = HeaderMap::new();
    if let Some(ae) = req.accept_encoding {
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(ae).ok()?);
    }
    // Rules may only add headers: a password, a redirect, a rewrite or a
    // proxy is hyper's path, and so is a rule that reads request headers
    // (country, language), which are not part of the key.
    let matcher = manifest.rules.as_ref().filter(|r| !r.is_empty()).map(|r| r.matcher());
    // The request's one regex budget, spent as hyper's path spends it.
    let mut budget = chanto_rules::RegexBudget::default();
    if let Some(matcher) = matcher {
        let request = crate::serve::rule_request(edge, req.host, &path, &uri, &headers, false);
        if matcher.reads_request_headers()
            || matcher.auth_for(&path).is_some()
            || crate::serve::rule_action(matcher, &request, &manifest, &mut budget).is_some()
        {
            return None;
        }
    }
    let Lookup::File(file, entry) = manifest.resolve(&path, crate::serve::url_style(&manifest)) else { return None };
    // A password on the file served (a clean URL, `dir/index.html`) is the guard's too.
    if let Some(matcher) = matcher
        && crate::serve::password_for(matcher, &path, Some(&format!("/{file}"))).is_some()
    {
        return None;
    }
    // The heads of a GET and a HEAD are the same; the HEAD reads no bytes.
    let mut ok = crate::serve::represent(edge, &headers, file, entry, &target, true).await;
    if ok.status() != StatusCode::OK {
        return None;
    }
    // The body's source, chosen as `crate::serve::send` chooses it.
    let rep = crate::http::negotiate(req.accept_encoding, entry);
    let local = if rep.size >= edge.zerocopy_min { edge.local_file(&rep.hash).await } else { None };
    // A blob that is not the size its manifest says goes to hyper's path,
    // which answers 500 and logs it.
    let body = match local {
        Some((_, stored)) if stored != rep.size => return None,
        Some((f, _)) => ReadyBody::File(f, rep.size),
        None if rep.size <= edge.cache_max_blob => {
            let bytes = edge.cached_blob(&rep.hash).await.ok()?;
            if bytes.len() as u64 != rep.size {
                return None;
            }
            ReadyBody::Memory(bytes)
        }
        // Streamed from the store: hyper's path.
        None => return None,
    };
    let etag = ok.headers().get(header::ETAG)?.to_str().ok()?.to_owned();
    headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).ok()?);
    let mut not_modified = crate::serve::represent(edge, &headers, file, entry, &target, true).await;
    if not_modified.status() != StatusCode::NOT_MODIFIED {
        return None;
    }
    if let Some(matcher) = matcher {
        // Both answers get the headers one request would get.
        crate::serve::apply_header_rules(&mut ok, matcher, &path, &mut budget.clone());
        crate::serve::apply_header_rules(&mut not_modified, matcher, &path, &mut budget);
    }
    Some(Ready {
        ok: render_head(&ok),
        not_modified: render_head(&not_modified),
        body,
        etag,
        last_modified: target.last_modified,
        served: Served::of(&target),
    })
}

/// A response's status line and header lines, as hyper writes them
/// (lowercase names), without `date` and the closing blank line.
fn render_head<B>(resp: &axum::http::Response<B>) -> Bytes {
    let status = resp.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// `date: <now>\r\n\r\n`, formatted at most once a second per thread.
fn date_line() -> [u8; 39] {
    thread_local! {
        static DATE: std::cell::Cell<(u64, [u8; 39])> = const { std::cell::Cell::new((u64::MAX, [0; 39])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let (at, line) = d.get();
        if at == secs {
            return line;
        }
        let mut line = [0u8; 39];
        line[..6].copy_from_slice(b"date: ");
        line[6..35].copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        line[35..].copy_from_slice(b"\r\n\r\n");
        d.set((secs, line));
        line
    })
}

/// What ended the fast path on a connection.
pub(crate) enum Outcome {
    /// The connection is done (closed by the client, timed out, failed, or
    /// closed for shutdown).
    Closed,
    /// hyper takes over; these bytes were read and not yet answered.
    Handoff(TcpStream, Bytes),
}

/// Serves plain requests on `stream` until one is not plain (see the module
/// docs), the connection ends, or `shutdown` turns true while it is idle.
pub(crate) async fn run(
    mut stream: TcpStream,
    edge: &Edge,
    limits: &crate::server::ServerLimits,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Outcome {
    // Filters ask something outside the node about each request: hyper's path.
    if !edge.filters.is_empty() {
        return Outcome::Handoff(stream, Bytes::new());
    }
    // Grows (to the header size limit) only for requests that need it.
    let max_buf = limits.max_header_bytes.max(8192);
    let mut buf = vec![0u8; INITIAL_BUF.min(max_buf)];
    let (mut start, mut end) = (0usize, 0usize);
    let mut key = Vec::with_capacity(256);
    // The header-read timeout runs from the end of the previous response.
    let mut waiting_since = Instant::now();
    let sleep = tokio::time::sleep_until((waiting_since + limits.header_read_timeout).into());
    tokio::pin!(sleep);
    loop {
        if end > start {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let max = limits.max_headers.min(MAX_HEADERS);
            let mut req = httparse::Request::new(&mut headers[..max]);
            match req.parse(&buf[start..end]) {
                Ok(httparse::Status::Complete(n)) => {
                    let started = Instant::now();
                    let Plan::Plain(plain) = plan(&req) else { break };
                    let Some((ready, status, fresh)) = answer(edge, &plain, &mut key).await else { break };
                    let date = date_line();
                    let ok = status == StatusCode::OK;
                    let head = if ok { &ready.ok } else { &ready.not_modified };
                    // As hyper does, the last response says so.
                    let close = plain.close || *shutdown.borrow();
                    let connection: &[u8] = if close { b"connection: close\r\n" } else { b"" };
                    let len = if plain.head || !ok { 0 } else { ready.body.len() };
                    let elapsed = started.elapsed();
                    edge.metrics.record(status.as_u16(), len, elapsed);
                    edge.metrics.fast_responses.fetch_add(1, Ordering::Relaxed);
                    if edge.access_log.get().is_some() {
                        let path = plain.target.split('?').next().unwrap_or_default();
                        let s = status.as_u16();
                        crate::serve::log_access(edge, plain.host, path, s, len, elapsed, Some(&ready.served));
                    }
                    let parts = [IoSlice::new(head), IoSlice::new(connection), IoSlice::new(&date)];
                    let sent = match &ready.body {
                        _ if len == 0 => write_all(&mut stream, &mut parts.clone()).await,
                        ReadyBody::Memory(body) => {
                            // The first answer's blob lookup was counted as it was made.
                            if !fresh {
                                edge.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                            }
                            let [h, c, d] = parts;
                            write_all(&mut stream, &mut [h, c, d, IoSlice::new(body)]).await
                        }
                        ReadyBody::File(file, len) => {
                            edge.metrics.sendfile_responses.fetch_add(1, Ordering::Relaxed);
                            send_file(&stream, &[head, connection, &date], file, *len).await
                        }
                    };
                    if sent.is_err() {
                        return Outcome::Closed;
                    }
                    if close {
                        let _ = stream.shutdown().await;
                        return Outcome::Closed;
                    }
                    start += n;
                    if start == end {
                        (start, end) = (0, 0);
                    }
                    waiting_since = Instant::now();
                    continue;
                }
                // Too large: hyper refuses it (431).
                Ok(httparse::Status::Partial) if end - start >= max_buf => break,
                Ok(httparse::Status::Partial) => {}
                // Malformed (hyper answers 400), too many headers (431), or
                // not HTTP/1 at all (the h2c preface).
                Err(_) => break,
            }
        }
        if start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if end == buf.len() {
            if buf.len() >= max_buf {
                break;
            }
            buf.resize((buf.len() * 2).min(max_buf), 0);
        }
        let idle = end == 0;
        tokio::select! {
            biased;
            read = stream.read(&mut buf[end..]) => match read {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(n) => end += n,
            },
            () = &mut sleep => {
                let deadline = waiting_since + limits.header_read_timeout;
                if Instant::now() >= deadline {
                    return Outcome::Closed;
                }
                // Armed for an earlier wait: move it to this one's deadline.
                sleep.as_mut().reset(deadline.into());
            }
            changed = shutdown.changed(), if idle => {
                if changed.is_err() || *shutdown.borrow() {
                    return Outcome::Closed;
                }
            }
        }
    }
    Outcome::Handoff(stream, Bytes::copy_from_slice(&buf[start..end]))
}

/// The ready-made answer to a plain request, the status it has, and whether
/// it was made just now, if the fast path may give it.
async fn answer(edge: &Edge, req: &PlainRequest<'_>, key: &mut Vec<u8>) -> Option<(Arc<Ready>, StatusCode, bool)> {
    key_of(key, req);
    let hit = edge.snapshot.load().responses.0.get(key.as_slice());
    let fresh = hit.is_none();
    let ready = match hit {
        Some(r) => r,
        None => {
            let snapshot = edge.snapshot();
            let r = Arc::new(render(edge, &snapshot, req).await?);
            edge.metrics.fast_renders.fetch_add(1, Ordering::Relaxed);
            snapshot.responses.0.insert(key.as_slice().into(), r.clone());
            r
        }
    };
    let status = match crate::http::evaluate(&req.conditionals, &ready.etag, ready.last_modified) {
        Precondition::Proceed => StatusCode::OK,
        Precondition::NotModified => StatusCode::NOT_MODIFIED,
        // 412: hyper's path answers it.
        Precondition::Failed => return None,
    };
    Some((ready, status, fresh))
}

/// Writes `head` (held back with `MSG_MORE` to share the file's first
/// packet), then `len` bytes of `file` from the page cache.
async fn send_file(stream: &TcpStream, head: &[&[u8]], file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use rustix::net::SendFlags;
    let head = head.concat();
    let mut head_sent = 0;
    while head_sent < head.len() {
        let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
        head_sent += send_when_writable(stream, || rustix::net::send(stream, &head[head_sent..], flags)).await?;
    }
    let mut offset = 0u64;
    while offset < len {
        let want = (len - offset).min(1 << 30) as usize;
        let sendfile = || {
            // The offset advances only by what the call reports sent.
            let mut at = offset;
            rustix::fs::sendfile(stream, file, Some(&mut at), want)
        };
        match send_when_writable(stream, sendfile).await? {
            // The file is shorter than its manifest says.
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => offset += n as u64,
        }
    }
    Ok(())
}

/// Runs the non-blocking `send` once `stream` is writable, again after each
/// `EAGAIN` (the zero-copy stream's loop).
async fn send_when_writable(
    stream: &TcpStream,
    mut send: impl FnMut() -> rustix::io::Result<usize>,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| crate::zerocopy::poll_send_with(stream, cx, &mut send)).await
}

/// Writes every byte of `bufs`.
async fn write_all(stream: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        match stream.write_vectored(bufs).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut bufs, n),
        }
    }
    Ok(())
}
