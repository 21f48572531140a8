//! Byte- and line-level mutations (libFuzzer's repertoire, plus ASCII numbers and lines for
//! the text formats), stacked 1 to 8 at a time; a target's own structure-aware mutation
//! takes part with one chance in four.

use rand::rngs::StdRng;
use rand::Rng;

use crate::engine::Target;

/// Bytes that matter to the parsers under test: delimiters, line ends, limits of classes.
const INTERESTING_BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\r\n\t :;,=\"'<>/\\%.?#&0129afAFxX-+";

/// Numbers at the edges of integer types and of the gateway's limits.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "+1",
    "00",
    "0000000000000000000001",
    "127",
    "255",
    "256",
    "4095",
    "4096",
    "4097",
    "16384",
    "16385",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "fffffffffffffff",
    "ffffffffffffffff",
    "1e3",
    "0x10",
    "1.5",
    " 1",
    "1 ",
];

/// Mutates `data` in place (within the target's `max_len`); `other` is another kept input
/// for splicing.
pub fn mutate(rng: &mut StdRng, target: &mut dyn Target, data: &mut Vec<u8>, other: &[u8]) {
    let rounds = 1usize << rng.random_range(0..4);
    let max_len = target.max_len();
    for _ in 0..rounds {
        if rng.random_ratio(1, 4) && target.mutate(rng, data) {
            continue;
        }
        let dict = target.dictionary();
        one(rng, data, dict, other);
    }
    data.truncate(max_len);
}

fn pos(rng: &mut StdRng, len: usize) -> usize {
    rng.random_range(0..=len)
}

