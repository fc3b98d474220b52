//! Table tests for spec resolution, built from Amplify's and Netlify's documented examples plus
//! malformed and hostile files.

use super::*;
use proptest::prelude::*;

/// Resolves a spec for a repository holding `files` at its root.
fn resolve_in(
    files: &[(&str, &str)],
    context: Context,
    branch: &str,
    settings: &SiteBuildSettings,
) -> Result<(BuildSpec, Vec<String>), Error> {
    let read = |name: &str| files.iter().find(|(n, _)| *n == name).map(|(_, text)| text.to_string());
    resolve_spec(&SpecInput { read: &read, context, branch, settings })
}

fn ok(files: &[(&str, &str)]) -> (BuildSpec, Vec<String>) {
    resolve_in(files, Context::Production, "main", &SiteBuildSettings::default()).unwrap()
}

fn err(files: &[(&str, &str)]) -> String {
    resolve_in(files, Context::Production, "main", &SiteBuildSettings::default()).unwrap_err().to_string()
}

fn phase(name: &str, commands: &[&str]) -> Phase {
    Phase { name: name.into(), commands: commands.iter().map(|c| c.to_string()).collect() }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The single-app example from Amplify's build specification reference.
const AMPLIFY_DOCS: &str = "version: 1
env:
  variables:
    key: value
backend:
  phases:
    build:
      commands:
        - amplifyPush --simple
frontend:
  phases:
    preBuild:
      commands:
        - cd react-app
        - npm ci
    build:
      commands:
        - npm run build
  artifacts:
    files:
      - '**/*'
    discard-paths: yes
    baseDirectory: react-app/build
  cache:
    paths:
      - node_modules/**/*
test:
  phases:
    test:
      commands:
        - npm test
";

#[test]
fn amplify_documented_example() {
    let (spec, warnings) = ok(&[("amplify.yml", AMPLIFY_DOCS)]);
    assert_eq!(
        spec,
        BuildSpec {
            source: "amplify.yml".into(),
            base: "".into(),
            phases: vec![phase("preBuild", &["cd react-app", "npm ci"]), phase("build", &["npm run build"])],
            publish: "react-app/build".into(),
            files: vec!["**/*".into()],
            env: env(&[("key", "value")]),
            cache_paths: vec!["node_modules/**/*".into()],
        }
    );
    assert_eq!(
        warnings,
        [
            "amplify.yml:5: backend phases are not run by chanto; only frontend is built",
            "amplify.yml:27: test phases are not run by chanto",
            "amplify.yml:22: frontend.artifacts.discard-paths is not supported; files keep their directories",
        ]
    );
}

/// The monorepo example from Amplify's monorepo guide, with a second app.
const AMPLIFY_MONOREPO: &str = "version: 1
applications:
  - appRoot: apps/react-app
    env:
      variables:
        NODE_VERSION: 20
    frontend:
      phases:
        preBuild:
          commands:
            - npm ci
        build:
          commands:
            - npm run build
      artifacts:
        baseDirectory: build
        files:
          - '**/*'
      cache:
        paths:
          - node_modules/**/*
  - appRoot: apps/angular-app
    frontend:
      buildPath: /
      phases:
        build:
          commands:
            - npx nx build angular-app
      artifacts:
        baseDirectory: dist/apps/angular-app
";

#[test]
fn amplify_monorepo_selects_app_root() {
    let settings = SiteBuildSettings { app_root: Some("apps/react-app/".into()), ..Default::default() };
    let files = [("amplify.yml", AMPLIFY_MONOREPO)];
    let (react, warnings) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        react,
        BuildSpec {
            source: "amplify.yml".into(),
            base: "apps/react-app".into(),
            phases: vec![phase("preBuild", &["npm ci"]), phase("build", &["npm run build"])],
            publish: "apps/react-app/build".into(),
            files: vec!["**/*".into()],
            env: env(&[("AMPLIFY_MONOREPO_APP_ROOT", "apps/react-app"), ("NODE_VERSION", "20")]),
            cache_paths: vec!["apps/react-app/node_modules/**/*".into()],
        }
    );

    // buildPath: / runs the build at the repository root; baseDirectory is relative to buildPath.
    let settings = SiteBuildSettings { app_root: Some("apps/angular-app".into()), ..Default::default() };
    let (angular, _) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert_eq!(angular.base, "");
    assert_eq!(angular.publish, "dist/apps/angular-app");
    assert_eq!(angular.phases, [phase("build", &["npx nx build angular-app"])]);
}

