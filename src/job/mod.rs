//! Laravel queue jobs, written as Laravel writes them.
//!
//! The PHP command cancelled with `$order->save()`, which fires the app's Eloquent events
//! (observers, listeners: a mail, a coupon released, an audit row). order-expire writes SQL,
//! which fires none, so it can put one job per cancelled order on the app's own queue instead,
//! for `php artisan queue:work` to run the app's code.
//!
//! * [`php_serialize`]: the bytes of PHP's `serialize()` for the job object.
//! * [`payload`]: the JSON payload per Laravel version, for the database and redis queues.

pub mod payload;
pub mod php_serialize;
