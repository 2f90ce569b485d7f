//! consumer-group-operator: runs, scales and resets Kafka consumer groups on Kubernetes.
//!
//! Thin binary, fat library: `main.rs` only parses the command line and calls in here.
pub mod cli;
pub mod connection;
pub mod connections;
pub mod context;
pub mod controller;
pub mod crd;
pub mod external_metrics;
mod fault;
mod http;
pub mod kafka;
pub mod lag;
pub mod metrics;
pub mod ownership;
pub mod plugin;
pub mod reset;
pub mod runtime;