#[test]
fn amplify_monorepo_needs_a_matching_app_root() {
    let files = [("amplify.yml", AMPLIFY_MONOREPO)];
    assert_eq!(
        err(&files),
        "amplify.yml:2:1: applications lists several apps (\"apps/react-app\", \"apps/angular-app\"); \
         set the site's app root to the one this site builds"
    );
    let settings = SiteBuildSettings { app_root: Some("apps/vue".into()), ..Default::default() };
    let e = resolve_in(&files, Context::Production, "main", &settings).unwrap_err().to_string();
    assert!(e.starts_with("amplify.yml:2:1: no application has appRoot \"apps/vue\""), "{e}");
    assert!(e.contains("\"apps/react-app\", \"apps/angular-app\""), "{e}");

    // A single application needs no app root.
    let one =
        "version: 1\napplications:\n  - appRoot: web\n    frontend:\n      artifacts:\n        baseDirectory: out\n";
    let (spec, _) = ok(&[("amplify.yml", one)]);
    assert_eq!((spec.base.as_str(), spec.publish.as_str(), spec.phases.len()), ("web", "web/out", 0));
}

#[test]
fn amplify_yaml_spelling_and_static_site() {
    // Amplify's spec for a site without a build writes the app root as "/".
    let text = "version: 1\nfrontend:\n  phases:\n    build:\n      commands: []\n  artifacts:\n    baseDirectory: \
        /\n    files:\n      - '**/*'\n";
    let (spec, warnings) = ok(&[("amplify.yaml", text)]);
    assert_eq!(spec.source, "amplify.yaml");
    assert_eq!((spec.publish.as_str(), spec.phases.len()), ("", 0));
    assert!(warnings.is_empty());
}

#[test]
fn amplify_phases_run_in_order_and_unknowns_warn() {
    let text = "version: 1
extra: 1
frontend:
  phases:
    postBuild:
      commands: [echo done]
    build:
      commands:
        - true
        - 42
    deploy:
      commands: [x]
  customHeaders: []
";
    let (spec, warnings) = ok(&[("amplify.yml", text)]);
    assert_eq!(spec.phases, [phase("build", &["true", "42"]), phase("postBuild", &["echo done"])]);
    assert_eq!(
        warnings,
        [
            "amplify.yml:2: unknown key `extra` is ignored",
            "amplify.yml:11: unknown phase `deploy` is not run; the phases are preBuild, build and postBuild",
            "amplify.yml:13: unknown key `customHeaders` is ignored",
        ]
    );
}

#[test]
fn amplify_errors_name_file_line_column() {
    let cases: &[(&str, &str)] = &[
        (
            "version: 1\nfrontend:\n  phases:\n    build:\n      commands: npm run build\n",
            "amplify.yml:5:7: frontend.phases.build.commands must be a list of strings, not a string; \
             write each item as \"- npm run build\"",
        ),
        (
            "version: 1\nfrontend:\n  phases:\n    build:\n      commands:\n        - npm ci\n        - echo: hi\n",
            "amplify.yml:7:11: frontend.phases.build.commands[1] must be a string, not a mapping; YAML read it \
             as a mapping because of \": \" in it, so put the whole item in quotes",
        ),
        (
            "version: 2\nfrontend: {}\n",
            "amplify.yml:1:1: version must be 1, the only Amplify build spec version; write `version: 1`",
        ),
        (
            "version: 1\nfrontend:\n  artifacts:\n    baseDirectory: ../outside\n",
            "amplify.yml:4:5: frontend.artifacts.baseDirectory: path \"../outside\" contains \"..\"; paths must \
                stay inside the repository",
        ),
        (
            "version: 1\nfrontend:\n  cache:\n    paths:\n      - ok\n      - 'C:\\cache'\n",
            "amplify.yml:6:9: frontend.cache.paths[1]: path \"C:\\\\cache\" contains a backslash; separate \
                directories with /",
        ),
        (
            "version: 1\nfrontend:\n  artifacts:\n    baseDirectory: [dist]\n",
            "amplify.yml:4:5: frontend.artifacts.baseDirectory must be a path, not a list; write e.g. \
                `frontend.artifacts.baseDirectory: dist`",
        ),
        (
            "version: 1\nfrontend: npm run build\n",
            "amplify.yml:2:1: frontend must be a mapping of keys, not a string; indent its keys under `frontend:`",
        ),
        (
            "version: 1\nenv:\n  variables:\n    1BAD: x\nfrontend: {}\n",
            "amplify.yml:4:5: env.variables: environment variable \"1BAD\": name starts with a digit; start it \
                with a letter or _",
        ),
        (
            "version: 1\nbackend: {}\n",
            "amplify.yml:1:1: the file has no frontend section; add frontend.phases and frontend.artifacts",
        ),
        ("", "amplify.yml:1:1: the file must be a mapping with `version: 1` and a `frontend:` section"),
        ("- a\n- b\n", "amplify.yml:1:1: the file must be a mapping with `version: 1` and a `frontend:` section"),
        (
            "version: 1\napplications:\n  - frontend: {}\n",
            "amplify.yml:3:5: applications[0] has no appRoot; add \"appRoot: apps/web\" naming the app's directory",
        ),
        (
            "version: 1\napplications:\n  - appRoot: /abs\n  - appRoot: x\n    frontend: {}\n",
            "amplify.yml:2:1: applications lists several apps (\"abs\", \"x\"); set the site's app root to the one \
                this site builds",
        ),
        (
            "version: 1\napplications:\n  - appRoot: web\n",
            "amplify.yml:3:5: applications[0] has no frontend; add frontend.phases and frontend.artifacts",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&err(&[("amplify.yml", text)]), want, "{text}");
    }
}

