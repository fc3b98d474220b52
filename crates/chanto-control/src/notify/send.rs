//! Making deliveries: HTTP posts to chat and webhook receivers, SMTP, and forge APIs (commit statuses, and the one
//! pull request comment found by its marker and edited in place). Every attempt is recorded; what follows it is
//! `chanto_notify::RetryPolicy`'s decision.

use std::time::Instant;

use chanto_notify::{Attempt, DeliveryResult, ForgeKind};
use chanto_store::{Delivery, DeliveryAttempt, DeliveryNext, Subscription};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::dispatch::Payload;
use super::{Channel, ChannelConfig, Notifier, SmtpSecurity};
use crate::Control;

/// How much of a receiver's answer is kept.
const RESPONSE_KEPT: usize = 1024;
/// Pages of pull request comments searched for chanto's marker (100 a page).
const COMMENT_PAGES: u32 = 10;

/// What `chanto notify test` reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    /// Whether the receiver accepted it.
    pub delivered: bool,
    /// Its HTTP status or SMTP reply code.
    pub status: Option<u16>,
    /// The start of its answer.
    pub response: String,
    /// What happened, in words (and what to fix).
    pub outcome: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// One attempt's result.
pub(super) struct Sent {
    pub(super) result: DeliveryResult,
    pub(super) status: Option<u16>,
    pub(super) response: String,
    /// Retrying cannot help (the stored settings or the event cannot make this delivery).
    pub(super) permanent: bool,
}

impl Sent {
    fn failed(why: impl Into<String>) -> Self {
        let why = why.into();
        Self { result: DeliveryResult::ConnectError(why.clone()), status: None, response: why, permanent: true }
    }

    fn ok(&self) -> bool {
        matches!(self.result, DeliveryResult::Status { code: 200..300, .. })
    }
}

pub(super) fn jitter() -> f64 {
    (u64::from_le_bytes(chanto_store::random_bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64
}

/// Makes one attempt at a due delivery and records it.
pub(crate) async fn deliver(control: &Control, notifier: &Notifier, d: Delivery) {
    let now = chanto_store::now_millis();
    let n = d.attempts + 1;
    let record = |outcome: String, sent: Option<&Sent>, next: DeliveryNext, started: Instant| {
        let attempt = DeliveryAttempt {
            n,
            at: now,
            duration_ms: started.elapsed().as_millis() as u64,
            status: sent.and_then(|s| s.status),
            outcome,
            response: sent.map(|s| s.response.clone()).unwrap_or_default(),
        };
        control.meta.record_attempt(d.id, attempt, next, chanto_store::now_millis())
    };
    let started = Instant::now();
    let sub = match while_unavailable(|| control.meta.get_subscription(&d.site, &d.subscription)).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(delivery = d.id, error = %e, "reading a subscription failed; the delivery waits");
            return;
        }
    };
    let dead = |why: String| record(format!("dead: {why}"), None, DeliveryNext::Dead, started);
    let config = match notifier.open(&sub) {
        Ok(c) => c,
        Err(e) => {
            let _ = dead(e.message).await;
            return;
        }
    };
    let payload: Payload = match serde_json::from_str(&d.payload) {
        Ok(p) => p,
        Err(e) => {
            let _ = dead(format!("the stored payload does not parse: {e}")).await;
            return;
        }
    };
    if let Some(key) = &d.key
        && control.meta.newer_delivered(&d.subscription, key, d.id).await.unwrap_or(false)
    {
        let _ =
            record("superseded: a newer delivery already updated this".into(), None, DeliveryNext::Superseded, started)
                .await;
        return;
    }
    let sent = send(control, notifier, &sub, &config, &d.action, &payload).await;
    let decision = if sent.permanent {
        Attempt::Dead { reason: format!("{}; fix the subscription (chanto notify remove, then add)", sent.response) }
    } else {
        notifier.config.retry.decide(n, &sent.result, jitter())
    };
    let (outcome, next) = match decision {
        Attempt::Delivered => ("delivered".to_owned(), DeliveryNext::Delivered),
        Attempt::Retry { after_ms } => (
            format!(
                "retry in {}: {}",
                humantime::format_duration(std::time::Duration::from_millis(after_ms)),
                describe(&sent)
            ),
            DeliveryNext::Retry(chanto_store::now_millis() + after_ms as i64),
        ),
        Attempt::Dead { reason } => (format!("dead: {reason}"), DeliveryNext::Dead),
    };
    match &next {
        DeliveryNext::Dead => {
            tracing::warn!(delivery = d.id, subscription = %d.subscription, outcome = %outcome, "notification given up")
        }
        _ => tracing::debug!(delivery = d.id, outcome = %outcome, "notification attempt"),
    }
    if let Err(e) = while_unavailable(|| record(outcome.clone(), Some(&sent), next, started)).await {
        tracing::warn!(delivery = d.id, error = %e, "recording a delivery attempt failed (another worker recorded it)");
    }
}

