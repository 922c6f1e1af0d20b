//! The production store: MongoDB through the `mongodb` driver.

/// MongoDB-backed [`super::Store`].
pub struct MongoStore {}

impl MongoStore {
    /// Connects, picks the database named in the URL path (default
    /// `corral`) and creates the indexes.
    pub async fn connect(_url: &str) -> anyhow::Result<Self> {
        todo!()
    }
}
