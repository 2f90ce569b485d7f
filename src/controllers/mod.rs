//! The operator's three controllers. Siblings: none imports another; what they share lives at
//! the crate root (`conditions`, `kafka_settings`, `ownership`, `reset_hold`, `context`).
//!
//! - [`consumer_group`]: runs and scales a ConsumerGroup's workload and reports its group.
//! - [`offset_reset`]: moves a group's committed offsets, with its workload held at zero.
//! - [`connection`]: reports whether a KafkaConnection or ClusterKafkaConnection works.

pub mod connection;
pub mod consumer_group;
pub mod offset_reset;
