//! `--format`: Go templates, as Docker's CLI runs them, through the `gtmpl` crate.
//!
//! Docker's rules (docker/cli `cli/command/formatter` and `templates`):
//! - `table TEMPLATE` prints a header row (the same template run over the column titles)
//!   and aligns the `\t`-separated cells like its tabwriter; any other template prints
//!   one line per object and no header; `json` is `{{json .}}`; a bare `table` is the
//!   command's default table (the caller's business).
//! - The list formats trim blanks around the template and read `\t` and `\n` as a tab
//!   and a newline.
//! - Functions beside Go's builtins: `json`, `split`, `join`, `title`, `lower`, `upper`,
//!   `pad`, `truncate`. In the header row they leave their argument as it is (but `pad`).
//! - An `ls`/`ps` template sees the command's row (fields like `.ID`, `.Replicas`), whose
//!   `{{json .}}` is an object with sorted keys; `inspect -f` sees the inspected object's
//!   JSON, where a missing key prints `<no value>`, as Docker's raw-JSON fallback does.
//!
//! Rows are `Value::Object` (an unknown field is an error, as on Docker's row structs);
//! JSON objects are `Value::Map` (a missing key is `<no value>`). gtmpl prints arrays and
//! maps in Rust's debug form where Go prints `[a b]` and `map[k:v]`; use `json` or
//! `join` for those.

use gtmpl::error::ExecError;
use gtmpl::{Context, Func, FuncError, Value};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The row key that holds an object's labels for `{{.Label "key"}}`; it starts with `_`
/// so `{{json .}}` leaves it out (no Docker field does).
pub const LABELS_KEY: &str = "_labels";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// Docker says "template parsing error" for both a template that does not parse and
    /// one that fails while it runs.
    #[error("template parsing error: {message}")]
    Parse { message: String },
    #[error("template parsing error: {message}")]
    Exec { message: String },
}

/// What a list command's `--format` asks for.
pub enum ListFormat {
    /// No `--format`, or a bare `table`: the command's own table (or ids with `-q`).
    Default,
    /// A template; `-q` does not apply, as in Docker.
    Template(Box<Template>),
}

impl ListFormat {
    pub fn parse(format: Option<&str>) -> Result<ListFormat, TemplateError> {
        match format {
            None | Some("") | Some("table") => Ok(ListFormat::Default),
            Some(f) => Template::list(f).map(|t| ListFormat::Template(Box::new(t))),
        }
    }
}

/// A parsed `--format` template, with its header twin for `table`.
pub struct Template {
    table: bool,
    row: gtmpl::Template,
    header: gtmpl::Template,
}

impl Template {
    /// A list command's format: `json`, `table TEMPLATE` or `TEMPLATE`.
    pub fn list(format: &str) -> Result<Template, TemplateError> {
        let (table, text) = if format == "json" {
            (false, "{{json .}}".to_string())
        } else {
            let (table, body) = match format.strip_prefix("table") {
                Some(rest) => (true, rest),
                None => (false, format),
            };
            let body = body
                .trim_matches(' ')
                .replace("\\t", "\t")
                .replace("\\n", "\n");
            (table, body)
        };
        Template::parse(table, &text)
    }

    /// An inspect format: the text as given (Docker neither trims nor unescapes it there).
    pub fn inspect(format: &str) -> Result<Template, TemplateError> {
        Template::parse(false, format)
    }

    fn parse(table: bool, text: &str) -> Result<Template, TemplateError> {
        let text = rewrite_label_calls(text);
        let mut row = gtmpl::Template::default();
        row.add_funcs(ROW_FUNCS);
        row.parse(text.as_str()).map_err(|e| TemplateError::Parse {
            message: e.to_string(),
        })?;
        let mut header = gtmpl::Template::default();
        header.add_funcs(HEADER_FUNCS);
        header
            .parse(text.as_str())
            .map_err(|e| TemplateError::Parse {
                message: e.to_string(),
            })?;
        Ok(Template { table, row, header })
    }

    /// Runs the template once over `value`.
    pub fn render(&self, value: &Value) -> Result<String, TemplateError> {
        self.row
            .render(&Context::from(value.clone()))
            .map_err(exec_error)
    }

    /// Whether this is a `table` format (header row, aligned columns).
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Runs the template over each object's JSON, one output line per object.
    pub fn render_objects<T: Serialize>(&self, objects: &[T]) -> Result<String, TemplateError> {
        let mut out = String::new();
        for o in objects {
            let json = serde_json::to_value(o).expect("API objects serialize to JSON");
            out.push_str(&self.render(&from_json(&json))?);
            out.push('\n');
        }
        Ok(out)
    }

