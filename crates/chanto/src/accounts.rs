//! `chanto users`, `chanto tokens`, `chanto audit`, `chanto whoami` and
//! `chanto login --user`: the CLI side of accounts (issue 18).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context, bail};
use chanto_control::accounts::{
    AuditView, CreateTokenRequest, CreateUserRequest, InviteRequest, InviteView, LoginRequest, TokenView,
    UpdateUserRequest, UserView, WhoAmI,
};

use crate::cli::{AuditCommand, Connection, LoginArgs, TokensCommand, UsersCommand};
use crate::client::{Client, seg};
use crate::commands::print_json;

/// Reads a password: from standard input when `from_stdin` (or when it is
/// not a terminal), else asked for on the terminal without echo.
fn read_password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let interactive = !from_stdin && stdin.is_terminal();
    let mut line = String::new();
    if interactive {
        eprint!("{prompt}");
        std::io::stderr().flush().ok();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
        }
        let read = stdin.lock().read_line(&mut line);
        if let Some(t) = &saved {
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, t);
        }
        eprintln!();
        read.context("reading the password")?;
    } else {
        stdin.lock().read_line(&mut line).context("reading the password from standard input")?;
    }
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!(
            "the password is empty; type it when asked, or pipe it in: `printf %s \"$PW\" | chanto … --password-stdin`"
        );
    }
    Ok(password)
}

fn user_path(name: &str) -> String {
    format!("/users/{}", seg(name))
}

fn print_user(u: &UserView) {
    let password = if u.has_password { "" } else { " (no password yet)" };
    println!("{}: {}{password}", u.name, u.role);
}

/// Runs a `chanto users` subcommand.
pub async fn users(client: &Client, cmd: UsersCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::List => {
            let list: Vec<UserView> = client.get("/users").await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!(
                    "No users yet. Create the first admin: chanto users create NAME --role admin --password-stdin"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.role.clone(),
                        if u.has_password { "yes".into() } else { "no".into() },
                        u.sso_subject.clone().unwrap_or_else(|| "-".into()),
                        u.last_login_at.clone().unwrap_or_else(|| "never".into()),
                        u.created_at.clone(),
                    ]
                })
                .collect();
            crate::table::print(&["USER", "ROLE", "PASSWORD", "SSO SUBJECT", "LAST SIGN-IN", "CREATED"], &rows);
        }
        UsersCommand::Create { name, role, password_stdin } => {
            let password =
                if password_stdin { Some(read_password(&format!("Password for {name}: "), true)?) } else { None };
            let u: UserView = client.post("/users", &CreateUserRequest { name, role, password }).await?;
            if json {
                return print_json(&u);
            }
            print_user(&u);
            if u.has_password {
                println!("They sign in with: chanto login --server {} --user {}", client.server(), u.name);
            } else {
                println!("Set a password with: chanto users set-password {} < password-file", u.name);
            }
        }
        UsersCommand::SetRole { name, role } => {
            let u: UserView =
                client.patch(&user_path(&name), &UpdateUserRequest { role: Some(role), ..Default::default() }).await?;
            if json {
                return print_json(&u);
            }
            print_user(&u);
        }
        UsersCommand::Invite { name, role } => {
            let v: InviteView = client.post(&format!("{}/invite", user_path(&name)), &InviteRequest { role }).await?;
            if json {
                return print_json(&v);
            }
            eprintln!("Send {} this link; it works once, until {}:", v.user, v.expires_at);
            println!("{}", v.url);
        }
        UsersCommand::SetPassword { name } => {
            let password = read_password(&format!("New password for {name}: "), false)?;
            let u: UserView = client
                .patch(&user_path(&name), &UpdateUserRequest { password: Some(password), ..Default::default() })
                .await?;
            if json {
                return print_json(&u);
            }
            println!("Password set for {}", u.name);
        }
        UsersCommand::SetSso { name, subject, none } => {
            let sso_subject = if none { String::new() } else { subject.unwrap_or_default() };
            let req = UpdateUserRequest { sso_subject: Some(sso_subject), ..Default::default() };
            let u: UserView = client.patch(&user_path(&name), &req).await?;
            if json {
                return print_json(&u);
            }
            match &u.sso_subject {
                Some(sub) => println!("{} signs in by single sign-on as subject {sub}", u.name),
                None => println!("{} is not linked to single sign-on", u.name),
            }
        }
        UsersCommand::Remove { name } => {
            client.delete(&user_path(&name)).await?;
            if !json {
                println!("Removed {name} and their tokens");
            }
        }
    }
    Ok(())
}

