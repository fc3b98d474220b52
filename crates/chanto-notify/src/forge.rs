//! Forges (GitHub, GitLab, Gitea): the commit status for a build event, and the one pull-request comment chanto
//! keeps up to date with the preview links, the build result and the deploy plan against production.

use serde_json::{Map, Value};

use crate::text::{duration, first_line, one_line, safe_url, short_commit, truncate, units};
use crate::{DeployPlan, Event, EventKind, PlanChange};

/// Which forge an API body is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    /// GitHub (`POST /repos/{owner}/{repo}/statuses/{sha}`).
    GitHub,
    /// GitLab (`POST /projects/:id/statuses/:sha`).
    GitLab,
    /// Gitea and Forgejo (`POST /repos/{owner}/{repo}/statuses/{sha}`).
    Gitea,
}

/// The longest pull-request comment [`pr_comment`] renders, in UTF-16 units (never fewer than characters).
/// GitHub's limit is 65,536 characters; GitLab's is 1,000,000.
pub const COMMENT_MAX: usize = 65_000;

/// GitHub's (and, to be safe, Gitea's) limit on a commit status description.
const GITHUB_DESCRIPTION_MAX: usize = 140;
/// GitLab's limit on a commit status description.
const GITLAB_DESCRIPTION_MAX: usize = 255;
/// URLs longer than this are not linked from the comment (chanto's own URLs are far shorter).
const URL_MAX: usize = 2000;
/// The most files (and rule lines) listed per section of the comment before "… and N more".
const LIST_MAX: usize = 50;

/// The JSON body of a commit status for `e`, to `POST` to `forge`'s statuses endpoint; `context` names the status
/// (GitHub's and Gitea's `context`, GitLab's `name`), e.g. `chanto/blog`.
///
/// `None` when the event does not change a commit status: only build events do (deploy, preview and certificate
/// events never do). States: `build.queued` and
/// `build.started` are pending (GitLab: `pending` / `running`), `build.succeeded` success, `build.failed` failure
/// (GitLab: `failed`), `build.cancelled` error (GitLab: `canceled`).
///
/// The description is one line, within the forge's limit. The target URL is the deploy (permalink, else branch
/// URL) on success and the build log otherwise; it is left out when there is no `http(s)` one.
pub fn status_body(forge: ForgeKind, e: &Event, context: &str) -> Option<Value> {
    use EventKind::*;
    let state = match (forge, e.kind) {
        (ForgeKind::GitLab, BuildQueued) => "pending",
        (ForgeKind::GitLab, BuildStarted) => "running",
        (ForgeKind::GitLab, BuildFailed) => "failed",
        (ForgeKind::GitLab, BuildCancelled) => "canceled",
        (_, BuildQueued | BuildStarted) => "pending",
        (_, BuildSucceeded) => "success",
        (_, BuildFailed) => "failure",
        (_, BuildCancelled) => "error",
        // Certificates are a custom domain's, not a commit's: forges never hear of them.
        (
            _,
            DeployReady | DeployActivated | DeployRolledBack | PreviewReady | PreviewRemoved | CertificateFailed
            | CertificateExpiring,
        ) => return None,
    };
    let description = match e.kind {
        BuildQueued => "Queued…".to_owned(),
        BuildStarted => "Building…".to_owned(),
        // A build that deployed nothing (a platform config site's, which plans and applies) says so.
        BuildSucceeded => {
            let done = if e.deploy_id.is_some() { "Deployed" } else { "Succeeded" };
            match e.duration_ms {
                Some(ms) => format!("{done} in {}", duration(ms)),
                None => done.to_owned(),
            }
        }
        BuildFailed => match e.error.as_deref().and_then(error_line) {
            Some(line) => format!("Build failed: {line}"),
            None => "Build failed".to_owned(),
        },
        _ => "Cancelled".to_owned(),
    };
    let max = match forge {
        ForgeKind::GitLab => GITLAB_DESCRIPTION_MAX,
        ForgeKind::GitHub | ForgeKind::Gitea => GITHUB_DESCRIPTION_MAX,
    };
    let u = &e.urls;
    let urls = match e.kind {
        BuildSucceeded => [&u.permalink, &u.branch],
        _ => [&u.log, &None],
    };
    let target_url = urls.into_iter().find_map(|o| o.as_deref().and_then(safe_url));

    let mut body = Map::new();
    body.insert("state".into(), state.into());
    let name_key = if forge == ForgeKind::GitLab { "name" } else { "context" };
    body.insert(name_key.into(), context.into());
    body.insert("description".into(), truncate(&description, max).into());
    if let Some(url) = target_url {
        body.insert("target_url".into(), url.into());
    }
    Some(Value::Object(body))
}

/// The first non-blank line of an error, on one line.
fn error_line(error: &str) -> Option<String> {
    error.lines().map(|l| one_line(l).trim().to_owned()).find(|l| !l.is_empty())
}

