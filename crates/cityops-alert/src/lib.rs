//! The alerter service around the pure rule engine: what it sends to Alertmanager and
//! webhooks and what it writes to the alert history. (The service loop arrives with the rest
//! of issue 12.)

pub mod outbox;
pub mod records;