#[test]
fn amplify_syntax_errors_and_hostile_yaml() {
    let e = err(&[("amplify.yml", "version: 1\nfrontend:\n  phases:\n   build: x\n  bad\n")]);
    assert_eq!(e, "amplify.yml:6:1: could not find expected ':', while scanning a simple key; fix the YAML here");

    let e = err(&[("amplify.yml", "version: 1\nfrontend: 'unterminated\n")]);
    assert_eq!(e, "amplify.yml:3:1: found unexpected end of stream, while scanning a quoted scalar; fix the YAML here");

    let deep = format!("version: 1\nfrontend: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = err(&[("amplify.yml", &deep)]);
    assert!(e.contains("recursion limit exceeded"), "{e}");
    assert!(e.starts_with("amplify.yml:2:"), "{e}");

    // The "billion laughs": aliases that expand exponentially.
    let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        laughs.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let e = err(&[("amplify.yml", &laughs)]);
    assert!(e.starts_with("amplify.yml:") && e.contains("repetition limit exceeded"), "{e}");
}

#[test]
fn amplify_warnings_are_capped() {
    let mut text = String::from("version: 1\nfrontend: {}\n");
    for i in 0..5000 {
        text.push_str(&format!("unknown{i}: x\n"));
    }
    let (_, warnings) = ok(&[("amplify.yml", &text)]);
    assert_eq!(warnings.len(), 21);
    assert_eq!(warnings[0], "amplify.yml:3: unknown key `unknown0` is ignored");
    assert_eq!(warnings[20], "amplify.yml: 4980 more warnings like these were left out");
}

/// Netlify's file-based configuration example, with contexts.
const NETLIFY_DOCS: &str = r#"[build]
  base = "project/"
  publish = "build-output/"
  command = "echo 'default context'"
  functions = "functions/"
  [build.environment]
    NODE_VERSION = "20"
    FLAG = true

[context.production]
  publish = "output/"
  command = "make publish"
  environment = { ACCESS_TOKEN = "super secret", NODE_VERSION = "8.0.1" }

[context.deploy-preview]
  publish = "dist/"

[context.deploy-preview.environment]
  ACCESS_TOKEN = "not so secret"

[context.branch-deploy]
  command = "make staging"

[context.staging]
  command = "make staging-branch"
  [context.staging.environment]
    NODE_VERSION = "18"

[context."feature/x"]
  base = "/"
  command = "make feature"

[dev]
  command = "yarn start"

[[redirects]]
  from = "/old"
  to = "/new"

[[plugins]]
  package = "@netlify/plugin-lighthouse"
"#;

#[test]
fn netlify_documented_example_per_context() {
    let files = [("netlify.toml", NETLIFY_DOCS)];
    let settings = SiteBuildSettings::default();
    let resolve = |context, branch| resolve_in(&files, context, branch, &settings).unwrap();

    let (production, warnings) = resolve(Context::Production, "main");
    assert_eq!(
        production,
        BuildSpec {
            source: "netlify.toml".into(),
            base: "project".into(),
            phases: vec![phase("build", &["make publish"])],
            publish: "project/output".into(),
            files: vec!["**/*".into()],
            env: env(&[("NODE_VERSION", "8.0.1"), ("FLAG", "true"), ("ACCESS_TOKEN", "super secret")]),
            cache_paths: vec![],
        }
    );
    assert_eq!(
        warnings,
        [
            "netlify.toml:5: `build.functions` is not supported by chanto and is ignored",
            "netlify.toml:40: `plugins` is not supported by chanto and is ignored",
        ]
    );

    let (preview, _) = resolve(Context::DeployPreview, "fix-typo");
    assert_eq!(preview.phases, [phase("build", &["echo 'default context'"])]);
    assert_eq!(preview.publish, "project/dist");
    assert_eq!(preview.env, env(&[("NODE_VERSION", "20"), ("FLAG", "true"), ("ACCESS_TOKEN", "not so secret")]));

    // The branch context wins over the branch-deploy context, and environments merge.
    let (staging, _) = resolve(Context::BranchDeploy, "staging");
    assert_eq!(staging.phases, [phase("build", &["make staging-branch"])]);
    assert_eq!(staging.env, env(&[("NODE_VERSION", "18"), ("FLAG", "true")]));

    let (other, _) = resolve(Context::BranchDeploy, "other");
    assert_eq!(other.phases, [phase("build", &["make staging"])]);
    assert_eq!(other.publish, "project/build-output");

    let (feature, _) = resolve(Context::BranchDeploy, "feature/x");
    assert_eq!((feature.base.as_str(), feature.publish.as_str()), ("", "build-output"));
    assert_eq!(feature.phases, [phase("build", &["make feature"])]);
}

#[test]
fn netlify_errors_name_file_line_column() {
    let cases: &[(&str, &str)] = &[
        (
            "[build]\npublish = 5\n",
            "netlify.toml:2:11: build.publish must be a string, not an integer; put the value in quotes",
        ),
        (
            "[build]\nbase = \"a/../../etc\"\n",
            "netlify.toml:2:8: build.base: path \"a/../../etc\" contains \"..\"; paths must stay inside the repository",
        ),
        (
            "[build.environment]\nLIST = [1]\n",
            "netlify.toml:2:8: build.environment.LIST must be a string, not an array; write LIST = \"value\"",
        ),
        (
            "[build.environment]\n\"A-B\" = \"x\"\n",
            "netlify.toml:2:1: build.environment: environment variable \"A-B\": name may only contain ASCII letters, \
             digits and _",
        ),
        ("build = 1\n", "netlify.toml:1:9: build must be a table, not an integer; write it as a [build] section"),
        (
            "[context.\"feature/x\"]\ncommand = [\"a\"]\n",
            "netlify.toml:2:11: context.\"feature/x\".command must be a string, not an array; put the value in quotes",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&err(&[("netlify.toml", text)]), want, "{text}");
    }
    let e = err(&[("netlify.toml", "[build]\ncommand = \"unterminated\n")]);
    assert!(e.starts_with("netlify.toml:2:24: ") && e.ends_with("; fix the TOML syntax here"), "{e}");
}

#[test]
fn netlify_without_build_falls_back_to_settings() {
    let files = [("netlify.toml", "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n")];
    let settings = SiteBuildSettings { publish: Some("public".into()), ..Default::default() };
    let (spec, warnings) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert_eq!((spec.source.as_str(), spec.publish.as_str()), ("site settings", "public"));
    assert!(warnings.is_empty());
}

/// A site whose settings name `site` as its base directory (Netlify's base directory set in its UI).
fn based() -> SiteBuildSettings {
    SiteBuildSettings { base: Some("site".into()), ..Default::default() }
}

#[test]
fn netlify_toml_in_the_base_directory_of_the_settings() {
    let toml = "[build]\ncommand = \"npm run build\"\npublish = \"out/\"\n[build.environment]\nA = \"1\"\n";
    let (spec, warnings) = resolve_in(&[("site/netlify.toml", toml)], Context::Production, "main", &based()).unwrap();
    assert_eq!(spec.source, "site/netlify.toml");
    assert_eq!((spec.base.as_str(), spec.publish.as_str()), ("site", "site/out"), "publish is relative to the base");
    assert_eq!(spec.phases, [phase("build", &["npm run build"])]);
    assert_eq!(spec.env, env(&[("A", "1")]));
    assert!(warnings.is_empty());
    // Its contexts apply, and its warnings name it.
    let toml = "[build]\npublish = \"/\"\nplugins = 1\n[context.deploy-preview]\ncommand = \"preview\"\n";
    let (spec, warnings) = resolve_in(&[("site/netlify.toml", toml)], Context::DeployPreview, "pr", &based()).unwrap();
    assert_eq!((spec.base.as_str(), spec.publish.as_str()), ("site", "site"));
    assert_eq!(spec.phases, [phase("build", &["preview"])]);
    assert_eq!(warnings, ["site/netlify.toml:3: `build.plugins` is not supported by chanto and is ignored"]);
    // The settings fill in what it leaves out.
    let settings = SiteBuildSettings { command: Some("make".into()), ..based() };
    let (spec, _) =
        resolve_in(&[("site/netlify.toml", "[build]\npublish = \"public\"\n")], Context::Production, "", &settings)
            .unwrap();
    assert_eq!((spec.publish.as_str(), spec.phases.clone()), ("site/public", vec![phase("build", &["make"])]));
}

#[test]
fn the_base_directory_netlify_toml_wins_over_the_root_one() {
    // As Netlify's own lookup: a base directory set in the site's settings
    // (its UI) is searched first; the root's file is the fallback.
    let files = [
        ("netlify.toml", "[build]\ncommand = \"root\"\npublish = \"dist\"\n"),
        ("site/netlify.toml", "[build]\ncommand = \"base\"\npublish = \"out\"\n"),
    ];
    let (spec, _) = resolve_in(&files, Context::Production, "main", &based()).unwrap();
    assert_eq!(spec.source, "site/netlify.toml");
    assert_eq!(spec.phases, [phase("build", &["base"])]);
    assert_eq!(spec.publish, "site/out");
    // No file in the base directory: the root's is read.
    let (spec, _) = resolve_in(&files[..1], Context::Production, "main", &based()).unwrap();
    assert_eq!(spec.source, "netlify.toml");
    assert_eq!(spec.publish, "site/dist");
}

#[test]
fn without_a_base_the_base_directory_netlify_toml_is_ignored() {
    let files = [("site/netlify.toml", "[build]\ncommand = \"base\"\npublish = \"out\"\n")];
    let e = resolve_in(&files, Context::Production, "main", &SiteBuildSettings::default()).unwrap_err();
    assert_eq!(e, Error::NoBuildSpec);
    // A base of "." or "/" is the root: there is no other netlify.toml to read.
    let dot = SiteBuildSettings { base: Some("./".into()), ..Default::default() };
    assert_eq!(resolve_in(&files, Context::Production, "main", &dot).unwrap_err(), Error::NoBuildSpec);
}

#[test]
fn base_directory_netlify_toml_errors_name_it() {
    let e = resolve_in(&[("site/netlify.toml", "[build]\npublish = 5\n")], Context::Production, "main", &based())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "site/netlify.toml:2:11: build.publish must be a string, not an integer; put the value in quotes"
    );
    assert!(matches!(&e, Error::Config { file, line: 2, column: 11, .. } if file == "site/netlify.toml"));
    let huge = format!("# {}\n[build]\npublish = \"x\"\n", "x".repeat(1024 * 1024));
    let e = resolve_in(&[("site/netlify.toml", &huge)], Context::Production, "main", &based()).unwrap_err();
    assert!(e.to_string().starts_with(&format!("site/netlify.toml:1:1: the file is {} bytes;", huge.len())), "{e}");
    // A base the settings name badly is the settings' error; nothing is read outside the repository.
    let bad = SiteBuildSettings { base: Some("../x".into()), ..Default::default() };
    let read = |name: &str| -> Option<String> {
        assert!(!name.contains('/'), "read {name}");
        None
    };
    let e = resolve_spec(&SpecInput { read: &read, context: Context::Production, branch: "", settings: &bad });
    assert!(matches!(e, Err(Error::Settings { field: "base", .. })), "{e:?}");
}

