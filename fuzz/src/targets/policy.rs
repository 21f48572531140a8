//! `policy`: the API policy XML parser (`gateway::model::policy::parse_policy`).
//!
//! Properties, beyond "no panic": an accepted policy keeps its XML exactly as given, and
//! what the gateway acts on (the `<authentication-certificate>` reference) re-serialised
//! in a canonical document parses again to the same reference (the model has no
//! serialiser: the XML is stored as given); a refusal is `InvalidPolicy` with a line and a
//! column inside the document that its message names.

use gateway::model::policy::parse_policy;
use gateway::model::{CertificateRef, Policy};
use rand::rngs::StdRng;
use rand::Rng;

use crate::engine::{Outcome, Target};
use crate::gen::{chance, from_alphabet, pick, text_string, ID_CHARS};

const DICTIONARY: &[&[u8]] = &[
    b"<policies>",
    b"</policies>",
    b"<inbound>",
    b"</inbound>",
    b"<backend>",
    b"<outbound>",
    b"<on-error>",
    b"<base />",
    b"<authentication-certificate certificate-id=\"c1\" />",
    b"thumbprint=\"",
    b"certificate-id='",
    b"<!-- -->",
    b"<![CDATA[x]]>",
    b"<?pi x?>",
    b"<!DOCTYPE p>",
    b"&amp;",
    b"&#46;",
    b"&#x2e;",
    b"&bogus;",
    b"&#0;",
    b"\"",
    b"/>",
    b"</",
    b"xmlns:a=\"u\"",
    b"a:",
];

const SECTIONS: &[&str] = &["inbound", "backend", "outbound", "on-error"];

fn attr_value(rng: &mut StdRng, thumbprint: bool) -> String {
    if thumbprint {
        match rng.random_range(0..8) {
            0 => "ab".repeat(19),
            1 => "zz".repeat(20),
            2 => format!("{}&#65;", "AB".repeat(19)),
            3 => "AB".repeat(21),
            _ => {
                let bytes: Vec<u8> = (0..20).map(|_| rng.random()).collect();
                if chance(rng, 0.5) {
                    hex::encode(bytes)
                } else {
                    hex::encode_upper(bytes)
                }
            }
        }
    } else {
        match rng.random_range(0..12) {
            0 => String::new(),
            1 => "a b".into(),
            2 => "a&#46;b".into(),
            3 => "&amp;x".into(),
            4 => "&bogus;".into(),
            5 => "x".repeat(81),
            6 => text_string(rng, 10),
            7 => "c&lt;1".into(),
            _ => {
                let n = rng.random_range(1..20);
                String::from_utf8_lossy(&from_alphabet(rng, ID_CHARS, n)).into_owned()
            }
        }
    }
}

fn quote(rng: &mut StdRng, value: &str) -> String {
    match rng.random_range(0..12) {
        0 => format!("'{value}'"),
        1 => value.to_owned(),
        2 => format!("\"{value}"),
        _ => format!("\"{value}\""),
    }
}

fn certificate_element(rng: &mut StdRng) -> String {
    let mut attrs = String::new();
    let n = match rng.random_range(0..10) {
        0 => 0,
        1 => 2,
        _ => 1,
    };
    for _ in 0..n {
        let key = pick(
            rng,
            &[
                "certificate-id",
                "certificate-id",
                "thumbprint",
                "password",
                "Certificate-Id",
                "a:certificate-id",
            ],
        );
        let value = attr_value(rng, key == "thumbprint");
        attrs.push_str(&format!(
            "{}{key}{}={}",
            pick(rng, &[" ", " ", "\n  ", "\t", ""]),
            pick(rng, &["", "", " "]),
            quote(rng, &value)
        ));
    }
    let close = pick(
        rng,
        &[" />", "/>", "></authentication-certificate>", ">", " / >"],
    );
    format!("<authentication-certificate{attrs}{close}")
}

