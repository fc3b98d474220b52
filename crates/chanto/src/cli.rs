//! Command-line arguments. Parsing only: nothing here does anything.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The help heading of the flags that only client commands read, so that
/// `serve --help` and `demo --help` list the server's own flags first.
const CLIENT: &str = "Client options (commands that talk to a server)";

/// chanto: self-hosted static-site hosting with instant deploys and rollbacks.
#[derive(Parser, Debug)]
#[command(name = "chanto", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true, help_heading = CLIENT)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API is and how to authenticate: flags, then CHANTO_SERVER /
/// CHANTO_TOKEN, then the file `chanto login` writes.
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// chanto API URL, e.g. http://127.0.0.1:8787 [env: CHANTO_SERVER]
    #[arg(long, global = true, value_name = "URL", help_heading = CLIENT)]
    pub server: Option<String>,
    /// API token [env: CHANTO_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true, help_heading = CLIENT)]
    pub token: Option<String>,
}

/// Commands that never talk to a server, and whether they print `--json`.
/// The client flags are hidden in their help (still accepted, and ignored),
/// so `chanto serve --help` lists only what `serve` reads.
const LOCAL_COMMANDS: [(&str, bool); 7] = [
    ("serve", false),
    ("demo", true),
    ("dev", false),
    ("backup", true),
    ("migrate", false),
    ("completions", false),
    ("man", false),
];

/// The command tree the binary parses: [`Cli`]'s, with the client flags
/// hidden on [`LOCAL_COMMANDS`]. A global flag that a subcommand already
/// has is not propagated again, so a hidden copy there stands in for it.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut root = Cli::command();
    let client: Vec<clap::Arg> = root.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    for (name, json) in LOCAL_COMMANDS {
        root = root.mut_subcommand(name, |mut sc| {
            for a in &client {
                sc = sc.arg(if json && a.get_id() == "json" {
                    a.clone().help_heading(None::<&str>)
                } else {
                    a.clone().hide(true)
                });
            }
            sc
        });
    }
    root
}

