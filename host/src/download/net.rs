//! Which addresses downloads may reach.
//!
//! A download URL names a host; what it connects to is decided three
//! times: the URL itself when its host is an IP address (reqwest does not
//! resolve those), every redirect the server answers with, and every name
//! the resolver turns into addresses. Loopback, link-local (cloud metadata
//! services live there), unspecified, multicast, broadcast, reserved and
//! documentation addresses are never reached, also when carried in an IPv6
//! address (IPv4-mapped, NAT64, 6to4, Teredo); private ranges only when the
//! configuration allows them.
//! Origins the configuration lists (a local mirror) are exempt.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Redirects one download may follow.
const MAX_REDIRECTS: usize = 10;

/// Why a download may not go where it was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What an address is, as far as downloads care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Private,
    /// Never reachable; says what it is.
    Internal(&'static str),
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if a == 0 {
        Class::Internal("an unspecified address")
    } else if ip.is_loopback() {
        Class::Internal("a loopback address")
    } else if ip.is_link_local() {
        Class::Internal("a link-local address")
    } else if ip.is_broadcast() {
        Class::Internal("a broadcast address")
    } else if ip.is_multicast() {
        Class::Internal("a multicast address")
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) {
        Class::Internal("a reserved address")
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Class::Internal("a documentation address")
    } else if ip.is_private()
        // Shared address space (carrier-grade NAT) and benchmarking nets.
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
    {
        Class::Private
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Class::Internal("an unspecified address");
    }
    if ip.is_loopback() {
        return Class::Internal("a loopback address");
    }
    if let Some(v4) = carried_v4(ip) {
        return classify_v4(v4);
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        return Class::Internal("a documentation address");
    }
    match seg[0] {
        s if s & 0xff00 == 0xff00 => Class::Internal("a multicast address"),
        s if s & 0xffc0 == 0xfe80 => Class::Internal("a link-local address"),
        s if s & 0xffc0 == 0xfec0 => Class::Private,
        s if s & 0xfe00 == 0xfc00 => Class::Private,
        _ => Class::Public,
    }
}

/// The IPv4 address an IPv6 address reaches: IPv4-mapped (::ffff:a.b.c.d),
/// IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d and the local-use
/// 64:ff9b:1::/48), 6to4 (2002:aabb:ccdd::/48) and Teredo (2001::/32, whose
/// client address is the last 32 bits inverted).
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4() {
        Some(v4)
    } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..3] == [0x64, 0xff9b, 1] {
        Some(last)
    } else if seg[0] == 0x2002 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if seg[..2] == [0x2001, 0] {
        Some(Ipv4Addr::from(!u32::from(last)))
    } else {
        None
    }
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The host of `url` when it is an IP address (the URL parser has already
/// turned forms like `0x7f000001` into the usual notation).
fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `scheme://host:port` of `url`, the port spelt out.
fn origin_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", url.scheme()))
}

/// Checks and normalizes an entry of the setting `key` (a list of allowed
/// origins) to `scheme://host:port`.
pub fn normalize_origin(key: &str, origin: &str) -> anyhow::Result<String> {
    let url = Url::parse(origin.trim())
        .map_err(|e| anyhow::anyhow!("{key}: `{origin}` is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none(),
        "{key}: `{origin}` must be an origin like http://127.0.0.1:8000 (no path, query or credentials)"
    );
    origin_of(&url).ok_or_else(|| anyhow::anyhow!("{key}: `{origin}` has no host"))
}

/// Who connects under a policy, for its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Model downloads (settings `download_…`).
    Downloads,
    /// Remote OpenAI-compatible upstreams (settings `upstream_…`).
    Upstreams,
    /// Worker nodes (setting `node_allowed_origins`; private addresses are
    /// where nodes usually are, so they are allowed).
    Nodes,
}

impl Scope {
    fn what(self) -> &'static str {
        match self {
            Scope::Downloads => "downloads",
            Scope::Upstreams => "upstreams",
            Scope::Nodes => "nodes",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Scope::Downloads => "download",
            Scope::Upstreams => "upstream",
            Scope::Nodes => "node",
        }
    }
}

/// What downloads (or upstream calls) may reach.
#[derive(Debug, Clone)]
pub struct NetPolicy {
    scope: Scope,
    allow_private: bool,
    /// Normalized `scheme://host:port`.
    origins: HashSet<String>,
    /// Host names of the allowed origins: the resolver passes their
    /// addresses unchecked, so other ports of these names are refused.
    trusted_names: HashSet<String>,
}

impl NetPolicy {
    /// `origins` as [`normalize_origin`] returns them.
    pub fn new(scope: Scope, allow_private: bool, origins: &[String]) -> Self {
        let mut policy = NetPolicy {
            scope,
            allow_private,
            origins: HashSet::new(),
            trusted_names: HashSet::new(),
        };
        for origin in origins {
            let Ok(url) = Url::parse(origin) else {
                continue;
            };
            if let (Some(name), None) = (url.host_str(), host_ip(&url)) {
                policy.trusted_names.insert(name.to_ascii_lowercase());
            }
            if let Some(o) = origin_of(&url) {
                policy.origins.insert(o);
            }
        }
        policy
    }

