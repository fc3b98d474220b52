//! The chaos suite: one control plane on PostgreSQL and an S3-compatible
//! store, three edge nodes in zones a, b and c, and HAProxy in front of them,
//! under a constant-rate load over 20 sites while a deploy lands every 500 ms.
//! Then, in turn: zone a's edge killed (-9); PostgreSQL stopped, then frozen
//! (SIGSTOP); the object store down for the edges; a snapshot that names a
//! blob the store lost; the control plane down and an edge restarted; an
//! edge drained. Every real process runs on loopback; the run is bounded
//! (about a minute; `CHANTO_SOAK=SECONDS` stretches every phase for a
//! longer soak). The connection cap and its sorry page are proven on one
//! node in `chanto-edge/tests/overload.rs`.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chanto_testkit::pg::PgServer;
use chanto_testkit::s3::{Fault, FaultProxy, S3Server};
use util::edge::{AWS_ENV, EdgeProc};
use util::haproxy::HaProxy;
use util::{Server, http_get, http_request, wait_for, write_tree};

const SITES: usize = 20;
/// Requests per second the load sends, in all.
const RATE: u64 = 200;

/// How long each phase runs.
fn phase() -> Duration {
    std::env::var("CHANTO_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3))
}

fn site(i: usize) -> String {
    format!("s{i:02}")
}

/// A page naming its site and deploy number, and an inline check value
/// computed from both (a page whose parts came from two deploys fails it).
fn page(site: &str, n: u64) -> String {
    format!("<!doctype html><title>{site}</title><p>deploy {n} of {site}</p><p>check {}</p>", check(site, n))
}

fn check(site: &str, n: u64) -> u64 {
    blake3::hash(format!("{site}/{n}").as_bytes()).as_bytes()[0] as u64 * 1000 + n
}

/// The deploy number a response names, if it is a whole, consistent page of `site`.
fn parse_page(site: &str, body: &str) -> Option<u64> {
    let rest = body.strip_prefix(&format!("<!doctype html><title>{site}</title><p>deploy "))?;
    let (n, rest) = rest.split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    (rest == format!("of {site}</p><p>check {}</p>", check(site, n))).then_some(n)
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// (when sent, site index, deploy number seen)
    seen: Mutex<Vec<(Instant, usize, u64)>>,
    failures: Mutex<Vec<String>>,
    /// The phase the run is in, to name in each failure.
    phase: Mutex<&'static str>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let phase = *self.phase.lock().unwrap();
        self.failures.lock().unwrap().push(format!("[{phase}] {what}"));
    }
}

/// A constant-rate load through `addr` over every site's front page until `stop`.
fn load(addr: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let threads = 8u64;
    (0..threads)
        .map(|t| {
            let (addr, tally, stop) = (addr.clone(), tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let every = Duration::from_micros(1_000_000 * threads / RATE);
                let mut next = Instant::now() + every.mul_f64(t as f64 / threads as f64);
                let mut i = t as usize;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += every;
                    i = (i + 1) % SITES;
                    let s = site(i);
                    let sent = Instant::now();
                    let r = http_get(&addr, &format!("{s}.localhost"), "/");
                    match r {
                        Ok(r) if r.status == 200 => match parse_page(&s, &r.text()) {
                            Some(n) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                tally.seen.lock().unwrap().push((sent, i, n));
                            }
                            None => tally.fail(format!("{s}: a page that is not whole: {}", r.text())),
                        },
                        Ok(r) => tally.fail(format!("{s}: {} {}", r.status, r.text())),
                        Err(e) => tally.fail(format!("{s}: {e}")),
                    }
                }
            })
        })
        .collect()
}

/// A deploy that went live everywhere: when its activation answered.
struct Landed {
    site: usize,
    n: u64,
    answered: Instant,
    /// The activation's `edges` report.
    edges: serde_json::Value,
}

/// Deploys every 500 ms (the next site each time) until `stop`; records
/// which went live on every edge and which failed, with how long they took.
struct Deployer {
    landed: Mutex<Vec<Landed>>,
    failed: Mutex<Vec<(Duration, String)>>,
    counter: Mutex<HashMap<usize, u64>>,
}

