//! [`super::admin::AdminStore`] on PostgreSQL: [`super::admin::admin_store!`], each write in
//! a [`super::postgres`] transaction (retried on a serialization failure or a deadlock).

use sqlx::postgres::PgConnection;

use super::StoreError;
use super::admin::admin_store;
use super::postgres::{
    PostgresStore, RETRIES, adjust_balance_in, backoff, duplicate, fetch_customer, is_transient,
    transaction,
};

admin_store!(PostgresStore, adjust_balance_in);
