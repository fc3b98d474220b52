//! From the outbox to deliveries: each event is rendered once (links, the build's commit and author, and for a
//! pull request the comment with its deploy plan against production) and fanned out to the subscriptions whose
//! filter it matches, in one store transaction per event.

use std::sync::Arc;

use chanto_core::{BranchName, DeployId, Manifest, SiteName};
use chanto_notify::{DeployPlan, Event, EventKind, EventUrls, Filter, PlanFile, PlanSide};
use chanto_store::{BuildRecord, NewDelivery, OutboxEvent, Subscription};
use serde::{Deserialize, Serialize};

use super::{ChannelConfig, Notifier};
use crate::{ApiError, Control};

/// What a delivery carries: the event, and for a comment its rendered body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Events handled per pass.
const BATCH: u32 = 64;

/// Fans out every waiting event.
pub(crate) async fn dispatch(control: &Arc<Control>, notifier: &Notifier) -> Result<(), ApiError> {
    loop {
        let events = control.meta.pending_events(BATCH).await?;
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        // A batch is mostly one site's events (a build's life, a deploy's): read each site's subscriptions once.
        let mut subscriptions: std::collections::HashMap<SiteName, Vec<Subscription>> = Default::default();
        for o in events {
            if !subscriptions.contains_key(&o.site) {
                subscriptions.insert(o.site.clone(), control.meta.list_subscriptions(&o.site).await?);
            }
            let subs = &subscriptions[&o.site];
            let deliveries =
                if subs.is_empty() { Vec::new() } else { deliveries_for(control, notifier, &o, subs).await };
            control.meta.fan_out(o.seq, deliveries, chanto_store::now_millis()).await?;
        }
        if n < BATCH as usize {
            return Ok(());
        }
    }
}

async fn deliveries_for(
    control: &Control,
    notifier: &Notifier,
    o: &OutboxEvent,
    subs: &[Subscription],
) -> Vec<NewDelivery> {
    let Ok(kind) = o.kind.parse::<EventKind>() else {
        tracing::warn!(kind = %o.kind, "an outbox event of a kind this chanto does not know; skipped");
        return Vec::new();
    };
    let event = event_for(control, notifier, o, kind).await;
    // The pull request whose comment the event updates: its own, or for a
    // platform config site's merge build, the pull request it applied (the
    // build named it; looked up only for a subscription that comments). Its
    // status stays the branch's.
    let mut comment_pr: Option<Option<u64>> = event.pull_request.map(Some);
    let mut out = Vec::new();
    let mut comment: Option<Option<String>> = None;
    for sub in subs {
        let filter: Filter = match serde_json::from_str(&sub.filter) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(subscription = %sub.id, error = %e, "a stored filter does not parse; subscription skipped");
                continue;
            }
        };
        if !filter.matches(&event) {
            continue;
        }
        let new = |action: &str, key: Option<String>, comment: Option<String>| NewDelivery {
            subscription: sub.id.clone(),
            action: action.into(),
            key,
            event_kind: event.kind.as_str().into(),
            event_id: event.id.clone(),
            payload: serde_json::to_string(&Payload { event: event.clone(), comment }).expect("a payload serialises"),
        };
        if !matches!(sub.channel.as_str(), "github" | "gitlab" | "gitea") {
            out.push(new("send", None, None));
            continue;
        }
        let comments = match notifier.open(sub) {
            Ok(ChannelConfig::Forge { comments, .. }) => comments,
            _ => {
                tracing::warn!(subscription = %sub.id, "a forge subscription's settings cannot be read; skipped");
                continue;
            }
        };
        if let Some(commit) = &event.commit
            && matches!(
                event.kind,
                EventKind::BuildQueued
                    | EventKind::BuildStarted
                    | EventKind::BuildSucceeded
                    | EventKind::BuildFailed
                    | EventKind::BuildCancelled
            )
        {
            out.push(new("status", Some(format!("status:{commit}")), None));
        }
        if comments && comment_pr.is_none() {
            let merge = matches!(kind, EventKind::BuildSucceeded | EventKind::BuildFailed);
            comment_pr = Some(if merge { merged_pull_request(control, o).await } else { None });
        }
        if comments
            && let Some(Some(pr)) = comment_pr
            && matches!(
                event.kind,
                EventKind::BuildStarted
                    | EventKind::BuildSucceeded
                    | EventKind::BuildFailed
                    | EventKind::BuildCancelled
            )
        {
            if comment.is_none() {
                let body = match platform_plan_for(control, o, &event).await {
                    Some(plan) => chanto_notify::platform_comment(&event, plan.as_deref()),
                    None => {
                        let plan =
                            if event.kind == EventKind::BuildSucceeded { plan_for(control, o).await } else { None };
                        chanto_notify::pr_comment(&event, plan.as_ref())
                    }
                };
                comment = Some(Some(body));
            }
            let mut d = new("comment", Some(format!("pr:{pr}")), comment.clone().flatten());
            if event.pull_request.is_none() {
                // A merge build's comment goes to the pull request it applied.
                let mut on_pr = event.clone();
                on_pr.pull_request = Some(pr);
                d.payload = serde_json::to_string(&Payload { event: on_pr, comment: comment.clone().flatten() })
                    .expect("a payload serialises");
            }
            out.push(d);
        }
    }
    out
}

