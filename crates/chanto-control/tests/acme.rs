//! The ACME client (`chanto_control::acme`) against a real ACME CA: Pebble,
//! started per test from Debian's `pebble` package (see `acme/pebble.rs`),
//! validating challenges served by in-test HTTP-01 and TLS-ALPN-01 responders.

#[path = "acme/pebble.rs"]
mod pebble;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chanto_control::acme::{self, AcmeConfig, ChallengeKind, ExternalAccountKey};
use pebble::{Options, Pebble, Publisher};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use x509_parser::extensions::GeneralName;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(pebble: &Pebble) -> AcmeConfig {
    AcmeConfig {
        directory_url: pebble.directory_url.clone(),
        contact_email: Some("certs@example.test".to_owned()),
        eab: None,
        extra_roots_pem: Some(pebble.https_root_pem.clone()),
        challenge: ChallengeKind::Http01,
        dns_hook: None,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

/// Checks an issued chain the way a user of it would: chanto's own upload
/// checks (key matches, valid now, covers each name, leads to Pebble's root),
/// rustls loads it, and it was signed by Pebble's intermediate.
async fn assert_issued(pebble: &Pebble, issued: &acme::Issued, names: &[String]) {
    let (root_pem, intermediate_pem) = pebble.ca_certificates().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap()).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    for name in names {
        let checked = chanto_control::certcheck::check_upload(
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            name,
            &roots,
            now,
        )
        .unwrap_or_else(|e| panic!("the issued certificate does not pass chanto's checks for {name}: {e}"));
        assert!(checked.names.contains(name), "{:?}", checked.names);
    }
    pebble::certified_key(&issued.chain_pem, &issued.key_pem).expect("rustls loads the issued chain and key");
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "a PKCS#8 key");

    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    assert!(chain.len() >= 2, "leaf and intermediate, got {} certificates", chain.len());
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let intermediate_der = CertificateDer::from_pem_slice(intermediate_pem.as_bytes()).unwrap();
    let (_, intermediate) = x509_parser::parse_x509_certificate(&intermediate_der).unwrap();
    assert_eq!(leaf.issuer(), intermediate.subject(), "issued by Pebble's intermediate");
    assert_eq!(chain[1].as_ref(), intermediate_der.as_ref(), "the chain carries Pebble's intermediate");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension")
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    let mut want = names.to_vec();
    want.sort();
    let mut got = sans.clone();
    got.sort();
    assert_eq!(got, want, "the leaf covers exactly the ordered names");
    let spki = leaf.public_key();
    assert_eq!(
        spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string()),
        Some("1.2.840.10045.3.1.7".to_owned()),
        "an ECDSA P-256 key"
    );
}

