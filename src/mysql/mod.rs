//! The MySQL adapter: the pool ([`Database`], with the session Laravel sets up), the schema check
//! at start ([`schema`]), every statement against the app's orders, products and items
//! ([`orders`]), the readiness check on a connection of its own ([`probe`]), the member slots
//! that let replicas split the orders ([`members`]), which server it is, MySQL or MariaDB and
//! its version ([`server`]), which way the writer locks rows on it ([`write_path`]) and their
//! errors ([`MysqlError`]).
//!
//! Stages (sources, the writer, the subcommands) run statements through [`orders`] rather than
//! writing SQL themselves, so a change of the schema mapping is made here once.

pub(crate) mod error;
pub(crate) mod jobs;
pub(crate) mod members;
pub(crate) mod orders;
mod pool;
pub(crate) use pool::IDLE_IN_TRANSACTION;
pub(crate) mod probe;
pub(crate) mod schema;
pub(crate) mod server;
pub(crate) mod write_path;

pub(crate) use error::MysqlError;
pub(crate) use pool::Database;
pub(crate) use schema::TableShape;
