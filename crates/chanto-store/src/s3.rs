//! Blobs in an S3-compatible object store: `s3://BUCKET/PREFIX`, one object
//! per blob at `PREFIX/blobs/ab/cdef…`, and a marker object
//! `PREFIX/chanto-store.json` naming the chanto install that owns the prefix.
//!
//! Writes never overwrite and never expose unverified bytes:
//! - a blob up to [`SINGLE_PUT_MAX`] is received into memory, its hash checked,
//!   then written with one `PUT` carrying `If-None-Match: *`; an "already
//!   exists" answer is success, because the key *is* the hash of the bytes and
//!   the object there was verified the same way when it was written;
//! - a larger one streams into a multipart upload on its final key while it is
//!   hashed; the parts stay invisible until `CompleteMultipartUpload`, which is
//!   sent only when the hash matches (else the upload is aborted). A
//!   `HEAD` first skips the upload of a blob already stored. (object_store's
//!   multipart API carries no `If-None-Match`, so two nodes racing to upload the
//!   same large blob both complete; both wrote the same verified bytes.)
//!
//! This costs memory for small blobs (at most [`SINGLE_PUT_MAX`] per upload in
//! flight) instead of a staging key plus a server-side copy per blob, which
//! would double the requests of a ten-thousand-file deploy and needs a
//! copy-if-not-exists that not every S3-compatible server offers.
//!
//! Reads verify too: [`BlobStore::get`] and [`BlobStore::open`] hash what
//! arrives and fail (the stream's last item is an error) when an object is
//! short or corrupt, so it is never served as whole. Ranges cannot be verified
//! without reading the whole object; the disk cache
//! ([`crate::CachedBlobStore`]) serves ranges from files it verified.
//!
//! Every request has a timeout and bounded retries with exponential backoff,
//! so an unreachable store gives a prompt [`StoreError::Unavailable`], never a
//! hang. A successful `PUT` is durable, so [`BlobStore::sync`] has nothing to do.
//!
//! An `https://` endpoint (and AWS) is verified against the system's roots
//! (rustls-platform-verifier, which on Linux reads them with
//! rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the
//! OS store); a rejected certificate is an error saying so and the fix.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chanto_core::ContentHash;
use futures_util::{Stream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};

use crate::{BlobInfo, BlobStore, ByteStream, OpenBlob, StoreError};

/// Blobs up to this size go up in one `PUT`; larger ones as a multipart upload
/// of parts this size.
pub const SINGLE_PUT_MAX: u64 = 8 << 20;

/// Multipart parts uploaded at once per blob.
const PARTS_IN_FLIGHT: usize = 4;

/// The marker object's name under the prefix.
pub const MARKER: &str = "chanto-store.json";

/// Where and how to reach the object store.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub url: String,
    /// An S3-compatible server's URL (`https://minio.example:9000`); requests
    /// then use path-style addressing. `None`: AWS, or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Access key and secret; `None`: the standard `AWS_*` variables.
    pub credentials: Option<(String, String)>,
    /// This chanto install's id, written to the marker object.
    pub install_id: String,
    /// Take over a prefix whose marker names another install.
    pub claim: bool,
    /// How long one request may take, body included.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Retries of a failed request (5xx, timeouts, connection errors).
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout: Duration,
}

impl S3Options {
    /// Options with chanto's defaults: 30 s per request, 5 s to connect, 3
    /// retries within 10 s (backoff from 100 ms, doubling, at most 2 s).
    pub fn new(url: impl Into<String>, install_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            endpoint: None,
            credentials: None,
            install_id: install_id.into(),
            claim: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
        }
    }
}

