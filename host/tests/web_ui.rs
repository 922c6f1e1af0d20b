//! What browsers get: the refresh token in an `HttpOnly` cookie scoped to
//! the sign-in routes, the sign-in options, and the web UI served at `/`
//! with history-API routing and long-lived caching of hashed assets.

#[path = "support.rs"]
mod support;

use std::io::Read as _;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use corral_host::config::Config;
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{assert_error, Resp, TestApp, PASSWORD};

/// A JSON POST, with a cookie header when given.
fn post(path: &str, body: &Value, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// The `Set-Cookie` headers of an answer.
fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The one refresh cookie an answer sets: its `name=value` pair and its
/// attributes.
fn refresh_cookie(r: &Resp) -> (String, Vec<String>) {
    let cookies = set_cookies(r);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let mut parts = cookies[0].split(';').map(|p| p.trim().to_owned());
    let pair = parts.next().unwrap();
    assert!(pair.starts_with("corral_refresh="), "{pair}");
    (pair, parts.collect())
}

fn assert_attributes(attributes: &[String], max_age: &str) {
    for want in ["Path=/api/auth", "HttpOnly", "SameSite=Strict", max_age] {
        assert!(
            attributes.iter().any(|a| a == want),
            "{want} missing: {attributes:?}"
        );
    }
}

/// Asserts that the answer removes the refresh cookie.
#[track_caller]
fn assert_cleared(r: &Resp) {
    let (pair, attributes) = refresh_cookie(r);
    assert_eq!(pair, "corral_refresh=");
    assert_attributes(&attributes, "Max-Age=0");
}

const THIRTY_DAYS: &str = "Max-Age=2592000";

async fn cookie_login(t: &TestApp, username: &str) -> (Resp, String) {
    let r = t
        .send(post(
            "/api/auth/login",
            &json!({"username": username, "password": PASSWORD, "refresh_cookie": true}),
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (pair, _) = refresh_cookie(&r);
    (r, pair)
}

#[tokio::test]
async fn sign_in_in_cookie_mode_keeps_the_refresh_token_out_of_the_body() {
    let t = TestApp::new().await;
    t.create("ada", Role::User).await;
    let (r, _) = cookie_login(&t, "ada").await;
    let body = r.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body["access_token"].is_string());
    assert_eq!(body["user"]["username"], "ada");
    let (pair, attributes) = refresh_cookie(&r);
    assert!(pair.len() > "corral_refresh=crt_".len() + 20, "{pair}");
    assert_attributes(&attributes, THIRTY_DAYS);
    assert!(!attributes.iter().any(|a| a == "Secure"), "{attributes:?}");

    // Registration and password changes speak the same way.
    let r = t
        .send(post(
            "/api/auth/register",
            &json!({"username": "bob", "password": PASSWORD, "refresh_cookie": true}),
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none());
    let (_, attributes) = refresh_cookie(&r);
    assert_attributes(&attributes, THIRTY_DAYS);
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let mut change = post(
        "/api/me/password",
        &json!({"current_password": PASSWORD, "new_password": "another good password", "refresh_cookie": true}),
        None,
    );
    change.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {access}").parse().unwrap(),
    );
    let r = t.send(change).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none());
    refresh_cookie(&r);

    // Without the flag, nothing changes: the token is in the body, no cookie.
    let r = t
        .send(post(
            "/api/auth/login",
            &json!({"username": "ada", "password": PASSWORD}),
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["refresh_token"].is_string());
    assert!(set_cookies(&r).is_empty());
}

#[tokio::test]
async fn the_cookie_refreshes_once_and_its_reuse_ends_the_sign_in() {
    let t = TestApp::new().await;
    t.create("ada", Role::User).await;
    let (_, first) = cookie_login(&t, "ada").await;

    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&first)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none());
    assert!(r.json()["access_token"].is_string());
    let (second, attributes) = refresh_cookie(&r);
    assert_ne!(second, first);
    assert_attributes(&attributes, THIRTY_DAYS);

    // Other cookies beside it do not matter.
    let both = format!("theme=dark; {second}; lang=ro");
    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&both)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (third, _) = refresh_cookie(&r);

    // The first cookie again: reuse. Refused, cleared, and the whole
    // sign-in revoked, the newest cookie too.
    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&first)))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_cleared(&r);
    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&third)))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_cleared(&r);

    // Neither a cookie nor a token.
    let r = t.send(post("/api/auth/refresh", &json!({}), None)).await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_cleared(&r);
    // The body must still be JSON: a form cannot send it.
    let form = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/refresh")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, third.as_str())
        .body(Body::from("a=b"))
        .unwrap();
    let r = t.send(form).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    // Unknown fields are still refused.
    let r = t
        .send(post(
            "/api/auth/refresh",
            &json!({"token": "x"}),
            Some(&third),
        ))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
}

