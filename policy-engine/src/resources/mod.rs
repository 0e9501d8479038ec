//! Resource metrics.
