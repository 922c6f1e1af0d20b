//! Capability `http`: requests to other servers, through `wasi:http`.
//!
//! A plugin reaches only the hosts its manifest declares under
//! `[http] hosts` and a technician approved, and only public addresses
//! unless the technician allowed the private network. A refused request
//! is an [`Error`] naming the reason (`HttpRequestDenied`,
//! `DestinationIpProhibited`, …); redirects are not followed.
//!
//! ```no_run
//! use corral_plugin::fetch;
//! let page = fetch::get("https://api.example.com/v1/items?q=lamp")?;
//! if page.status == 200 {
//!     let items: serde_json::Value = page.json()?;
//! }
//! let created = fetch::Fetch::new("POST", "https://api.example.com/v1/items")
//!     .header("authorization", "Bearer …")
//!     .json(&serde_json::json!({ "name": "lamp" }))
//!     .send()?;
//! # Ok::<(), corral_plugin::Error>(())
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// The largest response body [`Fetch::send`] reads unless told
/// otherwise ([`Fetch::max_body`]).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// An outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// `GET`, `POST`, …
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
    /// Longest wait for the response's headers, ms (Corral caps it).
    pub timeout_ms: Option<u32>,
    /// Bodies longer than this are an error.
    pub max_body: usize,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// Response headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(format!("the response is not the JSON expected: {e}")))
    }
}

/// A GET of `url`.
pub fn get(url: &str) -> Result<Fetched, Error> {
    Fetch::new("GET", url).send()
}

impl Fetch {
    /// A request with no headers and no body.
    pub fn new(method: &str, url: &str) -> Self {
        Fetch {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("a serializable value");
        self.header("content-type", "application/json").body(body)
    }

    /// Sets the longest wait for the response's headers.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets the largest body read.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(&self) -> Result<Fetched, Error> {
        #[cfg(target_arch = "wasm32")]
        return wasi::send(self);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::fetch(self).map_err(Error::from);
    }
}

/// `scheme://authority/path?query` split up.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn split_url(url: &str) -> Result<(&str, &str, String), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::new(format!("`{url}` is not an http:// or https:// URL")))?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::new(format!(
            "`{url}` is not an http:// or https:// URL"
        )));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(Error::new(format!("`{url}` has no host")));
    }
    Ok((scheme, authority, path))
}

#[cfg(target_arch = "wasm32")]
mod wasi {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::{split_url, Fetch, Fetched};
    use crate::Error;

    fn refused(what: &str) -> Error {
        Error::new(format!("the request was refused: {what}"))
    }

    pub(super) fn send(req: &Fetch) -> Result<Fetched, Error> {
        let (scheme, authority, path) = split_url(&req.url)?;
        let headers = Fields::new();
        for (name, value) in &req.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| Error::new(format!("header `{name}`: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match req.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        request
            .set_method(&method)
            .map_err(|()| refused("method"))?;
        let scheme = if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| refused("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| refused("host"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| refused("path"))?;
        let body = request.body().map_err(|()| refused("body"))?;
        let options = req.timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let _ = options.set_first_byte_timeout(Some(u64::from(ms) * 1_000_000));
            options
        });
        let pending =
            outgoing_handler::handle(request, options).map_err(|e| Error::new(format!("{e:?}")))?;
        if !req.body.is_empty() {
            let out = body.write().map_err(|()| refused("body"))?;
            for chunk in req.body.chunks(4096) {
                out.blocking_write_and_flush(chunk)
                    .map_err(|e| Error::new(format!("sending the body: {e:?}")))?;
            }
            drop(out);
        }
        OutgoingBody::finish(body, None).map_err(|e| Error::new(format!("{e:?}")))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(Error::new(format!("{e:?}"))),
            Some(Err(())) | None => return Err(Error::new("no response")),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response.consume().map_err(|()| Error::new("no body"))?;
        let stream = incoming.stream().map_err(|()| Error::new("no body"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(bytes) => {
                    if body.len() + bytes.len() > req.max_body {
                        return Err(Error::new(format!(
                            "the response body is longer than {} bytes",
                            req.max_body
                        )));
                    }
                    body.extend_from_slice(&bytes);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::new(format!(
                        "reading the body: {}",
                        e.to_debug_string()
                    )))
                }
            }
        }
        Ok(Fetched {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        assert_eq!(
            split_url("https://api.example.com/v1/items?q=1").unwrap(),
            ("https", "api.example.com", "/v1/items?q=1".to_owned())
        );
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            ("http", "127.0.0.1:8080", "/".to_owned())
        );
        assert_eq!(
            split_url("http://h.example?x=1").unwrap(),
            ("http", "h.example", "/?x=1".to_owned())
        );
        for bad in ["ftp://x/", "example.com/a", "https:///a"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stand_in_answers_with_the_fetcher_the_test_set() {
        crate::testing::reset();
        crate::testing::set_fetcher(|req| {
            Ok(Fetched {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: format!("{{\"method\":\"{}\",\"url\":\"{}\"}}", req.method, req.url)
                    .into_bytes(),
            })
        });
        let r = get("https://api.example.com/x").unwrap();
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["url"], "https://api.example.com/x");
        crate::testing::grant(&["log"]);
        let denied = std::panic::catch_unwind(|| get("https://api.example.com/x"));
        assert!(denied.is_err(), "http needs its capability");
        crate::testing::reset();
        let e = get("https://api.example.com/x").unwrap_err();
        assert!(e.message().contains("no fetcher"), "{e}");
    }
}
