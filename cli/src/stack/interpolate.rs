//! Variable substitution in Compose values, as `docker stack deploy` does it in the client:
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (fail), `${VAR:+alt}` / `${VAR+alt}`, and `$$` for a
//! literal `$`. Defaults may themselves hold variables. An unset variable without a default
//! becomes the empty string, with Docker's warning.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error(
        "invalid interpolation format for {path}: {value:?}; you may need to escape any $ with another $"
    )]
    Syntax { path: String, value: String },
    #[error("required variable {var} is missing a value: {message} (at {path})")]
    Required {
        path: String,
        var: String,
        message: String,
    },
}

/// What substituting one value found besides its result.
#[derive(Debug, Default)]
pub struct Substituted {
    pub text: String,
    /// Variables that were unset and had no default.
    pub unset: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Finds the `}` closing a `${` whose body starts at `start`, allowing nested `${...}`.
fn closing_brace(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Substitutes the variables of `value` (found at `path`, for messages).
pub fn substitute(
    path: &str,
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, InterpolationError> {
    let syntax = || InterpolationError::Syntax {
        path: path.to_string(),
        value: value.to_string(),
    };
    let chars: Vec<char> = value.chars().collect();
    let mut out = Substituted::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.text.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.text.push('$');
                i += 2;
            }
            Some('{') => {
                let end = closing_brace(&chars, i + 2).ok_or_else(syntax)?;
                let body: String = chars[i + 2..end].iter().collect();
                let name_len = body.chars().take_while(|c| is_name(*c)).count();
                let name: String = body.chars().take(name_len).collect();
                if name.is_empty() || !name.starts_with(is_name_start) {
                    return Err(syntax());
                }
                let rest: String = body.chars().skip(name_len).collect();
                let val = lookup(&name);
                let set = val.is_some();
                let nonempty = val.as_deref().is_some_and(|v| !v.is_empty());
                let nested =
                    |text: &str, out: &mut Substituted| -> Result<String, InterpolationError> {
                        let s = substitute(path, text, lookup)?;
                        out.unset.extend(s.unset);
                        Ok(s.text)
                    };
                let result = if rest.is_empty() {
                    if !set {
                        out.unset.push(name.clone());
                    }
                    val.unwrap_or_default()
                } else if let Some(d) = rest.strip_prefix(":-") {
                    if nonempty {
                        val.unwrap_or_default()
                    } else {
                        nested(d, &mut out)?
                    }
                } else if let Some(d) = rest.strip_prefix('-') {
                    if set {
                        val.unwrap_or_default()
                    } else {
                        nested(d, &mut out)?
                    }
                } else if let Some(m) = rest.strip_prefix(":?") {
                    if !nonempty {
                        return Err(InterpolationError::Required {
                            path: path.to_string(),
                            var: name,
                            message: nested(m, &mut out)?,
                        });
                    }
                    val.unwrap_or_default()
                } else if let Some(m) = rest.strip_prefix('?') {
                    if !set {
                        return Err(InterpolationError::Required {
                            path: path.to_string(),
                            var: name,
                            message: nested(m, &mut out)?,
                        });
                    }
                    val.unwrap_or_default()
                } else if let Some(a) = rest.strip_prefix(":+") {
                    if nonempty {
                        nested(a, &mut out)?
                    } else {
                        String::new()
                    }
                } else if let Some(a) = rest.strip_prefix('+') {
                    if set {
                        nested(a, &mut out)?
                    } else {
                        String::new()
                    }
                } else {
                    return Err(syntax());
                };
                out.text.push_str(&result);
                i = end + 1;
            }
            Some(&n) if is_name_start(n) => {
                let len = chars[i + 1..].iter().take_while(|c| is_name(**c)).count();
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                match lookup(&name) {
                    Some(v) => out.text.push_str(&v),
                    None => out.unset.push(name),
                }
                i += 1 + len;
            }
            _ => return Err(syntax()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "TAG" => Some("1.27".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn sub(v: &str) -> Result<String, InterpolationError> {
        substitute("services.web.image", v, &env).map(|s| s.text)
    }

    #[test]
    fn every_form_docker_knows() {
        assert_eq!(sub("nginx:$TAG").unwrap(), "nginx:1.27");
        assert_eq!(sub("nginx:${TAG}-alpine").unwrap(), "nginx:1.27-alpine");
        assert_eq!(sub("${NOPE:-8000}").unwrap(), "8000");
        assert_eq!(sub("${EMPTY:-8000}").unwrap(), "8000");
        assert_eq!(
            sub("${EMPTY-8000}").unwrap(),
            "",
            "set but empty keeps empty"
        );
        assert_eq!(sub("${NOPE-8000}").unwrap(), "8000");
        assert_eq!(sub("${NOPE:-${PORT}}").unwrap(), "8080", "nested default");
        assert_eq!(sub("${TAG:+v$TAG}").unwrap(), "v1.27");
        assert_eq!(sub("${NOPE+x}").unwrap(), "");
        assert_eq!(sub("cost: $$5 and $$TAG").unwrap(), "cost: $5 and $TAG");
        assert_eq!(sub("no vars").unwrap(), "no vars");
        let s = substitute("p", "a${NOPE}b$ALSO_NOPE", &env).unwrap();
        assert_eq!(s.text, "ab");
        assert_eq!(s.unset, ["NOPE", "ALSO_NOPE"]);
    }

    #[test]
    fn required_and_malformed() {
        assert_eq!(
            sub("${NOPE:?set NOPE to the image tag}")
                .unwrap_err()
                .to_string(),
            "required variable NOPE is missing a value: set NOPE to the image tag (at services.web.image)"
        );
        assert!(sub("${EMPTY:?x}").is_err());
        assert_eq!(sub("${EMPTY?x}").unwrap(), "");
        for bad in ["${", "${TAG", "${}", "${1A}", "$", "a $ b", "${TAG!x}"] {
            assert!(
                matches!(sub(bad), Err(InterpolationError::Syntax { .. })),
                "{bad}"
            );
        }
    }
}
