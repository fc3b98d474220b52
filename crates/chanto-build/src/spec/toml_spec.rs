//! Reads the `[build]` settings of chanto.toml and netlify.toml; both are TOML with the same core keys,
//! differing in strictness (chanto.toml rejects unknown keys, netlify.toml only warns).

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{BuildSpec, SpecInput, finish, line_col, non_blank, normalize_path, settings_path};
use crate::{Error, merge_env, validate_var_name, validate_var_value};

/// A key and its value, each with its span in the file.
type Entry<'t, 'i> = (&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>);

/// Build settings from one table (`[build]` or a context), before the site settings fill the gaps.
#[derive(Default)]
struct Layer {
    command: Option<String>,
    publish: Option<String>,
    base: Option<String>,
    env: Vec<(String, String)>,
}

impl Layer {
    /// Lets `over`'s settings win; environment tables merge.
    fn apply(&mut self, over: Layer) {
        self.command = over.command.or(self.command.take());
        self.publish = over.publish.or(self.publish.take());
        self.base = over.base.or(self.base.take());
        self.env = merge_env(&[&self.env, &over.env]);
    }

    /// The spec, with keys the file left out taken from the site settings.
    fn finish(self, source: &str, input: &SpecInput<'_>, cache: Vec<String>) -> Result<BuildSpec, Error> {
        let settings = input.settings;
        let base = match self.base {
            Some(base) => base,
            None => settings_path("base", settings.base.as_deref())?,
        };
        let publish = match self.publish {
            Some(publish) => publish,
            None => settings_path("publish", settings.publish.as_deref())?,
        };
        let command = match self.command {
            Some(command) => non_blank(Some(&command)),
            None => non_blank(settings.command.as_deref()),
        };
        Ok(finish(source, base, command, &publish, self.env, cache))
    }
}

/// One TOML file being read, for locating errors and warnings.
struct Doc<'a> {
    /// The file's path from the repository root (`netlify.toml`, `site/netlify.toml`).
    file: &'a str,
    text: &'a str,
    /// Whether a leading `/` in a path means the root (netlify.toml) or is an error (chanto.toml).
    leading_slash_is_root: bool,
}

impl<'a> Doc<'a> {
    fn error(&self, offset: usize, message: impl Into<String>) -> Error {
        let (line, column) = line_col(self.text, offset);
        Error::Config { file: self.file.to_owned(), line, column, message: message.into() }
    }

    fn warning(&self, offset: usize, message: &str) -> String {
        format!("{}:{}: {message}", self.file, line_col(self.text, offset).0)
    }

    fn parse(&self) -> Result<Spanned<DeTable<'a>>, Error> {
        DeTable::parse(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            self.error(offset, format!("{}; fix the TOML syntax here", e.message().trim_end()))
        })
    }

    fn table<'t, 'i>(&self, path: &str, value: &'t Spanned<DeValue<'i>>) -> Result<&'t DeTable<'i>, Error> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.error(
                value.span().start,
                format!("{path} must be a table, not {}; write it as a [{path}] section", article(other)),
            )),
        }
    }

    fn string(&self, path: &str, value: &Spanned<DeValue<'_>>) -> Result<String, Error> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.error(
                value.span().start,
                format!("{path} must be a string, not {}; put the value in quotes", article(other)),
            )),
        }
    }

    fn path(&self, path: &str, value: &Spanned<DeValue<'_>>) -> Result<String, Error> {
        let raw = self.string(path, value)?;
        normalize_path(&raw, self.leading_slash_is_root)
            .map_err(|problem| self.error(value.span().start, format!("{path}: {problem}")))
    }

    fn paths(&self, path: &str, value: &Spanned<DeValue<'_>>) -> Result<Vec<String>, Error> {
        match value.get_ref() {
            DeValue::Array(items) => {
                items.iter().enumerate().map(|(i, item)| self.path(&format!("{path}[{i}]"), item)).collect()
            }
            other => Err(self.error(
                value.span().start,
                format!(
                    "{path} must be an array of paths, not {}; write it as {path} = [\"node_modules\"]",
                    article(other)
                ),
            )),
        }
    }

    /// An environment table. Numbers and booleans are taken as written (`NODE_VERSION = 20` is "20").
    fn env(&self, path: &str, value: &Spanned<DeValue<'_>>) -> Result<Vec<(String, String)>, Error> {
        let mut env = Vec::new();
        for (key, value) in entries(self.table(path, value)?) {
            let name = key.get_ref();
            validate_var_name(name).map_err(|e| self.error(key.span().start, format!("{path}: {e}")))?;
            let text = match value.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => self.text[value.span()].to_owned(),
                other => {
                    return Err(self.error(
                        value.span().start,
                        format!("{path}.{name} must be a string, not {}; write {name} = \"value\"", article(other)),
                    ));
                }
            };
            validate_var_value(name, &text).map_err(|e| self.error(value.span().start, format!("{path}: {e}")))?;
            env.push((name.to_string(), text));
        }
        Ok(env)
    }

    /// Reads the keys shared by every build table into `layer`; returns the entries it did not know.
    fn layer<'t, 'i>(
        &self,
        path: &str,
        table: &'t DeTable<'i>,
        with_base: bool,
        layer: &mut Layer,
    ) -> Result<Vec<Entry<'t, 'i>>, Error> {
        let mut rest = Vec::new();
        for (key, value) in entries(table) {
            let key_path = format!("{path}.{}", key.get_ref());
            match key.get_ref().as_ref() {
                "command" => layer.command = Some(self.string(&key_path, value)?),
                "publish" => layer.publish = Some(self.path(&key_path, value)?),
                "base" if with_base => layer.base = Some(self.path(&key_path, value)?),
                "environment" => layer.env = self.env(&key_path, value)?,
                _ => rest.push((key, value)),
            }
        }
        Ok(rest)
    }

    /// Reads every context table under `path` (so a mistake shows whichever branch builds), and returns
    /// the one for the build's kind of deploy and the one named after its branch.
    fn contexts(
        &self,
        path: &str,
        value: &Spanned<DeValue<'_>>,
        input: &SpecInput<'_>,
        mut unknown: impl FnMut(&str, Entry<'_, '_>) -> Result<(), Error>,
    ) -> Result<(Layer, Layer), Error> {
        let (mut kind, mut branch) = (Layer::default(), Layer::default());
        for (name, value) in entries(self.table(path, value)?) {
            let context_path = format!("{path}.{}", quote_key(name.get_ref()));
            let mut layer = Layer::default();
            for entry in self.layer(&context_path, self.table(&context_path, value)?, !self.strict(), &mut layer)? {
                unknown(&context_path, entry)?;
            }
            if name.get_ref() == input.context.as_str() {
                kind = layer;
            } else if name.get_ref() == input.branch {
                branch = layer;
            }
        }
        Ok((kind, branch))
    }

    /// chanto.toml is strict: unknown keys are errors.
    fn strict(&self) -> bool {
        self.file == "chanto.toml"
    }
}

