//! What it takes to go from the live configuration to the desired one: a
//! list of changes to resources, each with its field-level before → after,
//! secrets masked. Pure: the caller reads the live state, resolves secret
//! references and fingerprints their values; [`plan`] only compares.
//!
//! **Secrets.** A secret field is equal on both sides when its reference is
//! the same and, if both sides have a fingerprint for it, the fingerprints
//! are the same. Fingerprints are opaque strings keyed by
//! [`SecretUse::key`]; equal strings mean the same value. The caller makes
//! them so that they can be stored in a plan file without revealing the
//! value (a keyed hash, e.g. BLAKE3 keyed from the server's sealing key) —
//! for a password the live side holds only an argon2id hash, so the caller
//! gives the live fingerprint equal to the desired one exactly when the
//! hash verifies the resolved password. A side without a fingerprint
//! compares by reference alone. Values and fingerprints never appear in
//! the plan's text or its `--json` form; a saved plan keeps the desired
//! fingerprints so apply can refuse when a value changed after planning.

use std::collections::BTreeMap;
use std::fmt::Write;

use chanto_core::SiteName;
use serde::{Deserialize, Serialize};

use super::model::{self, *};

/// The version of the plan formats (`--json` and saved plans).
pub const FORMAT_VERSION: u32 = 1;

/// What the caller knows beyond the two configurations.
#[derive(Debug, Clone, Default)]
pub struct PlanInputs {
    /// The live version of each resource (`updated_at`, a row version…),
    /// by address; a live resource without its own falls back to its
    /// site's (`site.NAME`), one to create has none. Recorded in the plan so apply can refuse when
    /// something it touches changed since.
    pub versions: BTreeMap<String, String>,
    /// Fingerprints of the live secrets' values, by [`SecretUse::key`].
    pub live_fingerprints: BTreeMap<String, String>,
    /// Fingerprints of the desired secrets' resolved values, by [`SecretUse::key`].
    pub desired_fingerprints: BTreeMap<String, String>,
}

/// What a change does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It does not exist yet.
    Create,
    /// Some of its fields change.
    Update,
    /// It goes away (with everything under it, for a site).
    Destroy,
}

impl Action {
    fn symbol(self) -> char {
        match self {
            Self::Create => '+',
            Self::Update => '~',
            Self::Destroy => '-',
        }
    }
}

/// One field's before and after, as the file would write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field, relative to the resource (`keep_deploys`, `https.redirect`, `users["ann"]`).
    pub field: String,
    /// Its value before (`null`: absent); `(sensitive)` for a secret.
    pub before: Option<String>,
    /// Its value after (`null`: absent); `(sensitive)` for a secret.
    pub after: Option<String>,
    /// Whether the value is a secret (then before and after are masked).
    pub sensitive: bool,
    /// For a secret: what changed (`reference env:A -> env:B`, `value behind env:A changed`).
    pub note: Option<String>,
}

/// One resource's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `site.docs`, `site.docs.git`, `site.docs.env["API_KEY"]`,
    /// `site.docs.branch["qa"].env["X"]`, `site.docs.access["previews"]`,
    /// `site.docs.domain["www.example.com"]`, `site.docs.notify["slack-main"]`.
    pub address: String,
    /// Its site.
    pub site: String,
    /// What happens to it.
    pub action: Action,
    /// The live version the plan read (`null`: none given, or it did not exist).
    pub version: Option<String>,
    /// A destroy: apply refuses it without `--allow-destroy`.
    pub requires_allow_destroy: bool,
    /// The fields that differ (every field set, for a create or destroy).
    pub fields: Vec<FieldChange>,
}

/// How many changes of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates.
    pub add: usize,
    /// Updates.
    pub change: usize,
    /// Destroys.
    pub destroy: usize,
}

/// A plan: the changes in the order to apply them (per site: the site,
/// its git connection, variables, access policies, domains, subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The changes.
    pub changes: Vec<Change>,
    /// Their counts.
    pub summary: Summary,
}

/// One field's value, for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// Shown as written.
    Plain(String),
    /// Compared as written, shown masked (a password hash).
    Hidden(String),
    /// A reference, with the fingerprint of its value if known.
    Secret(String, Option<String>),
}

