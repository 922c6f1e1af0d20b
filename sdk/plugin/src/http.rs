//! Helpers for the plugin's routes (`/api/plugins/{id}/{path}`).
//!
//! Errors use the body every Corral API error has,
//! `{"code": "…", "message": "…"}`, so Corral's clients show them like
//! their own.
//!
//! ```no_run
//! use corral_plugin::prelude::*;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Body { level: String }
//!
//! fn handle(request: &Request) -> Response {
//!     if request.route("PUT", "level").is_some() {
//!         let body: Body = match request.json() {
//!             Ok(body) => body,
//!             Err(response) => return response,
//!         };
//!         return Response::json(200, &serde_json::json!({ "level": body.level }));
//!     }
//!     Response::not_found()
//! }
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__private::wit::corral::plugin::types;

/// A request to one of the plugin's routes. Corral has already checked
/// the caller's sign-in; `caller` says who it is.
pub type Request = types::HttpRequest;
/// The plugin's answer to a [`Request`].
pub type Response = types::HttpResponse;

/// Corral's error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl Request {
    /// Whether this is a `method` request for a path matching `pattern`
    /// (`/`-separated segments, `*` matching any one segment): the
    /// segments `*` matched, percent-decoded, in order.
    pub fn route(&self, method: &str, pattern: &str) -> Option<Vec<String>> {
        if self.method != method {
            return None;
        }
        let path: Vec<&str> = self.segments().collect();
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if path.len() != pattern.len() {
            return None;
        }
        let mut captures = Vec::new();
        for (segment, want) in path.iter().zip(&pattern) {
            if *want == "*" {
                if segment.is_empty() {
                    return None;
                }
                captures.push(percent_decode(segment));
            } else if segment != want {
                return None;
            }
        }
        Some(captures)
    }

    /// The path's segments, as sent (not decoded).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.trim_matches('/').split('/')
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter called `name`, decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .trim_start_matches('?')
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| decode_query(key) == name)
            .map(|(_, value)| decode_query(value))
    }

    /// The body read as JSON, or the 400 response to send when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(Response::error(
                400,
                "malformed_json",
                "the request needs a JSON body",
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            let message = format!("the body is not valid JSON for this request: {e}");
            Response::error(400, "malformed_json", &message)
        })
    }

    /// The body as text, or the 400 response to send when it is not UTF-8.
    pub fn text(&self) -> Result<&str, Response> {
        std::str::from_utf8(&self.body)
            .map_err(|_| Response::error(400, "bad_request", "the body is not UTF-8 text"))
    }
}

impl Response {
    /// A response with `status`, no headers and no body.
    pub fn status(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `value` as a JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::bytes(status, "application/json", body),
            Err(_) => Self::error(500, "internal", "internal error"),
        }
    }

    /// Corral's error body: `{"code": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::to_vec(&ErrorBody { code, message })
            .expect("a struct of two strings serializes");
        Self::bytes(status, "application/json", body)
    }

    /// 400 `bad_request` with `message`, which should name the field, e.g.
    /// "`level` must be one of …".
    pub fn bad_request(message: &str) -> Self {
        Self::error(400, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::error(404, "not_found", "not found")
    }

    /// 204 without a body.
    pub fn no_content() -> Self {
        Self::status(204)
    }

    /// Text with `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::bytes(
            status,
            "text/plain; charset=utf-8",
            text.into().into_bytes(),
        )
    }

    /// `body` with the given content type.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body,
        }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body read as JSON (for tests).
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

fn decode_query(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

/// Decodes `%XX` escapes; anything that is not a valid escape stays as it
/// is, and bytes that do not form UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Caller, Role};

    fn request(method: &str, path: &str, query: &str, body: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
            caller: Caller {
                user_id: "u1".to_owned(),
                username: "ann".to_owned(),
                role: Role::User,
            },
        }
    }

    #[test]
    fn routes_match_whole_segments() {
        let r = request("POST", "collections/my%20docs/documents", "", "");
        assert_eq!(
            r.route("POST", "collections/*/documents"),
            Some(vec!["my docs".to_owned()])
        );
        assert_eq!(r.route("GET", "collections/*/documents"), None);
        assert_eq!(r.route("POST", "collections/*"), None);
        assert_eq!(r.route("POST", "collections/*/documents/*"), None);
        assert_eq!(
            request("GET", "level", "", "").route("GET", "level"),
            Some(vec![])
        );
        assert_eq!(request("GET", "levels", "", "").route("GET", "level"), None);
        assert_eq!(request("GET", "a//b", "", "").route("GET", "a/*/b"), None);
    }

    #[test]
    fn query_params_are_decoded() {
        let r = request("GET", "x", "q=caf%C3%A9+au+lait&empty=&flag&n=1", "");
        assert_eq!(r.query_param("q").as_deref(), Some("café au lait"));
        assert_eq!(r.query_param("empty").as_deref(), Some(""));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("n").as_deref(), Some("1"));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn broken_escapes_stay_as_written() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn headers_ignore_case() {
        let r = request("GET", "x", "", "");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), None);
    }

    #[test]
    fn bad_json_gets_corrals_error_body() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            level: String,
        }
        for body in ["", "  ", "{", "{\"level\": 3}", "[]"] {
            let response = request("PUT", "level", "", body)
                .json::<Body>()
                .unwrap_err();
            assert_eq!(response.status, 400, "{body:?}");
            let error: serde_json::Value = response.body_json().unwrap();
            assert_eq!(error["code"], "malformed_json", "{body:?}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let ok = request("PUT", "level", "", "{\"level\": \"expert\"}").json::<Body>();
        assert!(ok.is_ok());
    }

    #[test]
    fn responses_carry_json() {
        let r = Response::json(201, &serde_json::json!({"id": 7}));
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(r.body, br#"{"id":7}"#);
        let e = Response::error(409, "conflict", "the \"name\" is taken");
        let body: serde_json::Value = e.body_json().unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": "conflict", "message": "the \"name\" is taken"})
        );
        assert_eq!(Response::not_found().status, 404);
        assert!(Response::no_content().body.is_empty());
    }
}