    /// A list: one rendering per row, each ending a line; for `table`, first the header
    /// (the template over the column titles), then every line aligned on its tabs.
    pub fn render_rows(
        &self,
        headers: &[(&str, &str)],
        rows: &[Value],
    ) -> Result<String, TemplateError> {
        let mut text = String::new();
        for row in rows {
            text.push_str(&self.render(row)?);
            text.push('\n');
        }
        if !self.table {
            return Ok(text);
        }
        let titles: HashMap<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
            .collect();
        // Docker ignores a header that fails (it is only decoration).
        let header = self
            .header
            .render(&Context::from(Value::Map(titles)))
            .unwrap_or_default();
        let all = format!("{header}\n{text}");
        let mut lines = all.lines();
        let mut table = crate::table::Table::new(lines.next().unwrap_or_default().split('\t'));
        for line in lines {
            table.row(line.split('\t'));
        }
        Ok(table.render())
    }
}

/// `inspect -f`: the template over each object's JSON, one output line per object.
pub fn render_inspect<T: Serialize>(format: &str, objects: &[T]) -> Result<String, TemplateError> {
    Template::inspect(format)?.render_objects(objects)
}

/// JSON as a template sees it: objects are maps.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::NoValue,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// A list row: Docker's field names and values.
pub fn row<I>(fields: I) -> Value
where
    I: IntoIterator<Item = (&'static str, Value)>,
{
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Labels for a row: the hidden map behind `{{.Label "key"}}`.
pub fn labels_value(labels: &BTreeMap<String, String>) -> Value {
    Value::Map(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

/// Docker's `.Labels` column: `k=v` pairs, sorted, joined by commas.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn exec_error(e: ExecError) -> TemplateError {
    let message = match e {
        // gtmpl's own message prints the whole receiver.
        ExecError::NoFiledFor(field, _) => format!("can't evaluate field {field}"),
        ExecError::FuncError(f) => format!("error calling function: {f}"),
        other => other.to_string(),
    };
    TemplateError::Exec { message }
}

/// gtmpl calls a field only with its receiver, so Docker's `{{.Label "key"}}` (a method
/// with an argument) becomes `(_label . "key")`. Only a `.Label` that starts a field chain
/// of dot, inside an action and outside string literals, is rewritten.
fn rewrite_label_calls(text: &str) -> String {
    const FIELD: &str = ".Label";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open + 2]);
        rest = &rest[open + 2..];
        let close = rest.find("}}").unwrap_or(rest.len());
        let action = &rest[..close];
        out.push_str(&rewrite_action(action, FIELD));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

fn rewrite_action(action: &str, field: &str) -> String {
    let chars: Vec<char> = action.chars().collect();
    let field: Vec<char> = field.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            let start = i;
            i = skip_string(&chars, i);
            out.extend(&chars[start..i]);
            continue;
        }
        let standalone = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ')';
        if standalone && chars[i..].starts_with(&field) {
            let mut j = i + field.len();
            let after_ok = j < chars.len() && chars[j].is_whitespace();
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if after_ok && j < chars.len() && (chars[j] == '"' || chars[j] == '`') {
                let end = skip_string(&chars, j);
                let literal: String = chars[j..end].iter().collect();
                out.push_str(&format!("(_label . {literal})"));
                i = end;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.' || c == '$'
}

/// The index just past the string literal that starts at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        if quote == '"' && chars[j] == '\\' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

// ---- Docker's template functions (templates.basicFunctions) ----

const ROW_FUNCS: &[(&str, Func)] = &[
    ("json", json as Func),
    ("split", split as Func),
    ("join", join as Func),
    ("title", title as Func),
    ("lower", lower as Func),
    ("upper", upper as Func),
    ("pad", pad as Func),
    ("truncate", truncate as Func),
    ("_label", label as Func),
];

/// Docker's `HeaderFunctions`: the header row keeps the column titles as they are.
const HEADER_FUNCS: &[(&str, Func)] = &[
    ("json", first_string as Func),
    ("split", first_string as Func),
    ("join", first_string as Func),
    ("title", first_string as Func),
    ("lower", first_string as Func),
    ("upper", first_string as Func),
    ("pad", pad as Func),
    ("truncate", first_string as Func),
    ("_label", no_label as Func),
];

fn arg<'a>(name: &str, args: &'a [Value], i: usize, n: usize) -> Result<&'a Value, FuncError> {
    if args.len() != n {
        return Err(FuncError::ExactlyXArgs(name.into(), n));
    }
    Ok(&args[i])
}

fn string_arg(name: &str, args: &[Value], i: usize, n: usize) -> Result<String, FuncError> {
    match arg(name, args, i, n)? {
        Value::String(s) => Ok(s.clone()),
        Value::NoValue | Value::Nil => Ok(String::new()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(FuncError::Generic(format!(
            "{name}: expected a string, got {}",
            kind(other)
        ))),
    }
}

fn int_arg(name: &str, args: &[Value], i: usize, n: usize) -> Result<usize, FuncError> {
    match arg(name, args, i, n)? {
        Value::Number(num) => num
            .as_u64()
            .map(|u| u as usize)
            .ok_or_else(|| FuncError::Generic(format!("{name}: expected a count, got {num}"))),
        other => Err(FuncError::Generic(format!(
            "{name}: expected a number, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::NoValue | Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Object(_) | Value::Map(_) => "map",
        Value::Array(_) => "slice",
        Value::Function(_) => "func",
        Value::Number(_) => "number",
    }
}

/// Go's `fmt.Sprint` of a scalar; composite values as JSON.
fn sprint(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => "<nil>".into(),
        Value::Array(_) | Value::Map(_) | Value::Object(_) => to_json(v).to_string(),
        other => other.to_string(),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or_default())
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Map(m) | Value::Object(m) => {
            // Sorted keys, as Go marshals a map; hidden row keys stay hidden.
            let sorted: BTreeMap<&String, &Value> =
                m.iter().filter(|(k, _)| !k.starts_with('_')).collect();
            serde_json::Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            )
        }
    }
}

/// `json`: compact JSON. A row is marshalled by Go's `json.Marshal`, which escapes
/// `<`, `>` and `&` (`"*:8080-\u003e80/tcp"`); other values go through an encoder with
/// HTML escaping off.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = arg("json", args, 0, 1)?;
    let text = to_json(v).to_string();
    if matches!(v, Value::Object(_)) {
        return Ok(Value::from(html_escape(&text)));
    }
    Ok(Value::from(text))
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("split", args, 0, 2)?;
    let sep = string_arg("split", args, 1, 2)?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::from(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(Value::from).collect()
    };
    Ok(Value::Array(parts))
}

/// `join`: a slice's items (or a map's values, sorted) joined by the separator.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let sep = string_arg("join", args, 1, 2)?;
    let items: Vec<String> = match &args[0] {
        Value::NoValue | Value::Nil => vec![],
        Value::Array(a) => a.iter().map(sprint).collect(),
        Value::Map(m) | Value::Object(m) => {
            let mut v: Vec<String> = m.values().map(sprint).collect();
            v.sort();
            v
        }
        other => {
            return Err(FuncError::Generic(format!(
                "expected slice, got {}",
                kind(other)
            )));
        }
    };
    Ok(Value::from(items.join(&sep)))
}