/// A table's entries in the order they appear in the file (the parsed map is sorted by key).
fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<Entry<'t, 'i>> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A key as it must be written in a dotted TOML path.
fn quote_key(key: &str) -> Cow<'_, str> {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

/// "a string", "an array", … for error messages.
fn article(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The spec from chanto.toml's `[build]` table, or `None` when the file has no `[build]`.
pub(super) fn chanto(text: &str, input: &SpecInput<'_>) -> Result<Option<BuildSpec>, Error> {
    let doc = Doc { file: "chanto.toml", text, leading_slash_is_root: false };
    let root = doc.parse()?;
    let Some(build) = root.get_ref().get("build") else { return Ok(None) };
    let mut layer = Layer::default();
    let mut cache = Vec::new();
    let mut overrides = None;
    for (key, value) in doc.layer("build", doc.table("build", build)?, true, &mut layer)? {
        match key.get_ref().as_ref() {
            "cache" => cache = doc.paths("build.cache", value)?,
            "context" => {
                overrides = Some(doc.contexts("build.context", value, input, |path, (key, _)| {
                    Err(doc.error(
                        key.span().start,
                        format!(
                            "unknown key `{}` in [{path}]; a context may set command, publish and environment",
                            key.get_ref()
                        ),
                    ))
                })?)
            }
            other => {
                return Err(doc.error(
                    key.span().start,
                    format!(
                        "unknown key `{other}` in [build]; the keys are command, publish, base, environment, \
                         cache and context"
                    ),
                ));
            }
        }
    }
    if let Some((kind, branch)) = overrides {
        layer.apply(kind);
        layer.apply(branch);
    }
    layer.finish("chanto.toml", input, cache).map(Some)
}

/// The spec from netlify.toml's `[build]` and `[context.*]` tables, or `None` when it has neither.
/// `file` is where the file is, from the repository root: `netlify.toml`, or `<base>/netlify.toml` when
/// the site's settings name the base directory (its `publish` and `command` are then relative to that
/// base, as a root file's are to its `base`).
pub(super) fn netlify(
    file: &str,
    text: &str,
    input: &SpecInput<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<BuildSpec>, Error> {
    let doc = Doc { file, text, leading_slash_is_root: true };
    let root = doc.parse()?;
    let root = root.get_ref();
    if root.get("build").is_none() && root.get("context").is_none() {
        return Ok(None);
    }
    let mut layer = Layer::default();
    let mut overrides = None;
    for (key, value) in entries(root) {
        match key.get_ref().as_ref() {
            "build" => {
                for (key, _) in doc.layer("build", doc.table("build", value)?, true, &mut layer)? {
                    warnings.push(unsupported(&doc, "build", key));
                }
            }
            "context" => {
                overrides = Some(doc.contexts("context", value, input, |path, (key, _)| {
                    warnings.push(unsupported(&doc, path, key));
                    Ok(())
                })?);
            }
            "plugins" | "functions" | "edge_functions" => warnings.push(unsupported(&doc, "", key)),
            // Redirects, headers and the rest are not build settings; other parts of chanto read them.
            _ => {}
        }
    }
    if let Some((kind, branch)) = overrides {
        layer.apply(kind);
        layer.apply(branch);
    }
    layer.finish(file, input, Vec::new()).map(Some)
}

/// The warning for a netlify.toml setting chanto does not implement.
fn unsupported(doc: &Doc<'_>, path: &str, key: &Spanned<Cow<'_, str>>) -> String {
    let name = if path.is_empty() { key.get_ref().to_string() } else { format!("{path}.{}", key.get_ref()) };
    doc.warning(key.span().start, &format!("`{name}` is not supported by chanto and is ignored"))
}
