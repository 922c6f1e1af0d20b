//! `test-kv-user`: per-user and shared key-value data through routes, so
//! Corral's tests can check that one user never sees another's data and
//! that the quota holds.
//!
//! - `PUT items/{key}` stores the body under the caller's `items/{key}`
//!   (204; 409 `limit_reached` with the host's message when it fails);
//! - `GET items/{key}` returns it (200, `application/octet-stream`) or 404;
//! - `DELETE items/{key}`: 204, or 404 when there was none;
//! - `GET items`: `{"user": "<caller's id>", "keys": [...]}`;
//! - `PUT shared/{key}`, `GET shared/{key}`: the same on shared data.

use corral_plugin::kv::Store;
use corral_plugin::prelude::*;

fn put(store: Store, key: &str, body: &[u8]) -> Response {
    match store.set(key, body) {
        Ok(()) => Response::no_content(),
        Err(e) => Response::error(409, "limit_reached", e.message()),
    }
}

fn get(store: Store, key: &str) -> Response {
    match store.get(key) {
        Some(value) => Response::bytes(200, "application/octet-stream", value),
        None => Response::error(404, "not_found", &format!("no value under `{key}`")),
    }
}

struct KvUser;

impl Plugin for KvUser {
    fn handle(request: &Request) -> Response {
        let user = kv::user();
        let shared = kv::shared();
        if let Some(k) = request.route("PUT", "items/*") {
            return put(user, &format!("items/{}", k[0]), &request.body);
        }
        if let Some(k) = request.route("GET", "items/*") {
            return get(user, &format!("items/{}", k[0]));
        }
        if let Some(k) = request.route("DELETE", "items/*") {
            return if user.delete(&format!("items/{}", k[0])) {
                Response::no_content()
            } else {
                Response::not_found()
            };
        }
        if request.route("GET", "items").is_some() {
            let keys: Vec<String> = user
                .list("items/")
                .into_iter()
                .map(|k| k["items/".len()..].to_owned())
                .collect();
            return Response::json(
                200,
                &serde_json::json!({ "user": request.caller.user_id, "keys": keys }),
            );
        }
        if let Some(k) = request.route("PUT", "shared/*") {
            return put(shared, &format!("shared/{}", k[0]), &request.body);
        }
        if let Some(k) = request.route("GET", "shared/*") {
            return get(shared, &format!("shared/{}", k[0]));
        }
        Response::not_found()
    }
}

corral_plugin::export!(KvUser);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_plugin::testing;

    fn call(method: &str, path: &str, user: &str, body: &str) -> Response {
        testing::handle::<KvUser>(&testing::request(method, path, user, body))
    }

    #[test]
    fn users_see_only_their_own_items() {
        testing::reset();
        testing::grant(&["kv"]);
        assert_eq!(call("PUT", "items/secret", "ann", "ann's").status, 204);
        assert_eq!(call("GET", "items/secret", "ann", "").body, b"ann's");
        assert_eq!(call("GET", "items/secret", "bob", "").status, 404);
        assert_eq!(call("DELETE", "items/secret", "bob", "").status, 404);
        let listing: serde_json::Value = call("GET", "items", "bob", "").body_json().unwrap();
        assert_eq!(listing, serde_json::json!({"user": "bob", "keys": []}));
        let listing: serde_json::Value = call("GET", "items", "ann", "").body_json().unwrap();
        assert_eq!(listing["keys"], serde_json::json!(["secret"]));
        assert_eq!(call("PUT", "shared/note", "ann", "for all").status, 204);
        assert_eq!(call("GET", "shared/note", "bob", "").body, b"for all");
    }

    #[test]
    fn the_quota_answers_409() {
        testing::reset();
        testing::set_kv_quota(16);
        let response = call("PUT", "items/big", "ann", "0123456789abcdef");
        assert_eq!(response.status, 409);
        let error: serde_json::Value = response.body_json().unwrap();
        assert_eq!(error["code"], "limit_reached");
    }
}
