//! TLS to PostgreSQL, against a real server with `ssl = on` and a
//! certificate of a throwaway CA (`chanto_testkit::pg::shared_tls`): each
//! sslmode does what libpq's does, every connection chanto makes (the pool
//! and the routing listener) is encrypted, certificate problems and bad
//! parameters are errors that name the parameter, the file and the fix, and
//! never the password.

use std::time::Duration;

use chanto_core::{BranchName, SiteName};
use chanto_store::postgres_tls::{PgTls, split};
use chanto_store::{MetaStore, PostgresMeta, StoreError};
use chanto_testkit::pg::{self, SCRAM_PASSWORD, SCRAM_USER, TLS_ONLY_USER, TLS_SERVER_NAME, TlsPg};

fn tls_pg() -> &'static TlsPg {
    pg::shared_tls()
}

/// A fresh database on the TLS server; its name.
fn fresh_db(tls: &TlsPg, prefix: &str) -> String {
    let url = tls.server.create_database(prefix);
    url.rsplit('/').next().unwrap().to_owned()
}

/// How many of chanto's connections to `db` the server sees, and whether
/// every one of them is encrypted (the server's view, pg_stat_ssl).
fn chanto_connections(tls: &TlsPg, db: &str) -> (u32, bool) {
    let out = tls.server.psql(
        "postgres",
        &format!(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = '{db}' AND a.application_name = 'chanto'"
        ),
    );
    let (n, all) = out.trim().split_once('|').unwrap();
    (n.parse().unwrap(), all == "t")
}

async fn connect(url: &str) -> Result<PostgresMeta, StoreError> {
    tokio::time::timeout(Duration::from_secs(30), PostgresMeta::connect(url, None)).await.expect("connect is bounded")
}

/// Connects with chanto's connector alone (no pool) and asks the server
/// whether this very connection is encrypted.
async fn ssl_of_own_connection(url: &str) -> bool {
    let (rest, settings) = split(url, &|_| None).unwrap();
    let config: tokio_postgres::Config = rest.parse().unwrap();
    let mut config = config;
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = config.connect(PgTls::new(&settings).unwrap()).await.unwrap();
    tokio::spawn(conn);
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn verify_full_with_the_right_ca_encrypts_the_pool_and_the_routing_listener() {
    let tls = tls_pg();
    let ca = tls.ca.cert();
    let db = fresh_db(tls, "verify_full");
    // The TLS-only user: a connection that fell back to plain TCP is refused.
    let url = tls.url(TLS_ONLY_USER, &db, &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let meta = connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let (site, main): (SiteName, BranchName) = ("docs".parse().unwrap(), "main".parse().unwrap());
    meta.create_site(&site, &main, 1).await.unwrap();
    assert_eq!(meta.list_sites().await.unwrap().len(), 1);
    assert_eq!(meta.tls_settings().mode, chanto_store::postgres_tls::SslMode::VerifyFull);
    // The routing listener's own connection: it sees a version announced now.
    let mut versions = meta.watch_routing();
    let v = meta.next_routing_version(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), versions.wait_for(|seen| seen.version >= v))
        .await
        .expect("the routing listener (over TLS) saw the new version")
        .unwrap();
    let (n, all_tls) = chanto_connections(tls, &db);
    assert!(n >= 2, "the pool's and the listener's connections: {n}");
    assert!(all_tls, "every chanto connection is encrypted");
    assert!(ssl_of_own_connection(&url).await, "pg_stat_ssl says this connection is TLS");

    // require without a CA encrypts (and checks nothing), as libpq.
    let require = tls.url(TLS_ONLY_USER, &db, "sslmode=require");
    connect(&require).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(ssl_of_own_connection(&require).await);
    // The default (prefer) takes TLS when the server offers it.
    let default = tls.url(TLS_ONLY_USER, &db, "");
    connect(&default).await.unwrap_or_else(|e| panic!("{e}"));
    drop(meta);
}

#[tokio::test]
async fn each_sslmode_checks_what_libpq_checks_and_says_what_failed() {
    let tls = tls_pg();
    let (ca, other) = (tls.ca.cert(), tls.other_ca.cert());
    let db = fresh_db(tls, "modes");
    let port = tls.server.port;
    let at =
        |host: &str, query: &str| format!("postgres://{TLS_ONLY_USER}@{host}:{port}/{db}?hostaddr=127.0.0.1&{query}");

    // A CA that did not sign the server's certificate.
    let url = tls.url(TLS_ONLY_USER, &db, &format!("sslmode=verify-full&sslrootcert={}", other.display()));
    let e = connect(&url).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("presented a certificate not signed by the CA in sslrootcert={}", other.display())),
        "{e}"
    );
    assert!(e.contains("UnknownIssuer") && e.contains("give the CA that signed the server's certificate"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}/{db}")), "names the database: {e}");
    // require with a root file checks the chain too (libpq does).
    let url = tls.url(TLS_ONLY_USER, &db, &format!("sslmode=require&sslrootcert={}", other.display()));
    let e = connect(&url).await.unwrap_err().to_string();
    assert!(e.contains("not signed by the CA in sslrootcert="), "{e}");

    // A host name the certificate does not hold: verify-full refuses it,
    // verify-ca (chain only) accepts.
    let e = connect(&at("localhost", &format!("sslmode=verify-full&sslrootcert={}", ca.display())))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate is not valid for \"localhost\""), "{e}");
    assert!(e.contains("sslmode=verify-ca to check only the chain"), "{e}");
    connect(&at("localhost", &format!("sslmode=verify-ca&sslrootcert={}", ca.display())))
        .await
        .unwrap_or_else(|e| panic!("verify-ca ignores the name: {e}"));
    // verify-ca still checks the chain.
    let e = connect(&at("localhost", &format!("sslmode=verify-ca&sslrootcert={}", other.display())))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed by the CA"), "{e}");
    // The DNS name the certificate holds passes verify-full.
    connect(&at(TLS_SERVER_NAME, &format!("sslmode=verify-full&sslrootcert={}", ca.display())))
        .await
        .unwrap_or_else(|e| panic!("verify-full by the certificate's DNS name: {e}"));

    // Plain TCP to a server that takes this user only over TLS.
    let e = connect(&tls.url(TLS_ONLY_USER, &db, "sslmode=disable")).await.unwrap_err().to_string();
    assert!(e.contains("no encryption"), "{e}");
    assert!(
        e.contains("accepts this user and database only over TLS (sslmode=disable): use sslmode=verify-full"),
        "{e}"
    );
}