/// A parsed `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`, naming what is wrong and the fix.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Config(format!("--blobs {url:?}: {why}; expected s3://BUCKET/PREFIX"));
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(bad(&format!(
                "bucket {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '.' and '-')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(bad(&format!(
                "prefix {prefix:?} may hold only letters, digits, '-', '_', '.' and '/' between non-empty parts"
            )));
        }
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }

    /// A key under the prefix.
    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() { Path::from(rest) } else { Path::from(format!("{}/{rest}", self.prefix)) }
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// What the marker object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// Always "chanto-store".
    kind: String,
    /// The install that owns the prefix.
    install_id: String,
    /// When it was claimed (milliseconds since the epoch).
    claimed_at: i64,
}

/// Blobs in an S3-compatible bucket (see the module docs).
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    location: S3Location,
    /// Where requests go, for error messages.
    endpoint: String,
    metrics: S3Metrics,
    probe: crate::health::ProbeCache,
}

/// The kinds of request the store sends, a metric label each.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Head,
    Put,
    Multipart,
    Delete,
    List,
}

const OPS: [(Op, &str); 6] = [
    (Op::Get, "get"),
    (Op::Head, "head"),
    (Op::Put, "put"),
    (Op::Multipart, "multipart"),
    (Op::Delete, "delete"),
    (Op::List, "list"),
];

/// Kinds of failure, a metric label each: what an operator would fix.
/// `certificate`: the server's TLS certificate was rejected.
const ERROR_KINDS: [&str; 6] = ["refused", "no_bucket", "timeout", "unavailable", "damaged", "certificate"];

/// Request latency by operation and failures by kind, for `/metrics`.
#[derive(Default)]
struct S3Metrics {
    latency: [crate::health::Histogram; OPS.len()],
    errors: [std::sync::atomic::AtomicU64; ERROR_KINDS.len()],
}

impl S3Metrics {
    fn error(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3BlobStore({} at {})", self.location, self.endpoint)
    }
}

