//! Two `chanto serve` processes on one PostgreSQL and one S3 prefix (the
//! same install: `install-id` and `secret.key` copied to the second node): a
//! deploy made through one is served by the other's edge, also after the
//! database restarted in between (the listener reconnects and re-reads the
//! routing version, as notifications sent while it was away are lost). A
//! node starting leaves the other's builds and notification leases alone,
//! and takes over the builds of a node that died; builds and notifications
//! resume after a database outage without a restart.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chanto_testkit::pg;
use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use util::git::{Repo, reachable_tempdir};
use util::receiver::Receiver;
use util::{Server, write_tree};

/// Waits (bounded) until `server`'s edge answers `want` for docs.localhost/.
fn serves(server: &Server, want: &str) {
    util::wait_for(&format!("node B to serve {want:?}"), Duration::from_secs(60), || {
        let r = util::http_get(&server.edge, "docs.localhost", "/").ok()?;
        (r.status == 200 && r.text() == want).then_some(())
    });
}

#[test]
fn a_deploy_through_one_node_is_served_by_the_other_also_after_a_database_restart() {
    let pg = pg::PgServer::start();
    let url = pg.create_database("multinode");
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let blobs = format!("s3://{bucket}/prod");
    let endpoint = s3.endpoint();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];
    let args = ["--meta", &url, "--blobs", &blobs, "--s3-endpoint", &endpoint];
    let tmp = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_cmd_env("serve", &data_a, &args, &env);
    // Node B is the same install: without A's install id the bucket's marker
    // refuses it (tested in s3.rs), without its key it could not open A's secrets.
    std::fs::create_dir_all(&data_b).unwrap();
    for f in ["install-id", "secret.key", "admin.token"] {
        std::fs::copy(data_a.join(f), data_b.join(f)).unwrap();
    }
    let b = Server::start_cmd_env("serve", &data_b, &args, &env);

    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>v1</h1>")]);
    a.cli(&["sites", "create", "docs"]).ok();
    let d = a.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["deploy"]["state"], "active", "{d}");
    assert_eq!(a.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    serves(&b, "<h1>v1</h1>");

    // The database restarts: B's listener loses its connection.
    pg.stop();
    pg.start_again();
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    // A's pool finds its connections dead and reconnects (bounded retries).
    let d2 = util::wait_for("a deploy through A after the restart", Duration::from_secs(60), || {
        let out = a.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).run();
        out.out.status.success().then(|| out.json())
    });
    assert_eq!(d2["deploy"]["state"], "active", "{d2}");
    serves(&b, "<h1>v2</h1>");

    // A rollback through B reaches A the same way; versions only grow, so
    // neither goes back to an older table.
    let r = b.cli(&["rollback", "--site", "docs", "--json"]).ok().json();
    assert_eq!(r["deploy"]["id"], d["deploy"]["id"], "{r}");
    util::wait_for("node A to serve the rollback", Duration::from_secs(60), || {
        let r = util::http_get(&a.edge, "docs.localhost", "/").ok()?;
        (r.text() == "<h1>v1</h1>").then_some(())
    });
    serves(&b, "<h1>v1</h1>");
}

/// A site `app` built from a repository whose build sleeps `$PAUSE` seconds
/// (a build variable, read when the build starts) and deploys `built`.
fn connect_slow_site(server: &Server, repo: &Repo) {
    server.cli(&["sites", "create", "app"]).ok();
    server.cli(&["git", "connect", &repo.url(), "--site", "app"]).ok();
    let toml =
        "[build]\ncommand = \"sleep $PAUSE && mkdir -p out && echo built > out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml)], "slow build");
}

fn start_build(server: &Server, branch: &str) -> String {
    let b = server.cli(&["builds", "start", "--site", "app", "--branch", branch, "--json"]).ok().json();
    b["id"].as_str().unwrap().to_owned()
}

fn build(server: &Server, id: &str) -> serde_json::Value {
    server.cli(&["builds", "show", id, "--json"]).ok().json()
}

