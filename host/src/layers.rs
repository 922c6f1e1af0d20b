//! Middleware every answer passes through: the security headers a browser
//! needs to protect the web UI, and the time limit of ordinary requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Extensions, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::AppError;

/// The policy of everything but the API documentation: the single-page
/// web UI loads its scripts, styles, fonts and images from Corral itself
/// and talks only to it; nothing may frame it, plugins (`object`) are off,
/// and `<base>` cannot point relative URLs elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Swagger UI at `/docs` (the vendored 5.17.14) runs only its own files,
/// but injects one `<style>` block (its logo's colours) while it renders;
/// that block's hash is allowed rather than `'unsafe-inline'`. Checked in
/// Chromium: with this policy the page renders without a CSP violation.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every answer, errors included, and keeps
/// answers of the API out of caches.
///
/// `Referrer-Policy: no-referrer`: Corral's URLs name private records
/// (chat and ticket ids) and nothing Corral links to needs to know where a
/// visitor came from, so no referrer is sent at all, not even the origin.
pub async fn security_headers(
    State(config): State<Arc<Config>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let docs = path.starts_with("/docs");
    let private = ["/api", "/v1", "/metrics"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let tls = came_over_tls(&config, request.extensions(), request.headers());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A page that opened Corral in a new window keeps no handle on it (it
    // could later send that tab to a look-alike sign-in page).
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Chats, tickets and accounts stay out of the browser's disk cache
    // (and any cache between), unless a handler chose otherwise.
    if private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // A stricter policy a handler set (a plugin's answers run sandboxed)
    // stays.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if docs {
                DOCS_CONTENT_SECURITY_POLICY
            } else {
                CONTENT_SECURITY_POLICY
            }),
        );
    }
    // The host name only: Corral does not speak for the other services on
    // its subdomains.
    if tls && config.hsts_max_age_secs > 0 {
        let value = format!("max-age={}", config.hsts_max_age_secs);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
    }
    response
}

/// Whether a request came over TLS: always when Corral serves HTTPS itself
/// (it then speaks nothing else); otherwise when a trusted reverse proxy in
/// front says so with `X-Forwarded-Proto: https`. The header from anyone
/// else is ignored, lest a client on plain HTTP pin HTTPS on a host that
/// does not serve it.
pub fn came_over_tls(config: &Config, extensions: &Extensions, headers: &HeaderMap) -> bool {
    if config.tls_cert.is_some() {
        return true;
    }
    let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() else {
        return false;
    };
    if !forwarded_https(headers) {
        return false;
    }
    if crate::client_addr::is_trusted(&config.trusted_proxies, peer.ip()) {
        return true;
    }
    // Most likely a TLS proxy left out of `trusted_proxies`: its browsers
    // then get refresh cookies without `Secure`, and no HSTS. Said once.
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            peer = %peer.ip(),
            "a request says it came over HTTPS (X-Forwarded-Proto) from an address not in \
             `trusted_proxies`: if a reverse proxy terminates TLS there, list it, or the \
             refresh cookie is sent without `Secure` and no HSTS is set"
        );
    });
    false
}

/// Whether the nearest proxy's `X-Forwarded-Proto` (the last value) is
/// `https`.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Answers `503 timeout` when a request is not answered within `limit`.
/// The limit runs until the answer's head is ready: a streamed answer
/// (Server-Sent Events, a WebSocket upgrade) is bounded by how soon it
/// starts, not by how long it streams. Routes that legitimately work
/// longer before they answer are left out (see [`unbounded`]).
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if limit.is_zero() || unbounded(request.uri().path()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout(limit.as_secs()).into_response(),
    }
}

/// Generations answered whole (their length is bounded by `max_tokens`
/// and the allowance, and they stop when the client leaves), embeddings
/// and loading a model (which may read gigabytes first).
fn unbounded(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings"
    ) || (path.starts_with("/api/models/") && path.ends_with("/load"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nearest_proxy_says_https() {
        let mut headers = HeaderMap::new();
        assert!(!forwarded_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(forwarded_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(!forwarded_https(&headers));
    }

    #[test]
    fn generations_and_loads_are_not_timed() {
        assert!(unbounded("/v1/chat/completions"));
        assert!(unbounded("/api/models/abc/load"));
        assert!(!unbounded("/api/models/abc"));
        assert!(!unbounded("/api/chats"));
    }
}