/// Whether `endpoint` is an `http://` URL to a loopback host.
fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else { return false };
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl S3BlobStore {
    /// Connects, checks the bucket answers with these credentials, and checks
    /// (or writes) the marker object: a prefix whose marker names another
    /// install is refused unless [`S3Options::claim`] is set.
    pub async fn connect(options: S3Options) -> Result<Self, StoreError> {
        Self::connect_with(options, true).await
    }

    /// Connects and checks the bucket answers, but neither reads nor writes
    /// the marker object: for `chanto backup verify`, which only reads and
    /// must not claim a prefix for an install that is not running.
    pub async fn connect_read_only(options: S3Options) -> Result<Self, StoreError> {
        Self::connect_with(options, false).await
    }

    /// Builds the client without sending anything: for an edge node, which
    /// must start (and serve from its disk) while the object store is down,
    /// and never writes, so it has no marker to check.
    pub async fn connect_unchecked(options: S3Options) -> Result<Self, StoreError> {
        Self::connect_mode(options, false, false).await
    }

    async fn connect_with(options: S3Options, check_marker: bool) -> Result<Self, StoreError> {
        Self::connect_mode(options, true, check_marker).await
    }

    async fn connect_mode(options: S3Options, probe: bool, check_marker: bool) -> Result<Self, StoreError> {
        // object_store signs with ring, and its HTTP client speaks TLS with the
        // process's rustls provider: install ring's (aws-lc would be a second
        // C library to build for the same job). Losing a race to another
        // install is fine: a provider is there either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let location = S3Location::parse(&options.url)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&location.bucket);
        let endpoint = match &options.endpoint {
            Some(e) => {
                if e.starts_with("http://") && !is_loopback_http(e) {
                    return Err(StoreError::Config(format!(
                        "--s3-endpoint {e}: plain http is allowed only to a loopback address; use https://"
                    )));
                }
                if !e.starts_with("http://") && !e.starts_with("https://") {
                    return Err(StoreError::Config(format!(
                        "--s3-endpoint {e:?}: expected an http(s) URL such as https://s3.example.com:9000"
                    )));
                }
                builder = builder.with_endpoint(e).with_virtual_hosted_style_request(false);
                e.clone()
            }
            None => std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_else(|_| "AWS S3".to_owned()),
        };
        if let Some((key, secret)) = &options.credentials {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
        };
        // Client options replace the builder's whole set, allow_http included.
        let allow_http = options.endpoint.as_deref().is_some_and(is_loopback_http)
            || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true");
        let client = ClientOptions::new()
            .with_timeout(options.timeout)
            .with_connect_timeout(options.connect_timeout)
            .with_allow_http(allow_http);
        // UNSIGNED-PAYLOAD: the signature covers the headers but not a
        // SHA-256 of each body. Signing the body would cost a SHA-256 of
        // every blob here and again in the store, and protects nothing
        // chanto relies on: plain http is allowed only to loopback (above),
        // https carries the bytes with TLS's own integrity check, the blob
        // was hashed (BLAKE3) before it is written, and every read checks
        // that hash again (`Verified`, `get`).
        builder = builder.with_unsigned_payload(true);
        let store = builder.with_retry(retry).with_client_options(client).build().map_err(|e| {
            let text = e.to_string();
            // The HTTP client reads the system's roots when it is built.
            if text.contains("CA certificates") || text.contains("CA root") {
                return StoreError::Config(format!(
                    "--blobs {location}: the object store's TLS client found no trusted roots ({text}); install the ca-certificates package, or point SSL_CERT_FILE at a PEM bundle of the CAs to trust"
                ));
            }
            StoreError::Config(format!(
                "--blobs {location}: {text}; set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and --s3-endpoint for a server other than AWS)"
            ))
        })?;
        let this = Self {
            store: Arc::new(store),
            location,
            endpoint,
            metrics: S3Metrics::default(),
            probe: crate::health::ProbeCache::default(),
        };
        // A listing answers NoSuchBucket for a missing bucket on every server
        // (some create a bucket on the first PUT) and checks the credentials.
        let prefix = this.location.key("blobs");
        if !probe {
            return Ok(this);
        }
        if let Err(e) = this.timed(Op::List, this.store.list_with_delimiter(Some(&prefix))).await {
            return Err(this.error("listing the bucket", e));
        }
        if check_marker {
            this.check_marker(&options.install_id, options.claim).await?;
        }
        Ok(this)
    }

    /// Where the store is, for messages: `s3://bucket/prefix at ENDPOINT`.
    pub fn describe(&self) -> String {
        format!("{} at {}", self.location, self.endpoint)
    }

    /// The object key of a blob.
    pub fn key_of(&self, hash: &ContentHash) -> String {
        self.blob_key(hash).to_string()
    }

    /// Runs one request, counting its time (to the response's headers).
    async fn timed<T>(&self, op: Op, request: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = request.await;
        self.metrics.latency[op as usize].observe(started.elapsed());
        out
    }

    fn blob_key(&self, hash: &ContentHash) -> Path {
        let hex = hash.to_hex();
        self.location.key(&format!("blobs/{}/{}", &hex[..2], &hex[2..]))
    }

    /// Maps an object-store error: a missing object to `NotFound(what)`,
    /// refused credentials and a missing bucket to messages saying the fix,
    /// anything else to [`StoreError::Unavailable`].
    fn error(&self, what: impl std::fmt::Display, e: object_store::Error) -> StoreError {
        let text = e.to_string();
        if let Some(message) = self.certificate_error(&e, &text) {
            self.metrics.error("certificate");
            return StoreError::Unavailable(message);
        }
        // Some errors (a listing's) arrive wrapped as Generic: the status and
        // the S3 error code are in the text.
        let refused =
            matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
                || ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403 Forbidden", "401 Unauthorized"]
                    .iter()
                    .any(|code| text.contains(code));
        if !matches!(e, object_store::Error::NotFound { .. }) || text.contains("NoSuchBucket") {
            let kind = if refused {
                "refused"
            } else if text.contains("NoSuchBucket") {
                "no_bucket"
            } else if is_timeout(&e) {
                "timeout"
            } else {
                "unavailable"
            };
            self.metrics.error(kind);
        }
        match e {
            object_store::Error::NotFound { .. } if !text.contains("NoSuchBucket") => {
                StoreError::NotFound(what.to_string())
            }
            _ if refused => StoreError::Unavailable(format!(
                "blob store {}: {what}: the credentials were refused ({text}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SESSION_TOKEN) to a key allowed to read and write the bucket",
                self.describe()
            )),
            _ if text.contains("NoSuchBucket") => StoreError::Unavailable(format!(
                "blob store {}: bucket {:?} does not exist; create it or fix --blobs",
                self.describe(),
                self.location.bucket
            )),
            _ => StoreError::Unavailable(format!("blob store {}: {what}: {text}", self.describe())),
        }
    }

    /// The words for a request that failed because the server's TLS
    /// certificate was rejected (verified against the system's roots:
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the OS store), or
    /// `None`.
    fn certificate_error(&self, e: &object_store::Error, text: &str) -> Option<String> {
        use crate::tls::{CertProblem, certificate_problem, find_rustls_error};
        let (problem, detail) = match find_rustls_error(e) {
            Some(r) => (certificate_problem(r)?, r.to_string()),
            // In case a layer between keeps only the words.
            None if text.contains("invalid peer certificate") => {
                let detail = text[text.find("invalid peer certificate").unwrap_or(0)..].to_owned();
                let problem = if detail.contains("UnknownIssuer") {
                    CertProblem::UnknownIssuer
                } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
                    CertProblem::WrongName
                } else if detail.contains("Expired") || detail.contains("NotValidYet") {
                    CertProblem::OutOfDate
                } else {
                    CertProblem::Other
                };
                (problem, detail)
            }
            None => return None,
        };
        let at = &self.endpoint;
        Some(match problem {
            CertProblem::UnknownIssuer => format!(
                "the object store at {at} presented a certificate not signed by a trusted root: {detail}; add its CA to the system roots or SSL_CERT_FILE"
            ),
            CertProblem::WrongName => format!(
                "the object store at {at} presented a certificate that is not valid for its host name: {detail}; use an --s3-endpoint whose host name (or address) the certificate holds"
            ),
            CertProblem::OutOfDate => format!(
                "the object store at {at} presented a certificate that has expired or is not valid yet: {detail}; renew the server's certificate, or check this machine's clock"
            ),
            CertProblem::Other => {
                format!("the object store at {at} presented a certificate that was rejected: {detail}")
            }
        })
    }

    /// Reads the marker; writes ours if there is none; refuses another
    /// install's unless `claim`.
    async fn check_marker(&self, install_id: &str, claim: bool) -> Result<(), StoreError> {
        let key = self.location.key(MARKER);
        let ours = || {
            let m = Marker {
                kind: "chanto-store".into(),
                install_id: install_id.to_owned(),
                claimed_at: crate::now_millis(),
            };
            PutPayload::from(Bytes::from(serde_json::to_vec_pretty(&m).expect("a marker serializes")))
        };
        // Twice at most: a marker another process created between our read and
        // our create is read again.
        for _ in 0..2 {
            let found = match self.timed(Op::Get, self.store.get(&key)).await {
                Ok(r) => Some(r.bytes().await.map_err(|e| self.error(format!("reading {key}"), e))?),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(self.error(format!("reading the marker {key}"), e)),
            };
            let Some(bytes) = found else {
                match self.timed(Op::Put, self.store.put_opts(&key, ours(), PutMode::Create.into())).await {
                    Ok(_) => {
                        tracing::info!(store = %self.describe(), "claimed the blob store for this install");
                        return Ok(());
                    }
                    Err(object_store::Error::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(self.error(format!("writing the marker {key}"), e)),
                }
            };
            let owner = serde_json::from_slice::<Marker>(&bytes).ok().filter(|m| m.kind == "chanto-store");
            if owner.as_ref().is_some_and(|m| m.install_id == install_id) {
                return Ok(());
            }
            let whose = match &owner {
                Some(m) => format!("another chanto install (install id {})", m.install_id),
                None => "something that is not a chanto marker".to_owned(),
            };
            if !claim {
                return Err(StoreError::Conflict(format!(
                    "blob store {}: {key} says it belongs to {whose}, and this install's id is {install_id}; sharing a prefix between installs lets one delete the other's blobs. Use another prefix, or pass --blobs-claim if this install takes it over (e.g. after moving)",
                    self.describe()
                )));
            }
            tracing::warn!(store = %self.describe(), previous = %whose, "--blobs-claim: taking over the blob store");
            self.timed(Op::Put, self.store.put_opts(&key, ours(), PutMode::Overwrite.into()))
                .await
                .map_err(|e| self.error(format!("writing the marker {key}"), e))?;
            return Ok(());
        }
        Err(StoreError::Conflict(format!(
            "blob store {}: the marker {key} changed while it was read; another install is starting on this prefix",
            self.describe()
        )))
    }

    /// Receives `body` into memory (small) or a multipart upload (large),
    /// verifying size and hash before anything becomes visible.
    async fn put_verified(&self, hash: &ContentHash, mut body: ByteStream, max_size: u64) -> Result<u64, StoreError> {
        enum Sink {
            Held(Vec<Bytes>),
            Multipart(WriteMultipart),
            /// Already stored: only verify.
            Drain,
        }
        let key = self.blob_key(hash);
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        let mut sink = Sink::Held(Vec::new());
        let received: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::io(format!("receiving blob {hash}"), e))?;
                len += chunk.len() as u64;
                if len > max_size {
                    return Err(StoreError::TooLarge { limit: max_size });
                }
                hasher.update(&chunk);
                match &mut sink {
                    Sink::Held(held) if len <= SINGLE_PUT_MAX => held.push(chunk),
                    Sink::Held(held) => {
                        let held = std::mem::take(held);
                        if self.has(hash).await? {
                            sink = Sink::Drain;
                            continue;
                        }
                        let upload = self
                            .timed(Op::Multipart, self.store.put_multipart(&key))
                            .await
                            .map_err(|e| self.error(format!("starting the upload of blob {hash}"), e))?;
                        let mut w = WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT_MAX as usize);
                        for c in held.into_iter().chain(std::iter::once(chunk)) {
                            w.put(c);
                        }
                        sink = Sink::Multipart(w);
                    }
                    Sink::Multipart(w) => {
                        self.timed(Op::Multipart, w.wait_for_capacity(PARTS_IN_FLIGHT))
                            .await
                            .map_err(|e| self.error(format!("uploading blob {hash}"), e))?;
                        w.put(chunk);
                    }
                    Sink::Drain => {}
                }
            }
            let actual = ContentHash::from_blake3(hasher.finalize());
            if actual != *hash {
                return Err(StoreError::HashMismatch { expected: *hash, actual });
            }
            Ok(())
        }
        .await;
        match (received, sink) {
            (Err(e), Sink::Multipart(w)) => {
                // Nothing was completed, so nothing is visible; abort frees the parts.
                if let Err(abort) = w.abort().await {
                    tracing::warn!(blob = %hash, error = %abort, "could not abort a failed multipart upload; a lifecycle rule for incomplete uploads cleans it up");
                }
                Err(e)
            }
            (Err(e), _) => Err(e),
            (Ok(()), Sink::Drain) => Ok(len),
            (Ok(()), Sink::Multipart(w)) => {
                self.timed(Op::Multipart, w.finish())
                    .await
                    .map_err(|e| self.error(format!("completing the upload of blob {hash}"), e))?;
                Ok(len)
            }
            (Ok(()), Sink::Held(held)) => {
                let payload: PutPayload = held.into_iter().collect();
                match self.timed(Op::Put, self.store.put_opts(&key, payload, PutMode::Create.into())).await {
                    // The key is the hash: what is there holds these bytes.
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(len),
                    Err(e) => Err(self.error(format!("writing blob {hash}"), e)),
                }
            }
        }
    }
}

