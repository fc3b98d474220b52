//! `chanto nodes`: the nodes the control plane hears from (`GET /nodes`),
//! node tokens (`/nodes/tokens`), and how an activation's answer says where
//! it is live ("live on 3 of 3 edges").

use std::path::Path;

use anyhow::Context;
use chanto_control::nodes::{CreateNodeTokenRequest, CreatedNodeToken, NodeTokenView, NodesView};
use chanto_store::node_wire::EdgeRollout;

use crate::cli::{NodeTokenCommand, NodesCommand};
use crate::client::{Client, seg};
use crate::commands::print_json;

/// Runs a `chanto nodes` command.
pub async fn nodes(client: &Client, cmd: NodesCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        NodesCommand::List => {
            let v: NodesView = client.get("/nodes").await?;
            if json {
                return print_json(&v);
            }
            if v.nodes.is_empty() {
                println!(
                    "No node has reported in the last day (routing version {}). Edges report once started with `chanto serve --role edge --control URL --node-token FILE`.",
                    v.routing_version
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .nodes
                .iter()
                .map(|n| {
                    let state = match (n.healthy, n.draining, n.ready) {
                        (_, true, _) => "draining",
                        (false, _, _) => "silent",
                        (true, _, false) => "not ready",
                        (true, _, true) => "ready",
                    };
                    vec![
                        n.zone.clone(),
                        n.name.clone(),
                        n.role.clone(),
                        n.routing_version.to_string(),
                        n.lag.to_string(),
                        format!("{} ago", age(n.last_heartbeat_age_ms)),
                        state.to_owned(),
                        n.refused.as_ref().map(|r| format!("v{}: {}", r.version, r.error)).unwrap_or_default(),
                    ]
                })
                .collect();
            crate::table::print(&["ZONE", "NAME", "ROLE", "VERSION", "LAG", "HEARTBEAT", "STATE", "REFUSED"], &rows);
            let healthy = v.nodes.iter().filter(|n| n.healthy && n.role != "control").count();
            println!(
                "Routing version {}; {healthy} healthy edge(s) (heard from within {}).",
                v.routing_version,
                age(v.node_timeout_ms)
            );
            Ok(())
        }
        NodesCommand::Token(NodeTokenCommand::Create { name, output }) => {
            let t: CreatedNodeToken = client.post("/nodes/tokens", &CreateNodeTokenRequest { name }).await?;
            if let Some(path) = &output {
                write_secret(path, &t.token)?;
            }
            if json {
                return print_json(&t);
            }
            match &output {
                Some(path) => println!(
                    "Created node token {} ({}), saved to {} (mode 600). Start an edge with `chanto serve --role edge --control {} --node-token {}`.",
                    t.id,
                    t.name,
                    path.display(),
                    client.server(),
                    path.display()
                ),
                None => println!(
                    "Created node token {} ({}); it is shown once:\n  {}\nPut it in a file only the edge can read and pass `--node-token FILE` to `chanto serve --role edge`.",
                    t.id, t.name, t.token
                ),
            }
            Ok(())
        }
        NodesCommand::Token(NodeTokenCommand::List) => {
            let list: Vec<NodeTokenView> = client.get("/nodes/tokens").await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No node tokens; create one with `chanto nodes token create NAME`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.created_at.clone(),
                        t.last_used_at.clone().unwrap_or_else(|| "never".into()),
                        t.revoked_at.as_ref().map(|r| format!("revoked {r}")).unwrap_or_else(|| "active".into()),
                    ]
                })
                .collect();
            crate::table::print(&["ID", "NAME", "CREATED", "LAST USED", "STATE"], &rows);
            Ok(())
        }
        NodesCommand::Token(NodeTokenCommand::Revoke { id }) => {
            let t: NodeTokenView =
                client.delete_json(&format!("/nodes/tokens/{}", seg(&id))).await.map_err(|e| match e.status {
                    Some(404) => anyhow::anyhow!("no node token {id:?}; `chanto nodes token list` shows their ids"),
                    _ => e.into(),
                })?;
            if json {
                return print_json(&t);
            }
            println!(
                "Revoked node token {} ({}): nodes using it are refused from now on (by other control processes within 10 s).",
                t.id, t.name
            );
            Ok(())
        }
    }
}

/// Writes a secret to `path`, readable by its owner only (mode 600).
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| {
        format!("writing the node token to --output {} (it must not exist yet; pick a new file)", path.display())
    })?;
    f.write_all(format!("{secret}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().ok();
    Ok(())
}

/// `1234` ms → `1.2s`, `90000` → `1m30s`.
fn age(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string().replace(' ', "")
    }
}

/// Prints where an activation is live: `live on N of M edges`, then each
/// edge that lags or refused it, by zone and name.
pub fn print_rollout(edges: Option<&EdgeRollout>) {
    let Some(e) = edges else { return };
    println!("  Edges:      {}", rollout_line(e));
    for n in &e.lagging {
        println!("    lagging:  {}/{} still on version {}", n.zone, n.name, n.routing_version);
    }
    for n in &e.refused {
        println!("    refused:  {}/{}: {}", n.zone, n.name, n.error.as_deref().unwrap_or("no reason given"));
    }
}

/// `live on 2 of 3 edges (routing version 7; waited 10.0s)`.
pub fn rollout_line(e: &EdgeRollout) -> String {
    let mut line = format!("live on {} of {} edges (routing version {}", e.live, e.total, e.version);
    if !e.lagging.is_empty() || !e.refused.is_empty() {
        line.push_str(&format!("; waited {:.1}s", e.waited_ms as f64 / 1000.0));
    }
    line.push(')');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use chanto_store::node_wire::NodeRef;

    #[test]
    fn the_rollout_line_counts_edges() {
        let mut e = EdgeRollout { version: 7, live: 1, total: 1, waited_ms: 3, ..Default::default() };
        assert_eq!(rollout_line(&e), "live on 1 of 1 edges (routing version 7)");
        e.total = 2;
        e.waited_ms = 10_000;
        e.lagging.push(NodeRef {
            node_id: "x".into(),
            name: "e1".into(),
            zone: "a".into(),
            routing_version: 6,
            error: None,
        });
        assert_eq!(rollout_line(&e), "live on 1 of 2 edges (routing version 7; waited 10.0s)");
        assert_eq!(age(1234), "1.2s");
        assert_eq!(age(90_000), "1m30s");
    }
}
