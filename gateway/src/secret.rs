//! [`Secret`]: a value (the configured admin token, a digest of it) that must not outlive its
//! use or leak through `Debug`: `Debug` prints `<redacted>`, the value is wiped on drop, and
//! `==` compares in constant time.
//!
//! Wiping goes through the `zeroize` crate (volatile writes the optimizer cannot remove) and
//! covers the value's own buffer only: copies made before the value was wrapped (the text of
//! the config file, the process environment) or by moving it are out of its reach. The point
//! is that no secret stays readable in freed memory for its whole lifetime, where a
//! memory-disclosure bug or a core dump would find it.
//!
//! The test that formats every config and key type with `{:?}` and looks for the secrets
//! in the output is `runtime/redaction_tests.rs` (at the top of the layers: it uses them all).

use std::fmt;

use zeroize::Zeroize;

#[cfg(test)]
mod tests;

/// A secret value: `Debug` prints `<redacted>`, the value is zeroized on drop, and `==`
/// (for byte-like values) takes the same time wherever two values differ.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`; from here on it is wiped when dropped.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value, for the one place that must use it. Never for logging or error messages.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, to fill it in place (e.g. with random bytes).
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize + AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_ref(), other.0.as_ref())
    }
}

impl<T: Zeroize + AsRef<[u8]>> Eq for Secret<T> {}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Whether `a == b`, in a time that depends on neither their contents nor where they differ:
/// both are hashed (SHA-256, so inputs of different lengths compare too) and the digests
/// compared with BoringSSL's `CRYPTO_memcmp`. Hashing takes time linear in each length;
/// a caller that must hide the length of a stored secret hashes it once in advance (as
/// `admin::AdminToken` does) and compares digests.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let a = Secret::new(boring::sha::sha256(a));
    let b = Secret::new(boring::sha::sha256(b));
    boring::memcmp::eq(a.expose(), b.expose())
}
