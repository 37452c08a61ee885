//! The SSRF guard: webhook URLs are supplied by merchants, so the platform never calls an address inside its own
//! networks.
//!
//! Guarantees:
//! - [`classify`] names the class of every address that is not a public unicast address: loopback, private,
//!   link-local (169.254.169.254, the cloud metadata address, included), CGNAT, unique-local, multicast,
//!   unspecified, broadcast, documentation, benchmarking and reserved ranges — and looks inside IPv4-mapped,
//!   IPv4-compatible, NAT64 (`64:ff9b::/96`) and 6to4 IPv6 addresses, so a private IPv4 address cannot hide in one.
//! - [`Guard::check_url`] refuses, at registration, a URL that is not `https` (unless `http` is allowed: the
//!   development environment), carries credentials, or whose host resolves to any refused address.
//! - [`Guard::resolver`] is the HTTP client's only DNS resolver: it resolves, refuses the whole answer when any
//!   address is refused, and hands the client exactly the addresses it checked, so the connection goes to a
//!   checked address (no DNS-rebinding window between a check and the connection). IP-literal URLs do not go
//!   through a resolver; [`Guard::check_literal`] checks them before every attempt.
//! - The allow list ([`AllowList`], `WEBHOOK_ALLOWED_NETWORKS`, empty by default) is the only way around the guard:
//!   an address inside one of its networks passes whatever its class.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    UniqueLocal,
    Multicast,
    Unspecified,
    Broadcast,
    Documentation,
    Benchmarking,
    /// Reserved, "this network", IETF protocol assignments, deprecated site-local, Teredo, local-use NAT64.
    Reserved,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Loopback => "loopback",
            Refused::Private => "private",
            Refused::LinkLocal => "link-local",
            Refused::Cgnat => "carrier-grade NAT",
            Refused::UniqueLocal => "unique-local",
            Refused::Multicast => "multicast",
            Refused::Unspecified => "unspecified",
            Refused::Broadcast => "broadcast",
            Refused::Documentation => "documentation",
            Refused::Benchmarking => "benchmarking",
            Refused::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip` when it is not a public unicast address; `None` when the platform may call it.
pub fn classify(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refused> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => Refused::Unspecified,
        _ if ip.is_broadcast() => Refused::Broadcast,
        (0, ..) => Refused::Reserved, // "this network" 0.0.0.0/8
        (127, ..) => Refused::Loopback,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => Refused::Private,
        (169, 254, _) => Refused::LinkLocal,
        (100, 64..=127, _) => Refused::Cgnat,
        (224..=239, ..) => Refused::Multicast,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Refused::Documentation,
        (198, 18..=19, _) => Refused::Benchmarking,
        // IETF protocol assignments 192.0.0.0/24, 6to4 relay anycast 192.88.99.0/24, 240.0.0.0/4.
        (192, 0, 0) | (192, 88, 99) | (240..=255, ..) => Refused::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refused> {
    if ip.is_unspecified() {
        return Some(Refused::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refused::Loopback);
    }
    // IPv4 inside IPv6: mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002:AABB:CCDD::/48.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0; 6] {
        return classify_v4(embedded(s[6], s[7])).or(Some(Refused::Reserved));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        0xff00..=0xffff => Refused::Multicast,
        0xfe80..=0xfebf => Refused::LinkLocal,
        0xfec0..=0xfeff => Refused::Reserved, // deprecated site-local
        0xfc00..=0xfdff => Refused::UniqueLocal,
        0x2001 if s[1] == 0x0db8 => Refused::Documentation,
        0x2001 if s[1] == 0 => Refused::Reserved, // Teredo: the real address is hidden
        0x2001 if s[1] == 0x0002 && s[2] == 0 => Refused::Benchmarking,
        0x0064 if s[1] == 0xff9b && s[2] == 1 => Refused::Reserved, // local-use NAT64 64:ff9b:1::/48
        0x0100 if s[1..4] == [0, 0, 0] => Refused::Reserved,        // discard-only 100::/64
        _ => return None,
    })
}

/// Networks let through whatever their class (`WEBHOOK_ALLOWED_NETWORKS`): development and tests use receivers on
/// 127.0.0.1. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    pub fn new(networks: Vec<IpNet>) -> Self {
        AllowList(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

impl FromStr for AllowList {
    type Err = String;
    /// Comma-separated CIDRs (a bare address is its /32 or /128); blanks are ignored.
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`{p}` is not a network in CIDR notation (e.g. 127.0.0.0/8)")
                    })
            })
            .collect::<Result<_, _>>()
            .map(AllowList)
    }
}

/// Why a URL or an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("not a URL: {0}")]
    Parse(String),
    #[error("the URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("the scheme must be https{}", if *.0 { " or http" } else { "" })]
    Scheme(bool),
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "{host} resolves to {ip}, a {class} address (allow its network in WEBHOOK_ALLOWED_NETWORKS if intended)"
    )]
    Refused {
        host: String,
        ip: IpAddr,
        class: Refused,
    },
    #[error("{host} does not resolve: {reason}")]
    Resolve { host: String, reason: String },
}

/// The guard: which schemes are accepted and which networks are allowed anyway.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// `http` URLs are accepted (the development environment only).
    pub allow_http: bool,
    pub allowed: AllowList,
}

impl Guard {
    /// Refuses `ip` for `host` unless it is public or allowed.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), GuardError> {
        match classify(ip) {
            Some(class) if !self.allowed.contains(ip) => Err(GuardError::Refused {
                host: host.to_string(),
                ip,
                class,
            }),
            _ => Ok(()),
        }
    }

    /// The syntactic checks of a URL: length, scheme, no credentials, a host; IP-literal hosts are checked too.
    pub fn parse_url(&self, raw: &str) -> Result<Url, GuardError> {
        if raw.len() > MAX_URL_LEN {
            return Err(GuardError::TooLong);
        }
        let url = Url::parse(raw).map_err(|e| GuardError::Parse(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(GuardError::Scheme(self.allow_http)),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::Credentials);
        }
        self.check_literal(&url)?;
        Ok(url)
    }

    /// Checks the host of `url` when it is an IP literal (which no resolver sees); a name passes here.
    pub fn check_literal(&self, url: &Url) -> Result<(), GuardError> {
        match url.host() {
            None => Err(GuardError::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
            Some(Host::Domain(_)) => Ok(()),
        }
    }

    /// Every check, resolution included: what registration runs.
    pub async fn check_url(&self, raw: &str) -> Result<Url, GuardError> {
        let url = self.parse_url(raw)?;
        if let Some(Host::Domain(host)) = url.host() {
            self.resolve(host).await?;
        }
        Ok(url)
    }

    /// Resolves `host` and checks every address; refuses the whole answer if any address is refused.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| GuardError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(GuardError::Resolve {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        for addr in &addrs {
            self.check_ip(host, addr.ip())?;
        }
        Ok(addrs)
    }

    /// The HTTP client's DNS resolver: only checked addresses reach the connector.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

/// A [`reqwest::dns::Resolve`] that resolves through [`Guard::resolve`].
pub struct GuardedResolver(Guard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Refused> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn every_refused_class_ipv4() {
        use Refused::*;
        for (ip, want) in [
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("100.64.0.1", Cgnat),
            ("100.127.255.255", Cgnat),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("0.0.0.0", Unspecified),
            ("255.255.255.255", Broadcast),
            ("0.1.2.3", Reserved),
            ("192.0.2.10", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("192.0.0.8", Reserved),
            ("240.0.0.1", Reserved),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn every_refused_class_ipv6_and_ipv4_hidden_in_ipv6() {
        use Refused::*;
        for (ip, want) in [
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("fec0::1", Reserved),
            ("2001:db8::1", Documentation),
            ("2001::1", Reserved),
            ("2001:2::1", Benchmarking),
            ("64:ff9b:1::1", Reserved),
            ("100::1", Reserved),
            // IPv4-mapped
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.0.1", Cgnat),
            // IPv4-compatible (deprecated): refused even when the inner address is public
            ("::192.168.0.1", Private),
            ("::8.8.8.8", Reserved),
            // NAT64
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::c0a8:101", Private),
            // 6to4
            ("2002:7f00:1::1", Loopback),
            ("2002:a00:1::1", Private),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_lets_its_networks_through_and_nothing_else() {
        let guard = Guard {
            allow_http: true,
            allowed: "127.0.0.0/8, ::1".parse().unwrap(),
        };
        assert!(guard.check_ip("h", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(
            guard
                .check_ip("h", "::ffff:127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(guard.check_ip("h", "::1".parse().unwrap()).is_ok());
        let err = guard
            .check_ip("h", "169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("link-local"), "{err}");
        assert!(
            "10.0.0.0/8,nonsense"
                .parse::<AllowList>()
                .unwrap_err()
                .contains("nonsense")
        );
        assert_eq!("".parse::<AllowList>().unwrap(), AllowList::default());
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_length_and_literal_hosts() {
        let strict = Guard::default();
        assert_eq!(
            strict.parse_url("http://example.com/hook").unwrap_err(),
            GuardError::Scheme(false)
        );
        assert!(strict.parse_url("https://example.com/hook").is_ok());
        assert_eq!(
            strict.parse_url("https://u:p@example.com/").unwrap_err(),
            GuardError::Credentials
        );
        assert_eq!(
            strict
                .parse_url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)))
                .unwrap_err(),
            GuardError::TooLong
        );
        for literal in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:10.0.0.1]/",
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(
                matches!(strict.parse_url(literal), Err(GuardError::Refused { .. })),
                "{literal}"
            );
        }
        assert!(matches!(
            strict.parse_url("ftp://example.com"),
            Err(GuardError::Scheme(_))
        ));
        let dev = Guard {
            allow_http: true,
            ..Guard::default()
        };
        assert!(dev.parse_url("http://example.com/hook").is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let strict = Guard::default();
        let err = strict
            .check_url("https://localhost:8443/hook")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::Refused {
                    class: Refused::Loopback,
                    ..
                }
            ),
            "{err}"
        );
        let allowed = Guard {
            allow_http: true,
            allowed: "127.0.0.0/8,::1/128".parse().unwrap(),
        };
        assert!(
            allowed
                .check_url("http://localhost:8080/hook")
                .await
                .is_ok()
        );
    }
}