/// Go's `strings.Title`: the first letter of each word in upper case.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("title", args, 0, 1)?;
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    Ok(Value::from(out))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(string_arg("lower", args, 0, 1)?.to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(string_arg("upper", args, 0, 1)?.to_uppercase()))
}

/// `pad S PREFIX SUFFIX`: spaces around a non-empty string.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("pad", args, 0, 3)?;
    if s.is_empty() {
        return Ok(Value::from(s));
    }
    let before = int_arg("pad", args, 1, 3)?;
    let after = int_arg("pad", args, 2, 3)?;
    Ok(Value::from(format!(
        "{}{s}{}",
        " ".repeat(before),
        " ".repeat(after)
    )))
}

/// `truncate S N`: the first N characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("truncate", args, 0, 2)?;
    let n = int_arg("truncate", args, 1, 2)?;
    Ok(Value::from(s.chars().take(n).collect::<String>()))
}

/// Docker's `.Label "key"` on a row: the label's value, empty when absent.
fn label(args: &[Value]) -> Result<Value, FuncError> {
    let key = string_arg("Label", args, 1, 2)?;
    let value = match &args[0] {
        Value::Object(o) => match o.get(LABELS_KEY) {
            Some(Value::Map(labels)) => labels.get(&key).cloned(),
            _ => {
                return Err(FuncError::Generic(
                    "can't evaluate field Label: this row has no labels".into(),
                ));
            }
        },
        _ => None,
    };
    Ok(value.unwrap_or_else(|| Value::from("")))
}

fn first_string(args: &[Value]) -> Result<Value, FuncError> {
    Ok(match args.first() {
        Some(Value::String(s)) => Value::from(s.as_str()),
        _ => Value::from(""),
    })
}

fn no_label(_args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(""))
}

#[cfg(test)]
mod tests;
