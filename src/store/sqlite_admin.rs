//! [`super::admin::AdminStore`] on SQLite: [`super::admin::admin_store!`], each write in a
//! [`super::sqlite`] write transaction.

use super::admin::admin_store;
use super::sqlite::{SqliteStore, adjust_balance_in, duplicate, fetch_customer};

/// Runs `$body` (a future using the connection `$conn`) in a write transaction and commits it.
macro_rules! transaction {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let mut w = $store.write().await?;
        let value = {
            let $conn: &mut sqlx::SqliteConnection = w.conn();
            $body.await?
        };
        w.commit().await?;
        Ok(value)
    }};
}

admin_store!(SqliteStore, adjust_balance_in);
