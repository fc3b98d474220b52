//! Reads AWS Amplify build specs (`amplify.yml`, version 1), so sites moving from Amplify keep their
//! build settings file.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Mapping, Value};

use super::{BuildSpec, SpecInput, default_files, join, normalize_path, settings_path};
use crate::{Error, Phase, merge_env, validate_var_name, validate_var_value};

/// The phases of `frontend.phases`, in the order they run.
const PHASES: [&str; 3] = ["preBuild", "build", "postBuild"];

/// Warnings kept per file. Locating a warning re-reads the file, so a hostile file with thousands of
/// unknown keys must not cost thousands of parses.
const MAX_WARNINGS: usize = 20;

/// One step of a path into the YAML document.
#[derive(Clone, Copy)]
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

/// A path into the document, e.g. `applications[0].frontend`.
#[derive(Clone, Default)]
struct Path<'v>(Vec<Seg<'v>>);

impl<'v> Path<'v> {
    fn key(&self, key: &'v str) -> Path<'v> {
        let mut path = self.clone();
        path.0.push(Seg::Key(key));
        path
    }

    fn index(&self, index: usize) -> Path<'v> {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => write!(f, "{key}")?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The message of the error the locator raises on purpose at the node it looks for.
const FOUND: &str = "chanto-build: located";

/// Finds where a path is in the YAML text. `serde_yaml_ng::Value` has no positions, but the
/// deserializer stamps an error with the position of the node being read when it is raised; so this
/// walks the document along the path and raises an error at its end: at the key for a key, at the
/// element for a list index.
struct Locate<'p>(&'p [Seg<'p>]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(wanted), rest)) = self.0.split_first() else { return found() };
        while let Some(hit) = map.next_key_seed(KeySeed { wanted, last: rest.is_empty() })? {
            if hit {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(wanted), rest)) = self.0.split_first() else { return found() };
        let mut index = 0;
        while index < *wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
        seq.next_element_seed(Locate(rest)).map(drop)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Locate<'_> {
    /// A scalar is the target when the path ends here; otherwise the path does not exist.
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() { found() } else { Ok(()) }
    }
}

fn found<E: de::Error>() -> Result<(), E> {
    Err(E::custom(FOUND))
}

/// Reads a mapping key; `true` when it is the wanted one. When the key ends the path, raises the
/// locating error from inside the key's own deserialization, so it carries the key's position.
struct KeySeed<'p> {
    wanted: &'p str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match key == self.wanted {
            true if self.last => Err(E::custom(FOUND)),
            hit => Ok(hit),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// The spec file being read, for locating errors and warnings.
struct Doc<'a> {
    file: &'static str,
    text: &'a str,
    /// Warnings made so far; past [`MAX_WARNINGS`] they are counted but not located.
    warned: Cell<usize>,
}