#[tokio::test]
async fn issues_by_http01_and_removes_the_challenges() {
    let pebble = Pebble::start().await;
    let (account, credentials) = acme::account(&config(&pebble), None).await.unwrap();
    assert!(account.id().starts_with("https://127.0.0.1:"), "{}", account.id());
    assert!(credentials.contains(&pebble.directory_url), "the credentials name their CA: {credentials}");

    let publisher = Publisher::new(&pebble.published);
    let wanted = names(&["docs.example.test", "www.docs.example.test"]);
    let issued = acme::issue(&account, &wanted, ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing: {e} ({e:?})\n{}", pebble.logs()));
    assert_issued(&pebble, &issued, &wanted).await;

    let removed = publisher.removed.lock().unwrap().clone();
    let mut removed_names: Vec<&str> = removed.iter().map(|(n, _)| n.as_str()).collect();
    removed_names.sort();
    assert_eq!(removed_names, ["docs.example.test", "www.docs.example.test"]);
    assert!(removed.iter().all(|(_, token)| !token.is_empty()));
    assert_eq!(pebble.published.len(), 0, "nothing is still published");
}

#[tokio::test]
async fn issues_by_tls_alpn01() {
    let pebble = Pebble::start().await;
    let (account, _) = acme::account(&config(&pebble), None).await.unwrap();
    let publisher = Publisher::new(&pebble.published);
    let wanted = names(&["blog.example.test"]);
    let issued = acme::issue(&account, &wanted, ChallengeKind::TlsAlpn01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing: {e} ({e:?})\n{}", pebble.logs()));
    assert_issued(&pebble, &issued, &wanted).await;
    assert_eq!(publisher.removed.lock().unwrap().len(), 1);
    assert_eq!(pebble.published.len(), 0, "nothing is still published");
}

/// DNS-01 as an operator's hook does it: TXT records at the DNS Pebble asks
/// (pebble-challtestsrv's management API).
struct TxtPublisher {
    management: std::net::SocketAddr,
    client: reqwest::Client,
    published: std::sync::Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl acme::Challenges for TxtPublisher {
    async fn put_http01(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
        Err("DNS-01 only".into())
    }

    async fn put_tls_alpn01(&self, _: &str, _: &str, _: &str, _: acme::AlpnCert) -> Result<(), String> {
        Err("DNS-01 only".into())
    }

    async fn put_dns01(&self, _name: &str, txt_name: &str, value: &str) -> Result<(), String> {
        let url = format!("http://{}/set-txt", self.management);
        let body = serde_json::json!({ "host": txt_name, "value": value });
        self.client.post(url).json(&body).send().await.map_err(|e| e.to_string())?;
        self.published.lock().unwrap().push((txt_name.to_owned(), value.to_owned()));
        Ok(())
    }

    async fn remove(&self, name: &str, _token: &str) {
        let txt_name = format!("_acme-challenge.{}.", name.trim_start_matches("*."));
        let url = format!("http://{}/clear-txt", self.management);
        let _ = self.client.post(url).json(&serde_json::json!({ "host": txt_name })).send().await;
        self.published.lock().unwrap().retain(|(n, _)| *n != txt_name);
    }
}

#[tokio::test]
async fn issues_a_wildcard_by_dns01() {
    let pebble = Pebble::start().await;
    let (account, _) = acme::account(&config(&pebble), None).await.unwrap();
    let publisher = TxtPublisher {
        management: pebble.dns_management,
        client: reqwest::Client::new(),
        published: Default::default(),
    };
    // A wildcard and its apex: two authorizations, one TXT name (both values).
    let wanted = names(&["*.wild.example.test", "wild.example.test"]);
    let issued = acme::issue(&account, &wanted, ChallengeKind::Dns01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing: {e} ({e:?})\n{}", pebble.logs()));
    assert_issued(&pebble, &issued, &wanted).await;
    assert!(publisher.published.lock().unwrap().is_empty(), "every record removed");
    // Without a DNS publisher (the default), DNS-01 fails before the CA is asked to look.
    let err = acme::issue(
        &account,
        &names(&["x.example.test"]),
        ChallengeKind::Dns01,
        &Publisher::new(&pebble.published),
        DEADLINE,
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("publishes no DNS records"), "{err}");
}

#[tokio::test]
async fn stored_credentials_load_the_same_account() {
    let pebble = Pebble::start().await;
    let config = config(&pebble);
    let (created, stored) = acme::account(&config, None).await.unwrap();
    let (loaded, again) = acme::account(&config, Some(&stored)).await.unwrap();
    assert_eq!(loaded.id(), created.id(), "the same account, not a new one");
    assert_eq!(again, stored, "nothing new to store");

    let publisher = Publisher::new(&pebble.published);
    let wanted = names(&["docs.example.test"]);
    let issued = acme::issue(&loaded, &wanted, ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing with the loaded account: {e}\n{}", pebble.logs()));
    assert_issued(&pebble, &issued, &wanted).await;

    // Credentials from another CA (the directory URL changed): a new account, new credentials.
    let moved = stored.replace(&pebble.directory_url, "https://127.0.0.1:1/dir");
    let (other, fresh) = acme::account(&config, Some(&moved)).await.unwrap();
    assert_ne!(other.id(), created.id());
    assert_ne!(fresh, stored);

    let err = acme::account(&config, Some("{not json")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("stored ACME account"), "{err}");
}

#[tokio::test]
async fn a_challenge_nobody_answers_fails_naming_the_name() {
    let pebble = Pebble::start().await;
    let (account, _) = acme::account(&config(&pebble), None).await.unwrap();
    let mut publisher = Publisher::new(&pebble.published);
    publisher.answer = false;

    let err = acme::issue(&account, &names(&["lost.example.test"]), ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(
        err.message.contains("http://lost.example.test/.well-known/acme-challenge/"),
        "the message names the URL the CA tried: {err}"
    );
    assert!(err.message.contains("check that lost.example.test's DNS points at this installation"), "{err}");
    assert_eq!(err.problem_kind(), Some("unauthorized"), "{err:?}");
    assert_eq!(publisher.removed.lock().unwrap().len(), 1, "removed even though issuing failed");

    let err = acme::issue(&account, &names(&["lost.example.test"]), ChallengeKind::TlsAlpn01, &publisher, DEADLINE)
        .await
        .unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("lost.example.test:443"), "{err}");
    assert!(err.message.contains("TLS-ALPN-01"), "{err}");
}

#[tokio::test]
async fn the_deadline_stops_issuing_and_still_removes_the_challenge() {
    let pebble = Pebble::start().await;
    let (account, _) = acme::account(&config(&pebble), None).await.unwrap();
    let mut publisher = Publisher::new(&pebble.published);
    publisher.delay = Duration::from_secs(30);

    let started = std::time::Instant::now();
    let err = acme::issue(
        &account,
        &names(&["slow.example.test"]),
        ChallengeKind::Http01,
        &publisher,
        Duration::from_millis(1500),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("slow.example.test") && err.message.contains("not done within 1s 500ms"), "{err}");
    let removed = publisher.removed.lock().unwrap().clone();
    assert_eq!(removed.len(), 1, "the challenge cut short is removed: {removed:?}");
    assert_eq!(removed[0].0, "slow.example.test");
    assert_eq!(pebble.published.len(), 0, "nothing is still published");
}

#[tokio::test]
async fn an_unreachable_ca_is_retryable() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = AcmeConfig {
        directory_url: format!("https://127.0.0.1:{port}/dir"),
        contact_email: None,
        eab: None,
        extra_roots_pem: None,
        challenge: ChallengeKind::Http01,
        dns_hook: None,
    };
    let err = acme::account(&config, None).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("could not reach the CA"), "{err}");
    assert!(err.message.contains(&config.directory_url), "{err}");

    // The CA goes away between making the account and ordering.
    let mut pebble = Pebble::start().await;
    let (account, _) = acme::account(&self::config(&pebble), None).await.unwrap();
    pebble.stop_ca();
    let publisher = Publisher::new(&pebble.published);
    let err = acme::issue(&account, &names(&["docs.example.test"]), ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("docs.example.test"), "{err}");
}

#[tokio::test]
async fn an_untrusted_ca_certificate_is_not_retryable() {
    let pebble = Pebble::start().await;
    let mut config = config(&pebble);
    config.extra_roots_pem = None;
    let err = acme::account(&config, None).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("not trusted"), "{err}");

    config.extra_roots_pem = Some("not a certificate".to_owned());
    let err = acme::account(&config, None).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("extra roots"), "{err}");
}

#[tokio::test]
async fn external_account_binding() {
    // Pebble's example key (RFC 8555 HMAC keys are base64url).
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble =
        Pebble::start_with(Options { eab_keys: vec![("kid-1".to_owned(), hmac.to_owned())], ..Options::default() })
            .await;
    let mut config = config(&pebble);

    let err = acme::account(&config, None).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert_eq!(err.problem_kind(), Some("externalAccountRequired"), "{err:?}");
    assert!(err.message.contains("External Account Binding"), "{err}");

    config.eab = Some(ExternalAccountKey { kid: "kid-1".to_owned(), hmac_key_b64url: hmac.to_owned() });
    let (account, _) = acme::account(&config, None).await.unwrap_or_else(|e| panic!("{e}\n{}", pebble.logs()));
    let publisher = Publisher::new(&pebble.published);
    acme::issue(&account, &names(&["eab.example.test"]), ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing with an EAB account: {e}\n{}", pebble.logs()));

    config.eab = Some(ExternalAccountKey { kid: "kid-1".to_owned(), hmac_key_b64url: "not base64!".to_owned() });
    let err = acme::account(&config, None).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("EAB HMAC key"), "{err}");
}

#[tokio::test]
async fn a_ca_that_keeps_rejecting_nonces_is_retryable() {
    // Every nonce is "bad": instant-acme retries a few times, then gives up.
    let pebble = Pebble::start_with(Options { nonce_reject_percent: 100, ..Options::default() }).await;
    let err = acme::account(&config(&pebble), None).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert_eq!(err.problem_kind(), Some("badNonce"), "{err:?}");
}

#[tokio::test]
async fn renewal_windows_come_from_the_ca_when_it_offers_them() {
    use base64::Engine as _;
    let pebble = Pebble::start().await;
    let (account, _) = acme::account(&config(&pebble), None).await.unwrap();
    let publisher = Publisher::new(&pebble.published);
    let issued = acme::issue(&account, &names(&["ari.example.test"]), ChallengeKind::Http01, &publisher, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("issuing: {e}\n{}", pebble.logs()));
    // Debian's Pebble offers no renewal information: no window, no error
    // (the caller keeps to a third of the lifetime).
    assert_eq!(acme::renewal_window(&account, &issued.chain_pem).await.unwrap(), None);

    // A CA that offers it: the window, asked about by the certificate's
    // RFC 9773 id (base64url of the authority key id, '.', of the serial).
    let front = pebble.ari_front().await;
    front.windows.lock().unwrap().push(("2030-01-02T04:00:00Z".into(), "2030-01-03T04:00:00Z".into()));
    let ari_config = AcmeConfig { directory_url: front.directory_url.clone(), ..config(&pebble) };
    let (ari_account, _) = acme::account(&ari_config, None).await.unwrap();
    let window = acme::renewal_window(&ari_account, &issued.chain_pem).await.unwrap().unwrap();
    assert_eq!((window.start, window.end), (1_893_556_800_000, 1_893_556_800_000 + 86_400_000));
    let ask_again = window.ask_again.as_secs_f64();
    assert!((21590.0..=21600.0).contains(&ask_again), "the CA's Retry-After (6 h): {ask_again}");
    let leaf = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).next().unwrap().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
            _ => None,
        })
        .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expected = format!("{}.{}", b64.encode(aki.0), b64.encode(cert.tbs_certificate.raw_serial()));
    assert_eq!(front.asked.lock().unwrap().as_slice(), [expected]);

    // The CA knows nothing of the certificate (404): a retryable error.
    front.windows.lock().unwrap().clear();
    let err = acme::renewal_window(&ari_account, &issued.chain_pem).await.unwrap_err();
    assert!(err.retryable && err.message.contains("renewal information"), "{err}");
    // A chain with no certificate in it: an error naming that.
    let err = acme::renewal_window(&ari_account, "not a certificate").await.unwrap_err();
    assert!(!err.retryable && err.message.contains("no certificate"), "{err}");
}
