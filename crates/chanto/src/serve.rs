//! `chanto serve`: the control plane's API and the edge in one process, on
//! embedded defaults (SQLite + a local blob directory under one data dir).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chanto_control::{Control, ControlConfig};
use chanto_edge::Edge;
use chanto_store::{
    BlobStore, CachedBlobStore, LocalBlobStore, MetaStore, PostgresMeta, RoutingSink, S3BlobStore, SqliteMeta,
};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;

/// A server that is up: where it listens, and how to stop it.
pub struct Running {
    /// The edge's bound address (none in `--role control`).
    pub edge_addr: Option<SocketAddr>,
    /// The edge's HTTPS address (`--https`).
    pub https_addr: Option<SocketAddr>,
    /// The API's bound address.
    pub api_addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    edge: Option<Arc<Edge>>,
    /// The admin token, if this start created it.
    pub new_token: Option<String>,
    /// The control plane (for in-process callers such as `demo`).
    pub control: Arc<Control>,
    /// The data directory.
    pub data: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// How long a drain keeps serving before the listeners close (`--drain-grace`).
    drain_grace: Duration,
    _lock: std::fs::File,
}

impl Running {
    /// The API's URL.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Waits for Ctrl-C, SIGTERM or `POST /drain` on the admin listener,
    /// then drains: `/readyz` answers 503 at once, the node keeps serving
    /// for `--drain-grace` (so load balancers see it and move traffic away;
    /// a second signal cuts it short), then stops accepting, closes idle
    /// keep-alive connections, finishes in-flight requests (up to 30 s) and
    /// returns.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        match &self.edge {
            Some(edge) => drain(edge, self.drain_grace).await,
            // No edge to drain (`--role control`): stop on the signal.
            None => shutdown_signal().await,
        }
        finish(self.stop, self.tasks, &self.data).await;
        Ok(())
    }
}

/// Waits for SIGTERM, Ctrl-C or `POST /drain`, then drains: `/readyz`
/// answers 503 at once and the edge serves on for `grace` (cut short by a
/// second signal) so load balancers move traffic away.
pub(crate) async fn drain(edge: &Edge, grace: Duration) {
    tokio::select! {
        () = shutdown_signal() => {}
        () = edge.drain_requested() => {}
    }
    edge.start_draining();
    if !grace.is_zero() {
        tracing::info!(
            grace = %humantime::format_duration(grace),
            "draining: /readyz answers 503; serving on for the grace period so load balancers move traffic away (signal again to stop now)"
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = shutdown_signal() => tracing::warn!("stopping now: the grace period was cut short"),
        }
    }
}

/// Stops the listeners (idle connections closed, in-flight requests
/// finished, up to 30 s) and the background tasks.
pub(crate) async fn finish(
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    data: &Path,
) {
    tracing::info!("shutting down: closing idle connections, finishing in-flight requests");
    let _ = stop.send(true);
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(30), all).await.is_err() {
        tracing::warn!("in-flight requests did not finish within 30 s; stopping anyway");
    }
    let _ = std::fs::remove_file(data.join("addresses.json"));
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Writes `bytes` to `path` atomically (temp file + rename) with `mode`.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Validates the base domain: DNS labels of letters, digits and hyphens.
fn validate_base_domain(d: &str) -> anyhow::Result<String> {
    validate_domain("--base-domain", d)
}

/// Validates a domain flag: DNS labels of letters, digits and hyphens.
fn validate_domain(flag: &str, d: &str) -> anyhow::Result<String> {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        bail!("{flag} {d:?} is not a domain name; use e.g. `localhost` or `sites.example.com`");
    }
    Ok(d)
}

/// The preview domain, checked against the base domain: neither may be
/// the other or under it, or previews would share cookies with production.
fn validate_preview_domain(base: &str, preview: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(p) = preview else { return Ok(None) };
    let p = validate_domain("--preview-domain", p)?;
    if p == base || p.ends_with(&format!(".{base}")) || base.ends_with(&format!(".{p}")) {
        bail!(
            "--preview-domain {p} must not be --base-domain {base} or a domain above or under it: previews would share cookies with production; use a registrable domain of its own, e.g. example-previews.net"
        );
    }
    Ok(Some(p))
}

/// Why sites under `domain` may be able to set cookies for each other, if
/// chanto does not know it to be on the Public Suffix List.
fn public_suffix_warning(flag: &str, domain: &str) -> Option<String> {
    (!chanto_core::is_known_public_suffix(domain)).then(|| {
        format!(
            "{flag} {domain} is not known to be on the Public Suffix List: browsers treat every site under it as one site, so a page of one (a fork's preview, say) can set cookies for all the others. Add it at https://publicsuffix.org (then pass --public-suffix-listed), or give previews their own registrable domain with --preview-domain. chanto's built-in list knows only: {}",
            chanto_core::host::KNOWN_PUBLIC_SUFFIXES.join(", ")
        )
    })
}