impl Value {
    fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Self::Secret(a, fa), Self::Secret(b, fb)) => a == b && (fa.is_none() || fb.is_none() || fa == fb),
            _ => self == other,
        }
    }

    fn sensitive(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    fn shown(&self) -> String {
        match self {
            Self::Plain(s) => s.clone(),
            _ => SENSITIVE.to_owned(),
        }
    }

    fn origin(&self) -> String {
        match self {
            Self::Secret(r, _) => r.clone(),
            Self::Hidden(_) => "an argon2id hash".into(),
            Self::Plain(_) => "a plain value".into(),
        }
    }
}

/// What a masked value is shown as.
pub const SENSITIVE: &str = "(sensitive)";

/// A resource's fields, in the order the file writes them.
#[derive(Debug, Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, name: String, value: Value) {
        self.0.push((name, value));
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn names(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(n, _)| n)
    }
}

/// Orders resources within a site: the order apply must follow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    site: SiteName,
    rank: u8,
    address: String,
}

/// The plan that turns `live` into `desired`.
pub fn plan(live: &PlatformConfig, desired: &PlatformConfig, inputs: &PlanInputs) -> Plan {
    let before = resources(live, &inputs.live_fingerprints);
    let after = resources(desired, &inputs.desired_fingerprints);
    let mut slots: Vec<&Slot> = before.keys().chain(after.keys()).collect();
    slots.sort();
    slots.dedup();
    let mut changes = Vec::new();
    for slot in slots {
        let (b, a) = (before.get(slot), after.get(slot));
        let action = match (b, a) {
            (None, Some(_)) => Action::Create,
            (Some(_), None) => Action::Destroy,
            _ => Action::Update,
        };
        // A destroyed site takes everything under it: one change says so.
        if action == Action::Destroy && slot.rank > 0 && !desired.sites.contains_key(&slot.site) {
            continue;
        }
        let empty = Fields::new();
        let (b, a) = (b.unwrap_or(&empty), a.unwrap_or(&empty));
        let mut names: Vec<&String> = Vec::new();
        for name in a.names().chain(b.names()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let fields: Vec<FieldChange> =
            names.into_iter().filter_map(|name| field_change(name, b.get(name), a.get(name))).collect();
        if action == Action::Update && fields.is_empty() {
            continue;
        }
        let site_address = model::address::site(&slot.site);
        // A resource to create has no version: one made meanwhile turns the
        // create into an update, which apply refuses as a change.
        let version = match action {
            Action::Create => None,
            _ => inputs.versions.get(&slot.address).or_else(|| inputs.versions.get(&site_address)).cloned(),
        };
        changes.push(Change {
            address: slot.address.clone(),
            site: slot.site.to_string(),
            action,
            version,
            requires_allow_destroy: action == Action::Destroy,
            fields,
        });
    }
    let count = |want: Action| changes.iter().filter(|c| c.action == want).count();
    let summary =
        Summary { add: count(Action::Create), change: count(Action::Update), destroy: count(Action::Destroy) };
    Plan { format_version: FORMAT_VERSION, changes, summary }
}

/// A version of every resource of `live`, by address: a hash of its
/// fields as a plan compares them (secrets by their fingerprints), so any
/// change to a resource between a plan and its apply changes its version.
/// For stores that keep no version of their own per resource.
pub fn content_versions(live: &PlatformConfig, fingerprints: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    resources(live, fingerprints)
        .into_iter()
        .map(|(slot, fields)| {
            let mut h = blake3::Hasher::new();
            for (name, value) in &fields.0 {
                h.update(format!("{name:?}={value:?};").as_bytes());
            }
            (slot.address, h.finalize().to_hex()[..16].to_owned())
        })
        .collect()
}

fn field_change(name: &str, b: Option<&Value>, a: Option<&Value>) -> Option<FieldChange> {
    if let (Some(b), Some(a)) = (b, a)
        && b.same(a)
    {
        return None;
    }
    let sensitive = b.is_some_and(Value::sensitive) || a.is_some_and(Value::sensitive);
    let note = match (b, a) {
        (Some(Value::Secret(rb, _)), Some(Value::Secret(ra, _))) if rb == ra => {
            Some(format!("value behind {ra} changed"))
        }
        (Some(b), Some(a)) if sensitive => Some(format!("{} -> {}", b.origin(), a.origin())),
        _ => None,
    };
    Some(FieldChange {
        field: name.to_owned(),
        before: b.map(Value::shown),
        after: a.map(Value::shown),
        sensitive,
        note,
    })
}

impl Plan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change destroys something (apply needs `--allow-destroy`).
    pub fn has_destroys(&self) -> bool {
        self.summary.destroy > 0
    }

    /// `chanto plan`'s exit code, as `terraform plan -detailed-exitcode`:
    /// 0 nothing to change, 2 changes (1, an error, is the caller's).
    pub fn exit_code(&self) -> i32 {
        if self.is_empty() { 0 } else { 2 }
    }

    /// The plan as `--json` prints it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises")
    }

    /// The plan for people, Terraform-style.
    pub fn render_text(&self) -> String {
        if self.is_empty() {
            return "No changes. The live configuration matches the file.\n".into();
        }
        let mut out = String::from("chanto will make these changes:\n");
        for c in &self.changes {
            let tail = if c.requires_allow_destroy { "  (needs --allow-destroy)" } else { "" };
            let _ = writeln!(out, "\n  {} {}{tail}", c.action.symbol(), c.address);
            let width = c.fields.iter().map(|f| f.field.chars().count()).max().unwrap_or(0);
            for f in &c.fields {
                let absent = || "(none)".to_owned();
                let value = match c.action {
                    Action::Create => format!("= {}", f.after.clone().unwrap_or_else(absent)),
                    Action::Destroy => format!("= {}", f.before.clone().unwrap_or_else(absent)),
                    Action::Update => format!(
                        "= {} -> {}",
                        f.before.clone().unwrap_or_else(absent),
                        f.after.clone().unwrap_or_else(absent)
                    ),
                };
                let note = f.note.as_ref().map(|n| format!("  # {n}")).unwrap_or_default();
                let _ = writeln!(out, "      {:width$} {value}{note}", f.field);
            }
        }
        let s = self.summary;
        let _ = writeln!(out, "\nPlan: {} to add, {} to change, {} to destroy.", s.add, s.change, s.destroy);
        out
    }
}