#[test]
fn toml_keys_left_out_come_from_settings() {
    let settings = SiteBuildSettings {
        command: Some("hugo".into()),
        publish: Some("public".into()),
        base: Some("site".into()),
        app_root: None,
    };
    let files = [("netlify.toml", "[build.environment]\nHUGO_VERSION = \"0.140.0\"\n")];
    let (spec, _) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert_eq!(spec.phases, [phase("build", &["hugo"])]);
    assert_eq!((spec.base.as_str(), spec.publish.as_str()), ("site", "site/public"));
    assert_eq!(spec.env, env(&[("HUGO_VERSION", "0.140.0")]));

    // An empty command in the file means "no build command", overriding the settings.
    let files = [("chanto.toml", "[build]\ncommand = \"\"\npublish = \"static\"\n")];
    let (spec, _) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert!(spec.phases.is_empty());
    assert_eq!(spec.publish, "site/static");
}

const CHANTO: &str = r#"[redirects]
rules = []

[build]
base = "web"
command = "npm run build"
publish = "dist/"
cache = ["node_modules", "./.cache/"]

[build.environment]
NODE_ENV = "production"
API = "https://api.example.com"

[build.context.deploy-preview]
command = "npm run build:preview"
environment = { API = "https://staging-api.example.com" }