fn one(rng: &mut StdRng, data: &mut Vec<u8>, dict: &[&'static [u8]], other: &[u8]) {
    let len = data.len();
    match rng.random_range(0..20) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.random_range(..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        // Any byte.
        1 if len > 0 => {
            let i = rng.random_range(..len);
            data[i] = rng.random();
        }
        // An interesting byte.
        2 if len > 0 => {
            let i = rng.random_range(..len);
            data[i] = INTERESTING_BYTES[rng.random_range(..INTERESTING_BYTES.len())];
        }
        // Insert random or interesting bytes.
        3 => {
            let at = pos(rng, len);
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.random_bool(0.5) {
                        rng.random()
                    } else {
                        INTERESTING_BYTES[rng.random_range(..INTERESTING_BYTES.len())]
                    }
                })
                .collect();
            data.splice(at..at, bytes);
        }
        // A run of one byte (sometimes long: limits).
        4 => {
            let at = pos(rng, len);
            let n = if rng.random_ratio(1, 40) {
                rng.random_range(1..=20_000)
            } else {
                rng.random_range(1..=64)
            };
            let b = if rng.random_bool(0.5) {
                data.get(at.saturating_sub(1)).copied().unwrap_or(b'a')
            } else {
                INTERESTING_BYTES[rng.random_range(..INTERESTING_BYTES.len())]
            };
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        // Delete a range.
        5 if len > 0 => {
            let at = rng.random_range(..len);
            let n = rng.random_range(1..=(len - at).min(1 + len / 4));
            data.drain(at..at + n);
        }
        // Duplicate a range somewhere.
        6 if len > 0 => {
            let at = rng.random_range(..len);
            let n = rng.random_range(1..=(len - at).min(64));
            let piece = data[at..at + n].to_vec();
            let to = pos(rng, len);
            data.splice(to..to, piece);
        }
        // Overwrite a range with another part of the input.
        7 if len > 1 => {
            let from = rng.random_range(..len);
            let to = rng.random_range(..len);
            let n = rng.random_range(1..=(len - from.max(to)).min(32));
            let piece = data[from..from + n].to_vec();
            data[to..to + n].copy_from_slice(&piece);
        }
        // Insert a dictionary token.
        8 | 9 if !dict.is_empty() => {
            let token = dict[rng.random_range(..dict.len())];
            let at = pos(rng, len);
            data.splice(at..at, token.iter().copied());
        }
        // Overwrite with a dictionary token.
        10 if !dict.is_empty() && len > 0 => {
            let token = dict[rng.random_range(..dict.len())];
            let at = rng.random_range(..len);
            let end = (at + token.len()).min(len);
            data.splice(at..end, token.iter().copied());
        }
        // Splice: our start, the other input's end.
        11 if !other.is_empty() => {
            let cut = pos(rng, len);
            let from = rng.random_range(..other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // Insert part of the other input.
        12 if !other.is_empty() => {
            let from = rng.random_range(..other.len());
            let n = rng.random_range(1..=(other.len() - from).min(128));
            let at = pos(rng, len);
            data.splice(at..at, other[from..from + n].iter().copied());
        }
        // An ASCII number becomes another.
        13 => number(rng, data),
        // Truncate.
        14 if len > 0 => {
            let at = rng.random_range(..len);
            data.truncate(at);
        }
        // Swap two bytes.
        15 if len > 1 => {
            let a = rng.random_range(..len);
            let b = rng.random_range(..len);
            data.swap(a, b);
        }
        // Flip the case of an ASCII letter.
        16 if len > 0 => {
            let i = rng.random_range(..len);
            if data[i].is_ascii_alphabetic() {
                data[i] ^= 0x20;
            }
        }
        // Line ends: CRLF, LF or CR inserted, or one CRLF shortened.
        17 => {
            let at = pos(rng, len);
            let end: &[u8] = match rng.random_range(0..4) {
                0 => b"\r\n",
                1 => b"\n",
                2 => b"\r",
                _ => b"\r\n\r\n",
            };
            if rng.random_bool(0.3) {
                if let Some(i) = data.windows(2).skip(at).position(|w| w == b"\r\n") {
                    data.remove(at + i);
                    return;
                }
            }
            data.splice(at..at, end.iter().copied());
        }
        // Lines: duplicate, delete or swap one.
        18 | 19 => lines(rng, data),
        _ => {}
    }
}

/// Replaces a run of ASCII digits (or hex digits) with an interesting number or a neighbour.
fn number(rng: &mut StdRng, data: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_hexdigit()))
        .collect();
    if starts.is_empty() {
        let at = pos(rng, data.len());
        let n = INTERESTING_NUMBERS[rng.random_range(..INTERESTING_NUMBERS.len())];
        data.splice(at..at, n.bytes());
        return;
    }
    let start = starts[rng.random_range(..starts.len())];
    let end = start
        + data[start..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
    let text = std::str::from_utf8(&data[start..end]).unwrap_or("0");
    let new = match rng.random_range(0..4) {
        0 => INTERESTING_NUMBERS[rng.random_range(..INTERESTING_NUMBERS.len())].to_owned(),
        1 => match text.parse::<u128>() {
            Ok(v) => (v + 1).to_string(),
            Err(_) => format!("{text}0"),
        },
        2 => match text.parse::<u128>() {
            Ok(v) => v.saturating_sub(1).to_string(),
            Err(_) => text[..text.len().saturating_sub(1)].to_owned(),
        },
        _ => rng.random::<u64>().to_string(),
    };
    data.splice(start..end, new.into_bytes());
}

fn lines(rng: &mut StdRng, data: &mut Vec<u8>) {
    // Line i is bounds[i]..bounds[i + 1] (each with its '\n').
    let mut bounds = vec![0];
    bounds.extend(
        data.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    if *bounds.last().unwrap_or(&0) != data.len() {
        bounds.push(data.len());
    }
    let n = bounds.len() - 1;
    if n == 0 {
        return;
    }
    let i = rng.random_range(..n);
    let line = data[bounds[i]..bounds[i + 1]].to_vec();
    match rng.random_range(0..3) {
        0 => {
            let at = bounds[rng.random_range(..=n)];
            data.splice(at..at, line);
        }
        1 => {
            data.drain(bounds[i]..bounds[i + 1]);
        }
        _ => {
            let j = rng.random_range(..n);
            if i == j {
                return;
            }
            let (a, b) = (i.min(j), i.max(j));
            let first = data[bounds[a]..bounds[a + 1]].to_vec();
            let second = data[bounds[b]..bounds[b + 1]].to_vec();
            let mut out = data[..bounds[a]].to_vec();
            out.extend_from_slice(&second);
            out.extend_from_slice(&data[bounds[a + 1]..bounds[b]]);
            out.extend_from_slice(&first);
            out.extend_from_slice(&data[bounds[b + 1]..]);
            *data = out;
        }
    }
}
