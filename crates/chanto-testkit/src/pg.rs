//! A throwaway PostgreSQL server for tests: `initdb` in a temp dir, `postgres`
//! on a free loopback port with `fsync=off` (or, for the benchmarks,
//! [`Durability::LikeSqliteWal`]), trust authentication. One is
//! shared per test binary ([`shared`]); each test makes its own database
//! ([`PgServer::create_database`]) so tests never see each other's rows. A
//! test that stops the server makes its own ([`PgServer::start`]).
//!
//! The server runs under a small `sh` watchdog that reads its standard input:
//! when the test process exits, for whatever reason, that pipe closes and the
//! watchdog stops the server, so no server outlives its tests.
//!
//! [`shared_tls`] is a second server with TLS on (a certificate of a test CA,
//! see [`crate::tls`]) and users that may connect only over TLS. As root (CI,
//! `scripts/test`) the server runs as the `postgres` user, as PostgreSQL
//! refuses to run as root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser the tests connect as (trust authentication: no password).
pub const USER: &str = "postgres";

/// How durable the server's writes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: a crash
    /// of the machine may corrupt the database. Fast; for tests.
    Tests,
    /// `fsync=on`, `synchronous_commit=off`, `full_page_writes=on`: the same
    /// promise as chanto's SQLite (WAL, `synchronous=NORMAL`): never corrupt
    /// after a power loss, though the last commits before it may roll back.
    /// For benchmarks that compare PostgreSQL with SQLite.
    LikeSqliteWal,
}

impl Durability {
    fn settings(self) -> &'static str {
        match self {
            Durability::Tests => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::LikeSqliteWal => "-c fsync=on -c synchronous_commit=off -c full_page_writes=on",
        }
    }
}

/// A running (or stopped) test server.
pub struct PgServer {
    /// The loopback port it listens on.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    /// Kept so the directory lives as long as the server (none for the
    /// shared server, whose watchdog removes it).
    _tmp: Option<tempfile::TempDir>,
    as_root: bool,
    running: Mutex<Option<(Child, ChildStdin)>>,
    remove_dir_on_exit: bool,
    durability: Durability,
}

/// The server shared by every test of this test binary, started on first use.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::init(true, Durability::Tests))
}

/// A user of [`shared_tls`]'s server that may connect only over TLS
/// (`hostnossl … reject`; trusted over TLS, superuser): a connection that
/// silently fell back to plain TCP is refused.
pub const TLS_ONLY_USER: &str = "chanto_tls_only";
/// A user of [`shared_tls`]'s server that logs in with a SCRAM password
/// over TLS only (superuser).
pub const SCRAM_USER: &str = "chanto_scram";
/// [`SCRAM_USER`]'s password.
pub const SCRAM_PASSWORD: &str = "scram-secret-8c1f";
/// The DNS name [`shared_tls`]'s certificate holds (with 127.0.0.1); it
/// resolves nowhere: connect with `host=` it and `hostaddr=127.0.0.1`.
pub const TLS_SERVER_NAME: &str = "pg.chanto.test";

/// A PostgreSQL server with `ssl = on`, and the CAs to test it with.
pub struct TlsPg {
    /// The server (psql and `create_database` work as on any other).
    pub server: PgServer,
    /// The CA that signed the server's certificate (for
    /// [`TLS_SERVER_NAME`] and 127.0.0.1).
    pub ca: crate::tls::TestCa,
    /// A CA that signed nothing the server shows.
    pub other_ca: crate::tls::TestCa,
}

impl TlsPg {
    /// `postgres://USER@127.0.0.1:PORT/DB?QUERY` (no `?` when `query` is empty).
    pub fn url(&self, user: &str, db: &str, query: &str) -> String {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("postgres://{user}@127.0.0.1:{}/{db}{q}", self.server.port)
    }
}

/// The TLS server shared by every test of this test binary, started on first
/// use: `ssl = on` with a certificate of a fresh [`crate::tls::TestCa`],
/// plain TCP still allowed except for [`TLS_ONLY_USER`] and [`SCRAM_USER`].
/// Its files (certificates included) go when the process exits.
pub fn shared_tls() -> &'static TlsPg {
    static SERVER: OnceLock<TlsPg> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = PgServer::prepare(true, Durability::Tests);
        let tls = server.dir.join("tls");
        let ca = crate::tls::TestCa::in_dir(&tls, "ca");
        let other_ca = crate::tls::TestCa::in_dir(&tls, "other-ca");
        let leaf = ca.issue(&[TLS_SERVER_NAME, "127.0.0.1"]);
        if server.as_root {
            // PostgreSQL reads its key only if it owns it (mode 0600).
            run(Command::new("chown").args([USER, "--"]).arg(&leaf.key), "chown of the server key");
        }
        let data = server.dir.join("data");
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(
            &mut conf,
            format!(
                "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                leaf.cert.display(),
                leaf.key.display()
            )
            .as_bytes(),
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 hostnossl all {TLS_ONLY_USER} 127.0.0.1/32 reject\n\
                 hostssl all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all {SCRAM_USER} 127.0.0.1/32 reject\n\
                 host all all 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        server.start_again();
        server.psql(
            "postgres",
            &format!(
                "CREATE ROLE {TLS_ONLY_USER} LOGIN SUPERUSER; CREATE ROLE {SCRAM_USER} LOGIN SUPERUSER PASSWORD '{SCRAM_PASSWORD}'"
            ),
        );
        TlsPg { server, ca, other_ca }
    })
}

