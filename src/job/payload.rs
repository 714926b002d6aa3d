//! The JSON Laravel's queue worker reads, for one job per cancelled order.
//!
//! `dispatch(new \App\Jobs\OrderExpired($order))` makes Laravel's `Queue::createObjectPayload`
//! build an array and `json_encode` it; `RedisQueue` then adds `id` and `attempts`, and
//! `DatabaseQueue` stores it as is in `jobs.payload`. The worker reads its settings (tries,
//! timeout, backoff...) from this JSON, not from the class, and `unserialize()`s
//! `data.command` to get the job object back. The fields changed across Laravel 8-13; this
//! module writes the ones the app's version writes, in the same order:
//!
//! | field | written by |
//! |---|---|
//! | `uuid`, `displayName`, `job`, `maxTries`, `maxExceptions`, `backoff`, `timeout`, `retryUntil`, `data.commandName`, `data.command` | every version here |
//! | `failOnTimeout` | 8.43 and later |
//! | `deleteWhenMissingModels` | 13 |
//! | `data.batchId` | 12.51 and later |
//! | `createdAt` | 12.11 and later |
//! | `id`, `attempts` (redis queue only, appended) | every version |
//! | `delay` (`null`: dispatched without one), last | 12.11 and later |
//!
//! In `data.command`, the model identifier `SerializesModels` writes has a fifth property,
//! `collectionClass` (`null` for one model), from Laravel 9.26. Checked against Laravel
//! 13.26's own `createPayload` (redis and database queues).
//!
//! The job's settings are left `null` (and `failOnTimeout` false), which gives the worker's own
//! defaults (`--tries`, `--timeout`), as for a job class that sets none of them.

use super::php_serialize::PhpSerialized;

/// The class Laravel's worker calls for every object job.
const CALL_QUEUED_HANDLER: &str = "Illuminate\\Queue\\CallQueuedHandler@call";
/// The class `SerializesModels` turns an Eloquent model into.
const MODEL_IDENTIFIER: &str = "Illuminate\\Contracts\\Database\\ModelIdentifier";

/// Which optional fields the app's Laravel version writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadFormat {
    /// `failOnTimeout` (Laravel 8.43 and later).
    pub fail_on_timeout: bool,
    /// `deleteWhenMissingModels` (Laravel 13).
    pub delete_when_missing_models: bool,
    /// `data.batchId` (Laravel 12.51 and later).
    pub batch_id: bool,
    /// `createdAt` (Laravel 12.11 and later).
    pub created_at: bool,
    /// `delay`, the last field (Laravel 12.11 and later, `Queue::createPayload`).
    pub delay: bool,
    /// The model identifier's `collectionClass` property (Laravel 9.26 and later).
    pub collection_class: bool,
}

impl PayloadFormat {
    /// The fields of Laravel `major.minor`. An unknown minor counts as the newest of its major:
    /// a field an older worker does not know is ignored by it, one it reads and misses is not.
    pub fn of_laravel(major: u32, minor: Option<u32>) -> Self {
        let at_least = |m: u32, n: u32| major > m || (major == m && minor.is_none_or(|x| x >= n));
        Self {
            fail_on_timeout: at_least(8, 43),
            delete_when_missing_models: major >= 13,
            batch_id: at_least(12, 51),
            created_at: at_least(12, 11),
            delay: at_least(12, 11),
            collection_class: at_least(9, 26),
        }
    }
}

/// How the job holds its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobArgument {
    /// `public $order` with `SerializesModels`: the order travels as Laravel's model identifier
    /// and `handle()` gets the fresh model from the database (already cancelled).
    Model {
        /// The job's public property that holds the order, e.g. `order`.
        property: String,
        /// The Eloquent model class, e.g. `App\Models\Order`.
        model: String,
        /// The model's connection name (the app's default connection, e.g. `mysql`).
        connection: String,
    },
    /// `public int $orderId`: the plain id.
    Id {
        /// The job's public property that holds the id, e.g. `orderId`.
        property: String,
    },
}

/// The job class to dispatch and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClass {
    /// e.g. `App\Jobs\OrderExpired`
    pub class: String,
    /// The property that holds the order, and whether as a model or as its id.
    pub argument: JobArgument,
}

impl JobClass {
    /// `serialize(clone $job)` for a job holding `id`, with only its argument property set: the
    /// other properties (the `Queueable` traits' ones) keep their class defaults on
    /// `unserialize()`, as they would after `SerializesModels::__unserialize`. The model
    /// identifier has `collection_class` (Laravel 9.26+).
    pub fn serialized(&self, id: u64, collection_class: bool) -> String {
        let value = match &self.argument {
            JobArgument::Model {
                model, connection, ..
            } => {
                let mut properties = vec![
                    ("class".into(), PhpSerialized::Str(model.clone())),
                    ("id".into(), PhpSerialized::Int(i128::from(id))),
                    ("relations".into(), PhpSerialized::EmptyArray),
                    ("connection".into(), PhpSerialized::Str(connection.clone())),
                ];
                if collection_class {
                    properties.push(("collectionClass".into(), PhpSerialized::Null));
                }
                PhpSerialized::Object {
                    class: MODEL_IDENTIFIER.into(),
                    properties,
                }
            }
            JobArgument::Id { .. } => PhpSerialized::Int(i128::from(id)),
        };
        let property = match &self.argument {
            JobArgument::Model { property, .. } | JobArgument::Id { property } => property.clone(),
        };
        PhpSerialized::Object {
            class: self.class.clone(),
            properties: vec![(property, value)],
        }
        .to_php()
    }
}

