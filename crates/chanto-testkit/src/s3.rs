//! An S3-compatible server for tests: `s3s-fs` (objects as files in a temp
//! directory) served in-process on a loopback port of its own, and a proxy
//! that can put faults between a client and it (503 answers, no answer).
//!
//! [`S3Server::shared`] starts one server per test binary; each test makes its
//! own bucket with [`S3Server::create_bucket`], so tests never see each
//! other's objects. [`S3Server::start`] starts a private one a test may stop.
//! Each server runs on a thread and runtime of its own, so it outlives the
//! runtime of the test that started it and stops with the process.
//! [`S3Server::start_tls`] serves the same over TLS (`https://`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The access key the test servers accept.
pub const ACCESS_KEY: &str = "chanto-test-key";
/// The secret key the test servers accept.
pub const SECRET_KEY: &str = "chanto-test-secret";

/// A running s3s-fs server.
pub struct S3Server {
    addr: SocketAddr,
    /// Served over TLS (`https://`).
    tls: bool,
    root: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Bucket names made so far in this process.
static BUCKETS: AtomicU64 = AtomicU64::new(0);

impl S3Server {
    /// The server shared by every test of this binary.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(S3Server::start)
    }

    /// Starts a server of its own on a free loopback port.
    pub fn start() -> S3Server {
        Self::start_with(None)
    }

    /// Starts a server of its own that speaks only TLS, with `config` (e.g.
    /// [`crate::tls::Leaf::server_config`]); [`S3Server::endpoint`] is then
    /// `https://127.0.0.1:PORT`, so the certificate must hold 127.0.0.1.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> S3Server {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> S3Server {
        let dir = tempfile::tempdir().expect("a temp directory for s3s-fs");
        let root = dir.path().to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port for s3s-fs");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let fs_root = root.clone();
        let https = tls.is_some();
        let thread = std::thread::Builder::new()
            .name("s3s-fs".into())
            .spawn(move || serve(listener, fs_root, stopped, tls))
            .expect("starting the s3s-fs thread");
        S3Server { addr, tls: https, root, stop: Some(stop), thread: Some(thread), _dir: dir }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` for a TLS server.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The port it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes a fresh, empty bucket with a name unique in this process and
    /// returns the name (s3s-fs keeps a bucket as a directory).
    pub fn create_bucket(&self) -> String {
        let name = format!("t{}-{}", std::process::id(), BUCKETS.fetch_add(1, Ordering::Relaxed));
        std::fs::create_dir(self.root.join(&name)).expect("creating a bucket directory");
        name
    }

    /// The file s3s-fs keeps an object in (to damage it in a test).
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the server: its port refuses connections and every open
    /// connection is closed, as when an object store goes down.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    listener: std::net::TcpListener,
    root: PathBuf,
    stopped: tokio::sync::oneshot::Receiver<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for s3s-fs");
    rt.block_on(async move {
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs on its temp directory");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY.to_owned()));
        let service = builder.build();
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let http = ConnBuilder::new(TokioExecutor::new());
        let mut stopped = std::pin::pin!(stopped);
        loop {
            let socket = tokio::select! {
                _ = stopped.as_mut() => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
            };
            // As object stores do (MinIO, like every Go server, sets it):
            // with Nagle's algorithm on, a response written as head and
            // body in two writes waits for the client's delayed ACK, 40 ms
            // on Linux, on many small GETs.
            let _ = socket.set_nodelay(true);
            let (http, service) = (http.clone(), service.clone());
            match tls.clone() {
                None => {
                    tokio::spawn(async move {
                        let _ = http.serve_connection(TokioIo::new(socket), service).await;
                    });
                }
                Some(acceptor) => {
                    // A client that rejects the certificate ends the handshake: nothing to serve.
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    });
                }
            }
        }
    });
    // Drops every connection task with the runtime: clients see the store gone.
    rt.shutdown_background();
}

/// What a [`FaultProxy`] does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward it to the server.
    None = 0,
    /// Answer every request `503 Service Unavailable` and close.
    Unavailable = 1,
    /// Read the request and never answer (a store too slow to wait for).
    Hang = 2,
}

/// A TCP proxy in front of an [`S3Server`] that injects a [`Fault`]. Setting
/// a fault closes every open connection, so pooled ones see it at once.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: Arc<AtomicU8>,
    changed: tokio::sync::watch::Sender<u64>,
    faulted: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port, forwarding.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port for the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let faulted = Arc::new(AtomicUsize::new(0));
        let (changed, watch) = tokio::sync::watch::channel(0u64);
        let (f, n) = (fault.clone(), faulted.clone());
        let thread = std::thread::Builder::new()
            .name("s3-fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    loop {
                        let Ok((client, _)) = listener.accept().await else { continue };
                        tokio::spawn(proxy_one(client, upstream, f.clone(), n.clone(), watch.clone()));
                    }
                });
            })
            .expect("starting the proxy thread");
        FaultProxy { addr, fault, changed, faulted, _thread: thread }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Injects `fault` from now on (closing every open connection).
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Connections that met a fault so far (each is one attempt of a request).
    pub fn faulted(&self) -> usize {
        self.faulted.load(Ordering::SeqCst)
    }
}

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    fault: Arc<AtomicU8>,
    faulted: Arc<AtomicUsize>,
    mut changed: tokio::sync::watch::Receiver<u64>,
) {
    changed.mark_unchanged();
    let work = async {
        match fault.load(Ordering::SeqCst) {
            0 => {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
            1 => {
                faulted.fetch_add(1, Ordering::SeqCst);
                // The request head, then the answer; the body is not waited for.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = client
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = client.shutdown().await;
                // Drain what the client still sends so the close is clean.
                while let Ok(n) = client.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
            _ => {
                faulted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                while let Ok(n) = client.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = changed.changed() => {}
    }
}