/// The hidden marker that identifies chanto's comment for `site` on a pull request, so a restart that lost the
/// comment id finds and edits the comment instead of posting a second one: `<!-- chanto:preview site=blog -->`.
///
/// Site names are `[a-z0-9-]`; anything else is percent-encoded (as is the second `-` of `--`), so the mapping is
/// one-to-one and no site name can end the comment early or pose as another site's marker.
pub fn comment_marker(site: &str) -> String {
    let mut encoded = String::with_capacity(site.len());
    let mut prev_dash = false;
    for c in site.chars() {
        let dash = c == '-';
        if (c.is_ascii_lowercase() || c.is_ascii_digit() || dash) && !(dash && prev_dash) {
            encoded.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        // A `-` that was encoded ends the run, so `---` becomes `-%2D-`.
        prev_dash = dash && !prev_dash;
    }
    format!("<!-- chanto:preview site={encoded} -->")
}

/// The Markdown body of chanto's one comment on a pull request (or merge request), replaced on every push.
///
/// It starts with [`comment_marker`]; then the state for the site and branch, a table of links (preview,
/// permalink, log), the commit and the build time; the error on failure; and, when `plan` is given, the deploy
/// plan against production: counts, bytes, rule changes as a `diff` block and the files in a `<details>` section,
/// at most 50 per list.
///
/// All user-controlled text is escaped for GitHub/GitLab/Gitea Markdown: HTML and Markdown punctuation outside code,
/// backtick runs by longer fences inside, line breaks flattened, and `<!--` broken up everywhere so the marker
/// occurs exactly once. Only `http(s)` URLs are linked. The result is at most [`COMMENT_MAX`] UTF-16 units: lists
/// are shortened first, and only then is the text cut (which keeps the marker unless the site name alone is
/// thousands of characters long).
pub fn pr_comment(e: &Event, plan: Option<&DeployPlan>) -> String {
    let mut out = String::new();
    for limit in [LIST_MAX, 20, 10, 5, 1, 0] {
        out = render_comment(e, plan, limit);
        if units(&out) <= COMMENT_MAX {
            return out;
        }
    }
    truncate(&out, COMMENT_MAX)
}

/// The comment with at most `limit` entries per list.
fn render_comment(e: &Event, plan: Option<&DeployPlan>, limit: usize) -> String {
    let mut out = comment_marker(&e.site);
    out.push('\n');
    out.push_str(&format!(
        "**{}** for {} / {}\n",
        comment_heading(e.kind),
        md_text(&truncate(&e.site, 100)),
        md_text(&truncate(&e.branch, 100))
    ));

    let mut rows = Vec::new();
    let u = &e.urls;
    for (label, url) in [("Preview", &u.branch), ("Permalink", &u.permalink)] {
        if let Some(link) = url.as_deref().and_then(|url| md_link(url, &truncate(url, 100))) {
            rows.push((label, link));
        }
    }
    commit_rows(e, &mut rows);
    push_rows(&mut out, &rows);

    if e.from_fork {
        out.push_str(FORK_NOTE);
    }
    if let Some(line) = e.error.as_deref().and_then(error_line) {
        out.push_str(&format!("\n**Error:** {}\n", code_span(&truncate(&line, 500))));
    }

    if let Some(plan) = plan {
        render_plan(&mut out, plan, limit);
    }
    out
}

/// The commit (short id and subject), build time and log rows of a comment's table.
fn commit_rows(e: &Event, rows: &mut Vec<(&'static str, String)>) {
    let subject = e.message.as_deref().map(|m| truncate(first_line(m), 200)).filter(|s| !s.trim().is_empty());
    let commit = e.commit.as_deref().map(|c| {
        let short = short_commit(c);
        if !short.is_empty() && short.chars().all(|c| c.is_ascii_alphanumeric()) {
            format!("`{short}`")
        } else {
            md_text(short)
        }
    });
    match (commit, subject) {
        (Some(c), Some(s)) => rows.push(("Commit", format!("{c} {}", md_text(&s)))),
        (Some(c), None) => rows.push(("Commit", c)),
        (None, Some(s)) => rows.push(("Commit", md_text(&s))),
        (None, None) => {}
    }
    if let Some(ms) = e.duration_ms {
        rows.push(("Build time", duration(ms)));
    }
    if let Some(link) = e.urls.log.as_deref().and_then(|url| md_link(url, "Build log")) {
        rows.push(("Log", link));
    }
}

/// The table of a comment's rows.
fn push_rows(out: &mut String, rows: &[(&str, String)]) {
    if !rows.is_empty() {
        out.push_str("\n| | |\n|:--|:--|\n");
        for (label, value) in rows {
            out.push_str(&format!("| {label} | {value} |\n"));
        }
    }
}

/// The Markdown body of chanto's one comment on a pull request of a *platform config* site (one whose builds plan
/// `chanto.platform.toml` instead of deploying), replaced on every push: [`comment_marker`], the state, the commit,
/// build time and log; on failure every line of the error (for a configuration that does not parse, one
/// `file:line:column: message` per problem); and `plan`, the configuration's plan as `chanto plan` prints it, under
/// "Configuration plan" in a fenced block.
///
/// Escaped like [`pr_comment`]; the plan is cut (with a note) so the whole stays within [`COMMENT_MAX`] UTF-16 units.
pub fn platform_comment(e: &Event, plan: Option<&str>) -> String {
    // A build of the branch the pull request merged into (not its `pr-<n>`
    // preview branch) is the merge's: it applied.
    let merge = !e.branch.starts_with("pr-");
    let heading = match e.kind {
        EventKind::BuildQueued => "Queued…",
        EventKind::BuildStarted => "Planning…",
        EventKind::BuildSucceeded if merge => "Configuration applied",
        EventKind::BuildFailed if merge => "Configuration apply failed",
        EventKind::BuildSucceeded => "Configuration planned",
        EventKind::BuildFailed => "Configuration plan failed",
        EventKind::BuildCancelled => "Build cancelled",
        other => comment_heading(other),
    };
    let mut out = comment_marker(&e.site);
    out.push('\n');
    out.push_str(&format!(
        "**{heading}** for {} / {}\n",
        md_text(&truncate(&e.site, 100)),
        md_text(&truncate(&e.branch, 100))
    ));
    let mut rows = Vec::new();
    commit_rows(e, &mut rows);
    push_rows(&mut out, &rows);
    if e.from_fork {
        out.push_str("\n**From a fork:** planned only; a fork's pull request never applies.\n");
    }
    if let Some(error) = e.error.as_deref().filter(|s| !s.trim().is_empty()) {
        let lines: Vec<String> = error.lines().take(50).map(|l| truncate(&one_line(l), 500)).collect();
        let more = error.lines().count().saturating_sub(lines.len());
        out.push_str("\n**Error:**\n\n");
        out.push_str(&fenced(&lines.join("\n"), ""));
        if more > 0 {
            out.push_str(&format!("… and {more} more lines in the build log\n"));
        }
    }
    if let Some(plan) = plan {
        out.push_str(if merge { "\n### Configuration plan, applied\n\n" } else { "\n### Configuration plan\n\n" });
        // What the plan may take: the limit, less the rest, the fences and the note.
        let note = "\n… (cut; the build log has the whole plan)";
        let fence_len = 3.max(longest_backtick_run(plan) + 1);
        let room = COMMENT_MAX.saturating_sub(units(&out) + 2 * fence_len + 4 + units(note));
        let text = plan.trim_end();
        let text = if units(text) > room { format!("{}{note}", truncate(text, room)) } else { text.to_owned() };
        out.push_str(&fenced(&text, ""));
    }
    truncate(&out, COMMENT_MAX)
}

/// `text` verbatim in a fenced code block (control characters but line breaks made spaces, `<!--` broken up), the
/// fence longer than any backtick run inside.
fn fenced(text: &str, info: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).collect();
    let clean = defuse(&clean);
    let fence = "`".repeat(3.max(longest_backtick_run(&clean) + 1));
    format!("{fence}{info}\n{clean}\n{fence}\n")
}

/// What a pull request from a fork gets, said in its comment (README, "Git-driven builds").
const FORK_NOTE: &str = "\n**From a fork:** built in chanto's sandbox without the site's secret variables; \
the preview is served behind the site's previews password when it has one.\n";

/// The bold word(s) at the top of the comment.
fn comment_heading(kind: EventKind) -> &'static str {
    match kind {
        EventKind::BuildQueued => "Build queued",
        EventKind::BuildStarted => "Building…",
        EventKind::BuildSucceeded | EventKind::DeployReady | EventKind::DeployActivated | EventKind::PreviewReady => {
            "Preview ready"
        }
        EventKind::BuildFailed => "Build failed",
        EventKind::BuildCancelled => "Build cancelled",
        EventKind::DeployRolledBack => "Deploy rolled back",
        EventKind::PreviewRemoved => "Preview removed",
        // Never commented (the dispatcher comments on build events only); named for completeness.
        EventKind::CertificateFailed | EventKind::CertificateExpiring => kind.title(),
    }
}

