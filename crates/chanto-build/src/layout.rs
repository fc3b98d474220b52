//! Where a project's site is, as each platform reads its own project
//! (issue 19: move in unchanged). `chanto deploy DIR` with DIR a project
//! root deploys the directory the project's config names, and carries the
//! root config files that hold rules into the deploy, as the platform
//! reads them from there.

use crate::Error;
use crate::spec::{Context, SiteBuildSettings, SpecInput, resolve_spec};

/// Firebase's ignore list when `hosting.ignore` is absent (what `firebase
/// init` writes, and what the Firebase docs show).
pub const FIREBASE_DEFAULT_IGNORE: [&str; 3] = ["firebase.json", "**/.*", "**/node_modules/**"];

/// Root files that hold rules and that the platforms read from the project
/// root (not from the published directory). `netlify.toml` may instead come
/// from the base directory the site's settings name (see [`RuleFile`]).
const ROOT_RULE_FILES: [&str; 4] = ["firebase.json", "netlify.toml", "chanto.toml", "customHttp.yml"];

/// A config file holding rules that goes into a deploy at its top, under
/// `name`, read from `path` in the project (the root's `netlify.toml`, or
/// `site/netlify.toml` when the site's base directory is `site` and has
/// one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    /// Its name at the top of the deploy, where chanto reads rules from.
    pub name: &'static str,
    /// Where it is, relative to the project root.
    pub path: String,
}

/// What a project root says about its deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectLayout {
    /// The directory to deploy, relative to the project root (`""`: the root).
    pub publish: String,
    /// Which setting chose it, for the deploy to say (`hosting.public in firebase.json`).
    pub chosen_by: String,
    /// Config files holding rules, deployed at the top of the deploy (only
    /// when `publish` is not the directory they are in, where they are anyway).
    pub rule_files: Vec<RuleFile>,
    /// Globs (relative to `publish`) of files not to deploy.
    pub ignore: Vec<String>,
    /// Globs (relative to `publish`) of the files to deploy.
    pub include: Vec<String>,
}

fn config_error(file: &'static str, message: String) -> Error {
    Error::Config { file: file.to_owned(), line: 1, column: 1, message }
}

/// Reads the project at a root (`read` returns a root file's text): the
/// layout its config names, `None` when it has no such config.
pub fn project_layout(read: &dyn Fn(&str) -> Option<String>) -> Result<Option<ProjectLayout>, Error> {
    let settings = SiteBuildSettings::default();
    let input = SpecInput { read, context: Context::Production, branch: "", settings: &settings };
    let spec = match resolve_spec(&input) {
        Ok((spec, _)) => spec,
        Err(Error::NoBuildSpec) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut layout = build_layout(&spec, &settings, read)?;
    layout.chosen_by = match spec.source.as_str() {
        "amplify.yml" | "amplify.yaml" => format!("artifacts.baseDirectory in {}", spec.source),
        "firebase.json" => "hosting.public in firebase.json".to_owned(),
        source => format!("[build] publish in {source}"),
    };
    Ok(Some(layout))
}

/// What a Git build deploys of its checkout besides the publish directory,
/// and what it leaves out: the root's rule files (when the spec publishes a
/// subdirectory: the platforms read them from the root), `netlify.toml` from
/// the base directory the site's `settings` name when it has one (as
/// Netlify reads it there, before the root's), and Firebase's ignore list when `firebase.json`
/// publishes that same directory. `read` returns a file's text given its path
/// from the root (see [`SpecInput::read`]).
pub fn build_layout(
    spec: &crate::BuildSpec,
    settings: &SiteBuildSettings,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<ProjectLayout, Error> {
    let publish = normalize(&spec.publish);
    let netlify = crate::spec::netlify_toml(read, settings)?.map(|(path, _)| path);
    let rule_files = ROOT_RULE_FILES
        .iter()
        .filter_map(|&name| match name {
            "netlify.toml" => netlify.clone().map(|path| RuleFile { name, path }),
            _ => read(name).is_some().then(|| RuleFile { name, path: name.to_owned() }),
        })
        // In the published directory itself, it is at the top of the deploy anyway.
        .filter(|f| f.path.rsplit_once('/').map_or("", |(dir, _)| dir) != publish)
        .collect();
    let ignore = match read("firebase.json").map(|text| firebase(&text)).transpose()?.flatten() {
        Some(fb) if fb.publish == publish => fb.ignore,
        _ => Vec::new(),
    };
    Ok(ProjectLayout { publish, chosen_by: spec.source.clone(), rule_files, ignore, include: spec.files.clone() })
}

/// `hosting.public` of a `firebase.json` (its first site), if it names one.
pub(crate) fn firebase_public(text: &str) -> Result<Option<String>, Error> {
    Ok(firebase(text)?.map(|l| l.publish))
}

fn normalize(dir: &str) -> String {
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    parts.join("/")
}

/// `firebase.json`'s `hosting` (the first site when it lists several).
fn firebase(text: &str) -> Result<Option<ProjectLayout>, Error> {
    let file = "firebase.json";
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        message: format!("not valid JSON: {e}"),
    })?;
    let hosting = match doc.get("hosting") {
        None => return Ok(None),
        Some(serde_json::Value::Array(sites)) => match sites.first() {
            Some(first) => first,
            None => return Ok(None),
        },
        Some(h) => h,
    };
    let public = match hosting.get("public") {
        Some(serde_json::Value::String(p)) => p.clone(),
        Some(_) => return Err(config_error(file, "hosting.public must be a directory name, e.g. \"public\"".into())),
        // Rules only (a firebase.json in the published directory itself).
        None => return Ok(None),
    };
    let ignore = match hosting.get("ignore") {
        None => FIREBASE_DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| config_error(file, "hosting.ignore must be a list of glob strings".into()))?,
        Some(_) => return Err(config_error(file, "hosting.ignore must be a list of glob strings".into())),
    };
    Ok(Some(ProjectLayout {
        publish: normalize(&public),
        chosen_by: format!("hosting.public in {file}"),
        rule_files: Vec::new(),
        ignore,
        include: vec!["**/*".to_owned()],
    }))
}

