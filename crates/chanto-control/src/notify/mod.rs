//! Notifications: subscriptions (API and validation), the dispatcher that turns outbox events into deliveries, and
//! the workers that send them to Slack, Discord, email, signed webhooks and forges (commit statuses and the one
//! living pull request comment).
//!
//! Data flow: a state change writes its event into the outbox in its own transaction (chanto-store). The
//! dispatcher ([`dispatch`]) reads the outbox in order, renders each event once (its links, and for a pull request
//! the comment with the deploy plan) and records one delivery per matching subscription, marking the event done in
//! the same transaction. Delivery workers ([`send`]) make due deliveries, one at a time per subscription so a pull
//! request comment never goes back in time, and record every attempt; the retry policy is `chanto_notify`'s.
//! Nothing here is on a build's or a deploy's path: they only write a row. Certificate events, which no metadata
//! transaction writes, are sent without the outbox (`direct.rs`).

mod direct;
pub(crate) mod dispatch;
mod send;

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chanto_core::SiteName;
use chanto_notify::{EventKind, Filter, RetryPolicy};
use chanto_store::{Delivery, DeliveryAttempt, Subscription};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::builds::sealed::Sealer;
use crate::{ApiError, Control};

pub(crate) use direct::{send_now, send_to, targets};
pub use send::TestResult;

/// Settings of the notification service.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The API's public URL, for build log links.
    pub api_url: String,
    /// How deliveries are retried.
    pub retry: RetryPolicy,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Deliveries made at once (each to a different subscription).
    pub concurrency: usize,
    /// How long delivered and dead deliveries (and dispatched events) are kept.
    pub retention: Duration,
}

impl NotifyConfig {
    /// Defaults: 8 attempts from 1 s up to 1 h apart, 10 s per attempt, 8 at once, kept 14 days.
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            retention: Duration::from_secs(14 * 86_400),
        }
    }
}

/// The notification service inside a [`Control`].
pub struct Notifier {
    config: NotifyConfig,
    sealer: Sealer,
    http: reqwest::Client,
    /// Wakes the dispatcher (a state change happened) and the workers (a delivery is due).
    wake: tokio::sync::Notify,
}

impl Notifier {
    /// A notification service with these settings and sealer (the same key as the builds').
    pub fn new(config: NotifyConfig, sealer: Sealer) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chanto/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the HTTP client");
        Self { config, sealer, http, wake: tokio::sync::Notify::new() }
    }

    /// Its settings.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// Tells the dispatcher that events may be waiting.
    pub fn poke(&self) {
        self.wake.notify_one();
    }
}

/// Where a subscription's notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A generic webhook: the documented JSON payload, signed (`X-Chanto-Signature`, `X-Chanto-Timestamp`).
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// Email over SMTP.
    Email,
    /// GitHub (or GitHub Enterprise): commit statuses and one pull request comment.
    Github,
    /// GitLab: commit statuses and one merge request note.
    Gitlab,
    /// Gitea or Forgejo: commit statuses and one pull request comment.
    Gitea,
}

impl Channel {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Email => "email",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }

    fn forge(self) -> Option<chanto_notify::ForgeKind> {
        match self {
            Self::Github => Some(chanto_notify::ForgeKind::GitHub),
            Self::Gitlab => Some(chanto_notify::ForgeKind::GitLab),
            Self::Gitea => Some(chanto_notify::ForgeKind::Gitea),
            _ => None,
        }
    }
}

/// How chanto talks to an SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refuses servers without it.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (a relay on the same host or network only).
    None,
}

