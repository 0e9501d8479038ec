//! Webhook alerts.
