//! Test data: realistic legacy Telemetry records, each knowing the outcome the tool
//! must give it (being written).

pub mod calendar;
pub mod rng;