fn wait_state(server: &Server, id: &str, want: &[&str]) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let b = build(server, id);
        if want.contains(&b["state"].as_str().unwrap()) {
            return b;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "build {id} is not {want:?} after 60 s: {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the S3 and PostgreSQL flags of a node on `url` are.
struct Shared {
    _s3: S3Server,
    env: Vec<(&'static str, &'static str)>,
    args: Vec<String>,
}

fn shared_stores(url: &str, extra: &[&str]) -> Shared {
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let mut args: Vec<String> =
        ["--meta", url, "--blobs", &format!("s3://{bucket}/prod"), "--s3-endpoint", &s3.endpoint()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let env =
        vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];
    Shared { _s3: s3, env, args }
}

impl Shared {
    fn start(&self, data: &std::path::Path, more: &[&str]) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).chain(more.iter().copied()).collect();
        Server::start_cmd_env("serve", data, &args, &self.env)
    }
}

/// Deploys through both nodes at once, to four sites: each node re-reads
/// only the sites another node's announcement names when it follows right
/// after its own version, and everything when versions interleave; either
/// way both edges end up serving the last deploy of every site.
#[test]
fn interleaved_deploys_through_two_nodes_reach_both_edges_for_every_site() {
    let url = pg::shared().create_database("interleaved");
    let shared = shared_stores(&url, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = shared.start(&data_a, &[]);
    std::fs::create_dir_all(&data_b).unwrap();
    for f in ["install-id", "secret.key", "admin.token"] {
        std::fs::copy(data_a.join(f), data_b.join(f)).unwrap();
    }
    let b = shared.start(&data_b, &[]);
    let sites = ["s0", "s1", "s2", "s3"];
    for site in sites {
        a.cli(&["sites", "create", site]).ok();
    }
    const ROUNDS: usize = 4;
    std::thread::scope(|scope| {
        for (node, mine) in [(&a, ["s0", "s1"]), (&b, ["s2", "s3"])] {
            let dir = tmp.path().join(format!("site-{}", mine[0]));
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    for site in mine {
                        write_tree(&dir, &[("index.html", &format!("{site} round {round}"))]);
                        let d = node.cli(&["deploy", dir.to_str().unwrap(), "--site", site, "--json"]).ok().json();
                        assert_eq!(d["deploy"]["state"], "active", "{d}");
                    }
                }
            });
        }
    });
    for (name, node) in [("A", &a), ("B", &b)] {
        for site in sites {
            let want = format!("{site} round {}", ROUNDS - 1);
            util::wait_for(&format!("node {name} to serve {want:?}"), Duration::from_secs(30), || {
                let r = util::http_get(&node.edge, &format!("{site}.localhost"), "/").ok()?;
                (r.status == 200 && r.text() == want).then_some(())
            });
        }
    }
    // A rollback through B of a site A deployed: one site changed, A follows.
    b.cli(&["rollback", "--site", "s0", "--json"]).ok();
    let want = format!("s0 round {}", ROUNDS - 2);
    util::wait_for("node A to serve the rollback", Duration::from_secs(30), || {
        let r = util::http_get(&a.edge, "s0.localhost", "/").ok()?;
        (r.text() == want).then_some(())
    });
    for site in ["s1", "s2", "s3"] {
        assert_eq!(
            util::http_get(&a.edge, &format!("{site}.localhost"), "/").unwrap().text(),
            format!("{site} round {}", ROUNDS - 1)
        );
    }
}

