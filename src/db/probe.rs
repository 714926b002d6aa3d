//! The readiness check of the app's database, on a connection of its own, either adapter's.

use super::{Database, DbError};
use crate::mysql::probe::MysqlProbe;
use crate::pgsql::probe::PgsqlProbe;

/// Checks the database answers.
// A handful of these live per worker (a connection per transaction at most), never in a
// collection: the variants' sizes do not matter, and boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum DbProbe {
    Mysql(MysqlProbe),
    Pgsql(PgsqlProbe),
}

impl DbProbe {
    pub(crate) fn new(db: Database) -> Self {
        match db {
            Database::Mysql(db) => Self::Mysql(MysqlProbe::new(db)),
            Database::Pgsql(db) => Self::Pgsql(PgsqlProbe::new(db)),
        }
    }

    /// `Ok` when the database answers within the probe's bound.
    pub(crate) async fn check(&mut self) -> Result<(), DbError> {
        match self {
            Self::Mysql(p) => Ok(p.check().await?),
            Self::Pgsql(p) => Ok(p.check().await?),
        }
    }
}