    /// Whether a download may connect to `ip`.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Private if self.allow_private => Ok(()),
            Class::Private => Err(Refused(format!(
                "{host} is a private address ({ip}), which {} reach only with `{}_allow_private = true` \
                 or when its origin is listed in `{}_allowed_origins`",
                self.scope.what(),
                self.scope.setting(),
                self.scope.setting(),
            ))),
            Class::Internal(kind) => Err(Refused(format!(
                "{host} is {kind} ({ip}), which {} may not reach unless its origin is listed in `{}_allowed_origins`",
                self.scope.what(),
                self.scope.setting(),
            ))),
        }
    }

    /// Whether a download may fetch `url`, as far as can be told before
    /// resolving its host name (the resolver checks the addresses).
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "{} use only http and https, not {}",
                self.scope.what(),
                url.scheme()
            )));
        }
        if origin_of(url).is_some_and(|o| self.origins.contains(&o)) {
            return Ok(());
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(Refused("the URL has no host".into()));
        };
        if let Some(ip) = host_ip(url) {
            return self.check_ip(host, ip);
        }
        if self.trusted_names.contains(&host.to_ascii_lowercase()) {
            return Err(Refused(format!(
                "{host} may be reached only at the origins listed in `{}_allowed_origins`",
                self.scope.setting()
            )));
        }
        Ok(())
    }

    /// The redirect policy: every hop is checked like the first URL.
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => {
                    let refused = Refused(format!("a redirect was refused: {}", refused.0));
                    attempt.error(refused)
                }
            }
        })
    }
}

/// A client for calls that carry a secret (an API key, a node's token):
/// it reaches only what `policy` allows, also after DNS, and follows no
/// redirect and no proxy from the environment, so the secret never
/// travels anywhere else. With `pin`, it speaks HTTPS only and trusts
/// exactly the certificate of that fingerprint instead of the public
/// certificate authorities.
pub fn guarded_client(
    policy: &Arc<NetPolicy>,
    connect_timeout: std::time::Duration,
    pin: Option<crate::tls::Fingerprint>,
) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let builder = match pin {
        // A pin is only of use over TLS: never send the secret in clear.
        Some(pin) => builder
            .use_preconfigured_tls(crate::tls::pinned_client_config(pin)?)
            .https_only(true),
        None => builder,
    };
    Ok(builder.build()?)
}

/// Resolves host names with the system resolver and keeps only the
/// addresses the policy lets downloads reach.
pub struct GuardedResolver {
    pub policy: Arc<NetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.trusted_names.contains(&host.to_ascii_lowercase()) {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check_ip(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let refused = refused.unwrap_or_else(|| Refused(format!("{host} has no address")));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The refusal somewhere in `err`'s chain of causes, if the policy stopped
/// the request.
pub fn refusal(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn internal_addresses_are_never_reached() {
        let strict = NetPolicy::new(Scope::Downloads, false, &[]);
        let lenient = NetPolicy::new(Scope::Downloads, true, &[]);
        for addr in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:2:3:4:7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe:1::5",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001::5601:5601",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(strict.check_ip("h", ip(addr)).is_err(), "{addr}");
            assert!(lenient.check_ip("h", ip(addr)).is_err(), "{addr}");
        }
    }

    #[test]
    fn private_addresses_need_the_setting() {
        let strict = NetPolicy::new(Scope::Downloads, false, &[]);
        let lenient = NetPolicy::new(Scope::Downloads, true, &[]);
        for addr in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
            "2002:a00:1::",
            "64:ff9b:1::c0a8:101",
        ] {
            assert!(strict.check_ip("h", ip(addr)).is_err(), "{addr}");
            assert!(lenient.check_ip("h", ip(addr)).is_ok(), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
            "2002:808:808::1",
            "2001::f7f7:f7f7",
        ] {
            assert!(strict.check_ip("h", ip(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn urls_are_checked_by_literal_address_and_origin() {
        let origin =
            normalize_origin("download_allowed_origins", "http://127.0.0.1:8000").expect("origin");
        assert_eq!(origin, "http://127.0.0.1:8000");
        let named =
            normalize_origin("download_allowed_origins", "http://Mirror.Lan:80/").expect("origin");
        assert_eq!(named, "http://mirror.lan:80");
        assert!(
            normalize_origin("download_allowed_origins", "http://127.0.0.1:8000/files").is_err()
        );
        assert!(normalize_origin("download_allowed_origins", "http://u:p@127.0.0.1:8000").is_err());
        assert!(normalize_origin("download_allowed_origins", "ftp://127.0.0.1").is_err());
        let policy = NetPolicy::new(Scope::Downloads, false, &[origin, named]);
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(policy
            .check_url(&url("http://127.0.0.1:8000/a.gguf"))
            .is_ok());
        assert!(policy
            .check_url(&url("http://127.0.0.1:8001/a.gguf"))
            .is_err());
        assert!(policy
            .check_url(&url("https://127.0.0.1:8000/a.gguf"))
            .is_err());
        assert!(policy.check_url(&url("http://0x7f000001/")).is_err());
        assert!(policy.check_url(&url("http://[::ffff:7f00:1]/")).is_err());
        assert!(policy
            .check_url(&url("http://169.254.169.254/latest"))
            .is_err());
        assert!(policy.check_url(&url("http://mirror.lan/a.gguf")).is_ok());
        assert!(policy
            .check_url(&url("http://mirror.lan:8080/a.gguf"))
            .is_err());
        // Names are checked once resolved.
        assert!(policy.check_url(&url("http://localhost/")).is_ok());
    }
}
