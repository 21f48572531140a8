//! `chunked`: `gateway::dataplane::http::ChunkedScanner` against the reference decoder of
//! this crate (`crate::reference`): for every input, fed whole, split at every point (short
//! inputs) or at random points, byte by byte and in random pieces, the scanner must accept
//! or refuse as the reference does, end the body at the same offset and count the same
//! data bytes; while the body is not done, every piece is consumed whole; once done, a
//! further `scan` consumes nothing; after each piece, `past_first_size_line` says whether
//! the first chunk-size line has been read whole (what the proxy waits for before it
//! forwards a request head).

use gateway::dataplane::http::ChunkedScanner;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::{hash, Outcome, Target};
use crate::gen::{chance, from_alphabet, pick, text_bytes, TOKEN_CHARS};
use crate::reference::{decode, decode_detailed, Decoded, MAX_EXTENSION};

const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"0\r\n\r\n",
    b";ext=1",
    b"; a=\"b\"",
    b" \t",
    b"fffffffffffffff",
    b"ffffffffffffffff",
    b"000000000000000",
    b"Trailer: x\r\n",
    b"\n",
    b"\r",
    b"\x00",
];

/// Feeds `input` to a new scanner in pieces ending at `cuts` (increasing), then the rest;
/// `first_line_end` is where the reference says the first chunk-size line ends.
fn scan_pieces(
    input: &[u8],
    cuts: &[usize],
    first_line_end: Option<usize>,
) -> Result<Decoded, String> {
    let mut scanner = ChunkedScanner::default();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        let to = to.clamp(from, input.len());
        let piece = &input[from..to];
        match scanner.scan(piece) {
            Err(_) => return Ok(Decoded::Invalid),
            Ok(n) if scanner.is_done() => {
                if n > piece.len() {
                    return Err(format!(
                        "consumed: {n} bytes of a {}-byte piece",
                        piece.len()
                    ));
                }
                if scanner.scan(b"more") != Ok(0) {
                    return Err("after-done: a done scanner took more bytes".into());
                }
                return Ok(Decoded::Done {
                    end: from + n,
                    data_len: scanner.data_len(),
                });
            }
            Ok(n) if n != piece.len() => {
                return Err(format!(
                    "consumed: {n} bytes of a {}-byte piece before the end",
                    piece.len()
                ))
            }
            Ok(_) => {
                let past = first_line_end.is_some_and(|end| to >= end);
                if scanner.past_first_size_line() != past {
                    return Err(format!(
                        "first-size-line: after {to} bytes the scanner says {}, the reference {past} (the line ends at {first_line_end:?})",
                        scanner.past_first_size_line()
                    ));
                }
            }
        }
        from = to;
    }
    Ok(Decoded::Incomplete)
}

#[derive(Default)]
pub struct Chunked;

impl Chunked {
    fn compare(
        input: &[u8],
        (expected, first_line_end): (Decoded, Option<usize>),
        cuts: &[usize],
    ) -> Result<(), String> {
        let got = scan_pieces(input, cuts, first_line_end)?;
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "reference: pieces ending at {cuts:?}: the scanner says {got:?}, the reference {expected:?}"
            ))
        }
    }
}

fn size_line(rng: &mut StdRng, size: u64, out: &mut Vec<u8>) {
    let mut hex = format!("{size:x}");
    if chance(rng, 0.3) {
        hex = hex.to_ascii_uppercase();
    }
    if chance(rng, 0.1) {
        let zeros = rng.random_range(1..18);
        hex = format!("{}{hex}", "0".repeat(zeros));
    }
    out.extend_from_slice(hex.as_bytes());
    match rng.random_range(0..12) {
        0 => out.extend_from_slice(b";name=value"),
        1 => out.extend_from_slice(b" ;a=\"b c\";d"),
        2 => out.extend_from_slice(b"\t "),
        3 => {
            out.push(b';');
            let n = MAX_EXTENSION - 3 + rng.random_range(0..6);
            out.extend(std::iter::repeat_n(b'e', n));
        }
        4 => {
            out.push(b';');
            out.extend(text_bytes(rng, 12));
        }
        _ => {}
    }
    out.extend_from_slice(match rng.random_range(0..30) {
        0 => b"\n",
        1 => b"\r",
        _ => b"\r\n",
    });
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let size: u64 = match rng.random_range(0..20) {
            0 => rng.random_range(0..1 << 60),
            1 => rng.random_range(256..5000),
            _ => rng.random_range(1..48),
        };
        size_line(rng, size, &mut out);
        let n = match rng.random_range(0..15) {
            0 => size.saturating_sub(1),
            1 => size + 1,
            _ => size,
        };
        let n = n.min(8192) as usize;
        let fill: u8 = rng.random();
        out.extend(std::iter::repeat_n(fill, n));
        out.extend_from_slice(match rng.random_range(0..20) {
            0 => b"\n",
            1 => b"",
            _ => b"\r\n",
        });
    }
    size_line(rng, 0, &mut out);
    for _ in 0..rng.random_range(0..3) {
        let n = rng.random_range(1..12);
        out.extend(from_alphabet(rng, TOKEN_CHARS, n));
        out.extend_from_slice(b": ");
        if chance(rng, 0.02) {
            out.extend(std::iter::repeat_n(b'v', MAX_EXTENSION * 4 - 8));
        } else {
            out.extend(text_bytes(rng, 10));
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(pick(rng, &[&b"\r\n"[..], b"\r\n", b"\r\n", b"\n", b""]));
    if chance(rng, 0.5) {
        out.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    }
    out
}

impl Target for Chunked {
    fn name(&self) -> &'static str {
        "chunked"
    }

    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        body(rng)
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let expected = decode_detailed(input);
        let len = input.len();
        Self::compare(input, expected, &[])?;
        // The cut points are a function of the input, so that a failure replays.
        let mut rng = StdRng::seed_from_u64(hash(input));
        if len <= 64 {
            for cut in 0..=len {
                Self::compare(input, expected, &[cut])?;
            }
        } else {
            for _ in 0..16 {
                Self::compare(input, expected, &[rng.random_range(0..=len)])?;
            }
        }
        if len <= 2048 {
            let every: Vec<usize> = (1..len).collect();
            Self::compare(input, expected, &every)?;
        }
        for _ in 0..4 {
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < len {
                at += rng.random_range(1..=24.min(len));
                cuts.push(at.min(len));
            }
            Self::compare(input, expected, &cuts)?;
        }
        Ok(match expected.0 {
            Decoded::Done { end, data_len } => Outcome::with(
                "done",
                (
                    (data_len.max(1)).ilog2(),
                    end == len,
                    input.iter().filter(|&&b| b == b';').count().min(3),
                ),
            ),
            Decoded::Incomplete => Outcome::with("incomplete", len.max(1).ilog2()),
            // Where the reference stopped tells refusals apart: the longest valid prefix.
            Decoded::Invalid => {
                // Prefixes are valid up to some length, then invalid: search it.
                let (mut lo, mut hi) = (0, len);
                while lo + 1 < hi {
                    let mid = (lo + hi) / 2;
                    if decode(&input[..mid]) == Decoded::Invalid {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                let valid = lo;
                Outcome::with("invalid", input.get(valid).copied())
            }
        })
    }

    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }

    fn max_len(&self) -> usize {
        24 * 1024
    }
}