impl Doc<'_> {
    /// 1-based line and column of a path; the nearest enclosing node that can be found, else 1:1.
    fn locate(&self, path: &Path<'_>) -> (usize, usize) {
        (0..=path.0.len())
            .rev()
            .find_map(|len| {
                let err = Locate(&path.0[..len]).deserialize(serde_yaml_ng::Deserializer::from_str(self.text)).err()?;
                let location = err.location().filter(|_| err.to_string().contains(FOUND))?;
                Some((location.line(), location.column()))
            })
            .unwrap_or((1, 1))
    }

    fn error(&self, path: &Path<'_>, message: impl Into<String>) -> Error {
        let (line, column) = self.locate(path);
        Error::Config { file: self.file.to_owned(), line, column, message: message.into() }
    }

    fn warning(&self, path: &Path<'_>, message: &str) -> String {
        self.warned.set(self.warned.get() + 1);
        if self.warned.get() > MAX_WARNINGS {
            return String::new();
        }
        format!("{}:{}: {message}", self.file, self.locate(path).0)
    }

    /// A mapping, or `None` for an empty value (`cache:` with nothing under it).
    fn mapping<'v>(&self, path: &Path<'_>, value: &'v Value) -> Result<Option<&'v Mapping>, Error> {
        match value {
            Value::Null => Ok(None),
            Value::Mapping(map) => Ok(Some(map)),
            other => Err(self.error(
                path,
                format!("{path} must be a mapping of keys, not {}; indent its keys under `{path}:`", kind(other)),
            )),
        }
    }

    /// A list of scalars as strings; an empty value is an empty list.
    fn strings(&self, path: &Path<'_>, value: &Value, example: &str) -> Result<Vec<String>, Error> {
        let items = match value {
            Value::Null => return Ok(Vec::new()),
            Value::Sequence(items) => items,
            other => {
                return Err(self.error(
                    path,
                    format!(
                        "{path} must be a list of strings, not {}; write each item as \"- {example}\"",
                        kind(other)
                    ),
                ));
            }
        };
        let mut strings = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(text) = scalar(item) else {
                let hint = if item.is_mapping() {
                    "; YAML read it as a mapping because of \": \" in it, so put the whole item in quotes"
                } else {
                    ""
                };
                return Err(
                    self.error(&path.index(i), format!("{path}[{i}] must be a string, not {}{hint}", kind(item)))
                );
            };
            strings.push(text);
        }
        Ok(strings)
    }

    fn path(&self, path: &Path<'_>, value: &Value) -> Result<String, Error> {
        let Some(raw) = value.as_str() else {
            return Err(
                self.error(path, format!("{path} must be a path, not {}; write e.g. `{path}: dist`", kind(value)))
            );
        };
        normalize_path(raw, true).map_err(|problem| self.error(path, format!("{path}: {problem}")))
    }

    fn paths(&self, path: &Path<'_>, value: &Value) -> Result<Vec<String>, Error> {
        let raw = self.strings(path, value, "node_modules/**/*")?;
        let mut paths = Vec::with_capacity(raw.len());
        for (i, raw) in raw.iter().enumerate() {
            paths.push(normalize_path(raw, true).map_err(|p| self.error(&path.index(i), format!("{path}[{i}]: {p}")))?);
        }
        Ok(paths)
    }

    /// `env:`: `variables` are read; other keys are warned about.
    fn env(&self, path: &Path<'_>, value: &Value, warnings: &mut Vec<String>) -> Result<Vec<(String, String)>, Error> {
        let mut env = Vec::new();
        for (key, value) in self.entries(path, self.mapping(path, value)?, warnings) {
            if key != "variables" {
                warnings.push(self.warning(&path.key(key), &format!("{path}.{key} is not supported and is ignored")));
                continue;
            }
            let vars_path = path.key(key);
            for (name, value) in self.entries(&vars_path, self.mapping(&vars_path, value)?, warnings) {
                let at = vars_path.key(name);
                validate_var_name(name).map_err(|e| self.error(&at, format!("{vars_path}: {e}")))?;
                let text = match value {
                    Value::Null => String::new(),
                    value => scalar(value).ok_or_else(|| {
                        self.error(&at, format!("{at} must be a string, not {}; write `{name}: value`", kind(value)))
                    })?,
                };
                validate_var_value(name, &text).map_err(|e| self.error(&at, format!("{vars_path}: {e}")))?;
                env.push((name.to_owned(), text));
            }
        }
        Ok(env)
    }

    /// The entries of a mapping with string keys; other keys are warned about and skipped.
    fn entries<'v>(
        &self,
        path: &Path<'_>,
        map: Option<&'v Mapping>,
        warnings: &mut Vec<String>,
    ) -> Vec<(&'v str, &'v Value)> {
        let mut entries = Vec::new();
        for (key, value) in map.into_iter().flatten() {
            match key.as_str() {
                Some(key) => entries.push((key, value)),
                None => {
                    warnings.push(self.warning(path, &format!("{path} has a key that is not a string; it is ignored")))
                }
            }
        }
        entries
    }
}