/// Appends the "Deploy plan against production" section.
fn render_plan(out: &mut String, plan: &DeployPlan, limit: usize) {
    out.push_str("\n### Deploy plan against production\n\n");
    out.push_str(&format!(
        "{} added, {} changed, {} removed, {} unchanged · +{} / \u{2212}{}\n",
        plan.added.len(),
        plan.changed.len(),
        plan.removed.len(),
        plan.unchanged,
        human_bytes(plan.bytes_added),
        human_bytes(plan.bytes_removed)
    ));
    if plan.is_empty() {
        out.push_str("\nNo changes against production.\n");
        return;
    }

    let rule_changes = plan.rules_removed.len() + plan.rules_added.len();
    if rule_changes > 0 {
        let lines: Vec<String> = plan
            .rules_removed
            .iter()
            .map(|r| ('-', r))
            .chain(plan.rules_added.iter().map(|r| ('+', r)))
            .take(limit)
            .map(|(sign, r)| format!("{sign} {}", defuse(&one_line(&truncate(r, 200)))))
            .collect();
        // Every line starts with `+`, `-` or a space then `…`, so none can close the fence; a fence longer than any
        // backtick run is belt and braces.
        let fence = "`".repeat(3.max(lines.iter().map(|l| longest_backtick_run(l)).max().unwrap_or(0) + 1));
        out.push_str(&format!("\nRules ({rule_changes}):\n\n{fence}diff\n"));
        for line in &lines {
            out.push_str(line);
            out.push('\n');
        }
        if rule_changes > lines.len() {
            out.push_str(&format!("  … and {} more\n", rule_changes - lines.len()));
        }
        out.push_str(&fence);
        out.push('\n');
    }

    let touched = plan.files_touched();
    if touched > 0 {
        out.push_str(&format!("\n<details><summary>Files ({touched})</summary>\n"));
        for (title, files) in [("Added", &plan.added), ("Changed", &plan.changed), ("Removed", &plan.removed)] {
            if files.is_empty() {
                continue;
            }
            out.push_str(&format!("\n**{title} ({})**\n\n", files.len()));
            for f in files.iter().take(limit) {
                out.push_str(&format!("- {} ({})\n", code_span(&truncate(&f.path, 200)), sizes(f)));
            }
            if files.len() > limit {
                out.push_str(&format!("- … and {} more\n", files.len() - limit));
            }
        }
        out.push_str("\n</details>\n");
    }
}

/// `1.2 KB`, or `1.2 KB → 1.5 KB` for a changed file.
fn sizes(f: &PlanChange) -> String {
    match (f.old_size, f.new_size) {
        (Some(old), Some(new)) => format!("{} → {}", human_bytes(old), human_bytes(new)),
        (Some(size), None) | (None, Some(size)) => human_bytes(size),
        (None, None) => String::new(),
    }
}

/// A size in bytes for people: `999 B`, `1.5 KB`, `12.3 MB` (1 KB = 1000 B), one decimal, rounded half up.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut divisor = 1000u128;
    let mut unit = 0;
    loop {
        let tenths = (u128::from(bytes) * 10 + divisor / 2) / divisor;
        if tenths < 10_000 || unit == UNITS.len() - 1 {
            return format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit]);
        }
        divisor *= 1000;
        unit += 1;
    }
}

/// Escapes text for Markdown outside code, on one line: `&`, `<`, `>` become entities and every other ASCII
/// punctuation character is backslash-escaped (so no emphasis, links, table cell breaks, mentions or references;
/// `\|` is also how GFM tables take a literal pipe).
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Breaks up every `<!--` (with a zero-width space), in text shown verbatim, so user text can never carry a
/// comment marker.
fn defuse(s: &str) -> String {
    s.replace("<!--", "<!\u{200B}--")
}