/// Opens the metadata store `--meta` names: SQLite in the data directory, or
/// PostgreSQL (migrated before anything starts). Errors name the URL with its
/// password redacted, and the cause.
async fn open_meta(args: &ServeArgs, data: &Path) -> anyhow::Result<Arc<dyn MetaStore>> {
    let meta = args.meta.trim();
    if meta == "sqlite" {
        if args.meta_password_file.is_some() {
            bail!(
                "--meta-password-file is for a PostgreSQL --meta URL; the default metadata store (sqlite) has no password"
            );
        }
        return Ok(Arc::new(SqliteMeta::open(&data.join("meta.db"))?));
    }
    Ok(Arc::new(postgres_meta("--meta", meta, args.meta_password_file.as_deref(), true).await?))
}

/// Connects to the PostgreSQL database `meta` (the value of `flag`), with the
/// password from `password_file` if given (else the URL's, $PGPASSWORD or
/// the password file); `migrate: false` changes nothing and refuses a
/// database whose schema is not this chanto's (`backup verify`). Shared by
/// `serve`, `backup` and `migrate`; errors name the URL with its password
/// redacted.
pub(crate) async fn postgres_meta(
    flag: &str,
    meta: &str,
    password_file: Option<&Path>,
    migrate: bool,
) -> anyhow::Result<PostgresMeta> {
    let redacted = chanto_store::postgres::redact_url(meta);
    if !(meta.starts_with("postgres://") || meta.starts_with("postgresql://")) {
        bail!(
            "{flag} {redacted:?} is neither `sqlite` nor a PostgreSQL URL; use e.g. postgres://chanto@db.internal:5432/chanto"
        );
    }
    let password = match password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --meta-password-file {}", path.display()))?;
            let first = text.lines().next().unwrap_or("").to_owned();
            if first.is_empty() {
                bail!("--meta-password-file {} is empty; put the password on its first line", path.display());
            }
            Some(first)
        }
        None => None,
    };
    let store = if migrate {
        PostgresMeta::connect(meta, password).await
    } else {
        PostgresMeta::connect_existing(meta, password).await
    };
    let store = store.map_err(|e| anyhow::anyhow!("opening the metadata store {redacted}: {e}"))?;
    tracing::info!(url = %store.url(), sslmode = store.tls_settings().mode.name(), "metadata on PostgreSQL");
    Ok(store)
}

/// Opens the data directory, binds both listeners and starts serving. A
/// first start that fails (a port in use, say) leaves no data directory
/// behind, so the next try starts fresh.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    let fresh = !args.data.exists();
    let started = start_in(args).await;
    if started.is_err() && fresh {
        let _ = std::fs::remove_dir_all(&args.data);
    }
    started
}

/// Binds `addr` for the listener that `flag` sets, naming the flag when the
/// address is taken or not this machine's.
pub(crate) async fn bind(flag: &str, what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{what} cannot listen on {addr}: something else is using that port; stop it, or pass another address with {flag} (e.g. {flag} 127.0.0.1:0 picks a free port)"
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "{what} cannot listen on {addr}: that address is not this machine's; pass one of its addresses with {flag}"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{what} cannot listen on {addr}: ports below 1024 need privileges; pass a higher port with {flag}"
        ),
        _ => anyhow::anyhow!("{what} cannot listen on {addr} ({flag}): {e}"),
    })
}

/// Checks the flags the edge runs on (domains, proxy origins, the country
/// header), warning where they are risky; gives the base and preview domains.
pub(crate) fn check_edge_args(args: &ServeArgs) -> anyhow::Result<(String, Option<String>)> {
    let base_domain = validate_base_domain(&args.base_domain)?;
    let preview_domain = validate_preview_domain(&base_domain, args.preview_domain.as_deref())?;
    if !args.public_suffix_listed {
        let domains = [("--base-domain", Some(&base_domain)), ("--preview-domain", preview_domain.as_ref())];
        for (flag, domain) in domains {
            if let Some(warning) = domain.and_then(|d| public_suffix_warning(flag, d)) {
                tracing::warn!("{warning}");
            }
        }
    }
    // Checked before anything starts, so a typo stops the server with the flag named.
    chanto_edge::proxy::Proxy::new(&args.proxy_origin).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(h) = &args.country_header
        && args.trusted_proxy.is_empty()
    {
        tracing::warn!(
            header = %h,
            "--country-header is believed only from a --trusted-proxy, and none is given: country rules will never match; pass the load balancer's address with --trusted-proxy CIDR"
        );
    }
    Ok((base_domain, preview_domain))
}