/// Retries a metadata call while the store is unavailable (PostgreSQL
/// restarting), so an attempt made meanwhile is recorded once it is back
/// rather than sent again when its lease runs out. The caller's time limit
/// (shorter than the lease) bounds the wait.
async fn while_unavailable<T, F, Fut>(mut call: F) -> Result<T, chanto_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, chanto_store::StoreError>>,
{
    loop {
        match call().await {
            Err(chanto_store::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "the metadata store is unavailable; a notification attempt waits for it");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

pub(super) fn describe(s: &Sent) -> String {
    match &s.result {
        DeliveryResult::Status { code, .. } => format!("HTTP {code}"),
        DeliveryResult::Timeout => "timed out".into(),
        DeliveryResult::ConnectError(why) => format!("could not connect: {why}"),
    }
}

/// Sends a sample event to a subscription now.
pub(crate) async fn test(
    control: &Control,
    notifier: &Notifier,
    sub: &Subscription,
    config: &ChannelConfig,
) -> TestResult {
    let event = sample_event(control, notifier, sub).await;
    let started = Instant::now();
    let sent = match config {
        ChannelConfig::Forge { .. } => {
            // A sample must not touch a real commit or pull request: check the token and repository instead.
            forge_check(notifier, config).await
        }
        _ => send(control, notifier, sub, config, "send", &Payload { event, comment: None }).await,
    };
    let delivered = sent.ok();
    let outcome = if delivered {
        "delivered".to_owned()
    } else {
        match notifier.config.retry.decide(u32::MAX, &sent.result, 0.0) {
            Attempt::Dead { reason } => reason,
            _ => describe(&sent),
        }
    };
    TestResult {
        delivered,
        status: sent.status,
        response: sent.response,
        outcome,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

async fn sample_event(control: &Control, notifier: &Notifier, sub: &Subscription) -> chanto_notify::Event {
    let site = control.meta.get_site(&sub.site).await.ok().flatten();
    let branch = site.map(|s| s.production_branch.to_string()).unwrap_or_else(|| "main".into());
    chanto_notify::Event {
        id: format!("evt_test_{}", hex::encode(chanto_store::random_bytes::<4>())),
        kind: chanto_notify::EventKind::BuildSucceeded,
        at_ms: chanto_store::now_millis(),
        site: sub.site.to_string(),
        branch,
        commit: Some("0000000000000000000000000000000000000000".into()),
        build_id: None,
        deploy_id: None,
        pull_request: None,
        urls: chanto_notify::EventUrls {
            branch: Some(control.config.url_for(sub.site.as_str())),
            permalink: None,
            log: Some(format!("{}/api/v1/sites/{}/notifications", notifier.config.api_url, sub.site)),
        },
        duration_ms: Some(1234),
        author: Some("chanto".into()),
        message: Some("A test notification from `chanto notify test`".into()),
        error: None,
        from_fork: false,
        domain: None,
        expires_at_ms: None,
        hint: None,
    }
}

async fn send(
    control: &Control,
    notifier: &Notifier,
    sub: &Subscription,
    config: &ChannelConfig,
    action: &str,
    p: &Payload,
) -> Sent {
    let e = &p.event;
    match (config, action) {
        (
            ChannelConfig::Webhook { .. }
            | ChannelConfig::Slack { .. }
            | ChannelConfig::Discord { .. }
            | ChannelConfig::Email { .. },
            "send",
        ) => message(notifier, config, e).await,
        (ChannelConfig::Forge { forge, api_url, repository, token, context, .. }, "status") => {
            let Some(commit) = &e.commit else { return Sent::failed("the event has no commit") };
            let kind = forge_kind(*forge);
            // A pull request's preview build and a branch build of the same commit each keep their own status.
            let context = match e.pull_request {
                Some(_) => format!("{context} (preview)"),
                None => context.clone(),
            };
            let Some(body) = chanto_notify::status_body(kind, e, &context) else {
                return Sent::failed("the event sets no commit status");
            };
            let url = match kind {
                ForgeKind::GitLab => format!("{api_url}/projects/{}/statuses/{commit}", project(repository)),
                _ => format!("{api_url}/repos/{repository}/statuses/{commit}"),
            };
            let mut sent = http(auth(notifier.http.post(url), kind, token).json(&body), RESPONSE_KEPT).await.0;
            // GitLab refuses to set the state a status already has ("Cannot transition status via :run from
            // :running"): the status is what we wanted, so that is a success.
            if kind == ForgeKind::GitLab
                && sent.status == Some(400)
                && sent.response.contains("Cannot transition status")
            {
                sent.result = DeliveryResult::Status { code: 200, retry_after_ms: None };
            }
            sent
        }
        (ChannelConfig::Forge { forge, api_url, repository, token, .. }, "comment") => {
            let (Some(pr), Some(body)) = (e.pull_request, &p.comment) else {
                return Sent::failed("the event has no pull request comment");
            };
            let forge = ForgeTarget { kind: forge_kind(*forge), api_url, repository, token };
            upsert_comment(control, notifier, sub, &forge, pr, body).await
        }
        _ => Sent::failed(format!("a {} subscription cannot make a {action:?} delivery", sub.channel)),
    }
}

/// Sends `e` as a message (webhook, Slack, Discord, email); forge settings make no message.
pub(super) async fn message(notifier: &Notifier, config: &ChannelConfig, e: &chanto_notify::Event) -> Sent {
    match config {
        ChannelConfig::Webhook { url, secret } => {
            let body = chanto_notify::webhook_body(e);
            let mut req = notifier.http.post(url).header("content-type", "application/json");
            for (name, value) in chanto_notify::sign(secret.as_bytes(), chanto_store::now_millis() / 1000, &body) {
                req = req.header(name, value);
            }
            let req = req.header("X-Chanto-Event", e.kind.as_str()).header("X-Chanto-Delivery", &e.id).body(body);
            http(req, RESPONSE_KEPT).await.0
        }
        ChannelConfig::Slack { url } => {
            http(notifier.http.post(url).json(&chanto_notify::slack_body(e)), RESPONSE_KEPT).await.0
        }
        ChannelConfig::Discord { url } => {
            http(notifier.http.post(url).json(&chanto_notify::discord_body(e)), RESPONSE_KEPT).await.0
        }
        ChannelConfig::Email { smtp, from, to } => email(notifier, smtp, from, to, e).await,
        ChannelConfig::Forge { .. } => Sent::failed("a forge subscription sends no messages"),
    }
}

fn forge_kind(c: Channel) -> ForgeKind {
    c.forge().unwrap_or(ForgeKind::GitHub)
}

/// A GitLab project path, URL-encoded as one path segment (repository names are `[A-Za-z0-9._-]` segments).
fn project(repository: &str) -> String {
    repository.replace('/', "%2F")
}

fn auth(req: reqwest::RequestBuilder, kind: ForgeKind, token: &str) -> reqwest::RequestBuilder {
    match kind {
        ForgeKind::GitHub => req
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28"),
        ForgeKind::GitLab => req.header("private-token", token),
        ForgeKind::Gitea => req.header("authorization", format!("token {token}")),
    }
}

/// Sends a request; returns the result and, on success, the body (at most `max_body` bytes are read: a receiver
/// cannot make chanto buffer more).
async fn http(req: reqwest::RequestBuilder, max_body: usize) -> (Sent, Option<bytes::Bytes>) {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let timeout = e.is_timeout();
            // Without the URL: Slack and Discord URLs carry their secret in the path.
            let why = e.without_url().to_string();
            let result = if timeout { DeliveryResult::Timeout } else { DeliveryResult::ConnectError(why.clone()) };
            return (Sent { result, status: None, response: why, permanent: false }, None);
        }
    };
    let mut code = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let now_s = chanto_store::now_millis() / 1000;
    let mut retry_after_ms = header("retry-after").and_then(|v| chanto_notify::parse_retry_after(&v, now_s));
    // GitHub's rate limits answer 403 with `x-ratelimit-remaining: 0` (primary) or `retry-after` (secondary):
    // that is "too many requests", to be retried when the limit resets, not a refusal.
    if code == 403 && (header("x-ratelimit-remaining").as_deref() == Some("0") || retry_after_ms.is_some()) {
        code = 429;
        if retry_after_ms.is_none() {
            retry_after_ms = header("x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .map(|reset| (reset - now_s).max(1) as u64 * 1000);
        }
    }
    let mut body = Vec::new();
    let mut truncated = false;
    // A body cut short by the connection only shortens what is kept: the status has arrived.
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max_body - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    let mut response = String::from_utf8_lossy(&body[..body.len().min(RESPONSE_KEPT)]).into_owned();
    if truncated || body.len() > RESPONSE_KEPT {
        response.push('…');
    }
    let ok = (200..300).contains(&code) && !truncated;
    let result = DeliveryResult::Status { code, retry_after_ms };
    (Sent { result, status: Some(code), response, permanent: false }, ok.then(|| bytes::Bytes::from(body)))
}

async fn email(
    notifier: &Notifier,
    smtp: &super::SmtpSettings,
    from: &str,
    to: &[String],
    e: &chanto_notify::Event,
) -> Sent {
    use lettre::message::{Mailbox, MultiPart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mail = chanto_notify::email(e);
    let builder = match smtp.security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)),
    };
    let mut builder = match builder {
        Ok(b) => b.port(smtp.port()).timeout(Some(notifier.config.timeout)),
        Err(err) => return Sent::failed(format!("smtp {}: {err}", smtp.host)),
    };
    if let Some(user) = &smtp.username {
        builder = builder.credentials(Credentials::new(user.clone(), smtp.password.clone().unwrap_or_default()));
    }
    let mailer = builder.build();
    let mut message = Message::builder().subject(mail.subject);
    match from.parse::<Mailbox>() {
        Ok(m) => message = message.from(m),
        Err(err) => return Sent::failed(format!("from {from:?}: {err}")),
    }
    for t in to {
        match t.parse::<Mailbox>() {
            Ok(m) => message = message.to(m),
            Err(err) => return Sent::failed(format!("to {t:?}: {err}")),
        }
    }
    let message = match message.multipart(MultiPart::alternative_plain_html(mail.text, mail.html)) {
        Ok(m) => m,
        Err(err) => return Sent::failed(format!("building the message: {err}")),
    };
    match mailer.send(message).await {
        Ok(resp) => {
            let code = resp.code().to_string().parse().ok();
            let text = resp.message().collect::<Vec<_>>().join(" ");
            Sent {
                result: DeliveryResult::Status { code: 200, retry_after_ms: None },
                status: code,
                response: text,
                permanent: false,
            }
        }
        Err(err) => {
            let code = err.status().and_then(|c| c.to_string().parse::<u16>().ok());
            let why = format!("smtp: {err}");
            let result = if err.is_timeout() {
                DeliveryResult::Timeout
            } else if err.is_permanent() {
                // 5xx from the server: the address or the credentials are wrong; retrying will not help.
                DeliveryResult::Status { code: 400, retry_after_ms: None }
            } else if err.is_transient() {
                DeliveryResult::Status { code: 503, retry_after_ms: None }
            } else {
                DeliveryResult::ConnectError(why.clone())
            };
            Sent { result, status: code, response: why, permanent: false }
        }
    }
}

struct ForgeTarget<'a> {
    kind: ForgeKind,
    api_url: &'a str,
    repository: &'a str,
    token: &'a str,
}

impl ForgeTarget<'_> {
    fn comments_url(&self, pr: u64) -> String {
        match self.kind {
            ForgeKind::GitLab => {
                format!("{}/projects/{}/merge_requests/{pr}/notes", self.api_url, project(self.repository))
            }
            _ => format!("{}/repos/{}/issues/{pr}/comments", self.api_url, self.repository),
        }
    }

    fn comment_url(&self, pr: u64, id: &str) -> String {
        match self.kind {
            ForgeKind::GitLab => format!("{}/{id}", self.comments_url(pr)),
            _ => format!("{}/repos/{}/issues/comments/{id}", self.api_url, self.repository),
        }
    }
}

