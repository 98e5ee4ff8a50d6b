//! Rows as both backends read and write them: the column lists, the mapping from a row to
//! [`Customer`], [`Order`], [`Refill`] and [`LedgerEntry`], and the statements with their
//! arguments. The SQL is written once with numbered parameters (`$1`), which PostgreSQL and
//! sqlx's SQLite driver both bind by number.

use std::borrow::Cow;

use async_trait::async_trait;

use super::rules::{child_orders_from_db, drip_from_db, from_db, undecodable};
use super::{
    Attention, Customer, EntryKind, LedgerEntry, Order, OrderEvent, OrderState, Refill, Result,
};
use crate::protocol::{RefillStatus, Status};

/// Reads one column of a row by name, as the few types the store keeps.
pub trait Fields {
    fn int(&self, column: &str) -> Result<Option<i64>>;
    fn text(&self, column: &str) -> Result<Option<String>>;
    fn flag(&self, column: &str) -> Result<Option<bool>>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;

    /// A column that is never NULL.
    fn i64(&self, column: &str) -> Result<i64> {
        required(self.int(column)?, column)
    }

    fn string(&self, column: &str) -> Result<String> {
        required(self.text(column)?, column)
    }

    fn u64(&self, column: &str) -> Result<u64> {
        from_db(self.i64(column)?, column)
    }

    fn opt_u64(&self, column: &str) -> Result<Option<u64>> {
        self.int(column)?.map(|v| from_db(v, column)).transpose()
    }

    /// A column holding one of the words `parse` knows.
    fn word<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> Result<Option<T>> {
        self.text(column)?
            .map(|t| parse(&t).ok_or_else(|| undecodable(column, format!("unknown value {t:?}"))))
            .transpose()
    }

    fn state(&self) -> Result<OrderState> {
        required(self.word("state", OrderState::parse)?, "state")
    }

    fn status(&self) -> Result<Status> {
        required(self.word("status", Status::parse)?, "status")
    }

    fn attention(&self) -> Result<Option<Attention>> {
        self.word("attention", Attention::parse)
    }
}

/// A column the schema declares NOT NULL.
fn required<T>(value: Option<T>, column: &str) -> Result<T> {
    value.ok_or_else(|| undecodable(column, "NULL".into()))
}

/// One argument of a statement.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Flag(Option<bool>),
    Bytes(Vec<u8>),
}

macro_rules! arg_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$t> for Arg {
            fn from($v: $t) -> Arg {
                $e
            }
        })*
    };
}

arg_from! {
    i64 => |v| Arg::Int(Some(v)),
    Option<i64> => |v| Arg::Int(v),
    bool => |v| Arg::Flag(Some(v)),
    Option<bool> => |v| Arg::Flag(v),
    &str => |v| Arg::Text(Some(v.to_owned())),
    Option<&str> => |v| Arg::Text(v.map(str::to_owned)),
    &String => |v| Arg::Text(Some(v.clone())),
    &Option<String> => |v| Arg::Text(v.clone()),
    Option<String> => |v| Arg::Text(v),
    &[u8] => |v| Arg::Bytes(v.to_vec()),
}

/// An SQL statement and its arguments, `$1` first.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg>,
}