/// Whether a request failed by taking too long (the client's timeout), as
/// opposed to being refused or cut: found in the error's causes.
fn is_timeout(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<reqwest_s3::Error>().is_some_and(|r| r.is_timeout())
            || s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error a short or corrupt object becomes: never served as whole.
fn damaged(hash: &ContentHash, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "blob {hash} in the object store is damaged ({why}); delete the object so the next deploy uploads it again"
        ),
    )
}

/// A blob's bytes as they arrive, hashed and counted: the last item is an
/// error if they are not `len` bytes hashing to `hash`.
struct Verified {
    inner: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
    hasher: blake3::Hasher,
    hash: ContentHash,
    len: u64,
    seen: u64,
    done: bool,
}

impl Stream for Verified {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                self.hasher.update(&chunk);
                if self.seen > self.len {
                    self.done = true;
                    let why = format!("more than the {} bytes announced", self.len);
                    return Poll::Ready(Some(Err(damaged(&self.hash, why))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                let actual = ContentHash::from_blake3(self.hasher.finalize());
                if self.seen != self.len {
                    let why = format!("{} bytes arrived of {}", self.seen, self.len);
                    return Poll::Ready(Some(Err(damaged(&self.hash, why))));
                }
                if actual != self.hash {
                    return Poll::Ready(Some(Err(damaged(&self.hash, format!("its bytes hash to {actual}")))));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn has(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        match self.timed(Op::Head, self.store.head(&self.blob_key(hash))).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(format!("checking blob {hash}"), e)),
        }
    }

    async fn missing(&self, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, StoreError> {
        // One HEAD per blob, 32 at a time; `buffered` keeps the order.
        let answers: Vec<Result<(ContentHash, bool), StoreError>> = futures_util::stream::iter(hashes.iter().copied())
            .map(|h| async move { self.has(&h).await.map(|has| (h, has)) })
            .buffered(32)
            .collect()
            .await;
        let mut out = Vec::new();
        for a in answers {
            let (h, has) = a?;
            if !has {
                out.push(h);
            }
        }
        Ok(out)
    }

    async fn put(&self, hash: &ContentHash, body: ByteStream, max_size: u64) -> Result<u64, StoreError> {
        self.put_verified(hash, body, max_size).await
    }

    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        let what = || format!("blob {hash}");
        let got = self.timed(Op::Get, self.store.get(&self.blob_key(hash))).await.map_err(|e| self.error(what(), e))?;
        let size = got.meta.size;
        let bytes = got.bytes().await.map_err(|e| self.error(what(), e))?;
        let actual = ContentHash::of(&bytes);
        if bytes.len() as u64 != size || actual != *hash {
            self.metrics.error("damaged");
            let why = format!("{} bytes hashing to {actual}, of {size} announced", bytes.len());
            return Err(StoreError::io(format!("reading blob {hash}"), damaged(hash, why)));
        }
        Ok(bytes)
    }

    async fn open(&self, hash: &ContentHash) -> Result<OpenBlob, StoreError> {
        let got = self
            .timed(Op::Get, self.store.get(&self.blob_key(hash)))
            .await
            .map_err(|e| self.error(format!("blob {hash}"), e))?;
        let len = got.meta.size;
        let inner = got.into_stream().map(|r| r.map_err(std::io::Error::other)).boxed();
        let body = Verified { inner, hasher: blake3::Hasher::new(), hash: *hash, len, seen: 0, done: false };
        Ok(OpenBlob { len, body: Box::pin(body) })
    }

    async fn open_range(&self, hash: &ContentHash, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        if len == 0 {
            // S3 refuses an empty range; the blob must still exist.
            if !self.has(hash).await? {
                return Err(StoreError::NotFound(format!("blob {hash}")));
            }
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let options = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..Default::default() };
        let got = self
            .timed(Op::Get, self.store.get_opts(&self.blob_key(hash), options))
            .await
            .map_err(|e| self.error(format!("blob {hash}"), e))?;
        Ok(Box::pin(got.into_stream().map(|r| r.map_err(std::io::Error::other))))
    }

    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        match self.timed(Op::Delete, self.store.delete(&self.blob_key(hash))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting blob {hash}"), e)),
        }
    }

    async fn list(&self) -> Result<Vec<ContentHash>, StoreError> {
        let prefix = self.location.key("blobs");
        let metas: Vec<_> = self.timed(Op::List, self.store.list(Some(&prefix)).collect()).await;
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| self.error("listing blobs", e))?;
            let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [.., shard, name] = parts.as_slice()
                && let Ok(h) = format!("{shard}{name}").parse::<ContentHash>()
            {
                out.push(h);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn list_sizes(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let prefix = self.location.key("blobs");
        let metas: Vec<_> = self.store.list(Some(&prefix)).collect().await;
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| self.error("listing blobs", e))?;
            let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [.., shard, name] = parts.as_slice()
                && let Ok(hash) = format!("{shard}{name}").parse::<ContentHash>()
            {
                out.push(BlobInfo { hash, size: m.size, stored_at: m.last_modified.timestamp_millis() });
            }
        }
        out.sort_by_key(|b| b.hash);
        out.dedup_by_key(|b| b.hash);
        Ok(out)
    }

