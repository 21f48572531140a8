#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

//! [`Secret`] itself. The redaction test over every config and key type is at the top of
//! the layers, where it may use them all: `runtime/redaction_tests.rs`.

use super::*;

#[test]
fn secret_debug_is_redacted_and_eq_compares_values() {
    let s = Secret::from("hunter2");
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
    assert_eq!(s, Secret::from("hunter2"));
    assert_ne!(s, Secret::from("hunter3"));
    assert_ne!(s, Secret::from("hunter22"), "different lengths compare too");
    assert!(constant_time_eq(b"", b""));
    assert!(!constant_time_eq(b"a", b""));
}
