//! The constants of PHP a config file may use, with the values the app's PHP gives them.
//!
//! Most are the same on every PHP 8 (`PHP_EOL`, `PDO::ATTR_TIMEOUT`). Two kinds are not:
//!
//! * `PHP_VERSION_ID` and its friends, which Laravel's own files test since skeleton v12.11.0
//!   (`PHP_VERSION_ID >= 80500 ? \Pdo\Mysql::ATTR_SSL_CA : \PDO::MYSQL_ATTR_SSL_CA`);
//! * the PDO MySQL attributes. PHP 8.4 added the `Pdo\Mysql` class, whose `ATTR_*` constants
//!   are the same attributes as `PDO::MYSQL_ATTR_*` (symfony/polyfill-php84, which Laravel 13
//!   requires, declares the class on 8.3 with `PDO`'s values). PHP 8.5 made `DIRECT_QUERY` an
//!   alias of `PDO::ATTR_EMULATE_PREPARES` and so renumbered every attribute after it:
//!   `SSL_CA` is 1009 on 8.0-8.4 and 1008 on 8.5 (ext/pdo_mysql/php_pdo_mysql_int.h of each
//!   release; checked on PHP 8.3, 8.4 and 8.5). A config file and the `options` array it
//!   builds agree on whichever numbering the app's PHP uses, and so does its configuration
//!   cache, which holds the numbers; [`pdo_mysql_attribute`] turns a name into the number of
//!   that PHP, for the resolver that reads the options.

use super::php_value::PhpValue;
use super::version::PhpVersion;

/// The PDO MySQL attributes after `COMPRESS`, in the order of PHP's enum (mysqlnd builds).
const MYSQL_ATTRIBUTES_AFTER_COMPRESS: [&str; 10] = [
    "FOUND_ROWS",
    "IGNORE_SPACE",
    "SSL_KEY",
    "SSL_CERT",
    "SSL_CA",
    "SSL_CAPATH",
    "SSL_CIPHER",
    "SERVER_PUBLIC_KEY",
    "MULTI_STATEMENTS",
    "SSL_VERIFY_SERVER_CERT",
];

/// `PDO::ATTR_DRIVER_SPECIFIC`, where the MySQL attributes start.
const DRIVER_SPECIFIC: i64 = 1000;

/// The `PDO::*` constants that mean the same on every PHP 8 and that `options` arrays use
/// (attributes and their values); `Pdo\Mysql` inherits them.
const PDO_CONSTANTS: &[(&str, i64)] = &[
    ("ATTR_AUTOCOMMIT", 0),
    ("ATTR_PREFETCH", 1),
    ("ATTR_TIMEOUT", 2),
    ("ATTR_ERRMODE", 3),
    ("ATTR_SERVER_VERSION", 4),
    ("ATTR_CLIENT_VERSION", 5),
    ("ATTR_SERVER_INFO", 6),
    ("ATTR_CONNECTION_STATUS", 7),
    ("ATTR_CASE", 8),
    ("ATTR_CURSOR_NAME", 9),
    ("ATTR_CURSOR", 10),
    ("ATTR_ORACLE_NULLS", 11),
    ("ATTR_PERSISTENT", 12),
    ("ATTR_STATEMENT_CLASS", 13),
    ("ATTR_FETCH_TABLE_NAMES", 14),
    ("ATTR_FETCH_CATALOG_NAMES", 15),
    ("ATTR_DRIVER_NAME", 16),
    ("ATTR_STRINGIFY_FETCHES", 17),
    ("ATTR_MAX_COLUMN_LEN", 18),
    ("ATTR_DEFAULT_FETCH_MODE", 19),
    ("ATTR_EMULATE_PREPARES", 20),
    ("ATTR_DEFAULT_STR_PARAM", 21),
    ("ERRMODE_SILENT", 0),
    ("ERRMODE_WARNING", 1),
    ("ERRMODE_EXCEPTION", 2),
    ("CASE_NATURAL", 0),
    ("CASE_UPPER", 1),
    ("CASE_LOWER", 2),
    ("NULL_NATURAL", 0),
    ("NULL_EMPTY_STRING", 1),
    ("NULL_TO_STRING", 2),
    ("FETCH_DEFAULT", 0),
    ("FETCH_LAZY", 1),
    ("FETCH_ASSOC", 2),
    ("FETCH_NUM", 3),
    ("FETCH_BOTH", 4),
    ("FETCH_OBJ", 5),
    ("FETCH_BOUND", 6),
    ("FETCH_COLUMN", 7),
    ("FETCH_CLASS", 8),
    ("FETCH_INTO", 9),
    ("FETCH_FUNC", 10),
    ("FETCH_NAMED", 11),
    ("FETCH_KEY_PAIR", 12),
    ("PARAM_NULL", 0),
    ("PARAM_INT", 1),
    ("PARAM_STR", 2),
    ("PARAM_LOB", 3),
    ("PARAM_STMT", 4),
    ("PARAM_BOOL", 5),
];