#[tokio::test]
async fn signing_out_with_the_cookie_ends_it() {
    let t = TestApp::new().await;
    t.create("ada", Role::User).await;
    let (_, cookie) = cookie_login(&t, "ada").await;

    let r = t
        .send(post("/api/auth/logout", &json!({}), Some(&cookie)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_cleared(&r);
    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&cookie)))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_cleared(&r);

    // Signing out without any token still clears the cookie.
    let r = t.send(post("/api/auth/logout", &json!({}), None)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_cleared(&r);
}

#[tokio::test]
async fn a_disabled_accounts_cookie_is_refused_and_cleared() {
    let t = TestApp::new().await;
    let admin = t.signed_in("root", Role::Admin).await;
    let ada = t.create("ada", Role::User).await;
    let (_, cookie) = cookie_login(&t, "ada").await;
    let (status, body) = t
        .patch(
            &format!("/api/users/{}", ada.id),
            Some(&admin.access),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = t
        .send(post("/api/auth/refresh", &json!({}), Some(&cookie)))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::FORBIDDEN,
        "account_disabled",
    );
    assert_cleared(&r);
}

#[tokio::test]
async fn the_cookie_is_secure_only_behind_a_trusted_proxy_saying_https() {
    let t = TestApp::with_config(Config {
        trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        ..Config::default()
    })
    .await;
    t.create("ada", Role::User).await;
    let login = |peer: [u8; 4], proto: Option<&str>| {
        let mut request = post(
            "/api/auth/login",
            &json!({"username": "ada", "password": PASSWORD, "refresh_cookie": true}),
            None,
        );
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        if let Some(proto) = proto {
            request
                .headers_mut()
                .insert("x-forwarded-proto", proto.parse().unwrap());
        }
        request
    };
    let secure = |r: &Resp| refresh_cookie(r).1.iter().any(|a| a == "Secure");

    let r = t.send(login([10, 0, 0, 1], Some("https"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(secure(&r), "{:?}", set_cookies(&r));
    let r = t.send(login([10, 0, 0, 1], Some("http"))).await;
    assert!(!secure(&r), "{:?}", set_cookies(&r));
    // Anyone else saying https is not believed.
    let r = t.send(login([192, 0, 2, 7], Some("https"))).await;
    assert!(!secure(&r), "{:?}", set_cookies(&r));
}

#[tokio::test]
async fn the_sign_in_options_tell_whether_registration_is_open() {
    let t = TestApp::new().await;
    let (status, body) = t.get("/api/auth/options", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"registration_open": true}));

    let admin = t.signed_in("root", Role::Admin).await;
    let (status, _) = t
        .patch(
            "/api/settings",
            Some(&admin.access),
            &json!({"registration_open": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = t.get("/api/auth/options", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"registration_open": false}));
}

// The web UI.

const INDEX: &str = "<!doctype html><html><head><script type=\"module\" src=\"/assets/app-abc123.js\"></script></head><body><div id=\"root\"></div></body></html>";
/// Long enough that gzip makes it smaller.
fn script() -> String {
    "console.log('corral');\n".repeat(200)
}

/// An app serving a fake build from a temporary `web_dir`; the folder
/// sits inside another that holds a secret beside it.
async fn ui_app() -> (TestApp, tempfile::TempDir) {
    let outer = tempfile::tempdir().unwrap();
    let dist = outer.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::write(dist.join("index.html"), INDEX).unwrap();
    std::fs::write(dist.join("assets/app-abc123.js"), script()).unwrap();
    std::fs::write(
        dist.join("favicon.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    std::fs::write(outer.path().join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), dist.join("leak.txt")).unwrap();
    let t = TestApp::with_config(Config {
        web_dir: Some(dist),
        ..Config::default()
    })
    .await;
    (t, outer)
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(Method::GET).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

#[track_caller]
fn assert_index(r: &Resp, path: &str) {
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    assert_eq!(r.text(), INDEX, "{path}");
    assert_eq!(
        r.header(header::CONTENT_TYPE).as_deref(),
        Some("text/html; charset=utf-8"),
        "{path}"
    );
    assert_eq!(
        r.header(header::CACHE_CONTROL).as_deref(),
        Some("no-cache"),
        "{path}"
    );
    let csp = r
        .header(header::CONTENT_SECURITY_POLICY)
        .unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(r.header(header::X_CONTENT_TYPE_OPTIONS).is_some(), "{path}");
}

#[tokio::test]
async fn pages_get_the_app_and_hashed_assets_are_cached_for_good() {
    let (t, _dir) = ui_app().await;
    for path in [
        "/",
        "/chat/xyz",
        "/admin/users",
        "/tickets/01J/?tab=notes",
        "/index.html",
    ] {
        let r = t.send(get(path, &[])).await;
        assert_index(&r, path);
    }

    let r = t.send(get("/assets/app-abc123.js", &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), script());
    assert_eq!(
        r.header(header::CONTENT_TYPE).as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        r.header(header::CACHE_CONTROL).as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(r.header(header::VARY).as_deref(), Some("Accept-Encoding"));
    assert!(r.header(header::CONTENT_ENCODING).is_none());
    assert!(r.header(header::CONTENT_SECURITY_POLICY).is_some());

    let r = t.send(get("/favicon.svg", &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header(header::CONTENT_TYPE).as_deref(),
        Some("image/svg+xml")
    );
    assert_eq!(r.header(header::CACHE_CONTROL).as_deref(), Some("no-cache"));

    // A hashed file a newer build replaced is missing, not the page.
    for path in ["/assets/missing.js", "/assets/", "/robots.txt"] {
        let r = t.send(get(path, &[])).await;
        assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn dotted_page_paths_get_the_app_and_missing_files_do_not() {
    let (t, dir) = ui_app().await;
    for path in [
        "/models/qwen2.5-7b",
        "/models/llama-3.1-8b.gguf",
        "/chat/v1.2",
    ] {
        let r = t.send(get(path, &[])).await;
        assert_index(&r, path);
    }
    for path in [
        "/assets/x.js",
        "/missing.js",
        "/app.css",
        "/logo.png",
        "/x.map",
    ] {
        let r = t.send(get(path, &[])).await;
        assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    }
    // Dot files in the folder are never served, nor is the page in their place.
    let dist = dir.path().join("dist");
    std::fs::write(dist.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(dist.join(".git")).unwrap();
    std::fs::write(dist.join(".git/config"), "[core]").unwrap();
    for path in ["/.env", "/.git/config", "/%2eenv", "/.missing"] {
        let r = t.send(get(path, &[])).await;
        assert!(!r.text().contains("SECRET"), "{path}");
        assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn a_changed_file_is_served_as_changed() {
    let (t, dir) = ui_app().await;
    let path = dir.path().join("dist/favicon.svg");
    let first = t.send(get("/favicon.svg", &[])).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = t.send(get("/favicon.svg", &[])).await;
    assert_eq!(again.text(), first.text());
    assert_eq!(again.header(header::ETAG), first.header(header::ETAG));
    // A different length is seen at once, whatever the clock's resolution.
    let changed = "<svg xmlns=\"http://www.w3.org/2000/svg\"><g/></svg>";
    std::fs::write(&path, changed).unwrap();
    let r = t.send(get("/favicon.svg", &[])).await;
    assert_eq!(r.text(), changed);
    assert_ne!(r.header(header::ETAG), first.header(header::ETAG));
}

#[tokio::test]
async fn gzip_etags_and_head() {
    let (t, _dir) = ui_app().await;
    let r = t
        .send(get(
            "/assets/app-abc123.js",
            &[("accept-encoding", "gzip, deflate, br")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_ENCODING).as_deref(), Some("gzip"));
    assert_eq!(r.header(header::VARY).as_deref(), Some("Accept-Encoding"));
    assert!(r.body.len() < script().len());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, script());
    let r = t
        .send(get(
            "/assets/app-abc123.js",
            &[("accept-encoding", "gzip;q=0")],
        ))
        .await;
    assert!(r.header(header::CONTENT_ENCODING).is_none());

    let etag = r.header(header::ETAG).expect("an ETag");
    let r = t
        .send(get("/assets/app-abc123.js", &[("if-none-match", &etag)]))
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = t
        .send(get(
            "/assets/app-abc123.js",
            &[("if-none-match", "\"other\"")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let head = Request::builder()
        .method(Method::HEAD)
        .uri("/chat/xyz")
        .body(Body::empty())
        .unwrap();
    let r = t.send(head).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header(header::CONTENT_LENGTH).as_deref(),
        Some(INDEX.len().to_string().as_str())
    );
    assert_eq!(
        r.header(header::CONTENT_TYPE).as_deref(),
        Some("text/html; charset=utf-8")
    );
}

#[tokio::test]
async fn the_api_keeps_its_own_answers() {
    let (t, _dir) = ui_app().await;
    for path in ["/api/nope", "/api", "/v1/nope", "/openapi.json/x"] {
        let r = t.send(get(path, &[])).await;
        assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    }
    let r = t.send(post("/chat/xyz", &json!({}), None)).await;
    assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    let r = t.send(post("/api/me", &json!({}), None)).await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = t.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = t.send(get("/openapi.json", &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["paths"].is_object());
}

#[tokio::test]
async fn nothing_outside_the_folder_is_served() {
    let (t, _dir) = ui_app().await;
    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/leak.txt",
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = t.send(get(path, &[])).await;
        let text = r.text();
        assert!(
            !text.contains("top secret") && !text.contains("root:"),
            "{path} leaked: {text}"
        );
        assert!(
            r.status == StatusCode::NOT_FOUND || text == INDEX,
            "{path}: {} {text}",
            r.status
        );
    }
}

#[tokio::test]
async fn without_a_built_ui_the_root_says_how_to_build_it() {
    let empty = tempfile::tempdir().unwrap();
    let t = TestApp::with_config(Config {
        web_dir: Some(empty.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    let r = t.send(get("/", &[])).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r
        .header(header::CONTENT_TYPE)
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().contains("npm run build"), "{}", r.text());
    assert!(r.header(header::CONTENT_SECURITY_POLICY).is_some());
}
