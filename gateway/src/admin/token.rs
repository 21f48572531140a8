//! The admin bearer token (contract §3): where it comes from ([`resolve_token`]: env, config,
//! or a file generated once in the data dir) and how a presented token is checked
//! ([`AdminToken::verify`], constant time).
//!
//! Only the token's SHA-256 is kept once resolved, wiped on drop and never printed: the
//! plain token exists in this process just long enough to be hashed.

use std::fmt;
use std::path::Path;

use zeroize::Zeroize as _;

use crate::secret::Secret;
use crate::store::read_or_create_secret;

/// The file holding a generated admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token in force. `Debug` prints `AdminToken(<redacted>)`.
#[derive(Clone)]
pub struct AdminToken {
    /// SHA-256 of the token, computed once: comparing digests of equal length takes the
    /// same time whatever the token's length or content.
    digest: Secret<[u8; 32]>,
    /// An empty token would let `Authorization: Bearer ` in: it refuses everything instead.
    enabled: bool,
}

impl AdminToken {
    /// The token `token` (consumed: its text is wiped when this returns).
    pub fn new(token: Secret<String>) -> Self {
        Self {
            digest: Secret::new(boring::sha::sha256(token.expose().as_bytes())),
            enabled: !token.expose().is_empty(),
        }
    }

    /// Whether `presented` (the part after `Bearer `) is the token. Constant time: the
    /// presented token is hashed and the digests compared with `CRYPTO_memcmp`, so neither
    /// the token's content nor its length leaks through timing.
    pub fn verify(&self, presented: &str) -> bool {
        let mut digest = boring::sha::sha256(presented.as_bytes());
        let equal = boring::memcmp::eq(&digest, self.digest.expose());
        digest.zeroize();
        equal && self.enabled
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Resolves the admin bearer token: `EDGEGW_ADMIN_TOKEN` wins (when set and not empty),
/// then the configured `admin.token` (when not empty), else a random token generated once
/// into `data_dir/admin.token` (mode 0600) and reused afterwards. Surrounding whitespace
/// is ignored.
pub fn resolve_token(
    configured: Option<&Secret<String>>,
    env_value: Option<String>,
    data_dir: &Path,
) -> Result<AdminToken, std::io::Error> {
    let env_value = env_value.map(Secret::new);
    let chosen = [env_value.as_ref(), configured]
        .into_iter()
        .flatten()
        .map(|t| t.expose().trim())
        .find(|t| !t.is_empty());
    if let Some(t) = chosen {
        return Ok(AdminToken::new(Secret::from(t)));
    }
    let text = read_or_create_secret(&data_dir.join(ADMIN_TOKEN_FILE), || {
        let mut bytes = Secret::new([0u8; 32]);
        boring::rand::rand_bytes(bytes.expose_mut()).map_err(std::io::Error::other)?;
        Ok(hex::encode(bytes.expose()))
    })?;
    Ok(AdminToken::new(Secret::new(text)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_config_then_a_generated_file() {
        let dir = tempdir();
        let cfg = Secret::from("cfg");
        let t = resolve_token(Some(&cfg), Some("env".into()), &dir).unwrap();
        assert!(t.verify("env") && !t.verify("cfg"));
        // An empty env value does not count.
        let t = resolve_token(Some(&cfg), Some(" ".into()), &dir).unwrap();
        assert!(t.verify("cfg"));
        let t = resolve_token(Some(&Secret::from(" cfg\n")), None, &dir).unwrap();
        assert!(t.verify("cfg"), "surrounding whitespace is ignored");
        // Neither: a random token, written once (0600) and reused.
        let data = dir.join("data");
        resolve_token(Some(&Secret::from("")), None, &data).unwrap();
        let written = std::fs::read_to_string(data.join(ADMIN_TOKEN_FILE)).unwrap();
        let written = written.trim();
        assert_eq!(written.len(), 64, "32 random bytes, hex");
        let again = resolve_token(None, None, &data).unwrap();
        assert!(again.verify(written));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn verify_takes_only_the_exact_token() {
        let t = AdminToken::new(Secret::from("s3cret"));
        assert!(t.verify("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "s3cret2", "S3CRET"] {
            assert!(!t.verify(wrong), "{wrong:?}");
        }
        let empty = AdminToken::new(Secret::from(""));
        assert!(!empty.verify(""), "an empty token refuses everything");
    }

    fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgegw-token-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
