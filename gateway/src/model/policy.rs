//! API policies: the subset of Azure API Management's policy XML that edgegw supports
//! (contract §3), parsed with quick-xml into a [`Policy`].
//!
//! Supported: root `<policies>`; sections `inbound`, `backend`, `outbound`, `on-error`
//! (each optional, at most once); `<base />` in any section; one
//! `<authentication-certificate certificate-id="..."/>` or `thumbprint="..."` in `inbound`;
//! one `<validate-client-certificate>` in `inbound`, with an optional `<identities>` of
//! `<identity />` elements (attributes: `client_rule`).
//! Anything else is refused with a message naming the element (or attribute) and where it
//! is; malformed XML is refused with the line and column of the fault.

use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::client_rule::{self, ClientCertificateRule};
use super::{CertificateRef, Policy, ResourceId, Thumbprint};

/// The policy returned for an API that has none: every section with just `<base />`.
pub const EMPTY_POLICY: &str = "<policies>\n  <inbound>\n    <base />\n  </inbound>\n  \
<backend>\n    <base />\n  </backend>\n  <outbound>\n    <base />\n  </outbound>\n  \
<on-error>\n    <base />\n  </on-error>\n</policies>\n";

/// A refused policy (contract code `InvalidPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// One sentence for a person, naming the line and column and what is wrong.
    pub message: String,
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
}

impl PolicyError {
    /// The contract error code.
    pub fn code(&self) -> &'static str {
        "InvalidPolicy"
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on-error"];

/// Parses a policy document. The XML is kept as given in [`Policy::xml`].
pub fn parse_policy(xml: &str) -> Result<Policy, PolicyError> {
    let mut reader = Reader::from_str(xml);
    // Whitespace is checked here (so every event's start offset is exact); end names are
    // checked by quick-xml.
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let err_at = |pos: u64, what: String| {
        let (line, column) = line_column(xml, pos);
        PolicyError {
            message: format!(
                "The policy XML is not valid at line {line}, column {column}: {what}."
            ),
            line,
            column,
        }
    };

    // Open elements, outermost first.
    let mut stack: Vec<String> = Vec::new();
    let mut seen_root = false;
    let mut seen_sections: Vec<String> = Vec::new();
    let mut certificate: Option<CertificateRef> = None;
    let mut client_rule: Option<ClientCertificateRule> = None;
    let mut seen_identities = false;

    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                return Err(err_at(
                    reader.error_position(),
                    format!("malformed XML ({e})"),
                ));
            }
        };
        match event {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) => {}
            Event::PI(_) => {
                return Err(err_at(
                    start,
                    "processing instructions are not supported".into(),
                ))
            }
            Event::DocType(_) => return Err(err_at(start, "a DOCTYPE is not allowed".into())),
            Event::Text(t) => {
                if !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(err_at(start, text_error(&stack)));
                }
            }
            Event::CData(_) => return Err(err_at(start, text_error(&stack))),
            Event::End(_) => {
                stack.pop();
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match stack.len() {
                    0 => {
                        if seen_root {
                            return Err(err_at(
                                start,
                                format!("element <{name}> follows the root element"),
                            ));
                        }
                        if name != "policies" {
                            return Err(err_at(
                                start,
                                format!("the root element must be <policies>, not <{name}>"),
                            ));
                        }
                        seen_root = true;
                        no_attributes(e, &name).map_err(|m| err_at(start, m))?;
                    }
                    1 => {
                        if !SECTIONS.contains(&name.as_str()) {
                            return Err(err_at(
                                start,
                                format!("element <{name}> is not supported in <policies> (supported: <inbound>, <backend>, <outbound>, <on-error>)"),
                            ));
                        }
                        if seen_sections.contains(&name) {
                            return Err(err_at(start, format!("section <{name}> appears twice")));
                        }
                        seen_sections.push(name.clone());
                        no_attributes(e, &name).map_err(|m| err_at(start, m))?;
                    }
                    2 => {
                        // Index 1 exists: this arm runs only when the stack holds two elements.
                        let section = stack[1].as_str();
                        match name.as_str() {
                            "base" => no_attributes(e, &name).map_err(|m| err_at(start, m))?,
                            "authentication-certificate" if section == "inbound" => {
                                if certificate.is_some() {
                                    return Err(err_at(
                                        start,
                                        "<authentication-certificate> appears twice".into(),
                                    ));
                                }
                                certificate = Some(
                                    authentication_certificate(e).map_err(|m| err_at(start, m))?,
                                );
                            }
                            "validate-client-certificate" if section == "inbound" => {
                                if client_rule.is_some() {
                                    return Err(err_at(
                                        start,
                                        "<validate-client-certificate> appears twice".into(),
                                    ));
                                }
                                client_rule =
                                    Some(client_rule::read_rule(e).map_err(|m| err_at(start, m))?);
                            }
                            "authentication-certificate" | "validate-client-certificate" => {
                                return Err(err_at(
                                    start,
                                    format!("<{name}> is only supported in <inbound>, not in <{section}>"),
                                ));
                            }
                            _ => {
                                return Err(err_at(
                                    start,
                                    format!("element <{name}> is not supported (in <{section}>, only <base /> and, in <inbound>, <authentication-certificate> and <validate-client-certificate> are)"),
                                ));
                            }
                        }
                    }
                    3 if stack[2] == "validate-client-certificate" => {
                        if name != "identities" {
                            return Err(err_at(
                                start,
                                format!("element <{name}> is not supported inside <validate-client-certificate> (only <identities> is)"),
                            ));
                        }
                        if seen_identities {
                            return Err(err_at(start, "<identities> appears twice".into()));
                        }
                        seen_identities = true;
                        no_attributes(e, &name).map_err(|m| err_at(start, m))?;
                    }
                    4 if stack[3] == "identities" => {
                        if name != "identity" || !is_empty {
                            return Err(err_at(
                                start,
                                format!("<identities> holds only empty <identity /> elements, not <{name}>"),
                            ));
                        }
                        let identity =
                            client_rule::read_identity(e).map_err(|m| err_at(start, m))?;
                        // The element at depth 2 was read into `client_rule` when it opened.
                        if let Some(rule) = client_rule.as_mut() {
                            rule.identities.push(identity);
                        }
                    }
                    _ => {
                        let parent = stack.last().map(String::as_str).unwrap_or_default();
                        return Err(err_at(
                            start,
                            format!("element <{name}> is not supported inside <{parent}>"),
                        ));
                    }
                }
                if !is_empty {
                    stack.push(name);
                }
            }
        }
    }
    let end = reader.buffer_position();
    if let Some(open) = stack.last() {
        return Err(err_at(
            end,
            format!("the document ends before <{open}> is closed"),
        ));
    }
    if !seen_root {
        return Err(err_at(end, "the document has no <policies> element".into()));
    }
    Ok(Policy {
        xml: xml.to_owned(),
        authentication_certificate: certificate,
        client_certificate: client_rule,
    })
}

