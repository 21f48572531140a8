//! Duration strings: `"250ms"`, `"5s"`, `"10m"`, `"12h"`, combinations such as `"1h30m"`,
//! and decimals such as `"1.5s"`.

use std::time::Duration;

/// Unit spellings and their length in nanoseconds. The longest matching spelling wins, so
/// `ms` is not read as `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
];

/// Parses a duration: one or more `<number><unit>` parts, units `ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d`; numbers are decimal, optionally with a fractional part (`"1.5h"`). `"0"` alone
/// is zero. No signs, no spaces.
///
/// The error is a one-line message that quotes the input.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| Err(format!("invalid duration {text:?}: {why}"));
    if text.is_empty() {
        return bad("empty (expected e.g. \"250ms\", \"5s\", \"10m\", \"12h\")");
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(tail) => {
                let frac_len = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return bad("expected a number followed by a unit (ms, s, m, h)");
        }
        let Some(&(unit, unit_nanos)) = UNITS
            .iter()
            .filter(|(name, _)| after_num.starts_with(name))
            .max_by_key(|(name, _)| name.len())
        else {
            return match after_num.chars().next() {
                None => bad("missing unit (use ms, s, m or h, e.g. \"5s\")"),
                Some(c) if c.is_alphabetic() => bad("unknown unit (use ms, s, m or h)"),
                Some(c) => bad(&format!("unexpected character {c:?}")),
            };
        };
        rest = &after_num[unit.len()..];

        let too_large = || format!("invalid duration {text:?}: too large");
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_large())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(too_large)?;
        if !frac_part.is_empty() {
            // Only the digits that can matter at nanosecond precision (unit ≤ 1 day < 10^14 ns).
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| too_large())?;
            let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
            nanos = nanos
                .checked_add(frac * unit_nanos / scale)
                .ok_or_else(too_large)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| format!("invalid duration {text:?}: too large"))?;
    // The remainder is below 10^9 and so fits in a u32.
    let subsec = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, subsec))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn simple_units() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("12h"), Duration::from_secs(12 * 3600));
        assert_eq!(ok("2d"), Duration::from_secs(2 * 86400));
        assert_eq!(ok("15us"), Duration::from_micros(15));
        assert_eq!(ok("15µs"), Duration::from_micros(15));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0"), Duration::ZERO);
    }

    #[test]
    fn combinations_and_decimals() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1m30s500ms"), Duration::from_millis(90_500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "", "5", "s", "5x", "-5s", "+5s", " 5s", "5s ", "5 s", "5S", "1h30", "5.s.", ".s",
            "1e3s", "5sec", "h1",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn rejects_overflow() {
        let err = parse_duration("99999999999999999999999999999999999999999h").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_duration("999999999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }
}
