//! Command implementations behind the `statesync` binary (kept in the library so that tests can
//! run them).

pub mod churn;
pub mod drill;
pub mod drill_checks;
pub mod hostile;
pub mod ledger;
pub mod load;
pub mod platform;
pub mod plot;
pub mod sim;
pub mod units;
