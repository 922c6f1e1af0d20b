//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`): only to the
//! hosts a plugin's manifest declares and a technician approved, and never
//! to loopback, link-local, private or otherwise non-public addresses
//! unless a technician allowed the private network for that plugin.
//!
//! Names are resolved by Corral and every address is checked before a
//! connection is made to exactly the addresses that were checked, so a
//! name that resolves to a public address once and to 127.0.0.1 the next
//! time cannot slip through. Redirects are not followed (the plugin sees
//! the 3xx and may ask again, through the same checks), and no proxy from
//! the host's environment is used.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use serde::{Serialize, Serializer};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Most hosts one manifest may declare.
pub const MAX_HOSTS: usize = 32;
/// Largest request body a plugin may send.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
/// Time to connect (each address), unless the plugin asks for less.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from sending to the response's headers, unless the plugin asks
/// for less; the most it may ask for is [`MAX_FIRST_BYTE`].
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FIRST_BYTE: Duration = Duration::from_secs(30);
/// The longest silence while a response body streams.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the network is left out of a call's time budget up to
/// this much per call; beyond it the wait counts as the plugin's time.
pub(crate) const MAX_NETWORK_CREDIT: Duration = Duration::from_secs(30);
/// Requests one instance may have waiting for their response at once:
/// each holds its request body (up to 16 MiB) on the host until then.
pub(crate) const MAX_IN_FLIGHT: usize = 8;

/// A host a manifest may name under `[http] hosts`: `example.com`,
/// `*.example.com` (any subdomain, not the domain itself), an IP address
/// (`192.0.2.7`, `[2001:db8::1]`), each with an optional `:port` or `:*`
/// (any port). Without a port only 80 and 443 match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: Name,
    port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// A lowercase DNS name, or an IP address in its canonical text.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Standard,
    Any,
    Is(u16),
}