/// The edge's settings from the flags.
pub(crate) fn edge_config(
    args: &ServeArgs,
    base_domain: String,
    preview_domain: Option<String>,
) -> anyhow::Result<chanto_edge::EdgeConfig> {
    let mut edge_config = chanto_edge::EdgeConfig::new(base_domain);
    edge_config.country_header = args.country_header.clone();
    edge_config.trusted_proxies = args.trusted_proxy.clone();
    edge_config.proxy_origins = args.proxy_origin.clone();
    edge_config.preview_domain = preview_domain;
    edge_config.zerocopy_min = args.sendfile_min;
    edge_config.max_connections = args.max_connections as usize;
    edge_config.sorry_page = match &args.sorry_page {
        Some(path) => Some(read_sorry_page(path)?),
        None => None,
    };
    if let Some(url) = &args.auth_request {
        let on_error = args.auth_request_on_error.map(crate::cli::FilterOnError::edge).ok_or_else(|| {
            anyhow::anyhow!(
                "--auth-request needs --auth-request-on-error open|closed: say what a failing auth service does"
            )
        })?;
        let filter = chanto_edge::filter::AuthRequest::new(url, args.auth_request_timeout, on_error)
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(url = %url, on_error = on_error.as_str(), "every site request is checked by --auth-request");
        edge_config.filters.push(Arc::new(filter));
    }
    Ok(edge_config)
}

