//! The SQLite store against the shared conformance suite.

use std::sync::{Arc, Mutex};

use corral_host::store::conformance::run_all;
use corral_host::store::sqlite::SqliteStore;
use corral_host::store::Store;

#[tokio::test]
async fn sqlite_store_conforms() {
    // Each case gets its own directory; they live until the suite ends.
    let dirs = Mutex::new(Vec::new());
    run_all(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("corral.db");
        dirs.lock().expect("dirs lock").push(dir);
        async move {
            let store = SqliteStore::open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e:#}", path.display()));
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}