[build.context."release/1.0"]
publish = "dist-release"
"#;

#[test]
fn chanto_toml_with_contexts() {
    let files = [("chanto.toml", CHANTO), ("amplify.yml", AMPLIFY_DOCS), ("netlify.toml", NETLIFY_DOCS)];
    let settings = SiteBuildSettings::default();
    let (production, warnings) = resolve_in(&files, Context::Production, "main", &settings).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(
        production,
        BuildSpec {
            source: "chanto.toml".into(),
            base: "web".into(),
            phases: vec![phase("build", &["npm run build"])],
            publish: "web/dist".into(),
            files: vec!["**/*".into()],
            env: env(&[("NODE_ENV", "production"), ("API", "https://api.example.com")]),
            cache_paths: vec!["web/node_modules".into(), "web/.cache".into()],
        }
    );
    let (preview, _) = resolve_in(&files, Context::DeployPreview, "pr-7", &settings).unwrap();
    assert_eq!(preview.phases, [phase("build", &["npm run build:preview"])]);
    assert_eq!(preview.env, env(&[("NODE_ENV", "production"), ("API", "https://staging-api.example.com")]));
    let (release, _) = resolve_in(&files, Context::BranchDeploy, "release/1.0", &settings).unwrap();
    assert_eq!(release.publish, "web/dist-release");
}

