//! The only way out of a build's network namespace: an HTTP proxy (CONNECT
//! for TLS, absolute-form requests for plain HTTP) on a Unix socket that is
//! bound into the sandbox. It resolves each destination itself and refuses
//! loopback, link-local, private, shared, multicast and reserved addresses
//! and the host's own, so a build (a fork's pull request chooses its
//! commands) cannot reach chanto's API, admin listener or edge, the cloud
//! metadata service or the local network, unless the operator allowed that
//! destination (`--build-egress-allow HOST:PORT`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// Largest request head the proxy reads.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long a client may take to send its request head, and the proxy to
/// resolve and connect.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one build may have open through the proxy at once.
const MAX_CONNECTIONS: usize = 256;

/// A destination the operator lets builds reach although its address would
/// be refused (a registry mirror on the local network, a test stand-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDestination {
    /// Host name or address, lower case, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::str::FromStr for AllowedDestination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not HOST:PORT (e.g. registry.internal:443, 10.0.0.5:8080 or [fd00::5]:80)");
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') || port == 0 {
            return Err(bad());
        }
        Ok(Self { host, port })
    }
}

impl std::fmt::Display for AllowedDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port` → (lower-case host without brackets, port).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    if host.contains(':') && !s.starts_with('[') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

/// What builds may reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Destinations allowed whatever their address.
    pub allow: Vec<AllowedDestination>,
    /// The host's own addresses (besides loopback), refused too.
    pub own: Vec<IpAddr>,
}

impl EgressPolicy {
    /// A policy with these allowed destinations and the addresses this host
    /// has now (read from `/proc/net`).
    pub fn new(allow: Vec<AllowedDestination>) -> Self {
        Self { allow, own: host_addresses() }
    }

    fn allowed(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|a| a.port == port && a.host == host)
    }

    /// Why builds may not connect to `ip`, if they may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = chanto_core::access::canonical(ip);
        forbidden(ip).or_else(|| {
            self.own.iter().any(|o| chanto_core::access::canonical(*o) == ip).then_some("an address of this host")
        })
    }
}

/// Address ranges a build never reaches by default, with why.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    const RANGES: &[(&str, &str)] = &[
        ("0.0.0.0/8", "an unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (the cloud metadata service lives here)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "a reserved address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a reserved address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved or broadcast address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("ff00::/8", "a multicast address"),
    ];
    for (net, why) in RANGES {
        if net.parse::<IpNet>().expect("valid range").contains(&ip) {
            return Some(why);
        }
    }
    // IPv4 addresses embedded in IPv6 (NAT64, 6to4) are judged as IPv4.
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        let embedded = if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            Some(std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
        } else if s[0] == 0x2002 {
            Some(std::net::Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
        } else {
            None
        };
        if let Some(v4) = embedded {
            return forbidden(IpAddr::V4(v4));
        }
    }
    None
}

/// The addresses of this host's interfaces: IPv4 from the kernel's local
/// routing table, IPv6 from `if_inet6`. Read once at start.
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let t = line.trim_start().trim_start_matches("|-- ").trim_start_matches("+-- ");
            if let Ok(ip) = t.split_whitespace().next().unwrap_or_default().parse::<IpAddr>() {
                last = Some(ip);
            } else if line.contains("/32 host LOCAL")
                && let Some(ip) = last
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let hex = line.split_whitespace().next().unwrap_or_default();
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::V6(bits.into()));
            }
        }
    }
    out
}

/// A build's proxy: listening until dropped; dropping it closes every
/// connection it holds open.
pub(super) struct Egress {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Egress {
    /// Listens at `path` for one build (owned by `owner`, mode 0600, so only
    /// that build's user can connect).
    pub(super) fn start(
        path: &Path,
        policy: Arc<EgressPolicy>,
        owner: Option<(u32, u32)>,
        build: String,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            rustix::fs::chown(path, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(std::io::Error::from)?;
        }
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                while conns.try_join_next().is_some() {}
                if conns.len() >= MAX_CONNECTIONS {
                    tracing::warn!(build = %build, "a build holds too many proxy connections; refusing more");
                    continue;
                }
                let (policy, build) = (policy.clone(), build.clone());
                conns.spawn(async move {
                    if let Err(e) = serve(stream, &policy).await {
                        tracing::debug!(build = %build, error = %e, "a build's proxy connection ended");
                    }
                });
            }
        });
        Ok(Self { path: path.to_owned(), task })
    }
}

/// Serves one connection: one request (CONNECT or absolute-form HTTP).
async fn serve(mut client: UnixStream, policy: &EgressPolicy) -> std::io::Result<()> {
    let (head, rest) = match tokio::time::timeout(SETUP_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return answer(&mut client, 431, "the request head is too large").await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let connect = method.eq_ignore_ascii_case("CONNECT");
    // Where to, and (for plain HTTP) the path to ask for there.
    let (authority, path) = if connect {
        (target.to_owned(), String::new())
    } else if let Some(rest) = target.strip_prefix("http://") {
        let (auth, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        let auth =
            if auth.contains(']') || auth.matches(':').count() == 1 { auth.to_owned() } else { format!("{auth}:80") };
        (auth, path)
    } else {
        return answer(
            &mut client,
            400,
            "chanto's build proxy takes CONNECT host:port (https) or absolute http:// URLs",
        )
        .await;
    };
    let Some((host, port)) = split_host_port(&authority) else {
        return answer(&mut client, 400, &format!("{authority:?} is not host:port")).await;
    };
    let addrs = match tokio::time::timeout(SETUP_TIMEOUT, destinations(policy, &host, port)).await {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => {
            tracing::info!(destination = %authority, reason = %why, "a build's connection was refused");
            return answer(&mut client, 403, &format!("chanto refused the connection to {authority}: {why}")).await;
        }
        Err(_) => return answer(&mut client, 504, &format!("resolving {host} took too long")).await,
    };
    let upstream = match tokio::time::timeout(SETUP_TIMEOUT, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return answer(&mut client, 502, &format!("connecting to {authority}: {e}")).await,
        Err(_) => return answer(&mut client, 504, &format!("connecting to {authority} took too long")).await,
    };
    let mut upstream = upstream;
    if connect {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    } else {
        // The request as the origin expects it: origin-form target, no
        // proxy headers, one request per connection.
        let mut out = format!("{method} {path} {version}\r\n");
        for line in lines.filter(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !matches!(name.as_str(), "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive") {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).await?;
    }
    upstream.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The addresses to connect to for `host:port`, or why not.
async fn destinations(policy: &EgressPolicy, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let allowed = policy.allowed(host, port);
    let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            tokio::net::lookup_host((host, port)).await.map_err(|e| format!("{host} does not resolve: {e}"))?.collect()
        }
    };
    if allowed {
        return Ok(resolved);
    }
    let mut why = None;
    let ok: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| match policy.refusal(a.ip()) {
            Some(w) => {
                why.get_or_insert_with(|| format!("{} is {w}", a.ip()));
                false
            }
            None => true,
        })
        .collect();
    if ok.is_empty() {
        let why = why.unwrap_or_else(|| format!("{host} has no address"));
        return Err(format!(
            "{why}; builds reach only public addresses (an operator can allow this destination with `chanto serve --build-egress-allow {}`)",
            AllowedDestination { host: host.to_owned(), port }
        ));
    }
    Ok(ok)
}

/// Reads up to the end of the request head; returns it and whatever came after.
async fn read_head(s: &mut UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
}

async fn answer(s: &mut UnixStream, status: u16, text: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("{text}\n");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_refused() {
        let p = EgressPolicy { allow: vec![], own: vec!["203.0.113.9".parse().unwrap()] };
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "203.0.113.9",
        ] {
            assert!(p.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "1.1.1.1"] {
            assert_eq!(p.refusal(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn allowed_destinations_parse() {
        let a: AllowedDestination = "Registry.Internal:443".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("registry.internal", 443));
        let a: AllowedDestination = "[fd00::5]:80".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.to_string().as_str()), ("fd00::5", 80, "[fd00::5]:80"));
        for bad in ["nohost", ":80", "host:0", "host:x", "fd00::5:80", "a b:80", "host:70000"] {
            assert!(bad.parse::<AllowedDestination>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_proxy_refuses_loopback_unless_allowed_and_relays_when_allowed() {
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = origin.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = origin.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap();
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let first = req.lines().next().unwrap_or_default().to_owned();
                    let body = format!("origin saw: {first}");
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                        )
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ask = |policy: EgressPolicy, req: String| {
            let sock = dir.path().join(format!("{}.sock", policy.allow.len()));
            async move {
                let _proxy = Egress::start(&sock, Arc::new(policy), None, "t".into()).unwrap();
                let mut c = UnixStream::connect(&sock).await.unwrap();
                c.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let get = format!(
            "GET http://127.0.0.1:{port}/x?y HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Connection: keep-alive\r\n\r\n"
        );
        let refused = ask(EgressPolicy::default(), get.clone()).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(
            refused.contains("127.0.0.1 is a loopback address") && refused.contains("--build-egress-allow"),
            "{refused}"
        );
        let allowed = EgressPolicy { allow: vec![format!("127.0.0.1:{port}").parse().unwrap()], own: vec![] };
        let ok = ask(allowed.clone(), get).await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("origin saw: GET /x?y HTTP/1.1"), "{ok}");
        let tunnel = ask(allowed, format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\nGET /t HTTP/1.1\r\n\r\n")).await;
        assert!(
            tunnel.starts_with("HTTP/1.1 200 Connection established")
                && tunnel.ends_with("origin saw: GET /t HTTP/1.1"),
            "{tunnel}"
        );
        let metadata = ask(EgressPolicy::default(), "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".into()).await;
        assert!(metadata.starts_with("HTTP/1.1 403") && metadata.contains("link-local"), "{metadata}");
    }
}
