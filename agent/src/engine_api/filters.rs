//! Docker's `filters` query parameter: `{"name": {"web": true}}` (or the older
//! `{"name": ["web"]}`), an AND over keys and an OR over each key's values.

use super::error::{ApiError, ApiResult};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the parameter, refusing keys the route does not know, as Docker does.
    pub fn parse(raw: Option<&str>, known: &[&str]) -> ApiResult<Filters> {
        let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad(format!("invalid filters {raw:?}: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad(format!("invalid filters {raw:?}: not an object")))?;
        let mut out = BTreeMap::new();
        for (key, values) in obj {
            if !known.contains(&key.as_str()) {
                return Err(ApiError::bad(format!("invalid filter '{key}'")));
            }
            let list: Vec<String> = match values {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        ApiError::bad(format!("invalid filter '{key}': values must be strings"))
                    })?,
                _ => {
                    return Err(ApiError::bad(format!(
                        "invalid filter '{key}': values must be a list or a set"
                    )));
                }
            };
            out.insert(key.clone(), list);
        }
        Ok(Filters(out))
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// True when the key is absent or one of its values satisfies `f`.
    pub fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vals) => vals.iter().any(|v| f(v)),
        }
    }

    /// `label=KEY` or `label=KEY=VALUE`: every value must hold (Docker ANDs labels).
    pub fn labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key)
            .iter()
            .all(|want| match want.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(want.as_str()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_parse_and_unknown_keys_are_refused() {
        let f = Filters::parse(Some(r#"{"name":{"web":true,"db":true}}"#), &["name"]).unwrap();
        assert_eq!(f.values("name"), ["db", "web"]);
        let f = Filters::parse(Some(r#"{"name":["web"]}"#), &["name"]).unwrap();
        assert!(f.any("name", |v| v == "web"));
        assert!(
            f.any("id", |_| false),
            "an absent key lets everything through"
        );
        let e = Filters::parse(Some(r#"{"colour":["red"]}"#), &["name"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'colour'");
        assert!(Filters::parse(Some("{"), &["name"]).is_err());
    }

    #[test]
    fn labels_are_anded() {
        let f = Filters::parse(
            Some(r#"{"label":{"com.docker.stack.namespace=shop":true,"tier":true}}"#),
            &["label"],
        )
        .unwrap();
        let mut l: BTreeMap<String, String> =
            [("com.docker.stack.namespace".into(), "shop".into())].into();
        assert!(!f.labels("label", &l));
        l.insert("tier".into(), "web".into());
        assert!(f.labels("label", &l));
        l.insert("com.docker.stack.namespace".into(), "other".into());
        assert!(!f.labels("label", &l));
    }
}