#[test]
fn chanto_toml_without_build_falls_through() {
    let files = [("chanto.toml", "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\n"), ("amplify.yml", AMPLIFY_DOCS)];
    assert_eq!(ok(&files).0.source, "amplify.yml");
    let files = [("chanto.toml", "[headers]\n"), ("netlify.toml", NETLIFY_DOCS)];
    assert_eq!(ok(&files).0.source, "netlify.toml");
}

#[test]
fn chanto_toml_errors_name_file_line_column() {
    let cases: &[(&str, &str)] = &[
        (
            "[build]\ncommand = \"make\"\ncomand = \"typo\"\n",
            "chanto.toml:3:1: unknown key `comand` in [build]; the keys are command, publish, base, environment, \
             cache and context",
        ),
        (
            "[build]\npublish = \"/var/www\"\n",
            "chanto.toml:2:11: build.publish: path \"/var/www\" is absolute; write it relative to the repository, \
                e.g. \"dist\"",
        ),
        (
            "[build]\ncache = \"node_modules\"\n",
            "chanto.toml:2:9: build.cache must be an array of paths, not a string; write it as build.cache = \
                [\"node_modules\"]",
        ),
        (
            "[build]\ncache = [\"a\\u0000b\"]\n",
            "chanto.toml:2:10: build.cache[0]: path \"a\\0b\" contains a NUL byte; remove it",
        ),
        (
            "[build]\n[build.context.production]\nbase = \"x\"\n",
            "chanto.toml:3:1: unknown key `base` in [build.context.production]; a context may set command, publish \
                and environment",
        ),
        (
            "[build.context]\nstaging = \"yes\"\n",
            "chanto.toml:2:11: build.context.staging must be a table, not a string; write it as a \
                [build.context.staging] section",
        ),
        (
            "[build.environment]\nBIG = 1979-05-27\n",
            "chanto.toml:2:7: build.environment.BIG must be a string, not a datetime; write BIG = \"value\"",
        ),
        ("[build]\n[build]\n", "chanto.toml:2:2: duplicate key; fix the TOML syntax here"),
    ];
    for (text, want) in cases {
        assert_eq!(&err(&[("chanto.toml", text)]), want, "{text}");
    }
}

