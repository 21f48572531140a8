//! Small helpers of the structured generators.

use rand::rngs::StdRng;
use rand::Rng;

/// One of `items`.
pub fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.random_range(..items.len())]
}

/// True with probability `p`.
pub fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random_bool(p)
}

/// `n` characters drawn from `alphabet`.
pub fn from_alphabet(rng: &mut StdRng, alphabet: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| alphabet[rng.random_range(..alphabet.len())])
        .collect()
}

pub const TOKEN_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
pub const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

/// A byte string that is mostly printable ASCII, sometimes with the bytes parsers trip on.
pub fn text_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => {
                const ODD: &[u8] = b"\x00\r\n\t\x7f\x80\xff\"";
                ODD[rng.random_range(..ODD.len())]
            }
            _ => rng.random_range(0x20..0x7f),
        })
        .collect()
}

/// A short string of Unicode text (ASCII mostly, some multi-byte characters).
pub fn text_string(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| match rng.random_range(0..16) {
            0 => {
                const ODD: &[char] = &[
                    'é', '€', '😀', 'Ω', '\u{202e}', '\u{0}', '\u{fffd}', '"', '\\',
                ];
                ODD[rng.random_range(..ODD.len())]
            }
            _ => char::from(rng.random_range(0x20u8..0x7f)),
        })
        .collect()
}