#[derive(Deserialize)]
struct Comment {
    id: serde_json::Value,
    #[serde(default)]
    body: Option<String>,
    /// GitHub and Gitea.
    #[serde(default)]
    user: Option<Account>,
    /// GitLab.
    #[serde(default)]
    author: Option<Account>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

impl Account {
    fn name(&self) -> Option<&str> {
        self.login.as_deref().or(self.username.as_deref())
    }
}

/// Largest comment list page read (100 comments of up to 65,536 characters).
const COMMENT_PAGE_MAX: usize = 16 << 20;

fn comment_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// Keeps exactly one chanto comment on a pull request: edits the one it knows, or the one carrying its marker (a
/// restart may have lost the id), and creates one only when there is none.
async fn upsert_comment(
    control: &Control,
    notifier: &Notifier,
    sub: &Subscription,
    forge: &ForgeTarget<'_>,
    pr: u64,
    body: &str,
) -> Sent {
    let marker = chanto_notify::comment_marker(sub.site.as_str());
    let mut known = control.meta.forge_comment(&sub.id, pr).await.ok().flatten();
    if known.is_none() {
        match find_comment(notifier, forge, pr, &marker).await {
            Ok(found) => known = found,
            Err(sent) => return sent,
        }
        if let Some(id) = &known {
            let _ = control.meta.set_forge_comment(&sub.id, pr, id).await;
        }
    }
    let json = serde_json::json!({ "body": body });
    if let Some(id) = &known {
        let url = forge.comment_url(pr, id);
        let req = match forge.kind {
            ForgeKind::GitLab => notifier.http.put(url),
            _ => notifier.http.patch(url),
        };
        let (sent, _) = http(auth(req, forge.kind, forge.token).json(&json), RESPONSE_KEPT).await;
        if sent.status != Some(404) {
            return sent;
        }
        // Someone deleted it: make a new one.
    }
    let (sent, answer) =
        http(auth(notifier.http.post(forge.comments_url(pr)), forge.kind, forge.token).json(&json), 1 << 20).await;
    if let Some(answer) = answer {
        match serde_json::from_slice::<Comment>(&answer).ok().and_then(|c| comment_id(&c.id)) {
            Some(id) => {
                if let Err(e) = control.meta.set_forge_comment(&sub.id, pr, &id).await {
                    tracing::warn!(error = %e, "remembering a pull request comment failed; it will be found by its marker");
                }
            }
            None => tracing::warn!(subscription = %sub.id, "the forge answered a new comment without its id"),
        }
    }
    sent
}

/// The comment on the pull request that starts with chanto's marker and was written by the token's own account
/// (anyone can post a comment that starts with the marker; only chanto's own is chanto's).
async fn find_comment(
    notifier: &Notifier,
    forge: &ForgeTarget<'_>,
    pr: u64,
    marker: &str,
) -> Result<Option<String>, Sent> {
    let whoami = auth(notifier.http.get(format!("{}/user", forge.api_url)), forge.kind, forge.token);
    let (sent, me) = http(whoami, 1 << 20).await;
    let Some(me) = me else { return Err(sent) };
    let me: Account = match serde_json::from_slice(&me) {
        Ok(a) => a,
        Err(e) => return Err(unparsable("the token's account", e)),
    };
    let Some(me) = me.name().map(str::to_owned) else {
        return Err(unparsable("the token's account", "it has no login or username"));
    };
    for page in 1..=COMMENT_PAGES {
        let url = format!("{}?per_page=100&limit=100&page={page}", forge.comments_url(pr));
        let (sent, body) = http(auth(notifier.http.get(url), forge.kind, forge.token), COMMENT_PAGE_MAX).await;
        let Some(body) = body else { return Err(sent) };
        let comments: Vec<Comment> = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return Err(unparsable("the comment list", e)),
        };
        let mine = |c: &&Comment| {
            let author = c.user.as_ref().or(c.author.as_ref()).and_then(Account::name);
            author == Some(me.as_str()) && c.body.as_deref().is_some_and(|b| b.starts_with(marker))
        };
        if let Some(c) = comments.iter().find(mine) {
            return Ok(comment_id(&c.id));
        }
        if comments.len() < 100 {
            break;
        }
    }
    Ok(None)
}

/// A forge answer that does not parse: retried (a proxy's error page, a forge hiccup), not fatal at once.
fn unparsable(what: &str, e: impl std::fmt::Display) -> Sent {
    let why = format!("the forge's answer for {what} does not parse: {e}");
    Sent { result: DeliveryResult::ConnectError(why.clone()), status: None, response: why, permanent: false }
}

/// For `notify test` on a forge: reads the repository with the token, touching nothing.
async fn forge_check(notifier: &Notifier, config: &ChannelConfig) -> Sent {
    let ChannelConfig::Forge { forge, api_url, repository, token, .. } = config else {
        return Sent::failed("not a forge subscription");
    };
    let kind = forge_kind(*forge);
    let url = match kind {
        ForgeKind::GitLab => format!("{api_url}/projects/{}", project(repository)),
        _ => format!("{api_url}/repos/{repository}"),
    };
    let (mut sent, _) = http(auth(notifier.http.get(url), kind, token), RESPONSE_KEPT).await;
    if sent.response.len() > 200 {
        sent.response = format!("{}…", sent.response.chars().take(200).collect::<String>());
    }
    sent
}
