//! The principal of a client certificate, as Kafka makes it: the subject's distinguished name in
//! RFC 2253 form (`CN=alice,OU=ops,O=example`), mapped by `--ssl-principal-mapping-rules`
//! (Kafka's `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]` tried in order,
//! `DEFAULT` for the DN unchanged).

use anyhow::{bail, Context};
use regex::Regex;
use x509_parser::prelude::{FromDer, X509Certificate};

/// RFC 2253's attribute keywords, by OID (the others are written as dotted OIDs).
const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The subject DN of a DER certificate in RFC 2253 form (the last RDN first); `None` when the
/// certificate cannot be parsed (rustls verified it already, so this does not happen).
pub fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type().to_id_string();
                let keyword = KEYWORDS
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .map_or(oid.clone(), |(_, k)| (*k).to_owned());
                let value = match attr.as_str() {
                    Ok(text) => escape(text),
                    Err(_) => format!("#{}", hex(attr.as_slice())),
                };
                format!("{keyword}={value}")
            })
            .collect();
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One of Kafka's `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Maps a certificate's DN to a principal name.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

impl PrincipalMapper {
    /// Parses Kafka's rule list (`RULE:^CN=(.*?),OU=.*$/$1/L,DEFAULT`).
    pub fn parse(rules: &str) -> anyhow::Result<PrincipalMapper> {
        let mut parsed = Vec::new();
        let mut rest = rules.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                parsed.push(Rule::Default);
                rest = after.trim_start_matches([',', ' ']);
                continue;
            }
            let Some(body) = rest.strip_prefix("RULE:") else {
                bail!("expected RULE:pattern/replacement/[LU] or DEFAULT at {rest:?}");
            };
            // pattern/replacement/ then an optional L or U; '/' inside needs no escape in
            // Kafka's syntax only within the replacement's end, so split on the first two.
            let mut parts = body.splitn(3, '/');
            let (Some(pattern), Some(replacement), Some(tail)) =
                (parts.next(), parts.next(), parts.next())
            else {
                bail!("rule {body:?} is not pattern/replacement/[LU]");
            };
            let (case, tail) = match tail.chars().next() {
                Some(c @ ('L' | 'U')) => (Some(c), &tail[1..]),
                _ => (None, tail),
            };
            parsed.push(Rule::Replace {
                pattern: Regex::new(pattern)
                    .with_context(|| format!("bad pattern {pattern:?} in a mapping rule"))?,
                replacement: replacement.to_owned(),
                case,
            });
            rest = tail.trim_start_matches([',', ' ']);
        }
        if parsed.is_empty() {
            parsed.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules: parsed })
    }

    /// The principal of a TLS peer: its verified certificate's subject, mapped; `None` when
    /// it showed no certificate.
    pub fn of_peer(
        &self,
        chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<super::Principal> {
        let dn = subject_dn(chain?.first()?)?;
        Some(super::Principal::user(self.map(&dn)))
    }

    /// The principal name for `dn`: the first rule that matches (none: the DN).
    pub fn map(&self, dn: &str) -> String {
        for rule in &self.rules {
            match rule {
                Rule::Default => return dn.to_owned(),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if !pattern.is_match(dn) {
                        continue;
                    }
                    let mapped = pattern.replace(dn, replacement.as_str()).into_owned();
                    return match case {
                        Some('L') => mapped.to_lowercase(),
                        Some('U') => mapped.to_uppercase(),
                        _ => mapped,
                    };
                }
            }
        }
        dn.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_map_distinguished_names_as_kafka() {
        let rules = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, DEFAULT",
        )
        .expect("rules");
        assert_eq!(
            rules.map("CN=kafka-app,OU=ServiceUsers,O=Example"),
            "kafka-app"
        );
        assert_eq!(rules.map("CN=Alice,OU=Ops,O=Example"), "alice@ops");
        assert_eq!(rules.map("O=Example"), "O=Example");
        assert_eq!(PrincipalMapper::default().map("CN=x"), "CN=x");
        assert!(PrincipalMapper::parse("RULE:(/x").is_err());
        assert!(PrincipalMapper::parse("NONSENSE").is_err());
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("#x"), "\\#x");
    }
}