impl Stmt {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Stmt {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub fn bind(mut self, arg: impl Into<Arg>) -> Stmt {
        self.args.push(arg.into());
        self
    }
}

/// `$from, $from+1, …`: `n` numbered parameters, for an `IN (…)` list.
pub(super) fn params(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A connection that runs [`Stmt`]s: all the store's SQL goes through these three.
#[async_trait]
pub trait Conn: Send {
    type Row: Fields + Send + Sync;

    /// Runs `stmt`; returns the rows it changed.
    async fn execute(&mut self, stmt: Stmt) -> Result<u64>;

    async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<Self::Row>>;

    async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<Self::Row>>;
}

// ---- mapping ----

pub(super) const CUSTOMER_COLUMNS: &str = "c.id AS id, c.name AS name, c.grp AS grp, \
     c.balance AS balance, c.credit_limit AS credit_limit, c.enabled AS enabled, \
     c.created_at AS created_at";

pub(super) fn customer(row: &impl Fields) -> Result<Customer> {
    Ok(Customer {
        id: row.i64("id")?,
        name: row.string("name")?,
        group: row.string("grp")?,
        balance: row.i64("balance")?,
        credit_limit: row.i64("credit_limit")?,
        enabled: required(row.flag("enabled")?, "enabled")?,
        created_at: row.i64("created_at")?,
    })
}

/// The columns of [`Order`], from `orders o` joined with `customers c`.
pub(super) const ORDER_COLUMNS: &str = "o.id AS id, o.customer_id AS customer_id, \
     c.name AS customer, o.service AS service, o.upstream AS upstream, \
     o.upstream_service AS upstream_service, o.upstream_order AS upstream_order, \
     o.state AS state, o.status AS status, o.charge AS charge, o.refunded AS refunded, \
     o.billed AS billed, o.remains AS remains, o.start_count AS start_count, o.cost AS cost, \
     o.link AS link, o.fields AS fields, o.note AS note, o.created_at AS created_at, \
     o.updated_at AS updated_at, o.synced_at AS synced_at, o.attention AS attention, \
     o.list_cost AS list_cost, o.first_cost AS first_cost, o.can_refill AS can_refill, \
     o.can_cancel AS can_cancel, o.dispatch_deadline AS dispatch_deadline, \
     o.progress_at AS progress_at, o.drip_runs AS drip_runs, \
     o.drip_interval AS drip_interval, o.runs_done AS runs_done, \
     o.child_orders AS child_orders";

/// `SELECT` of [`ORDER_COLUMNS`] from orders and their customers; a `WHERE` follows.
pub(super) fn order_select() -> String {
    format!("SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id")
}

pub(super) fn order(row: &impl Fields) -> Result<Order> {
    Ok(Order {
        id: row.i64("id")?,
        customer_id: row.i64("customer_id")?,
        customer: row.string("customer")?,
        service: row.u64("service")?,
        upstream: row.string("upstream")?,
        upstream_service: row.u64("upstream_service")?,
        upstream_order: row.text("upstream_order")?,
        state: row.state()?,
        status: row.status()?,
        charge: row.i64("charge")?,
        refunded: row.i64("refunded")?,
        billed: row.u64("billed")?,
        remains: row.int("remains")?,
        start_count: row.opt_u64("start_count")?,
        cost: row.int("cost")?,
        link: row.text("link")?,
        fields: row.string("fields")?,
        note: row.text("note")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
        synced_at: row.int("synced_at")?,
        attention: row.attention()?,
        list_cost: row.int("list_cost")?,
        first_cost: row.int("first_cost")?,
        can_refill: row.flag("can_refill")?,
        can_cancel: row.flag("can_cancel")?,
        dispatch_deadline: row.int("dispatch_deadline")?,
        progress_at: row.int("progress_at")?,
        drip: drip_from_db(row.int("drip_runs")?, row.int("drip_interval")?),
        runs_done: row.opt_u64("runs_done")?,
        child_orders: child_orders_from_db(row.text("child_orders")?.as_deref()),
    })
}

pub(super) const REFILL_COLUMNS: &str = "id, order_id, customer_id, upstream, upstream_refill, \
     status, created_at, synced_at";

pub(super) fn refill(row: &impl Fields) -> Result<Refill> {
    Ok(Refill {
        id: row.i64("id")?,
        order_id: row.i64("order_id")?,
        customer_id: row.i64("customer_id")?,
        upstream: row.string("upstream")?,
        upstream_refill: row.u64("upstream_refill")?,
        status: required(row.word("status", RefillStatus::parse)?, "status")?,
        created_at: row.i64("created_at")?,
        synced_at: row.int("synced_at")?,
    })
}

pub(super) const EVENT_COLUMNS: &str = "at, state, status, remains";

pub(super) fn event(row: &impl Fields) -> Result<OrderEvent> {
    Ok(OrderEvent {
        at: row.i64("at")?,
        state: row.state()?,
        status: row.status()?,
        remains: row.int("remains")?,
    })
}

pub(super) const ENTRY_COLUMNS: &str = "id, customer_id, amount, kind, order_id, note, created_at";

pub(super) fn entry(row: &impl Fields) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: row.i64("id")?,
        customer_id: row.i64("customer_id")?,
        amount: row.i64("amount")?,
        kind: required(row.word("kind", EntryKind::parse)?, "kind")?,
        order_id: row.int("order_id")?,
        note: row.text("note")?,
        created_at: row.i64("created_at")?,
    })
}
