//! The web UI: the single-page app built from `web/`, embedded in the
//! binary at build time or read from the configured `web_dir`. Hashed
//! assets are cached for good; every other path a browser may open gets
//! `index.html`, whose router shows the page.

mod media;

use media::compressible;
pub use media::content_type;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// One embedded file of the built UI.
pub struct Asset {
    /// Relative to the build's root, `/`-separated: `assets/index-abc.js`.
    pub path: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// A gzip copy, when that is smaller.
    pub gzip: Option<&'static [u8]>,
    pub etag: &'static str,
}

mod embedded {
    use super::Asset;
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Paths that belong to the API and the documentation: never the UI's.
const SERVER_PREFIXES: &[&str] = &["/api", "/v1", "/docs", "/openapi.json", "/metrics"];
const PROBES: &[&str] = &["/healthz", "/readyz"];

/// Hashed files: their names change with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else is checked with the server before each use.
const REVALIDATE: &str = "no-cache";

/// Where the UI's files come from.
#[derive(Clone)]
pub struct WebUi {
    source: Arc<Source>,
}

enum Source {
    Embedded(&'static [Asset]),
    Dir {
        root: PathBuf,
        cache: Mutex<HashMap<PathBuf, Prepared>>,
    },
}

/// Most files of a `web_dir` kept prepared in memory.
const MAX_CACHED: usize = 1024;

/// A file of a `web_dir` read, hashed and compressed once, kept until it
/// changes on disk.
#[derive(Clone)]
struct Prepared {
    modified: Option<SystemTime>,
    len: u64,
    body: Bytes,
    gzip: Option<Bytes>,
    content_type: &'static str,
    etag: String,
}

/// A file found, ready to answer with.
struct File {
    body: Body,
    len: usize,
    content_type: &'static str,
    etag: String,
    gzipped: bool,
    compressible: bool,
}

impl WebUi {
    /// Files from `dir` when given, else the copy embedded in the binary.
    pub fn new(dir: Option<&Path>) -> Self {
        let source = match dir {
            Some(dir) => Source::Dir {
                root: dir.to_path_buf(),
                cache: Mutex::new(HashMap::new()),
            },
            None => Source::Embedded(embedded::ASSETS),
        };
        WebUi {
            source: Arc::new(source),
        }
    }

    /// Whether the binary carries a built UI.
    pub fn embedded() -> bool {
        !embedded::ASSETS.is_empty()
    }

    /// The router's fallback: a UI file or `index.html` for GET and HEAD
    /// outside the API, the API's own 404 otherwise.
    pub async fn answer(&self, request: Request) -> Response {
        let method = request.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return AppError::NotFound("route").into_response();
        }
        let raw = request.uri().path();
        if belongs_to_server(raw) {
            return AppError::NotFound("route").into_response();
        }
        let Some(relative) = clean_path(raw) else {
            return AppError::NotFound("route").into_response();
        };
        let headers = request.headers();
        let gzip_ok = accepts_gzip(headers);
        let asset = relative == "assets" || relative.starts_with("assets/");
        let (file, cache) = match self.file(&relative, gzip_ok).await {
            Some(file) => (file, if asset { IMMUTABLE } else { REVALIDATE }),
            // A missing hashed file is an old page asking for what a
            // newer build replaced: a 404, not the page in its place.
            None if asset || hidden(&relative) || looks_like_a_file(&relative) => {
                return AppError::NotFound("file").into_response()
            }
            None => match self.file("index.html", gzip_ok).await {
                Some(file) => (file, REVALIDATE),
                None => return not_built(),
            },
        };
        respond(file, cache, headers, method == Method::HEAD)
    }