/// What varies from one payload to the next: identifiers and the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadIds {
    /// `Str::uuid()`, a version 4 UUID.
    pub uuid: String,
    /// `Str::random(32)`: the redis queue's job id.
    pub redis_id: String,
    /// Unix seconds now.
    pub now: i64,
}

impl PayloadIds {
    /// Fresh identifiers from `rng`.
    pub fn random(rng: &mut fastrand::Rng, now: i64) -> Self {
        Self {
            uuid: uuid_v4(rng),
            redis_id: (0..32).map(|_| rng.alphanumeric()).collect(),
            now,
        }
    }
}

/// Which queue the payload is for: the redis queue appends `id` and `attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDriver {
    /// The database queue: the payload is stored as is in `jobs.payload`.
    Database,
    /// The redis queue: the payload ends with the job's `id` and `attempts`.
    Redis,
}

/// The payload JSON for the job holding order (or key) `id`, as `json_encode` writes it.
pub fn payload(
    job: &JobClass,
    format: PayloadFormat,
    driver: QueueDriver,
    id: u64,
    ids: &PayloadIds,
) -> String {
    let mut data = vec![
        ("commandName", json_string(&job.class)),
        (
            "command",
            json_string(&job.serialized(id, format.collection_class)),
        ),
    ];
    if format.batch_id {
        data.push(("batchId", "null".into()));
    }
    let mut fields = vec![
        ("uuid", json_string(&ids.uuid)),
        ("displayName", json_string(&job.class)),
        ("job", json_string(CALL_QUEUED_HANDLER)),
        ("maxTries", "null".into()),
        ("maxExceptions", "null".into()),
    ];
    if format.fail_on_timeout {
        fields.push(("failOnTimeout", "false".into()));
    }
    fields.push(("backoff", "null".into()));
    fields.push(("timeout", "null".into()));
    fields.push(("retryUntil", "null".into()));
    if format.delete_when_missing_models {
        fields.push(("deleteWhenMissingModels", "false".into()));
    }
    fields.push(("data", object(&data)));
    if format.created_at {
        fields.push(("createdAt", ids.now.to_string()));
    }
    if driver == QueueDriver::Redis {
        fields.push(("id", json_string(&ids.redis_id)));
        fields.push(("attempts", "0".into()));
    }
    if format.delay {
        fields.push(("delay", "null".into()));
    }
    object(&fields)
}