/// The event as subscribers see it: the outbox row, with what the build and deploy records add.
async fn event_for(control: &Control, notifier: &Notifier, o: &OutboxEvent, kind: EventKind) -> Event {
    // Certificate events carry the whole event, made by the control plane.
    if matches!(kind, EventKind::CertificateFailed | EventKind::CertificateExpiring)
        && let Some(event) = o.detail.as_deref().and_then(|d| serde_json::from_str::<Event>(d).ok())
        && event.kind == kind
    {
        return event;
    }
    let meta = &control.meta;
    let mut build: Option<BuildRecord> = match &o.build {
        Some(id) => meta.get_build(id).await.ok().flatten(),
        None => None,
    };
    let deploy_id = o.deploy.clone().or_else(|| build.as_ref().and_then(|b| b.deploy.clone()));
    let deploy = match &deploy_id {
        Some(id) => meta.get_deploy(id).await.ok().flatten(),
        None => None,
    };
    // A deploy event of a build's output (its source is "build <id>", recorded before it went live): the build
    // tells the commit and its author.
    if build.is_none()
        && let Some(id) = deploy.as_ref().and_then(|d| d.source.strip_prefix("build ")).and_then(|id| id.parse().ok())
    {
        build = meta.get_build(&id).await.ok().flatten();
    }
    let branch_url = branch_url(control, &o.site, &o.branch).await;
    let permalink = deploy_id.as_ref().map(|d| control.config.url_for(&format!("{d}--{}", o.site)));
    let log = build.as_ref().map(|b| format!("{}/api/v1/builds/{}/log", notifier.config.api_url, b.id));
    // A removed preview has no build to ask; its branch is `pr-<n>` (the store records the event only for previews).
    let pull_request = build.as_ref().and_then(|b| b.pull_request).or_else(|| {
        (kind == EventKind::PreviewRemoved).then(|| o.branch.strip_prefix("pr-").and_then(|n| n.parse().ok())).flatten()
    });
    let duration_ms = match (kind, &build) {
        (EventKind::BuildSucceeded | EventKind::BuildFailed | EventKind::BuildCancelled, Some(b)) => {
            b.finished_at.map(|f| (f - b.started_at.unwrap_or(b.created_at)).max(0) as u64)
        }
        _ => None,
    };
    let error = match kind {
        EventKind::BuildFailed | EventKind::BuildCancelled => build.as_ref().and_then(|b| b.error.clone()),
        EventKind::DeployRolledBack => o.detail.as_ref().map(|from| format!("rolled back from deploy {from}")),
        _ => None,
    };
    Event {
        id: format!("evt_{:08x}", o.seq),
        kind,
        at_ms: o.at,
        site: o.site.to_string(),
        branch: o.branch.clone(),
        commit: build.as_ref().and_then(|b| b.commit.clone()),
        build_id: build.as_ref().map(|b| b.id.to_string()),
        deploy_id: deploy_id.map(|d| d.to_string()),
        pull_request,
        urls: EventUrls { branch: (kind != EventKind::PreviewRemoved).then_some(branch_url), permalink, log },
        duration_ms,
        author: build.as_ref().and_then(|b| b.author.clone()),
        message: build
            .as_ref()
            .and_then(|b| b.message.clone().or_else(|| b.title.clone()))
            .or_else(|| deploy.and_then(|d| d.message)),
        error,
        from_fork: build.as_ref().is_some_and(|b| b.untrusted),
        domain: None,
        expires_at_ms: None,
        hint: None,
    }
}

async fn branch_url(control: &Control, site: &SiteName, branch: &str) -> String {
    let Ok(name) = branch.parse::<BranchName>() else { return control.config.url_for(site.as_str()) };
    let production = control.meta.get_site(site).await.ok().flatten().is_some_and(|s| s.production_branch == name);
    if production {
        return control.config.url_for(site.as_str());
    }
    let label = match control.meta.branch(site, &name).await {
        Ok(Some(b)) => b.label,
        _ => name.label(),
    };
    control.config.url_for(&format!("{label}--{site}"))
}

