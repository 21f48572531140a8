//! The caller-certificate rule of an API: APIM's `<validate-client-certificate>` policy
//! element, its attributes read into a [`ClientCertificateRule`], and the rule applied to
//! what the caller presented ([`ClientCertificateRule::check`]).
//!
//! The XML walk stays `policy`'s; this module owns the element's attributes, the
//! `<identity>` attributes and the verdict.

use std::fmt;

use quick_xml::events::BytesStart;
use time::OffsetDateTime;

use super::Thumbprint;

/// What a caller's certificate must satisfy for one API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificateRule {
    /// The chain must lead to a CA of `listener.client_ca_ids` (the handshake's verdict).
    pub validate_trust: bool,
    pub validate_not_before: bool,
    pub validate_not_after: bool,
    /// A failure is logged and counted, and the request goes on.
    pub ignore_error: bool,
    /// When not empty: the certificate must match at least one.
    pub identities: Vec<Identity>,
}

/// One `<identity>`: every attribute it sets must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub thumbprint: Option<Thumbprint>,
    /// A distinguished name, compared as [`same_name`] does.
    pub subject: Option<String>,
    pub issuer_subject: Option<String>,
}

/// Why a caller's certificate failed the rule (the `reason` of 403
/// `ClientCertificateInvalid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientCertificateFailure {
    Missing,
    Untrusted,
    Expired,
    NotYetValid,
    IdentityMismatch,
}

impl ClientCertificateFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "Missing",
            Self::Untrusted => "Untrusted",
            Self::Expired => "Expired",
            Self::NotYetValid => "NotYetValid",
            Self::IdentityMismatch => "IdentityMismatch",
        }
    }
}

impl fmt::Display for ClientCertificateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller presented, as the rule needs it (made once per connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub thumbprint: Thumbprint,
    pub sha256: [u8; 32],
    pub subject: String,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The handshake's chain verdict against `listener.client_ca_ids`, with time checks
    /// left to the rule: true when the chain leads to one of those CAs.
    pub trusted: bool,
}

impl ClientCertificateRule {
    /// The rule applied to `presented` at `now`: the first failure in the order Missing,
    /// Expired, NotYetValid, Untrusted, IdentityMismatch.
    pub fn check(
        &self,
        presented: Option<&PresentedCertificate>,
        now: OffsetDateTime,
    ) -> Result<(), ClientCertificateFailure> {
        let Some(cert) = presented else {
            return Err(ClientCertificateFailure::Missing);
        };
        if self.validate_not_after && now > cert.not_after {
            return Err(ClientCertificateFailure::Expired);
        }
        if self.validate_not_before && now < cert.not_before {
            return Err(ClientCertificateFailure::NotYetValid);
        }
        if self.validate_trust && !cert.trusted {
            return Err(ClientCertificateFailure::Untrusted);
        }
        if !self.identities.is_empty() && !self.identities.iter().any(|i| i.matches(cert)) {
            return Err(ClientCertificateFailure::IdentityMismatch);
        }
        Ok(())
    }
}

impl Identity {
    fn matches(&self, cert: &PresentedCertificate) -> bool {
        self.thumbprint.is_none_or(|t| t == cert.thumbprint)
            && self
                .subject
                .as_deref()
                .is_none_or(|s| same_name(s, &cert.subject))
            && self
                .issuer_subject
                .as_deref()
                .is_none_or(|s| same_name(s, &cert.issuer))
    }
}

/// Whether two distinguished names are the same: the same attributes in the same order,
/// types compared without case, values exactly, whitespace around `,` and `=` ignored
/// (`"CN=a,O=b"` is `"CN=a, O=b"`). Escaped commas (`\,`) stay part of their value.
pub fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (rdns(a), rdns(b));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|((ka, va), (kb, vb))| ka.eq_ignore_ascii_case(kb) && va == vb)
}

fn rdns(name: &str) -> Vec<(String, String)> {
    fn attribute(part: &str) -> (String, String) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        (k.trim().to_owned(), v.trim().to_owned())
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in name.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            out.push(attribute(&current));
            current.clear();
        } else {
            current.push(c);
        }
    }
    if !current.trim().is_empty() || !out.is_empty() {
        out.push(attribute(&current));
    }
    out
}

const ELEMENT: &str = "validate-client-certificate";