async fn start_in(args: &ServeArgs) -> anyhow::Result<Running> {
    if args.role == crate::cli::Role::Edge {
        bail!("--role edge runs through `chanto serve`, not in-process here");
    }
    let (base_domain, preview_domain) = check_edge_args(args)?;
    let data = args.data.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("creating the data directory {}", data.display()))?;
    let Some(lock) = lock_data_dir(&data)? else {
        bail!("another chanto is already serving {}; stop it or pass another --data", data.display());
    };
    let _ = std::fs::remove_file(data.join("addresses.json"));

    let meta = open_meta(args, &data).await?;
    let blobs = open_blobs(args, &data).await?;

    // `--role control` runs no edge: remote edges pull routing from the API.
    let with_edge = args.role == crate::cli::Role::All;
    let edge_listener = match with_edge {
        true => Some(bind("--edge", "the edge (sites)", args.edge).await?),
        false => None,
    };
    let https_listener = match (args.https, with_edge) {
        (Some(addr), true) => Some(bind("--https", "the edge over HTTPS", addr).await?),
        (Some(_), false) => bail!("--role control runs no edge: drop --https (edges take it)"),
        (None, _) => None,
    };
    let api_listener = bind("--api", "the API", args.api).await?;
    let admin_listener = bind("--admin", "the admin listener", args.admin).await?;
    let edge_addr = edge_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let https_addr = https_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let api_addr = api_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    // URLs the API prints name the edges' port: this process's edge, or the
    // port remote edges are assumed to listen on (--edge) behind their load balancer.
    let mut config = ControlConfig::new(base_domain.clone(), edge_addr.map_or(args.edge.port(), |a| a.port()));
    config.preview_domain = preview_domain.clone();
    config.upload_ttl = args.upload_ttl;
    config.gc_grace = args.gc_grace;
    config.rollback_depth = args.rollback_depth;
    if args.gc_grace < args.upload_ttl {
        tracing::warn!(gc_grace = ?args.gc_grace, upload_ttl = ?args.upload_ttl, "--gc-grace is shorter than --upload-ttl: with several chanto processes on one store, a blob made for a deploy another process has not finalized yet may be deleted under it");
    }
    // Heartbeats are stamped and judged with each node's own clock, so the
    // timeout must stay well above the clock skew between nodes (and a
    // loaded host's scheduling delays): 5 s is the floor.
    if args.build_heartbeat_timeout < Duration::from_secs(5) {
        bail!(
            "--build-heartbeat-timeout {} is too short: heartbeats go every quarter of it and are judged with each node's own clock, so it must exceed the clock skew between nodes by far; give at least 5s (default 60s)",
            humantime::format_duration(args.build_heartbeat_timeout)
        );
    }
    config.build_heartbeat_timeout = args.build_heartbeat_timeout;
    if args.node_timeout < Duration::from_secs(1) {
        bail!(
            "--node-timeout {} is too short: edges send a heartbeat every 5 s and it is judged with this node's clock; give at least 1s (default 15s)",
            humantime::format_duration(args.node_timeout)
        );
    }
    if args.node_timeout < Duration::from_secs(10) {
        tracing::warn!(node_timeout = ?args.node_timeout, "--node-timeout is under two heartbeats (edges send one every 5 s, and at once after each routing change): an edge whose heartbeat is late drops out of activations' count until its next one");
    }
    config.edge_wait = args.edge_wait;
    config.node_timeout = args.node_timeout;
    let node_id = node_name(&data)?;
    config.owner = chanto_store::Owner::new_run(node_id.clone());
    let owner = config.owner.clone();
    tracing::info!(node = %config.owner.node, host = %host_name(), run = %config.owner.run, "this server's name in build claims and notification leases (DATA/node-id)");
    config.max_file_size = args.max_file_size;
    config.brotli_quality = args.brotli_quality;
    config.gzip_level = args.gzip_level;

    let (edge, sinks) = if let Some(edge_addr) = edge_addr {
        let edge = Edge::new(edge_config(args, base_domain.clone(), preview_domain.clone())?, blobs.clone());
        if let Some(path) = &args.access_log {
            let (log, _writer) = chanto_edge::access_log::AccessLog::spawn(path.clone())
                .with_context(|| format!("opening the access log {}", path.display()))?;
            edge.set_access_log(log);
        }
        // The in-process edge is a node like any other: activations wait for it too.
        let node = chanto_control::nodes::LocalNode {
            node_id: node_id.clone(),
            name: host_name(),
            zone: args.zone.clone(),
            edge_addr: Some(edge_addr.to_string()),
        };
        let status = {
            let edge = edge.clone();
            // Not ready with a snapshot loaded: draining (chanto_edge::Edge::is_ready).
            move || {
                let ready = edge.is_ready();
                (ready, !ready && edge.snapshot().version > 0)
            }
        };
        let local = chanto_control::nodes::InProcessEdge::new(edge.clone(), meta.clone(), node, status);
        local.count_with({
            let edge = edge.clone();
            move || edge.metrics.counts()
        });
        (Some(edge), vec![local])
    } else {
        (None, Vec::new())
    };
    let control = Control::new(
        meta.clone(),
        blobs.clone(),
        config,
        sinks.iter().map(|s| s.clone() as Arc<dyn RoutingSink>).collect(),
    );
    control.publish_routing(chanto_store::RoutingChange::All).await.context("loading the routing table")?;
    // On PostgreSQL: deploys made through other processes reach this edge too.
    control.follow_shared_routing();
    // Deploys that went live before their variants were made, and a stop came first.
    if let Err(e) = control.resume_variants().await {
        tracing::warn!(error = %e, "could not resume precompression of live deploys; they are served uncompressed");
    }
    let api_url = match &args.public_api_url {
        Some(u) => validate_public_url(u)?,
        None => format!("http://{api_addr}"),
    };
    control.set_public_url(api_url.clone());
    if let Some(oidc) = oidc_config(args, &api_url)? {
        tracing::info!(issuer = %oidc.issuer, redirect = %format!("{api_url}/login/oidc/callback"), "console single sign-on");
        control.enable_oidc(chanto_control::oidc::Oidc::new(oidc).map_err(anyhow::Error::msg)?);
    }
    let sealer = load_sealer(&control, &data).await?;
    if args.build_concurrency > 0 {
        enable_builds(&control, args, &data, &api_url, sealer.clone()).await?;
    }
    if !args.no_notifications {
        let mut config = chanto_control::notify::NotifyConfig::new(api_url.clone());
        config.retry.max_attempts = args.notify_attempts;
        config.retry.base_ms = args.notify_backoff.as_millis().max(1) as u64;
        config.timeout = args.notify_timeout;
        control.enable_notifications(chanto_control::notify::Notifier::new(config, sealer.clone()));
    }
    let roots = certificate_roots(args.certificate_roots.as_deref())?;
    control.enable_domains(chanto_control::domains::DomainService::new(sealer, roots, args.domain_check_addr));
    if let Some(acme) = acme_config(args)? {
        tracing::info!(directory = %acme.directory_url, "ordering certificates for verified custom domains");
        control.enable_acme(chanto_control::acme_orders::AcmeOrders::new(acme, &owner));
    }
    let tls = match (&https_listener, &edge, control.domain_keys()) {
        (Some(_), Some(edge), Some(keys)) => {
            let certs = crate::https::stored_certs(meta.clone(), keys);
            let config = chanto_edge::tls::server_config(certs.store().clone());
            edge.set_certs(certs).await;
            if control.acme_enabled() {
                // Base hosts asked for over HTTPS without a certificate:
                // the control plane orders one for each that routes.
                let (edge, control) = (edge.clone(), control.clone());
                tokio::spawn(async move {
                    loop {
                        edge.wanted_certs_changed().await;
                        for host in edge.take_wanted_certs() {
                            control.want_base_certificate(&host).await;
                        }
                    }
                });
            }
            Some(config)
        }
        _ => None,
    };

    let new_token = control.ensure_admin_token().await?;
    let token_path = data.join("admin.token");
    if let Some(token) = &new_token {
        write_file_atomic(&token_path, format!("{token}\n").as_bytes(), 0o600)?;
    }

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api_stop = stopped(stop_rx.clone());
    let api_router = chanto_control::router(control.clone());
    let mut tasks = Vec::new();
    if let (Some(edge_listener), Some(edge)) = (edge_listener, &edge) {
        tasks.push(tokio::spawn(chanto_edge::server::serve(
            edge_listener,
            chanto_edge::router(edge.clone()),
            chanto_edge::server::ServerLimits::default(),
            stopped(stop_rx.clone()),
        )));
    }
    if let (Some(listener), Some(edge), Some(config)) = (https_listener, &edge, tls) {
        tasks.push(tokio::spawn(chanto_edge::server::serve_tls(
            listener,
            chanto_edge::router(edge.clone()),
            config,
            chanto_edge::server::ServerLimits::default(),
            stopped(stop_rx.clone()),
        )));
    }
    for local in sinks {
        tasks.push(tokio::spawn(local.run_heartbeats(stop_rx.clone())));
    }
    // Stopping ends the edges' routing long-polls (and activation waits) at once.
    tokio::spawn({
        let (control, stop) = (control.clone(), stopped(stop_rx.clone()));
        async move {
            stop.await;
            control.nodes.close();
        }
    });
    tasks.extend([
        // The API gets the edge's connection bounds (header-read and idle
        // timeouts, header limits): axum::serve has none.
        tokio::spawn(chanto_edge::server::serve_router(
            api_listener,
            api_router,
            chanto_edge::server::ServerLimits::default(),
            api_stop,
        )),
    ]);
    // The admin listener stays up until the process exits, so /readyz can say
    // "draining" while the edge finishes its requests.
    let admin_router = match &edge {
        Some(edge) => chanto_edge::admin_router_with(edge.clone(), Some(meta)),
        None => control_admin_router(meta, blobs),
    };
    tokio::spawn(chanto_edge::server::serve_router(
        admin_listener,
        admin_router,
        chanto_edge::server::ServerLimits::default(),
        std::future::pending(),
    ));
    if !args.no_notifications {
        tasks.push(tokio::spawn(chanto_control::notify::run(control.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(control.clone().run_certificate_warnings(stop_rx.clone())));
    }
    if control.acme_enabled() {
        tasks.push(tokio::spawn(control.clone().run_acme(stop_rx.clone())));
    }
    if args.build_concurrency > 0 {
        tasks.push(tokio::spawn(control.clone().run_builders(stop_rx.clone())));
        tasks.push(tokio::spawn(control.clone().run_poller(stop_rx.clone())));
    }
    let janitor = control.clone();
    let mut janitor_stop = stop_rx;
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            _ = janitor.run_janitor(Duration::from_secs(60), 60) => {}
            _ = janitor_stop.wait_for(|s| *s) => {}
        }
    }));

    let addresses = serde_json::json!({
        "edge": edge_addr.map(|a| a.to_string()),
        "https": https_addr.map(|a| a.to_string()),
        "api": api_addr.to_string(),
        "api_url": format!("http://{api_addr}"),
        "admin": admin_addr.to_string(),
        "pid": std::process::id(),
    });
    write_file_atomic(&data.join("addresses.json"), serde_json::to_string_pretty(&addresses)?.as_bytes(), 0o644)?;
    tracing::info!(role = %args.role.wire(), edge = ?edge_addr, https = ?https_addr, api = %api_addr, admin = %admin_addr, data = %data.display(), "chanto is serving");
    Ok(Running {
        edge_addr,
        https_addr,
        api_addr,
        admin_addr,
        edge,
        new_token,
        control,
        data,
        stop,
        tasks,
        drain_grace: args.drain_grace,
        _lock: lock,
    })
}

