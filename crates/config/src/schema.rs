//! The app's tables and columns that the writer touches, as validated SQL identifiers.
//!
//! Table and column names come from the `.env` or the command line, and SQL cannot bind
//! identifiers as parameters. So every name is checked once, here, against a strict identifier
//! grammar, and the writer only ever splices an [`Ident`] (always back-quoted) into its SQL.

use std::fmt;

/// A table or column name that is safe to put between back-quotes in MySQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident(String);

impl Ident {
    /// Accepts `[A-Za-z_][A-Za-z0-9_$]*`, at most 64 characters (MySQL's limit).
    pub fn new(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if !valid_start || !valid_rest || name.len() > 64 {
            return Err(format!(
                "`{name}` is not a valid table or column name (use letters, digits and _, at most 64 characters, not starting with a digit)"
            ));
        }
        Ok(Self(name.to_string()))
    }

    /// The bare name, as stored in `information_schema`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Double-quoted for PostgreSQL, as Laravel's PostgresGrammar writes names (the name is
    /// validated, so it holds no quote).
    pub fn pg_quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// Back-quoted, ready for SQL.
impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0)
    }
}

/// Where an order's stock comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderLines {
    /// One product per order: `orders.product_id` and `orders.quantity` (the blog post's schema).
    OnOrder {
        /// The order row's product column (`ORDER_EXPIRE_ORDERS_PRODUCT_COLUMN`).
        product: Ident,
        /// The order row's quantity column (`ORDER_EXPIRE_ORDERS_QUANTITY_COLUMN`).
        quantity: Ident,
    },
    /// Several lines per order in an items table: `order_items(order_id, product_id, quantity)`.
    Items {
        /// The lines table (`ORDER_EXPIRE_ITEMS_TABLE`), table prefix included.
        table: Ident,
        /// Its column holding the order id (`ORDER_EXPIRE_ITEMS_ORDER_COLUMN`).
        order: Ident,
        /// Its product column (`ORDER_EXPIRE_ITEMS_PRODUCT_COLUMN`).
        product: Ident,
        /// Its quantity column (`ORDER_EXPIRE_ITEMS_QUANTITY_COLUMN`).
        quantity: Ident,
    },
}

/// The schema mapping: which tables and columns mean what.
///
/// Primary keys are `id` and the timestamp is `updated_at`, Eloquent's defaults; the writer
/// checks at start which of the configured columns really exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The orders table (`ORDER_EXPIRE_ORDERS_TABLE`), table prefix included.
    pub orders: Ident,
    /// The orders' status column (`ORDER_EXPIRE_ORDERS_STATUS_COLUMN`).
    pub order_status: Ident,
    /// Where an order's products and quantities are: on its row, or in a lines table.
    pub lines: OrderLines,
    /// The products table (`ORDER_EXPIRE_PRODUCTS_TABLE`), table prefix included.
    pub products: Ident,
    /// The stock column the cancelled quantity goes back to
    /// (`ORDER_EXPIRE_PRODUCTS_STOCK_COLUMN`).
    pub product_stock: Ident,
    /// The status of an order that may still be paid (the only one we cancel).
    pub unpaid_status: i64,
    /// The status we set, as the PHP command's `$order->status = 2`.
    pub cancelled_status: i64,
    /// A column whose non-null value means paid (`paid_at`), when the app has one: the database
    /// is the truth about payment, so an order with it set is never cancelled.
    pub paid_column: Option<Ident>,
}

impl Schema {
    /// Puts the connection's table prefix in front of every table name, as Laravel's query
    /// grammar does.
    pub fn apply_table_prefix(&mut self, prefix: &str) -> Result<(), String> {
        if prefix.is_empty() {
            return Ok(());
        }
        let prefixed = |t: &Ident| Ident::new(&format!("{prefix}{}", t.as_str()));
        self.orders = prefixed(&self.orders)?;
        self.products = prefixed(&self.products)?;
        if let OrderLines::Items { table, .. } = &mut self.lines {
            *table = prefixed(table)?;
        }
        Ok(())
    }

    /// Eloquent's primary key column.
    pub fn id_column() -> Ident {
        Ident("id".into())
    }

    /// Eloquent's `Model::CREATED_AT`: with the app's TTL, the deadline of an order whose key
    /// is gone.
    pub fn created_at_column() -> Ident {
        Ident("created_at".into())
    }

    /// Eloquent's `Model::UPDATED_AT`.
    pub fn updated_at_column() -> Ident {
        Ident("updated_at".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        assert_eq!(
            Ident::new("orders").map(|i| i.to_string()),
            Ok("`orders`".into())
        );
        assert!(Ident::new("shop_orders2").is_ok());
        assert!(Ident::new("_t$x").is_ok());
        for bad in [
            "",
            "2orders",
            "orders`; DROP TABLE x",
            "ord ers",
            "orders.x",
            "ordérs",
        ] {
            assert!(Ident::new(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(Ident::new(&"a".repeat(65)).is_err());
        assert_eq!(
            Ident::new("Orders").map(|i| i.pg_quoted()),
            Ok("\"Orders\"".into())
        );
    }
}