/// A plan saved with `--out`: the plan, the desired configuration it was
/// made from (as TOML, references and hashes as in the file), and the
/// fingerprints of the desired secrets, so apply can refuse when a resolved
/// value changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The plan.
    pub plan: Plan,
    /// The desired configuration, as [`super::render`] writes it.
    pub config: String,
    /// The desired secrets' fingerprints, by [`SecretUse::key`].
    pub fingerprints: BTreeMap<String, String>,
    /// Where `file:` references relative to the configuration resolve (the
    /// CLI records the configuration's directory when it saves the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// The only sites the plan covers (`chanto plan --site`); empty: every
    /// site, so a live site the configuration does not declare is destroyed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

impl SavedPlan {
    /// A plan to save, made from `desired`.
    pub fn new(plan: Plan, desired: &PlatformConfig, inputs: &PlanInputs) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            plan,
            config: super::render(desired),
            fingerprints: inputs.desired_fingerprints.clone(),
            directory: None,
            sites: Vec::new(),
        }
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a saved plan serialises")
    }

    /// Reads a saved plan, refusing another format version.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let saved: Self = serde_json::from_str(text).map_err(|e| format!("not a chanto plan file: {e}"))?;
        if saved.format_version != FORMAT_VERSION || saved.plan.format_version != FORMAT_VERSION {
            return Err(format!(
                "the plan file has format version {}; this chanto reads {FORMAT_VERSION}: make the plan again",
                saved.format_version
            ));
        }
        Ok(saved)
    }

    /// The desired configuration it carries.
    pub fn desired(&self) -> Result<PlatformConfig, super::ParseErrors> {
        super::parse("PLAN", &self.config)
    }

    /// What is left to apply of this plan, given `fresh`: the plan of
    /// [`SavedPlan::desired`] against the live state now, with the live
    /// versions and fingerprints of now and the desired values resolved now
    /// (`inputs_now`). A change already made (by an apply that stopped half
    /// way) is no longer in `fresh` and is skipped, so an apply can be run
    /// again. Anything else that differs refuses the whole plan, naming each
    /// resource: a version other than the one planned, a change the plan
    /// did not show, or a secret whose resolved value changed since.
    pub fn remaining(&self, fresh: &Plan, inputs_now: &PlanInputs) -> Result<Vec<Change>, Vec<String>> {
        let mut conflicts = Vec::new();
        for (key, fp) in &self.fingerprints {
            if inputs_now.desired_fingerprints.get(key) != Some(fp) {
                conflicts.push(format!("the secret of {key} resolves to another value than when the plan was made"));
            }
        }
        for key in inputs_now.desired_fingerprints.keys() {
            if !self.fingerprints.contains_key(key) {
                conflicts.push(format!("the secret of {key} was not resolved when the plan was made"));
            }
        }
        let mut left = Vec::new();
        for change in &fresh.changes {
            match self.plan.changes.iter().find(|c| c.address == change.address) {
                None => conflicts.push(format!("{} changed since the plan was made", change.address)),
                Some(planned) if planned.version != change.version => conflicts.push(format!(
                    "{} is at version {} now, not {} as planned",
                    change.address,
                    change.version.as_deref().unwrap_or("(none)"),
                    planned.version.as_deref().unwrap_or("(none)")
                )),
                Some(planned) if planned.action != change.action || planned.fields != change.fields => {
                    conflicts.push(format!("{} changed since the plan was made", change.address));
                }
                Some(_) => left.push(change.clone()),
            }
        }
        if conflicts.is_empty() {
            Ok(left)
        } else {
            conflicts.push("make the plan again (`chanto plan --out`) and review it".into());
            Err(conflicts)
        }
    }
}

