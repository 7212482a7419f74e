//! Reading request bodies as Docker's Go server does: `null` is the zero value and keys
//! match whatever their case; errors name the field.

use super::error::{ApiError, ApiResult};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Parses a body into JSON with `null`s dropped (Go decodes them as zero values, and
/// clients send them for every unset pointer).
pub fn parse(body: &[u8], what: &str) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(format!("{what}: the request has no body")));
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("{what}: malformed JSON: {e}")))?;
    strip_nulls(&mut v);
    Ok(v)
}

pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Decodes `v`, naming the field that does not fit (`TaskTemplate.RestartPolicy.Condition`).
pub fn decode<T: DeserializeOwned>(v: Value, what: &str) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad(format!("{what}: {inner}"))
        } else {
            ApiError::bad(format!("{what}: {path}: {inner}"))
        }
    })
}

/// Whether a value carries nothing: Go's zero values and empty collections.
pub fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_unset),
        Value::Object(m) => m.values().all(is_unset),
    }
}

/// Renames keys of `m` that match one of `names` but for case to that name (Go's decoder
/// matches field names case-insensitively; docker-py relies on it, e.g. `{"replicated": {}}`).
pub fn canonical_keys(m: &mut Map<String, Value>, names: &[&str]) {
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if let Some(name) = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(&k) && **n != k)
            && !m.contains_key(*name)
            && let Some(v) = m.remove(&k)
        {
            m.insert(name.to_string(), v);
        }
    }
}

/// The object at `path` under `v`, if there is one.
pub fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object_mut()?.get_mut(*p)?;
    }
    cur.as_object_mut()
}

/// Refuses fields Docker has and shoal does not implement, when they are set: a client
/// that asks for them must not get a service that silently lacks them.
pub fn refuse_set(obj: &Map<String, Value>, at: &str, fields: &[(&str, &str)]) -> ApiResult<()> {
    for (field, why) in fields {
        if let Some(v) = obj.get(*field)
            && !is_unset(v)
        {
            return Err(ApiError::bad(format!(
                "{at}.{field} is not supported: {why}"
            )));
        }
    }
    Ok(())
}

/// Docker's boolean query parameters: anything but "", "0", "no", "false" and "none".
pub fn query_bool(v: Option<&str>) -> bool {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => false,
        Some(s) => !matches!(s.as_str(), "" | "0" | "no" | "false" | "none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_zero_values_and_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            #[serde(default)]
            n: u64,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "PascalCase")]
        struct Outer {
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
            inner: Inner,
        }
        let v = parse(br#"{"Labels": null, "Inner": {"N": null}}"#, "spec").unwrap();
        let o: Outer = decode(v, "spec").unwrap();
        assert!(o.labels.is_empty());
        assert_eq!(o.inner.n, 0);
        let v = parse(br#"{"Inner": {"N": "three"}}"#, "spec").unwrap();
        let e = decode::<Outer>(v, "service spec").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("service spec: Inner.N: invalid type"),
            "{}",
            e.message
        );
        let e = parse(b"{\"Name\": ", "service spec").unwrap_err();
        assert!(e.message.contains("malformed JSON"), "{}", e.message);
        assert!(
            parse(b"  ", "network")
                .unwrap_err()
                .message
                .contains("no body")
        );
    }

    #[test]
    fn keys_match_without_case_and_unset_fields_pass() {
        let mut v = serde_json::json!({"replicated": {"Replicas": 2}});
        canonical_keys(v.as_object_mut().unwrap(), &["Replicated", "Global"]);
        assert_eq!(v, serde_json::json!({"Replicated": {"Replicas": 2}}));
        let obj = serde_json::json!({"Groups": [], "Privileges": {"CredentialSpec": {}}});
        refuse_set(
            obj.as_object().unwrap(),
            "ContainerSpec",
            &[("Groups", "x"), ("Privileges", "y")],
        )
        .unwrap();
        let obj = serde_json::json!({"Groups": ["wheel"]});
        let e = refuse_set(
            obj.as_object().unwrap(),
            "ContainerSpec",
            &[("Groups", "no groups")],
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "ContainerSpec.Groups is not supported: no groups"
        );
        assert!(query_bool(Some("True")) && query_bool(Some("1")));
        assert!(!query_bool(Some("false")) && !query_bool(Some("0")) && !query_bool(None));
    }
}
