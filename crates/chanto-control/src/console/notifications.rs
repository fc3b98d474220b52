//! Notifications: a site's subscriptions (add, test, remove), its delivery
//! log and one delivery's attempts (send it again). The same `Control`
//! calls as the API's `/sites/{site}/notifications…`; secrets (webhook
//! URLs' paths, signing secrets, passwords, tokens) are write-only, but a
//! signing secret chanto makes is shown once, in the answer that made it.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_core::SiteName;
use chanto_store::Scope;
use serde::Deserialize;

use super::session::Session;
use super::{ConfirmRemove, CsrfForm, DoneQuery, Nav, checked_post, error_page, html, signed_in, url_escape, when};
use crate::notify::{Channel, SmtpSecurity, SmtpSettings, SubscribeRequest, SubscriptionView};
use crate::{ApiError, Control};

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/sites/{site}/notifications", get(notifications_page).post(subscribe))
        .route("/sites/{site}/notifications/{id}/remove", get(remove_page).post(remove))
        .route("/sites/{site}/notifications/{id}/test", post(test))
        .route("/sites/{site}/notifications/deliveries/{id}", get(delivery_page))
        .route("/sites/{site}/notifications/deliveries/{id}/redeliver", post(redeliver))
}

fn here(site: &str) -> String {
    format!("/sites/{}/notifications", url_escape(site))
}

fn api_target(site: &str, rest: &str) -> String {
    format!("/api/v1/sites/{}/notifications{rest}", url_escape(site))
}

struct DeliveryRow {
    id: i64,
    subscription: String,
    action: String,
    event: String,
    state: String,
    attempts: u32,
    last_error: Option<String>,
    created: String,
}

/// What a test send came back with.
struct TestRow {
    id: String,
    delivered: bool,
    status: String,
    outcome: String,
    response: String,
    duration_ms: u64,
}

/// The subscribe form as typed (secrets are never filled back in).
#[derive(Deserialize, Default)]
struct SubscribeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    branches: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    smtp_host: String,
    #[serde(default)]
    smtp_port: String,
    #[serde(default)]
    smtp_security: String,
    #[serde(default)]
    smtp_username: String,
    #[serde(default)]
    smtp_password: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    api_url: String,
    #[serde(default)]
    context: String,
    comments: Option<String>,
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_subscription", message).field(field)
}

impl SubscribeForm {
    /// The API's request: only the fields given (the API names any that do not apply to the channel).
    fn request(&self) -> Result<SubscribeRequest, ApiError> {
        let channel: Channel =
            serde_json::from_value(serde_json::Value::String(self.channel.clone())).map_err(|_| {
                invalid("channel", "channel: choose webhook, slack, discord, email, github, gitlab or gitea".to_owned())
            })?;
        let email = channel == Channel::Email;
        let forge = matches!(channel, Channel::Github | Channel::Gitlab | Channel::Gitea);
        let smtp = match text(&self.smtp_host) {
            None if !email => None,
            host => Some(SmtpSettings {
                host: host.unwrap_or_default(),
                port: text(&self.smtp_port)
                    .map(|p| {
                        p.parse::<u16>().map_err(|_| {
                            let p: String = p.chars().take(20).collect();
                            invalid("smtp.port", format!("SMTP port {p:?} is not a port number (1-65535)"))
                        })
                    })
                    .transpose()?,
                security: match self.smtp_security.as_str() {
                    "tls" => SmtpSecurity::Tls,
                    "none" => SmtpSecurity::None,
                    _ => SmtpSecurity::Starttls,
                },
                username: text(&self.smtp_username),
                password: Some(self.smtp_password.clone()).filter(|p| !p.is_empty()),
            }),
        };
        Ok(SubscribeRequest {
            channel: Some(channel),
            events: words(&self.events),
            branches: words(&self.branches),
            url: text(&self.url),
            secret: Some(self.secret.clone()).filter(|s| !s.is_empty()),
            smtp,
            from: text(&self.from),
            to: words(&self.to),
            token: text(&self.token),
            repository: text(&self.repository),
            api_url: text(&self.api_url),
            context: text(&self.context),
            comments: forge.then_some(self.comments.is_some()),
        })
    }
}