/// Parses the process's arguments (exits with clap's message on an error).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    Cli::from_arg_matches(&command().get_matches()).map_err(|e| e.format(&mut command())).unwrap_or_else(|e| e.exit())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the API and the edge in one process on embedded defaults.
    Serve(ServeArgs),
    /// Run the server and deploy the bundled example site: the quickest look at chanto.
    Demo(ServeArgs),
    /// Serve a local folder exactly as a deploy of it would be served (rules,
    /// headers, 404 page), and reload open pages when files change.
    #[command(after_help = "Examples:\n  \
        chanto dev ./public                          # http://127.0.0.1:8080/, pages reload on change\n  \
        chanto dev ./public --listen 127.0.0.1:8081  # another port (8080 is also `chanto serve`'s edge)\n  \
        chanto dev ./public --no-reload              # byte for byte what a deploy would send")]
    Dev(DevArgs),
    /// Save the server URL and a token for later commands.
    #[command(after_help = "Examples:\n  \
        chanto login --server http://127.0.0.1:8787 --token-stdin < chanto-data/admin.token\n  \
        chanto status   # check it: which server, is it healthy, does the token work")]
    Login(LoginArgs),
    /// Manage sites.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// Deploy a directory to a site (or what a project's firebase.json, netlify.toml or amplify.yml names).
    #[command(override_usage = "chanto deploy [OPTIONS] --site <SITE> [DIR]")]
    #[command(after_help = "Examples:\n  \
        chanto deploy ./public --site docs -m \"new pricing page\"   # live on production\n  \
        chanto deploy ./public --site docs --branch feature/login   # http://feature-login--docs.localhost:8080/\n  \
        chanto deploy ./public --site docs --draft                  # only at its permalink; `chanto publish ID` later\n  \
        chanto deploy --site docs                                   # in a Firebase, Netlify or Amplify project: its publish directory")]
    Deploy(DeployArgs),
    /// Inspect deploys.
    #[command(subcommand)]
    Deploys(DeploysCommand),
    /// Protect a site, a branch or every preview with passwords and network lists.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Connect a site to its git repository: every push builds and deploys.
    #[command(subcommand)]
    Git(GitCommand),
    /// Builds: list, show, follow logs, start, cancel.
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Build environment variables (site-wide or per branch; optionally secret).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Secret URLs that start a build when POSTed to (for a CMS, a cron job).
    #[command(subcommand, name = "build-hooks")]
    BuildHooks(HooksCommand),
    /// Notifications: email, Slack, Discord, signed webhooks, commit statuses and pull request comments.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Custom domains: add a name to a site (an apex brings its www twin), check it reaches this installation,
    /// choose the primary, set HTTPS redirects and HSTS.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto domains add example.com --site docs                      # and www.example.com\n  \
        chanto domains add staging.example.com --site docs --branch staging\n  \
        chanto domains list --site docs                                 # state, certificate, what to do next\n  \
        chanto domains verify example.com --site docs                   # once DNS points here\n  \
        chanto domains https --site docs --hsts-max-age 31536000")]
    Domains(DomainsCommand),
    /// Certificates: upload one (a wildcard, an EV certificate) for a domain, or the base domain's wildcard.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto certs upload --site docs --domain example.com --cert fullchain.pem --key privkey.pem\n  \
        chanto certs upload --base --cert wildcard.pem --key wildcard.key   # *.BASE: every <site> and preview host\n  \
        chanto certs base                                                 # the base domain's certificates")]
    Certs(CertsCommand),
    /// Activate a ready deploy on its branch (also: roll back to that deploy).
    #[command(after_help = "Examples:\n  \
        chanto deploys list --site docs   # find the deploy's id\n  \
        chanto publish 30fe4b3b2051d6ac")]
    Publish {
        /// The deploy id (see `chanto deploys list`).
        id: String,
    },
    /// Storage cleanup: prune deploys beyond each site's retention and
    /// delete blobs no deploy has referenced for the grace period
    /// (`chanto serve --gc-grace`). The server also does this every hour.
    Gc {
        /// Say what would go (deploys, blobs, bytes) without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-activate the deploy that was live before the current one; run it
    /// again to keep walking back, or jump with --to.
    #[command(after_help = "Examples:\n  \
        chanto rollback --site docs                        # back to what was live before; repeat to go further\n  \
        chanto rollback --site docs --branch staging\n  \
        chanto rollback --site docs --to 30fe4b3b2051d6ac  # straight to one deploy (`chanto deploys list --site docs`)")]
    Rollback {
        /// The site.
        #[arg(long)]
        site: String,
        /// The branch (default: the branch of --to, else the site's production branch).
        #[arg(long)]
        branch: Option<String>,
        /// Roll back to this deploy of the branch (see `chanto deploys list`).
        #[arg(long, value_name = "DEPLOY")]
        to: Option<String>,
    },
    /// Edge nodes: which ones the control plane hears from, in which zone,
    /// at which routing version; the tokens they authenticate with.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto nodes list                                         # zone, name, version, lag, last heartbeat\n  \
        chanto nodes token create edge-zone-a --output edge.token # then: chanto serve --role edge --node-token edge.token\n  \
        chanto nodes token revoke nt_0123456789abcdef")]
    Nodes(NodesCommand),
    /// Users and their roles (viewer, developer, admin): create, list, change, remove.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto users create alice --role admin --password-stdin < alice.pw   # the first admin, with the admin token\n  \
        chanto users create bob --role developer --password-stdin\n  \
        chanto users invite carol --role viewer                             # prints a one-time link\n  \
        chanto users set-role bob viewer\n  \
        chanto users set-sso bob 248289761001                               # link bob to his single sign-on subject\n  \
        chanto users list")]
    Users(UsersCommand),
    /// Personal API tokens: scoped (read, deploy, write, admin), optionally expiring, shown once.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto tokens create \"CI deploys\" --scope deploy --expires-in-days 90   # prints the token once\n  \
        chanto tokens list\n  \
        chanto tokens revoke pt_0123456789abcdef")]
    Tokens(TokensCommand),
    /// The audit log: every change made through the API or the CLI, newest first.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  \
        chanto audit list\n  \
        chanto audit list --actor alice --limit 20")]
    Audit(AuditCommand),
    /// Who the saved token says you are, and what it may do.
    Whoami,
    /// Which server, whether it is healthy, and whether the token works.
    Status,
    /// Print a site's URL (or a branch's), and open it in a browser when run in a terminal.
    Open {
        /// The site (default: the only one there is).
        #[arg(long)]
        site: Option<String>,
        /// A branch's URL instead of production's.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Back up an install, check a backup, restore one into a new data directory.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Copy a stopped install's metadata and blobs (DATA/meta.db, DATA/blobs)
    /// into PostgreSQL and an S3 bucket, verifying every blob's hash and every
    /// table's row count; resumable. Then run `chanto serve --data DATA --meta
    /// URL --blobs s3://…` on the same data directory (it keeps secret.key).
    Migrate(crate::migrate::MigrateArgs),
    /// Move a site in from AWS Amplify or Netlify: the JSON their tools print
    /// becomes a chanto.platform.toml and the site's rule files, with a report
    /// of what does not carry over. No network needed.
    #[command(subcommand)]
    Import(crate::import::ImportCommand),
    /// Write every site's settings, as they are live, as chanto.platform.toml.
    ///
    /// The file `chanto plan` reads: each site's production branch, git
    /// connection, build settings, variables, access policies, domains,
    /// notifications and retention. No secret's value is written: each
    /// secret is a reference (`env:VAR`, `file:PATH`), and standard error
    /// lists them with the settings they stand for. A reference no apply has
    /// set yet gets a name the export made up: set the value under it
    /// before `chanto plan`, which would otherwise show the value changing.
    /// Needs an admin token (the file carries password hashes).
    #[command(after_help = "Examples:\n  \
        chanto export --out chanto.platform.toml    # then commit it\n  \
        chanto export > chanto.platform.toml        # the same; the secret references go to standard error\n  \
        chanto export --json                        # the file and its secret references as JSON")]
    Export(crate::platform::ExportArgs),
    /// Show what applying a configuration would change, Terraform-style.
    ///
    /// Reads chanto.platform.toml (or -f FILE, or -f DIR: every *.toml file
    /// in DIR, in name order, subdirectories not read), checks it here (every
    /// problem named with file:line:column) and compares it with what is
    /// live: `+` create, `~` update with each field's before -> after
    /// (secrets shown as (sensitive)), `-` destroy. The file is the whole
    /// truth: a live site it does not declare is destroyed by `chanto
    /// apply`, which only does that with --allow-destroy.
    ///
    /// Secrets are references, read on this machine: `env:VAR` from this
    /// command's environment, `file:PATH` from a file (absolute, or relative
    /// to the configuration's directory; one trailing newline dropped; at
    /// most 64 KiB). Their values travel to the server over the API, as
    /// `chanto env set --secret` sends one; a saved plan keeps only
    /// fingerprints of them. Every reference that cannot be read is named
    /// with the file:line:column where it is written, and nothing is sent.
    ///
    /// Exit codes, as `terraform plan -detailed-exitcode`: 0 no changes, 2
    /// changes, 1 an error. Needs an admin token.
    #[command(after_help = "Examples:\n  \
        chanto plan                                 # ./chanto.platform.toml\n  \
        chanto plan -f platform/ --out plan.json    # every platform/*.toml; save the plan for `chanto apply plan.json`\n  \
        chanto plan --json                          # the plan for machines\n  \
        chanto plan; [ $? -eq 2 ] && echo \"changes to apply\"")]
    Plan(crate::platform::PlanArgs),
    /// Carry out a plan saved by `chanto plan --out PLAN`, or plan -f FILE now and apply it once you say yes.
    ///
    /// With -f (as `terraform apply` without a plan file) it plans the
    /// configuration, prints the plan and asks; only `yes` applies
    /// (--auto-approve applies without asking, and is needed when standard
    /// input is not a terminal).
    ///
    /// A saved plan is applied only if nothing it touches changed since the
    /// plan was made (else it names each conflict: make the plan again), in
    /// the plan's order. If a change fails, what was applied stays applied:
    /// fix the cause and run the same `chanto apply PLAN` again, which skips
    /// what is already in place. A plan that destroys anything is refused
    /// here, before anything is sent, unless --allow-destroy is given.
    ///
    /// Secrets are read again on this machine as `chanto plan` read them
    /// (`file:` references relative to the directory the plan was made in)
    /// and travel to the server over the API; a value that changed since the
    /// plan was made refuses the plan.
    ///
    /// Exit codes: 0 every change applied or already in place, 1 otherwise.
    /// Needs an admin token.
    #[command(after_help = "Examples:\n  \
        chanto plan --out plan.json && chanto apply plan.json   # plan exits 2 when there are changes: check it first\n  \
        chanto apply plan.json --allow-destroy                  # the plan deletes a site: let it\n  \
        chanto apply -f chanto.platform.toml                    # plan now, show it, apply on 'yes'")]
    Apply(crate::platform::ApplyArgs),
    /// Print a shell completion script: `chanto completions bash > ~/.local/share/bash-completion/completions/chanto`.
    Completions(crate::completions::CompletionsArgs),
    /// Print the man page, or write one page per command with --out DIR.
    Man(crate::completions::ManArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Data directory: metadata database, blobs, admin token.
    #[arg(long, value_name = "DIR", default_value = "chanto-data", env = "CHANTO_DATA")]
    pub data: PathBuf,
    /// Address the edge (the sites) listens on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub edge: SocketAddr,
    /// Also serve the sites over HTTPS on this address (e.g. 0.0.0.0:443):
    /// custom domains with a certificate (`chanto certs upload`), by SNI,
    /// HTTP/2 and HTTP/1.1, TLS 1.2 and 1.3. Names without a certificate get
    /// no handshake.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Address the API listens on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub api: SocketAddr,
    /// Extra CA certificates (a PEM file) that uploaded certificates may
    /// chain to, beside the system's trusted roots: a private or company CA.
    #[arg(long, value_name = "FILE")]
    pub certificate_roots: Option<PathBuf>,
    /// `chanto domains verify` connects here for every name instead of
    /// resolving it: the address of the load balancer in front of the
    /// edges when this server cannot reach them by their public names.
    #[arg(long, value_name = "ADDR")]
    pub domain_check_addr: Option<SocketAddr>,
    /// Order certificates for verified custom domains from this ACME CA
    /// (on by default with --https, from Let's Encrypt).
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// The contact address of the ACME account (expiry notices from the CA).
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// Extra CA certificates (PEM) to trust for the ACME CA's own HTTPS
    /// endpoint: a private CA such as step-ca.
    #[arg(long, value_name = "FILE")]
    pub acme_root: Option<PathBuf>,
    /// How the ACME CA checks a name: `http-01` (plain HTTP on port 80),
    /// `tls-alpn-01` (TLS on port 443; the edges need --https there) or
    /// `dns-01` (a TXT record your --acme-dns-hook publishes).
    #[arg(long, value_name = "KIND", value_enum, default_value_t = AcmeChallenge::Http01)]
    pub acme_challenge: AcmeChallenge,
    /// The program that publishes DNS-01 TXT records at your DNS provider:
    /// run as `HOOK present|cleanup _acme-challenge.NAME. VALUE` (lego's
    /// `exec` interface; see README). `present` exits 0 once the record is live.
    #[arg(long, value_name = "PATH")]
    pub acme_dns_hook: Option<PathBuf>,
    /// External Account Binding key id, for CAs that require one (ZeroSSL,
    /// most commercial and in-house CAs); with --acme-eab-key-file.
    #[arg(long, value_name = "KID", requires = "acme_eab_key_file")]
    pub acme_eab_kid: Option<String>,
    /// A file holding the External Account Binding HMAC key, base64url, as
    /// the CA shows it (a file, so the key is in no process list).
    #[arg(long, value_name = "FILE", requires = "acme_eab_kid")]
    pub acme_eab_key_file: Option<PathBuf>,
    /// Order no certificates (only uploaded ones are served).
    #[arg(long, conflicts_with_all = ["acme_directory", "acme_email", "acme_root", "acme_eab_kid", "acme_dns_hook"])]
    pub no_acme: bool,
    /// Address of the admin listener: /healthz, /readyz, /metrics; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8790")]
    pub admin: SocketAddr,
    /// Write an access log of the edge as JSON lines to this file (`-` for standard output).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,
    /// Response bodies of at least this many bytes go from the page cache
    /// straight to the socket (sendfile) on plain HTTP/1 connections; a size
    /// larger than any file turns that off.
    #[arg(long, value_name = "BYTES", default_value_t = chanto_edge::ZEROCOPY_MIN)]
    pub sendfile_min: u64,
    /// After SIGTERM or `POST /drain` (admin listener), keep serving this
    /// long with /readyz answering 503, so load balancers move traffic
    /// away; then close idle connections, finish in-flight responses and
    /// exit. A second SIGTERM or Ctrl-C ends the wait early.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_grace: std::time::Duration,
    /// Most connections the edge keeps open at once; above it a new
    /// connection gets the sorry page (503, Retry-After) at once and is closed.
    #[arg(long, value_name = "N", default_value_t = chanto_edge::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// The node's sorry page (an HTML file, at most 1 MiB), shown above a cap
    /// to sites without a sorry page of their own (default: a built-in page).
    #[arg(long, value_name = "FILE")]
    pub sorry_page: Option<PathBuf>,
    /// Ask this URL about every request to a site before answering it, as
    /// nginx's auth_request: a GET with the visitor's headers and
    /// X-Original-Method, X-Original-Host, X-Original-URI. 2xx lets the
    /// request through, 401 and 403 go to the visitor, anything else (or no
    /// answer within --auth-request-timeout) is an error handled per
    /// --auth-request-on-error.
    #[arg(long, value_name = "URL", requires = "auth_request_on_error")]
    pub auth_request: Option<String>,
    /// How long the --auth-request service may take to answer.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub auth_request_timeout: std::time::Duration,
    /// What an --auth-request error does: `open` lets the request through
    /// (the site stays up, unchecked), `closed` answers 503 with the sorry
    /// page (the site is down while the service is). Required with --auth-request.
    #[arg(long, value_enum, value_name = "open|closed")]
    pub auth_request_on_error: Option<FilterOnError>,
    /// Domain sites are served under: <site>.<domain>, <branch>--<site>.<domain>.
    #[arg(long, value_name = "DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// Request header holding the client's country code, set by a load balancer
    /// or CDN you trust (e.g. CloudFront-Viewer-Country); rules with country
    /// conditions match only through it. It is read only from peers in
    /// --trusted-proxy: anyone else could send any value.
    #[arg(long, value_name = "HEADER", value_parser = parse_header_name)]
    pub country_header: Option<axum::http::HeaderName>,
    /// An origin (scheme://host[:port]) that rules rewriting to an absolute
    /// URL may proxy to; repeatable. The operator's ceiling: a site's rules
    /// reach an origin only if it is here *and* in the site's own list
    /// (`chanto sites proxy-origins SITE --set ORIGIN`). Others answer 502.
    #[arg(long, value_name = "ORIGIN")]
    pub proxy_origin: Vec<String>,
    /// Serve branches, pull-request previews and permalinks under this domain
    /// (<branch>--<site>.<domain>) instead of --base-domain, which then
    /// serves production only. A registrable domain of its own keeps preview
    /// pages (whose rule files a fork's author chose) from setting cookies
    /// for production sites or counting as same-site with them.
    #[arg(long, value_name = "DOMAIN")]
    pub preview_domain: Option<String>,
    /// The base domain (and --preview-domain) are on the Public Suffix
    /// List: do not warn at start that sites under them share cookies.
    #[arg(long)]
    pub public_suffix_listed: bool,
    /// A proxy (CIDR) whose X-Forwarded-For the edge believes for the client
    /// address (network lists, password throttling); repeatable.
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// How long a deploy may stay unfinalized before it expires (e.g. 30m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub upload_ttl: std::time::Duration,
    /// How long a blob no deploy references stays before garbage
    /// collection deletes it (e.g. 1h, 2d; 0s: at the next pass). Keep it at
    /// least --upload-ttl when several chanto processes share one store.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_grace: std::time::Duration,
    /// Rollbacks per branch that retention (`chanto sites update --keep-deploys`)
    /// keeps possible: the deploys they reach are never pruned.
    #[arg(long, value_name = "N", default_value_t = chanto_control::config::DEFAULT_ROLLBACK_DEPTH, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub rollback_depth: u32,
    /// Largest file a deploy may hold, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_file_size: u64,
    /// Brotli quality (0-11) of precompressed variants; higher is smaller and slower.
    #[arg(long, value_name = "0-11", default_value_t = chanto_control::config::DEFAULT_BROTLI_QUALITY, value_parser = clap::value_parser!(u32).range(0..=11))]
    pub brotli_quality: u32,
    /// gzip level (1-9) of precompressed variants.
    #[arg(long, value_name = "1-9", default_value_t = chanto_control::config::DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Builds that run at once; 0 runs no builds (webhooks then answer 503).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub build_concurrency: u32,
    /// A build's time limit unless its site sets another (e.g. 30m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub build_timeout: std::time::Duration,
    /// A destination (HOST:PORT) builds may reach through their egress proxy
    /// although it is loopback, private or link-local (a registry mirror on
    /// the local network); repeatable. Everything else on those addresses,
    /// and this host's own, is refused.
    #[arg(long, value_name = "HOST:PORT")]
    pub build_egress_allow: Vec<chanto_control::builds::AllowedDestination>,
    /// The bubblewrap program builds run in (default: `bwrap` on PATH).
    /// Without a working one, builds are refused.
    #[arg(long, value_name = "PATH")]
    pub bwrap: Option<PathBuf>,
    /// Memory one build process may allocate (RLIMIT_DATA), e.g. 4G.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub build_memory: u64,
    /// Processes one build may run at once (enforced per build user, so only when the server is root).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub build_processes: u64,
    /// Disk one build's work tree and home may take, and its largest file, e.g. 10G.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub build_disk: u64,
    /// Size of one build's private /tmp (kept in memory), e.g. 1G.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub build_tmp: u64,
    /// How long a running build may go without a heartbeat from its server
    /// before another `chanto serve` on the same database takes that server
    /// for dead, marks the build interrupted and retries it. Give every
    /// server the same value, longer than a database failover takes.
    /// Heartbeats are stamped and judged with each server's own clock: a
    /// clock S ahead of the runner's takes its builds for dead S early, so
    /// keep clocks in sync (NTP) and the timeout far above their skew; at
    /// least 5s.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub build_heartbeat_timeout: std::time::Duration,
    /// The API's public URL, used in the webhook and build hook URLs chanto
    /// shows (default: http://<api address>). Set it when a proxy or another
    /// host name fronts the API.
    #[arg(long, value_name = "URL")]
    pub public_api_url: Option<String>,
    /// Single sign-on to the console with this OpenID Connect provider (its
    /// issuer URL; discovery at /.well-known/openid-configuration). Register
    /// <public API URL>/login/oidc/callback as the redirect URI there.
    #[arg(long, value_name = "URL", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// This installation's client id at the provider.
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (none: a public client, PKCE alone).
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The provider's name on the sign-in button ("Sign in with NAME").
    #[arg(long, value_name = "NAME", default_value = "single sign-on")]
    pub oidc_name: String,
    /// Make a user (with this role) at a first single sign-on; without it,
    /// only users an admin linked (`chanto users set-sso`) sign in.
    #[arg(long, value_name = "ROLE", requires = "oidc_issuer", value_parser = parse_role)]
    pub oidc_default_role: Option<chanto_store::Role>,
    /// A provider group and the role it gives (repeat it; the highest of a
    /// user's groups wins, set at every sign-in), e.g. platform-team=admin.
    #[arg(long, value_name = "GROUP=ROLE", requires = "oidc_issuer", value_parser = chanto_control::oidc::parse_group_role)]
    pub oidc_group_role: Vec<(String, chanto_store::Role)>,
    /// The ID token claim that names a new user.
    #[arg(long, value_name = "CLAIM", default_value = "preferred_username")]
    pub oidc_username_claim: String,
    /// The ID token claim that lists the user's groups.
    #[arg(long, value_name = "CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// A scope to ask for beside `openid profile email` (repeat it), e.g.
    /// `groups` for providers that send groups only when asked.
    #[arg(long, value_name = "SCOPE", requires = "oidc_issuer")]
    pub oidc_scope: Vec<String>,
    /// Send no notifications (subscriptions then answer 503; events still queue and go out on the next start).
    #[arg(long)]
    pub no_notifications: bool,
    /// Attempts at a notification, the first included, before it is marked dead.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub notify_attempts: u32,
    /// The wait before a notification's second attempt (doubled after each further one, with jitter, at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub notify_backoff: std::time::Duration,
    /// How long one notification attempt may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub notify_timeout: std::time::Duration,
    /// Where metadata lives: `sqlite` (DATA/meta.db) or a PostgreSQL URL,
    /// `postgres://USER@HOST:PORT/DB`. The password comes from the URL,
    /// --meta-password-file, $PGPASSWORD or the password file ($PGPASSFILE,
    /// ~/.pgpass), in that order; it is never logged. TLS as libpq:
    /// `?sslmode=verify-full` (or $PGSSLMODE; default prefer) checks the
    /// server's certificate against the system's roots (SSL_CERT_FILE) or
    /// `sslrootcert=PATH`.
    #[arg(long, value_name = "sqlite|URL", default_value = "sqlite", env = "CHANTO_META", hide_env_values = true)]
    pub meta: String,
    /// A file holding the PostgreSQL password (its first line), for --meta URLs without one.
    #[arg(long, value_name = "PATH")]
    pub meta_password_file: Option<PathBuf>,
    /// Where blobs live: `file` (DATA/blobs) or `s3://BUCKET/PREFIX` (an
    /// S3-compatible object store; credentials and region from the standard
    /// AWS_* variables, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    #[arg(long, value_name = "URL", default_value = "file", env = "CHANTO_BLOBS")]
    pub blobs: String,
    /// The URL of an S3-compatible server (MinIO, Garage, Ceph…) for
    /// `--blobs s3://…`; requests then use path-style addressing. Plain
    /// http is allowed only to a loopback address; https is verified
    /// against the system's roots (SSL_CERT_FILE / SSL_CERT_DIR honoured).
    #[arg(long, value_name = "URL", env = "CHANTO_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Take over an `s3://` prefix whose marker object names another chanto
    /// install (after moving an install; never for two running installs).
    #[arg(long)]
    pub blobs_claim: bool,
    /// Where the edge caches blobs read from a remote `--blobs` store
    /// (default: DATA/blob-cache).
    #[arg(long, value_name = "DIR")]
    pub blob_cache_dir: Option<PathBuf>,
    /// The most disk the blob cache may use, e.g. 1G (least recently used blobs go first).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub blob_cache_size: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What this node runs: `all` (the API, builds, notifications and the
    /// edge in one process), `control` (everything but the edge) or `edge`
    /// (only the edge and its admin listener, fed by --control).
    #[arg(long, value_enum, default_value = "all")]
    pub role: Role,
    /// The zone this node runs in (shown by `chanto nodes list`; an
    /// operator's label such as `eu-west-1a`).
    #[arg(long, value_name = "NAME", default_value = "local", value_parser = parse_zone)]
    pub zone: String,
    /// How long a deploy, publish or rollback waits for every healthy edge
    /// to serve it before answering with the edges that lag (0s: answer at
    /// once with where it is live).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub edge_wait: std::time::Duration,
    /// How long an edge may go without a heartbeat (they send one every 5 s)
    /// and still count as healthy: activations wait only for healthy edges.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub node_timeout: std::time::Duration,
    /// With --role edge: the control plane's API URL the edge pulls its
    /// routing from and reports to (e.g. https://control.internal:8787).
    #[arg(long, value_name = "URL", env = "CHANTO_CONTROL")]
    pub control: Option<String>,
    /// With --role edge: a file holding the node token (`chanto nodes token
    /// create`); the edge never uses an API token.
    #[arg(long, value_name = "FILE", env = "CHANTO_NODE_TOKEN_FILE")]
    pub node_token: Option<PathBuf>,
    /// With --role edge: how often the edge pulls the routing table even when
    /// the long-poll says nothing (the safety net under the fast path).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub routing_poll: std::time::Duration,
    /// With --role edge: do not hold a long-poll open for routing changes;
    /// rely on the periodic pull (--routing-poll) alone.
    #[arg(long)]
    pub no_routing_stream: bool,
}

