//! The Kafka listeners, configured the Kafka way: `--listeners PLAINTEXT://:9092,SASL_SSL://:9094`
//! (a name per listener, Kafka's `listeners`), `--advertised-listeners` with the address clients
//! are told for each name, and `--listener-security-protocol-map` for names that are not
//! themselves a security protocol (`INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL`).
//!
//! A bare `HOST:PORT` is one listener named PLAINTEXT, as in Skiff's first releases.

use anyhow::{bail, Context};
use std::net::SocketAddr;

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Kafka's default `listener.security.protocol.map`: each protocol's name maps to itself.
pub const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// One listener as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Upper case, as Kafka compares listener names.
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// The address clients are told (`None`: the bound address).
    pub advertised: Option<(String, u16)>,
}

/// The listeners of `--listeners`, with their protocols and advertised addresses, checked.
pub fn parse(
    listeners: &str,
    advertised: Option<&str>,
    protocol_map: &str,
) -> anyhow::Result<Vec<Listener>> {
    let map = parse_protocol_map(protocol_map)?;
    let mut out: Vec<Listener> = Vec::new();
    for entry in split_list(listeners) {
        let (name, address) = named(entry).with_context(|| format!("--listeners {entry:?}"))?;
        let name = name.unwrap_or_else(|| "PLAINTEXT".to_owned());
        let Some(protocol) = map
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, protocol)| *protocol)
        else {
            bail!(
                "listener {name} has no security protocol: add {name}:PROTOCOL (PLAINTEXT, SSL, \
                 SASL_PLAINTEXT or SASL_SSL) to --listener-security-protocol-map"
            );
        };
        let bind = bind_address(address).with_context(|| format!("--listeners {entry:?}"))?;
        if out.iter().any(|l| l.name == name) {
            bail!("--listeners names {name} twice; each listener needs its own name");
        }
        if bind.port() != 0 && out.iter().any(|l| l.bind.port() == bind.port()) {
            bail!(
                "--listeners uses port {} twice; each listener needs its own port",
                bind.port()
            );
        }
        out.push(Listener {
            name,
            protocol,
            bind,
            advertised: None,
        });
    }
    if out.is_empty() {
        bail!("--listeners names no listener");
    }
    if let Some(advertised) = advertised {
        for entry in split_list(advertised) {
            let (name, address) =
                named(entry).with_context(|| format!("--advertised-listeners {entry:?}"))?;
            let host_port = host_and_port(address)
                .with_context(|| format!("--advertised-listeners {entry:?}"))?;
            if host_port.0.is_empty() || host_port.0 == "0.0.0.0" || host_port.0 == "::" {
                bail!(
                    "--advertised-listeners {entry:?}: clients need a host they can reach, not \
                     {:?}",
                    host_port.0
                );
            }
            let target = match name {
                Some(name) => out.iter_mut().find(|l| l.name == name).with_context(|| {
                    format!("--advertised-listeners names {name}, which --listeners does not")
                })?,
                None if out.len() == 1 => &mut out[0],
                None => bail!(
                    "--advertised-listeners {entry:?} has no listener name; with several \
                     listeners write NAME://HOST:PORT"
                ),
            };
            if target.advertised.replace(host_port).is_some() {
                bail!("--advertised-listeners names {} twice", target.name);
            }
        }
    }
    Ok(out)
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `NAME://ADDRESS` → (Some(NAME), ADDRESS); a bare address has no name.
fn named(entry: &str) -> anyhow::Result<(Option<String>, &str)> {
    match entry.split_once("://") {
        None => Ok((None, entry)),
        Some((name, address)) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                bail!("bad listener name {name:?} (letters, digits, _ and -)");
            }
            Ok((Some(name.to_ascii_uppercase()), address))
        }
    }
}

