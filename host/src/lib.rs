//! The Corral host: HTTP API, authentication, storage, chats, tickets and
//! statistics.

pub mod model;
pub mod store;
pub mod time;