impl HostPattern {
    /// Parses one entry of `[http] hosts`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| Err(format!("`{text}` {why}"));
        if text.is_empty() || text.len() > 260 {
            return bad("is not a host name (1-260 characters)");
        }
        if text.contains("://") || text.contains('/') {
            return bad("must be a host, not a URL (e.g. `api.example.com`)");
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return bad("has `[` without `]`");
            };
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad("has text after `]` that is not `:port`"),
                },
            };
            let Ok(ip) = v6.parse::<Ipv6Addr>() else {
                return bad("has an invalid IPv6 address in `[]`");
            };
            (ip.to_string(), port)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (text.to_owned(), None),
            }
        };
        let port = match port {
            None => Port::Standard,
            Some("*") => Port::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Port::Is(n),
                _ => return bad("has a port that is not 1-65535 or `*`"),
            },
        };
        let host = host.to_ascii_lowercase();
        if host.parse::<IpAddr>().is_ok() {
            return Ok(HostPattern {
                name: Name::Exact(host),
                port,
            });
        }
        let (domain, subdomains) = match host.strip_prefix("*.") {
            Some(d) => (d, true),
            None => (host.as_str(), false),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !domain.split('.').all(label_ok) {
            return bad("is not a host name (letters, digits, `-` and `.`; `*.` only in front)");
        }
        if ends_in_a_number(domain) {
            return bad(
                "ends in a number, which a URL reads as an IPv4 address; write the address",
            );
        }
        if subdomains && !domain.contains('.') {
            return bad("covers a whole top-level domain; name one below it (`*.example.com`)");
        }
        let name = if subdomains {
            Name::Subdomains(format!(".{domain}"))
        } else {
            Name::Exact(domain.to_owned())
        };
        Ok(HostPattern { name, port })
    }

    /// Whether a request to `host:port` is covered. `host` is as a URL
    /// has it (IPv6 in brackets, any case, maybe a trailing dot).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Port::Standard => port == 80 || port == 443,
            Port::Any => true,
            Port::Is(p) => p == port,
        };
        let host = normalize_host(host);
        port_ok
            && match &self.name {
                Name::Exact(name) => *name == host,
                Name::Subdomains(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Name::Exact(n) if n.contains(':') => write!(f, "[{n}]")?,
            Name::Exact(n) => f.write_str(n)?,
            Name::Subdomains(s) => write!(f, "*{s}")?,
        }
        match self.port {
            Port::Standard => Ok(()),
            Port::Any => f.write_str(":*"),
            Port::Is(p) => write!(f, ":{p}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lowercase, without IPv6 brackets or a trailing dot; an IP address in
/// its canonical text.
/// Whether URL parsers (the WHATWG rules the HTTP client follows) read
/// `host` as an IPv4 address, as they do `127.1`, `0x7f.1` or `2130706433`:
/// its last label is decimal digits or `0x` and hex digits.
fn ends_in_a_number(host: &str) -> bool {
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// Whether an address is on the public internet: not loopback,
/// unspecified, private, shared (carrier-grade NAT), link-local,
/// multicast, broadcast, documentation, benchmarking or reserved, in
/// IPv4 or IPv6, including IPv4 addresses carried inside IPv6 ones.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0                              // "this network"
        || a == 10                                     // private
        || a == 127                                    // loopback
        || (a == 100 && (64..128).contains(&b))        // shared, carrier-grade NAT
        || (a == 169 && b == 254)                      // link-local (cloud metadata)
        || (a == 172 && (16..32).contains(&b))         // private
        || (a == 192 && b == 0 && c == 0)              // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)              // documentation
        || (a == 192 && b == 88 && c == 99)            // 6to4 relay anycast
        || (a == 192 && b == 168)                      // private
        || (a == 198 && (b == 18 || b == 19))          // benchmarking
        || (a == 198 && b == 51 && c == 100)           // documentation
        || (a == 203 && b == 0 && c == 113)            // documentation
        || a >= 224; // multicast, reserved, broadcast
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        if ip.is_unspecified() || ip.is_loopback() {
            return false;
        }
        let [.., a, b, c, d] = ip.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // 6to4 (2002::/16) carries one in bits 16-48.
    if s[0] == 0x2002 {
        let o = ip.octets();
        return is_public_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    let reserved = (s[0] & 0xfe00) == 0xfc00          // unique local
        || (s[0] & 0xffc0) == 0xfe80                   // link-local
        || (s[0] & 0xffc0) == 0xfec0                   // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00                   // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)          // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200)           // IETF special purpose (Teredo, ORCHID, …)
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0]      // discard-only
        || s[0] == 0; // the rest of ::/16 (unspecified, loopback, …)
    !reserved
}

/// What a plugin may reach, as a technician approved it.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpPolicy {
    /// The declared hosts a technician approved.
    pub(crate) hosts: Vec<HostPattern>,
    /// Whether non-public addresses may be reached.
    pub(crate) private_network: bool,
}

impl HttpPolicy {
    fn allows(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }
}

/// Time spent waiting for responses, shared between an instance's
/// requests (which run as their own tasks) and its call clock.
#[derive(Debug, Default)]
pub(crate) struct NetworkWait {
    inner: Mutex<WaitState>,
}

#[derive(Debug, Default)]
struct WaitState {
    in_flight: usize,
    since: Option<Instant>,
    total: Duration,
}

impl NetworkWait {
    /// Time with at least one request waiting for its response, since
    /// the last [`NetworkWait::reset`], capped at [`MAX_NETWORK_CREDIT`].
    pub(crate) fn credit(&self) -> Duration {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let open = s.since.map_or(Duration::ZERO, |t| t.elapsed());
        (s.total + open).min(MAX_NETWORK_CREDIT)
    }

    /// Starts counting afresh (a new call).
    pub(crate) fn reset(&self) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.total = Duration::ZERO;
        if s.since.is_some() {
            s.since = Some(Instant::now());
        }
    }

    fn enter(self: &Arc<Self>) -> Waiting {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.in_flight == 0 {
            s.since = Some(Instant::now());
        }
        s.in_flight += 1;
        Waiting(self.clone())
    }
}

/// A request waiting for its response; leaving ends the wait.
struct Waiting(Arc<NetworkWait>);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut s = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.in_flight -= 1;
        if s.in_flight == 0 {
            if let Some(t) = s.since.take() {
                s.total += t.elapsed();
            }
        }
    }
}

/// The `wasi:http` hooks of one instance: every request is checked here.
pub(crate) struct HttpGate {
    pub(crate) plugin: Arc<str>,
    /// `None`: the `http` capability is not granted.
    pub(crate) policy: Option<Arc<HttpPolicy>>,
    pub(crate) wait: Arc<NetworkWait>,
    /// [`MAX_IN_FLIGHT`] permits, one taken by each request until its
    /// response arrives.
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
}

