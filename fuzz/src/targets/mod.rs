//! The fuzz targets, by name.

pub mod admin;
pub mod chunked;
pub mod http;
pub mod path;
pub mod pkcs12;
pub mod policy;

use crate::engine::Target;

/// Every target, in the order `all` runs them.
pub const NAMES: &[&str] = &[
    "http-request",
    "http-response",
    "chunked",
    "path",
    "policy",
    "pkcs12",
    "admin",
];

/// A new instance of the target `name` (`Err` when it cannot be set up; `Ok(None)` when
/// there is no such target).
pub fn make(name: &str) -> Result<Option<Box<dyn Target>>, String> {
    Ok(Some(match name {
        "http-request" => Box::new(http::HttpRequest),
        "http-response" => Box::new(http::HttpResponse),
        "chunked" => Box::new(chunked::Chunked),
        "path" => Box::new(path::RequestPath),
        "policy" => Box::new(policy::PolicyXml),
        "pkcs12" => Box::new(pkcs12::Pkcs12Intake::new()?),
        "admin" => Box::new(admin::AdminBodies::new()?),
        _ => return Ok(None),
    }))
}
