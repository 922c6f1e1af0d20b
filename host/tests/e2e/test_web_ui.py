"""The web UI as a browser gets it from a real server: the app embedded
in the binary at `/` and at any page's URL, hashed assets cached for good
and compressed, the API's own answers beside it, and the refresh token in
an HttpOnly cookie that only the sign-in routes receive.

The test run builds the UI before the binary, so a binary without one is
a failure here, not a skip."""

from __future__ import annotations

import re

import requests

from corral import TIMEOUT

SCRIPT = re.compile(r'<script[^>]*\bsrc="(/assets/[^"]+\.js)"')


def get(server, path: str, **kw) -> requests.Response:
    return requests.get(server.base + path, timeout=TIMEOUT, **kw)


def app_page(server, path: str) -> str:
    r = get(server, path)
    assert r.status_code == 200, (
        f"{path}: {r.status_code} (503 means the binary was built without web/dist)\n{r.text[:400]}"
    )
    assert r.headers["Content-Type"].startswith("text/html"), r.headers
    assert r.headers["Cache-Control"] == "no-cache", r.headers
    csp = r.headers.get("Content-Security-Policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    assert 'id="root"' in r.text, r.text[:400]
    assert SCRIPT.search(r.text), f"no script under /assets/ in {path}:\n{r.text[:800]}"
    return r.text


def test_the_app_is_served_at_the_root_and_at_every_page(server):
    index = app_page(server, "/")
    for path in ["/admin/users", "/chat/01JABCDEF", "/sign-in?next=%2Fchat"]:
        assert app_page(server, path) == index, path


def test_hashed_assets_are_cached_for_good_and_compressed(server):
    script = SCRIPT.search(app_page(server, "/")).group(1)
    r = get(server, script, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text[:200]
    assert r.headers["Content-Type"].startswith("text/javascript"), r.headers
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers.get("Content-Encoding") == "gzip", r.headers
    assert "Accept-Encoding" in r.headers.get("Vary", "")
    assert len(r.content) > 1000  # requests has decoded it
    etag = r.headers["ETag"]
    again = get(server, script, headers={"If-None-Match": etag})
    assert again.status_code == 304

    missing = get(server, "/assets/no-such-build.js")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_the_api_keeps_its_own_answers(server):
    r = get(server, "/api/no-such-route")
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text[:200]
    r = requests.post(server.base + "/api/me", json={}, timeout=TIMEOUT)
    assert r.status_code == 405, r.text[:200]
    assert get(server, "/openapi.json").json()["paths"]
    assert get(server, "/healthz").status_code == 200
    r = get(server, "/api/auth/options")
    assert r.status_code == 200 and isinstance(r.json()["registration_open"], bool), r.text


def test_the_refresh_cookie_renews_and_signing_out_ends_it(server):
    password = server.create_account("cookie-user", "user")
    browser = requests.Session()
    r = browser.post(
        server.base + "/api/auth/login",
        json={"username": "cookie-user", "password": password, "refresh_cookie": True},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()
    set_cookie = r.headers["Set-Cookie"]
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/auth"]:
        assert attribute in set_cookie, set_cookie
    first = browser.cookies.get("corral_refresh")
    assert first

    # The cookie is scoped to the sign-in routes: no other route gets it.
    prepared = browser.prepare_request(requests.Request("GET", server.base + "/api/me"))
    assert "corral_refresh" not in prepared.headers.get("Cookie", "")

    r = browser.post(server.base + "/api/auth/refresh", json={}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()
    access = r.json()["access_token"]
    assert browser.cookies.get("corral_refresh") not in (None, first)
    me = get(server, "/api/me", headers={"Authorization": f"Bearer {access}"})
    assert me.json()["username"] == "cookie-user"

    r = browser.post(server.base + "/api/auth/logout", json={}, timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    assert browser.cookies.get("corral_refresh") is None
    r = browser.post(server.base + "/api/auth/refresh", json={}, timeout=TIMEOUT)
    assert r.status_code == 401, r.text