impl HttpGate {
    pub(crate) fn new(
        plugin: Arc<str>,
        policy: Option<Arc<HttpPolicy>>,
        wait: Arc<NetworkWait>,
    ) -> Self {
        HttpGate {
            plugin,
            policy,
            wait,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let plugin = self.plugin.clone();
        let policy = self.policy.clone();
        let wait = self.wait.clone();
        let permit = self.in_flight.clone().try_acquire_owned();
        Box::new(async move {
            let Ok(_permit) = permit else {
                let url = request.uri().to_string();
                return Err(refuse(
                    &plugin,
                    &url,
                    &format!("{MAX_IN_FLIGHT} requests are already waiting for their response"),
                    HttpError::HttpRequestDenied,
                ));
            };
            let response = send(&plugin, policy.as_deref(), &wait, request, options).await?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Refuses a host that is an address outside the public internet, unless
/// the plugin may reach the private network. Names are checked when they
/// are resolved.
fn check_address(
    plugin: &str,
    policy: &HttpPolicy,
    url: &str,
    host: &str,
) -> Result<(), HttpError> {
    match normalize_host(host).parse::<IpAddr>() {
        Ok(ip) if !policy.private_network && !is_public(ip) => Err(refuse(
            plugin,
            url,
            "the address is not public",
            HttpError::DestinationIpProhibited,
        )),
        _ => Ok(()),
    }
}

/// Why a request was refused, logged for technicians.
fn refuse(plugin: &str, url: &str, why: &str, code: HttpError) -> HttpError {
    tracing::warn!(target: "corral::plugin", plugin, url, "outgoing request refused: {why}");
    code
}

async fn send(
    plugin: &str,
    policy: Option<&HttpPolicy>,
    wait: &Arc<NetworkWait>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let url = request.uri().to_string();
    let Some(policy) = policy else {
        return Err(refuse(
            plugin,
            &url,
            "capability `http` is not granted",
            HttpError::HttpRequestDenied,
        ));
    };
    let uri = request.uri();
    let Some(host) = uri.host() else {
        return Err(HttpError::HttpRequestUriInvalid);
    };
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        _ => return Err(HttpError::HttpProtocolError),
    };
    if !policy.allows(host, port) {
        return Err(refuse(
            plugin,
            &url,
            "the host is not one a technician approved for this plugin",
            HttpError::HttpRequestDenied,
        ));
    }
    check_address(plugin, policy, &url, host)?;

    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(match e.downcast::<HttpError>() {
                Ok(e) => *e,
                Err(_) => HttpError::HttpRequestBodySize(None),
            })
        }
    };
    let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    // The client connects to the host as its URL parser reads it, which
    // turns some names into addresses (`127.1`); that one is checked too.
    let Some(parsed) = request.url().host_str() else {
        return Err(HttpError::HttpRequestUriInvalid);
    };
    check_address(plugin, policy, &url, parsed)?;
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(FIRST_BYTE_TIMEOUT)
        .min(MAX_FIRST_BYTE);
    let client = if policy.private_network {
        open_client()
    } else {
        vetted_client()
    };

    let waiting = wait.enter();
    let sent = tokio::time::timeout(CONNECT_TIMEOUT + first_byte, client.execute(request)).await;
    drop(waiting);
    let response = match sent {
        Err(_) => return Err(HttpError::HttpResponseTimeout),
        Ok(Err(e)) => return Err(request_error(plugin, &url, &e)),
        Ok(Ok(r)) => r,
    };
    let response: http::Response<reqwest::Body> = response.into();
    Ok(response.map(|b| {
        b.map_err(|e| {
            if e.is_timeout() {
                HttpError::ConnectionReadTimeout
            } else {
                HttpError::ConnectionTerminated
            }
        })
        .boxed_unsync()
    }))
}

/// The `wasi:http` error for a failed request.
fn request_error(plugin: &str, url: &str, e: &reqwest::Error) -> HttpError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<Prohibited>() {
            return refuse(
                plugin,
                url,
                &p.to_string(),
                HttpError::DestinationIpProhibited,
            );
        }
        if let Some(u) = s.downcast_ref::<Unresolved>() {
            tracing::debug!(target: "corral::plugin", plugin, url, "{u}");
            return HttpError::DnsError {
                rcode: None,
                info_code: None,
            };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return HttpError::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return HttpError::ConnectionTimeout,
                _ => {}
            }
        }
        source = s.source();
    }
    if e.is_timeout() {
        HttpError::ConnectionTimeout
    } else if e.is_connect() {
        HttpError::DestinationUnavailable
    } else {
        tracing::debug!(target: "corral::plugin", plugin, url, "request failed: {e:#}");
        HttpError::HttpProtocolError
    }
}

