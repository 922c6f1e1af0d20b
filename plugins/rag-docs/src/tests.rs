//! The routes and hooks against corral-plugin's stand-in host, with a
//! bag-of-words embedder: texts sharing words get similar vectors.

use std::cell::RefCell;
use std::rc::Rc;

use corral_plugin::testing;
use serde_json::{json, Value};

use super::*;

const DIM: usize = 64;

fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let word = word.to_lowercase();
        let h = word
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
        v[h as usize % DIM] += 1.0;
    }
    v
}

/// The models each embed call asked for, and how many texts it had.
type Calls = Rc<RefCell<Vec<(Option<String>, usize)>>>;

fn setup() -> Calls {
    testing::reset();
    testing::grant(&["kv", "config", "embed"]);
    let calls: Calls = Rc::default();
    let seen = calls.clone();
    testing::set_embedder(move |model, texts| {
        seen.borrow_mut()
            .push((model.map(str::to_owned), texts.len()));
        Ok(texts.iter().map(|t| bag_of_words(t)).collect())
    });
    SOURCES.with(|s| s.borrow_mut().clear());
    calls
}

fn call(method: &str, path: &str, user: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let response = testing::handle::<RagDocs>(&testing::request(method, path, user, body));
    let json = if response.body.is_empty() {
        Value::Null
    } else {
        response.body_json().expect("a JSON body")
    };
    (response.status, json)
}

fn upload(user: &str, collection: &str, name: &str, text: &str) -> (u16, Value) {
    call(
        "POST",
        &format!("collections/{collection}/documents"),
        user,
        json!({"name": name, "text": text}),
    )
}

const RUST: &str = "To compile a Rust program run cargo build. The compiler writes the binary \
into the target folder.\n\nCargo test runs the tests.";
const CATS: &str = "Cats sleep most of the day. A cat purrs when content and hunts at night.";

fn ask(user: &str, question: &str) -> Decision {
    let prompt = testing::prompt(vec![
        Message::user("Hello"),
        Message::assistant("Hi!"),
        Message::user(question),
    ]);
    testing::before_prompt::<RagDocs>(&testing::context(user), &prompt)
}

fn context_of(decision: Decision) -> Vec<String> {
    match decision {
        Decision::Modify(change) => {
            assert!(change.messages.is_none() && change.system_prompt.is_none());
            change.context
        }
        other => panic!("expected a modification, got {other:?}"),
    }
}