/// Whether a deploy path is left out by the layout (its ignore globs, or
/// no include glob matching it). Firebase's globs match a path or any of its
/// parent directories (`node_modules/**` leaves out the whole directory).
pub fn excluded(layout: &ProjectLayout, path: &str) -> bool {
    let matches = |glob: &str| {
        let glob = glob.trim_start_matches("./").trim_start_matches('/');
        crate::glob_matches(glob, path)
            || path.match_indices('/').any(|(i, _)| crate::glob_matches(glob, &path[..i]))
            || path.rsplit('/').next().is_some_and(|name| !glob.contains('/') && crate::glob_matches(glob, name))
    };
    layout.ignore.iter().any(|g| matches(g)) || !layout.include.iter().any(|g| crate::glob_matches(g, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[(&str, &str)]) -> Result<Option<ProjectLayout>, Error> {
        let files: Vec<(String, String)> = files.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        project_layout(&move |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone()))
    }

    /// A layout's rule files: (name in the deploy, path in the project).
    fn rules(l: &ProjectLayout) -> Vec<(&str, &str)> {
        l.rule_files.iter().map(|f| (f.name, f.path.as_str())).collect()
    }

    /// A Git build's layout: the spec resolved with the site's settings, then its layout.
    fn built(files: &[(&str, &str)], settings: &SiteBuildSettings) -> ProjectLayout {
        let files: Vec<(String, String)> = files.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let read = move |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
        let input = SpecInput { read: &read, context: Context::Production, branch: "main", settings };
        let (spec, _) = resolve_spec(&input).unwrap();
        build_layout(&spec, settings, &read).unwrap()
    }

    #[test]
    fn a_base_directory_netlify_toml_brings_its_rules() {
        let site = SiteBuildSettings { base: Some("site".into()), ..Default::default() };
        let toml = "[build]\ncommand = \"make\"\npublish = \"out\"\n[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n";
        // The base's netlify.toml goes to the top of the deploy, read from the base.
        let l = built(&[("site/netlify.toml", toml)], &site);
        assert_eq!((l.publish.as_str(), l.chosen_by.as_str()), ("site/out", "site/netlify.toml"));
        assert_eq!(rules(&l), [("netlify.toml", "site/netlify.toml")]);
        // Rules only (the build from the settings): it still carries its rules.
        let settings = SiteBuildSettings { publish: Some("dist".into()), ..site.clone() };
        let l = built(&[("site/netlify.toml", "[[headers]]\nfor = \"/*\"\n")], &settings);
        assert_eq!((l.publish.as_str(), l.chosen_by.as_str()), ("site/dist", "site settings"));
        assert_eq!(rules(&l), [("netlify.toml", "site/netlify.toml")]);
        // Published as is (publish is the base): it is at the top of the deploy already.
        let l = built(&[("site/netlify.toml", "[build]\npublish = \"/\"\n")], &site);
        assert_eq!(l.publish, "site");
        assert!(l.rule_files.is_empty(), "{l:?}");
        // The base directory's netlify.toml wins over the root's (Netlify's
        // lookup order); other root rule files still come from the root.
        let l = built(
            &[("netlify.toml", "[build]\npublish = \"pub\"\n"), ("site/netlify.toml", toml), ("chanto.toml", "")],
            &site,
        );
        assert_eq!(l.publish, "site/out");
        assert_eq!(rules(&l), [("netlify.toml", "site/netlify.toml"), ("chanto.toml", "chanto.toml")]);
        // No base in the settings: the file in a subdirectory is nobody's config.
        let settings = SiteBuildSettings { publish: Some("site/out".into()), ..Default::default() };
        let l = built(&[("site/netlify.toml", toml)], &settings);
        assert!(l.rule_files.is_empty(), "{l:?}");
    }

    #[test]
    fn firebase_public_and_its_default_ignores() {
        let l =
            layout(&[("firebase.json", r#"{"hosting": {"public": "./public/", "rewrites": []}}"#)]).unwrap().unwrap();
        assert_eq!((l.publish.as_str(), l.chosen_by.as_str()), ("public", "hosting.public in firebase.json"));
        assert_eq!(rules(&l), [("firebase.json", "firebase.json")]);
        assert!(excluded(&l, ".env") && excluded(&l, "a/.secret") && excluded(&l, "node_modules/x/y.js"));
        assert!(excluded(&l, "firebase.json"));
        assert!(!excluded(&l, "index.html") && !excluded(&l, "css/site.css"));
        // Its own list replaces the defaults; several sites: the first.
        let l = layout(&[(
            "firebase.json",
            r#"{"hosting": [{"public": "dist", "ignore": ["**/*.map"]}, {"public": "x"}]}"#,
        )])
        .unwrap()
        .unwrap();
        assert_eq!(l.publish, "dist");
        assert!(excluded(&l, "js/app.js.map") && !excluded(&l, ".well-known/x"));
        // No hosting, or hosting without public (rules only): no layout.
        assert_eq!(layout(&[("firebase.json", r#"{"functions": {}}"#)]).unwrap(), None);
        assert_eq!(layout(&[("firebase.json", r#"{"hosting": {"redirects": []}}"#)]).unwrap(), None);
    }

    #[test]
    fn bad_firebase_projects_are_named() {
        for (text, why) in [
            (r#"{"hosting": {"public": 3}}"#, "must be a directory"),
            (r#"{"hosting": {"public": "p", "ignore": "x"}}"#, "list of glob strings"),
            ("{not json", "not valid JSON"),
        ] {
            let e = layout(&[("firebase.json", text)]).unwrap_err().to_string();
            assert!(e.contains("firebase.json") && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn netlify_and_amplify_publish_directories() {
        let l = layout(&[("netlify.toml", "[build]\npublish = \"dist\"\n[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n")])
            .unwrap()
            .unwrap();
        assert_eq!((l.publish.as_str(), l.chosen_by.as_str()), ("dist", "[build] publish in netlify.toml"));
        assert_eq!(rules(&l), [("netlify.toml", "netlify.toml")]);
        let l = layout(&[("netlify.toml", "[build]\nbase = \"site\"\npublish = \"out\"\n")]).unwrap().unwrap();
        assert_eq!(l.publish, "site/out");
        let amplify = "version: 1\nfrontend:\n  phases:\n    build:\n      commands: []\n  artifacts:\n    baseDirectory: build\n    files:\n      - '**/*'\n";
        let l = layout(&[("amplify.yml", amplify), ("customHttp.yml", "customHeaders: []\n")]).unwrap().unwrap();
        assert_eq!((l.publish.as_str(), l.chosen_by.as_str()), ("build", "artifacts.baseDirectory in amplify.yml"));
        assert_eq!(rules(&l), [("customHttp.yml", "customHttp.yml")]);
        // Rules only, no build table: not a layout.
        assert_eq!(layout(&[("netlify.toml", "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n")]).unwrap(), None);
        assert_eq!(layout(&[]).unwrap(), None);
    }
}
