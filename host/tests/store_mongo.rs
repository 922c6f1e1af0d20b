//! The MongoDB store against the shared conformance suite, on a real
//! SecantusDB server (MongoDB wire protocol) that the test starts itself.
//!
//! The server binary comes from `CORRAL_SECANTUSD`, or else
//! `.venv-test/bin/secantusd-py` in the workspace (installed by
//! `scripts/test-deps.sh`). Set `CORRAL_TEST_MONGODB_URL` to run against an
//! existing server instead.

#[path = "shared/secantus.rs"]
mod secantus;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use corral_host::store::conformance::run_all;
use corral_host::store::mongo::MongoStore;
use corral_host::store::Store;
use futures::FutureExt;
use secantus::Server;

#[tokio::test]
async fn mongodb_store_conforms() {
    let external = std::env::var("CORRAL_TEST_MONGODB_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let server = match external {
        Some(_) => None,
        None => Some(Server::start()),
    };
    let url = match (&external, &server) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => unreachable!(),
    };

    let counter = AtomicUsize::new(0);
    let databases = Mutex::new(Vec::new());
    let prefix = format!("corral_conf_{}", std::process::id());
    let outcome = std::panic::AssertUnwindSafe(run_all(|| {
        let db = format!("{prefix}_{}", counter.fetch_add(1, Ordering::SeqCst));
        databases.lock().expect("databases lock").push(db.clone());
        let url = url.clone();
        async move {
            let store = MongoStore::connect_database(&url, &db)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url} (database {db}): {e:#}"));
            Arc::new(store) as Arc<dyn Store>
        }
    }))
    .catch_unwind()
    .await;

    // On a server of our own the data directory goes with it; on an
    // existing server, drop what the suite created.
    if external.is_some() {
        if let Ok(client) = mongodb::Client::with_uri_str(&url).await {
            let names = std::mem::take(&mut *databases.lock().expect("databases lock"));
            for db in &names {
                let _ = client.database(db).drop().await;
            }
        }
    }
    drop(server);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