/// The length of the longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A Markdown code span showing `s` verbatim on one line, fenced by more backticks than any run inside. Not for
/// table cells (a `|` inside would need escaping there).
fn code_span(s: &str) -> String {
    let content = defuse(&one_line(s));
    if content.is_empty() {
        return "` `".to_owned();
    }
    let fence = "`".repeat(longest_backtick_run(&content) + 1);
    // CommonMark strips one space from each end when both are there, and a backtick at an end would join the fence.
    let all_spaces = content.chars().all(|c| c == ' ');
    let pad = !all_spaces
        && (content.starts_with('`') || content.ends_with('`') || (content.starts_with(' ') && content.ends_with(' ')));
    let pad = if pad { " " } else { "" };
    format!("{fence}{pad}{content}{pad}{fence}")
}

/// A Markdown link to `url` if it is a safe `http(s)` URL of reasonable length: the text is escaped, and characters
/// that could end the destination or a table cell are percent-encoded (`&` as an entity, which Markdown decodes).
fn md_link(url: &str, text: &str) -> Option<String> {
    let url = safe_url(url).filter(|u| u.len() <= URL_MAX)?;
    let mut dest = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '(' => dest.push_str("%28"),
            ')' => dest.push_str("%29"),
            '<' => dest.push_str("%3C"),
            '>' => dest.push_str("%3E"),
            '|' => dest.push_str("%7C"),
            '"' => dest.push_str("%22"),
            '\'' => dest.push_str("%27"),
            '`' => dest.push_str("%60"),
            '\\' => dest.push_str("%5C"),
            '&' => dest.push_str("&amp;"),
            c => dest.push(c),
        }
    }
    Some(format!("[{}]({dest})", md_text(text)))
}