/// The number of the PDO MySQL attribute `name` (`SSL_CA`, without `MYSQL_ATTR_` or `ATTR_`)
/// on the PHP whose `PHP_VERSION_ID` is `php`; `None` for a name that is no such attribute
/// there.
pub(super) fn pdo_mysql_attribute(name: &str, php: u32) -> Option<i64> {
    let renumbered = php >= 80500;
    let fixed = match name {
        "USE_BUFFERED_QUERY" => Some(DRIVER_SPECIFIC),
        "LOCAL_INFILE" => Some(DRIVER_SPECIFIC + 1),
        "INIT_COMMAND" => Some(DRIVER_SPECIFIC + 2),
        "COMPRESS" => Some(DRIVER_SPECIFIC + 3),
        // PHP 8.5: an alias of PDO::ATTR_EMULATE_PREPARES.
        "DIRECT_QUERY" if renumbered => Some(20),
        "DIRECT_QUERY" => Some(DRIVER_SPECIFIC + 4),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    let first = if renumbered {
        DRIVER_SPECIFIC + 4
    } else {
        DRIVER_SPECIFIC + 5
    };
    if name == "LOCAL_INFILE_DIRECTORY" {
        // Added in PHP 8.1, after every other attribute.
        return (php >= 80100).then_some(first + 10);
    }
    MYSQL_ATTRIBUTES_AFTER_COMPRESS
        .iter()
        .position(|n| *n == name)
        .map(|i| first + i as i64)
}

/// `Class::MEMBER` for the classes whose constants config files use: `PDO` and `Pdo\Mysql`
/// (`class` lower-case, fully qualified without the leading `\`).
pub(super) fn class_constant(class: &str, member: &str, php: &PhpVersion) -> Option<PhpValue> {
    let mysql = match class {
        "pdo" => member.strip_prefix("MYSQL_ATTR_"),
        "pdo\\mysql" => member.strip_prefix("ATTR_"),
        _ => return None,
    };
    if let Some(value) = mysql.and_then(|name| pdo_mysql_attribute(name, php.id)) {
        return Some(PhpValue::Int(value));
    }
    PDO_CONSTANTS
        .iter()
        .find(|(name, _)| *name == member)
        .map(|(_, value)| PhpValue::Int(*value))
}

/// A global constant (case-sensitive, as PHP's are), as the app's PHP `php` on Linux defines
/// it; `None` for one order-expire does not know.
pub(super) fn constant(name: &str, php: &PhpVersion) -> Option<PhpValue> {
    let (major, minor, release) = php.parts();
    Some(match name {
        "PHP_EOL" => PhpValue::Str("\n".into()),
        "DIRECTORY_SEPARATOR" => PhpValue::Str("/".into()),
        "PATH_SEPARATOR" => PhpValue::Str(":".into()),
        "PHP_INT_MAX" => PhpValue::Int(i64::MAX),
        "PHP_INT_MIN" => PhpValue::Int(i64::MIN),
        "PHP_INT_SIZE" => PhpValue::Int(8),
        "PHP_OS" | "PHP_OS_FAMILY" => PhpValue::Str("Linux".into()),
        "PHP_VERSION_ID" => PhpValue::Int(i64::from(php.id)),
        "PHP_VERSION" => PhpValue::Str(php.dotted()),
        "PHP_MAJOR_VERSION" => PhpValue::Int(i64::from(major)),
        "PHP_MINOR_VERSION" => PhpValue::Int(i64::from(minor)),
        "PHP_RELEASE_VERSION" => PhpValue::Int(i64::from(release)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn php(text: &str) -> PhpVersion {
        PhpVersion::new(text, "a test").expect("a version")
    }

    /// The values PHP 8.3.33, 8.4.25 and 8.5.10 print for these constants (mysqlnd builds).
    #[test]
    fn mysql_attributes_follow_the_php_version() {
        for (version, ssl_ca, direct, verify, infile_dir) in [
            ("8.0.30", 1009, 1004, 1014, None),
            ("8.2.36", 1009, 1004, 1014, Some(1015)),
            ("8.3.33", 1009, 1004, 1014, Some(1015)),
            ("8.4.25", 1009, 1004, 1014, Some(1015)),
            ("8.5.10", 1008, 20, 1013, Some(1014)),
        ] {
            let php = php(version);
            let int = |class: &str, member: &str| class_constant(class, member, &php);
            assert_eq!(
                int("pdo", "MYSQL_ATTR_SSL_CA"),
                Some(PhpValue::Int(ssl_ca)),
                "{version}"
            );
            assert_eq!(
                int("pdo\\mysql", "ATTR_SSL_CA"),
                int("pdo", "MYSQL_ATTR_SSL_CA"),
                "{version}: the same attribute"
            );
            assert_eq!(pdo_mysql_attribute("DIRECT_QUERY", php.id), Some(direct));
            assert_eq!(
                pdo_mysql_attribute("SSL_VERIFY_SERVER_CERT", php.id),
                Some(verify)
            );
            assert_eq!(
                pdo_mysql_attribute("LOCAL_INFILE_DIRECTORY", php.id),
                infile_dir
            );
            assert_eq!(pdo_mysql_attribute("SSL_KEY", php.id), Some(ssl_ca - 2));
            assert_eq!(
                int("pdo\\mysql", "ATTR_TIMEOUT"),
                Some(PhpValue::Int(2)),
                "inherited from PDO"
            );
            assert_eq!(int("pdo", "ATTR_PERSISTENT"), Some(PhpValue::Int(12)));
            assert_eq!(int("pdo", "NOT_A_CONSTANT"), None);
            assert_eq!(int("redis", "OPT_PREFIX"), None);
        }
    }

    #[test]
    fn version_constants() {
        let php = php("8.2.36");
        assert_eq!(constant("PHP_VERSION_ID", &php), Some(PhpValue::Int(80236)));
        assert_eq!(
            constant("PHP_VERSION", &php),
            Some(PhpValue::Str("8.2.36".into()))
        );
        assert_eq!(constant("PHP_MINOR_VERSION", &php), Some(PhpValue::Int(2)));
        assert_eq!(
            constant("PHP_RELEASE_VERSION", &php),
            Some(PhpValue::Int(36))
        );
        assert_eq!(constant("php_version_id", &php), None, "case-sensitive");
    }
}
