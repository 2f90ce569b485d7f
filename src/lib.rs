//! consumer-group-operator: runs, scales and resets Kafka consumer groups on Kubernetes.
//!
//! Thin binary, fat library: `main.rs` only parses the command line and calls in here.
pub mod cli;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod external_metrics;
mod fault;
mod http;
pub mod kafka;
pub mod kafka_connections;
pub mod kafka_settings;
pub mod lag;
pub mod metrics;
pub mod ownership;
pub mod plugin;
pub mod reset_hold;
pub mod runtime;
