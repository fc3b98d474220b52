//! The real-browser harness (chanto_testkit::browser) against pages of a
//! tiny loopback HTTP server: axe-core finds nothing on an accessible page
//! served with a strict Content-Security-Policy, finds what is wrong on a
//! bad one, and the keyboard moves focus and presses buttons.

use chanto_testkit::browser::{self, fantoccini::key::Key};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The pages' CSP: no inline script or style, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'";

const GOOD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in · chanto</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js"></script>
</head>
<body>
<main>
<h1>Sign in</h1>
<form method="post" action="/login">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="email" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<script>window.inlineRan = true;</script>
</main>
</body>
</html>"#;

const BAD: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>Bad</title></head>
<body>
<img src="/logo.png">
<input type="text" name="q">
</body>
</html>"#;

const KEYBOARD: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Keyboard</title><script src="/keyboard.js" defer></script></head>
<body>
<main>
<h1>Keyboard</h1>
<a id="home" href="/keyboard">Home</a>
<button id="go" type="button">Go</button>
<p id="out" role="status"></p>
</main>
</body>
</html>"#;

/// Serves the pages above (with [`CSP`]) on a free loopback port until the
/// test's runtime ends.
async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap_or("/");
                let (status, kind, body) = match path {
                    "/good" => ("200 OK", "text/html; charset=utf-8", GOOD),
                    "/bad" => ("200 OK", "text/html; charset=utf-8", BAD),
                    "/keyboard" => ("200 OK", "text/html; charset=utf-8", KEYBOARD),
                    "/style.css" => ("200 OK", "text/css", "body { font-family: sans-serif; }"),
                    "/app.js" => ("200 OK", "text/javascript", "window.externalRan = true;"),
                    "/keyboard.js" => (
                        "200 OK",
                        "text/javascript",
                        "document.getElementById('go').addEventListener('click', () => { \
                           document.getElementById('out').textContent = 'Went'; });",
                    ),
                    _ => ("404 Not Found", "text/plain", "not found"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Security-Policy: {CSP}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_accessible_page_under_a_strict_csp_has_no_violations() {
    let Some(s) = browser::session("an_accessible_page_under_a_strict_csp_has_no_violations").await else { return };
    let addr = serve().await;
    s.goto(&format!("http://{addr}/good")).await.unwrap();
    browser::wait_for(&s, "button[type=submit]").await;
    // The CSP is in force: the page's own script ran, its inline one did not…
    let ran = s.execute("return [window.externalRan === true, window.inlineRan === true];", vec![]).await.unwrap();
    assert_eq!(ran, serde_json::json!([true, false]), "the CSP should block only the inline script");
    // …and axe-core runs all the same (WebDriver scripts are not the page's).
    browser::assert_accessible(&s, "the good page").await;
    if let Some(violations) = browser::axe(&s).await {
        assert!(violations.is_empty(), "{violations:?}");
    }
    s.close().await;
}

#[tokio::test]
async fn an_inaccessible_page_has_the_expected_violations() {
    let Some(s) = browser::session("an_inaccessible_page_has_the_expected_violations").await else { return };
    let addr = serve().await;
    s.goto(&format!("http://{addr}/bad")).await.unwrap();
    let Some(violations) = browser::axe(&s).await else {
        eprintln!("SKIPPED an_inaccessible_page_has_the_expected_violations: axe-core is not installed");
        return s.close().await;
    };
    let mut ids: Vec<&str> = violations.iter().map(|v| v.id.as_str()).collect();
    ids.sort();
    for expected in ["html-has-lang", "image-alt", "label"] {
        assert!(ids.contains(&expected), "axe-core should report {expected}; it reported {ids:?}");
    }
    let image_alt = violations.iter().find(|v| v.id == "image-alt").unwrap();
    assert_eq!(image_alt.nodes.len(), 1, "{image_alt}");
    assert_eq!(image_alt.nodes[0].target, "img", "{image_alt}");
    assert!(image_alt.impact.is_some() && !image_alt.help.is_empty(), "{image_alt}");
    // assert_accessible fails, listing every violation by rule and element.
    let client = s.client().clone();
    let failed = tokio::spawn(async move { browser::assert_accessible(&client, "the bad page").await }).await;
    let panic = failed.expect_err("assert_accessible passed a page with violations").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    for needle in ["the bad page", "image-alt", "label", "html-has-lang", "<img src=\"/logo.png\">"] {
        assert!(message.contains(needle), "the failure should mention {needle}:\n{message}");
    }
    s.close().await;
}

#[tokio::test]
async fn the_keyboard_alone_reaches_and_presses_the_controls() {
    let Some(s) = browser::session("the_keyboard_alone_reaches_and_presses_the_controls").await else { return };
    let addr = serve().await;
    s.goto(&format!("http://{addr}/keyboard")).await.unwrap();
    browser::wait_for(&s, "#go").await;
    assert_eq!(browser::focused(&s).await, "body");
    browser::tab(&s).await;
    assert_eq!(browser::focused(&s).await, "a#home");
    browser::tab(&s).await;
    assert_eq!(browser::focused(&s).await, "button#go");
    browser::press(&s, Key::Enter).await;
    browser::wait_until(&s, "document.getElementById('out').textContent === 'Went'", "Enter on the button").await;
    // Shift+Tab goes back to the link.
    use browser::fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let shift: char = Key::Shift.into();
    let tab: char = Key::Tab.into();
    let back = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: shift })
        .then(KeyAction::Down { value: tab })
        .then(KeyAction::Up { value: tab })
        .then(KeyAction::Up { value: shift });
    s.perform_actions(back).await.unwrap();
    assert_eq!(browser::focused(&s).await, "a#home");
    browser::assert_accessible(&s, "the keyboard page").await;
    s.close().await;
}