/// The repository path of a git remote URL, as forge APIs name it: `owner/repo`, or `group/sub/repo` on GitLab.
///
/// Understands `http(s)://`, `ssh://`, `git://` (with or without credentials and port) and scp-like
/// `git@host:owner/repo` remotes, with or without a trailing `/` or `.git`. `None` for `file://` URLs, local paths,
/// paths of fewer than two segments, `.` or `..` segments, and segments with characters other than ASCII letters,
/// digits, `-`, `_` and `.` (which no forge allows in names). GitLab's API wants the result percent-encoded.
pub fn parse_repo_path(url: &str) -> Option<String> {
    let url = url.trim();
    let path = if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git") {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        if authority.is_empty() {
            return None;
        }
        path.split(['?', '#']).next().unwrap_or("")
    } else {
        // scp-like `[user@]host:path`: git reads it so only when the colon comes before any slash.
        let (host, path) = url.split_once(':')?;
        let host_name = host.rsplit('@').next().unwrap_or("");
        // A one-letter "host" is a Windows drive (`C:\repo`), which git treats as a local path too.
        if host.contains('/') || host_name.len() < 2 || host.chars().any(|c| c.is_whitespace()) {
            return None;
        }
        path.strip_prefix('/').unwrap_or(path)
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let valid = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (segments.len() >= 2 && segments.iter().all(valid)).then(|| segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{event, hostile_failure};
    use crate::{EventUrls, PlanFile, PlanSide, deploy_plan};
    use proptest::prelude::*;
    use serde_json::json;

    const FORGES: [ForgeKind; 3] = [ForgeKind::GitHub, ForgeKind::GitLab, ForgeKind::Gitea];

    fn plan_of(n_added: usize, n_changed: usize, n_removed: usize) -> DeployPlan {
        let file = |p: String, h: &str, s| PlanFile { path: p, hash: h.into(), size: s };
        let mut base = PlanSide::default();
        let mut head = PlanSide::default();
        for i in 0..n_changed {
            base.files.push(file(format!("changed/{i}.html"), "a", 1000));
            head.files.push(file(format!("changed/{i}.html"), "b", 1500));
        }
        for i in 0..n_removed {
            base.files.push(file(format!("removed/{i}.css"), "r", 2000));
        }
        for i in 0..n_added {
            head.files.push(file(format!("added/{i}.js"), "n", 12_345));
        }
        base.files.push(file("same.txt".into(), "s", 1));
        head.files.push(file("same.txt".into(), "s", 1));
        deploy_plan(Some(&base), &head)
    }

    fn marker_count(s: &str) -> usize {
        s.matches("<!--").count()
    }

    #[test]
    fn status_states_for_every_kind_and_forge() {
        use EventKind::*;
        // (kind, GitHub, GitLab, Gitea)
        type States = [Option<&'static str>; 3];
        let cases: &[(EventKind, States)] = &[
            (BuildQueued, [Some("pending"), Some("pending"), Some("pending")]),
            (BuildStarted, [Some("pending"), Some("running"), Some("pending")]),
            (BuildSucceeded, [Some("success"), Some("success"), Some("success")]),
            (BuildFailed, [Some("failure"), Some("failed"), Some("failure")]),
            (BuildCancelled, [Some("error"), Some("canceled"), Some("error")]),
            (DeployReady, [None, None, None]),
            (DeployActivated, [None, None, None]),
            (DeployRolledBack, [None, None, None]),
            (PreviewReady, [None, None, None]),
            (PreviewRemoved, [None, None, None]),
            (CertificateFailed, [None, None, None]),
            (CertificateExpiring, [None, None, None]),
        ];
        assert_eq!(cases.len(), EventKind::ALL.len());
        for (kind, states) in cases {
            for (forge, want) in FORGES.into_iter().zip(states) {
                let body = status_body(forge, &event(*kind), "chanto/blog");
                assert_eq!(body.as_ref().map(|b| b["state"].as_str().unwrap()), *want, "{kind} {forge:?}");
                if let Some(body) = body {
                    let name_key = if forge == ForgeKind::GitLab { "name" } else { "context" };
                    assert_eq!(body[name_key], "chanto/blog");
                    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
                }
            }
        }
    }

    #[test]
    fn a_fork_pull_requests_comment_says_how_it_was_built() {
        let own = Event { pull_request: Some(7), branch: "pr-7".into(), ..event(EventKind::PreviewReady) };
        let fork = Event { from_fork: true, ..own.clone() };
        assert!(!pr_comment(&own, None).contains("From a fork"));
        let text = pr_comment(&fork, None);
        assert!(
            text.contains("**From a fork:** built in chanto's sandbox without the site's secret variables")
                && text.contains("behind the site's previews password"),
            "{text}"
        );
    }

    #[test]
    fn status_exact_bodies() {
        let log = "https://chanto.example.org/sites/blog/builds/b_42/log";
        assert_eq!(
            status_body(ForgeKind::GitHub, &event(EventKind::BuildSucceeded), "chanto/blog").unwrap(),
            json!({
                "state": "success",
                "target_url": "https://d-7.blog.example.org/",
                "description": "Deployed in 1 min 02 s",
                "context": "chanto/blog",
            })
        );
        assert_eq!(
            status_body(ForgeKind::GitLab, &event(EventKind::BuildStarted), "chanto").unwrap(),
            json!({ "state": "running", "target_url": log, "description": "Building…", "name": "chanto" })
        );
        assert_eq!(
            status_body(ForgeKind::Gitea, &event(EventKind::BuildQueued), "c").unwrap(),
            json!({ "state": "pending", "target_url": log, "description": "Queued…", "context": "c" })
        );
        let mut e = event(EventKind::BuildFailed);
        e.error = Some("\n  \nError: module not found\nat foo.js:1".into());
        assert_eq!(
            status_body(ForgeKind::GitHub, &e, "c").unwrap(),
            json!({
                "state": "failure",
                "target_url": log,
                "description": "Build failed: Error: module not found",
                "context": "c",
            })
        );
        assert_eq!(
            status_body(ForgeKind::GitLab, &event(EventKind::BuildCancelled), "c").unwrap()["description"],
            "Cancelled"
        );
        let mut e = event(EventKind::BuildSucceeded);
        e.duration_ms = None;
        e.urls.permalink = None;
        let body = status_body(ForgeKind::Gitea, &e, "c").unwrap();
        assert_eq!(body["description"], "Deployed");
        assert_eq!(body["target_url"], "https://main.blog.example.org/");
        e.kind = EventKind::BuildFailed;
        e.error = None;
        assert_eq!(status_body(ForgeKind::Gitea, &e, "c").unwrap()["description"], "Build failed");
    }

    #[test]
    fn status_description_limits_with_hostile_errors() {
        let mut e = hostile_failure();
        e.error = Some(format!("{}\u{1}\r😀{}\nsecond line", "é".repeat(300), "x".repeat(1000)));
        for (forge, max) in [(ForgeKind::GitHub, 140), (ForgeKind::Gitea, 140), (ForgeKind::GitLab, 255)] {
            let body = status_body(forge, &e, "c").unwrap();
            let d = body["description"].as_str().unwrap();
            assert!(units(d) <= max && d.chars().count() <= max, "{forge:?}: {}", d.len());
            assert!(d.starts_with("Build failed: éé") && d.ends_with('…'), "{d}");
            assert!(!d.contains(['\n', '\r', '\u{1}']), "{d:?}");
        }
        let body = status_body(ForgeKind::GitHub, &hostile_failure(), "c").unwrap();
        assert_eq!(body["description"], "Build failed: npm ERR! <b>exit 1</b> & ```");
    }

    #[test]
    fn status_drops_unsafe_target_urls() {
        let mut e = event(EventKind::BuildSucceeded);
        e.urls = EventUrls {
            branch: Some("https://main.blog.example.org/".into()),
            permalink: Some("javascript:alert(1)".into()),
            log: Some("https://log.example/".into()),
        };
        assert_eq!(status_body(ForgeKind::GitHub, &e, "c").unwrap()["target_url"], "https://main.blog.example.org/");
        e.urls.branch = Some("data:text/html,x".into());
        let body = status_body(ForgeKind::GitHub, &e, "c").unwrap();
        assert!(body.get("target_url").is_none(), "{body}");
        e.kind = EventKind::BuildFailed;
        e.urls.log = Some("https://exa mple/".into());
        for forge in FORGES {
            let body = status_body(forge, &e, "c").unwrap();
            assert!(body.get("target_url").is_none(), "{body}");
        }
    }

    #[test]
    fn marker_table() {
        let cases: &[(&str, &str)] = &[
            ("blog", "<!-- chanto:preview site=blog -->"),
            ("my-site-2", "<!-- chanto:preview site=my-site-2 -->"),
            ("a--b", "<!-- chanto:preview site=a-%2Db -->"),
            ("a---b", "<!-- chanto:preview site=a-%2D-b -->"),
            ("x -->", "<!-- chanto:preview site=x%20-%2D%3E -->"),
            ("Blog%", "<!-- chanto:preview site=%42log%25 -->"),
            ("é", "<!-- chanto:preview site=%C3%A9 -->"),
            ("", "<!-- chanto:preview site= -->"),
        ];
        for (site, want) in cases {
            assert_eq!(comment_marker(site), *want, "{site:?}");
        }
        let forged = comment_marker("x --><!-- chanto:preview site=y -->");
        assert_eq!(marker_count(&forged), 1, "{forged}");
        assert_eq!(forged.matches("-->").count(), 1, "{forged}");
    }

    #[test]
    fn comment_for_a_ready_preview() {
        let mut e = event(EventKind::PreviewReady);
        e.pull_request = Some(12);
        let c = pr_comment(&e, None);
        assert_eq!(
            c,
            "<!-- chanto:preview site=blog -->\n\
             **Preview ready** for blog / main\n\
             \n\
             | | |\n\
             |:--|:--|\n\
             | Preview | [https\\:\\/\\/main\\.blog\\.example\\.org\\/](https://main.blog.example.org/) |\n\
             | Permalink | [https\\:\\/\\/d\\-7\\.blog\\.example\\.org\\/](https://d-7.blog.example.org/) |\n\
             | Commit | `0123456` Fix typo in about page |\n\
             | Build time | 1 min 02 s |\n\
             | Log | [Build log](https://chanto.example.org/sites/blog/builds/b_42/log) |\n"
        );
    }

    #[test]
    fn comment_headings() {
        let cases = [
            (EventKind::BuildQueued, "**Build queued**"),
            (EventKind::BuildStarted, "**Building…**"),
            (EventKind::BuildSucceeded, "**Preview ready**"),
            (EventKind::BuildFailed, "**Build failed**"),
            (EventKind::BuildCancelled, "**Build cancelled**"),
            (EventKind::PreviewRemoved, "**Preview removed**"),
        ];
        for (kind, want) in cases {
            let c = pr_comment(&event(kind), None);
            assert_eq!(c.lines().nth(1).unwrap(), format!("{want} for blog / main"), "{kind}");
        }
    }

    #[test]
    fn comment_escapes_hostile_text() {
        let c = pr_comment(&hostile_failure(), None);
        assert!(c.starts_with("<!-- chanto:preview site=blog -->\n**Build failed**"), "{c}");
        assert!(!c.contains("<script") && !c.contains("<!channel"), "{c}");
        assert!(c.contains("&lt;script&gt;alert\\(1\\)&lt;\\/script&gt; &amp; &lt;\\!channel&gt; \\@everyone"), "{c}");
        assert!(!c.contains("[click](https://evil.example)"), "{c}");
        // The error is shown verbatim in a code span fenced by more backticks than it contains.
        assert!(c.contains("\n**Error:** ```` npm ERR! <b>exit 1</b> & ``` ````\n"), "{c}");
        assert_eq!(marker_count(&c), 1);
    }

    #[test]
    fn comment_marker_cannot_be_forged() {
        let forged = "<!-- chanto:preview site=blog -->";
        let mut e = hostile_failure();
        e.message = Some(format!("{forged} msg"));
        e.error = Some(format!("{forged} `err`"));
        e.branch = forged.into();
        e.urls.log = Some(format!("https://x.example/{forged}"));
        e.urls.branch = Some("https://x.example/<!--".into());
        let plan = DeployPlan {
            added: vec![PlanChange { path: forged.into(), old_size: None, new_size: Some(1) }],
            rules_added: vec![forged.into(), "x\n<!-- chanto:preview site=blog -->".into()],
            ..DeployPlan::default()
        };
        let c = pr_comment(&e, Some(&plan));
        assert!(c.starts_with(&comment_marker("blog")), "{c}");
        assert_eq!(c.matches(&comment_marker("blog")).count(), 1, "{c}");
        assert_eq!(marker_count(&c), 1, "{c}");
    }

    #[test]
    fn comment_table_rows_survive_pipes_and_newlines() {
        let mut e = event(EventKind::BuildSucceeded);
        e.message = Some("a | b \\| c\r| d".into());
        e.commit = Some("ab|cd\nef12".into());
        e.urls.branch = Some("https://x.example/a|b)c(d\"e'f`g\\h&i".into());
        let c = pr_comment(&e, None);
        let rows: Vec<&str> = c.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 2 + 5, "{c}");
        for row in &rows[2..] {
            // Unescaped pipes: the two borders and the separator.
            let bare = row.replace("\\\\", "").replace("\\|", "");
            assert_eq!(bare.matches('|').count(), 3, "{row}");
        }
        assert!(c.contains("| Commit | ab\\|cd e a \\| b \\\\\\| c \\| d |\n"), "{c}");
        assert!(
            c.contains("(https://x.example/a%7Cb%29c%28d%22e%27f%60g%5Ch&amp;i)"),
            "destination must be percent-encoded: {c}"
        );
    }

    #[test]
    fn comment_paths_stay_on_one_line() {
        let plan = DeployPlan {
            added: vec![
                PlanChange { path: "a|b\n# heading\n</details>".into(), old_size: None, new_size: Some(1) },
                PlanChange { path: "``tick`".into(), old_size: None, new_size: Some(2) },
                PlanChange { path: " spaced ".into(), old_size: None, new_size: Some(3) },
            ],
            ..DeployPlan::default()
        };
        let c = pr_comment(&event(EventKind::BuildSucceeded), Some(&plan));
        assert!(c.contains("\n- `a|b # heading </details>` (1 B)\n"), "{c}");
        assert!(c.contains("\n- ``` ``tick` ``` (2 B)\n"), "{c}");
        assert!(c.contains("\n- `  spaced  ` (3 B)\n"), "{c}");
        assert!(!c.contains("\n# heading"), "{c}");
        assert_eq!(c.matches("</details>").count(), 2, "one in a code span, one closing: {c}");
        assert!(c.ends_with("\n</details>\n"), "{c}");
    }

    #[test]
    fn comment_plan_section() {
        let mut plan = plan_of(3, 1, 2);
        plan.rules_added = vec!["redirect /new /x 301".into()];
        plan.rules_removed = vec!["header /* X: ```".into()];
        let c = pr_comment(&event(EventKind::BuildSucceeded), Some(&plan));
        let section = c.split_once("\n### Deploy plan against production\n\n").unwrap().1;
        assert_eq!(
            section,
            "3 added, 1 changed, 2 removed, 1 unchanged · +37.5 KB / \u{2212}4.0 KB\n\
             \n\
             Rules (2):\n\
             \n\
             ````diff\n\
             - header /* X: ```\n\
             + redirect /new /x 301\n\
             ````\n\
             \n\
             <details><summary>Files (6)</summary>\n\
             \n\
             **Added (3)**\n\
             \n\
             - `added/0.js` (12.3 KB)\n\
             - `added/1.js` (12.3 KB)\n\
             - `added/2.js` (12.3 KB)\n\
             \n\
             **Changed (1)**\n\
             \n\
             - `changed/0.html` (1.0 KB → 1.5 KB)\n\
             \n\
             **Removed (2)**\n\
             \n\
             - `removed/0.css` (2.0 KB)\n\
             - `removed/1.css` (2.0 KB)\n\
             \n\
             </details>\n"
        );
        let c = pr_comment(&event(EventKind::BuildSucceeded), Some(&plan_of(0, 0, 0)));
        assert!(
            c.ends_with(
                "0 added, 0 changed, 0 removed, 1 unchanged · +0 B / \u{2212}0 B\n\nNo changes against production.\n"
            ),
            "{c}"
        );
    }

    #[test]
    fn comment_lists_at_most_fifty() {
        let mut plan = plan_of(120, 50, 51);
        plan.rules_added = (0..70).map(|i| format!("redirect /{i} /x")).collect();
        let c = pr_comment(&event(EventKind::BuildSucceeded), Some(&plan));
        assert_eq!(c.matches("\n- `added/").count(), 50, "{c}");
        assert_eq!(c.matches("\n- `changed/").count(), 50, "{c}");
        assert_eq!(c.matches("\n- `removed/").count(), 50, "{c}");
        assert!(c.contains("- `added/35.js` (12.3 KB)\n- … and 70 more\n"), "{c}");
        assert!(c.contains("- … and 1 more\n\n</details>"), "{c}");
        assert!(!c.contains("and 0 more"), "{c}");
        assert!(c.contains("+ redirect /49 /x\n  … and 20 more\n```\n"), "{c}");
    }

    #[test]
    fn long_plans_are_shortened_under_the_limit() {
        let n = 100_000;
        let ticks =
            |i: usize| PlanChange { path: format!("{}{i}", "`".repeat(199)), old_size: None, new_size: Some(1) };
        let plan = DeployPlan {
            added: (0..n).map(ticks).collect(),
            changed: (0..n).map(ticks).collect(),
            removed: (0..n).map(ticks).collect(),
            rules_added: (0..10_000).map(|i| format!("{}<!-- {i}", "`".repeat(300))).collect(),
            ..DeployPlan::default()
        };
        let c = pr_comment(&hostile_failure(), Some(&plan));
        assert!(units(&c) <= COMMENT_MAX, "{}", units(&c));
        assert!(c.starts_with(&comment_marker("blog")));
        assert_eq!(marker_count(&c), 1);
        assert_eq!(c.matches(&format!("- … and {} more\n", n - 20)).count(), 3, "lists shortened to 20");
        assert!(c.contains(&format!("  … and {} more\n", 10_000 - 20)), "rules shortened to 20");
        assert!(c.ends_with("</details>\n"), "not cut: {}", &c[c.len() - 200..]);
        assert!(c.contains("**Error:**"));

        // Only a giant site name forces a hard cut, which still keeps the marker.
        let mut e = event(EventKind::BuildSucceeded);
        e.site = "a".repeat(64_900);
        let c = pr_comment(&e, Some(&plan));
        assert!(units(&c) <= COMMENT_MAX);
        assert!(c.starts_with(&comment_marker(&e.site)));
        assert!(c.ends_with('…'));
    }

    #[test]
    fn comment_drops_unsafe_links() {
        let mut e = event(EventKind::BuildSucceeded);
        e.urls = EventUrls {
            branch: Some("javascript:alert(1)".into()),
            permalink: Some(format!("https://x.example/{}", "a".repeat(3000))),
            log: Some("ftp://x.example/log".into()),
        };
        let c = pr_comment(&e, None);
        assert!(!c.contains("javascript") && !c.contains("ftp:") && !c.contains("aaaa"), "{c}");
        assert!(!c.contains("| Preview |") && !c.contains("| Permalink |") && !c.contains("| Log |"), "{c}");
    }

    #[test]
    fn human_bytes_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (999, "999 B"),
            (1000, "1.0 KB"),
            (1049, "1.0 KB"),
            (1050, "1.1 KB"),
            (999_949, "999.9 KB"),
            (999_950, "1.0 MB"),
            (12_345_678, "12.3 MB"),
            (5_000_000_000, "5.0 GB"),
            (u64::MAX, "18446744.1 TB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_bytes(*bytes), *want, "{bytes}");
        }
    }

    #[test]
    fn code_span_table() {
        let cases: &[(&str, &str)] = &[
            ("a", "`a`"),
            ("a`b", "``a`b``"),
            ("`a", "`` `a ``"),
            ("a``", "``` a`` ```"),
            (" a ", "`  a  `"),
            ("  ", "`  `"),
            ("", "` `"),
            ("x\ny", "`x y`"),
            ("<!--", "`<!\u{200B}--`"),
        ];
        for (s, want) in cases {
            assert_eq!(code_span(s), *want, "{s:?}");
        }
    }

    #[test]
    fn parse_repo_path_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://github.com/owner/repo.git", Some("owner/repo")),
            ("https://github.com/owner/repo", Some("owner/repo")),
            ("https://github.com/owner/repo/", Some("owner/repo")),
            ("https://github.com/owner/repo.git/", Some("owner/repo")),
            ("https://gitlab.com/group/sub/repo", Some("group/sub/repo")),
            ("https://user:token@gitlab.example:8443/group/sub/repo.git", Some("group/sub/repo")),
            ("http://gitea.local/o/r?x=1#frag", Some("o/r")),
            ("ssh://git@host:22/owner/repo.git", Some("owner/repo")),
            ("ssh://host/owner/my.repo", Some("owner/my.repo")),
            ("git://host/owner/repo", Some("owner/repo")),
            ("git@github.com:owner/repo.git", Some("owner/repo")),
            ("git@github.com:owner/repo", Some("owner/repo")),
            ("git@host:/owner/repo.git/", Some("owner/repo")),
            ("host.example:group/sub/repo_1", Some("group/sub/repo_1")),
            ("  https://github.com/Owner/Repo-1  ", Some("Owner/Repo-1")),
            ("file:///srv/git/owner/repo.git", None),
            ("/srv/git/owner/repo.git", None),
            ("./owner/repo", None),
            ("../owner/repo", None),
            ("C:\\repos\\owner\\repo", None),
            ("C:/repos/owner/repo", None),
            ("", None),
            ("https://github.com", None),
            ("https://github.com/", None),
            ("https://github.com/owner", None),
            ("https:///owner/repo", None),
            ("https://github.com//owner/repo", None),
            ("https://github.com/owner/../repo", None),
            ("https://github.com/owner/./repo", None),
            ("git@host:owner/..", None),
            ("https://github.com/owner/%2e%2e", None),
            ("https://github.com/own er/repo", None),
            ("ftp://host/owner/repo", None),
            ("git@host:", None),
            ("git@host:owner/repo/.git", None),
        ];
        for (url, want) in cases {
            assert_eq!(parse_repo_path(url).as_deref(), *want, "{url:?}");
        }
    }

    fn arb_change() -> impl Strategy<Value = PlanChange> {
        ("\\PC{0,40}|<!--|`+|\\|", proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()))
            .prop_map(|(path, old_size, new_size)| PlanChange { path, old_size, new_size })
    }

    proptest! {
        #[test]
        fn comment_is_bounded_and_starts_with_its_marker(
            site in "[a-z0-9-]{0,20}|\\PC{0,20}",
            branch in "\\PC{0,300}",
            message in proptest::option::of("\\PC{0,300}"),
            error in proptest::option::of("(\\PC|\n|`|<!--){0,300}"),
            kind in proptest::sample::select(EventKind::ALL.to_vec()),
            changes in proptest::collection::vec(arb_change(), 0..200),
            rules in proptest::collection::vec("\\PC{0,60}|<!--|`{3,5}", 0..80),
            repeat in 1usize..400,
            with_plan in any::<bool>(),
        ) {
            let mut e = event(kind);
            e.site = site;
            e.branch = branch;
            e.message = message;
            e.error = error;
            // Repeat the lists to reach well past the limit in some cases.
            let changes: Vec<PlanChange> = changes.iter().cycle().take(changes.len() * repeat).cloned().collect();
            let third = changes.len() / 3;
            let plan = DeployPlan {
                added: changes[..third].to_vec(),
                changed: changes[third..2 * third].to_vec(),
                removed: changes[2 * third..].to_vec(),
                unchanged: 7,
                bytes_added: 1,
                bytes_removed: 2,
                rules_added: rules.clone(),
                rules_removed: rules,
            };
            let c = pr_comment(&e, with_plan.then_some(&plan));
            prop_assert!(units(&c) <= COMMENT_MAX);
            prop_assert!(c.starts_with(&comment_marker(&e.site)));
            prop_assert_eq!(marker_count(&c), 1);
        }
    }

    #[test]
    fn a_platform_comment_shows_the_configuration_plan_fenced() {
        let plan = "chanto will make these changes:\n\n  + site.docs\n      keep_deploys = 3\n\nPlan: 1 to add, 0 to change, 0 to destroy.\n";
        let e = Event { pull_request: Some(7), branch: "pr-7".into(), ..event(EventKind::BuildSucceeded) };
        let body = platform_comment(&e, Some(plan));
        assert!(body.starts_with(&comment_marker("blog")), "{body}");
        assert_eq!(marker_count(&body), 1);
        assert!(body.contains("**Configuration planned** for blog / pr\\-7"), "{body}");
        assert!(body.contains("### Configuration plan\n\n```\nchanto will make these changes:"), "{body}");
        assert!(body.contains("  + site.docs\n      keep_deploys = 3\n"), "{body}");
        assert!(body.contains("`0123456`") && body.contains("Build log"), "{body}");
        assert!(!body.contains("Deploy plan") && !body.contains("Preview"), "{body}");

        // A failure shows every file:line:column line.
        let failed = Event {
            error: Some("chanto.platform.toml:3:16: site.docs.keep_deploys: expected an integer\nchanto.platform.toml:9:1: unknown key".into()),
            ..Event { kind: EventKind::BuildFailed, ..e.clone() }
        };
        let body = platform_comment(&failed, None);
        assert!(body.contains("**Configuration plan failed**"), "{body}");
        assert!(
            body.contains("chanto.platform.toml:3:16: site.docs.keep_deploys")
                && body.contains("chanto.platform.toml:9:1:"),
            "{body}"
        );
        assert!(!body.contains("### Configuration plan\n"), "{body}");
        assert!(
            platform_comment(&Event { kind: EventKind::BuildStarted, ..e.clone() }, None).contains("**Planning…**")
        );
        // Its commit status says it succeeded, not that it deployed.
        let status = status_body(ForgeKind::GitHub, &Event { deploy_id: None, ..e.clone() }, "chanto/blog").unwrap();
        assert_eq!(status["description"], "Succeeded in 1 min 02 s");
    }

    #[test]
    fn a_platform_comment_cannot_be_broken_out_of_and_stays_within_the_limit() {
        let e = Event { pull_request: Some(7), ..hostile_failure() };
        let hostile = "```\n<!-- chanto:preview site=other -->\n````` @everyone <script>";
        let body = platform_comment(&e, Some(hostile));
        assert_eq!(marker_count(&body), 1, "{body}");
        assert!(body.contains("``````\n```\n<!\u{200B}-- chanto:preview"), "a fence longer than any run: {body}");
        let huge = "  + site.x\n".repeat(20_000);
        let body = platform_comment(&Event { error: None, ..e }, Some(&huge));
        assert!(units(&body) <= COMMENT_MAX, "{}", units(&body));
        assert!(body.trim_end().ends_with("whole plan)\n```"), "closed after the note: {}", &body[body.len() - 200..]);
    }
}
