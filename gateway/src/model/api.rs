//! APIs (routes): the JSON body of `PUT /apis/{id}`, path validation, the REST resource
//! and the stored record (which also carries the API's policy XML).

use serde::{Deserialize, Serialize};

use super::{Api, InvalidRequest, ResourceId};

/// The body of `PUT /apis/{id}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiBody {
    /// The route prefix, e.g. `/orders`.
    pub path: String,
    /// The backend requests go to.
    pub backend_id: String,
}

/// The API resource as returned by the REST API.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    /// The API id.
    pub id: String,
    /// The route prefix.
    pub path: String,
    /// The backend id.
    pub backend_id: String,
}

/// The stored record of an API: its body plus the policy XML, when it has one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredApi {
    /// The route prefix.
    pub path: String,
    /// The backend id.
    pub backend_id: String,
    /// The policy XML exactly as uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Validates an API body (without its policy). Whether the backend exists is the caller's
/// business (it needs the other resources).
pub fn parse_api(id: ResourceId, body: &ApiBody) -> Result<Api, InvalidRequest> {
    let path = parse_api_path(&body.path)?;
    let backend_id = ResourceId::parse(&body.backend_id).map_err(|_| {
        InvalidRequest("backendId must be 1 to 80 characters of A-Z a-z 0-9 . _ -.".to_owned())
    })?;
    Ok(Api {
        id,
        path,
        backend_id,
        policy: None,
    })
}

/// Validates a route path: starts with '/', no query or fragment, no `.`/`..` or empty
/// segments, no whitespace or control characters; a trailing '/' is dropped except for
/// `/` itself.
pub fn parse_api_path(raw: &str) -> Result<String, InvalidRequest> {
    let bad = |why: &str| InvalidRequest(format!("The API path is not valid: {why}."));
    if !raw.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if raw.contains('?') || raw.contains('#') {
        return Err(bad("a query string or fragment is not allowed"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    // `trimmed` starts with the one-byte '/', so `[1..]` is in bounds and on a char boundary.
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("empty, '.' and '..' segments are not allowed"));
    }
    Ok(trimmed.to_owned())
}

/// The REST resource of an API.
pub fn api_resource(api: &Api) -> ApiResource {
    ApiResource {
        id: api.id.to_string(),
        path: api.path.clone(),
        backend_id: api.backend_id.to_string(),
    }
}

/// The stored record of an API.
pub fn stored_api(api: &Api) -> StoredApi {
    StoredApi {
        path: api.path.clone(),
        backend_id: api.backend_id.to_string(),
        policy: api.policy.as_ref().map(|p| p.xml.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_api_path("/").unwrap(), "/");
        assert_eq!(parse_api_path("//").unwrap(), "/");
        assert_eq!(parse_api_path("/orders").unwrap(), "/orders");
        assert_eq!(parse_api_path("/orders/").unwrap(), "/orders");
        assert_eq!(parse_api_path("/a/b.c/v1").unwrap(), "/a/b.c/v1");
        for bad in [
            "",
            "orders",
            "/orders?x=1",
            "/a#b",
            "/a/../b",
            "/..",
            "/a/./b",
            "/a//b",
            "/a b",
            "/a\tb",
        ] {
            assert!(parse_api_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies() {
        let id = ResourceId::parse("a1").unwrap();
        let body: ApiBody =
            serde_json::from_str(r#"{"path":"/orders/","backendId":"b1"}"#).unwrap();
        let api = parse_api(id.clone(), &body).unwrap();
        assert_eq!(api.path, "/orders");
        assert_eq!(api.backend_id.as_str(), "b1");
        let json = serde_json::to_value(api_resource(&api)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":"a1","path":"/orders","backendId":"b1"})
        );
        let bad: ApiBody = serde_json::from_str(r#"{"path":"/o","backendId":"b 1"}"#).unwrap();
        assert!(parse_api(id.clone(), &bad).is_err());
        assert!(serde_json::from_str::<ApiBody>(r#"{"path":"/o"}"#).is_err());
        assert!(serde_json::from_str::<ApiBody>(r#"{"path":"/o","backendId":"b","x":1}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn path_parser_never_panics(s in "\\PC{0,40}") {
            if let Ok(p) = parse_api_path(&s) {
                assert!(p.starts_with('/'));
                assert!(p == "/" || !p.ends_with('/'));
            }
        }
    }
}
