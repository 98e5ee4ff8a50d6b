//! The store's SQL over sqlx: every sqlx row is a [`Fields`], every sqlx connection a
//! [`Conn`], and sqlx's errors become [`StoreError`]s here, so that the engine, the rules and
//! every caller of the store know nothing of sqlx (only the two backends' connection handling
//! does).

use async_trait::async_trait;

use super::rows::{Arg, Conn, Fields, Stmt};
use super::{Result, StoreError};

/// Every row of a sqlx driver whose columns decode as the store's types.
impl<R> Fields for R
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database>,
    i64: sqlx::Type<R::Database>,
    String: sqlx::Type<R::Database>,
    bool: sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<Option<bool>> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(column)?)
    }
}

/// Binds a statement's arguments to a sqlx query.
fn query<DB>(sql: &str, args: Vec<Arg>) -> sqlx::query::Query<'_, DB, DB::Arguments<'_>>
where
    DB: sqlx::Database,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::query(sql);
    for arg in args {
        q = match arg {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Flag(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        };
    }
    q
}

/// Every sqlx connection is a [`Conn`].
#[async_trait]
impl<C, DB> Conn for C
where
    DB: sqlx::Database,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Row: Fields,
    DB::QueryResult: Into<Changed>,
{
    type Row = DB::Row;

    async fn execute(&mut self, stmt: Stmt) -> Result<u64> {
        let done = query::<DB>(&stmt.sql, stmt.args).execute(self).await?;
        Ok(done.into().0)
    }

    async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<DB::Row>> {
        Ok(query::<DB>(&stmt.sql, stmt.args).fetch_all(self).await?)
    }

    async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<DB::Row>> {
        Ok(query::<DB>(&stmt.sql, stmt.args)
            .fetch_optional(self)
            .await?)
    }
}

/// The rows a statement changed (each driver reports it on its own result type).
pub struct Changed(pub u64);

impl From<sqlx::sqlite::SqliteQueryResult> for Changed {
    fn from(done: sqlx::sqlite::SqliteQueryResult) -> Changed {
        Changed(done.rows_affected())
    }
}

impl From<sqlx::postgres::PgQueryResult> for Changed {
    fn from(done: sqlx::postgres::PgQueryResult) -> Changed {
        Changed(done.rows_affected())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        use sqlx::Error as E;
        match &err {
            E::PoolTimedOut
            | E::PoolClosed
            | E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            E::Database(db) if db.is_unique_violation() => {
                // PostgreSQL names the constraint; SQLite only says it in the message
                // (`UNIQUE constraint failed: customers.name`).
                let message = db.message();
                let constraint = db
                    .constraint()
                    .unwrap_or_else(|| message.rsplit(": ").next().unwrap_or(message));
                StoreError::Duplicate(constraint.to_owned())
            }
            E::Database(db) => match db.code().as_deref().map(classify) {
                Some(Class::Unavailable) => StoreError::Unavailable(err.to_string()),
                Some(Class::Contended) => StoreError::Contended(err.to_string()),
                _ => StoreError::Backend(err.to_string()),
            },
            _ => StoreError::Backend(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> StoreError {
        match err {
            sqlx::migrate::MigrateError::Execute(e) => match StoreError::from(e) {
                unavailable @ StoreError::Unavailable(_) => unavailable,
                other => StoreError::Migration(other.to_string()),
            },
            other => StoreError::Migration(other.to_string()),
        }
    }
}

enum Class {
    Unavailable,
    Contended,
    Other,
}

/// What a database error code says: PostgreSQL's SQLSTATE, or SQLite's (extended) result code.
fn classify(code: &str) -> Class {
    // PostgreSQL: connection exceptions, the server shutting down or refusing connections.
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
        return Class::Unavailable;
    }
    // PostgreSQL: serialization failure, deadlock.
    if matches!(code, "40001" | "40P01") {
        return Class::Contended;
    }
    // SQLite: the file busy or locked by another connection past the busy timeout, read-only,
    // failing I/O or unopenable: nothing was written, and it is worth retrying.
    match code.parse::<i32>().map(|c| c & 0xff) {
        Ok(5 | 6 | 8 | 10 | 14) => Class::Unavailable,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::{Class, StoreError, classify};

    #[test]
    fn a_database_away_is_unavailable_and_a_wrong_statement_is_not() {
        let away = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
        ];
        for e in away {
            let text = e.to_string();
            assert!(StoreError::from(e).is_unavailable(), "{text}");
        }
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        for (code, away) in [
            ("5", true),     // SQLITE_BUSY
            ("517", true),   // SQLITE_BUSY_SNAPSHOT
            ("6", true),     // SQLITE_LOCKED
            ("8", true),     // SQLITE_READONLY
            ("19", false),   // SQLITE_CONSTRAINT
            ("2067", false), // SQLITE_CONSTRAINT_UNIQUE
            ("53300", true), // too_many_connections
            ("08006", true), // connection_failure
            ("57P01", true), // admin_shutdown
            ("23505", false),
            ("40001", false),
        ] {
            assert_eq!(matches!(classify(code), Class::Unavailable), away, "{code}");
        }
    }
}
