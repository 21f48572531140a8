//! Just enough DER for structure-aware PKCS#12 mutations: a tree of TLVs (descending into
//! OCTET STRINGs that hold DER, as PKCS#12 nests its contents), its encoding with
//! consistent lengths, and the PKCS#12 MAC recomputed after a mutation so that the parser
//! gets past the MAC check to the bags (RFC 7292 appendix B's key derivation).

use boring::hash::{hash, MessageDigest};
use boring::hmac::Hmac;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Nodes(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub tag: u8,
    pub content: Content,
}

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;

/// One TLV at the start of `data`: (tag, content, rest). Single-byte tags, definite
/// lengths of up to four bytes.
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Every TLV of `data`, which they must fill exactly.
pub fn parse_all(mut data: &[u8]) -> Option<Vec<Node>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (tag, content, rest) = tlv(data)?;
        out.push(parse_node(tag, content));
        data = rest;
    }
    Some(out)
}

fn parse_node(tag: u8, content: &[u8]) -> Node {
    let nested = tag & 0x20 != 0 || (tag == OCTET_STRING && content.first() == Some(&SEQUENCE));
    let content = match nested.then(|| parse_all(content)).flatten() {
        Some(nodes) => Content::Nodes(nodes),
        None => Content::Bytes(content.to_vec()),
    };
    Node { tag, content }
}

/// The tree of a DER document (one TLV filling `data`).
pub fn parse(data: &[u8]) -> Option<Node> {
    let (tag, content, rest) = tlv(data)?;
    rest.is_empty().then(|| parse_node(tag, content))
}

pub fn encode(node: &Node, out: &mut Vec<u8>) {
    let content = match &node.content {
        Content::Bytes(b) => b.clone(),
        Content::Nodes(children) => {
            let mut c = Vec::new();
            for child in children {
                encode(child, &mut c);
            }
            c
        }
    };
    out.push(node.tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(&content);
}

pub fn to_der(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    encode(node, &mut out);
    out
}

impl Node {
    pub fn children(&self) -> &[Node] {
        match &self.content {
            Content::Nodes(n) => n,
            Content::Bytes(_) => &[],
        }
    }

    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Bytes(b) => Some(b),
            Content::Nodes(_) => None,
        }
    }

    /// The encoded content (what a MAC covers).
    pub fn content_der(&self) -> Vec<u8> {
        match &self.content {
            Content::Bytes(b) => b.clone(),
            Content::Nodes(children) => {
                let mut c = Vec::new();
                for child in children {
                    encode(child, &mut c);
                }
                c
            }
        }
    }

    /// The number of nodes in the tree.
    pub fn count(&self) -> usize {
        1 + self.children().iter().map(Node::count).sum::<usize>()
    }

    /// The `i`-th node in depth-first order.
    pub fn nth_mut(&mut self, i: usize) -> Option<&mut Node> {
        fn walk<'a>(n: &'a mut Node, i: &mut usize) -> Option<&'a mut Node> {
            if *i == 0 {
                return Some(n);
            }
            *i -= 1;
            if let Content::Nodes(children) = &mut n.content {
                for c in children {
                    if let Some(found) = walk(c, i) {
                        return Some(found);
                    }
                }
            }
            None
        }
        let mut i = i;
        walk(self, &mut i)
    }

    pub fn nth(&self, i: usize) -> Option<&Node> {
        fn walk<'a>(n: &'a Node, i: &mut usize) -> Option<&'a Node> {
            if *i == 0 {
                return Some(n);
            }
            *i -= 1;
            for c in n.children() {
                if let Some(found) = walk(c, i) {
                    return Some(found);
                }
            }
            None
        }
        let mut i = i;
        walk(self, &mut i)
    }
}