/// A name that resolves to an address that is not public.
#[derive(Debug)]
struct Prohibited {
    host: String,
    addr: IpAddr,
}

impl fmt::Display for Prohibited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` resolves to {}, which is not public",
            self.host, self.addr
        )
    }
}

impl StdError for Prohibited {}

/// A name that does not resolve.
#[derive(Debug)]
struct Unresolved(String, std::io::Error);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve `{}`: {}", self.0, self.1)
    }
}

impl StdError for Unresolved {}

/// Resolves names and refuses any that has a non-public address among
/// its answers; the connection is made to the checked addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(Unresolved(host.clone(), e)))?
                .collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(Prohibited {
                    host,
                    addr: bad.ip(),
                }) as Box<dyn StdError + Send + Sync>);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(BETWEEN_BYTES_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("corral-plugin/", env!("CARGO_PKG_VERSION")))
}

/// The client for plugins limited to public addresses.
fn vetted_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            client_builder()
                .dns_resolver(Arc::new(PublicOnly))
                .build()
                .expect("the HTTP client builds")
        })
        .clone()
}

/// The client for plugins a technician let reach the private network.
fn open_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| client_builder().build().expect("the HTTP client builds"))
        .clone()
}

/// Bytes as a `wasi:http` body, for tests.
#[cfg(test)]
fn full(bytes: &'static str) -> WasiBody {
    http_body_util::Full::new(bytes::Bytes::from_static(bytes.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap()
    }

    #[test]
    fn host_patterns_parse_and_print() {
        for (text, shown) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.com:8443", "api.example.com:8443"),
            ("*.example.org", "*.example.org"),
            ("127.0.0.1:*", "127.0.0.1:*"),
            ("[::1]:8080", "[::1]:8080"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
        ] {
            assert_eq!(p(text).to_string(), shown, "{text}");
        }
        for (text, why) in [
            ("", "1-260"),
            ("https://example.com", "not a URL"),
            ("example.com/path", "not a URL"),
            ("exa mple.com", "not a host name"),
            ("*.com", "top-level"),
            ("a.*.example.com", "not a host name"),
            ("example.com:0", "1-65535"),
            ("example.com:http", "1-65535"),
            ("[::1", "without `]`"),
            ("[zz]", "invalid IPv6"),
            ("-a.example.com", "not a host name"),
            ("127.1", "ends in a number"),
            ("0x7f.1", "ends in a number"),
            ("2130706433", "ends in a number"),
            ("2852039166:80", "ends in a number"),
            ("api.example.0x", "ends in a number"),
            ("api.example.123.", "not a host name"),
        ] {
            let e = HostPattern::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn names_that_urls_read_as_addresses_are_checked_as_addresses() {
        for (name, public) in [
            ("0x7f.1", false),
            ("2130706433", false),
            ("2852039166", false),
            ("8.8.8.8", true),
            ("example.com", true),
        ] {
            let request = http::Request::get(format!("http://{name}/"))
                .body(Vec::<u8>::new())
                .unwrap();
            let request = reqwest::Request::try_from(request).unwrap();
            let host = request.url().host_str().unwrap().to_owned();
            let strict = HttpPolicy {
                hosts: Vec::new(),
                private_network: false,
            };
            let checked = check_address("p", &strict, name, &host);
            assert_eq!(checked.is_ok(), public, "{name} read as {host}");
        }
    }

    #[tokio::test]
    async fn a_request_to_a_name_read_as_a_local_address_is_refused() {
        use std::sync::atomic::Ordering;
        let (port, seen) = local_server().await;
        // A host list from before such names were refused at install.
        let policy = HttpPolicy {
            hosts: vec![HostPattern {
                name: Name::Exact("2130706433".into()),
                port: Port::Any,
            }],
            private_network: false,
        };
        let e = get(
            &mut gate(Some(policy)),
            &format!("http://2130706433:{port}/"),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HttpError::DestinationIpProhibited), "{e:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 0, "it reached 127.0.0.1");
    }

    #[test]
    fn host_patterns_match_names_and_ports() {
        let exact = p("api.example.com");
        assert!(exact.matches("api.example.com", 443));
        assert!(exact.matches("API.example.com.", 80));
        assert!(!exact.matches("api.example.com", 8080));
        assert!(!exact.matches("evil-api.example.com", 443));
        assert!(!exact.matches("api.example.com.evil.net", 443));
        let sub = p("*.example.org:*");
        assert!(sub.matches("a.example.org", 1));
        assert!(sub.matches("a.b.example.org", 65535));
        assert!(!sub.matches("example.org", 443));
        assert!(!sub.matches("badexample.org", 443));
        let v6 = p("[::1]:8080");
        assert!(v6.matches("[::1]", 8080));
        assert!(v6.matches("[0:0::1]", 8080));
        assert!(!v6.matches("[::1]", 8081));
        let v4 = p("127.0.0.1:*");
        assert!(v4.matches("127.0.0.1", 5000));
        assert!(!v4.matches("127.0.0.2", 5000));
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private} is not public");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} is public");
        }
    }

    fn gate(policy: Option<HttpPolicy>) -> HttpGate {
        HttpGate::new("test".into(), policy.map(Arc::new), Arc::default())
    }

    async fn get(gate: &mut HttpGate, url: &str) -> Result<u16, HttpError> {
        let request = http::Request::get(url).body(full("")).unwrap();
        let fut = gate.send_request(request, None, Box::new(async { Ok(()) }));
        let (response, _) = Box::into_pin(fut).await?;
        Ok(response.status().as_u16())
    }

    /// A one-shot HTTP server on 127.0.0.1 that answers 204 and counts
    /// the connections it accepted.
    async fn local_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn requests_go_only_where_they_were_approved() {
        use std::sync::atomic::Ordering;
        let (port, seen) = local_server().await;
        let approved = |private_network| HttpPolicy {
            hosts: vec![p("127.0.0.1:*"), p("localhost:*")],
            private_network,
        };
        let local = format!("http://127.0.0.1:{port}/");
        let by_name = format!("http://localhost:{port}/");

        let denied = get(&mut gate(None), &local).await.unwrap_err();
        assert!(matches!(denied, HttpError::HttpRequestDenied), "{denied:?}");
        let unlisted = get(&mut gate(Some(approved(true))), "http://example.com/")
            .await
            .unwrap_err();
        assert!(
            matches!(unlisted, HttpError::HttpRequestDenied),
            "{unlisted:?}"
        );
        for url in [&local, &by_name] {
            let e = get(&mut gate(Some(approved(false))), url)
                .await
                .unwrap_err();
            assert!(
                matches!(e, HttpError::DestinationIpProhibited),
                "{url}: {e:?}"
            );
        }
        assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing reached the server");

        let status = get(&mut gate(Some(approved(true))), &local).await.unwrap();
        assert_eq!(status, 204);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_instance_has_a_few_requests_waiting_at_most() {
        // A server that takes connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut gate = gate(Some(HttpPolicy {
            hosts: vec![p("127.0.0.1:*")],
            private_network: true,
        }));
        let url = format!("http://127.0.0.1:{port}/");
        let mut waiting = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            let request = http::Request::get(&url).body(full("")).unwrap();
            let fut = Box::into_pin(gate.send_request(request, None, Box::new(async { Ok(()) })));
            waiting.push(tokio::spawn(fut));
        }
        let refused = get(&mut gate, &url).await.unwrap_err();
        assert!(
            matches!(refused, HttpError::HttpRequestDenied),
            "{refused:?}"
        );
        // One given up makes room for another.
        waiting.pop().unwrap().abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = http::Request::get(&url).body(full("")).unwrap();
        let another = Box::into_pin(gate.send_request(request, None, Box::new(async { Ok(()) })));
        let pending = tokio::time::timeout(Duration::from_millis(200), another).await;
        assert!(pending.is_err(), "the ninth was not let through to wait");
        for w in waiting {
            w.abort();
        }
    }

    #[tokio::test]
    async fn waiting_for_a_response_is_credited() {
        let wait = Arc::new(NetworkWait::default());
        assert_eq!(wait.credit(), Duration::ZERO);
        let a = wait.enter();
        let b = wait.enter();
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(b);
        let credit = wait.credit();
        assert!(credit >= Duration::from_millis(40), "{credit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(wait.credit(), credit, "no request open, no credit");
        wait.reset();
        assert_eq!(wait.credit(), Duration::ZERO);
    }
}