impl Deployer {
    fn deploy(&self, control: &ControlRef, dir: &Path, i: usize) -> Result<serde_json::Value, (Duration, String)> {
        let n = {
            let mut c = self.counter.lock().unwrap();
            let n = c.entry(i).or_insert(0);
            *n += 1;
            *n
        };
        let s = site(i);
        let d = dir.join(format!("{s}-{n}"));
        write_tree(&d, &[("index.html", &page(&s, n))]);
        let started = Instant::now();
        let run = control.cli(&["deploy", d.to_str().unwrap(), "--site", &s, "--json"]).run();
        if run.out.status.success() {
            let answer = run.json();
            let edges = &answer["edges"];
            if edges["live"] == edges["total"] {
                self.landed.lock().unwrap().push(Landed { site: i, n, answered: Instant::now(), edges: edges.clone() });
            }
            Ok(answer)
        } else {
            let e = (started.elapsed(), run.stderr());
            self.failed.lock().unwrap().push(e.clone());
            Err(e)
        }
    }
}

/// The control plane, which the test replaces when it restarts it.
#[derive(Clone)]
struct ControlRef(Arc<Mutex<Option<(String, String)>>>);

impl ControlRef {
    fn set(&self, server: &Server) {
        *self.0.lock().unwrap() = Some((server.api_url.clone(), server.token.clone()));
    }
    fn clear(&self) {
        *self.0.lock().unwrap() = None;
    }
    fn cli(&self, args: &[&str]) -> util::Cli {
        let (url, token) = self.0.lock().unwrap().clone().unwrap_or(("http://127.0.0.1:9".into(), "x".into()));
        let mut c = util::Cli::new(args);
        c.cmd.env("CHANTO_SERVER", url).env("CHANTO_TOKEN", token);
        c
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    pg: PgServer,
    meta_url: String,
    s3: S3Server,
    bucket: String,
    proxy: FaultProxy,
    token: PathBuf,
}

impl Setup {
    /// Where chanto keeps blobs: a prefix of the test bucket.
    fn blobs(&self) -> String {
        format!("s3://{}/prod", self.bucket)
    }

    /// The control plane, on `api` (the same address when it restarts: the
    /// edges were told where it is).
    fn start_control(&self, api: &str) -> Server {
        let endpoint = self.s3.endpoint();
        Server::start_cmd_env(
            "serve",
            &self.tmp.path().join("control"),
            &[
                "--api",
                api,
                "--role",
                "control",
                "--meta",
                &self.meta_url,
                "--blobs",
                &self.blobs(),
                "--s3-endpoint",
                &endpoint,
                "--edge-wait",
                "3s",
                // Over one heartbeat (5 s): an edge counts in every activation
                // from one heartbeat to the next.
                "--node-timeout",
                "7s",
                "--build-concurrency",
                "0",
                "--no-notifications",
            ],
            &AWS_ENV,
        )
    }

    fn start_edge(&self, zone: &str, control: &str) -> EdgeProc {
        self.start_edge_at(zone, control, &[])
    }

    /// An edge node with extra flags (`--edge ADDR --admin ADDR` to restart
    /// it where HAProxy knows it).
    fn start_edge_at(&self, zone: &str, control: &str, extra: &[&str]) -> EdgeProc {
        let mut args = vec!["--drain-grace", "1s"];
        args.extend_from_slice(extra);
        EdgeProc::start(
            &self.tmp.path().join(format!("edge-{zone}")),
            zone,
            control,
            &self.token,
            &self.blobs(),
            &self.proxy.endpoint(),
            &args,
        )
    }
}

#[test]
fn three_zones_keep_serving_through_a_dead_zone_a_dead_database_a_dead_object_store_and_a_dead_control_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let meta_url = pg.create_database("zones");
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let proxy = FaultProxy::start(s3.addr());
    let setup = Setup { token: tmp.path().join("node.token"), tmp, pg, meta_url, bucket, s3, proxy };
    let api_addr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let control = setup.start_control(&api_addr);
    control.cli(&["nodes", "token", "create", "edges", "--output", setup.token.to_str().unwrap()]).ok();
    let api = control.api_url.clone();
    let mut edges: HashMap<&str, EdgeProc> =
        ["a", "b", "c"].into_iter().map(|z| (z, setup.start_edge(z, &api))).collect();
    let control_ref = ControlRef(Arc::default());
    control_ref.set(&control);
    let work = setup.tmp.path().join("sites");
    let deployer = Arc::new(Deployer { landed: Mutex::default(), failed: Mutex::default(), counter: Mutex::default() });
    for i in 0..SITES {
        control.cli(&["sites", "create", &site(i)]).ok();
        let answer = deployer.deploy(&control_ref, &work, i).unwrap();
        assert_eq!(answer["edges"]["live"], 3, "{answer:#}");
    }
    for e in edges.values() {
        wait_for("every edge ready", Duration::from_secs(10), || (e.ready_status() == 200).then_some(()));
    }
    let targets: Vec<(&str, &str)> =
        ["a", "b", "c"].iter().map(|z| (edges[z].edge.as_str(), edges[z].admin.as_str())).collect();
    let mut haproxy = HaProxy::start_readme(&targets);
    wait_for("haproxy serving", Duration::from_secs(10), || {
        haproxy.check_running();
        http_get(&haproxy.addr, "s00.localhost", "/").ok().filter(|r| r.status == 200)
    });