/// `chanto domains …`.
#[derive(Subcommand, Debug)]
pub enum DomainsCommand {
    /// Add a domain to a site: the edges answer it at once over HTTP. An apex (`example.com`) brings its
    /// `www` twin; the site's first domain is its primary, which the others redirect to.
    Add {
        /// The domain (Unicode names become punycode).
        name: String,
        /// The site.
        #[arg(long)]
        site: String,
        /// Serve this branch instead of production.
        #[arg(long)]
        branch: Option<String>,
        /// Do not add the www twin of an apex.
        #[arg(long)]
        no_www: bool,
    },
    /// A site's domains: state, certificate, and what to do next.
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Remove a domain (and the www twin added with it).
    Remove {
        /// The domain.
        name: String,
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Check that a domain reaches this installation (fetches its verification path over HTTP).
    Verify {
        /// The domain.
        name: String,
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Make a domain the site's primary: the others answer 301 to it.
    Primary {
        /// The domain.
        name: String,
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Show or change a site's HTTPS settings: the HTTP → HTTPS redirect and HSTS.
    Https {
        /// The site.
        #[arg(long)]
        site: String,
        /// Redirect plain HTTP to HTTPS on names with a certificate.
        #[arg(long, value_name = "true|false")]
        redirect: Option<bool>,
        /// Strict-Transport-Security max-age in seconds (0: no header).
        #[arg(long, value_name = "SECONDS")]
        hsts_max_age: Option<u64>,
        /// HSTS includeSubDomains.
        #[arg(long, value_name = "true|false")]
        hsts_include_subdomains: Option<bool>,
        /// HSTS preload (needs max-age ≥ 31536000 and includeSubDomains).
        #[arg(long, value_name = "true|false")]
        hsts_preload: Option<bool>,
    },
}

/// `chanto certs …`.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Upload a certificate and its key for a domain; it is checked (PEM, key match, validity, names,
    /// chain), its key sealed, and the edges serve it by SNI at once. The site's other domains it
    /// covers that have no certificate yet (an apex's www twin) get it too.
    Upload {
        /// The domain it is for.
        #[arg(long, required_unless_present = "base", requires = "site")]
        domain: Option<String>,
        /// The site that has the domain.
        #[arg(long, requires = "domain")]
        site: Option<String>,
        /// For this server's own base domain instead: a wildcard (`*.BASE`,
        /// or `*.PREVIEW`) that serves every `<site>` and `<branch>--<site>` host.
        #[arg(long, conflicts_with_all = ["domain", "site"])]
        base: bool,
        /// The certificate chain, leaf first (fullchain.pem).
        #[arg(long, value_name = "FULLCHAIN.pem")]
        cert: PathBuf,
        /// The private key (PEM, not encrypted).
        #[arg(long, value_name = "KEY.pem")]
        key: PathBuf,
    },
    /// The base domain's wildcard certificates: each pattern, what it serves, until when.
    Base,
    /// Stop serving a base domain's certificate (`*.BASE` or `*.PREVIEW`).
    RemoveBase {
        /// The pattern, as `chanto certs base` shows it.
        pattern: String,
    },
}

/// `chanto nodes …`.
#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// Every node heard from in the last day: zone, name, role, routing
    /// version, lag behind the newest, last heartbeat, readiness, refusals.
    List,
    /// Node tokens: what edge nodes authenticate with (never the admin token).
    #[command(subcommand)]
    Token(NodeTokenCommand),
}

/// `chanto nodes token …`.
#[derive(Subcommand, Debug)]
pub enum NodeTokenCommand {
    /// Create a node token; it is shown (or written to --output) once.
    Create {
        /// What uses it, e.g. `edge-zone-a` (letters, digits, '-', '_', '.').
        name: String,
        /// Write the token to this new file (mode 600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List node tokens (never the tokens themselves).
    List,
    /// Revoke a node token: nodes using it are refused from now on.
    Revoke {
        /// The token's id (`nt_…`, see `chanto nodes token list`).
        id: String,
    },
}

/// How the ACME CA checks that a name reaches this installation.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// HTTP-01: `http://NAME/.well-known/acme-challenge/TOKEN` on port 80.
    #[value(name = "http-01")]
    Http01,
    /// TLS-ALPN-01: a TLS handshake with NAME on port 443 (ALPN `acme-tls/1`).
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// DNS-01: the TXT record `_acme-challenge.NAME`, published by --acme-dns-hook.
    #[value(name = "dns-01")]
    Dns01,
}

/// What a filter's error does (see chanto_edge::filter).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOnError {
    /// Let the request through.
    Open,
    /// Answer 503 with the sorry page.
    Closed,
}

