//! The PostgreSQL adapter, beside the MySQL one: the pool ([`Database`], with the session
//! Laravel's PostgresConnector sets up, and TLS as libpq reads `sslmode`: `tls`), the schema
//! and privilege check at start ([`schema`]), every statement against the app's orders,
//! products and items ([`orders`]) and the queue's tables ([`jobs`]), the readiness check on a
//! connection of its own ([`probe`]), the member slots (advisory locks) that let replicas split
//! the orders ([`members`]), the server's version ([`server`]) and their errors
//! ([`PgsqlError`]; [`PgQueryError`] for one statement, with its SQLSTATE).

mod error;
pub(crate) mod jobs;
pub(crate) mod members;
pub(crate) mod orders;
mod pool;
pub(crate) mod probe;
pub(crate) mod schema;
pub(crate) mod server;
mod tls;

pub(crate) use error::{PgQueryError, PgsqlError};
pub(crate) use pool::Database;
