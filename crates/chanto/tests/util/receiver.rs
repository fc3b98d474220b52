//! An HTTP receiver on loopback for notification tests: records every request and answers what its handler says.
//! Real sockets, real HTTP (axum on its own runtime); the handler may keep state (a fake forge API).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// What the handler answers: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

type Handler = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

struct Shared {
    log: Mutex<Vec<Recorded>>,
    handler: Handler,
}

/// A loopback port that is bound but not listening: connections to it are
/// refused, as by a receiver that is down, and no other process can take it
/// before [`Receiver::start_held`] brings a receiver up on it.
pub struct HeldPort(tokio::net::TcpSocket);

impl HeldPort {
    pub fn new() -> HeldPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind a loopback port");
        HeldPort(socket)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }
}

/// A running receiver. Dropping it stops it.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// On a free loopback port.
    pub fn start(handler: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Receiver {
        Self::start_held(HeldPort::new(), handler)
    }

    /// On a port held until now by a receiver that was "down".
    pub fn start_held(port: HeldPort, handler: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Receiver {
        let shared = Arc::new(Shared { log: Mutex::new(Vec::new()), handler: Arc::new(handler) });
        let addr = port.addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (listening, is_listening) = std::sync::mpsc::channel::<()>();
        let app = axum::Router::new().fallback(record).with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = port.0.listen(1024).expect("listen on the receiver's port");
                let _ = listening.send(());
                // No graceful shutdown: the server under test keeps idle connections open for a minute or more.
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        is_listening.recv().expect("the receiver started listening");
        Receiver { addr, shared, stop: Some(stop), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until `f` holds for the requests so far (at most `limit`) and returns them.
    pub fn wait(&self, what: &str, limit: Duration, f: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        super::wait_for(what, limit, || {
            let r = self.requests();
            f(&r).then_some(r)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn record(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let (status, extra, body) = (s.handler)(&rec);
    s.log.lock().unwrap().push(rec);
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}