/// The node's sorry page (`--sorry-page`): a file of at most 1 MiB.
fn read_sorry_page(path: &Path) -> anyhow::Result<bytes::Bytes> {
    let bytes = std::fs::read(path).with_context(|| format!("reading --sorry-page {}", path.display()))?;
    if bytes.is_empty() || bytes.len() > 1 << 20 {
        bail!(
            "--sorry-page {} is {} bytes; give an HTML file of 1 byte to 1 MiB (it is kept in memory)",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes::Bytes::from(bytes))
}

/// The admin listener of a node without an edge (`--role control`):
/// `/healthz`, `/readyz` (200 with the metadata and blob stores' state: a
/// control is ready as long as it runs) and `/metrics`.
fn control_admin_router(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>) -> axum::Router {
    use axum::http::header;
    use axum::routing::get;
    type Admin = (Arc<dyn MetaStore>, Arc<dyn BlobStore>);
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|axum::extract::State((meta, blobs)): axum::extract::State<Admin>| async move {
                let (m, b) = futures_util::join!(meta.health(), blobs.health());
                let checks: Vec<_> = std::iter::once(m).chain(b).collect();
                let up = checks.iter().all(|c| c.state == chanto_store::health::State::Up);
                let mut body = format!("{}\n", if up { "ready" } else { "degraded" });
                for c in &checks {
                    body.push_str(&format!("{}: {} ({}): {}\n", c.name, c.state.as_str(), c.backend, c.detail));
                }
                ([(header::CACHE_CONTROL, "no-store")], body)
            }),
        )
        .route(
            "/metrics",
            get(|axum::extract::State((meta, blobs)): axum::extract::State<Admin>| async move {
                let mut body = String::new();
                blobs.render_metrics(&mut body);
                meta.render_metrics(&mut body);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
            }),
        )
        .with_state((meta, blobs))
}