#[derive(Template)]
#[template(path = "console/notifications.html")]
struct NotificationsPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    error: Option<String>,
    /// A signing secret chanto just made (the subscription's id, the secret): shown in this answer only.
    new_secret: Option<(String, String)>,
    tested: Option<TestRow>,
    subscriptions: Vec<SubscriptionView>,
    deliveries: Vec<DeliveryRow>,
    form: SubscribeForm,
    event_kinds: Vec<&'static str>,
    can_write: bool,
    csrf: String,
}

async fn view(c: &Control, s: &Session, site: &str) -> Result<NotificationsPage, ApiError> {
    let name: SiteName = crate::api::parse_path(site)?;
    let subscriptions = c.subscriptions(&name).await?;
    let deliveries = c
        .notify_deliveries(&name, None, 100)
        .await?
        .into_iter()
        .map(|d| DeliveryRow {
            id: d.id,
            subscription: d.subscription,
            action: d.action,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            last_error: d.last_error,
            created: when(d.created_at),
        })
        .collect();
    Ok(NotificationsPage {
        nav: Nav::of(s, "sites"),
        site: name.to_string(),
        notice: None,
        error: None,
        new_secret: None,
        tested: None,
        subscriptions,
        deliveries,
        form: SubscribeForm { channel: "webhook".to_owned(), comments: Some("on".to_owned()), ..Default::default() },
        event_kinds: chanto_notify::EventKind::ALL.iter().map(|k| k.as_str()).collect(),
        can_write: s.may(Scope::Write),
        csrf: s.csrf.clone(),
    })
}

/// Renders the page, changed by `edit`, or the error that kept it from being read.
async fn show(
    c: &Control,
    s: &Session,
    site: &str,
    status: StatusCode,
    edit: impl FnOnce(&mut NotificationsPage),
) -> Response {
    super::render_edited(s, site, status, view(c, s, site).await, edit)
}

async fn notifications_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &here(&site)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Only a fixed word or a number is echoed back.
    let notice = match q.done.as_deref() {
        Some("removed") => Some("The subscription was removed, with its pending deliveries.".to_owned()),
        Some("subscribed") => Some("Subscribed; matching events are sent from now on.".to_owned()),
        done => done.and_then(|d| d.parse::<i64>().ok()).map(|d| format!("Queued again as delivery {d}.")),
    };
    show(&c, &s, &site, StatusCode::OK, |p| p.notice = notice).await
}

async fn subscribe(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<SubscribeForm>,
) -> Response {
    let what = ("subscribe", api_target(&site, ""), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.subscribe(&crate::api::parse_path(&site)?, f.request()?).await }.await;
    let failed = result.as_ref().err().cloned();
    let secret = result.as_ref().ok().and_then(|v| Some((v.id.clone(), v.secret.clone()?)));
    let done =
        p.finish(&c, 201, result, |_| Redirect::to(&format!("{}?done=subscribed", here(&site))).into_response()).await;
    match (failed, secret) {
        // The form comes back as typed (but its secrets), with what to fix.
        (Some(e), _) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let message = super::with_field(&e);
            let form = SubscribeForm { secret: String::new(), smtp_password: String::new(), token: String::new(), ..f };
            show(&c, &p.s, &site, e.status, |page| {
                page.error = Some(message);
                page.form = form;
            })
            .await
        }
        // Shown in this answer only (never in a URL, never again).
        (None, Some(secret)) => show(&c, &p.s, &site, StatusCode::OK, |page| page.new_secret = Some(secret)).await,
        _ => done,
    }
}

