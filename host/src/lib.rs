//! The Corral host: HTTP API, authentication, storage, chats, tickets and
//! statistics.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod client_addr;
pub mod config;
pub mod download;
pub mod error;
pub mod events;
pub mod generation;
pub mod inference;
pub mod layers;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod plugins;
pub mod policy;
pub mod quota;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod tickets;
pub mod time;
pub mod tls;
pub mod usage;
pub mod web;
