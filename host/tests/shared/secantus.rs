//! A SecantusDB server (MongoDB wire protocol) for tests of the MongoDB
//! store, started on 127.0.0.1 with a fresh data directory and stopped by
//! its own PID when dropped.
//!
//! The server binary comes from `CORRAL_SECANTUSD`, or else
//! `.venv-test/bin/secantusd-py` in the workspace (installed by
//! `scripts/test-deps.sh`). Included with `#[path]` by the tests that need
//! it (host/tests/store_mongo.rs, the MongoDB store's unit tests).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A SecantusDB server started for a test; stopped (by its own PID) on
/// drop, so it stops even when the test fails.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
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

    pub fn url(&self) -> String {
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
