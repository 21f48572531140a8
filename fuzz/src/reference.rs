//! An independent chunked-body decoder (RFC 9112 §7.1) with the gateway's limits: the
//! reference `ChunkedScanner` is checked against. It reads the whole body at once, top
//! down, where the scanner is a byte-at-a-time state machine fed in pieces.
//!
//! The grammar the gateway accepts:
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ext] CRLF chunk-data CRLF
//! chunk-size   = 1*15HEXDIG                     ; more digits: refused (even leading zeros)
//! ext          = *( SP / HTAB ) [ ";" ext-text ] ; ext-text: no control byte but HTAB,
//!                                               ; at most 4095 bytes before its CR
//! last-chunk   = 1*15("0") [ext] CRLF
//! trailer-section = *( trailer-line CRLF )      ; any bytes but CR; together at most
//!                                               ; MAX_HEAD_BYTES (the first byte of each
//!                                               ; line uncounted, its CR counted)
//! ```

/// The longest extension, counted from after the `;` through its CR.
pub const MAX_EXTENSION: usize = 4096;
/// The trailer bytes allowed in total.
pub const MAX_TRAILER: usize = gateway::dataplane::http::MAX_HEAD_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The body is complete: it is the first `end` bytes, with `data_len` bytes of data.
    Done { end: usize, data_len: u64 },
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// Not a valid chunked body.
    Invalid,
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Decodes the chunked body at the start of `input`.
pub fn decode(input: &[u8]) -> Decoded {
    decode_detailed(input).0
}

/// [`decode`], and where the first chunk-size line ends (after its LF) when it is valid
/// and whole: the gateway checks that line before it forwards a request head.
pub fn decode_detailed(input: &[u8]) -> (Decoded, Option<usize>) {
    let mut first_line_end = None;
    let decoded = decode_into(input, &mut first_line_end);
    (decoded, first_line_end)
}

fn decode_into(input: &[u8], first_line_end: &mut Option<usize>) -> Decoded {
    let len = input.len();
    let mut p = 0usize;
    let mut data_len = 0u64;
    // Reads the byte at `p` or says the input ended.
    macro_rules! byte {
        () => {
            match input.get(p) {
                Some(&b) => b,
                None => return Decoded::Incomplete,
            }
        };
    }
    macro_rules! expect {
        ($b:expr) => {
            if byte!() != $b {
                return Decoded::Invalid;
            }
            p += 1;
        };
    }
    loop {
        let start = p;
        while p < len && input[p].is_ascii_hexdigit() {
            p += 1;
            if p - start > 15 {
                return Decoded::Invalid;
            }
        }
        // The input may end within the size (more digits may come)...
        let _ = byte!();
        // ...but a size needs a digit.
        if p == start {
            return Decoded::Invalid;
        }
        let digits = std::str::from_utf8(&input[start..p]).unwrap_or("0");
        let size = u64::from_str_radix(digits, 16).unwrap_or(0);
        while matches!(byte!(), b' ' | b'\t') {
            p += 1;
        }
        match byte!() {
            b';' => {
                p += 1;
                let mut counted = 0usize;
                loop {
                    let b = byte!();
                    if is_ctl(b) && b != b'\r' {
                        return Decoded::Invalid;
                    }
                    counted += 1;
                    if counted > MAX_EXTENSION {
                        return Decoded::Invalid;
                    }
                    p += 1;
                    if b == b'\r' {
                        break;
                    }
                }
            }
            b'\r' => p += 1,
            _ => return Decoded::Invalid,
        }
        expect!(b'\n');
        if first_line_end.is_none() {
            *first_line_end = Some(p);
        }
        if size == 0 {
            break;
        }
        if ((len - p) as u64) < size {
            return Decoded::Incomplete;
        }
        p += size as usize;
        data_len += size;
        expect!(b'\r');
        expect!(b'\n');
    }
    let mut trailer = 0usize;
    loop {
        if byte!() == b'\r' {
            p += 1;
            expect!(b'\n');
            return Decoded::Done { end: p, data_len };
        }
        p += 1;
        loop {
            let b = byte!();
            trailer += 1;
            if trailer > MAX_TRAILER {
                return Decoded::Invalid;
            }
            p += 1;
            if b == b'\r' {
                break;
            }
        }
        expect!(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_grammar() {
        let done = |end, data_len| Decoded::Done { end, data_len };
        assert_eq!(decode(b"0\r\n\r\n"), done(5, 0));
        assert_eq!(
            decode(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET"),
            done(32, 11)
        );
        assert_eq!(decode(b"5 \t;e=1\r\nhello\r\n0\r\n\r\n"), done(21, 5));
        assert_eq!(decode(b"0\r\nA: b\r\n\r\n"), done(11, 0));
        assert_eq!(decode(b"5\r\nhel"), Decoded::Incomplete);
        assert_eq!(decode(b""), Decoded::Incomplete);
        assert_eq!(decode(b"fffffffffffffff\r\n"), Decoded::Incomplete);
        for bad in [
            &b"\r\n"[..],
            b"ffffffffffffffff\r\n",
            b"0000000000000000\r\n",
            b"5\nhello",
            b"5 x\r\n",
            b"5;a\x00b\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5\r\nhelloXX",
            b"0\r\n\r\r",
        ] {
            assert_eq!(decode(bad), Decoded::Invalid, "{bad:?}");
        }
        let ext = |n: usize| format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(n));
        assert!(matches!(
            decode(ext(MAX_EXTENSION - 1).as_bytes()),
            Decoded::Done { .. }
        ));
        assert_eq!(decode(ext(MAX_EXTENSION).as_bytes()), Decoded::Invalid);
    }
}