fn parse_protocol_map(map: &str) -> anyhow::Result<Vec<(String, SecurityProtocol)>> {
    split_list(map)
        .map(|entry| {
            let (name, protocol) = entry.split_once(':').with_context(|| {
                format!("--listener-security-protocol-map: expected NAME:PROTOCOL, got {entry:?}")
            })?;
            let protocol = SecurityProtocol::from_name(protocol).with_context(|| {
                format!(
                    "--listener-security-protocol-map {entry:?}: unknown security protocol \
                     (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                )
            })?;
            Ok((name.trim().to_ascii_uppercase(), protocol))
        })
        .collect()
}

/// `HOST:PORT` with an IP address, `localhost`, or no host (every interface, as Kafka's
/// `PLAINTEXT://:9092`).
fn bind_address(address: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = host_and_port(address)?;
    let ip: std::net::IpAddr = match host.as_str() {
        "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other
            .parse()
            .with_context(|| format!("a listener binds an IP address, not {other:?}"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn host_and_port(address: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("expected HOST:PORT, got {address:?}"))?;
    let port = port
        .parse()
        .with_context(|| format!("bad port in {address:?}"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(listeners: &str) -> Listener {
        let mut parsed = parse(listeners, None, DEFAULT_PROTOCOL_MAP).expect("parses");
        assert_eq!(parsed.len(), 1);
        parsed.remove(0)
    }

    #[test]
    fn a_bare_address_is_one_plaintext_listener() {
        let l = one("127.0.0.1:9092");
        assert_eq!(l.name, "PLAINTEXT");
        assert_eq!(l.protocol, SecurityProtocol::Plaintext);
        assert_eq!(l.bind, "127.0.0.1:9092".parse().expect("addr"));
        assert_eq!(one("ssl://localhost:9093").protocol, SecurityProtocol::Ssl);
        assert_eq!(
            one("SASL_SSL://:9094").bind,
            "0.0.0.0:9094".parse().expect("addr")
        );
        assert_eq!(
            one("PLAINTEXT://[::1]:9092").bind,
            "[::1]:9092".parse().expect("addr")
        );
    }

    #[test]
    fn several_named_listeners_with_their_advertised_addresses() {
        let parsed = parse(
            "INTERNAL://0.0.0.0:9092, EXTERNAL://0.0.0.0:9094",
            Some("INTERNAL://skiff-0.skiff:9092,EXTERNAL://kafka.example.com:443"),
            "INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL",
        )
        .expect("parses");
        assert_eq!(parsed[0].name, "INTERNAL");
        assert_eq!(parsed[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(parsed[0].advertised, Some(("skiff-0.skiff".into(), 9092)));
        assert_eq!(parsed[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            parsed[1].advertised,
            Some(("kafka.example.com".into(), 443))
        );
        // A bare advertised address fits a single listener.
        let parsed =
            parse("SSL://0.0.0.0:9093", Some("host:1"), DEFAULT_PROTOCOL_MAP).expect("parses");
        assert_eq!(parsed[0].advertised, Some(("host".into(), 1)));
    }

    #[test]
    fn mistakes_are_named() {
        let error = |l: &str, a: Option<&str>, m: &str| {
            format!("{:#}", parse(l, a, m).expect_err("refused"))
        };
        assert!(
            error("INTERNAL://:9092", None, DEFAULT_PROTOCOL_MAP).contains("add INTERNAL:PROTOCOL")
        );
        assert!(error(
            "PLAINTEXT://:9092,PLAINTEXT://:9093",
            None,
            DEFAULT_PROTOCOL_MAP
        )
        .contains("twice"));
        assert!(
            error("PLAINTEXT://:9092,SSL://:9092", None, DEFAULT_PROTOCOL_MAP)
                .contains("port 9092 twice")
        );
        assert!(error(
            "PLAINTEXT://:9092,SSL://:9093",
            Some("h:1"),
            DEFAULT_PROTOCOL_MAP
        )
        .contains("no listener name"));
        assert!(
            error("PLAINTEXT://:9092", Some("SSL://h:1"), DEFAULT_PROTOCOL_MAP)
                .contains("which --listeners does not")
        );
        assert!(error(
            "PLAINTEXT://:9092",
            Some("PLAINTEXT://0.0.0.0:1"),
            DEFAULT_PROTOCOL_MAP
        )
        .contains("reach"));
        assert!(error("X://:1", None, "X:QUIC").contains("unknown security protocol"));
        assert!(
            error("PLAINTEXT://example.com:1", None, DEFAULT_PROTOCOL_MAP).contains("IP address")
        );
        assert!(error("", None, DEFAULT_PROTOCOL_MAP).contains("no listener"));
    }
}