fn child(rng: &mut StdRng, depth: usize) -> String {
    match rng.random_range(0..14) {
        0..=4 => pick(rng, &["<base />", "<base/>", "<base></base>", "<base >"]).to_owned(),
        5..=7 => certificate_element(rng),
        8 => "<!-- a comment -->".into(),
        9 => pick(rng, &["text", "<![CDATA[x]]>", "&amp;", "\n   \t"]).to_owned(),
        10 => pick(
            rng,
            &[
                "<rate-limit calls=\"1\" />",
                "<set-header name=\"a\"/>",
                "<x:base />",
            ],
        )
        .to_owned(),
        11 if depth < 4 => {
            let inner = child(rng, depth + 1);
            format!("<base>{inner}</base>")
        }
        12 => "<?pi data?>".into(),
        _ => String::new(),
    }
}

/// A policy that follows the supported grammar (whitespace, comments, section order and
/// the certificate reference vary).
fn valid_document(rng: &mut StdRng) -> String {
    let ws = |rng: &mut StdRng| pick(rng, &["", " ", "\n  ", "\r\n\t", "<!-- c -->"]).to_owned();
    let mut sections: Vec<&str> = SECTIONS.to_vec();
    for _ in 0..4 {
        let i = rng.random_range(..sections.len());
        let j = rng.random_range(..sections.len());
        sections.swap(i, j);
    }
    sections.truncate(rng.random_range(0..=4));
    let mut out = String::new();
    if chance(rng, 0.3) {
        out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    }
    out.push_str("<policies>");
    for s in sections {
        out.push_str(&ws(rng));
        out.push_str(&format!("<{s}>"));
        if chance(rng, 0.7) {
            out.push_str(&ws(rng));
            out.push_str(pick(rng, &["<base />", "<base/>", "<base></base>"]));
        }
        if s == "inbound" && chance(rng, 0.8) {
            out.push_str(&ws(rng));
            let (key, value) = if chance(rng, 0.5) {
                let n = rng.random_range(1..=80);
                let id = String::from_utf8_lossy(&from_alphabet(rng, ID_CHARS, n)).into_owned();
                ("certificate-id", id.replace('.', "&#46;"))
            } else {
                let bytes: Vec<u8> = (0..20).map(|_| rng.random()).collect();
                ("thumbprint", hex::encode(bytes))
            };
            let q = if chance(rng, 0.5) { '"' } else { '\'' };
            out.push_str(&format!(
                "<authentication-certificate {key}={q}{value}{q}{}",
                pick(rng, &[" />", "/>", "></authentication-certificate>"])
            ));
        }
        out.push_str(&ws(rng));
        out.push_str(&format!("</{s}>"));
    }
    out.push_str(&ws(rng));
    out.push_str("</policies>");
    out.push_str(pick(rng, &["", "\n", "<!-- end -->"]));
    out
}

pub(crate) fn document(rng: &mut StdRng) -> String {
    if chance(rng, 0.3) {
        return valid_document(rng);
    }
    let mut out = String::new();
    if chance(rng, 0.1) {
        out.push('\u{feff}');
    }
    if chance(rng, 0.3) {
        out.push_str(pick(
            rng,
            &[
                "<?xml version=\"1.0\"?>\n",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
                "<?xml version=\"1.1\" standalone=\"yes\"?>\n",
                "<?xml?>",
            ],
        ));
    }
    if chance(rng, 0.05) {
        out.push_str(pick(
            rng,
            &["<!DOCTYPE policies>", "<!DOCTYPE x [<!ENTITY a \"b\">]>"],
        ));
    }
    if chance(rng, 0.1) {
        out.push_str("<!-- before -->\n");
    }
    let root = if chance(rng, 0.9) {
        "policies"
    } else {
        pick(rng, &["policy", "Policies", "p:policies", ""])
    };
    let root_attrs = if chance(rng, 0.05) { " a=\"1\"" } else { "" };
    if chance(rng, 0.05) {
        out.push_str(&format!("<{root}{root_attrs}/>"));
        return out;
    }
    out.push_str(&format!("<{root}{root_attrs}>"));
    let mut sections: Vec<&str> = SECTIONS.to_vec();
    for _ in 0..rng.random_range(0..4) {
        let i = rng.random_range(..sections.len());
        let j = rng.random_range(..sections.len());
        sections.swap(i, j);
    }
    let keep = rng.random_range(0..=sections.len());
    sections.truncate(keep);
    if chance(rng, 0.05) {
        sections.push(pick(rng, &["inbound", "outbound", "unknown"]));
    }
    for s in sections {
        out.push_str(pick(rng, &["\n  ", "", " ", "\r\n\t"]));
        if chance(rng, 0.1) {
            out.push_str(&format!("<{s}/>"));
            continue;
        }
        out.push_str(&format!("<{s}>"));
        for _ in 0..rng.random_range(0..4) {
            out.push_str(pick(rng, &["", "\n    ", " "]));
            out.push_str(&child(rng, 0));
        }
        let end = if chance(rng, 0.03) {
            pick(rng, &["inbound", "backend", "x"])
        } else {
            s
        };
        out.push_str(&format!("</{end}>"));
    }
    out.push_str(pick(rng, &["\n", ""]));
    if chance(rng, 0.97) {
        out.push_str(&format!("</{root}>"));
    }
    if chance(rng, 0.05) {
        out.push_str(pick(
            rng,
            &["<policies/>", "trailing", "<!-- after -->", "\n\n"],
        ));
    }
    out
}

