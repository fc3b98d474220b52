//! Custom domains through the API (issue 17): adding (with the `www` twin),
//! conflicts naming the site that has a name, hostile names, the primary,
//! removal, ownership checks against a real HTTP server, certificate
//! uploads checked one problem at a time, and HTTPS settings.

use super::*;
use chanto_control::domains::DomainService;
use chanto_testkit::tls::TestCa;

fn enable_domains(h: &Harness, ca: Option<&TestCa>, check_addr: Option<std::net::SocketAddr>) {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca.cert()).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    h.control.enable_domains(DomainService::new(
        chanto_control::builds::sealed::Sealer::new([7; 32]),
        roots,
        check_addr,
    ));
}

use rustls::pki_types::pem::PemObject;

async fn add(h: &Harness, site: &str, body: Value) -> (StatusCode, Value) {
    h.call("POST", &format!("/api/v1/sites/{site}/domains"), body).await
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list of domains: {v}"))
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn domains_are_added_with_their_www_twin_listed_and_routed() {
    let h = Harness::new().await;
    h.site("docs").await;
    let (s, v) = add(&h, "docs", json!({"name": "Example.COM"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(names(&v), ["example.com", "www.example.com"]);
    assert_eq!(v[0]["primary"], true, "the first domain is primary: {v}");
    assert_eq!(v[1]["primary"], false);
    assert_eq!(v[0]["state"], "pending_verification");
    assert_eq!(v[0]["dns"]["kind"], "A/AAAA", "an apex cannot be a CNAME: {v}");
    assert_eq!(v[1]["dns"]["kind"], "CNAME");
    assert_eq!(v[1]["dns"]["value"], "docs.localhost.");
    let token = v[0]["verify_token"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    assert_eq!(v[0]["verify_path"], format!("/.well-known/acme-challenge/chanto-{token}"));
    assert_ne!(v[0]["verify_token"], v[1]["verify_token"], "each name has its own token");

    // A subdomain to a branch; no twin for a name that is not an apex.
    let (s, v) = add(&h, "docs", json!({"name": "staging.example.com", "branch": "staging"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(names(&v), ["staging.example.com"]);
    assert_eq!(v[0]["branch"], "staging");
    // An apex without its twin, when asked.
    h.site("blog").await;
    let (s, v) = add(&h, "blog", json!({"name": "blog.test.org", "www": false})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["blog.test.org"]), "{v}");
    let (s, v) = add(&h, "blog", json!({"name": "example.org", "www": false})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["example.org"]), "{v}");

    let (s, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&v), ["example.com", "staging.example.com", "www.example.com"]);

    // The edges get them in the routing table, with the branch and the primary.
    let table = h.last_table();
    let docs = &table.sites[&docs_site()];
    let route = |n: &str| docs.domains.iter().find(|d| d.name == n).unwrap();
    assert!(route("example.com").primary);
    assert!(!route("www.example.com").primary);
    assert_eq!(route("staging.example.com").branch.as_ref().map(|b| b.as_str()), Some("staging"));
    assert!(route("example.com").cert.is_none());
}

#[tokio::test]
async fn a_name_belongs_to_one_site_and_the_conflict_names_it() {
    let h = Harness::new().await;
    h.site("docs").await;
    h.site("blog").await;
    let (s, _) = add(&h, "docs", json!({"name": "example.com"})).await;
    assert_eq!(s, StatusCode::CREATED);
    for name in ["example.com", "www.example.com", "EXAMPLE.com."] {
        let (s, v) = add(&h, "blog", json!({"name": name, "www": false})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{name}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("docs"), "the message names the site: {v}");
    }
    // Adding the same name again to its own site is a conflict too, and adds nothing.
    let (s, _) = add(&h, "docs", json!({"name": "example.com"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    assert_eq!(names(&v).len(), 2);
    let (_, v) = h.call("GET", "/api/v1/sites/blog/domains", Value::Null).await;
    assert_eq!(v, json!([]));
    // A www name brings its apex too, unless asked not to; a twin another
    // name already took is left out.
    let (s, v) = add(&h, "blog", json!({"name": "www.blog.example"})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["www.blog.example", "blog.example"]), "{v}");
    let (s, v) = add(&h, "blog", json!({"name": "www.shop.example", "www": false})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["www.shop.example"]), "{v}");
    let (s, v) = add(&h, "blog", json!({"name": "shop.example"})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["shop.example"]), "{v}");
}

#[tokio::test]
async fn hostile_and_unservable_names_are_refused_with_the_reason() {
    let h = Harness::with_config(|c| c.preview_domain = Some("preview.test".into())).await;
    h.site("docs").await;
    let long = format!("{}.example.com", "a".repeat(300));
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("127.0.0.1", "IP"),
        ("[::1]", ""),
        ("*.example.com", "wildcard"),
        ("docs.localhost", "localhost"),
        ("x.preview.test", "preview.test"),
        ("co.uk", "public suffix"),
        ("com", ""),
        ("http://example.com/", ""),
        ("example.com:8080", ""),
        ("exa mple.com", ""),
        ("example.com/../etc", ""),
        (&long, ""),
        ("ex\u{0}ample.com", ""),
        ("-bad-.example.com", ""),
    ];
    for (name, says) in cases {
        let (s, v) = add(&h, "docs", json!({ "name": name })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert_eq!(v["error"]["field"], "name", "{name:?}: {v}");
        let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(msg.contains(&says.to_lowercase()), "{name:?}: {msg}");
    }
    // Unknown fields and a bad branch are refused too; nothing was added.
    let (s, v) = add(&h, "docs", json!({"name": "ok.example.com", "site": "blog"})).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"), "{v}");
    let (s, v) = add(&h, "docs", json!({"name": "ok.example.com", "branch": "../x"})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("branch")), "{v}");
    let (s, v) = add(&h, "nosite", json!({"name": "ok.example.com"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    assert_eq!(v, json!([]));
    // Unicode names are stored as punycode.
    let (s, v) = add(&h, "docs", json!({"name": "bücher.example", "www": false})).await;
    assert_eq!((s, names(&v)), (StatusCode::CREATED, vec!["xn--bcher-kva.example"]), "{v}");
    // No token, no domains.
    let (s, _) = h.raw("GET", "/api/v1/sites/docs/domains", None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_primary_moves_and_removal_takes_the_twin() {
    let h = Harness::new().await;
    h.site("docs").await;
    add(&h, "docs", json!({"name": "example.com"})).await;
    add(&h, "docs", json!({"name": "docs.example.net"})).await;
    let (s, v) = h.call("PUT", "/api/v1/sites/docs/domains/www.example.com/primary", Value::Null).await;
    assert_eq!((s, &v["primary"]), (StatusCode::OK, &json!(true)), "{v}");
    let (_, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    let primaries: Vec<&str> =
        v.as_array().unwrap().iter().filter(|d| d["primary"] == true).map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(primaries, ["www.example.com"]);
    // Another site's name, or no such name: 404, whichever it is.
    h.site("blog").await;
    let (s, _) = h.call("PUT", "/api/v1/sites/blog/domains/example.com/primary", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("DELETE", "/api/v1/sites/blog/domains/example.com", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Removing the apex takes its twin; the remaining name becomes primary.
    let (s, v) = h.call("DELETE", "/api/v1/sites/docs/domains/example.com", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut removed: Vec<&str> = v["removed"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    removed.sort();
    assert_eq!(removed, ["example.com", "www.example.com"]);
    let (_, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    assert_eq!(names(&v), ["docs.example.net"]);
    assert_eq!(v[0]["primary"], true);
    assert!(h.last_table().sites[&docs_site()].domains.iter().all(|d| d.name == "docs.example.net"));
    // The names are free again.
    let (s, _) = add(&h, "blog", json!({"name": "example.com"})).await;
    assert_eq!(s, StatusCode::CREATED);
}

/// A server answering `body` on every path: what a name may reach.
async fn answering(body: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { body });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn verification_fetches_the_token_from_the_name() {
    let h = Harness::new().await;
    h.site("docs").await;
    add(&h, "docs", json!({"name": "docs.example.com"})).await;
    // Not enabled: a clear 503.
    let (s, v) = h.call("POST", "/api/v1/sites/docs/domains/docs.example.com/verify", Value::Null).await;
    assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, "domains_disabled"), "{v}");

    // The name reaches another server: still pending, with what was seen and what to do.
    let other = answering("not the token").await;
    enable_domains(&h, None, Some(other));
    let (s, v) = h.call("POST", "/api/v1/sites/docs/domains/docs.example.com/verify", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "pending_verification");
    assert!(v["reason"].as_str().unwrap().contains("another server"), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("chanto domains verify docs.example.com --site docs"), "{v}");
    assert!(v.get("verified_at").is_none());
}

#[tokio::test]
async fn verification_succeeds_when_the_name_answers_the_token() {
    let h = Harness::new().await;
    h.site("docs").await;
    let (_, v) = add(&h, "docs", json!({"name": "docs.example.com"})).await;
    let token: &'static str = Box::leak(v[0]["verify_token"].as_str().unwrap().to_owned().into_boxed_str());
    let edge = answering(token).await;
    enable_domains(&h, None, Some(edge));
    let (s, v) = h.call("POST", "/api/v1/sites/docs/domains/docs.example.com/verify", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "issuing", "{v}");
    assert_eq!(v["verified_by"], "http");
    assert!(v["verified_at"].is_string());
    assert!(v["hint"].as_str().unwrap().contains("chanto certs upload"), "{v}");
    assert!(v.get("reason").is_none(), "{v}");

    // Nothing listens: the reason says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let h2 = Harness::new().await;
    h2.site("blog").await;
    add(&h2, "blog", json!({"name": "blog.example.com"})).await;
    enable_domains(&h2, None, Some(closed));
    let (s, v) = h2.call("POST", "/api/v1/sites/blog/domains/blog.example.com/verify", Value::Null).await;
    assert_eq!((s, &v["state"]), (StatusCode::OK, &json!("pending_verification")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("failed"), "{v}");
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

async fn upload_cert(h: &Harness, site: &str, name: &str, chain: &str, key: &str) -> (StatusCode, Value) {
    h.call(
        "PUT",
        &format!("/api/v1/sites/{site}/domains/{name}/certificate"),
        json!({"chain_pem": chain, "key_pem": key}),
    )
    .await
}

#[tokio::test]
async fn uploaded_certificates_are_checked_sealed_and_routed() {
    let ca = TestCa::new("uploads");
    let h = Harness::new().await;
    h.site("docs").await;
    add(&h, "docs", json!({"name": "docs.example.com"})).await;
    let good = ca.issue(&["docs.example.com"]);
    let other = ca.issue(&["other.example.com"]);
    let (chain, key) = (read(&good.cert), read(&good.key));

    // Not enabled: 503, nothing stored.
    let (s, v) = upload_cert(&h, "docs", "docs.example.com", &chain, &key).await;
    assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, "domains_disabled"), "{v}");
    enable_domains(&h, Some(&ca), None);

    // One problem at a time, each with its own code.
    let cases: Vec<(String, String, &str)> = vec![
        ("not a certificate".into(), key.clone(), "cert_pem_invalid"),
        (chain.clone(), "not a key".into(), "key_pem_invalid"),
        (chain.clone(), read(&other.key), "key_mismatch"),
        (read(&other.cert), read(&other.key), "names_do_not_cover"),
    ];
    for (c, k, want) in &cases {
        let (s, v) = upload_cert(&h, "docs", "docs.example.com", c, k).await;
        assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, *want), "{v}");
        let text = v.to_string();
        assert!(k.lines().filter(|l| l.len() > 20).all(|l| !text.contains(l)), "no key material in an error: {v}");
    }
    // A chain to a root this server does not trust.
    let stranger = TestCa::new("stranger");
    let foreign = stranger.issue(&["docs.example.com"]);
    let (s, v) = upload_cert(&h, "docs", "docs.example.com", &read(&foreign.cert), &read(&foreign.key)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(code(&v).starts_with("chain_"), "{v}");
    // Too big: 413 before anything is parsed; a body that is not JSON: 400.
    let big = "A".repeat(300 << 10);
    let (s, _) = upload_cert(&h, "docs", "docs.example.com", &big, &key).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = h
        .raw(
            "PUT",
            "/api/v1/sites/docs/domains/docs.example.com/certificate",
            Some(&h.token),
            Body::from("{\"chain_pem\": 1"),
            "application/json",
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A domain of no site: 404.
    let (s, _) = upload_cert(&h, "docs", "nope.example.com", &chain, &key).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    assert!(v[0].get("certificate").is_none(), "nothing stored by refused uploads: {v}");

    // The good one: active, served, and its key is nowhere in what the API says.
    let (s, v) = upload_cert(&h, "docs", "docs.example.com", &chain, &key).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = &v["domain"];
    assert_eq!(d["state"], "active", "{v}");
    assert_eq!(d["verified_by"], "upload");
    assert_eq!(d["url"], "https://docs.example.com/");
    assert_eq!(d["certificate"]["source"], "upload");
    assert_eq!(d["certificate"]["names"], json!(["docs.example.com"]));
    assert!(d["certificate"]["days_left"].as_i64().unwrap() >= 6, "{v}");
    assert!(
        v["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("expires")),
        "a week-long certificate warns: {v}"
    );
    let (_, listed) = h.call("GET", "/api/v1/sites/docs/domains", Value::Null).await;
    for text in [v.to_string(), listed.to_string()] {
        assert!(!text.contains("PRIVATE KEY") && !text.contains(key.lines().nth(1).unwrap()), "{text}");
    }
    let table = h.last_table();
    let route = &table.sites[&docs_site()].domains[0];
    assert_eq!(route.cert.as_deref(), d["certificate"]["id"].as_str());
    // The stored key is sealed, and opens to the uploaded one.
    let cert = h.control.meta.certificate(route.cert.as_ref().unwrap()).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&cert.key_sealed).contains("PRIVATE KEY"));
    assert_eq!(h.control.domain_keys().unwrap().open_key(&cert).unwrap().trim(), key.trim());
    // Removing the domain drops the certificate no name uses.
    h.call("DELETE", "/api/v1/sites/docs/domains/docs.example.com", Value::Null).await;
    assert!(h.control.meta.certificate(&cert.id).await.unwrap().is_none());
}

#[tokio::test]
async fn tls_settings_are_validated_and_published() {
    let h = Harness::new().await;
    h.site("docs").await;
    let (s, v) = h.call("GET", "/api/v1/sites/docs/tls", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"https_redirect": true, "hsts_max_age": 0, "hsts_include_subdomains": false, "hsts_preload": false})
    );
    for (body, field) in [
        (json!({"hsts_max_age": 100_000_000u64}), "hsts_max_age"),
        (json!({"hsts_preload": true, "hsts_max_age": 31_536_000}), "hsts_preload"),
        (json!({"hsts_preload": true, "hsts_include_subdomains": true, "hsts_max_age": 600}), "hsts_preload"),
    ] {
        let (s, v) = h.call("PUT", "/api/v1/sites/docs/tls", body.clone()).await;
        assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    for body in [json!({"hsts_max_age": -1}), json!({"hsts": 1}), json!({"https_redirect": "yes"})] {
        let (s, v) = h.call("PUT", "/api/v1/sites/docs/tls", body.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"), "{body}: {v}");
    }
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/sites/docs/tls",
            json!({"hsts_max_age": 63_072_000u64, "hsts_include_subdomains": true, "hsts_preload": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Absent fields stay as they were.
    let (_, v) = h.call("PUT", "/api/v1/sites/docs/tls", json!({"https_redirect": false})).await;
    assert_eq!(v["hsts_max_age"], 63_072_000u64);
    assert_eq!(v["https_redirect"], false);
    let tls = h.last_table().sites[&docs_site()].tls.unwrap();
    assert_eq!(tls.hsts_header().as_deref(), Some("max-age=63072000; includeSubDomains; preload"));
    assert!(!tls.https_redirect);
    let (s, _) = h.call("GET", "/api/v1/sites/nosite/tls", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn docs_site() -> chanto_core::SiteName {
    "docs".parse().unwrap()
}