/// The single sign-on provider, if `--oidc-issuer` names one; the provider
/// sends browsers back to `api_url`, so it must be one they can reach.
fn oidc_config(args: &ServeArgs, api_url: &str) -> anyhow::Result<Option<chanto_control::oidc::OidcConfig>> {
    let (Some(issuer), Some(client_id)) = (&args.oidc_issuer, &args.oidc_client_id) else { return Ok(None) };
    if api_url.contains("://0.0.0.0") || api_url.contains("://[::]") {
        bail!(
            "--oidc-issuer needs --public-api-url when the API listens on every address ({api_url}): the provider sends browsers back to <public URL>/login/oidc/callback"
        );
    }
    let client_secret = match &args.oidc_client_secret_file {
        Some(path) => {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("--oidc-client-secret-file {}: cannot read it", path.display()))?;
            let s = s.trim().to_owned();
            if s.is_empty() || s.chars().any(char::is_control) {
                bail!(
                    "--oidc-client-secret-file {}: put the client secret exactly as the provider shows it, alone in the file",
                    path.display()
                );
            }
            Some(s)
        }
        None => None,
    };
    let config = chanto_control::oidc::OidcConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret,
        label: args.oidc_name.clone(),
        username_claim: args.oidc_username_claim.clone(),
        groups_claim: args.oidc_groups_claim.clone(),
        group_roles: args.oidc_group_role.clone(),
        default_role: args.oidc_default_role,
        extra_scopes: args.oidc_scope.clone(),
    };
    config.check().map_err(anyhow::Error::msg)?;
    Ok(Some(config))
}

/// Let's Encrypt's production directory: the CA `--https` orders from by default.
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ACME CA to order from, if any: `--acme-directory`, or Let's Encrypt
/// when the edge serves HTTPS; none with `--no-acme`.
fn acme_config(args: &ServeArgs) -> anyhow::Result<Option<chanto_control::acme::AcmeConfig>> {
    if args.no_acme {
        return Ok(None);
    }
    let directory = match (&args.acme_directory, args.https) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) => LETS_ENCRYPT.to_owned(),
        (None, None) => return Ok(None),
    };
    match reqwest::Url::parse(&directory) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
        _ => {
            bail!("--acme-directory {directory:?} is not an https:// URL; give the CA's directory, e.g. {LETS_ENCRYPT}")
        }
    }
    if let Some(email) = &args.acme_email
        && (email.len() > 254 || !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        bail!("--acme-email {email:?} is not an email address; give e.g. ops@example.com");
    }
    let extra_roots_pem = match &args.acme_root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| format!("--acme-root {}", path.display()))?;
            chanto_store::tls::roots_from_file("--acme-root", path).map_err(anyhow::Error::msg)?;
            Some(pem)
        }
        None => None,
    };
    let eab = match (&args.acme_eab_kid, &args.acme_eab_key_file) {
        (Some(kid), Some(path)) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("--acme-eab-key-file {}: cannot read it", path.display()))?;
            let key = key.trim();
            let valid = !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=');
            if !valid {
                bail!(
                    "--acme-eab-key-file {}: not a base64url HMAC key; put the key exactly as the CA shows it (letters, digits, - and _) alone in the file",
                    path.display()
                );
            }
            if kid.trim().is_empty() || kid.chars().any(char::is_control) {
                bail!("--acme-eab-kid {kid:?} is not a key id; give the one the CA shows beside the HMAC key");
            }
            Some(chanto_control::acme::ExternalAccountKey {
                kid: kid.trim().to_owned(),
                hmac_key_b64url: key.to_owned(),
            })
        }
        _ => None,
    };
    let challenge = match args.acme_challenge {
        crate::cli::AcmeChallenge::Http01 => chanto_control::acme::ChallengeKind::Http01,
        crate::cli::AcmeChallenge::TlsAlpn01 => {
            if args.role == crate::cli::Role::All && args.https.is_none() {
                bail!(
                    "--acme-challenge tls-alpn-01 needs --https: the CA checks the name with a TLS handshake on port 443; add --https 0.0.0.0:443, or use --acme-challenge http-01"
                );
            }
            chanto_control::acme::ChallengeKind::TlsAlpn01
        }
        crate::cli::AcmeChallenge::Dns01 => {
            if args.acme_dns_hook.is_none() {
                bail!(
                    "--acme-challenge dns-01 needs --acme-dns-hook PATH: the program that publishes the TXT record at your DNS provider (see README, \"DNS-01\")"
                );
            }
            chanto_control::acme::ChallengeKind::Dns01
        }
    };
    let dns_hook = match &args.acme_dns_hook {
        Some(hook) if challenge == chanto_control::acme::ChallengeKind::Dns01 => {
            Some(chanto_control::acme_dns::check_hook(hook).map_err(anyhow::Error::msg)?)
        }
        Some(_) => bail!("--acme-dns-hook is used with --acme-challenge dns-01 only: add it, or drop the hook"),
        None => None,
    };
    Ok(Some(chanto_control::acme::AcmeConfig {
        directory_url: directory,
        contact_email: args.acme_email.clone(),
        eab,
        extra_roots_pem,
        challenge,
        dns_hook,
    }))
}

