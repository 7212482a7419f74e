//! Registry credentials as they travel: Docker's `X-Registry-Auth` value, base64url of the
//! JSON `{"username","password","serveraddress"}` or `{"identitytoken","serveraddress"}`.
//! The CLI makes it from the user's Docker config (`service create --with-registry-auth`),
//! the manager keeps it sealed under the cluster data key, and the agent hands it to the
//! engine for the pull. Neither type ever shows its contents in `Debug`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Serialize};

/// An encoded `X-Registry-Auth` value.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct RegistryAuth(String);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryAuth(..)")
    }
}

/// Decoded credentials for one registry.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// An OAuth identity (refresh) token, sent instead of username and password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serveraddress: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("serveraddress", &self.serveraddress)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryAuthError {
    #[error("the registry credentials are not base64")]
    Base64,
    #[error("the registry credentials are not the JSON of X-Registry-Auth")]
    Json,
}

impl RegistryAuth {
    /// Wraps a value already encoded (what the store opens).
    pub fn from_encoded(value: String) -> RegistryAuth {
        RegistryAuth(value)
    }

    pub fn encode(creds: &Credentials) -> RegistryAuth {
        let json = serde_json::to_vec(creds).expect("credentials serialize");
        RegistryAuth(URL_SAFE.encode(json))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts base64url or standard base64, padded or not, as the engine does.
    pub fn decode(&self) -> Result<Credentials, RegistryAuthError> {
        let text = self.0.trim().trim_end_matches('=');
        let padded = format!("{text}{}", "=".repeat((4 - text.len() % 4) % 4));
        let json = URL_SAFE
            .decode(&padded)
            .or_else(|_| STANDARD.decode(&padded))
            .map_err(|_| RegistryAuthError::Base64)?;
        serde_json::from_slice(&json).map_err(|_| RegistryAuthError::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_docker_does_and_decodes_back() {
        let creds = Credentials {
            username: "alice".into(),
            password: "s3cr?t>>".into(),
            serveraddress: "127.0.0.1:5000".into(),
            ..Default::default()
        };
        let auth = RegistryAuth::encode(&creds);
        let json = URL_SAFE.decode(auth.as_str()).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"username":"alice","password":"s3cr?t>>","serveraddress":"127.0.0.1:5000"}"#
        );
        assert!(!auth.as_str().contains('+') && !auth.as_str().contains('/'));
        assert_eq!(auth.decode().unwrap(), creds);
        let token = Credentials {
            identitytoken: "tok".into(),
            serveraddress: "https://index.docker.io/v1/".into(),
            ..Default::default()
        };
        let json = URL_SAFE
            .decode(RegistryAuth::encode(&token).as_str())
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"identitytoken":"tok","serveraddress":"https://index.docker.io/v1/"}"#
        );
    }

    #[test]
    fn decodes_unpadded_and_standard_base64_and_refuses_garbage() {
        let std = STANDARD.encode(br#"{"username":"u","password":"p"}"#);
        let auth = RegistryAuth::from_encoded(std.trim_end_matches('=').to_string());
        assert_eq!(auth.decode().unwrap().password, "p");
        assert_eq!(
            RegistryAuth::from_encoded("***".into()).decode(),
            Err(RegistryAuthError::Base64)
        );
        assert_eq!(
            RegistryAuth::from_encoded(URL_SAFE.encode("nope")).decode(),
            Err(RegistryAuthError::Json)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let creds = Credentials {
            username: "alice".into(),
            password: "hunter2".into(),
            serveraddress: "r".into(),
            ..Default::default()
        };
        let auth = RegistryAuth::encode(&creds);
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert!(!format!("{auth:?}").contains(auth.as_str()));
    }
}
