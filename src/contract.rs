//! The contract with the app: which signals cancel an order, and what keeps it alive.
//!
//! docs/contract.md says it in prose; this is the same promise computed from the
//! settings, so that `check` and the worker's first lines state exactly what the code does.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Settings;

/// The contract with the app (docs/contract.md): what makes an order count as
/// expired, and what keeps it alive.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Contract {
    /// `events-only` (no `ORDER_EXPIRE_TTL`): only Redis's own expiry of the key cancels, so a
    /// key deleted on payment protects the order, as with the PHP worker. `reconciliation`:
    /// the database is the truth, so an order whose key is gone past its TTL is cancelled
    /// unless the guard says paid.
    pub(crate) mode: &'static str,
    /// The condition an order must meet, under its row lock, to be cancelled.
    pub(crate) guard: String,
}

impl Contract {
    /// Only Redis's own expiry of a key cancels.
    pub(crate) const EVENTS_ONLY: &'static str = "events-only";
    /// The database is the truth.
    pub(crate) const RECONCILIATION: &'static str = "reconciliation";

    /// The contract the settings give.
    pub(crate) fn new(settings: &Settings) -> Self {
        let schema = &settings.schema;
        let mut guard = format!(
            "{} = {}",
            schema.order_status.as_str(),
            schema.unpaid_status
        );
        if let Some(paid) = &schema.paid_column {
            let _ = write!(guard, " and {} is null", paid.as_str());
        }
        Self {
            mode: if settings.recovery.order_ttl.is_some() {
                Self::RECONCILIATION
            } else {
                Self::EVENTS_ONLY
            },
            guard,
        }
    }

    /// The mode and the guard in one line, for `check` and the worker's start.
    pub(crate) fn promise(&self) -> String {
        if self.mode == Self::RECONCILIATION {
            format!(
                "reconciliation: an order whose key is gone past ORDER_EXPIRE_TTL is cancelled if `{}`; deleting the key alone does not protect it, the database must show it paid",
                self.guard
            )
        } else {
            format!(
                "events-only: only Redis's own expiry of an order's key cancels it, if `{}`; a key deleted before its deadline keeps the order",
                self.guard
            )
        }
    }
}