/// A SCRAM password over verify-full TLS with `channel_binding=require`: the
/// server checks the channel binding chanto computed from its certificate,
/// so a wrong hash fails the login.
#[tokio::test]
async fn a_scram_password_is_bound_to_the_tls_channel() {
    let tls = tls_pg();
    let db = fresh_db(tls, "scram");
    let ca = tls.ca.cert();
    let url =
        tls.url(SCRAM_USER, &db, &format!("sslmode=verify-full&sslrootcert={}&channel_binding=require", ca.display()));
    let meta = tokio::time::timeout(Duration::from_secs(30), PostgresMeta::connect(&url, Some(SCRAM_PASSWORD.into())))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(meta.list_sites().await.unwrap().is_empty());
    // A wrong CA with the password in the URL: refused, password not shown.
    let with_password = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        tls.server.port,
        tls.other_ca.cert().display()
    );
    let e = connect(&with_password).await.unwrap_err().to_string();
    assert!(e.contains("not signed by the CA") && e.contains(&format!("{SCRAM_USER}:***@")), "{e}");
    assert!(!e.contains(SCRAM_PASSWORD), "{e}");
}

/// Bad TLS parameters are refused before anything connects (the port here
/// listens to nothing), naming the parameter, the file and the fix, never
/// the password.
#[tokio::test]
async fn bad_tls_parameters_are_start_up_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("postgres://chanto:hunter2secret@127.0.0.1:{port}/chanto");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30u8, 0x82, 0x01, 0x0a, 0x02]).unwrap();
    let cases = [
        (
            "sslmode=bogus".to_owned(),
            "sslmode=\"bogus\" is not an sslmode; use disable, prefer, require, verify-ca or verify-full",
        ),
        (format!("sslmode=verify-full&sslrootcert={}", missing.display()), "cannot be read: No such file"),
        (format!("sslmode=verify-ca&sslrootcert={}", not_pem.display()), "holds no PEM certificate"),
        (format!("sslmode=require&sslrootcert={}", dir.path().display()), "cannot be read"),
        ("sslrootcert=system&sslmode=require".to_owned(), "sslrootcert=system needs sslmode=verify-full"),
        ("sslcert=/client.pem".to_owned(), "client certificates are not supported"),
    ];
    for (query, want) in cases {
        let url = format!("{base}?{query}");
        let e = connect(&url).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Config(_)), "{query}: a configuration error, not {e:?}");
        assert!(text.contains(want), "{query}: {text}");
        assert!(text.starts_with(&format!("postgres://chanto:***@127.0.0.1:{port}/chanto")), "{query}: {text}");
        assert!(!text.contains("hunter2secret"), "{query}: {text}");
    }
    // The file's path is named.
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", missing.display());
    let text = connect(&url).await.unwrap_err().to_string();
    assert!(text.contains(&format!("sslrootcert={} cannot be read", missing.display())), "{text}");
}