#[test]
fn documents_are_uploaded_listed_replaced_and_deleted() {
    let calls = setup();
    let (status, meta) = upload("ann", "notes", "rust.md", RUST);
    assert_eq!(status, 201, "{meta}");
    let id = meta["id"].as_str().unwrap().to_owned();
    assert_eq!(meta["name"], "rust.md");
    assert_eq!(meta["collection"], "notes");
    assert_eq!(meta["chars"], RUST.chars().count());
    assert_eq!(meta["chunks"], 1);
    assert_eq!(calls.borrow().as_slice(), [(None, 1)]);

    assert_eq!(upload("ann", "notes", "cats.md", CATS).0, 201);
    assert_eq!(upload("ann", "pets", "cats.md", CATS).0, 201);
    assert_eq!(
        call("GET", "collections", "ann", Value::Null),
        (
            200,
            json!({"collections": [{"name": "notes", "documents": 2}, {"name": "pets", "documents": 1}]})
        )
    );
    let (status, listing) = call("GET", "collections/notes/documents", "ann", Value::Null);
    assert_eq!(status, 200);
    let names: Vec<&str> = listing["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"rust.md") && names.contains(&"cats.md"));

    // The same name again replaces the document.
    let (status, meta) = upload("ann", "notes", "rust.md", "Cargo builds Rust.");
    assert_eq!((status, meta["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(
        call("GET", "collections", "ann", Value::Null).1["collections"][0]["documents"],
        2
    );

    let path = format!("collections/notes/documents/{id}");
    assert_eq!(call("DELETE", &path, "ann", Value::Null).0, 204);
    let (status, error) = call("DELETE", &path, "ann", Value::Null);
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        call("DELETE", "collections/pets", "ann", Value::Null).0,
        204
    );
    assert_eq!(
        call("DELETE", "collections/pets", "ann", Value::Null).0,
        404
    );
    assert_eq!(
        call("GET", "collections/pets/documents", "ann", Value::Null).0,
        404
    );
    // Only cats.md in notes is left, data and description alike.
    let keys: Vec<String> = testing::user_kv("ann").into_keys().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[test]
fn one_user_never_sees_anothers_documents() {
    setup();
    assert_eq!(upload("ann", "private", "diary.md", CATS).0, 201);
    assert_eq!(
        call("GET", "collections", "bob", Value::Null),
        (200, json!({"collections": []}))
    );
    assert_eq!(
        call("GET", "collections/private/documents", "bob", Value::Null).0,
        404
    );
    let id = store::document_id("diary.md");
    let path = format!("collections/private/documents/{id}");
    assert_eq!(call("DELETE", &path, "bob", Value::Null).0, 404);
    assert_eq!(ask("bob", "Do cats sleep all day?"), Decision::Continue);
    assert!(testing::user_kv("bob").is_empty());
    assert_eq!(testing::user_kv("ann").len(), 2);
}

#[test]
fn uploads_are_validated() {
    setup();
    let bad_request = |(status, error): (u16, Value)| {
        assert_eq!(status, 400, "{error}");
        assert!(["bad_request", "malformed_json"].contains(&error["code"].as_str().unwrap()));
        assert!(!error["message"].as_str().unwrap().is_empty());
    };
    bad_request(upload("ann", "no%20spaces", "a.md", "text"));
    bad_request(upload("ann", "a..b%2F", "a.md", "text"));
    bad_request(upload("ann", "docs", "  ", "text"));
    bad_request(upload("ann", "docs", &"n".repeat(201), "text"));
    bad_request(upload("ann", "docs", "tab\tname", "text"));
    bad_request(upload("ann", "docs", "a.md", " \n\n "));
    bad_request(call(
        "POST",
        "collections/docs/documents",
        "ann",
        json!({"name": "a.md"}),
    ));
    bad_request(call(
        "POST",
        "collections/docs/documents",
        "ann",
        json!({"name": "a.md", "text": "x", "extra": 1}),
    ));
    let response = testing::handle::<RagDocs>(&testing::request(
        "POST",
        "collections/docs/documents",
        "ann",
        "{broken",
    ));
    assert_eq!(response.status, 400);

    testing::set_config("max-document-chars", json!(10));
    let (status, error) = upload("ann", "docs", "a.md", "eleven char");
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert!(testing::user_kv("ann").is_empty());
}

#[test]
fn an_upload_over_the_quota_leaves_nothing_behind() {
    setup();
    testing::set_kv_quota(400);
    let (status, error) = upload("ann", "docs", "rust.md", RUST);
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("limit_reached"))
    );
    assert!(error["message"].as_str().unwrap().contains("quota"));
    assert!(testing::user_kv("ann").is_empty());
}

#[test]
fn a_failing_embedding_model_is_reported_on_upload() {
    setup();
    testing::set_embedder(|_, _| Err("no embedding model is loaded".to_owned()));
    let (status, error) = upload("ann", "docs", "rust.md", RUST);
    assert_eq!((status, error["code"].as_str()), (503, Some("unavailable")));
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("no embedding model is loaded"));
    assert!(testing::user_kv("ann").is_empty());
}