/// A scalar's text as the YAML author wrote it (`NODE_VERSION: 20` is "20").
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// "a list", "a number", … for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A YAML error message without its " at line L column C" parts, which the error's prefix already says.
fn without_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + " at line ".len()..];
        let tail = tail.trim_start_matches(|c: char| c.is_ascii_digit());
        let tail = tail.strip_prefix(" column ").unwrap_or(tail);
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// The spec from an Amplify build spec.
pub(super) fn resolve(
    file: &'static str,
    text: &str,
    input: &SpecInput<'_>,
    warnings: &mut Vec<String>,
) -> Result<BuildSpec, Error> {
    let doc = Doc { file, text, warned: Cell::new(0) };
    let root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = without_positions(&e.to_string());
        Error::Config { file: file.to_owned(), line, column, message: format!("{message}; fix the YAML here") }
    })?;
    let top = Path::default();
    let Value::Mapping(root_map) = &root else {
        return Err(doc.error(&top, "the file must be a mapping with `version: 1` and a `frontend:` section"));
    };
    let mut env = Vec::new();
    let mut frontend = None;
    let mut applications = None;
    for (key, value) in doc.entries(&top, Some(root_map), warnings) {
        let path = top.key(key);
        match key {
            "version" => {
                if scalar(value).as_deref() != Some("1") {
                    return Err(
                        doc.error(&path, "version must be 1, the only Amplify build spec version; write `version: 1`")
                    );
                }
            }
            "env" => env = doc.env(&path, value, warnings)?,
            "frontend" => frontend = Some((path, value)),
            "applications" => applications = Some((path, value)),
            "backend" => {
                warnings.push(doc.warning(&path, "backend phases are not run by chanto; only frontend is built"))
            }
            "test" => warnings.push(doc.warning(&path, "test phases are not run by chanto")),
            other => warnings.push(doc.warning(&path, &format!("unknown key `{other}` is ignored"))),
        }
    }

    let mut app_root = String::new();
    if let Some((apps_path, apps)) = applications {
        if let Some((path, _)) = &frontend {
            warnings.push(doc.warning(path, "the top-level frontend is ignored because applications is set"));
        }
        let (app_path, app, root) = select_application(&doc, &apps_path, apps, input)?;
        app_root = root;
        frontend = None;
        let map = doc.mapping(&app_path, app)?;
        for (key, value) in doc.entries(&app_path, map, warnings) {
            let path = app_path.key(key);
            match key {
                "appRoot" => {}
                "env" => env = merge_env(&[&env, &doc.env(&path, value, warnings)?]),
                "frontend" => frontend = Some((path, value)),
                "backend" => {
                    warnings.push(doc.warning(&path, "backend phases are not run by chanto; only frontend is built"))
                }
                "test" => warnings.push(doc.warning(&path, "test phases are not run by chanto")),
                other => warnings.push(doc.warning(&path, &format!("unknown key `{other}` is ignored"))),
            }
        }
        // Amplify sets this for monorepo apps and build scripts read it.
        env.insert(0, ("AMPLIFY_MONOREPO_APP_ROOT".to_owned(), app_root.clone()));
        if frontend.is_none() {
            return Err(
                doc.error(&app_path, format!("{app_path} has no frontend; add frontend.phases and frontend.artifacts"))
            );
        }
    }
    let Some((frontend_path, frontend)) = frontend else {
        return Err(doc.error(&top, "the file has no frontend section; add frontend.phases and frontend.artifacts"));
    };
    let frontend = read_frontend(&doc, &frontend_path, frontend, warnings)?;
    if let Some(more) = doc.warned.get().checked_sub(MAX_WARNINGS).filter(|more| *more > 0) {
        warnings.retain(|w| !w.is_empty());
        warnings.push(format!("{file}: {more} more warnings like these were left out"));
    }
    let base = frontend.build_path.unwrap_or_else(|| app_root.clone());
    Ok(BuildSpec {
        source: file.to_owned(),
        publish: join(&base, &frontend.base_directory),
        base,
        phases: frontend.phases,
        files: if frontend.files.is_empty() { default_files() } else { frontend.files },
        env,
        cache_paths: frontend.cache.iter().map(|c| join(&app_root, c)).collect(),
    })
}

/// Picks the application this site builds: the one whose `appRoot` is the site's app root, or the
/// only one when the site sets no app root. Returns its path, value and normalized app root.
fn select_application<'v>(
    doc: &Doc<'_>,
    path: &Path<'v>,
    apps: &'v Value,
    input: &SpecInput<'_>,
) -> Result<(Path<'v>, &'v Value, String), Error> {
    let Value::Sequence(list) = apps else {
        return Err(doc.error(
            path,
            format!("applications must be a list, not {}; start each app with \"- appRoot: apps/web\"", kind(apps)),
        ));
    };
    let mut roots = Vec::with_capacity(list.len());
    for (i, app) in list.iter().enumerate() {
        let app_path = path.index(i);
        let root = match app.get("appRoot") {
            Some(root) => doc.path(&app_path.key("appRoot"), root)?,
            None => {
                return Err(doc.error(
                    &app_path,
                    format!("{app_path} has no appRoot; add \"appRoot: apps/web\" naming the app's directory"),
                ));
            }
        };
        roots.push((app_path, app, root));
    }
    let listed = || roots.iter().map(|(_, _, root)| format!("{root:?}")).collect::<Vec<_>>().join(", ");
    match input.settings.app_root.as_deref() {
        Some(wanted) => {
            let wanted = settings_path("app_root", Some(wanted))?;
            match roots.iter().position(|(_, _, root)| *root == wanted) {
                Some(i) => Ok(roots.swap_remove(i)),
                None => Err(doc.error(
                    path,
                    format!(
                        "no application has appRoot {wanted:?} (the site's app root); the appRoots are {}; \
                        change the site's app root to one of them",
                        listed()
                    ),
                )),
            }
        }
        None if roots.len() == 1 => Ok(roots.remove(0)),
        None if roots.is_empty() => {
            Err(doc.error(path, "applications is empty; add an app with \"- appRoot: apps/web\""))
        }
        None => Err(doc.error(
            path,
            format!(
                "applications lists several apps ({}); set the site's app root to the one this site builds",
                listed()
            ),
        )),
    }
}

