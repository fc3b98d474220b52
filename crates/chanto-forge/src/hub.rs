//! GitHub's payloads, and Gitea/Forgejo's, which copy GitHub's shape (push, pull_request, delete, create).

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::payload::{Ctx, clone_urls, ignored, is_zero_commit, non_empty, preview, pushed_branch};
use crate::{Event, Forge, PrAction, WebhookError};

/// Parses a GitHub delivery whose `X-GitHub-Event` is `event`.
pub(crate) fn parse_github(event: &str, body: &[u8]) -> Result<Event, WebhookError> {
    let ctx = Ctx { forge: Forge::GitHub, event };
    match event {
        "push" => push(&ctx, body),
        "pull_request" => pull_request(&ctx, body),
        "delete" => delete(&ctx, body),
        "ping" => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(Event::Ping)
        }
        "create" => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored("GitHub `create` events are not acted on; the push that comes with a new branch is"))
        }
        other => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored(format!("GitHub `{other}` events are not acted on")))
        }
    }
}

/// Parses a Gitea/Forgejo delivery whose `X-Gitea-Event` (or `X-Forgejo-Event`) is `event`.
pub(crate) fn parse_gitea(event: &str, body: &[u8]) -> Result<Event, WebhookError> {
    let ctx = Ctx { forge: Forge::Gitea, event };
    match event {
        "push" => push(&ctx, body),
        "pull_request" => pull_request(&ctx, body),
        "delete" => delete(&ctx, body),
        "create" => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored("Gitea/Forgejo `create` events are not acted on; the push that comes with a new branch is"))
        }
        other => {
            ctx.decode::<IgnoredAny>(body)?;
            Ok(ignored(format!("Gitea/Forgejo `{other}` events are not acted on")))
        }
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    /// GitHub only; Gitea sends a `delete` event instead.
    deleted: Option<bool>,
    head_commit: Option<Commit>,
    commits: Option<Vec<Commit>>,
    pusher: Option<User>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Commit {
    id: Option<String>,
    message: Option<String>,
    author: Option<Person>,
}

/// A commit's author: GitHub and Gitea both give `name` (and `username` when it maps to an account).
#[derive(Deserialize)]
struct Person {
    name: Option<String>,
}

/// An account: GitHub's `pusher` has `name`; Gitea's users have `login` and `username`.
#[derive(Deserialize)]
struct User {
    login: Option<String>,
    username: Option<String>,
    name: Option<String>,
}

impl User {
    fn handle(&self) -> Option<String> {
        non_empty(self.login.as_deref())
            .or_else(|| non_empty(self.username.as_deref()))
            .or_else(|| non_empty(self.name.as_deref()))
    }
}

#[derive(Deserialize)]
struct Repository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
}

fn push(ctx: &Ctx<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    let push: Push = ctx.decode(body)?;
    let branch = match pushed_branch(ctx, &push.git_ref)? {
        Ok(branch) => branch,
        Err(ignored) => return Ok(ignored),
    };
    if push.deleted == Some(true) || is_zero_commit(&push.after) {
        return Ok(Event::BranchDeleted { branch });
    }
    let commit = ctx.commit("after", &push.after)?;
    let commits = push.commits.unwrap_or_default();
    let head = push.head_commit.as_ref().or_else(|| {
        commits.iter().find(|c| c.id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(&commit))).or(commits.last())
    });
    let message = head.and_then(|c| non_empty(c.message.as_deref()));
    let author = head
        .and_then(|c| c.author.as_ref())
        .and_then(|a| non_empty(a.name.as_deref()))
        .or_else(|| push.pusher.as_ref().and_then(User::handle));
    let clone_urls = push
        .repository
        .as_ref()
        .map(|r| clone_urls([r.clone_url.as_deref(), r.ssh_url.as_deref()]))
        .unwrap_or_default();
    Ok(Event::Push { branch, commit, message, author, clone_urls })
}

/// First pass over a pull request: only the action, so ignored actions need no other field.
#[derive(Deserialize)]
struct PullRequestAction {
    action: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    number: u64,
    pull_request: PullRequest,
}

#[derive(Deserialize)]
struct PullRequest {
    title: String,
    merged: Option<bool>,
    user: Option<User>,
    head: Side,
    base: Side,
}

/// One end of a pull request.
#[derive(Deserialize)]
struct Side {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    /// Gitea only.
    repo_id: Option<u64>,
    /// `null` on GitHub when the fork was deleted.
    repo: Option<RepositoryName>,
}

#[derive(Deserialize)]
struct RepositoryName {
    id: Option<u64>,
    full_name: Option<String>,
}

enum Kind {
    Opened,
    Updated,
    Closed,
}

fn pull_request(ctx: &Ctx<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    let PullRequestAction { action } = ctx.decode(body)?;
    let kind = match (ctx.forge, action.as_str()) {
        (_, "opened" | "reopened") => Kind::Opened,
        (Forge::GitHub, "synchronize") | (Forge::Gitea, "synchronized") => Kind::Updated,
        (_, "closed") => Kind::Closed,
        (_, other) => return Ok(ignored(format!("pull request action `{}` is not acted on", preview(other)))),
    };
    let event: PullRequestEvent = ctx.decode(body)?;
    let pr = event.pull_request;
    let action = match kind {
        Kind::Opened => PrAction::Opened,
        Kind::Updated => PrAction::Updated,
        Kind::Closed => PrAction::Closed { merged: pr.merged.unwrap_or(false) },
    };
    Ok(Event::PullRequest {
        number: ctx.number("number", event.number)?,
        action,
        head_branch: ctx.branch("pull_request.head.ref", &pr.head.git_ref)?,
        head_commit: ctx.commit("pull_request.head.sha", &pr.head.sha)?,
        base_branch: ctx.branch("pull_request.base.ref", &pr.base.git_ref)?,
        from_fork: from_fork(&pr.head, &pr.base),
        author: pr.user.as_ref().and_then(User::handle),
        title: pr.title,
    })
}

/// Whether head and base are different repositories; `true` when the payload cannot tell.
fn from_fork(head: &Side, base: &Side) -> bool {
    if let (Some(h), Some(b)) = (head.repo_id, base.repo_id)
        && h != 0
        && b != 0
    {
        return h != b;
    }
    let (Some(head), Some(base)) = (&head.repo, &base.repo) else { return true };
    match (head.id, base.id, &head.full_name, &base.full_name) {
        (Some(h), Some(b), _, _) => h != b,
        (_, _, Some(h), Some(b)) => !h.eq_ignore_ascii_case(b),
        _ => true,
    }
}

#[derive(Deserialize)]
struct Delete {
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
}

fn delete(ctx: &Ctx<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    let delete: Delete = ctx.decode(body)?;
    match delete.ref_type.as_str() {
        // `ref` is the bare branch name in delete events.
        "branch" => Ok(Event::BranchDeleted { branch: ctx.branch("ref", &delete.git_ref)? }),
        other => Ok(ignored(format!("deletion of a {} is not acted on; chanto deploys branches only", preview(other)))),
    }
}