/// The roots uploaded certificates may chain to: the system's, and the
/// operator's `--certificate-roots` file.
fn certificate_roots(extra: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = match chanto_store::tls::system_roots("certificate uploads") {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "uploaded certificates can chain only to --certificate-roots");
            rustls::RootCertStore::empty()
        }
    };
    if let Some(path) = extra {
        let own = chanto_store::tls::roots_from_file("--certificate-roots", path).map_err(anyhow::Error::msg)?;
        roots.roots.extend(own.roots);
    }
    Ok(roots)
}

/// Turns on git-driven builds: the key that seals secrets, the runners'
/// directories, isolation, and recovery of builds a stop interrupted.
async fn load_sealer(control: &Arc<Control>, data: &Path) -> anyhow::Result<chanto_control::builds::sealed::Sealer> {
    let key = data.join("secret.key");
    let mut sealed_exist = !control.meta.list_git().await?.is_empty();
    for site in control.meta.list_sites().await? {
        sealed_exist |= !control.meta.list_subscriptions(&site.name).await?.is_empty();
    }
    sealed_exist |= !control.meta.certificates_in_use().await?.is_empty();
    chanto_control::builds::sealed::Sealer::load_or_create(&key, !sealed_exist)
        .with_context(|| format!("reading the secret key {}", key.display()))
}

async fn enable_builds(
    control: &Arc<Control>,
    args: &ServeArgs,
    data: &Path,
    api_url: &str,
    sealer: chanto_control::builds::sealed::Sealer,
) -> anyhow::Result<()> {
    use chanto_control::builds::{Builds, BuildsConfig, EgressPolicy, Isolation, Limits};
    let root = data.join("builds");
    let config = BuildsConfig {
        work_dir: root.join("work"),
        log_dir: root.join("logs"),
        cache_dir: root.join("cache"),
        hidden: vec![data.canonicalize().unwrap_or_else(|_| data.to_path_buf())],
        concurrency: args.build_concurrency as usize,
        default_timeout: args.build_timeout,
        api_url: api_url.to_owned(),
        isolation: Isolation::detect(
            args.bwrap.clone(),
            std::env::current_exe().context("finding chanto's own binary")?,
        )
        .await,
        egress: Arc::new(EgressPolicy::new(args.build_egress_allow.clone())),
        limits: Limits {
            memory: args.build_memory,
            processes: args.build_processes,
            disk: args.build_disk,
            tmp: args.build_tmp,
        },
    };
    for dir in [&config.work_dir, &config.log_dir, &config.cache_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Isolation::Sandbox(s) = &config.isolation
        && s.per_build_users
    {
        // Builds run as another user: let it pass through the data directory
        // to its work directory, but list and read nothing else there.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        for (p, m) in [(data, 0o711), (root.as_path(), 0o711), (config.work_dir.as_path(), 0o711)] {
            mode(p, m).with_context(|| format!("restricting {}", p.display()))?;
        }
        // The local blob directory or the remote store's disk cache, whichever is used.
        let blob_dirs = [data.join("blobs"), data.join("blob-cache")].into_iter().filter(|p| p.exists());
        for p in blob_dirs.chain([config.log_dir.clone(), config.cache_dir.clone()]) {
            mode(&p, 0o700).with_context(|| format!("restricting {}", p.display()))?;
        }
        for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
            let _ = mode(&data.join(f), 0o600);
        }
        // Every directory above the work directory must let the build user through.
        let work = config.work_dir.canonicalize().unwrap_or_else(|_| config.work_dir.clone());
        for dir in work.ancestors().skip(1) {
            let m = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
            if m & 0o001 == 0 {
                bail!(
                    "builds run as an unprivileged user, who cannot reach {} because {} is not searchable by others (mode {:o}); run `chmod o+x {}` or put --data elsewhere, or pass --build-concurrency 0 to run no builds",
                    config.work_dir.display(),
                    dir.display(),
                    m & 0o7777,
                    dir.display()
                );
            }
        }
    }
    match &config.isolation {
        Isolation::Unavailable(_) => {
            tracing::error!(isolation = %config.isolation.describe(), "builds will fail until the sandbox works")
        }
        Isolation::Sandbox(_) => {
            let allowed: Vec<String> = config.egress.allow.iter().map(ToString::to_string).collect();
            tracing::info!(isolation = %config.isolation.describe(), egress_allowed = ?allowed, "builds are sandboxed")
        }
    }
    control.enable_builds(Builds::new(config, sealer));
    let retried = control.recover_builds().await.map_err(|e| anyhow::anyhow!(e.message))?;
    if retried > 0 {
        tracing::warn!(builds = retried, "builds interrupted by the last stop were queued again");
    }
    Ok(())
}

