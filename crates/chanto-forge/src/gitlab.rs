//! GitLab's payloads: `Push Hook` and `Merge Request Hook`; every other hook is answered as ignored.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::payload::{Ctx, clone_urls, ignored, is_zero_commit, non_empty, preview, pushed_branch};
use crate::{Event, Forge, PrAction, WebhookError};

/// Parses a GitLab delivery whose `X-Gitlab-Event` is `event`.
pub(crate) fn parse(event: &str, body: &[u8]) -> Result<Event, WebhookError> {
    let ctx = Ctx { forge: Forge::GitLab, event };
    match event {
        "Push Hook" => push(&ctx, body),
        "Merge Request Hook" => merge_request(&ctx, body),
        "Tag Push Hook" => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored("GitLab tag pushes are not acted on; chanto deploys branches only"))
        }
        "System Hook" => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored("GitLab system hooks are not acted on; add a project webhook instead"))
        }
        other => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored(format!("GitLab `{other}` events are not acted on")))
        }
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    user_name: Option<String>,
    user_username: Option<String>,
    commits: Option<Vec<Commit>>,
    project: Option<Project>,
}

#[derive(Deserialize)]
struct Commit {
    id: Option<String>,
    message: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
}

fn push(ctx: &Ctx<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    let push: Push = ctx.decode(body)?;
    let branch = match pushed_branch(ctx, &push.git_ref)? {
        Ok(branch) => branch,
        Err(ignored) => return Ok(ignored),
    };
    if is_zero_commit(&push.after) {
        return Ok(Event::BranchDeleted { branch });
    }
    // `after` is the branch's new head; `checkout_sha` equals it for branch pushes, so it is not read.
    let commit = ctx.commit("after", &push.after)?;
    let commits = push.commits.unwrap_or_default();
    let head =
        commits.iter().find(|c| c.id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(&commit))).or(commits.last());
    let message = head.and_then(|c| non_empty(c.message.as_deref()));
    let author = head
        .and_then(|c| c.author.as_ref())
        .and_then(|a| non_empty(a.name.as_deref()))
        .or_else(|| non_empty(push.user_name.as_deref()))
        .or_else(|| non_empty(push.user_username.as_deref()));
    let clone_urls = push
        .project
        .as_ref()
        .map(|p| clone_urls([p.git_http_url.as_deref(), p.git_ssh_url.as_deref()]))
        .unwrap_or_default();
    Ok(Event::Push { branch, commit, message, author, clone_urls })
}

/// First pass over a merge request: only what decides whether chanto acts.
#[derive(Deserialize)]
struct MergeRequestAction {
    object_attributes: ActionAttributes,
}

#[derive(Deserialize)]
struct ActionAttributes {
    action: Option<String>,
    /// Present only when the update pushed commits.
    oldrev: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct MergeRequest {
    user: Option<User>,
    object_attributes: Attributes,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    iid: u64,
    title: String,
    source_branch: String,
    target_branch: String,
    last_commit: LastCommit,
    source_project_id: Option<u64>,
    target_project_id: Option<u64>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

fn merge_request(ctx: &Ctx<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    let MergeRequestAction { object_attributes: attrs } = ctx.decode(body)?;
    let Some(action) = attrs.action else {
        return Ok(ignored("merge request event without `object_attributes.action` is not acted on"));
    };
    let action = match action.as_str() {
        "open" | "reopen" => PrAction::Opened,
        "update" if attrs.oldrev.is_some() => PrAction::Updated,
        "update" => return Ok(ignored("merge request update without new commits is not acted on")),
        "close" => PrAction::Closed { merged: false },
        "merge" => PrAction::Closed { merged: true },
        other => return Ok(ignored(format!("merge request action `{}` is not acted on", preview(other)))),
    };
    let mr: MergeRequest = ctx.decode(body)?;
    let attrs = mr.object_attributes;
    Ok(Event::PullRequest {
        number: ctx.number("object_attributes.iid", attrs.iid)?,
        action,
        head_branch: ctx.branch("object_attributes.source_branch", &attrs.source_branch)?,
        head_commit: ctx.commit("object_attributes.last_commit.id", &attrs.last_commit.id)?,
        base_branch: ctx.branch("object_attributes.target_branch", &attrs.target_branch)?,
        title: attrs.title,
        author: mr.user.and_then(|u| non_empty(u.username.as_deref())),
        from_fork: match (attrs.source_project_id, attrs.target_project_id) {
            (Some(source), Some(target)) => source != target,
            _ => true,
        },
    })
}