/// Reads the attributes of `<validate-client-certificate>`. API Management's defaults:
/// every `validate-*` true, `ignore-error` false. Revocation cannot be checked here (no CRL
/// or OCSP source), and APIM checks it by default, so `validate-revocation="false"` must be
/// written: a policy that asks for it, or leaves it out, is refused rather than half obeyed.
pub fn read_rule(e: &BytesStart<'_>) -> Result<ClientCertificateRule, String> {
    let mut rule = ClientCertificateRule {
        validate_trust: true,
        validate_not_before: true,
        validate_not_after: true,
        ignore_error: false,
        identities: Vec::new(),
    };
    let mut revocation = None;
    for (key, value) in super::policy::attributes(e, ELEMENT)? {
        let flag = || match value.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!(
                "attribute '{key}' on <{ELEMENT}> must be \"true\" or \"false\", not \"{other}\""
            )),
        };
        match key.as_str() {
            "validate-revocation" => revocation = Some(flag()?),
            "validate-trust" => rule.validate_trust = flag()?,
            "validate-not-before" => rule.validate_not_before = flag()?,
            "validate-not-after" => rule.validate_not_after = flag()?,
            "ignore-error" => rule.ignore_error = flag()?,
            other => {
                return Err(format!(
                    "attribute '{other}' is not supported on <{ELEMENT}> (supported: validate-revocation, validate-trust, validate-not-before, validate-not-after, ignore-error)"
                ))
            }
        }
    }
    if revocation != Some(false) {
        return Err(format!(
            "<{ELEMENT}> needs validate-revocation=\"false\": edgegw cannot check revocation, and API Management checks it unless told not to"
        ));
    }
    Ok(rule)
}

/// Reads one `<identity>`: `thumbprint`, `subject`, `issuer-subject`; at least one.
pub fn read_identity(e: &BytesStart<'_>) -> Result<Identity, String> {
    const IDENTITY: &str = "identity";
    let mut identity = Identity::default();
    for (key, value) in super::policy::attributes(e, IDENTITY)? {
        match key.as_str() {
            "thumbprint" => {
                identity.thumbprint = Some(Thumbprint::parse(&value).ok_or_else(|| {
                    format!("thumbprint \"{value}\" on <{IDENTITY}> is not 40 hexadecimal characters")
                })?)
            }
            "subject" => identity.subject = Some(value),
            "issuer-subject" => identity.issuer_subject = Some(value),
            other => {
                return Err(format!(
                    "attribute '{other}' is not supported on <{IDENTITY}> (supported: thumbprint, subject, issuer-subject)"
                ))
            }
        }
    }
    if identity == Identity::default() {
        return Err(format!(
            "<{IDENTITY}> needs at least one of thumbprint, subject and issuer-subject"
        ));
    }
    Ok(identity)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn presented() -> PresentedCertificate {
        PresentedCertificate {
            thumbprint: Thumbprint([0x11; 20]),
            sha256: [0x22; 32],
            subject: "CN=partner-1, O=Fabrikam".into(),
            issuer: "CN=Partner CA".into(),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2027-01-01 0:00 UTC),
            trusted: true,
        }
    }

    fn rule(identities: Vec<Identity>) -> ClientCertificateRule {
        ClientCertificateRule {
            validate_trust: true,
            validate_not_before: true,
            validate_not_after: true,
            ignore_error: false,
            identities,
        }
    }

    #[test]
    fn verdicts_in_order() {
        use ClientCertificateFailure::*;
        let now = datetime!(2026-06-01 0:00 UTC);
        let r = rule(vec![]);
        assert_eq!(r.check(None, now), Err(Missing));
        assert_eq!(r.check(Some(&presented()), now), Ok(()));
        let later = datetime!(2028-01-01 0:00 UTC);
        assert_eq!(r.check(Some(&presented()), later), Err(Expired));
        let earlier = datetime!(2025-01-01 0:00 UTC);
        assert_eq!(r.check(Some(&presented()), earlier), Err(NotYetValid));
        let untrusted = PresentedCertificate {
            trusted: false,
            ..presented()
        };
        assert_eq!(r.check(Some(&untrusted), now), Err(Untrusted));
        let lax = ClientCertificateRule {
            validate_trust: false,
            validate_not_after: false,
            ..rule(vec![])
        };
        assert_eq!(lax.check(Some(&untrusted), later), Ok(()));

        let by_subject = Identity {
            subject: Some("cn=partner-1,O=Fabrikam".into()),
            issuer_subject: Some("CN=Partner CA".into()),
            ..Identity::default()
        };
        assert_eq!(
            rule(vec![by_subject.clone()]).check(Some(&presented()), now),
            Ok(())
        );
        let other = Identity {
            thumbprint: Some(Thumbprint([0x33; 20])),
            ..Identity::default()
        };
        assert_eq!(
            rule(vec![other.clone()]).check(Some(&presented()), now),
            Err(IdentityMismatch)
        );
        assert_eq!(
            rule(vec![other, by_subject]).check(Some(&presented()), now),
            Ok(()),
            "any identity"
        );
        let half = Identity {
            thumbprint: Some(Thumbprint([0x11; 20])),
            subject: Some("CN=someone-else".into()),
            ..Identity::default()
        };
        assert_eq!(
            rule(vec![half]).check(Some(&presented()), now),
            Err(IdentityMismatch),
            "all of one identity"
        );
    }

    #[test]
    fn names_compare_by_attribute() {
        assert!(same_name("CN=a, O=b", "CN=a,O=b"));
        assert!(same_name("cn = a , o=b", "CN=a, O=b"));
        assert!(!same_name("CN=a", "CN=A"));
        assert!(!same_name("CN=a, O=b", "O=b, CN=a"));
        assert!(!same_name("CN=a\\, O=b", "CN=a, O=b"));
        assert!(!same_name("CN=a", "CN=a, O=b"));
    }
}