/// An SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Its host name.
    pub host: String,
    /// Its port (default: 587 for STARTTLS, 465 for TLS, 25 without).
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name for authentication (none: no authentication).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for authentication; stored encrypted, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl SmtpSettings {
    fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// A new subscription. Which fields apply depends on the channel; the others must be left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Where notifications go.
    #[schema(value_type = Channel)]
    pub channel: Option<Channel>,
    /// Events to send (default: all): `build.queued`, `build.started`, `build.succeeded`, `build.failed`,
    /// `build.cancelled`, `deploy.ready`, `deploy.activated`, `deploy.rolled_back`, `preview.ready`,
    /// `preview.removed`, `certificate.failed`, `certificate.expiring` (forge channels never get certificate events).
    #[serde(default)]
    pub events: Vec<String>,
    /// Branch globs (default: every branch); `*` within a path segment, `**` across.
    #[serde(default)]
    pub branches: Vec<String>,
    /// webhook, slack, discord: the URL to POST to (http or https). Stored encrypted; shown only as its host.
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: the signing secret (at least 16 characters; default: one is made and shown once).
    #[serde(default)]
    pub secret: Option<String>,
    /// email: the SMTP server.
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    /// email: the sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// github, gitlab, gitea: an access token allowed to write commit statuses and comments. Stored encrypted.
    #[serde(default)]
    pub token: Option<String>,
    /// github, gitlab, gitea: the repository, `owner/name` (GitLab: the project path or numeric id). Default: from
    /// the site's git connection.
    #[serde(default)]
    pub repository: Option<String>,
    /// github, gitlab, gitea: the API base URL (default: `https://api.github.com`, `https://gitlab.com/api/v4`; for
    /// Gitea it is required, e.g. `https://gitea.example.com/api/v1`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// github, gitlab, gitea: the commit status context (default: `chanto/<site>`).
    #[serde(default)]
    pub context: Option<String>,
    /// github, gitlab, gitea: keep one comment on each pull request (default: true).
    #[serde(default)]
    pub comments: Option<bool>,
}

/// A channel's settings as stored (sealed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub(crate) enum ChannelConfig {
    Webhook { url: String, secret: String },
    Slack { url: String },
    Discord { url: String },
    Email { smtp: SmtpSettings, from: String, to: Vec<String> },
    Forge { forge: Channel, api_url: String, repository: String, token: String, context: String, comments: bool },
}

/// A subscription as the API shows it: secrets masked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionView {
    /// Its id.
    pub id: String,
    /// The site.
    pub site: String,
    /// The channel.
    pub channel: String,
    /// Where it sends, with secrets masked.
    pub target: String,
    /// Events sent (empty: all).
    pub events: Vec<String>,
    /// Branch globs (empty: all).
    pub branches: Vec<String>,
    /// When it was created (Unix ms).
    pub created_at: i64,
    /// The webhook signing secret: shown once, when chanto made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One delivery as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Its id.
    pub id: i64,
    /// The subscription.
    pub subscription: String,
    /// `send`, `status` or `comment`.
    pub action: String,
    /// The event's kind.
    pub event: String,
    /// The event's id (also in the payload, for receivers that deduplicate).
    pub event_id: String,
    /// `pending`, `delivered`, `dead` or `superseded`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (Unix ms; pending only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<i64>,
    /// What the last attempt ended with, when it was not a delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was created (Unix ms).
    pub created_at: i64,
    /// Every attempt (only when one delivery is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub attempt_log: Option<Vec<AttemptView>>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first.
    pub n: u32,
    /// When it started (Unix ms).
    pub at: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// The receiver's HTTP status or SMTP reply code.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: String,
    /// The start of the receiver's answer.
    pub response: String,
}

impl From<DeliveryAttempt> for AttemptView {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            n: a.n,
            at: a.at,
            duration_ms: a.duration_ms,
            status: a.status,
            outcome: a.outcome,
            response: a.response,
        }
    }
}

fn delivery_view(d: Delivery, attempts: Option<Vec<DeliveryAttempt>>) -> DeliveryView {
    DeliveryView {
        id: d.id,
        subscription: d.subscription,
        action: d.action,
        event: d.event_kind,
        event_id: d.event_id,
        next_at: (d.state == "pending").then_some(d.next_at),
        state: d.state,
        attempts: d.attempts,
        last_error: d.last_error,
        created_at: d.created_at,
        attempt_log: attempts.map(|a| a.into_iter().map(AttemptView::from).collect()),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_subscription", message).field(field)
}

fn notifications_disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "notifications_disabled",
        "this server does not send notifications; start it with `chanto serve` (notifications are on unless \
         --no-notifications)",
    )
}

