//! The sink: the writer that cancels orders and returns their stock.
//!
//! * [`writer`] is the exactly-once transaction for a batch of orders; the pool, the schema
//!   check and the statements it runs are the MySQL adapter's ([`crate::mysql`]).
//! * [`jobs`] writes the Laravel job of each cancelled order in the same transaction
//!   (`ORDER_EXPIRE_DISPATCH`).
//! * [`key_jobs`] queues the jobs of other key types (`ORDER_EXPIRE_ON_<TYPE>`), with the id
//!   from the key and no SQL of their own.
//! * [`outbox`] pushes the redis queue's jobs from the outbox after the commit.
//! * [`dispatch`] hands queued orders to concurrent batch writes, retries and stops on time.
//! * [`share`] splits the orders between the replicas of one orders table (member slots in
//!   MySQL), sets aside the others' and takes them back when their owner leaves.

pub(crate) mod dispatch;
pub(crate) mod jobs;
pub(crate) mod key_jobs;
pub(crate) mod outbox;
pub(crate) mod share;
pub(crate) mod writer;

pub(crate) use writer::{Outcome, Writer};