    // The load, and a deploy every 500 ms.
    let tally = Arc::new(Tally::default());
    *tally.phase.lock().unwrap() = "steady";
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(haproxy.addr.clone(), tally.clone(), stop.clone());
    let deploying = Arc::new(AtomicBool::new(true));
    let deploy_thread = {
        let (d, c, w, stop, on) =
            (deployer.clone(), control_ref.clone(), work.clone(), stop.clone(), deploying.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if on.load(Ordering::Relaxed) {
                    let _ = d.deploy(&c, &w, i % SITES);
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
            }
        })
    };
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "zone a killed";
    // 1. Zone a's edge dies at once.
    edges.remove("a").unwrap().kill();
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "postgres stopped";
    // 2. PostgreSQL stops: edges serve on; deploys fail fast, naming the
    // metadata store; then it comes back and deploys work again.
    deploying.store(false, Ordering::Relaxed);
    setup.pg.stop();
    let started = Instant::now();
    let err = deployer.deploy(&control_ref, &work, 0).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "a deploy with the database down took {:?}", started.elapsed());
    assert!(err.1.contains("metadata store"), "{}", err.1);
    std::thread::sleep(phase());
    setup.pg.start_again();
    wait_for("deploys to work again", Duration::from_secs(20), || deployer.deploy(&control_ref, &work, 1).ok());
    deploying.store(true, Ordering::Relaxed);
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "postgres frozen";
    // 3. PostgreSQL frozen (SIGSTOP): the same, no hang.
    deploying.store(false, Ordering::Relaxed);
    let frozen = setup.pg.freeze();
    let started = Instant::now();
    let err = deployer.deploy(&control_ref, &work, 2).unwrap_err();
    let took = started.elapsed();
    drop(frozen);
    assert!(took < Duration::from_secs(5), "a deploy with the database frozen took {took:?}: {}", err.1);
    assert!(err.1.contains("metadata store"), "{}", err.1);
    wait_for("deploys to work again", Duration::from_secs(20), || deployer.deploy(&control_ref, &work, 3).ok());
    deploying.store(true, Ordering::Relaxed);

    *tally.phase.lock().unwrap() = "object store down";
    // 4. The object store is down for the edges: what they hold is served;
    // a file none has read gets a prompt 503.
    let big = setup.tmp.path().join("big");
    let mut files = vec![("index.html".to_owned(), page("s19", 1000))];
    files.push(("big.bin".to_owned(), "x".repeat(600 << 10)));
    write_tree(&big, &files.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect::<Vec<_>>());
    deploying.store(false, Ordering::Relaxed);
    control_ref.cli(&["deploy", big.to_str().unwrap(), "--site", "s19", "--json"]).ok();
    deployer.counter.lock().unwrap().insert(19, 1000);
    setup.proxy.set(Fault::Unavailable);
    let started = Instant::now();
    let r = http_get(&edges["b"].edge, "s19.localhost", "/big.bin").unwrap();
    assert_eq!(r.status, 503, "an uncached blob with the object store down: {}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    std::thread::sleep(phase());
    setup.proxy.set(Fault::None);
    deploying.store(true, Ordering::Relaxed);
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "lost blob";
    // 5. A blob the store lost behind chanto's back: the snapshot that
    // needs it is refused by every edge, the deploy names them, and no
    // request fails; the next good deploy of the site heals it.
    deploying.store(false, Ordering::Relaxed);
    let lost = setup.tmp.path().join("lost");
    let lost_page = page("s18", 5000);
    write_tree(&lost, &[("index.html", &lost_page)]);
    let draft = control_ref.cli(&["deploy", lost.to_str().unwrap(), "--site", "s18", "--draft", "--json"]).ok().json();
    let hex = blake3::hash(lost_page.as_bytes()).to_hex().to_string();
    std::fs::remove_file(setup.s3.object_file(&setup.bucket, &format!("prod/blobs/{}/{}", &hex[..2], &hex[2..])))
        .unwrap();
    let answer = control_ref.cli(&["publish", draft["deploy"]["id"].as_str().unwrap(), "--json"]).ok().json();
    assert_eq!(answer["edges"]["live"], 0, "{answer:#}");
    assert_eq!(answer["edges"]["refused"].as_array().map(Vec::len), Some(2), "{answer:#}");
    std::thread::sleep(phase());
    deployer.counter.lock().unwrap().insert(18, 6000);
    deployer.deploy(&control_ref, &work, 18).unwrap();
    deploying.store(true, Ordering::Relaxed);
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "control down, edge restarted";
    // 6. The control plane goes away; an edge restarts and serves from its disk.
    deploying.store(false, Ordering::Relaxed);
    control_ref.clear();
    control.kill();
    let old_b = edges.remove("b").unwrap();
    let (edge_addr, admin_addr) = (old_b.edge.clone(), old_b.admin.clone());
    old_b.kill();
    let b = setup.start_edge_at("b", &api, &["--edge", &edge_addr, "--admin", &admin_addr]);
    wait_for("edge b ready from its disk", Duration::from_secs(10), || (b.ready_status() == 200).then_some(()));
    for i in 0..SITES {
        let r = b.get(&format!("{}.localhost", site(i)), "/");
        assert!(r.status == 200 && parse_page(&site(i), &r.text()).is_some(), "{} from disk: {}", site(i), r.status);
    }
    let age = b.metric("chanto_edge_routing_age_seconds").unwrap();
    std::thread::sleep(phase());
    assert!(b.metric("chanto_edge_routing_age_seconds").unwrap() > age);
    edges.insert("b", b);
    let control = setup.start_control(&api_addr);
    control_ref.set(&control);
    deploying.store(true, Ordering::Relaxed);
    std::thread::sleep(phase());

    *tally.phase.lock().unwrap() = "drain";
    // 7. Zone c's edge is drained under load.
    let r = http_request(&edges["c"].admin, "POST", "admin", "/drain", &[], b"").unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let mut c = edges.remove("c").unwrap();
    wait_for("the drained edge to exit", Duration::from_secs(30), || c.child.try_wait().unwrap());
    std::thread::sleep(phase());

    stop.store(true, Ordering::Relaxed);
    for t in loaders {
        t.join().unwrap();
    }
    deploy_thread.join().unwrap();

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap();
    assert!(ok > RATE * 10, "the load ran: {ok} answers");
    let mut by_phase = std::collections::BTreeMap::<&str, usize>::new();
    for f in failures.iter() {
        *by_phase.entry(f.split(']').next().unwrap_or_default().trim_start_matches('[')).or_default() += 1;
    }
    let landed_n = deployer.landed.lock().unwrap().len();
    let failed_deploys = deployer.failed.lock().unwrap().len();
    eprintln!(
        "chaos run: {ok} answered whole, {failed} failed ({by_phase:?}); {landed_n} deploys live on every edge, {failed_deploys} failed"
    );
    assert!(
        failed * 10_000 < ok + failed,
        "{failed} of {} requests failed (at most 0.01% may); by phase {by_phase:?}: {:?}",
        ok + failed,
        &failures[..failures.len().min(20)]
    );
    // A deploy whose activation said "live on every edge" is what every
    // later request sees (or newer).
    let seen = tally.seen.lock().unwrap();
    let landed = deployer.landed.lock().unwrap();
    let mut stale = Vec::new();
    for l in landed.iter() {
        for (sent, i, n) in seen.iter() {
            if *i == l.site && *sent > l.answered + Duration::from_millis(50) && *n < l.n {
                stale.push(format!(
                    "{} deploy {} answered live ({}), then a request {:?} later saw deploy {n}",
                    site(*i),
                    l.n,
                    l.edges,
                    *sent - l.answered
                ));
            }
        }
    }
    assert!(stale.is_empty(), "{:?}", &stale[..stale.len().min(10)]);
    assert!(landed.len() >= 20 + 5, "deploys landed during the run: {}", landed.len());
}
