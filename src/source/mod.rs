//! Event sources: where the worker learns that an order's key has expired.
//!
//! * [`keyspace`] is the fast path: a subscription to `__keyevent@<db>__:expired` on one server
//!   that survives disconnects, idles for hours, and hands order ids to the writer queue;
//!   [`topology`] keeps one per master of a cluster or a Sentinel, following failovers.
//! * [`deadline`] makes the fast path punctual: it knows each pending order's deadline and makes
//!   Redis expire the key at that moment instead of minutes later.
//! * [`reconcile`] is the safety net: reconciliation of the database against the cache, for events
//!   that were never delivered; [`progress`] is how far a long pass has got (a bar, or log
//!   lines every few seconds).

pub(crate) mod deadline;
pub(crate) mod error;
pub(crate) mod keyspace;
pub(crate) mod progress;
pub(crate) mod reconcile;
pub(crate) mod topology;