impl FilterOnError {
    /// The edge's value.
    pub fn edge(self) -> chanto_edge::filter::OnError {
        match self {
            Self::Open => chanto_edge::filter::OnError::Open,
            Self::Closed => chanto_edge::filter::OnError::Closed,
        }
    }
}

/// What `chanto serve` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API, builds, notifications and the edge in one process.
    All,
    /// The API, builds and notifications; no edge.
    Control,
    /// Only the edge and its admin listener.
    Edge,
}

impl Role {
    /// The role as the node wire names it.
    pub fn wire(self) -> chanto_store::node_wire::NodeRole {
        match self {
            Self::All => chanto_store::node_wire::NodeRole::All,
            Self::Control => chanto_store::node_wire::NodeRole::Control,
            Self::Edge => chanto_store::node_wire::NodeRole::Edge,
        }
    }
}

/// A zone name: 1 to 63 letters, digits, '-', '_' or '.'.
fn parse_zone(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a zone name; use 1 to 63 letters, digits, '-', '_' or '.' (e.g. eu-west-1a)"))
    }
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size; give bytes or a number with K, M or G (e.g. 512M)"))
}

fn parse_role(s: &str) -> Result<chanto_store::Role, String> {
    s.parse()
}

fn parse_header_name(s: &str) -> Result<axum::http::HeaderName, String> {
    axum::http::HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| format!("{s:?} is not a header name (letters, digits and '-', like X-Country)"))
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Read the token from standard input instead of --token.
    #[arg(long, conflicts_with = "user")]
    pub token_stdin: bool,
    /// Sign in as this user with their password instead (asked for, or
    /// --password-stdin); a personal token is made and saved.
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from standard input (with --user).
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// The saved token's scope (with --user; default: the widest your role allows).
    #[arg(long, requires = "user", value_parser = ["read", "deploy", "write", "admin"])]
    pub scope: Option<String>,
    /// Days until the saved token expires (with --user).
    #[arg(long, requires = "user", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub expires_in_days: u32,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Every user: role, whether they have a password, last sign-in.
    List,
    /// Create a user (admin scope).
    Create {
        /// Their name: 1 to 64 of a-z 0-9 . _ @ - (an email address fits).
        name: String,
        /// viewer (reads), developer (sites, deploys, builds, settings) or admin (users and tokens too).
        #[arg(long, value_parser = ["viewer", "developer", "admin"])]
        role: String,
        /// Read their password (at least 10 characters) from standard input; without it they have none yet.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role (their tokens narrow to it at once).
    SetRole {
        /// The user.
        name: String,
        /// viewer, developer or admin.
        #[arg(value_parser = ["viewer", "developer", "admin"])]
        role: String,
    },
    /// A one-time link (7 days) with which a new user sets their password in the console (or an
    /// existing user a new one).
    Invite {
        /// The user (created without a password when new).
        name: String,
        /// The role of a new user.
        #[arg(long, value_parser = ["viewer", "developer", "admin"])]
        role: Option<String>,
    },
    /// Link a user to their single sign-on account: the subject (`sub`) a
    /// refused console sign-in shows them (or --none to unlink).
    #[command(name = "set-sso")]
    SetSso {
        /// The user.
        name: String,
        /// The provider's subject for them.
        #[arg(required_unless_present = "none")]
        subject: Option<String>,
        /// Unlink them.
        #[arg(long, conflicts_with = "subject")]
        none: bool,
    },
    /// Set a user's password, read from standard input.
    SetPassword {
        /// The user.
        name: String,
    },
    /// Remove a user and their tokens.
    Remove {
        /// The user.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Your tokens (--all: everyone's, admin scope). Never the tokens themselves.
    List {
        /// Every user's tokens.
        #[arg(long)]
        all: bool,
    },
    /// Make a token; it is printed once and never shown again.
    Create {
        /// What it is for ("CI deploys").
        name: String,
        /// read, deploy, write or admin (default: the widest you may give).
        #[arg(long, value_parser = ["read", "deploy", "write", "admin"])]
        scope: Option<String>,
        /// Days until it expires (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
        /// Make it for another user (admin scope; the admin token must name one).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token (yours, or anyone's with the admin scope).
    Revoke {
        /// The token's id (pt_…, from `chanto tokens list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Changes, newest first: when, who, with what, from where, what, on what, status.
    List {
        /// Only this actor's (a user, or admin-token).
        #[arg(long)]
        actor: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only entries older than this id (the next page).
        #[arg(long)]
        before: Option<i64>,
    },
}

/// Which policy: one branch's, every preview's, or (neither) the whole site's.
#[derive(Args, Debug)]
pub struct ScopeArgs {
    /// One branch.
    #[arg(long, conflicts_with = "previews")]
    pub branch: Option<String>,
    /// The default for every branch except production (pull-request previews included).
    #[arg(long)]
    pub previews: bool,
}

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Add a user or change a password (read from standard input), or change
    /// the network lists, of one scope. Production stays public unless the
    /// scope is the whole site or its branch.
    #[command(after_help = "Examples:\n  \
        printf %s \"$PW\" | chanto access set --site docs --previews --user alice --password-stdin\n  \
        chanto access set --site docs --branch qa --allow 10.0.0.0/8\n  \
        chanto access set --site docs --previews --remove-user alice")]
    Set {
        /// The site.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The user to add, or whose password to change.
        #[arg(long, requires = "password_stdin")]
        user: Option<String>,
        /// Read the password from standard input (one line). Passwords never go on the command line.
        #[arg(long, requires = "user")]
        password_stdin: bool,
        /// Remove this user.
        #[arg(long, value_name = "USER")]
        remove_user: Option<String>,
        /// Only clients in this network get in (CIDR, repeatable; replaces the list).
        #[arg(long, value_name = "CIDR")]
        allow: Vec<ipnet::IpNet>,
        /// Clients in this network never get in (CIDR, repeatable; replaces the list).
        #[arg(long, value_name = "CIDR")]
        deny: Vec<ipnet::IpNet>,
        /// Empty both network lists.
        #[arg(long, conflicts_with_all = ["allow", "deny"])]
        clear_networks: bool,
        /// Let CORS preflight (OPTIONS) requests through without a password.
        #[arg(long, value_name = "BOOL")]
        allow_preflight: Option<bool>,
    },
    /// Remove one scope's policy.
    Clear {
        /// The site.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Show a site's policies (user names, never passwords).
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SitesCommand {
    /// Create a site.
    #[command(after_help = "Examples:\n  \
        chanto sites create docs                                # served at http://docs.localhost:8080/\n  \
        chanto sites create blog --production-branch master")]
    Create {
        /// The site's name, also its host name: lowercase letters, digits and single hyphens (e.g. docs).
        name: String,
        /// The branch served at the site's production URL.
        #[arg(long, value_name = "BRANCH", default_value = "main")]
        production_branch: String,
    },
    /// List sites.
    List,
    /// A site at a glance: URLs, live deploys, git, access, notifications.
    #[command(override_usage = "chanto sites show [OPTIONS] <NAME>")]
    Show {
        #[command(flatten)]
        name: SiteArg,
    },
    /// Delete a site and all its deploys.
    #[command(override_usage = "chanto sites delete [OPTIONS] <NAME>")]
    Delete {
        #[command(flatten)]
        name: SiteArg,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Change a site's settings; with no flag, show them.
    #[command(override_usage = "chanto sites update [OPTIONS] <NAME>")]
    Update {
        #[command(flatten)]
        name: SiteArg,
        /// Keep the newest N deploys of each branch; older ones are pruned
        /// (with their blobs, after the grace period) unless active,
        /// uploading or within `chanto serve --rollback-depth` rollbacks.
        /// 0 keeps every deploy.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(chanto_control::gc::MAX_KEEP_DEPLOYS)))]
        keep_deploys: Option<u32>,
    },
    /// Show, or replace with --set / --clear, the origins this site's proxy
    /// rules (a 200 to an absolute URL) may reach. The server's operator
    /// must allow each one too (`chanto serve --proxy-origin`).
    #[command(override_usage = "chanto sites proxy-origins [OPTIONS] <NAME>")]
    ProxyOrigins {
        #[command(flatten)]
        name: SiteArg,
        /// An origin (scheme://host[:port]); repeatable; replaces the list.
        #[arg(long, value_name = "ORIGIN", conflicts_with = "clear")]
        set: Vec<String>,
        /// Allow no origin.
        #[arg(long)]
        clear: bool,
    },
    /// Show, or change with --set / --clear, whose defaults the site's next
    /// deploys follow where the platforms differ (does `/about` serve
    /// `about.html`?): chanto, netlify, amplify or firebase. A deploy's own
    /// `profile` in chanto.toml wins; with none set anywhere, the platform
    /// whose rule files the deploy has decides.
    #[command(override_usage = "chanto sites profile [OPTIONS] <NAME>")]
    Profile {
        #[command(flatten)]
        name: SiteArg,
        /// The profile: chanto, netlify, amplify or firebase.
        #[arg(long, value_name = "PROFILE", conflicts_with = "clear", value_parser = clap::builder::PossibleValuesParser::new(["chanto", "netlify", "amplify", "firebase"]))]
        set: Option<String>,
        /// Let each deploy's rule files decide.
        #[arg(long)]
        clear: bool,
    },
}

/// The site a `sites` subcommand acts on: `NAME`, or `--site NAME` as every
/// other command spells it (hidden: one way is shown, both work).
#[derive(Args, Debug)]
pub struct SiteArg {
    /// The site.
    #[arg(value_name = "NAME", required_unless_present = "site")]
    name: Option<String>,
    /// The site, as NAME.
    #[arg(long = "site", value_name = "NAME", conflicts_with = "name", hide = true)]
    site: Option<String>,
}

impl SiteArg {
    /// The site's name as given.
    pub fn get(&self) -> String {
        self.name.clone().or_else(|| self.site.clone()).unwrap_or_default()
    }
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// The folder to serve (the site's root).
    pub dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Request header holding the client's country code, to try country rules.
    #[arg(long, value_name = "HEADER", value_parser = parse_header_name)]
    pub country_header: Option<axum::http::HeaderName>,
    /// Do not reload open pages on change, and add no script to HTML: every
    /// response is then byte for byte what a deploy would send.
    #[arg(long)]
    pub no_reload: bool,
    /// Most live-reload connections at once (one per open tab).
    #[arg(long, hide = true, default_value_t = crate::reload::MAX_CLIENTS)]
    pub reload_clients: usize,
    /// How often an idle live-reload connection gets a keep-alive comment:
    /// well inside the 30–60 s after which proxies cut a silent connection,
    /// and the server's own idle timeout (60 s).
    #[arg(long, hide = true, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub reload_keepalive: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The directory to deploy (the site's root), or a project root whose
    /// firebase.json (hosting.public), netlify.toml ([build] publish) or
    /// amplify.yml (artifacts.baseDirectory) names it; default: the current
    /// directory, when it is such a project.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The directory, as Netlify's `--dir` (hidden: DIR is the way shown).
    #[arg(long = "dir", id = "dir_flag", value_name = "DIR", conflicts_with = "dir", hide = true)]
    pub dir_flag: Option<PathBuf>,
    /// Production, as Netlify's and Vercel's `--prod`: what a deploy without
    /// --branch or --draft already does (hidden; accepted so it is not an error).
    #[arg(long, hide = true, conflicts_with_all = ["branch", "draft"])]
    pub prod: bool,
    /// The site to deploy to.
    #[arg(long)]
    pub site: String,
    /// The branch (default: the site's production branch).
    #[arg(long)]
    pub branch: Option<String>,
    /// A message describing the deploy.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Upload without activating: reachable only at its permalink.
    #[arg(long)]
    pub draft: bool,
    /// Hash every file again instead of trusting the hashes of files
    /// unchanged (same size, mtime, inode) since the last deploy of this directory.
    #[arg(long)]
    pub rehash: bool,
    /// Uploads at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
}

#[derive(Subcommand, Debug)]
pub enum DeploysCommand {
    /// List a site's deploys, newest first.
    List {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Show one deploy.
    Show {
        /// The deploy id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Clone URL: https://…, ssh://…, git@host:path, file://… or a repository's absolute path on the server.
    pub repository: String,
    /// The site.
    #[arg(long)]
    pub site: String,
    /// Read an access token (for https) from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with_all = ["token_file", "ssh_key"])]
    pub token_env: Option<String>,
    /// Read an access token (for https) from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "ssh_key")]
    pub token_file: Option<PathBuf>,
    /// User name sent with the token (default x-access-token; GitLab: oauth2).
    #[arg(long)]
    pub username: Option<String>,
    /// An SSH deploy key (private key file) for ssh URLs.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Forget the stored credential.
    #[arg(long, conflicts_with_all = ["token_env", "token_file", "ssh_key"])]
    pub clear_credential: bool,
    /// Change the site's production branch.
    #[arg(long)]
    pub production_branch: Option<String>,
    /// Build pushes to branches matching this glob (repeatable; default: every branch).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never build branches matching this glob automatically (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Keep a branch's environment when the branch is deleted.
    #[arg(long)]
    pub keep_deleted_branches: bool,
    /// Do not build pull requests into pr-<n> previews.
    #[arg(long)]
    pub no_pr_previews: bool,
    /// Do not build pull requests from forks (default: build them, sandboxed, without secret variables).
    #[arg(long)]
    pub no_fork_prs: bool,
    /// Keep a closed pull request's preview this many days (default: remove at once).
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub preview_retention_days: u32,
    /// Poll the remote for new commits at this interval (for remotes without webhooks), e.g. 1m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub poll: Option<std::time::Duration>,
    /// A build's time limit (default: the server's, 30m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Build command when the repository has no build spec.
    #[arg(long)]
    pub command: Option<String>,
    /// Publish directory when the repository has no build spec (relative to --base).
    #[arg(long)]
    pub publish: Option<String>,
    /// Directory the build runs in when the repository has no build spec.
    #[arg(long)]
    pub base: Option<String>,
    /// The application's root in a monorepo (Amplify's appRoot).
    #[arg(long)]
    pub app_root: Option<String>,
    /// Make a new webhook secret (the old one stops working).
    #[arg(long)]
    pub rotate_webhook_secret: bool,
    /// Make this a platform config site: the path in the repository of
    /// chanto.platform.toml (a file, or a directory of .toml files). Its
    /// builds run no command and deploy nothing: every pull request and
    /// branch gets the configuration's plan (in the build log and the pull
    /// request's comment), and the production branch applies it. Secret
    /// references resolve from the server's environment, env:CHANTO_PLATFORM_*
    /// only. Needs an admin token (as does any change to such a site's
    /// connection): its builds change every site.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["command", "publish", "base", "app_root"])]
    pub platform_config: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum GitCommand {
    /// Connect a site to a repository, or change its connection (settings not
    /// given return to their defaults; the credential and webhook secret stay).
    Connect(Box<ConnectArgs>),
    /// Show a site's connection and its webhook URLs.
    Show {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Disconnect a site (its deploys stay).
    Disconnect {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// The latest webhook deliveries and what chanto did with each.
    Deliveries {
        /// The site.
        #[arg(long)]
        site: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildsCommand {
    /// List a site's builds, newest first.
    List {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this branch environment (pr-<n> for a pull request).
        #[arg(long)]
        branch: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one build with its phases.
    Show {
        /// The build id.
        id: String,
    },
    /// Print a build's log; --follow streams it until the build ends.
    Logs {
        /// The build id.
        id: String,
        /// Keep printing new lines until the build ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Queue a build of a branch (its head, or --commit).
    Start {
        /// The site.
        #[arg(long)]
        site: String,
        /// The branch (default: production).
        #[arg(long)]
        branch: Option<String>,
        /// A full commit id to build instead of the branch's head.
        #[arg(long)]
        commit: Option<String>,
        /// Follow the build's log until it ends; exit non-zero unless it succeeds.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a queued or running build.
    Cancel {
        /// The build id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Set a variable. The value comes from the argument, or from standard
    /// input when omitted (use that for secrets: nothing on the command line).
    Set {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only for this branch (else every branch).
        #[arg(long)]
        branch: Option<String>,
        /// Keep it secret: encrypted at rest, `***` in output, masked in logs.
        #[arg(long)]
        secret: bool,
        /// The variable's name, e.g. API_URL.
        name: String,
        /// Its value (default: read from standard input, which keeps secrets off the command line).
        value: Option<String>,
    },
    /// List a site's variables (secrets as ***).
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Remove a variable.
    Unset {
        /// The site.
        #[arg(long)]
        site: String,
        /// The branch it was set for.
        #[arg(long)]
        branch: Option<String>,
        /// The variable's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HooksCommand {
    /// Create a build hook and print its secret URL (shown once).
    Create {
        /// The site.
        #[arg(long)]
        site: String,
        /// The only branch it builds (default: the production branch).
        #[arg(long)]
        branch: Option<String>,
        /// Let each request name the branch to build (`{"branch": …}` or `?branch=`).
        #[arg(long, conflicts_with = "branch")]
        any_branch: bool,
        /// A name to recognise it by.
        name: String,
    },
    /// List a site's build hooks.
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Delete a build hook.
    Delete {
        /// The site.
        #[arg(long)]
        site: String,
        /// The hook id (see list).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Subscribe a channel to a site's events.
    ///
    /// Examples:
    ///   chanto notify add slack --site blog --url-env SLACK_URL --events build.failed,deploy.activated
    ///   chanto notify add webhook --site blog --url https://ci.example.com/hook
    ///   chanto notify add email --site blog --smtp-host smtp.example.com --smtp-user bot --smtp-password-env SMTP_PASS \
    ///       --from chanto@example.com --to team@example.com
    ///   chanto notify add github --site blog --token-env GITHUB_TOKEN
    #[command(verbatim_doc_comment)]
    Add(Box<NotifyAddArgs>),
    /// List a site's subscriptions (secrets masked).
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Remove a subscription and its pending deliveries.
    Remove {
        /// The site.
        #[arg(long)]
        site: String,
        /// The subscription id (see list).
        id: String,
    },
    /// Send a sample event to one subscription now and show what the receiver answered (a forge: check the token
    /// against the repository).
    Test {
        /// The site.
        #[arg(long)]
        site: String,
        /// The subscription id (see list).
        id: String,
    },
    /// Send an ended delivery again (after fixing the receiver), as a new delivery.
    Redeliver {
        /// The site.
        #[arg(long)]
        site: String,
        /// The delivery's id (see deliveries).
        id: i64,
    },
    /// The delivery log, newest first; with an id, one delivery and every attempt.
    Deliveries {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this subscription's.
        #[arg(long)]
        subscription: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 30)]
        limit: u32,
        /// One delivery's id.
        id: Option<i64>,
    },
}

/// Where notifications go.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum NotifyChannel {
    /// A generic webhook: JSON, signed with HMAC-SHA256 (X-Chanto-Signature, X-Chanto-Timestamp).
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// Email over SMTP.
    Email,
    /// GitHub commit statuses and one pull request comment.
    Github,
    /// GitLab commit statuses and one merge request note.
    Gitlab,
    /// Gitea/Forgejo commit statuses and one pull request comment.
    Gitea,
}

#[derive(Args, Debug)]
pub struct NotifyAddArgs {
    /// The channel.
    #[arg(value_enum)]
    pub channel: NotifyChannel,
    /// The site.
    #[arg(long)]
    pub site: String,
    /// Events to send, comma-separated (default: all): build.queued, build.started, build.succeeded, build.failed,
    /// build.cancelled, deploy.ready, deploy.activated, deploy.rolled_back, preview.ready, preview.removed,
    /// certificate.failed, certificate.expiring.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// Only these branches (globs; repeatable; default: all).
    #[arg(long = "branch", value_name = "GLOB")]
    pub branches: Vec<String>,
    /// webhook, slack, discord: the URL to POST to.
    #[arg(long, conflicts_with = "url_env")]
    pub url: Option<String>,
    /// webhook, slack, discord: read the URL from this environment variable (it carries a secret).
    #[arg(long, value_name = "VAR")]
    pub url_env: Option<String>,
    /// webhook: read the signing secret from this environment variable (default: chanto makes one and shows it once).
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// email: the SMTP server's host.
    #[arg(long)]
    pub smtp_host: Option<String>,
    /// email: the SMTP port (default: 587 starttls, 465 tls, 25 none).
    #[arg(long)]
    pub smtp_port: Option<u16>,
    /// email: starttls, tls or none.
    #[arg(long, value_name = "MODE", default_value = "starttls")]
    pub smtp_security: String,
    /// email: the SMTP user name.
    #[arg(long)]
    pub smtp_user: Option<String>,
    /// email: read the SMTP password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub smtp_password_env: Option<String>,
    /// email: the sender address.
    #[arg(long)]
    pub from: Option<String>,
    /// email: a recipient (repeatable).
    #[arg(long)]
    pub to: Vec<String>,
    /// github, gitlab, gitea: read the access token from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "token_file")]
    pub token_env: Option<String>,
    /// github, gitlab, gitea: read the access token from this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// github, gitlab, gitea: owner/name (default: from the site's git connection).
    #[arg(long)]
    pub repository: Option<String>,
    /// github, gitlab, gitea: the API base URL (GitHub Enterprise, self-hosted GitLab, Gitea).
    #[arg(long)]
    pub api_url: Option<String>,
    /// github, gitlab, gitea: the commit status context (default: chanto/<site>).
    #[arg(long)]
    pub context: Option<String>,
    /// github, gitlab, gitea: commit statuses only, no pull request comment.
    #[arg(long)]
    pub no_comments: bool,
}

/// `chanto backup …` (README "Backups"; PostgreSQL and S3: docs/backup.md).
#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a consistent backup of a data directory to DEST, also while
    /// `chanto serve` runs on it: a metadata snapshot, every blob it
    /// references (hash-checked as copied), secret.key (mode 0600: it
    /// decrypts the stored secrets, so keep the backup private),
    /// install-id and admin.token, and backup.json, written last.
    Create(BackupCreateArgs),
    /// Check a backup (SRC), or a PostgreSQL + S3 install (--meta, --blobs):
    /// every blob the metadata references is present and whole.
    Verify(BackupVerifyArgs),
    /// Check a backup, then restore it into a new data directory (absent or
    /// empty), which `chanto serve --data DIR` then serves.
    Restore(BackupRestoreArgs),
}

#[derive(Args, Debug)]
pub struct BackupCreateArgs {
    /// Where to write the backup: a directory that does not exist yet (or is empty).
    pub dest: PathBuf,
    /// The data directory to back up (as `chanto serve --data`).
    #[arg(long, value_name = "DIR", default_value = "chanto-data", env = "CHANTO_DATA")]
    pub data: PathBuf,
    /// The install's metadata store (as `chanto serve --meta`); for a
    /// PostgreSQL URL this prints the backup procedure (docs/backup.md).
    #[arg(long, value_name = "sqlite|URL", default_value = "sqlite", env = "CHANTO_META", hide_env_values = true)]
    pub meta: String,
    /// The install's blob store (as `chanto serve --blobs`); for s3://… this
    /// prints the backup procedure (docs/backup.md).
    #[arg(long, value_name = "URL", default_value = "file", env = "CHANTO_BLOBS")]
    pub blobs: String,
}

#[derive(Args, Debug)]
pub struct BackupVerifyArgs {
    /// The backup directory to check (omit it with --meta and --blobs).
    #[arg(required_unless_present = "meta", conflicts_with_all = ["meta", "blobs"])]
    pub src: Option<PathBuf>,
    /// Check a PostgreSQL install instead: its URL (as `chanto serve --meta`).
    #[arg(long, value_name = "URL", requires = "blobs")]
    pub meta: Option<String>,
    /// A file holding the PostgreSQL password (its first line).
    #[arg(long, value_name = "PATH", requires = "meta")]
    pub meta_password_file: Option<PathBuf>,
    /// The install's blob store, s3://BUCKET/PREFIX (as `chanto serve --blobs`).
    #[arg(long, value_name = "URL", requires = "meta")]
    pub blobs: Option<String>,
    /// The S3-compatible server's URL (as `chanto serve --s3-endpoint`).
    #[arg(long, value_name = "URL", requires = "blobs")]
    pub s3_endpoint: Option<String>,
    /// With --meta/--blobs: also download every referenced blob and check it
    /// hashes to its name (a backup directory is always checked this way).
    #[arg(long)]
    pub deep: bool,
}

#[derive(Args, Debug)]
pub struct BackupRestoreArgs {
    /// The backup directory (written by `chanto backup create`).
    pub src: PathBuf,
    /// The new data directory: it must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}