/// Where PostgreSQL's server binaries are: the highest version under
/// /usr/lib/postgresql (Debian), else wherever `postgres` is on the PATH.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("postgres").exists() && dir.join("initdb").exists() {
            return dir;
        }
    }
    panic!(
        "these tests need a PostgreSQL server and none is installed: `apt-get install postgresql` \
         (scripts/test installs it)"
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Single-quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl PgServer {
    /// Starts a server of the caller's own (e.g. one the test stops and
    /// starts again); it stops when dropped.
    pub fn start() -> PgServer {
        Self::init(false, Durability::Tests)
    }

    /// Like [`PgServer::start`], with the durability given.
    pub fn start_with(durability: Durability) -> PgServer {
        Self::init(false, durability)
    }

    fn init(shared: bool, durability: Durability) -> PgServer {
        let server = Self::prepare(shared, durability);
        server.start_again();
        server
    }

    /// `initdb` in a temp dir and a free port; not started yet.
    fn prepare(shared: bool, durability: Durability) -> PgServer {
        let bin = find_bin();
        let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let tmp = tempfile::Builder::new().prefix("chanto-pg-").tempdir().expect("a temp dir for PostgreSQL");
        let dir = tmp.path().to_path_buf();
        if as_root {
            run(Command::new("chown").args([USER, "--"]).arg(&dir), "chown of the PostgreSQL dir");
        }
        let mut initdb = Self::as_server_user(as_root, &bin.join("initdb"));
        // The server user may not be allowed into the test's directory.
        initdb.current_dir(&dir).arg("-D").arg(dir.join("data")).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(&mut initdb, "initdb");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // The shared server is never dropped: its watchdog removes the dir.
        let tmp = if shared {
            std::mem::forget(tmp);
            None
        } else {
            Some(tmp)
        };
        PgServer {
            port,
            bin,
            dir,
            _tmp: tmp,
            as_root,
            running: Mutex::new(None),
            remove_dir_on_exit: shared,
            durability,
        }
    }

    fn as_server_user(as_root: bool, program: &Path) -> Command {
        if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", USER, "--regid", USER, "--clear-groups", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Starts the (stopped) server again on the same port and data, and waits
    /// until it accepts connections.
    pub fn start_again(&self) {
        let mut running = self.running.lock().unwrap();
        assert!(running.is_none(), "the server is already running");
        let prefix = if self.as_root {
            format!("setpriv --reuid {USER} --regid {USER} --clear-groups -- ")
        } else {
            String::new()
        };
        let dir = sh_quote(&self.dir.to_string_lossy());
        let postgres = sh_quote(&self.bin.join("postgres").to_string_lossy());
        // The watchdog: runs the server until its standard input closes (the
        // test process ended or `stop` was called), then stops it fast.
        let script = format!(
            "{prefix}{postgres} -D {dir}/data -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
               {durability} -c max_connections=300 \
               >>{dir}/server.log 2>&1 &
             pid=$!
             read _
             kill -INT $pid
             wait $pid
             {cleanup}",
            port = self.port,
            durability = self.durability.settings(),
            cleanup = if self.remove_dir_on_exit { format!("rm -rf {dir}") } else { String::new() }
        );
        let mut child = Command::new("sh")
            .current_dir(&self.dir)
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting PostgreSQL");
        let stdin = child.stdin.take().expect("the watchdog's stdin");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // pg_isready polls the observable event: the server answering.
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("PostgreSQL exited at start ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start within 60 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        *running = Some((child, stdin));
    }

    /// Stops the server (fast shutdown: open connections are cut) and waits
    /// until it has exited.
    pub fn stop(&self) {
        let Some((mut child, stdin)) = self.running.lock().unwrap().take() else { return };
        drop(stdin);
        let _ = child.wait();
    }

    /// Freezes the server (SIGSTOP to the postmaster and every backend): it
    /// keeps its sockets, the kernel still accepts connections, and nothing
    /// answers, as a server host that hangs. Thawed (SIGCONT) when the guard
    /// drops.
    pub fn freeze(&self) -> Frozen {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        let master: u32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).expect("the postmaster's pid");
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the comm may hold spaces, so split after ')'.
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        let frozen = Frozen { pids };
        frozen.signal("STOP");
        frozen
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The directory of PostgreSQL's programs (psql, pg_dump, pg_isready).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The URL of database `db` (no password: trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database named after `prefix` and returns its URL.
    pub fn create_database(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}_{}_{}",
            prefix.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL in database `db` with `psql` and returns what it printed
    /// (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", db, "-c", sql])
            .output()
            .expect("running psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A plain-SQL dump of database `db` (`pg_dump`), to search for secrets.
    pub fn dump(&self, db: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", db])
            .output()
            .expect("running pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A frozen server ([`PgServer::freeze`]); thawed on drop.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    fn signal(&self, sig: &str) {
        for p in &self.pids {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(p.to_string()).status();
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.signal("CONT");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
