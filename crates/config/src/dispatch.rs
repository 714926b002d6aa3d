//! `ORDER_EXPIRE_DISPATCH`: which Laravel job to queue for every cancelled order, and on which
//! queue, resolved as Laravel's `QueueManager` resolves the app's default connection.
//!
//! Raw SQL fires no Eloquent events, so the app's observers would stay silent; a job on the
//! app's own queue runs its code instead. Only the drivers whose storage we can write exactly
//! as Laravel does are accepted: `database` (the row goes into the cancel transaction) and
//! `redis` (through an outbox). Everything else is a start-up error, never a silent no-op.

use std::path::Path;

use super::bounded;
use super::error::ConfigError;
use super::resolve::Laravel;
use super::resolved::RedisSettings;

/// Our settings' names; `settings::keys` lists them with the others.
pub(super) mod keys {
    /// The job class queued per cancelled order; unset: no dispatch.
    pub const DISPATCH: &str = "ORDER_EXPIRE_DISPATCH";
    /// The Eloquent model class the job's property holds (default `App\Models\Order`).
    pub const ORDER_MODEL: &str = "ORDER_EXPIRE_ORDER_MODEL";
    /// `model` (the job uses `SerializesModels`) or `id` (a plain integer property).
    pub const DISPATCH_ARGUMENT: &str = "ORDER_EXPIRE_DISPATCH_ARGUMENT";
    /// The job's public property that holds the order (default `order`, or `orderId` for `id`).
    pub const DISPATCH_PROPERTY: &str = "ORDER_EXPIRE_DISPATCH_PROPERTY";
    /// The queue connection instead of `queue.default`.
    pub const DISPATCH_CONNECTION: &str = "ORDER_EXPIRE_DISPATCH_CONNECTION";
    /// The queue name instead of the connection's own.
    pub const DISPATCH_QUEUE: &str = "ORDER_EXPIRE_DISPATCH_QUEUE";
    /// `ORDER_EXPIRE_ON_<TYPE>`: the job class queued when a key of another type expires, e.g.
    /// `ORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\Jobs\SomethingExpired` (no flag: one per type).
    pub const ON_PREFIX: &str = "ORDER_EXPIRE_ON_";
    /// `ORDER_EXPIRE_ON_<TYPE>_PROPERTY`: that job's public integer property (default `id`).
    pub const ON_PROPERTY_SUFFIX: &str = "_PROPERTY";
}

/// The job to queue for every cancelled order, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchSettings {
    /// The job class, e.g. `App\Jobs\OrderExpired` (no leading `\`).
    pub class: String,
    /// How the job holds the order.
    pub argument: DispatchArgument,
    /// The public property that holds it (`order`, `orderId`).
    pub property: String,
    /// The queue connection's name (`queue.default`, or `ORDER_EXPIRE_DISPATCH_CONNECTION`).
    pub connection: String,
    /// The queue's name (`default`).
    pub queue: String,
    /// Where the queue keeps its jobs: a table or a Redis list.
    pub target: QueueTarget,
}

/// What the job's property holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchArgument {
    /// The Eloquent model, as `SerializesModels` stores it: class and the model's connection.
    Model {
        /// The model class, e.g. `App\Models\Order`.
        model: String,
        /// The model's connection name (`database.default`), as `getQueueableConnection()`.
        connection: String,
    },
    /// The plain integer id.
    Id,
}

/// Where the queue keeps its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueTarget {
    /// `DatabaseQueue`: a table (with the connection's table prefix) in the orders' database.
    Database {
        /// The `jobs` table, with the connection's table prefix.
        table: String,
    },
    /// `RedisQueue`: the list `<prefix>queues:<queue>` on this Redis connection and database.
    Redis {
        /// The queue connection's Redis (its own database, `REDIS_DB` by default).
        redis: Box<RedisSettings>,
        /// The connection's key prefix, which phpredis/predis put before `queues:`.
        prefix: String,
    },
}

impl QueueTarget {
    /// The Laravel queue driver's name, as `check` shows it.
    pub fn driver(&self) -> &'static str {
        match self {
            Self::Database { .. } => "database",
            Self::Redis { .. } => "redis",
        }
    }
}

