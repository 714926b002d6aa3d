//! The sink: the MySQL writer that cancels orders and returns their stock.
//!
//! * [`database`] opens the pool with the app's credentials and checks, once at start, that the
//!   configured tables and columns exist (a one-line error otherwise).
//! * [`cancel`] is the exactly-once transaction for one order.
//! * [`dispatch`] hands queued orders to concurrent batch writes, retries and stops on time.

pub mod cancel;
pub mod database;
pub mod dispatch;

pub use cancel::{Outcome, Writer};
pub use database::Database;