/// The pull request a platform config site's merge build applied, if it named one.
async fn merged_pull_request(control: &Control, o: &OutboxEvent) -> Option<u64> {
    let key = crate::builds::platform_build::merged_key(o.build.as_ref()?.as_str());
    let rows = control.meta.platform_state(Some(&o.site)).await.ok()?;
    rows.into_iter().find(|r| r.key == key).and_then(|r| r.value.parse().ok())
}

/// For a platform config site (its builds plan `chanto.platform.toml`), the
/// configuration plan its build of this event made, if it made one: `None`
/// for any other site.
async fn platform_plan_for(control: &Control, o: &OutboxEvent, event: &Event) -> Option<Option<String>> {
    let conn = control.meta.get_git(&o.site).await.ok()??;
    let settings: crate::builds::GitSettings = serde_json::from_str(&conn.settings).ok()?;
    settings.platform_config.as_ref()?;
    if event.kind != EventKind::BuildSucceeded {
        return Some(None);
    }
    let key = crate::builds::platform_build::plan_key(&o.branch);
    let rows = control.meta.platform_state(Some(&o.site)).await.unwrap_or_default();
    let stored = rows
        .into_iter()
        .find(|r| r.key == key)
        .and_then(|r| serde_json::from_str::<crate::builds::platform_build::StoredPlan>(&r.value).ok());
    // Only the plan of this event's build: an older or newer build's is not this comment's.
    Some(stored.filter(|p| event.build_id.as_deref() == Some(p.build.as_str())).map(|p| p.text))
}

/// The plan of a pull request's deploy against the production branch's live deploy.
async fn plan_for(control: &Control, o: &OutboxEvent) -> Option<DeployPlan> {
    let build = control.meta.get_build(o.build.as_ref()?).await.ok()??;
    let head = side(control, build.deploy.as_ref()?).await?;
    let site = control.meta.get_site(&o.site).await.ok()??;
    let production = control.meta.branch(&o.site, &site.production_branch).await.ok().flatten();
    let base = match production.and_then(|b| b.active_deploy) {
        Some(d) => Some(side(control, &d).await?),
        None => None,
    };
    Some(chanto_notify::deploy_plan(base.as_ref(), &head))
}

pub(crate) async fn side(control: &Control, deploy: &DeployId) -> Option<PlanSide> {
    side_and_warnings(control, deploy).await.map(|(side, _)| side)
}

/// A deploy's side of a plan and the warnings its rule files drew at
/// finalize (kept in its manifest), one line each.
pub(crate) async fn side_and_warnings(control: &Control, deploy: &DeployId) -> Option<(PlanSide, Vec<String>)> {
    let d = control.meta.get_deploy(deploy).await.ok()??;
    let bytes = control.blobs.get(&d.manifest?).await.ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    let files = manifest
        .files
        .iter()
        .map(|(path, e)| PlanFile { path: path.clone(), hash: e.hash.to_hex(), size: e.size })
        .collect();
    let warnings =
        manifest.rules.as_ref().map_or_else(Vec::new, |r| r.warnings.iter().map(|w| w.to_string()).collect());
    Some((PlanSide { files, rules: rule_lines(manifest.rules.as_ref()) }, warnings))
}

/// Each rule as one line, for the plan's rule diff. Passwords and their hashes never appear.
fn rule_lines(rules: Option<&chanto_rules::RuleSet>) -> Vec<String> {
    let Some(r) = rules else { return Vec::new() };
    let mut out = Vec::new();
    // Whose defaults it follows: a change of profile changes what paths mean.
    if let Some(p) = r.profile {
        let urls = if r.pretty_urls() { "pretty URLs" } else { "exact paths" };
        out.push(format!("defaults of {p} ({urls})"));
    }
    for x in &r.redirects {
        let host = x.host.as_deref().map(|h| format!("{h} ")).unwrap_or_default();
        let force = if x.force { "!" } else { "" };
        out.push(format!("redirect {host}{} {} {}{force}", x.from, x.to, x.status));
    }
    for h in &r.headers {
        for (name, value) in &h.headers {
            out.push(format!("header {} {name}: {value}", h.path));
        }
    }
    for a in &r.auth {
        let users: Vec<&str> = a.users.iter().map(|u| u.user.as_str()).collect();
        out.push(format!("password {} for {}", a.path, users.join(", ")));
    }
    if r.clean_urls {
        out.push("clean_urls on".into());
    }
    if let Some(t) = r.trailing_slash {
        out.push(format!("trailing_slash {t}"));
    }
    out
}