/// The job queued when a key of another type than the orders' expires
/// (`ORDER_EXPIRE_ON_<TYPE>`): it gets the id from the key, and no SQL is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyJobSettings {
    /// The key type as the app writes it, e.g. `ORDER_OTHEREVENT`.
    pub key_type: String,
    /// The job class, e.g. `App\Jobs\SomethingExpired` (no leading `\`).
    pub class: String,
    /// The job's public integer property that receives the id (default `id`).
    pub property: String,
    /// The queue connection's name, resolved as for [`DispatchSettings`].
    pub connection: String,
    /// The queue's name.
    pub queue: String,
    /// Where the queue keeps its jobs.
    pub target: QueueTarget,
}

/// Reads our own dispatch settings (flag, else `.env`).
pub(super) type OurSetting<'a> = &'a dyn Fn(&str) -> Option<String>;
/// A bad value of one of our settings, named as it was given.
pub(super) type OurError<'a> = &'a dyn Fn(&str, &str, String) -> ConfigError;

/// The jobs of other key types: every `ORDER_EXPIRE_ON_<TYPE>` among `names` (the variables
/// that start with [`keys::ON_PREFIX`]), sorted by key type. `order_key_type` is the orders'
/// own, which `ORDER_EXPIRE_DISPATCH` covers.
pub(super) fn resolve_key_jobs(
    laravel: &Laravel<'_>,
    ours: OurSetting<'_>,
    invalid: OurError<'_>,
    root: &Path,
    names: &[String],
    order_key_type: &str,
) -> Result<Vec<KeyJobSettings>, ConfigError> {
    let mut jobs = Vec::new();
    for name in names {
        let Some(key_type) = name.strip_prefix(keys::ON_PREFIX) else {
            continue;
        };
        let Some(raw_class) = ours(name) else {
            continue;
        };
        if let Some(base) = key_type.strip_suffix(keys::ON_PROPERTY_SUFFIX) {
            let job = format!("{}{base}", keys::ON_PREFIX);
            if !base.is_empty() && ours(&job).is_none() {
                return Err(invalid(
                    name,
                    &raw_class,
                    format!("a job property without its job: set {job} to the job class too"),
                ));
            }
            if !base.is_empty() {
                continue;
            }
        }
        if key_type.is_empty()
            || !key_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                name,
                &raw_class,
                format!(
                    "expected {}<TYPE> with the key type as the app writes it (letters, digits and _), e.g. {}ORDER_OTHEREVENT",
                    keys::ON_PREFIX,
                    keys::ON_PREFIX
                ),
            ));
        }
        if key_type == order_key_type {
            return Err(invalid(
                name,
                &raw_class,
                format!(
                    "{key_type} is the order key type: its job is {} (unset {name})",
                    keys::DISPATCH
                ),
            ));
        }
        let class =
            class_name(&raw_class).ok_or_else(|| invalid(name, &raw_class, CLASS_HINT.into()))?;
        refuse_encrypted(&class, root).map_err(|reason| invalid(name, &raw_class, reason))?;
        let property_name = format!("{name}{}", keys::ON_PROPERTY_SUFFIX);
        let property = ours(&property_name).unwrap_or_else(|| "id".into());
        if !is_identifier(&property) {
            return Err(invalid(
                &property_name,
                &property,
                "expected a PHP property name such as id or orderId".into(),
            ));
        }
        let (connection, queue, target) = laravel.queue(
            ours(keys::DISPATCH_CONNECTION),
            ours(keys::DISPATCH_QUEUE),
            invalid,
        )?;
        jobs.push(KeyJobSettings {
            key_type: key_type.to_string(),
            class,
            property,
            connection,
            queue,
            target,
        });
    }
    Ok(jobs)
}