/// What chanto uses of a `frontend:` section.
struct Frontend {
    phases: Vec<Phase>,
    base_directory: String,
    files: Vec<String>,
    cache: Vec<String>,
    /// Where commands run, relative to the repository root (`buildPath`, for monorepos).
    build_path: Option<String>,
}

fn read_frontend(doc: &Doc<'_>, path: &Path<'_>, value: &Value, warnings: &mut Vec<String>) -> Result<Frontend, Error> {
    let mut frontend = Frontend {
        phases: Vec::new(),
        base_directory: String::new(),
        files: Vec::new(),
        cache: Vec::new(),
        build_path: None,
    };
    for (key, value) in doc.entries(path, doc.mapping(path, value)?, warnings) {
        let path = path.key(key);
        match key {
            "phases" => frontend.phases = read_phases(doc, &path, value, warnings)?,
            "artifacts" => {
                for (key, value) in doc.entries(&path, doc.mapping(&path, value)?, warnings) {
                    let at = path.key(key);
                    match key {
                        "baseDirectory" => frontend.base_directory = doc.path(&at, value)?,
                        "files" => frontend.files = doc.paths(&at, value)?,
                        "discard-paths" if matches!(value, Value::Bool(false) | Value::Null) => {}
                        "discard-paths" => warnings
                            .push(doc.warning(&at, &format!("{at} is not supported; files keep their directories"))),
                        other => warnings.push(doc.warning(&at, &format!("unknown key `{other}` is ignored"))),
                    }
                }
            }
            "cache" => {
                for (key, value) in doc.entries(&path, doc.mapping(&path, value)?, warnings) {
                    let at = path.key(key);
                    match key {
                        "paths" => frontend.cache = doc.paths(&at, value)?,
                        other => warnings.push(doc.warning(&at, &format!("unknown key `{other}` is ignored"))),
                    }
                }
            }
            "buildPath" | "buildpath" => frontend.build_path = Some(doc.path(&path, value)?),
            other => warnings.push(doc.warning(&path, &format!("unknown key `{other}` is ignored"))),
        }
    }
    Ok(frontend)
}

/// `frontend.phases`, in run order whatever the order in the file; phases without commands are left out.
fn read_phases(doc: &Doc<'_>, path: &Path<'_>, value: &Value, warnings: &mut Vec<String>) -> Result<Vec<Phase>, Error> {
    let mut phases: Vec<Phase> = Vec::new();
    for (name, value) in doc.entries(path, doc.mapping(path, value)?, warnings) {
        let phase_path = path.key(name);
        if !PHASES.contains(&name) {
            warnings.push(doc.warning(
                &phase_path,
                &format!("unknown phase `{name}` is not run; the phases are preBuild, build and postBuild"),
            ));
            continue;
        }
        let mut commands = Vec::new();
        for (key, value) in doc.entries(&phase_path, doc.mapping(&phase_path, value)?, warnings) {
            let at = phase_path.key(key);
            match key {
                "commands" => commands = doc.strings(&at, value, "npm run build")?,
                other => warnings.push(doc.warning(&at, &format!("unknown key `{other}` is ignored"))),
            }
        }
        if !commands.is_empty() {
            phases.push(Phase { name: name.to_owned(), commands });
        }
    }
    phases.sort_by_key(|phase| PHASES.iter().position(|p| *p == phase.name));
    Ok(phases)
}