/// `{"k":v,...}` with the members in the given order (PHP arrays keep their order).
fn object(members: &[(&str, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{}:{value}", json_string(key)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A string as PHP's `json_encode($s, JSON_UNESCAPED_UNICODE)` writes it: like JSON's, plus
/// `/` escaped as `\/`, and non-ASCII text kept as is.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A random version 4 UUID in its usual text form.
fn uuid_v4(rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_job() -> JobClass {
        JobClass {
            class: "App\\Jobs\\OrderExpired".into(),
            argument: JobArgument::Model {
                property: "order".into(),
                model: "App\\Models\\Order".into(),
                connection: "mysql".into(),
            },
        }
    }

    fn fixed_ids() -> PayloadIds {
        PayloadIds {
            uuid: "9a1c2f0e-3b7d-4c1e-8f2a-0123456789ab".into(),
            redis_id: "AbCdEfGhIjKlMnOpQrStUvWxYz012345".into(),
            now: 1_764_403_200,
        }
    }

    /// Laravel 8.83's own `dispatch(new App\Jobs\OrderExpired($order))` serialized order 1's
    /// identifier as this (checked with the fixture app).
    #[test]
    fn the_model_travels_as_laravel_8_serializes_it() {
        assert_eq!(
            order_job().serialized(1, false),
            "O:21:\"App\\Jobs\\OrderExpired\":1:{s:5:\"order\";O:45:\"Illuminate\\Contracts\\Database\\ModelIdentifier\":4:{s:5:\"class\";s:16:\"App\\Models\\Order\";s:2:\"id\";i:1;s:9:\"relations\";a:0:{}s:10:\"connection\";s:5:\"mysql\";}}"
        );
    }

    /// Laravel 13.26's `createPayload` for the same job: the identifier's fifth property.
    #[test]
    fn the_model_travels_as_laravel_13_serializes_it() {
        assert_eq!(
            order_job().serialized(1, PayloadFormat::of_laravel(13, None).collection_class),
            "O:21:\"App\\Jobs\\OrderExpired\":1:{s:5:\"order\";O:45:\"Illuminate\\Contracts\\Database\\ModelIdentifier\":5:{s:5:\"class\";s:16:\"App\\Models\\Order\";s:2:\"id\";i:1;s:9:\"relations\";a:0:{}s:10:\"connection\";s:5:\"mysql\";s:15:\"collectionClass\";N;}}"
        );
    }

    #[test]
    fn laravel_8_redis_payload_has_the_fields_its_worker_reads() {
        let json = payload(
            &order_job(),
            PayloadFormat::of_laravel(8, Some(83)),
            QueueDriver::Redis,
            1,
            &fixed_ids(),
        );
        let keys = top_level_keys(&json);
        assert_eq!(
            keys,
            [
                "uuid",
                "displayName",
                "job",
                "maxTries",
                "maxExceptions",
                "failOnTimeout",
                "backoff",
                "timeout",
                "retryUntil",
                "data",
                "id",
                "attempts"
            ]
        );
        assert!(json.contains("\"job\":\"Illuminate\\\\Queue\\\\CallQueuedHandler@call\""));
        assert!(json.ends_with(",\"attempts\":0}"));
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["data"]["commandName"], "App\\Jobs\\OrderExpired");
        assert_eq!(value["attempts"], 0);
    }

    #[test]
    fn fields_follow_the_laravel_version() {
        let keys = |major, minor, driver| {
            top_level_keys(&payload(
                &order_job(),
                PayloadFormat::of_laravel(major, minor),
                driver,
                7,
                &fixed_ids(),
            ))
        };
        let database_8_40 = keys(8, Some(40), QueueDriver::Database);
        assert!(!database_8_40.contains(&"failOnTimeout".to_string()));
        assert!(!database_8_40.contains(&"id".to_string()));
        for (major, minor) in [(9, None), (10, Some(48)), (11, Some(31)), (12, Some(10))] {
            let k = keys(major, minor, QueueDriver::Database);
            assert!(k.contains(&"failOnTimeout".to_string()), "{major}");
            assert!(!k.contains(&"createdAt".to_string()), "{major}");
        }
        let v12_10 = keys(12, Some(10), QueueDriver::Database);
        assert_eq!(v12_10.last().map(String::as_str), Some("data"));
        let v12_11 = keys(12, Some(11), QueueDriver::Database);
        assert_eq!(&v12_11[v12_11.len() - 2..], ["createdAt", "delay"]);
        // What Laravel 13.26's RedisQueue and DatabaseQueue push, in this order.
        let laravel_13 = [
            "uuid",
            "displayName",
            "job",
            "maxTries",
            "maxExceptions",
            "failOnTimeout",
            "backoff",
            "timeout",
            "retryUntil",
            "deleteWhenMissingModels",
            "data",
            "createdAt",
        ];
        let redis_13 = [&laravel_13[..], &["id", "attempts", "delay"]].concat();
        assert_eq!(keys(13, None, QueueDriver::Redis), redis_13);
        let database_13 = [&laravel_13[..], &["delay"]].concat();
        assert_eq!(keys(13, Some(26), QueueDriver::Database), database_13);
        let json13 = payload(
            &order_job(),
            PayloadFormat::of_laravel(13, None),
            QueueDriver::Redis,
            7,
            &fixed_ids(),
        );
        let value: serde_json::Value = serde_json::from_str(&json13).expect("valid JSON");
        assert!(value["data"]["batchId"].is_null());
        assert_eq!(value["createdAt"], 1_764_403_200);
        let data_keys: Vec<&String> = value["data"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(data_keys.len(), 3);
    }

    #[test]
    fn a_plain_id_property() {
        let job = JobClass {
            class: "App\\Jobs\\SomethingExpired".into(),
            argument: JobArgument::Id {
                property: "orderId".into(),
            },
        };
        assert_eq!(
            job.serialized(42, true),
            "O:25:\"App\\Jobs\\SomethingExpired\":1:{s:7:\"orderId\";i:42;}"
        );
    }

    #[test]
    fn strings_are_encoded_as_json_encode_does() {
        assert_eq!(json_string("a/b\\c\"d"), "\"a\\/b\\\\c\\\"d\"");
        assert_eq!(json_string("商城\u{1}"), "\"商城\\u0001\"");
    }

    #[test]
    fn ids_look_like_laravel_s() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ids = PayloadIds::random(&mut rng, 0);
        assert_eq!(ids.uuid.len(), 36);
        assert_eq!(ids.uuid.as_bytes()[14], b'4');
        assert!(matches!(ids.uuid.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(ids.redis_id.len(), 32);
        assert!(ids.redis_id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    /// The top-level keys of a JSON object, in order (serde_json would sort them).
    fn top_level_keys(json: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut chars = json.char_indices().peekable();
        let mut in_string = false;
        let mut start = 0;
        let mut escaped = false;
        while let Some((i, c)) = chars.next() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                    if depth == 1 && chars.peek().map(|(_, n)| *n) == Some(':') {
                        keys.push(json[start..i].to_string());
                    }
                }
                continue;
            }
            match c {
                '"' => {
                    in_string = true;
                    start = i + 1;
                }
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
        }
        keys
    }
}