/// The dispatch settings, or `None` when `ORDER_EXPIRE_DISPATCH` is unset.
pub(super) fn resolve(
    laravel: &Laravel<'_>,
    ours: OurSetting<'_>,
    invalid: OurError<'_>,
    root: &Path,
) -> Result<Option<DispatchSettings>, ConfigError> {
    let Some(raw_class) = ours(keys::DISPATCH) else {
        return Ok(None);
    };
    let class = class_name(&raw_class)
        .ok_or_else(|| invalid(keys::DISPATCH, &raw_class, CLASS_HINT.into()))?;
    refuse_encrypted(&class, root).map_err(|reason| invalid(keys::DISPATCH, &raw_class, reason))?;
    let argument_kind = ours(keys::DISPATCH_ARGUMENT).unwrap_or_else(|| "model".into());
    let (argument, default_property) = match argument_kind.as_str() {
        "model" => {
            let raw_model = ours(keys::ORDER_MODEL).unwrap_or_else(|| "App\\Models\\Order".into());
            let model = class_name(&raw_model)
                .ok_or_else(|| invalid(keys::ORDER_MODEL, &raw_model, CLASS_HINT.into()))?;
            // A model read from the database carries the connection it was read on: the
            // default one, for an Order without its own `$connection`.
            let connection = laravel.default_connection()?;
            (DispatchArgument::Model { model, connection }, "order")
        }
        "id" => (DispatchArgument::Id, "orderId"),
        other => {
            return Err(invalid(
                keys::DISPATCH_ARGUMENT,
                other,
                "expected model (the job's property holds the Order, with SerializesModels) or id (a plain integer)".into(),
            ));
        }
    };
    let property = ours(keys::DISPATCH_PROPERTY).unwrap_or_else(|| default_property.into());
    if !is_identifier(&property) {
        return Err(invalid(
            keys::DISPATCH_PROPERTY,
            &property,
            "expected a PHP property name such as order or orderId".into(),
        ));
    }
    let (connection, queue, target) = laravel.queue(
        ours(keys::DISPATCH_CONNECTION),
        ours(keys::DISPATCH_QUEUE),
        invalid,
    )?;
    Ok(Some(DispatchSettings {
        class,
        argument,
        property,
        connection,
        queue,
        target,
    }))
}

const CLASS_HINT: &str = "expected a PHP class name such as App\\Jobs\\OrderExpired";

/// A PHP class name without its leading `\`, or `None` when it is not one.
pub(super) fn class_name(text: &str) -> Option<String> {
    let name = text.trim().trim_start_matches('\\');
    let ok = !name.is_empty() && name.len() <= 255 && name.split('\\').all(is_identifier);
    ok.then(|| name.to_string())
}

/// A PHP identifier (ASCII; what Laravel apps use for classes and properties).
fn is_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && part.len() <= 100
}

/// Refuses a job class whose file (PSR-4 `App\` -> `app/`) implements `ShouldBeEncrypted`:
/// its payload must be encrypted with the app's key, which order-expire does not do. A class
/// whose file is not there is not checked (the worker would fail it, visibly).
fn refuse_encrypted(class: &str, root: &Path) -> Result<(), String> {
    let Some(rest) = class.strip_prefix("App\\") else {
        return Ok(());
    };
    let relative = format!("app/{}.php", rest.replace('\\', "/"));
    let Ok(source) = bounded::read_text(&root.join(&relative), bounded::MAX_CONFIG_BYTES) else {
        return Ok(());
    };
    if source.contains("ShouldBeEncrypted") {
        return Err(format!(
            "{relative} implements ShouldBeEncrypted: its payload must be encrypted with the app's APP_KEY, which order-expire does not do; dispatch a job class that is not encrypted"
        ));
    }
    Ok(())
}

