//! The few shapes of PHP's `serialize()` a queued job needs.
//!
//! Laravel's worker runs a job by `unserialize()`-ing `data.command`, so the bytes must be what
//! PHP itself would write: lengths are byte counts, strings are not escaped, objects name their
//! class. Only what a job holding an order needs is here: integers, strings, empty arrays and
//! objects with public properties.

use std::fmt::Write as _;

/// One serialized PHP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhpSerialized {
    /// `N;`
    Null,
    /// `i:<n>;`
    Int(i128),
    /// `s:<byte length>:"<text>";`
    Str(String),
    /// `[]`
    EmptyArray,
    /// An object of `class` with these public properties, in order.
    Object {
        /// The fully qualified class name, e.g. `App\Jobs\OrderExpired`.
        class: String,
        /// Each public property's name and value.
        properties: Vec<(String, PhpSerialized)>,
    },
}

impl PhpSerialized {
    /// The bytes `serialize()` writes (always valid UTF-8 for these shapes: lengths count bytes,
    /// the text itself is copied).
    pub fn to_php(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("N;"),
            Self::Int(n) => {
                let _ = write!(out, "i:{n};");
            }
            Self::Str(s) => {
                let _ = write!(out, "s:{}:\"{s}\";", s.len());
            }
            Self::EmptyArray => out.push_str("a:0:{}"),
            Self::Object { class, properties } => {
                let _ = write!(out, "O:{}:\"{class}\":{}:{{", class.len(), properties.len());
                for (name, value) in properties {
                    Self::Str(name.clone()).write(out);
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against PHP 8.2's own
    /// `serialize(new App\Jobs\OrderExpired(42))` for a class with `public int $orderId`.
    #[test]
    fn a_plain_job_with_an_integer_property() {
        let job = PhpSerialized::Object {
            class: "App\\Jobs\\OrderExpired".into(),
            properties: vec![("orderId".into(), PhpSerialized::Int(42))],
        };
        assert_eq!(
            job.to_php(),
            "O:21:\"App\\Jobs\\OrderExpired\":1:{s:7:\"orderId\";i:42;}"
        );
    }

    #[test]
    fn lengths_count_bytes() {
        assert_eq!(PhpSerialized::Str("商城".into()).to_php(), "s:6:\"商城\";");
        assert_eq!(PhpSerialized::EmptyArray.to_php(), "a:0:{}");
        assert_eq!(PhpSerialized::Int(-7).to_php(), "i:-7;");
    }
}