/// Two nodes on one PostgreSQL. Node B starts while A runs two builds and
/// sends a notification: B interrupts neither build and does not send the
/// notification again. Then A dies (SIGKILL) mid-build: B notices within the
/// heartbeat timeout, marks A's build interrupted and runs its retry.
#[test]
fn a_second_node_leaves_the_first_ones_work_alone_and_takes_over_when_it_dies() {
    let pg = pg::shared();
    let url = pg.create_database("takeover");
    let stores = shared_stores(&url, &["--build-heartbeat-timeout", "5s", "--notify-timeout", "20s"]);
    let tmp = reachable_tempdir();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = stores.start(&data_a, &["--build-concurrency", "2"]);
    std::fs::create_dir_all(&data_b).unwrap();
    for f in ["install-id", "secret.key", "admin.token"] {
        std::fs::copy(data_a.join(f), data_b.join(f)).unwrap();
    }

    // The receiver holds the first request it gets until told to answer.
    let arrived = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(AtomicBool::new(true));
    let receiver = {
        let (arrived, hold) = (arrived.clone(), hold.clone());
        Receiver::start(move |_| {
            if arrived.fetch_add(1, Ordering::SeqCst) == 0 {
                let until = Instant::now() + Duration::from_secs(60);
                while hold.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (200, vec![], "ok".into())
        })
    };
    let repo = Repo::new(&tmp.path().join("repo"));
    connect_slow_site(&a, &repo);
    a.cli(&["notify", "add", "webhook", "--site", "app", "--url", &receiver.url("/hook")]).ok();
    a.cli(&["env", "set", "--site", "app", "PAUSE", "4"]).ok();
    a.cli(&["env", "set", "--site", "app", "--branch", "slow", "PAUSE", "600"]).ok();
    repo.commit("slow", &[], "the slow branch");
    let quick = start_build(&a, "main");
    let slow = start_build(&a, "slow");
    let running_on_a = wait_state(&a, &slow, &["running"]);
    wait_state(&a, &quick, &["running", "succeeded"]);
    util::wait_for("A's first notification to be in flight", Duration::from_secs(30), || {
        (arrived.load(Ordering::SeqCst) == 1).then_some(())
    });

    let b = stores.start(&data_b, &[]);
    let b_started = Instant::now();
    util::wait_for("B's notification dispatcher to start", Duration::from_secs(30), || {
        b.stderr().contains("notification dispatcher started").then_some(())
    });
    // A's build ends once, as it would have without B: not interrupted, not retried.
    let done = wait_state(&b, &quick, &["succeeded", "failed", "interrupted", "cancelled"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["runner"], running_on_a["runner"], "{done}");
    let all = b.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    assert_eq!(all.as_array().unwrap().len(), 2, "no retry of a live node's build: {all}");
    assert_eq!(build(&b, &slow)["state"], "running");
    // B has judged heartbeats for more than a timeout (it waits one after
    // its start): A's live build is still A's, and not retried.
    std::thread::sleep((b_started + Duration::from_secs(11)).saturating_duration_since(Instant::now()));
    let still = build(&b, &slow);
    assert_eq!((&still["state"], &still["runner"]), (&"running".into(), &running_on_a["runner"]), "{still}");
    let all = b.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    assert!(all.as_array().unwrap().iter().all(|r| r["retry_of"].is_null()), "no retry of a live node's build: {all}");
    // B cannot kill A's processes: cancelling there says where to cancel it, at once.
    let r = b.cli(&["builds", "cancel", &slow]).fails();
    let node_a = running_on_a["runner"].as_str().unwrap();
    assert!(
        r.stderr().contains(&format!("runs on node {node_a}")) && r.stderr().contains("cancel it there"),
        "{}",
        r.report()
    );
    assert_eq!(build(&b, &slow)["state"], "running");

    // The held notification is answered: it was sent once, by A, whatever B did meanwhile.
    hold.store(false, Ordering::SeqCst);
    let first = receiver.wait("the held notification", Duration::from_secs(30), |r| !r.is_empty())[0].clone();
    let first_id = first.header("x-chanto-delivery").expect("a delivery id").to_owned();

    // Nothing of A's is in flight when it dies (a dead node's delivery
    // lease would hold its subscription back until the lease ran out).
    util::wait_for("every notification so far to be delivered", Duration::from_secs(30), || {
        let d = a.cli(&["notify", "deliveries", "--site", "app", "--json"]).ok().json();
        d.as_array().unwrap().iter().all(|d| d["state"] == "delivered").then_some(())
    });
    // A dies mid-build. B takes the build for dead once its heartbeat is 5 s old.
    a.cli(&["env", "set", "--site", "app", "--branch", "slow", "PAUSE", "0"]).ok();
    let killed = Instant::now();
    a.kill();
    let taken = wait_state(&b, &slow, &["interrupted", "succeeded", "failed"]);
    let noticed = killed.elapsed();
    assert_eq!(taken["state"], "interrupted", "{taken}");
    let node_a = running_on_a["runner"].as_str().unwrap();
    let why = taken["error"].as_str().unwrap();
    assert!(why.contains(node_a) && why.contains("no heartbeat"), "{why}");
    eprintln!("B noticed A's death after {noticed:?} (heartbeat timeout 5 s)");
    assert!(noticed < Duration::from_secs(30), "{noticed:?}");
    let all = b.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    let retry = all.as_array().unwrap().iter().find(|r| r["retry_of"] == slow.as_str()).expect("a retry").clone();
    let retried = wait_state(&b, retry["id"].as_str().unwrap(), &["succeeded", "failed", "interrupted"]);
    assert_eq!(retried["state"], "succeeded", "{retried}");
    assert_ne!(retried["runner"].as_str(), Some(node_a), "{retried}");
    assert!(b.stderr().contains("queued again builds whose server stopped sending heartbeats"), "{}", b.stderr());

    // Everything since went out after the held one; it is still there once.
    let retry_id = retried["id"].as_str().unwrap().to_owned();
    let got = receiver.wait("the retry's success to be notified", Duration::from_secs(30), |r| {
        r.iter()
            .any(|x| x.header("x-chanto-event") == Some("build.succeeded") && x.json().to_string().contains(&retry_id))
    });
    let sent = got.iter().filter(|r| r.header("x-chanto-delivery") == Some(first_id.as_str())).count();
    assert_eq!(sent, 1, "delivery {first_id} was sent {sent} times");
}

/// PostgreSQL goes away while a build runs and another waits; the running
/// build ends during the outage. Once the database is back (no restart of
/// chanto), that end is recorded, the queued build runs and the
/// notifications of both go out. Then the node dies mid-build and restarts:
/// on PostgreSQL as on SQLite, its last run's build is retried at once (the
/// default heartbeat timeout, a minute, is not waited for).
#[test]
fn builds_and_notifications_resume_after_the_database_comes_back() {
    let pg = pg::PgServer::start();
    let url = pg.create_database("outage");
    let stores = shared_stores(&url, &["--notify-backoff", "200ms"]);
    let tmp = reachable_tempdir();
    let data = tmp.path().join("data");
    let server = stores.start(&data, &[]);
    let receiver = Receiver::start(|_| (200, vec![], "ok".into()));
    let repo = Repo::new(&tmp.path().join("repo"));
    connect_slow_site(&server, &repo);
    server.cli(&["notify", "add", "webhook", "--site", "app", "--url", &receiver.url("/hook")]).ok();
    // Long enough that the build cannot end before the database stops.
    server.cli(&["env", "set", "--site", "app", "PAUSE", "6"]).ok();
    let first = start_build(&server, "main");
    repo.commit("next", &[], "another branch");
    let second = start_build(&server, "next");
    wait_state(&server, &first, &["running"]);
    assert_eq!(build(&server, &second)["state"], "queued");

    pg.stop();
    let r = server.cli(&["builds", "show", &first, "--json"]).fails();
    assert!(r.stderr().contains("metadata store") || r.stderr().contains("503"), "{}", r.report());
    // The build ends while the database is away; its end waits for it.
    util::wait_for("the end of the build to wait for the database", Duration::from_secs(60), || {
        server.stderr().contains("recording the end of a build failed; retrying").then_some(())
    });
    pg.start_again();

    let ended = wait_state(&server, &first, &["succeeded", "failed", "interrupted", "cancelled", "timed_out"]);
    assert_ne!(ended["state"], "interrupted", "the server never stopped: {ended}");
    let next = wait_state(&server, &second, &["succeeded", "failed", "interrupted"]);
    assert_eq!(next["state"], "succeeded", "{next}");
    assert_eq!(server.get("next--app.localhost", "/").text(), "built\n");
    for id in [&first, &second] {
        let state = build(&server, id)["state"].as_str().unwrap().to_owned();
        receiver.wait(&format!("build {id} {state} to be notified"), Duration::from_secs(60), |r| {
            r.iter().any(|x| {
                x.header("x-chanto-event") == Some(&format!("build.{state}"))
                    && x.json().to_string().contains(id.as_str())
            })
        });
    }

    server.cli(&["env", "set", "--site", "app", "PAUSE", "600"]).ok();
    let third = start_build(&server, "main");
    wait_state(&server, &third, &["running"]);
    server.cli(&["env", "set", "--site", "app", "PAUSE", "0"]).ok();
    server.kill();
    let restarted = Instant::now();
    let server = stores.start(&data, &[]);
    let gone = build(&server, &third);
    assert_eq!(gone["state"], "interrupted", "recovered before the restarted server answers: {gone}");
    assert_eq!(gone["error"], "the server stopped while this build ran", "{gone}");
    // The node is DATA/node-id alone (no host name: a container recreated
    // with a new one on the same volume is the same node).
    let node_id = std::fs::read_to_string(data.join("node-id")).unwrap();
    assert_eq!(gone["runner"].as_str(), Some(node_id.trim()), "{gone}");
    let all = server.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    let retry = all.as_array().unwrap().iter().find(|r| r["retry_of"] == third.as_str()).expect("a retry").clone();
    let retried = wait_state(&server, retry["id"].as_str().unwrap(), &["succeeded", "failed", "interrupted"]);
    assert_eq!(retried["state"], "succeeded", "{retried}");
    eprintln!("a restarted node's build was retried and done {:?} after the restart", restarted.elapsed());
}

/// A build another server took over (marked interrupted in the database, as
/// a node that judged its heartbeat late does) after its last heartbeat:
/// its runner checks ownership before the deploy goes live, and does not
/// activate it.
#[test]
fn a_build_taken_over_before_its_deploy_does_not_go_live() {
    let pg = pg::shared();
    let url = pg.create_database("lost");
    let db = url.rsplit('/').next().unwrap().to_owned();
    // The default timeout: heartbeats every 15 s, so the runner's watch
    // usually does not notice before the build's end.
    let stores = shared_stores(&url, &[]);
    let tmp = reachable_tempdir();
    let server = stores.start(&tmp.path().join("data"), &[]);
    let repo = Repo::new(&tmp.path().join("repo"));
    connect_slow_site(&server, &repo);
    server.cli(&["env", "set", "--site", "app", "PAUSE", "3"]).ok();
    let id = start_build(&server, "main");
    wait_state(&server, &id, &["running"]);
    pg.psql(
        &db,
        &format!(
            "UPDATE builds SET state = 'interrupted', error = 'taken over by the test', finished_at = 1 WHERE id = '{id}'"
        ),
    );
    util::wait_for("the runner to give the build up", Duration::from_secs(30), || {
        let e = server.stderr();
        (e.contains("not activating it") || e.contains("stopping it here")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let b = build(&server, &id);
    assert_eq!((&b["state"], &b["deploy"]), (&"interrupted".into(), &serde_json::Value::Null), "{b}");
    assert_ne!(server.get("app.localhost", "/").text(), "built\n", "the taken-over build went live");
}

/// The server is asked to stop while PostgreSQL is away and a build's end
/// waits for it: it stops without waiting out that retry loop, and its next
/// start recovers the build (interrupted, retried).
#[test]
fn a_server_stopping_during_an_outage_gives_up_recording_a_builds_end() {
    let pg = pg::PgServer::start();
    let url = pg.create_database("stop_in_outage");
    let stores = shared_stores(&url, &[]);
    let tmp = reachable_tempdir();
    let data = tmp.path().join("data");
    let server = stores.start(&data, &[]);
    let repo = Repo::new(&tmp.path().join("repo"));
    connect_slow_site(&server, &repo);
    server.cli(&["env", "set", "--site", "app", "PAUSE", "5"]).ok();
    let id = start_build(&server, "main");
    wait_state(&server, &id, &["running"]);
    pg.stop();
    util::wait_for("the end of the build to wait for the database", Duration::from_secs(60), || {
        server.stderr().contains("recording the end of a build failed; retrying").then_some(())
    });
    let asked = Instant::now();
    server.terminate();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
    pg.start_again();
    let server = stores.start(&data, &[]);
    let gone = build(&server, &id);
    assert_eq!(gone["state"], "interrupted", "{gone}");
    let all = server.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    let retry = all.as_array().unwrap().iter().find(|r| r["retry_of"] == id.as_str()).expect("a retry").clone();
    let retried = wait_state(&server, retry["id"].as_str().unwrap(), &["succeeded", "failed", "interrupted"]);
    assert_eq!(retried["state"], "succeeded", "{retried}");
}

/// The heartbeat timeout and the node id file are checked at start: a bad
/// value stops the server with the flag or the file named and the fix.
#[test]
fn a_bad_heartbeat_timeout_or_node_id_stops_the_server_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let args =
            [&["serve", "--data", data_arg, "--edge", "127.0.0.1:0", "--api", "127.0.0.1:0"][..], extra].concat();
        util::Cli::new(&[&args[..], &["--admin", "127.0.0.1:0"]].concat()).fails().stderr()
    };
    for (value, want) in
        [("10ms", "at least 5s"), ("0s", "at least 5s"), ("4s", "clock skew"), ("soon", "--build-heartbeat-timeout")]
    {
        let e = serve(&["--build-heartbeat-timeout", value]);
        assert!(e.contains(want), "{value}: {e}");
    }
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node-id"), "../ ~~ \u{2603}\n").unwrap();
    let e = serve(&[]);
    assert!(e.contains("node-id") && e.contains("delete it"), "{e}");
}