fn plain(s: &str) -> Value {
    Value::Plain(super::render::string(s))
}

fn list<T: ToString>(items: &[T]) -> Value {
    Value::Plain(format!(
        "[{}]",
        items.iter().map(|i| super::render::string(&i.to_string())).collect::<Vec<_>>().join(", ")
    ))
}

/// Every resource of a configuration with its fields, in apply order.
fn resources(config: &PlatformConfig, fingerprints: &BTreeMap<String, String>) -> BTreeMap<Slot, Fields> {
    let mut out = BTreeMap::new();
    let secret = |key: String, r: &SecretRef| Value::Secret(r.to_string(), fingerprints.get(&key).cloned());
    for (name, site) in &config.sites {
        let mut put = |rank: u8, address: String, fields: Fields| {
            out.insert(Slot { site: name.clone(), rank, address }, fields);
        };
        let mut f = Fields::new();
        f.insert("production_branch".into(), plain(site.production_branch.as_str()));
        f.insert("keep_deploys".into(), Value::Plain(site.keep_deploys.to_string()));
        if let Some(p) = site.profile {
            f.insert("profile".into(), plain(p.as_str()));
        }
        f.insert("proxy_origins".into(), list(&site.proxy_origins));
        f.insert("https.redirect".into(), Value::Plain(site.https.redirect.to_string()));
        f.insert("https.hsts_max_age".into(), Value::Plain(site.https.hsts_max_age.to_string()));
        f.insert("https.hsts_include_subdomains".into(), Value::Plain(site.https.hsts_include_subdomains.to_string()));
        f.insert("https.hsts_preload".into(), Value::Plain(site.https.hsts_preload.to_string()));
        put(0, model::address::site(name), f);

        if let Some(g) = &site.git {
            let at = model::address::git(name);
            let mut f = Fields::new();
            f.insert("repository".into(), plain(&g.repository));
            match &g.credential {
                Some(GitCredential::Token(r)) => {
                    f.insert("credential_kind".into(), plain("token"));
                    f.insert("credential".into(), secret(format!("{at}.credential"), r));
                }
                Some(GitCredential::SshKey(r)) => {
                    f.insert("credential_kind".into(), plain("ssh_key"));
                    f.insert("credential".into(), secret(format!("{at}.credential"), r));
                }
                None => {}
            }
            if let Some(u) = &g.username {
                f.insert("username".into(), plain(u));
            }
            f.insert("include".into(), list(&g.include));
            f.insert("exclude".into(), list(&g.exclude));
            f.insert("delete_branches".into(), Value::Plain(g.delete_branches.to_string()));
            f.insert("pull_request_previews".into(), Value::Plain(g.pull_request_previews.to_string()));
            f.insert("fork_pull_requests".into(), Value::Plain(g.fork_pull_requests.to_string()));
            f.insert("preview_retention_days".into(), Value::Plain(g.preview_retention_days.to_string()));
            if let Some(n) = g.poll_interval_secs {
                f.insert("poll_interval_secs".into(), Value::Plain(n.to_string()));
            }
            if let Some(n) = g.timeout_secs {
                f.insert("timeout_secs".into(), Value::Plain(n.to_string()));
            }
            if let Some(p) = &g.platform_config {
                f.insert("platform_config".into(), plain(p));
            }
            let b = &site.build;
            for (k, v) in
                [("command", &b.command), ("base", &b.base), ("publish", &b.publish), ("app_root", &b.app_root)]
            {
                if let Some(v) = v {
                    f.insert(format!("build.{k}"), plain(v));
                }
            }
            put(1, at, f);
        }

        let envs = std::iter::once((None, &site.env)).chain(site.branches.iter().map(|(b, c)| (Some(b), &c.env)));
        for (branch, env) in envs {
            for (var, v) in env {
                let at = model::address::env(name, branch, var);
                let value = match v {
                    EnvValue::Plain(s) => plain(s),
                    EnvValue::Secret(r) => secret(format!("{at}.value"), r),
                };
                put(2, at, Fields(vec![("value".to_owned(), value)]));
            }
        }

        for (scope, policy) in access_policies(site) {
            let at = model::address::access(name, &scope);
            let mut f = Fields::new();
            for (user, pw) in &policy.users {
                let field = format!("users{}", model::address::key(user));
                let value = match pw {
                    Password::Hash(h) => Value::Hidden(h.clone()),
                    Password::Secret(r) => secret(format!("{at}.{field}"), r),
                };
                f.insert(field, value);
            }
            f.insert("allow".into(), list(&policy.allow));
            f.insert("deny".into(), list(&policy.deny));
            f.insert("allow_preflight".into(), Value::Plain(policy.allow_preflight.to_string()));
            put(3, at, f);
        }

        for (domain, d) in &site.domains {
            let mut f = Fields::new();
            f.insert("primary".into(), Value::Plain(d.primary.to_string()));
            if let Some(b) = &d.branch {
                f.insert("branch".into(), plain(b.as_str()));
            }
            put(4, model::address::domain(name, domain), f);
        }

        for (sub_name, sub) in &site.notify {
            let at = model::address::notify(name, sub_name);
            let mut f = Fields::new();
            f.insert("channel".into(), plain(sub.channel.name()));
            f.insert("events".into(), list(&sub.events.iter().map(|e| e.as_str()).collect::<Vec<_>>()));
            f.insert("branches".into(), list(&sub.branches));
            match &sub.channel {
                Channel::Webhook { url, secret: s } => {
                    f.insert("url".into(), secret(format!("{at}.url"), url));
                    f.insert("secret".into(), secret(format!("{at}.secret"), s));
                }
                Channel::Slack { url } | Channel::Discord { url } => {
                    f.insert("url".into(), secret(format!("{at}.url"), url));
                }
                Channel::Email { smtp, from, to } => {
                    f.insert("smtp.host".into(), plain(&smtp.host));
                    f.insert("smtp.port".into(), Value::Plain(smtp.port.to_string()));
                    f.insert("smtp.security".into(), plain(smtp.security.as_str()));
                    if let Some(u) = &smtp.username {
                        f.insert("smtp.username".into(), plain(u));
                    }
                    if let Some(p) = &smtp.password {
                        f.insert("smtp.password".into(), secret(format!("{at}.smtp.password"), p));
                    }
                    f.insert("from".into(), plain(from));
                    f.insert("to".into(), list(to));
                }
                Channel::Forge { token, repository, api_url, context, comments, .. } => {
                    f.insert("token".into(), secret(format!("{at}.token"), token));
                    if let Some(r) = repository {
                        f.insert("repository".into(), plain(r));
                    }
                    f.insert("api_url".into(), plain(api_url));
                    f.insert("context".into(), plain(context));
                    f.insert("comments".into(), Value::Plain(comments.to_string()));
                }
            }
            put(5, at, f);
        }
    }
    out
}
