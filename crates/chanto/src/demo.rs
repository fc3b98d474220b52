//! `chanto demo`: starts the server on embedded defaults and deploys the
//! bundled example site through the real API, then prints where to look.

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::client::Client;
use crate::deploy::{self, DeployPlan};
use crate::serve;

/// The example site, compiled into the binary.
const EXAMPLE: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../../examples/site/index.html")),
    ("about/index.html", include_bytes!("../../../examples/site/about/index.html")),
    ("404.html", include_bytes!("../../../examples/site/404.html")),
    ("style.css", include_bytes!("../../../examples/site/style.css")),
    ("app.js", include_bytes!("../../../examples/site/app.js")),
];

/// The example's site name.
pub const SITE: &str = "example";

pub async fn run(args: &ServeArgs, json: bool) -> anyhow::Result<()> {
    let running = serve::start(args).await?;
    serve::announce_token(&running);
    let token = match &running.new_token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(running.data.join("admin.token"))
            .with_context(|| {
                format!(
                    "reading {} (the admin token the first start wrote)",
                    running.data.join("admin.token").display()
                )
            })?
            .trim()
            .to_owned(),
    };
    let client = Client::with(running.api_url(), Some(token))?;

    let dir = running.data.join("example-site");
    for (path, bytes) in EXAMPLE {
        let dest = dir.join(path);
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
    }
    let site: chanto_core::SiteName = SITE.parse().expect("valid site name");
    if running.control.meta.get_site(&site).await?.is_none() {
        running
            .control
            .create_site(&site, &"main".parse().expect("valid branch"))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let outcome = deploy::run(
        &client,
        DeployPlan {
            dir: &dir,
            site: SITE,
            branch: None,
            message: Some("chanto demo: the bundled example site"),
            draft: false,
            parallel: 8,
            progress: false,
            hash_cache: false,
            project: None,
        },
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        let urls = &outcome.deploy.urls;
        println!("chanto is serving the example site. Open:");
        println!("  {}", urls.production.as_deref().unwrap_or(&urls.branch));
        println!("  {}   (this deploy, forever)", urls.permalink);
        println!("API: {}   admin token: {}", running.api_url(), running.data.join("admin.token").display());
        println!("Press Ctrl-C to stop.");
    }
    running.run_until_signal().await
}
