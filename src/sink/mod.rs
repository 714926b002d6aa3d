//! The sink: the MySQL writer that cancels orders and returns their stock.
//!
//! * [`database`] opens the pool with the app's credentials and checks, once at start, that the
//!   configured tables and columns exist (a one-line error otherwise).
//! * [`writer`] is the exactly-once transaction for one order.

pub mod writer;
pub mod database;

pub use writer::{Outcome, Writer};
pub use database::Database;