fn validate_public_url(u: &str) -> anyhow::Result<String> {
    let u = u.trim_end_matches('/');
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(u.to_owned()),
        _ => bail!("--public-api-url {u:?} is not an http(s) URL; give e.g. https://chanto.example.com"),
    }
}

/// Prints the one-time admin token notice.
pub fn announce_token(running: &Running) {
    if let Some(token) = &running.new_token {
        println!(
            "Created the admin API token (shown once, saved to {}):\n  {token}\nUse it with `chanto login --server {}` or CHANTO_TOKEN.\n",
            running.data.join("admin.token").display(),
            running.api_url()
        );
    }
}

/// The blob store `--blobs` names: the local directory `DATA/blobs`, or an
/// S3-compatible bucket behind a bounded disk cache (`--blob-cache-dir`,
/// `--blob-cache-size`), so the edge serves cached blobs with `sendfile` and
/// keeps serving them while the object store is down.
async fn open_blobs(args: &ServeArgs, data: &Path) -> anyhow::Result<Arc<dyn BlobStore>> {
    match args.blobs.as_str() {
        "file" => Ok(Arc::new(LocalBlobStore::open(data.join("blobs"))?)),
        url if url.starts_with("s3://") => {
            let s3 = s3_store(url, args.s3_endpoint.clone(), install_id(data)?, args.blobs_claim, false).await?;
            let cache_dir = args.blob_cache_dir.clone().unwrap_or_else(|| data.join("blob-cache"));
            let cached = CachedBlobStore::open(s3, &cache_dir, args.blob_cache_size)
                .with_context(|| format!("opening the blob cache {}", cache_dir.display()))?;
            tracing::info!(store = %cached.inner().describe(), cache = %cache_dir.display(), cache_bytes = args.blob_cache_size, "blobs in an object store");
            Ok(Arc::new(cached))
        }
        other => bail!("--blobs {other:?}: expected `file` (the data directory) or s3://BUCKET/PREFIX"),
    }
}

/// Connects to the `--blobs s3://…` store (`--s3-endpoint`); `read_only`
/// leaves its marker object alone (`backup verify` claims nothing).
pub(crate) async fn s3_store(
    url: &str,
    endpoint: Option<String>,
    install_id: String,
    claim: bool,
    read_only: bool,
) -> anyhow::Result<S3BlobStore> {
    let mut options = chanto_store::S3Options::new(url, install_id);
    options.endpoint = endpoint;
    options.claim = claim;
    let s3 =
        if read_only { S3BlobStore::connect_read_only(options).await } else { S3BlobStore::connect(options).await };
    s3.with_context(|| format!("opening the blob store {url}"))
}

/// Takes the data directory's lock (`DATA/lock`, held for as long as the
/// returned file is open); `None` when another process holds it. `serve`
/// holds it while it runs, `migrate` while it copies.
pub(crate) fn lock_data_dir(data: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = data.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(lock.try_lock().is_ok().then_some(lock))
}

/// This install's id (`DATA/install-id`, made on first use): the owner the
/// blob store's marker object names, so a bucket prefix shared by mistake
/// with another install is refused.
pub(crate) fn install_id(data: &Path) -> anyhow::Result<String> {
    random_id_file(data, "install-id")
}

/// This node's name in build claims and notification leases: `DATA/node-id`
/// (made on first use) alone. One process serves a data directory at a time
/// (its lock), so whatever an earlier run of this name claimed is certainly
/// dead when it starts, and is recovered at once — also when the host name
/// changed (a container recreated on the same data volume). A data
/// directory copied to start another node must drop `node-id`, or both
/// would take each other's claims for their own dead runs.
pub(crate) fn node_name(data: &Path) -> anyhow::Result<String> {
    let id: String = random_id_file(data, "node-id")?.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
    if id.is_empty() {
        bail!("{} holds no letters or digits; delete it and chanto makes a new one", data.join("node-id").display());
    }
    Ok(id)
}

/// The host name, for log lines only (it is no part of the node's identity).
pub(crate) fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).take(64).collect()
}

/// The id in `DATA/NAME`, made (16 random bytes, hex) on first use.
fn random_id_file(data: &Path, name: &str) -> anyhow::Result<String> {
    let path = data.join(name);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id: String = chanto_store::random_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data.join(format!("{name}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}
