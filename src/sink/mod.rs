//! The sink: the writer that cancels orders and returns their stock.
//!
//! * [`writer`] is the exactly-once transaction for a batch of orders; the pool, the schema
//!   check and the statements it runs are the MySQL adapter's ([`crate::mysql`]).
//! * [`dispatch`] hands queued orders to concurrent batch writes, retries and stops on time.

pub(crate) mod dispatch;
pub(crate) mod writer;

pub(crate) use writer::{Outcome, Writer};