/// The password as PKCS#12 hashes it: UCS-2 big-endian, NUL-terminated (None for a
/// character outside the BMP, which BoringSSL refuses).
pub fn bmp_password(password: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(password.len() * 2 + 2);
    for c in password.chars() {
        let c = u16::try_from(u32::from(c)).ok()?;
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    Some(out)
}

fn block_size(md: MessageDigest) -> usize {
    if md.size() > 32 {
        128
    } else {
        64
    }
}

/// RFC 7292 appendix B.2: `n` bytes of key material of purpose `id` (3: MAC key).
pub fn pkcs12_kdf(
    md: MessageDigest,
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    n: usize,
) -> Option<Vec<u8>> {
    let u = md.size();
    let v = block_size(md);
    let fill = |s: &[u8]| -> Vec<u8> {
        if s.is_empty() {
            return Vec::new();
        }
        let len = v * s.len().div_ceil(v);
        s.iter().copied().cycle().take(len).collect()
    };
    let mut i_block = fill(salt);
    i_block.extend(fill(password));
    let d = vec![id; v];
    let mut out = Vec::with_capacity(n);
    loop {
        let mut input = d.clone();
        input.extend_from_slice(&i_block);
        let mut a = hash(md, &input).ok()?.to_vec();
        for _ in 1..iterations {
            a = hash(md, &a).ok()?.to_vec();
        }
        out.extend_from_slice(&a[..u.min(n - out.len())]);
        if out.len() >= n {
            return Some(out);
        }
        let b: Vec<u8> = a.iter().copied().cycle().take(v).collect();
        for chunk in i_block.chunks_mut(v) {
            // chunk = (chunk + b + 1) mod 2^(8v), big-endian.
            let mut carry = 1u16;
            for k in (0..chunk.len()).rev() {
                let sum = chunk[k] as u16 + b[k] as u16 + carry;
                chunk[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

fn digest_of_oid(oid: &[u8]) -> Option<MessageDigest> {
    Some(match oid {
        [0x2b, 0x0e, 0x03, 0x02, 0x1a] => MessageDigest::sha1(),
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01] => MessageDigest::sha256(),
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02] => MessageDigest::sha384(),
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03] => MessageDigest::sha512(),
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04] => MessageDigest::sha224(),
        _ => return None,
    })
}

/// The most MAC iterations this harness recomputes (the cost of a case).
const MAX_MAC_ITERATIONS: u64 = 4096;

/// Recomputes the MAC of a PFX tree (`SEQUENCE { version, authSafe, macData }`) for
/// `password`; false when the tree does not have that shape.
pub fn fix_mac(pfx: &mut Node, password: &str) -> bool {
    let Some(pass) = bmp_password(password) else {
        return false;
    };
    let children = pfx.children();
    if pfx.tag != SEQUENCE || children.len() != 3 {
        return false;
    }
    // authSafe = ContentInfo { OID data, [0] { OCTET STRING content } }
    let Some(content) = children[1]
        .children()
        .get(1)
        .and_then(|wrapper| wrapper.children().first())
        .filter(|c| c.tag == OCTET_STRING)
        .map(Node::content_der)
    else {
        return false;
    };
    // macData = { DigestInfo { AlgorithmIdentifier { OID, ... }, OCTET STRING mac },
    //             OCTET STRING salt, INTEGER iterations (default 1) }
    let mac_data = children[2].children();
    let (Some(digest_info), Some(salt)) = (mac_data.first(), mac_data.get(1)) else {
        return false;
    };
    let Some(md) = digest_info
        .children()
        .first()
        .and_then(|alg| alg.children().first())
        .filter(|oid| oid.tag == OID)
        .and_then(Node::bytes)
        .and_then(digest_of_oid)
    else {
        return false;
    };
    let Some(salt) = salt.bytes().map(<[u8]>::to_vec) else {
        return false;
    };
    let iterations = match mac_data.get(2) {
        None => 1,
        Some(n) => match n.bytes() {
            Some(b) if n.tag == INTEGER && !b.is_empty() && b.len() <= 8 => {
                b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
            }
            _ => return false,
        },
    };
    if iterations == 0 || iterations > MAX_MAC_ITERATIONS {
        return false;
    }
    let Some(key) = pkcs12_kdf(md, &pass, &salt, 3, iterations as u32, md.size()) else {
        return false;
    };
    let Ok(mut hmac) = Hmac::init(&key, &md) else {
        return false;
    };
    if hmac.update(&content).is_err() {
        return false;
    }
    let Ok(mac) = hmac.finalize() else {
        return false;
    };
    let Content::Nodes(children) = &mut pfx.content else {
        return false;
    };
    let Content::Nodes(mac_data) = &mut children[2].content else {
        return false;
    };
    let Content::Nodes(digest_info) = &mut mac_data[0].content else {
        return false;
    };
    match digest_info.get_mut(1) {
        Some(node) if node.tag == OCTET_STRING => {
            node.content = Content::Bytes(mac);
            true
        }
        _ => false,
    }
}

/// The largest iteration count named anywhere in `data` where a PKCS#12 file names one:
/// an INTEGER right after an OCTET STRING (the salt) in a PBE parameter, PBKDF2 parameter
/// or MAC data. Found by scanning bytes, so that BER and broken files are covered too.
pub fn max_iterations(data: &[u8]) -> u64 {
    let mut max = 0u64;
    for i in 2..data.len() {
        if data[i] != INTEGER {
            continue;
        }
        let Some(&len) = data.get(i + 1) else {
            continue;
        };
        let len = len as usize;
        if !(1..=9).contains(&len) || i + 2 + len > data.len() {
            continue;
        }
        // An OCTET STRING ending right here: short or one-byte long form length.
        let after_salt = (0..=i.saturating_sub(2).min(255)).any(|l| {
            (i >= l + 2 && data[i - l - 2] == OCTET_STRING && data[i - l - 1] as usize == l)
                || (l >= 0x80
                    && i >= l + 3
                    && data[i - l - 3] == OCTET_STRING
                    && data[i - l - 2] == 0x81
                    && data[i - l - 1] as usize == l)
        });
        if after_salt {
            let value = data[i + 2..i + 2 + len].iter().fold(0u64, |acc, &b| {
                acc.saturating_mul(256).saturating_add(b as u64)
            });
            max = max.max(value);
        }
    }
    max
}
