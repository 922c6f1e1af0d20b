//! The embedded store: one SQLite file (WAL) under the data directory.

use std::path::Path;

/// SQLite-backed [`super::Store`].
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub fn open(_path: &Path) -> anyhow::Result<Self> {
        todo!()
    }
}