async fn remove_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    let s = match signed_in(&c, &headers, &format!("{}/{}/remove", here(&site), url_escape(&id))).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        s.principal.require(Scope::Write)?;
        let name: SiteName = crate::api::parse_path(&site)?;
        let subs = c.subscriptions(&name).await?;
        subs.into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| ApiError::not_found(format!("subscription {id:?} of site {name}")))
    }
    .await;
    match result {
        Ok(v) => html(
            StatusCode::OK,
            &ConfirmRemove {
                nav: Nav::of(&s, "sites"),
                title: format!("Remove the {} subscription {}?", v.channel, v.id),
                what: vec![
                    format!("It sends {}'s events to {}.", v.site, v.target),
                    "Nothing more is sent there; its pending deliveries are dropped.".to_owned(),
                ],
                action: format!("{}/{}/remove", here(&v.site), v.id),
                button: format!("Remove {}", v.id),
                back: here(&v.site),
                csrf: s.csrf.clone(),
            },
        ),
        Err(e) => error_page(Some(&s), e, &here(&site)),
    }
}

async fn remove(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("remove", api_target(&site, &format!("/{}", url_escape(&id))), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.unsubscribe(&crate::api::parse_path(&site)?, &id).await }.await;
    p.finish(&c, 204, result, |()| Redirect::to(&format!("{}?done=removed", here(&site))).into_response()).await
}

async fn test(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("test", api_target(&site, &format!("/{}/test", url_escape(&id))), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.test_subscription(&crate::api::parse_path(&site)?, &id).await }.await;
    let tested = result.as_ref().ok().map(|t| TestRow {
        // Echoed only once the site has a subscription of this id.
        id: id.clone(),
        delivered: t.delivered,
        status: t.status.map_or("no answer".to_owned(), |s| s.to_string()),
        outcome: t.outcome.clone(),
        response: t.response.clone(),
        duration_ms: t.duration_ms,
    });
    let failed = p.finish(&c, 200, result, |_| Response::default()).await;
    match tested {
        Some(t) => show(&c, &p.s, &site, StatusCode::OK, |page| page.tested = Some(t)).await,
        None => failed,
    }
}

struct AttemptRow {
    n: u32,
    at: String,
    duration_ms: u64,
    status: String,
    outcome: String,
    response: String,
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
struct DeliveryPage {
    nav: Option<Nav>,
    site: String,
    delivery: crate::notify::DeliveryView,
    /// The subscription's channel and target, while it exists.
    sent_to: Option<String>,
    created: String,
    next: Option<String>,
    attempts: Vec<AttemptRow>,
    can_write: bool,
    csrf: String,
}

async fn delivery_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    let s = match signed_in(&c, &headers, &format!("{}/deliveries/{}", here(&site), url_escape(&id))).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let mut d = c.notify_delivery(&name, crate::notify::api::delivery_id(&id)?).await?;
        let sent_to = c
            .subscriptions(&name)
            .await?
            .into_iter()
            .find(|v| v.id == d.subscription)
            .map(|v| format!("{} {}", v.channel, v.target));
        let attempts = d
            .attempt_log
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|a| AttemptRow {
                n: a.n,
                at: when(a.at),
                duration_ms: a.duration_ms,
                status: a.status.map_or("—".to_owned(), |s| s.to_string()),
                outcome: a.outcome,
                response: a.response,
            })
            .collect();
        Ok::<_, ApiError>(DeliveryPage {
            nav: Nav::of(&s, "sites"),
            site: name.to_string(),
            sent_to,
            created: when(d.created_at),
            next: d.next_at.map(when),
            delivery: d,
            attempts,
            can_write: s.may(Scope::Write),
            csrf: s.csrf.clone(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, &here(&site)),
    }
}

async fn redeliver(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let target = api_target(&site, &format!("/deliveries/{}/redeliver", url_escape(&id)));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("redeliver", target, here(&site))).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result =
        async { c.redeliver(&crate::api::parse_path(&site)?, crate::notify::api::delivery_id(&id)?).await }.await;
    p.finish(&c, 201, result, |d| Redirect::to(&format!("{}?done={}", here(&site), d.id)).into_response()).await
}