/// Longest URL, address, token or other single setting accepted.
const MAX_SETTING: usize = 2048;
/// Most email recipients of one subscription.
const MAX_RECIPIENTS: usize = 50;
/// Most subscriptions of one site.
pub const MAX_SUBSCRIPTIONS: usize = 100;

fn check_len(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_SETTING {
        return Err(invalid(field, format!("{field} is {} bytes; at most {MAX_SETTING} are accepted", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, format!("{field} contains a control character")));
    }
    Ok(())
}

fn check_url(field: &str, url: &str) -> Result<reqwest::Url, ApiError> {
    check_len(field, url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(field, format!("{field} {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, format!("{field} must be an http:// or https:// URL with a host, not {url:?}")));
    }
    Ok(parsed)
}

fn check_address(field: &str, addr: &str) -> Result<(), ApiError> {
    check_len(field, addr)?;
    addr.parse::<lettre::Address>().map(|_| ()).map_err(|e| {
        invalid(field, format!("{field} {addr:?} is not an email address ({e}); write it as name@example.com"))
    })
}

/// `https://hooks.slack.com/…`: where a URL goes, without the path and query that carry its secret.
fn mask_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "…".into(),
    }
}

impl ChannelConfig {
    fn display(&self) -> String {
        match self {
            Self::Webhook { url, .. } | Self::Slack { url } | Self::Discord { url } => mask_url(url),
            Self::Email { smtp, from, to } => {
                format!("smtp {}:{} from {from} to {}", smtp.host, smtp.port(), to.join(", "))
            }
            Self::Forge { forge, api_url, repository, comments, .. } => format!(
                "{} {repository} at {api_url}{}",
                forge.as_str(),
                if *comments { " (statuses and comments)" } else { " (statuses)" }
            ),
        }
    }
}

impl Control {
    /// Turns notifications on.
    pub fn enable_notifications(&self, notifier: Notifier) {
        if self.notifier.set(Arc::new(notifier)).is_ok() {
            tracing::info!("notifications enabled");
        }
    }

    /// Tells the dispatcher that a state change may have written events (a no-op without notifications).
    pub(crate) fn poke_notifier(&self) {
        if let Some(n) = self.notifier.get() {
            n.poke();
        }
    }

    /// The notification service, or 503 when this server sends none.
    pub fn notifier(&self) -> Result<&Arc<Notifier>, ApiError> {
        self.notifier.get().ok_or_else(notifications_disabled)
    }

    /// Adds a subscription to a site.
    pub async fn subscribe(&self, site: &SiteName, req: SubscribeRequest) -> Result<SubscriptionView, ApiError> {
        let notifier = self.notifier()?.clone();
        self.site(site).await?;
        if self.meta.list_subscriptions(site).await?.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_subscriptions",
                format!("site {site} has {MAX_SUBSCRIPTIONS} subscriptions, the most allowed; remove one first"),
            ));
        }
        let (config, filter, shown_secret) = self.validate_subscription(site, req).await?;
        let id = format!("sub_{}", hex::encode(chanto_store::random_bytes::<8>()));
        let plain = serde_json::to_vec(&config).expect("channel settings serialise");
        let sub = Subscription {
            id,
            site: site.clone(),
            channel: channel_of(&config).as_str().into(),
            config: notifier.sealer.seal(&plain),
            display: config.display(),
            filter: serde_json::to_string(&filter).expect("a filter serialises"),
            created_at: chanto_store::now_millis(),
        };
        self.meta.add_subscription(sub.clone()).await?;
        tracing::info!(site = %site, subscription = %sub.id, channel = %sub.channel, "subscription added");
        let mut view = subscription_view(&sub)?;
        view.secret = shown_secret;
        Ok(view)
    }

    async fn validate_subscription(
        &self,
        site: &SiteName,
        req: SubscribeRequest,
    ) -> Result<(ChannelConfig, Filter, Option<String>), ApiError> {
        let channel = req.channel.ok_or_else(|| {
            invalid("channel", "channel is required: webhook, slack, discord, email, github, gitlab or gitea")
        })?;
        let mut events = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            events.push(e.parse::<EventKind>().map_err(|err| invalid(&format!("events[{i}]"), err.to_string()))?);
        }
        for (i, b) in req.branches.iter().enumerate() {
            check_len(&format!("branches[{i}]"), b)?;
        }
        let filter = Filter::new(events, req.branches.clone()).map_err(|e| invalid("branches", e.to_string()))?;
        let forbid = |present: bool, field: &str| -> Result<(), ApiError> {
            if present {
                return Err(invalid(field, format!("{field} does not apply to {} subscriptions", channel.as_str())));
            }
            Ok(())
        };
        let web = matches!(channel, Channel::Webhook | Channel::Slack | Channel::Discord);
        let forge = channel.forge().is_some();
        forbid(!web && req.url.is_some(), "url")?;
        forbid(channel != Channel::Webhook && req.secret.is_some(), "secret")?;
        forbid(channel != Channel::Email && req.smtp.is_some(), "smtp")?;
        forbid(channel != Channel::Email && req.from.is_some(), "from")?;
        forbid(channel != Channel::Email && !req.to.is_empty(), "to")?;
        for (present, field) in [
            (req.token.is_some(), "token"),
            (req.repository.is_some(), "repository"),
            (req.api_url.is_some(), "api_url"),
            (req.context.is_some(), "context"),
            (req.comments.is_some(), "comments"),
        ] {
            forbid(!forge && present, field)?;
        }
        let mut shown = None;
        let config = match channel {
            Channel::Webhook | Channel::Slack | Channel::Discord => {
                let url = req.url.ok_or_else(|| invalid("url", format!("url is required for {}", channel.as_str())))?;
                check_url("url", &url)?;
                match channel {
                    Channel::Slack => ChannelConfig::Slack { url },
                    Channel::Discord => ChannelConfig::Discord { url },
                    _ => {
                        let secret = match req.secret {
                            Some(s) => {
                                check_len("secret", &s)?;
                                if s.len() < 16 {
                                    return Err(invalid("secret", "secret must be at least 16 characters"));
                                }
                                s
                            }
                            None => {
                                let s = format!("whsec_{}", hex::encode(chanto_store::random_bytes::<24>()));
                                shown = Some(s.clone());
                                s
                            }
                        };
                        ChannelConfig::Webhook { url, secret }
                    }
                }
            }
            Channel::Email => {
                let smtp =
                    req.smtp.ok_or_else(|| invalid("smtp", "smtp (host, port, security) is required for email"))?;
                check_len("smtp.host", &smtp.host)?;
                if smtp.host.is_empty() || smtp.host.contains(['/', ' ', '@']) {
                    return Err(invalid("smtp.host", format!("smtp.host {:?} is not a host name", smtp.host)));
                }
                if smtp.port == Some(0) {
                    return Err(invalid("smtp.port", "smtp.port must be 1-65535"));
                }
                if smtp.password.is_some() && smtp.username.is_none() {
                    return Err(invalid("smtp.username", "smtp.password needs smtp.username"));
                }
                for (f, v) in [("smtp.username", &smtp.username), ("smtp.password", &smtp.password)] {
                    if let Some(v) = v {
                        check_len(f, v)?;
                    }
                }
                let from =
                    req.from.ok_or_else(|| invalid("from", "from (the sender address) is required for email"))?;
                check_address("from", &from)?;
                if req.to.is_empty() {
                    return Err(invalid("to", "to (at least one recipient) is required for email"));
                }
                if req.to.len() > MAX_RECIPIENTS {
                    return Err(invalid("to", format!("at most {MAX_RECIPIENTS} recipients; use a mailing list")));
                }
                for (i, t) in req.to.iter().enumerate() {
                    check_address(&format!("to[{i}]"), t)?;
                }
                ChannelConfig::Email { smtp, from, to: req.to }
            }
            Channel::Github | Channel::Gitlab | Channel::Gitea => {
                let token = req.token.ok_or_else(|| {
                    invalid(
                        "token",
                        format!("token (allowed to write commit statuses) is required for {}", channel.as_str()),
                    )
                })?;
                check_len("token", &token)?;
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid("token", "token must be printable ASCII without spaces, as forges issue them"));
                }
                let api_url = match (req.api_url, channel) {
                    (Some(u), _) => {
                        let parsed = check_url("api_url", &u)?;
                        if !parsed.username().is_empty() || parsed.password().is_some() {
                            return Err(invalid("api_url", "api_url must not carry a user or password; give token"));
                        }
                        if parsed.query().is_some() || parsed.fragment().is_some() {
                            return Err(invalid("api_url", "api_url must be a base URL without ? or #"));
                        }
                        u.trim_end_matches('/').to_owned()
                    }
                    (None, Channel::Github) => "https://api.github.com".into(),
                    (None, Channel::Gitlab) => "https://gitlab.com/api/v4".into(),
                    (None, _) => {
                        return Err(invalid(
                            "api_url",
                            "api_url is required for gitea, e.g. https://gitea.example.com/api/v1",
                        ));
                    }
                };
                let repository = match req.repository {
                    Some(r) => r,
                    None => {
                        let git = self.meta.get_git(site).await?.ok_or_else(|| {
                            invalid(
                                "repository",
                                "repository is required: this site has no git connection to take it from",
                            )
                        })?;
                        chanto_notify::parse_repo_path(&git.repository).ok_or_else(|| {
                            invalid(
                                "repository",
                                format!(
                                    "the site's repository {:?} names no owner/name; give repository",
                                    git.repository
                                ),
                            )
                        })?
                    }
                };
                check_len("repository", &repository)?;
                let valid_segment = |s: &str| {
                    !s.is_empty()
                        && s != "."
                        && s != ".."
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                };
                if !repository.split('/').all(valid_segment)
                    || (channel != Channel::Gitlab && repository.split('/').count() != 2)
                {
                    return Err(invalid(
                        "repository",
                        format!(
                            "repository {repository:?} must be owner/name (GitLab: group/…/project or a project id)"
                        ),
                    ));
                }
                let context = req.context.unwrap_or_else(|| format!("chanto/{site}"));
                check_len("context", &context)?;
                if context.is_empty() || context.len() > 100 {
                    return Err(invalid("context", "context must be 1-100 characters"));
                }
                let comments = req.comments.unwrap_or(true);
                if comments {
                    // Two subscriptions keeping "the one comment" would edit each other's.
                    for other in self.meta.list_subscriptions(site).await? {
                        if matches!(other.channel.as_str(), "github" | "gitlab" | "gitea")
                            && other.display.ends_with("(statuses and comments)")
                        {
                            return Err(ApiError::new(
                                StatusCode::CONFLICT,
                                "comments_taken",
                                format!(
                                    "subscription {} already keeps this site's pull request comment; add this one with \
                                     comments: false (--no-comments) or remove that one",
                                    other.id
                                ),
                            )
                            .field("comments"));
                        }
                    }
                }
                ChannelConfig::Forge { forge: channel, api_url, repository, token, context, comments }
            }
        };
        Ok((config, filter, shown))
    }

    /// A site's subscriptions.
    pub async fn subscriptions(&self, site: &SiteName) -> Result<Vec<SubscriptionView>, ApiError> {
        self.site(site).await?;
        self.meta.list_subscriptions(site).await?.iter().map(subscription_view).collect()
    }

    /// Removes a subscription with its pending deliveries.
    pub async fn unsubscribe(&self, site: &SiteName, id: &str) -> Result<(), ApiError> {
        self.site(site).await?;
        if !self.meta.delete_subscription(site, id).await? {
            return Err(unknown_subscription(site, id));
        }
        Ok(())
    }

    /// Sends a sample event to one subscription now, bypassing its filter and the outbox, and reports what the
    /// receiver answered.
    pub async fn test_subscription(&self, site: &SiteName, id: &str) -> Result<TestResult, ApiError> {
        let notifier = self.notifier()?.clone();
        let sub = self.subscription(site, id).await?;
        let config = notifier.open(&sub)?;
        Ok(send::test(self, &notifier, &sub, &config).await)
    }

    async fn subscription(&self, site: &SiteName, id: &str) -> Result<Subscription, ApiError> {
        self.site(site).await?;
        self.meta.get_subscription(site, id).await?.ok_or_else(|| unknown_subscription(site, id))
    }

    /// A site's deliveries, newest first.
    pub async fn notify_deliveries(
        &self,
        site: &SiteName,
        subscription: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, ApiError> {
        self.site(site).await?;
        let list = self.meta.list_notify_deliveries(site, subscription, limit.clamp(1, 1000)).await?;
        Ok(list.into_iter().map(|d| delivery_view(d, None)).collect())
    }

    /// One delivery with every attempt.
    pub async fn notify_delivery(&self, site: &SiteName, id: i64) -> Result<DeliveryView, ApiError> {
        self.site(site).await?;
        let (d, attempts) = self
            .meta
            .get_notify_delivery(site, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("delivery {id} of site {site}")))?;
        Ok(delivery_view(d, Some(attempts)))
    }

    /// Sends an ended (delivered, dead or superseded) delivery again, as a new delivery due now.
    pub async fn redeliver(&self, site: &SiteName, id: i64) -> Result<DeliveryView, ApiError> {
        self.notifier()?;
        self.site(site).await?;
        let new = self
            .meta
            .redeliver(site, id, chanto_store::now_millis())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("delivery {id} of site {site}")))?;
        self.poke_notifier();
        self.notify_delivery(site, new).await
    }

    /// The status badge of a site's branch: its latest build (or, for a site deployed without builds, whether the
    /// branch serves a deploy). Unknown sites and branches get an "unknown" badge, so a badge reveals nothing.
    pub async fn badge(&self, site: &str, branch: &str) -> String {
        let label = "chanto";
        let status = async {
            let site: SiteName = site.parse().ok()?;
            let branch: chanto_core::BranchName = branch.parse().ok()?;
            if let Some(b) = self.meta.list_builds(&site, Some(&branch), 1).await.ok()?.into_iter().next() {
                use chanto_core::BuildState as S;
                return Some(match b.state {
                    S::Queued | S::Running => chanto_notify::BadgeStatus::Building,
                    S::Succeeded => chanto_notify::BadgeStatus::Passing,
                    S::Failed | S::TimedOut | S::Interrupted => chanto_notify::BadgeStatus::Failing,
                    _ => chanto_notify::BadgeStatus::Unknown,
                });
            }
            let rec = self.meta.branch(&site, &branch).await.ok()??;
            rec.active_deploy.map(|_| chanto_notify::BadgeStatus::Passing)
        }
        .await
        .unwrap_or(chanto_notify::BadgeStatus::Unknown);
        chanto_notify::badge_svg(label, status)
    }
}