    async fn file(&self, relative: &str, gzip_ok: bool) -> Option<File> {
        match self.source.as_ref() {
            Source::Embedded(assets) => {
                let asset = assets.iter().find(|a| a.path == relative)?;
                let (body, gzipped) = match asset.gzip {
                    Some(packed) if gzip_ok => (packed, true),
                    _ => (asset.body, false),
                };
                Some(File {
                    body: Body::from(body),
                    len: body.len(),
                    content_type: asset.content_type,
                    etag: asset.etag.to_owned(),
                    gzipped,
                    compressible: asset.gzip.is_some(),
                })
            }
            Source::Dir { root, cache } => {
                // Dot files (`.env`, `.git/`) are never served.
                if hidden(relative) {
                    return None;
                }
                let (path, meta) = inside(root, relative).await?;
                let modified = meta.modified().ok();
                let len = meta.len();
                let cached = lock(cache)
                    .get(&path)
                    .filter(|p| p.modified == modified && p.len == len)
                    .cloned();
                let prepared = match cached {
                    Some(prepared) => prepared,
                    None => {
                        let body = tokio::fs::read(&path).await.ok()?;
                        let prepared = tokio::task::spawn_blocking({
                            let relative = relative.to_owned();
                            move || prepare(&relative, body, modified, len)
                        })
                        .await
                        .ok()?;
                        let mut cache = lock(cache);
                        if cache.len() >= MAX_CACHED && !cache.contains_key(&path) {
                            cache.clear();
                        }
                        cache.insert(path, prepared.clone());
                        prepared
                    }
                };
                let compressible = prepared.gzip.is_some();
                let (body, gzipped) = match prepared.gzip {
                    Some(packed) if gzip_ok => (packed, true),
                    _ => (prepared.body, false),
                };
                Some(File {
                    len: body.len(),
                    body: Body::from(body),
                    content_type: prepared.content_type,
                    etag: prepared.etag,
                    gzipped,
                    compressible,
                })
            }
        }
    }
}

fn lock(
    cache: &Mutex<HashMap<PathBuf, Prepared>>,
) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Prepared>> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn prepare(relative: &str, body: Vec<u8>, modified: Option<SystemTime>, len: u64) -> Prepared {
    let content_type = content_type(relative);
    let etag = etag(&body);
    let gzip = if compressible(content_type) {
        gzip(&body)
            .filter(|p| p.len() < body.len())
            .map(Bytes::from)
    } else {
        None
    };
    Prepared {
        modified,
        len,
        body: Bytes::from(body),
        gzip,
        content_type,
        etag,
    }
}

fn respond(file: File, cache: &'static str, request: &HeaderMap, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&file.etag) {
        headers.insert(header::ETAG, etag);
    }
    if file.compressible {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if etag_matches(request, &file.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    if file.gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.len));
    let body = if head { Body::empty() } else { file.body };
    (StatusCode::OK, headers, body).into_response()
}

/// What `/` answers when there is no UI to serve.
fn not_built() -> Response {
    let page = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
        <title>Corral: web UI not built</title></head><body>\
        <h1>The web UI is not built</h1>\
        <p>This Corral binary was built without its web UI. Build it with \
        <code>scripts/run.sh</code>, or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code> \
        and then build Corral again; or point <code>--web-dir</code> at a built <code>web/dist</code>.</p>\
        <p>The API works meanwhile: see <a href=\"/docs\">/docs</a>.</p></body></html>\n";
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

fn belongs_to_server(path: &str) -> bool {
    PROBES.contains(&path)
        || SERVER_PREFIXES.iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// The request path decoded and relative to the UI's root, or `None` when
/// it could name something outside (`..`, a backslash, a NUL) or does
/// not decode (invalid UTF-8 or percent-encoding).
fn clean_path(raw: &str) -> Option<String> {
    let decoded = percent_decode(raw)?;
    let mut parts = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part if part.contains(['\\', '\0']) => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A last segment with the extension of a static file type asks for a
/// file, not a page. Other dots are part of page paths: model names such
/// as `/models/qwen2.5-7b`.
fn looks_like_a_file(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or("");
    name.contains('.') && content_type(name) != "application/octet-stream"
}

/// Whether a segment of the path is a dot file or folder.
fn hidden(relative: &str) -> bool {
    relative.split('/').any(|part| part.starts_with('.'))
}

/// `relative` under `root`, as long as it is a file that stays inside
/// once symbolic links are followed.
async fn inside(root: &Path, relative: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let mut path = root.clone();
    for part in Path::new(relative).components() {
        match part {
            Component::Normal(part) => path.push(part),
            _ => return None,
        }
    }
    let resolved = tokio::fs::canonicalize(&path).await.ok()?;
    let meta = tokio::fs::metadata(&resolved).await.ok()?;
    (resolved.starts_with(&root) && meta.is_file()).then_some((resolved, meta))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(clean_path("/").as_deref(), Some(""));
        assert_eq!(
            clean_path("/assets/a%2Db.js").as_deref(),
            Some("assets/a-b.js")
        );
        for bad in [
            "/../etc/passwd",
            "/assets/..%2F..%2Fetc/passwd",
            "/%2e%2e/x",
            "/a%5C..%5Cb",
            "/a%00",
            "/%zz",
        ] {
            assert_eq!(clean_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_paths_are_not_the_ui() {
        for path in [
            "/api",
            "/api/nope",
            "/v1/models",
            "/docs/",
            "/openapi.json",
            "/healthz",
        ] {
            assert!(belongs_to_server(path), "{path}");
        }
        for path in ["/", "/chat/abc", "/apis", "/admin/users", "/v1x"] {
            assert!(!belongs_to_server(path), "{path}");
        }
    }

    #[test]
    fn dotted_pages_are_not_files() {
        for page in [
            "models/qwen2.5-7b",
            "models/llama-3.1-8b.gguf",
            "chat/a.b",
            "",
        ] {
            assert!(!looks_like_a_file(page), "{page}");
        }
        for file in [
            "missing.js",
            "a/b.css",
            "favicon.ico",
            "x.woff2",
            "robots.txt",
            "x.JSON",
        ] {
            assert!(looks_like_a_file(file), "{file}");
        }
        assert!(hidden(".env"));
        assert!(hidden("a/.git/config"));
        assert!(!hidden("models/qwen2.5-7b"));
    }

    #[test]
    fn gzip_unless_refused() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip"),
        );
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&headers));
    }
}
