//! The MongoDB store against the shared conformance suite, on a real
//! SecantusDB server (MongoDB wire protocol) that the test starts itself.
//!
//! The server binary comes from `CORRAL_SECANTUSD`, or else
//! `.venv-test/bin/secantusd-py` in the workspace (installed by
//! `scripts/test-deps.sh`). Set `CORRAL_TEST_MONGODB_URL` to run against an
//! existing server instead.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_host::store::conformance::run_all;
use corral_host::store::mongo::MongoStore;
use corral_host::store::Store;
use futures::FutureExt;

/// A SecantusDB server started for this test; stopped (by its own PID) on
/// drop, so it stops even when the suite fails.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let binary = std::env::var_os("CORRAL_SECANTUSD")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(".venv-test/bin/secantusd-py")
            });
        assert!(
            binary.is_file(),
            "SecantusDB server not found at {}: run `scripts/test-deps.sh` to install it \
             (or set CORRAL_SECANTUSD to its binary, or CORRAL_TEST_MONGODB_URL to an \
             existing server); this test is required",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data directory");
        let log = dir.path().join("secantusd.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let port = free_port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = Server {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let addr = ([127, 0, 0, 1], self.port).into();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "SecantusDB exited ({status}) before accepting connections; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "SecantusDB did not accept connections on port {} within {limit:?}; log:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

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