fn channel_of(c: &ChannelConfig) -> Channel {
    match c {
        ChannelConfig::Webhook { .. } => Channel::Webhook,
        ChannelConfig::Slack { .. } => Channel::Slack,
        ChannelConfig::Discord { .. } => Channel::Discord,
        ChannelConfig::Email { .. } => Channel::Email,
        ChannelConfig::Forge { forge, .. } => *forge,
    }
}

fn subscription_view(s: &Subscription) -> Result<SubscriptionView, ApiError> {
    let filter: Filter = serde_json::from_str(&s.filter).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored filter of {}: {e}", s.id))
    })?;
    Ok(SubscriptionView {
        id: s.id.clone(),
        site: s.site.to_string(),
        channel: s.channel.clone(),
        target: s.display.clone(),
        events: filter.events().iter().map(|e| e.as_str().to_owned()).collect(),
        branches: filter.branches().to_vec(),
        created_at: s.created_at,
        secret: None,
    })
}

impl Notifier {
    fn open(&self, sub: &Subscription) -> Result<ChannelConfig, ApiError> {
        let plain = self.sealer.open(&sub.config).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sealed",
                format!("subscription {} cannot be opened with this server's secret.key; add it again", sub.id),
            )
        })?;
        serde_json::from_slice(&plain).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored subscription {}: {e}", sub.id))
        })
    }
}

