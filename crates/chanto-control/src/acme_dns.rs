//! DNS-01 through the operator's hook command (issue 17): chanto has no DNS
//! provider built in; the operator gives a program that adds and removes
//! TXT records at theirs. The interface is lego's `exec` provider's, so
//! scripts written for lego (and most acme.sh/certbot hook wrappers) work:
//!
//! ```text
//! HOOK present _acme-challenge.example.com. VALUE
//! HOOK cleanup _acme-challenge.example.com. VALUE
//! ```
//!
//! with the environment `CHANTO_ACME_ACTION` (`present`/`cleanup`),
//! `CHANTO_ACME_DOMAIN` (the name being proven, `example.com`),
//! `CHANTO_ACME_TXT_NAME` and `CHANTO_ACME_TXT_VALUE`. `present` must exit 0
//! once the record is visible to the CA (waiting for the provider's
//! propagation is the hook's job), within [`HOOK_TIMEOUT`]; any other exit
//! fails the order with the end of what the hook printed. `cleanup` failures
//! are only logged.
//!
//! Who reaches this: only the order loop, with names a user added and that
//! were verified (LDH hostnames, checked by `chanto_core::DomainName`); the
//! hook is run directly, never through a shell, and the operator chose it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long one run of the hook may take.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// What the hook is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// Add the TXT record.
    Present,
    /// Remove it.
    Cleanup,
}

impl HookAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Cleanup => "cleanup",
        }
    }
}

/// Checks at start that `hook` is a program this server can run: a
/// regular file with an execute bit. The error names the flag and the fix.
pub fn check_hook(hook: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(hook)
        .map_err(|e| format!("--acme-dns-hook {}: {e}; give the path of an executable script", hook.display()))?;
    if !meta.is_file() {
        return Err(format!("--acme-dns-hook {}: not a file; give the path of an executable script", hook.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("--acme-dns-hook {}: not executable; run `chmod +x {}`", hook.display(), hook.display()));
    }
    std::path::absolute(hook).map_err(|e| format!("--acme-dns-hook {}: {e}", hook.display()))
}

/// Runs `hook ACTION TXT_NAME VALUE` (see the module doc) and waits at most
/// `timeout`. `Err`: why, with the end of the hook's output.
pub async fn run_hook(
    hook: &Path,
    action: HookAction,
    domain: &str,
    txt_name: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), String> {
    let what = format!("the DNS hook `{} {} {txt_name}`", hook.display(), action.as_str());
    let child = tokio::process::Command::new(hook)
        .args([action.as_str(), txt_name, value])
        .env("CHANTO_ACME_ACTION", action.as_str())
        .env("CHANTO_ACME_DOMAIN", domain)
        .env("CHANTO_ACME_TXT_NAME", txt_name)
        .env("CHANTO_ACME_TXT_VALUE", value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{what} could not start: {e}"))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{what}: {e}")),
        Err(_) => {
            return Err(format!(
                "{what} did not finish within {}; it must exit once the record is published",
                humantime::format_duration(timeout)
            ));
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let mut printed = String::from_utf8_lossy(&output.stderr).into_owned();
    if printed.trim().is_empty() {
        printed = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    Err(format!("{what} failed ({}): {}", output.status, tail(printed.trim(), 500)))
}

/// The last `max` bytes of `s` (on a character boundary), marked when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return if s.is_empty() { "(it printed nothing)".to_owned() } else { s.to_owned() };
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn the_hook_gets_the_lego_exec_arguments_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("calls");
        let hook = script(
            dir.path(),
            "hook",
            &format!(
                "echo \"$1|$2|$3|$CHANTO_ACME_ACTION|$CHANTO_ACME_DOMAIN|$CHANTO_ACME_TXT_NAME|$CHANTO_ACME_TXT_VALUE\" >> {}",
                out.display()
            ),
        );
        let hook = check_hook(&hook).unwrap();
        for action in [HookAction::Present, HookAction::Cleanup] {
            run_hook(&hook, action, "example.com", "_acme-challenge.example.com.", "v4lue_-", HOOK_TIMEOUT)
                .await
                .unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "present|_acme-challenge.example.com.|v4lue_-|present|example.com|_acme-challenge.example.com.|v4lue_-\n\
             cleanup|_acme-challenge.example.com.|v4lue_-|cleanup|example.com|_acme-challenge.example.com.|v4lue_-\n"
        );
    }

    #[tokio::test]
    async fn a_failing_silent_or_hanging_hook_fails_with_what_it_printed() {
        let dir = tempfile::tempdir().unwrap();
        let run = |hook: PathBuf, timeout| async move {
            run_hook(&hook, HookAction::Present, "a.test", "_acme-challenge.a.test.", "v", timeout).await.unwrap_err()
        };
        let failing = script(dir.path(), "failing", "echo 'zone a.test not found' >&2; exit 3");
        let err = run(failing, HOOK_TIMEOUT).await;
        assert!(err.contains("exit status: 3") && err.contains("zone a.test not found"), "{err}");
        let silent = script(dir.path(), "silent", "exit 1");
        assert!(run(silent, HOOK_TIMEOUT).await.contains("(it printed nothing)"));
        let chatty =
            script(dir.path(), "chatty", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; exit 1");
        let err = run(chatty, HOOK_TIMEOUT).await;
        assert!(err.contains("…") && err.contains("line 1999") && err.len() < 800, "{err}");
        let hanging = script(dir.path(), "hanging", "sleep 30");
        let started = std::time::Instant::now();
        let err = run(hanging, Duration::from_millis(300)).await;
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn check_hook_names_the_flag_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let err = check_hook(&dir.path().join("missing")).unwrap_err();
        assert!(err.starts_with("--acme-dns-hook") && err.contains("executable script"), "{err}");
        assert!(check_hook(dir.path()).unwrap_err().contains("not a file"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_hook(&plain).unwrap_err().contains("chmod +x"));
        assert_eq!(tail("", 10), "(it printed nothing)");
        assert_eq!(tail("ééé", 3), "…é");
    }
}