/// The one thing a policy means to the gateway, in a document of its own.
fn canonical(policy: &Policy) -> String {
    let certificate = match &policy.authentication_certificate {
        None => String::new(),
        Some(CertificateRef::Id(id)) => {
            format!("<authentication-certificate certificate-id=\"{id}\" />")
        }
        Some(CertificateRef::Thumbprint(t)) => {
            format!("<authentication-certificate thumbprint=\"{t}\" />")
        }
    };
    format!(
        "<policies><inbound><base />{certificate}</inbound><backend><base /></backend>\
         <outbound><base /></outbound><on-error><base /></on-error></policies>"
    )
}

/// What kind of refusal a message is: its words up to the first name, quote, number or
/// parenthesis (and for malformed XML, the first words of quick-xml's reason).
fn template(message: &str) -> String {
    let what = message.split_once(": ").map_or(message, |(_, w)| w);
    let words = |s: &str| -> String {
        s.chars()
            .take_while(|c| !matches!(c, '<' | '"' | '\'' | '(' | ':' | '`' | '0'..='9'))
            .take(48)
            .collect()
    };
    let mut out = words(what);
    if out.starts_with("malformed") {
        if let Some((_, reason)) = what.split_once('(') {
            out.push('|');
            out.extend(
                reason
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic() || *c == ' ')
                    .take(32),
            );
        }
    }
    out
}

#[derive(Default)]
pub struct PolicyXml;

impl Target for PolicyXml {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        document(rng).into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        // The admin API refuses a body that is not UTF-8 before parsing it.
        let text = String::from_utf8_lossy(input);
        match parse_policy(&text) {
            Ok(policy) => {
                if policy.xml != text {
                    return Err("keeps-xml: the stored XML differs from the given".into());
                }
                let again = canonical(&policy);
                match parse_policy(&again) {
                    Ok(p) if p.authentication_certificate == policy.authentication_certificate => {}
                    other => {
                        return Err(format!(
                            "round-trip: {again:?} parses as {other:?}, not as {:?}",
                            policy.authentication_certificate
                        ))
                    }
                }
                Ok(Outcome::new(match policy.authentication_certificate {
                    None => "ok:none",
                    Some(CertificateRef::Id(_)) => "ok:certificate-id",
                    Some(CertificateRef::Thumbprint(_)) => "ok:thumbprint",
                }))
            }
            Err(e) => {
                if e.code() != "InvalidPolicy" || e.to_string() != e.message {
                    return Err(format!("error-code: {} / {:?}", e.code(), e.message));
                }
                let lines: Vec<&str> = text.split('\n').collect();
                let in_document = e.line >= 1
                    && e.line <= lines.len()
                    && e.column >= 1
                    && e.column <= lines[e.line - 1].chars().count() + 1;
                if !in_document {
                    return Err(format!(
                        "error-position: line {} column {} outside the document ({} lines)",
                        e.line,
                        e.column,
                        lines.len()
                    ));
                }
                if !e
                    .message
                    .contains(&format!("line {}, column {}", e.line, e.column))
                {
                    return Err(format!(
                        "error-message: {:?} names another place",
                        e.message
                    ));
                }
                Ok(Outcome::with(
                    "err",
                    (template(&e.message), e.line.min(8), e.column.min(8)),
                ))
            }
        }
    }

    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }
}