fn token_rows(list: &[TokenView], all: bool) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| {
            let state = match (&t.revoked_at, &t.expires_at) {
                (Some(at), _) => format!("revoked {at}"),
                (None, Some(at)) => format!("expires {at}"),
                (None, None) => "never expires".into(),
            };
            let mut row = vec![t.id.clone(), t.name.clone(), t.scope.clone(), state];
            row.push(t.last_used_at.clone().unwrap_or_else(|| "never".into()));
            if all {
                row.insert(1, t.user.clone());
            }
            row
        })
        .collect()
}

/// Runs a `chanto tokens` subcommand.
pub async fn tokens(client: &Client, cmd: TokensCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::List { all } => {
            let list: Vec<TokenView> = client.get(if all { "/tokens?all=true" } else { "/tokens" }).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No tokens. Make one: chanto tokens create NAME --scope deploy");
                return Ok(());
            }
            let head: &[&str] = if all {
                &["ID", "USER", "NAME", "SCOPE", "STATE", "LAST USED"]
            } else {
                &["ID", "NAME", "SCOPE", "STATE", "LAST USED"]
            };
            crate::table::print(head, &token_rows(&list, all));
        }
        TokensCommand::Create { name, scope, expires_in_days, user } => {
            let t: TokenView =
                client.post("/tokens", &CreateTokenRequest { name, scope, expires_in_days, user }).await?;
            if json {
                return print_json(&t);
            }
            let token = t.token.as_deref().unwrap_or_default();
            eprintln!(
                "Made {} ({}, scope {}, {}) for {}. The token, shown only this once:",
                t.id,
                t.name,
                t.scope,
                t.expires_at.as_deref().map_or("never expires".to_owned(), |at| format!("expires {at}")),
                t.user
            );
            println!("{token}");
        }
        TokensCommand::Revoke { id } => {
            let t: TokenView = client.delete_json(&format!("/tokens/{}", seg(&id))).await?;
            if json {
                return print_json(&t);
            }
            println!("Revoked {} ({}) of {}", t.id, t.name, t.user);
        }
    }
    Ok(())
}

/// Runs a `chanto audit` subcommand.
pub async fn audit(client: &Client, cmd: AuditCommand, json: bool) -> anyhow::Result<()> {
    let AuditCommand::List { actor, limit, before } = cmd;
    let mut query = format!("/audit?limit={limit}");
    if let Some(a) = &actor {
        query.push_str(&format!("&actor={}", seg(a)));
    }
    if let Some(b) = before {
        query.push_str(&format!("&before={b}"));
    }
    let list: Vec<AuditView> = client.get(&query).await?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("No changes recorded{}.", actor.map(|a| format!(" for {a}")).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.clone(),
                e.actor.clone(),
                e.via.clone(),
                e.source.clone(),
                e.action.clone(),
                e.target.clone(),
                e.status.to_string(),
            ]
        })
        .collect();
    crate::table::print(&["ID", "AT", "ACTOR", "VIA", "FROM", "ACTION", "TARGET", "STATUS"], &rows);
    if list.len() as u32 == limit
        && let Some(last) = list.last()
    {
        println!("More: chanto audit list --before {}", last.id);
    }
    Ok(())
}

/// `chanto whoami`.
pub async fn whoami(client: &Client, json: bool) -> anyhow::Result<()> {
    let me: WhoAmI = client.get("/me").await?;
    if json {
        return print_json(&me);
    }
    match &me.role {
        Some(role) => {
            println!("{} ({role}) with token {}, scope {}, at {}", me.actor, me.via, me.scope, client.server())
        }
        None => println!("the admin token (every scope) at {}", client.server()),
    }
    Ok(())
}

/// `chanto login --user NAME`: signs in with the password, saves the
/// personal token it gets.
pub async fn login_with_password(conn: &Connection, args: &LoginArgs) -> anyhow::Result<()> {
    let (server, _) = crate::client::resolve(conn)?;
    let user = args.user.clone().unwrap_or_default();
    let password = read_password(&format!("Password for {user} at {server}: "), args.password_stdin)?;
    let host = std::process::Command::new("hostname").output().ok().and_then(|o| String::from_utf8(o.stdout).ok());
    let token_name = format!("chanto login on {}", host.as_deref().map(str::trim).unwrap_or("this machine"));
    let anonymous = Client::with(server.clone(), None)?;
    let req = LoginRequest {
        user,
        password,
        token_name: Some(token_name),
        scope: args.scope.clone(),
        expires_in_days: Some(args.expires_in_days),
    };
    let t: TokenView = anonymous.post("/auth/token", &req).await?;
    let path = crate::commands::save_login(&server, t.token.as_deref().unwrap_or_default())?;
    println!(
        "Logged in to {server} as {} (token {}, scope {}, expires {}); saved to {}",
        t.user,
        t.id,
        t.scope,
        t.expires_at.as_deref().unwrap_or("never"),
        path.display()
    );
    Ok(())
}
