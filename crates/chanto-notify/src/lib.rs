//! chanto's notifications without IO: the event model, and what to send for it to Slack, Discord, generic signed
//! webhooks and email; when to retry a delivery; status badges; which subscriptions an event matches.
//!
//! Nothing here reads a clock, draws a random number or touches the network: callers pass the time (`now_s`,
//! `at_ms`) and the jitter in, and send the bodies this crate renders. So every function is a pure table-testable
//! mapping, and the IO layer (HTTP, SMTP, the database) stays thin.
//!
//! - [`Event`] / [`EventKind`]: what happened (builds, deploys, previews, custom domains' certificates); [`Filter`]:
//!   who wants to hear about it.
//! - [`webhook_body`], [`webhook_schema`], [`sign`], [`verify`]: generic webhooks.
//! - [`slack_body`], [`discord_body`], [`email`]: chat and mail, with all user text escaped per target.
//! - [`RetryPolicy::decide`], [`parse_retry_after`]: delivery retries.
//! - [`badge_svg`]: the status badge.

mod badge;
mod discord;
mod email;
mod error;
mod event;
mod filter;
mod forge;
mod plan;
mod retry;
mod slack;
mod text;
mod time;
mod webhook;

pub use badge::{BadgeStatus, badge_svg};
pub use discord::{
    DISCORD_DESCRIPTION_MAX, DISCORD_EMBED_TOTAL_MAX, DISCORD_FIELD_VALUE_MAX, DISCORD_TITLE_MAX, discord_body,
};
pub use email::{Email, email};
pub use error::Error;
pub use event::{Event, EventKind, EventUrls, Outcome};
pub use filter::{Filter, MAX_PATTERN_LEN};
pub use forge::{COMMENT_MAX, ForgeKind, comment_marker, parse_repo_path, platform_comment, pr_comment, status_body};
pub use plan::{DeployPlan, PlanChange, PlanFile, PlanSide, deploy_plan};
pub use retry::{Attempt, DeliveryResult, RetryPolicy, parse_retry_after};
pub use slack::slack_body;
pub use webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_VERSION, sign, verify, webhook_body, webhook_schema};

#[cfg(test)]
mod fixtures {
    use crate::{Event, EventKind, EventUrls};

    /// A complete event of `kind` on `blog` / `main`, every optional field filled in.
    pub(crate) fn event(kind: EventKind) -> Event {
        Event {
            id: "evt_01HX".into(),
            kind,
            at_ms: 1_709_622_489_123,
            site: "blog".into(),
            branch: "main".into(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            build_id: Some("b_42".into()),
            deploy_id: Some("d_7".into()),
            pull_request: None,
            urls: EventUrls {
                branch: Some("https://main.blog.example.org/".into()),
                permalink: Some("https://d-7.blog.example.org/".into()),
                log: Some("https://chanto.example.org/sites/blog/builds/b_42/log".into()),
            },
            duration_ms: Some(62_000),
            author: Some("Ada Lovelace".into()),
            message: Some("Fix typo in about page\n\nLonger body.".into()),
            error: None,
            from_fork: false,
            domain: None,
            expires_at_ms: None,
            hint: None,
        }
    }

    /// A certificate event of `kind` for `example.com` of `blog`, as the control plane makes them: no build, commit
    /// or links.
    pub(crate) fn certificate(kind: EventKind) -> Event {
        Event {
            id: "evt_cert_01".into(),
            commit: None,
            build_id: None,
            deploy_id: None,
            urls: EventUrls::default(),
            duration_ms: None,
            author: None,
            message: None,
            error: Some("could not reach the ACME CA: connection refused".into()),
            domain: Some("example.com".into()),
            expires_at_ms: (kind == EventKind::CertificateExpiring).then_some(1_709_622_489_123 + 5 * 86_400_000),
            hint: Some(
                "chanto tries again in 1m (attempt 1); check that example.com points at this installation".into(),
            ),
            ..event(kind)
        }
    }

    /// A certificate failure whose reason and hint are hostile (a CA's error text is untrusted).
    pub(crate) fn hostile_certificate() -> Event {
        Event {
            error: Some("<b>boom</b> & <!channel> @everyone\n```\n[click](https://evil.example) # heading".into()),
            hint: Some("<script>x</script> @here *bold*\r\nBcc: victim@example.org".into()),
            ..certificate(EventKind::CertificateFailed)
        }
    }

    /// A failed build whose commit message and error are hostile.
    pub(crate) fn hostile_failure() -> Event {
        Event {
            message: Some("<script>alert(1)</script> & <!channel> @everyone [click](https://evil.example)".into()),
            error: Some("npm ERR! <b>exit 1</b> & ```".into()),
            ..event(EventKind::BuildFailed)
        }
    }
}
