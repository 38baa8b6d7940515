//! What the process tells about itself: metrics, health, logs and the admin listener.

pub mod admin;
pub mod emf;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod openmetrics;