/// Runs the dispatcher and the delivery workers until `shutdown` flips.
pub async fn run(control: Arc<Control>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(notifier) = control.notifier.get().cloned() else { return };
    // Attempts in flight when this node last stopped died with it: make them due again now. Leases of other
    // processes sharing the database are theirs until they run out (a dead process's attempt is retried then).
    match control.meta.release_leases(&control.config.owner).await {
        Ok(n) => tracing::info!(interrupted_by_last_stop = n, "notification dispatcher started"),
        Err(e) => tracing::warn!(error = %e, "releasing notification leases failed"),
    }
    let mut last_prune: Option<std::time::Instant> = None;
    let slots = Arc::new(tokio::sync::Semaphore::new(notifier.config.concurrency.max(1)));
    // The lease covers the longest attempt (a comment search of every page, then the edit); an attempt that runs
    // longer is abandoned before the lease ends, so no other worker can start the same attempt meanwhile.
    let attempt_limit = notifier.config.timeout * 16;
    let lease_ms = attempt_limit.as_millis() as i64 + 5_000;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Pruning first: after a long time with notifications off, stale events are dropped rather than sent.
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            let before = chanto_store::now_millis() - notifier.config.retention.as_millis() as i64;
            match control.meta.prune_notifications(before).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "pruned old notifications"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning notifications failed"),
            }
        }
        if let Err(e) = dispatch::dispatch(&control, &notifier).await {
            tracing::warn!(error = %e.message, "dispatching notifications failed; retrying");
        }
        let mut saturated = false;
        match control.meta.due_deliveries(chanto_store::now_millis(), 64).await {
            Ok(due) => {
                for d in due {
                    // All workers busy: the rest wait for the next pass (a finishing worker wakes this loop).
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        saturated = true;
                        break;
                    };
                    let now = chanto_store::now_millis();
                    match control
                        .meta
                        .claim_delivery(d.id, d.attempts, &control.config.owner, now, now + lease_ms)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(delivery = d.id, error = %e, "claiming a delivery failed");
                            continue;
                        }
                    }
                    let (control, notifier) = (control.clone(), notifier.clone());
                    tokio::spawn(async move {
                        let id = d.id;
                        if tokio::time::timeout(attempt_limit, send::deliver(&control, &notifier, d)).await.is_err() {
                            tracing::warn!(
                                delivery = id,
                                "a notification attempt ran past its limit; it will be retried"
                            );
                        }
                        drop(permit);
                        notifier.wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading due deliveries failed; retrying"),
        }
        // Sleep until the next delivery is due, a state change pokes us, or at most a second (events written by
        // another process, e.g. a second control node, are picked up by this poll).
        let wait = match control.meta.next_due().await {
            Ok(Some(at)) if !saturated => {
                Duration::from_millis((at - chanto_store::now_millis()).clamp(10, 1000) as u64)
            }
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = notifier.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A 404 for a subscription id, with where to find the right one.
fn unknown_subscription(site: &SiteName, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{site} has no subscription {id}; `chanto notify list --site {site}` lists its subscriptions"),
    )
}