    /// A `PUT` that succeeded is durable: nothing to do.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A `HEAD` of the marker object (cached for a few seconds): the bucket
    /// answers, with these credentials, and still names this install's prefix.
    async fn health(&self) -> Vec<crate::health::Check> {
        use crate::health::{Check, PROBE_TIMEOUT, State};
        let backend = || format!("s3 {}", self.describe());
        let probe = async {
            let key = self.location.key(MARKER);
            let started = std::time::Instant::now();
            match self.timed(Op::Head, self.store.head(&key)).await {
                Ok(_) => {
                    let ms = started.elapsed().as_millis();
                    Check::new("blobs", backend(), State::Up, format!("the marker object answered in {ms} ms"))
                }
                Err(object_store::Error::NotFound { .. }) => Check::new(
                    "blobs",
                    backend(),
                    State::Degraded,
                    format!(
                        "the marker object {key} is missing: was the prefix emptied? Restart chanto to write it again"
                    ),
                ),
                Err(e) => {
                    Check::new("blobs", backend(), State::Down, self.error(format!("checking {key}"), e).to_string())
                }
            }
        };
        let timed_out = || {
            self.metrics.error("timeout");
            let why = format!("no answer within {} s", PROBE_TIMEOUT.as_secs());
            Check::new("blobs", backend(), State::Down, why)
        };
        vec![self.probe.get(probe, timed_out).await]
    }