fn text_error(stack: &[String]) -> String {
    match stack.last() {
        Some(parent) => format!("text is not allowed inside <{parent}>"),
        None => "text is not allowed outside the root element".to_owned(),
    }
}

fn no_attributes(e: &BytesStart<'_>, element: &str) -> Result<(), String> {
    match e.attributes().next() {
        None => Ok(()),
        Some(Err(err)) => Err(format!("malformed attribute on <{element}> ({err})")),
        Some(Ok(attr)) => {
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            Err(format!("attribute '{key}' is not supported on <{element}>"))
        }
    }
}

/// The attributes of `e` as (name, unescaped value), in document order; a malformed one is
/// an error naming `element`.
pub(super) fn attributes(
    e: &BytesStart<'_>,
    element: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("malformed attribute on <{element}> ({err})"))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map_err(|err| format!("attribute '{key}' on <{element}> is malformed ({err})"))?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn authentication_certificate(e: &BytesStart<'_>) -> Result<CertificateRef, String> {
    const ELEMENT: &str = "authentication-certificate";
    let mut found: Option<CertificateRef> = None;
    for (key, value) in attributes(e, ELEMENT)? {
        let parsed = match key.as_str() {
            "certificate-id" => CertificateRef::Id(ResourceId::parse(&value).map_err(|_| {
                format!("certificate-id \"{value}\" is not a valid id (1 to 80 characters of A-Z a-z 0-9 . _ -)")
            })?),
            "thumbprint" => CertificateRef::Thumbprint(Thumbprint::parse(&value).ok_or_else(|| {
                format!("thumbprint \"{value}\" is not 40 hexadecimal characters")
            })?),
            other => {
                return Err(format!(
                    "attribute '{other}' is not supported on <{ELEMENT}> (use certificate-id or thumbprint)"
                ))
            }
        };
        if found.is_some() {
            return Err(format!(
                "<{ELEMENT}> takes exactly one of certificate-id and thumbprint"
            ));
        }
        found = Some(parsed);
    }
    found.ok_or_else(|| format!("<{ELEMENT}> needs a certificate-id or a thumbprint attribute"))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, pos: u64) -> (usize, usize) {
    let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(text.len());
    let before = &text.as_bytes()[..pos];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count();
    (line, column)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FULL: &str = r#"<policies>
  <inbound><base /><authentication-certificate certificate-id="client-1" /></inbound>
  <backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error>
</policies>"#;

    #[test]
    fn accepts_the_contract_example_and_keeps_xml() {
        let p = parse_policy(FULL).unwrap();
        assert_eq!(p.xml, FULL);
        assert_eq!(
            p.authentication_certificate,
            Some(CertificateRef::Id(ResourceId::parse("client-1").unwrap()))
        );
        let p = parse_policy(EMPTY_POLICY).unwrap();
        assert_eq!(p.authentication_certificate, None);
        let t = "ab".repeat(20);
        let xml = format!(
            "<?xml version=\"1.0\"?>\n<!-- c --><policies><inbound><authentication-certificate thumbprint='{t}'/></inbound></policies>"
        );
        let p = parse_policy(&xml).unwrap();
        assert_eq!(
            p.authentication_certificate,
            Some(CertificateRef::Thumbprint(Thumbprint([0xab; 20])))
        );
        for ok in [
            "<policies/>",
            "<policies></policies>",
            "<policies><inbound></inbound></policies>",
            "<policies><backend><base></base></backend></policies>\n",
        ] {
            assert!(parse_policy(ok).is_ok(), "{ok}");
        }
    }

    fn err(xml: &str) -> PolicyError {
        let e = parse_policy(xml).unwrap_err();
        assert_eq!(e.code(), "InvalidPolicy");
        e
    }

    #[test]
    fn unsupported_elements_are_named() {
        let e = err(
            "<policies>\n  <inbound>\n    <rate-limit calls=\"1\" />\n  </inbound>\n</policies>",
        );
        assert!(e.message.contains("<rate-limit>"), "{}", e.message);
        assert_eq!((e.line, e.column), (3, 5));
        assert!(e.message.contains("line 3, column 5"), "{}", e.message);
        let e = err("<policies><foo/></policies>");
        assert!(e.message.contains("<foo>"));
        let e = err("<policy/>");
        assert!(e.message.contains("<policy>"));
        let e = err("<policies><inbound/><inbound/></policies>");
        assert!(e.message.contains("twice"));
        let e = err("<policies><backend><authentication-certificate certificate-id=\"a\"/></backend></policies>");
        assert!(
            e.message.contains("only supported in <inbound>"),
            "{}",
            e.message
        );
        let e = err("<policies><inbound><base><x/></base></inbound></policies>");
        assert!(e.message.contains("<x>"));
        let e = err("<policies>hello</policies>");
        assert!(e.message.contains("text"));
        let e = err("<policies/><policies/>");
        assert!(e.message.contains("follows the root"));
        let e = err("<policies><inbound a=\"1\"/></policies>");
        assert!(e.message.contains("'a'"));
        let e = err("<!DOCTYPE x [<!ENTITY a \"b\">]><policies/>");
        assert!(e.message.contains("DOCTYPE"));
    }

    #[test]
    fn authentication_certificate_rules() {
        let wrap = |inner: &str| format!("<policies><inbound>{inner}</inbound></policies>");
        let t = "AB".repeat(20);
        for bad in [
            "<authentication-certificate/>".to_owned(),
            format!("<authentication-certificate certificate-id=\"a\" thumbprint=\"{t}\"/>"),
            "<authentication-certificate thumbprint=\"xyz\"/>".to_owned(),
            "<authentication-certificate certificate-id=\"a b\"/>".to_owned(),
            "<authentication-certificate certificate-id=\"a\" password=\"p\"/>".to_owned(),
            "<authentication-certificate certificate-id=\"a\"/><authentication-certificate certificate-id=\"b\"/>".to_owned(),
            "<authentication-certificate certificate-id=\"a\"><base/></authentication-certificate>".to_owned(),
            "<authentication-certificate certificate-id=\"&bogus;\"/>".to_owned(),
        ] {
            err(&wrap(&bad));
        }
        let p = parse_policy(&wrap(
            "<authentication-certificate certificate-id=\"a&#46;b\"/>",
        ))
        .unwrap();
        assert_eq!(
            p.authentication_certificate,
            Some(CertificateRef::Id(ResourceId::parse("a.b").unwrap()))
        );
    }

    #[test]
    fn validate_client_certificate_is_read_and_checked() {
        use super::super::client_rule::Identity;
        let t = "AB".repeat(20);
        let xml = format!(
            r#"<policies>
  <inbound>
    <validate-client-certificate validate-revocation="false" validate-trust="true"
        validate-not-before="true" validate-not-after="false" ignore-error="false">
      <identities>
        <identity thumbprint="{t}" /> <identity subject="CN=partner-1" issuer-subject="CN=Partner CA" />
      </identities>
    </validate-client-certificate>
  </inbound>
</policies>"#
        );
        let rule = parse_policy(&xml).unwrap().client_certificate.unwrap();
        assert!(rule.validate_trust && rule.validate_not_before && !rule.validate_not_after);
        assert!(!rule.ignore_error);
        assert_eq!(
            rule.identities,
            vec![
                Identity {
                    thumbprint: Some(Thumbprint([0xab; 20])),
                    ..Identity::default()
                },
                Identity {
                    subject: Some("CN=partner-1".into()),
                    issuer_subject: Some("CN=Partner CA".into()),
                    ..Identity::default()
                },
            ]
        );
        // No identities: any certificate that passes the checks.
        let bare = "<policies><inbound><validate-client-certificate validate-revocation=\"false\" /></inbound></policies>";
        let rule = parse_policy(bare).unwrap().client_certificate.unwrap();
        assert!(rule.identities.is_empty() && rule.validate_trust);

        let wrap = |inner: &str| format!("<policies>\n<inbound>\n{inner}\n</inbound>\n</policies>");
        for (bad, says) in [
            ("<validate-client-certificate />", "validate-revocation=\"false\""),
            ("<validate-client-certificate validate-revocation=\"true\" />", "cannot check revocation"),
            ("<validate-client-certificate validate-revocation=\"false\" validate-trust=\"yes\" />", "\"true\" or \"false\""),
            ("<validate-client-certificate validate-revocation=\"false\" colour=\"red\" />", "'colour'"),
            ("<validate-client-certificate validate-revocation=\"false\"><identities><identity /></identities></validate-client-certificate>", "at least one"),
            ("<validate-client-certificate validate-revocation=\"false\"><identities><identity serial=\"1\" /></identities></validate-client-certificate>", "'serial'"),
            ("<validate-client-certificate validate-revocation=\"false\"><identities><identity thumbprint=\"xyz\" /></identities></validate-client-certificate>", "40 hexadecimal"),
            ("<validate-client-certificate validate-revocation=\"false\"><other /></validate-client-certificate>", "<other>"),
            ("<validate-client-certificate validate-revocation=\"false\"><identities><x /></identities></validate-client-certificate>", "<x>"),
            ("<validate-client-certificate validate-revocation=\"false\" /><validate-client-certificate validate-revocation=\"false\" />", "twice"),
        ] {
            let e = err(&wrap(bad));
            assert!(e.message.contains(says), "{bad}: {}", e.message);
            assert_eq!(e.line, 3, "{bad}: {}", e.message);
        }
        let e = err("<policies><outbound><validate-client-certificate validate-revocation=\"false\" /></outbound></policies>");
        assert!(
            e.message.contains("only supported in <inbound>"),
            "{}",
            e.message
        );
    }

    #[test]
    fn malformed_xml_names_line_and_column() {
        for (xml, line) in [
            ("<policies>\n<inbound>\n</outbound>\n</policies>", 3),
            ("<policies>\n  <inbound", 2),
            ("<policies>\n<inbound>", 2),
            ("", 1),
            ("\n\n<policies><inbound attr=></inbound></policies>", 3),
        ] {
            let e = err(xml);
            assert_eq!(e.line, line, "{xml:?}: {}", e.message);
            assert!(
                e.message.contains(&format!("line {line}, column")),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("abc", 99), (1, 4));
        assert_eq!(line_column("", 0), (1, 1));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_policy(&s);
        }

        #[test]
        fn never_panics_on_xmlish(s in "(<|>|/|policies|inbound|base|authentication-certificate| |=|\"|certificate-id|thumbprint|a|&|;|!--|\\?|\n){0,40}") {
            if let Err(e) = parse_policy(&s) {
                assert!(e.line >= 1 && e.column >= 1);
            }
        }
    }
}