impl Laravel<'_> {
    /// `config('database.default')`: the connection an Eloquent model uses by default.
    fn default_connection(&self) -> Result<String, ConfigError> {
        Ok(self.string("database.default")?.unwrap_or_default())
    }

    /// QueueManager: the connection (`queue.default`, or the override), its driver, the queue
    /// name (`ORDER_EXPIRE_DISPATCH_QUEUE`, else the connection's `queue`, else `default`) and
    /// where its jobs go.
    fn queue(
        &self,
        connection_override: Option<String>,
        queue_override: Option<String>,
        invalid: OurError<'_>,
    ) -> Result<(String, String, QueueTarget), ConfigError> {
        let overridden = connection_override.is_some();
        let name = match connection_override {
            Some(name) => name,
            None => self.string("queue.default")?.unwrap_or_default(),
        };
        // The setting to blame for the connection: our override, else QUEUE_CONNECTION.
        let refuse = |reason: String| {
            if overridden {
                invalid(keys::DISPATCH_CONNECTION, &name, reason)
            } else {
                self.invalid("queue.default", &name, reason)
            }
        };
        let path = format!("queue.connections.{name}");
        let Some(conn) = self.connection(&path)? else {
            return Err(refuse(format!(
                "queue connection [{name}] is not configured in config/queue.php: set QUEUE_CONNECTION or {} to a database or redis connection",
                keys::DISPATCH_CONNECTION
            )));
        };
        let driver = conn.text("driver")?.unwrap_or_default();
        let queue = match queue_override {
            Some(queue) => queue,
            None => conn
                .text("queue")?
                .filter(|q| !q.is_empty())
                .unwrap_or_else(|| "default".into()),
        };
        if queue.len() > 255 || queue.chars().any(char::is_control) {
            return Err(invalid(
                keys::DISPATCH_QUEUE,
                &queue,
                "expected a queue name of at most 255 characters".into(),
            ));
        }
        let target = match driver.as_str() {
            "database" => self.database_queue(&conn, &name, &refuse)?,
            "redis" => self.redis_queue(&conn)?,
            "sync" => {
                return Err(refuse(format!(
                    "queue connection [{name}] uses the sync driver, which runs a job inside the PHP process that dispatches it, and order-expire is not one: set QUEUE_CONNECTION (or {}) to a database or redis connection and run php artisan queue:work",
                    keys::DISPATCH_CONNECTION
                )));
            }
            "null" => {
                return Err(refuse(format!(
                    "queue connection [{name}] uses the null driver, which throws every job away: set QUEUE_CONNECTION (or {}) to a database or redis connection",
                    keys::DISPATCH_CONNECTION
                )));
            }
            other => {
                return Err(refuse(format!(
                    "queue connection [{name}] uses the {other} driver, which order-expire cannot write: use a database or redis connection for {} (or unset it)",
                    keys::DISPATCH
                )));
            }
        };
        Ok((name, queue, target))
    }

    /// DatabaseQueue: the table on the queue's connection, which must be the orders' database
    /// so that the job row is written in the cancel transaction.
    fn database_queue(
        &self,
        conn: &super::resolve::Entries,
        name: &str,
        refuse: &dyn Fn(String) -> ConfigError,
    ) -> Result<QueueTarget, ConfigError> {
        let default = self.default_connection()?;
        let db_connection = conn
            .text("connection")?
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| default.clone());
        let same_database = |key: &str| -> Result<bool, ConfigError> {
            Ok(
                self.string(&format!("database.connections.{db_connection}.{key}"))?
                    == self.string(&format!("database.connections.{default}.{key}"))?,
            )
        };
        if db_connection != default && !(same_database("database")? && same_database("host")?) {
            return Err(refuse(format!(
                "queue connection [{name}] keeps its jobs on database connection [{db_connection}], not on the orders' database [{default}], so the job cannot be written in the cancel transaction: use a database queue on [{default}] or a redis queue"
            )));
        }
        let table = conn
            .text("table")?
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "jobs".into());
        let prefix = self
            .string(&format!("database.connections.{db_connection}.prefix"))?
            .unwrap_or_default();
        Ok(QueueTarget::Database {
            table: format!("{prefix}{table}"),
        })
    }

    /// RedisQueue: the queue connection's Redis (`database.redis.<connection>`, default
    /// `default`), with its own database and key prefix.
    fn redis_queue(&self, conn: &super::resolve::Entries) -> Result<QueueTarget, ConfigError> {
        let name = conn
            .text("connection")?
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "default".into());
        let Some(redis_conn) = self.connection(&format!("database.redis.{name}"))? else {
            return Err(self.invalid(
                &conn.path("connection"),
                &name,
                format!("Redis connection [{name}] not configured in database.redis"),
            ));
        };
        let redis = self.redis_settings(&redis_conn)?;
        let prefix = self.connection_prefix(&redis_conn, &redis.client)?;
        Ok(QueueTarget::Redis {
            redis: Box::new(redis),
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_job_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("app/Jobs")).expect("mkdir");
        std::fs::write(
            dir.path().join("app/Jobs/OrderExpired.php"),
            "<?php class OrderExpired implements ShouldQueue, ShouldBeEncrypted {}",
        )
        .expect("write");
        let reason = refuse_encrypted("App\\Jobs\\OrderExpired", dir.path()).expect_err("refused");
        assert!(reason.contains("ShouldBeEncrypted"), "{reason}");
        assert!(refuse_encrypted("App\\Jobs\\Missing", dir.path()).is_ok());
    }

    #[test]
    fn class_names_are_php_class_names() {
        assert_eq!(
            class_name("\\App\\Jobs\\X").as_deref(),
            Some("App\\Jobs\\X")
        );
        assert_eq!(class_name("App\\Jobs\\"), None);
        assert_eq!(class_name("App\\1Jobs"), None);
        assert_eq!(class_name("App/Jobs"), None);
    }
}