#[test]
fn long_documents_are_chunked_and_embedded_in_batches() {
    let calls = setup();
    let text = (0..60)
        .map(|n| format!("Paragraph {n} explains topic number {n} in some detail, with examples."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let (status, meta) = upload("ann", "docs", "long.md", &text);
    assert_eq!(status, 201);
    let chunks = meta["chunks"].as_u64().unwrap() as usize;
    assert!(chunks > 5, "{meta}");
    let sizes: Vec<usize> = calls.borrow().iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes.iter().sum::<usize>(), chunks);
    assert!(sizes.iter().all(|&n| n <= EMBED_BATCH));
    let data = &testing::user_kv("ann")[&store::data_key("docs", &store::document_id("long.md"))];
    let stored = store::decode_chunks(data).unwrap();
    assert_eq!(stored.len(), chunks);
    assert!(stored
        .iter()
        .all(|c| c.vector.len() == DIM && c.text.chars().count() <= 500));
}

#[test]
fn relevant_passages_are_added_and_cited() {
    setup();
    upload("ann", "notes", "rust.md", RUST);
    upload("ann", "notes", "cats.md", CATS);
    let context = context_of(ask("ann", "How do I compile a Rust program with cargo?"));
    assert_eq!(context[0], retrieve::INSTRUCTIONS);
    assert_eq!(context.len(), 2, "{context:?}");
    assert!(
        context[1].starts_with("[1] rust.md\nTo compile a Rust program"),
        "{context:?}"
    );

    // The stream filter ends the answer with the sources.
    let run = testing::stream::<RagDocs>(&testing::context("ann"), &["Run ", "cargo build [1]."]);
    assert_eq!(run.text, "Run cargo build [1].\n\nSources: [1] rust.md");
    // Only once per generation.
    let again = testing::stream::<RagDocs>(&testing::context("ann"), &["More."]);
    assert_eq!(again.text, "More.");
}

#[test]
fn nothing_is_added_below_the_threshold() {
    setup();
    upload("ann", "notes", "cats.md", CATS);
    assert_eq!(
        ask("ann", "Explain quantum chromodynamics briefly"),
        Decision::Continue
    );
    let run = testing::stream::<RagDocs>(&testing::context("ann"), &["An answer."]);
    assert_eq!(run.text, "An answer.");
}

#[test]
fn without_documents_the_model_is_not_asked() {
    let calls = setup();
    assert_eq!(ask("ann", "How do I compile Rust?"), Decision::Continue);
    assert!(calls.borrow().is_empty());
    // Nor without a question.
    upload("ann", "notes", "rust.md", RUST);
    calls.borrow_mut().clear();
    let prompt = testing::prompt(vec![Message::user("   ")]);
    let decision = testing::before_prompt::<RagDocs>(&testing::context("ann"), &prompt);
    assert_eq!(decision, Decision::Continue);
    assert!(calls.borrow().is_empty());
}

#[test]
fn a_failing_embedding_model_does_not_stop_the_chat() {
    setup();
    upload("ann", "notes", "rust.md", RUST);
    testing::set_embedder(|_, _| Err("busy".to_owned()));
    assert_eq!(ask("ann", "How do I compile Rust?"), Decision::Continue);
}

#[test]
fn the_searched_collection_follows_the_user_then_the_configuration() {
    setup();
    upload("ann", "work", "rust.md", RUST);
    upload("ann", "home", "rust-at-home.md", RUST);
    let question = "How do I compile a Rust program with cargo?";
    // The documents each answer cites, in order of name.
    let sources = |decision: Decision| -> Vec<String> {
        let mut names: Vec<String> = context_of(decision)[1..]
            .iter()
            .map(|c| {
                c.lines()
                    .next()
                    .unwrap()
                    .split_once(' ')
                    .unwrap()
                    .1
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        sources(ask("ann", question)),
        ["rust-at-home.md", "rust.md"]
    );

    testing::set_config("collection", json!("home"));
    assert_eq!(sources(ask("ann", question)), ["rust-at-home.md"]);
    assert_eq!(
        call("GET", "settings", "ann", Value::Null),
        (200, json!({"collection": null, "searched": "home"}))
    );

    assert_eq!(
        call("PUT", "settings", "ann", json!({"collection": "work"})),
        (200, json!({"collection": "work", "searched": "work"}))
    );
    assert_eq!(sources(ask("ann", question)), ["rust.md"]);
    // Another user keeps the configured collection.
    assert_eq!(
        call("GET", "settings", "bob", Value::Null).1["searched"],
        "home"
    );

    assert_eq!(
        call("PUT", "settings", "ann", json!({"collection": null})).0,
        200
    );
    assert_eq!(sources(ask("ann", question)), ["rust-at-home.md"]);
    assert_eq!(
        call("PUT", "settings", "ann", json!({"collection": "a/b"})).0,
        400
    );
    assert_eq!(call("PUT", "settings", "ann", json!({"other": 1})).0, 400);
}

#[test]
fn settings_choose_the_model_and_the_number_of_passages() {
    let calls = setup();
    testing::set_config("embedding-model", json!("minilm"));
    testing::set_config("top-k", json!(1));
    testing::set_config("min-score", json!(0.0));
    upload("ann", "notes", "rust.md", RUST);
    upload("ann", "notes", "cats.md", CATS);
    let context = context_of(ask("ann", "Do cats purr?"));
    assert_eq!(context.len(), 2);
    assert!(context[1].starts_with("[1] cats.md"));
    assert!(calls
        .borrow()
        .iter()
        .all(|(model, _)| model.as_deref() == Some("minilm")));
}

#[test]
fn unknown_routes_are_not_found() {
    setup();
    for (method, path) in [
        ("GET", "collections/a/documents/b"),
        ("PUT", "collections"),
        ("GET", "nothing"),
    ] {
        assert_eq!(
            call(method, path, "ann", Value::Null).0,
            404,
            "{method} {path}"
        );
    }
}
