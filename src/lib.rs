//! panelgate: a reseller gateway for the SMM panel API v2.
//!
//! The crate is organised by domain: [`protocol`] is the wire format both sides share,
//! [`server`] the HTTP edge, [`money`] the exact arithmetic every charge goes through, and
//! [`sim`] a complete simulated provider panel used by the demo, the tests and the benchmarks.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod console;
pub mod cores;
pub mod gateway;
pub mod guard;
pub mod journal;
pub mod keys;
pub mod logs;
pub mod matcher;
pub mod metrics;
pub mod money;
pub mod operator;
pub mod pricing;
pub mod protocol;
pub mod server;
pub mod sim;
pub mod status_cache;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod upstream;