    fn render_metrics(&self, out: &mut String) {
        use crate::health::header;
        use std::fmt::Write;
        let name = "chanto_blob_store_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Object-store requests by operation, time to the response's headers (retries included).",
        );
        for (op, label) in OPS {
            self.metrics.latency[op as usize].render(out, name, &format!("op=\"{label}\""));
        }
        let name = "chanto_blob_store_errors_total";
        header(
            out,
            name,
            "counter",
            "Object-store requests that failed, by kind (refused credentials, missing bucket, timeout, unavailable, damaged object).",
        );
        for (kind, n) in ERROR_KINDS.iter().zip(&self.metrics.errors) {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", n.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_name_the_fix() {
        let l = S3Location::parse("s3://my-bucket/sites/prod/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "sites/prod"));
        assert_eq!(l.to_string(), "s3://my-bucket/sites/prod");
        assert_eq!(S3Location::parse("s3://bkt").unwrap().prefix, "");
        for bad in ["http://b/p", "s3://B/p", "s3://ab", "s3://bucket/../x", "s3://bucket/a//b", "s3://bucket/a b"] {
            let e = S3Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains("s3://BUCKET/PREFIX"), "{bad}: {e}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:9000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("http://10.0.0.1:9000"));
        assert!(!is_loopback_http("https://127.0.0.1:9000"));
    }
}