#[test]
fn huge_spec_files_are_rejected() {
    let huge = format!("# {}\n[build]\npublish = \"x\"\n", "x".repeat(1024 * 1024));
    for file in ["chanto.toml", "amplify.yml", "amplify.yaml", "netlify.toml"] {
        let e = err(&[(file, &huge)]);
        assert!(e.starts_with(&format!("{file}:1:1: the file is {} bytes;", huge.len())), "{e}");
        assert!(e.contains("at most 1 MiB"), "{e}");
    }
}

#[test]
fn site_settings_fallback() {
    let resolve = |settings: SiteBuildSettings| resolve_in(&[], Context::Production, "main", &settings);
    let e = resolve(SiteBuildSettings::default()).unwrap_err();
    assert_eq!(e, Error::NoBuildSpec);
    assert_eq!(e.code(), "no_build_spec");
    assert!(e.to_string().contains("add a [build] table to chanto.toml"));
    assert_eq!(
        resolve(SiteBuildSettings { command: Some("  ".into()), ..Default::default() }),
        Err(Error::NoBuildSpec)
    );

    let (spec, _) = resolve(SiteBuildSettings { publish: Some("".into()), ..Default::default() }).unwrap();
    assert_eq!((spec.source.as_str(), spec.publish.as_str(), spec.phases.len()), ("site settings", "", 0));

    let settings = SiteBuildSettings {
        command: Some("zola build".into()),
        publish: Some("./public/".into()),
        base: Some("docs".into()),
        app_root: None,
    };
    let (spec, _) = resolve(settings).unwrap();
    assert_eq!(spec.phases, [phase("build", &["zola build"])]);
    assert_eq!((spec.base.as_str(), spec.publish.as_str()), ("docs", "docs/public"));

    let e = resolve(SiteBuildSettings { publish: Some("../x".into()), ..Default::default() }).unwrap_err();
    assert_eq!(
        e.to_string(),
        "site settings: publish path \"../x\" contains \"..\"; paths must stay inside the repository"
    );
}

#[test]
fn context_names() {
    assert_eq!(Context::Production.as_str(), "production");
    assert_eq!(Context::BranchDeploy.as_str(), "branch-deploy");
    assert_eq!(Context::DeployPreview.as_str(), "deploy-preview");
    assert_eq!(serde_json::to_string(&Context::DeployPreview).unwrap(), "\"deploy-preview\"");
}

#[test]
fn paths_normalize() {
    for (raw, want) in
        [("", ""), (".", ""), ("./", ""), ("a//b/./c/", "a/b/c"), ("/", ""), ("/dist", "dist"), ("**/*", "**/*")]
    {
        assert_eq!(normalize_path(raw, true).as_deref(), Ok(want), "{raw:?}");
    }
    assert!(normalize_path("/dist", false).is_err());
    assert!(normalize_path("a/..", true).is_err());
    assert!(normalize_path("a/..b", true).is_ok());
    assert_eq!(line_col("ab\ncdé\nf", 7), (2, 4));
    assert_eq!(line_col("ab", 99), (1, 3));
}

proptest! {
    #[test]
    fn hostile_spec_files_never_panic(
        text in "\\PC{0,200}",
        file in prop::sample::select(vec!["chanto.toml", "amplify.yml", "netlify.toml"]),
    ) {
        let result = resolve_in(&[(file, &text)], Context::BranchDeploy, "dev", &SiteBuildSettings::default());
        if let Err(Error::Config { file: f, line, column, .. }) = result {
            prop_assert_eq!(f, file);
            prop_assert!(line >= 1 && column >= 1);
        }
    }

    #[test]
    fn resolved_paths_stay_inside(base in "[a-z./]{0,12}", publish in "[a-z./]{0,12}") {
        let text = format!("[build]\nbase = {base:?}\npublish = {publish:?}\n");
        let settings = SiteBuildSettings::default();
        if let Ok((spec, _)) = resolve_in(&[("chanto.toml", &text)], Context::Production, "main", &settings) {
            for path in [&spec.base, &spec.publish] {
                prop_assert!(!path.starts_with('/') && !path.ends_with('/'));
                prop_assert!(path.split('/').all(|p| p != ".." && p != "."));
            }
        }
    }
}
