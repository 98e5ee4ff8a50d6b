//! The load benchmark's helper (`benches/load.sh` runs it): the baselines panelgate is measured
//! against, an open-loop load generator, and a seeder for a realistically full ledger.
//!
//! - `hello`: the smallest hyper 1 server that answers JSON, the ceiling of the HTTP stack.
//! - `sqlite-baseline`: the durable writes of one `add`, done by a bare SQLite program.
//! - `latency`: fixed-rate requests with latency taken from the scheduled instant, so that a
//!   slow server cannot hide its stalls by slowing the generator down (coordinated omission).
//! - `seed`: orders with their ledger entries, into an existing panelgate database (either
//!   backend): finished history, or open orders for sync.
//! - `sim-orders`, `pass`, `plot`, `dir-size`: the scale curves (`benches/load.sh curve …`).
//! - `check`: the ledger invariant over a whole database, after a run.
// The load generator paces real traffic against another process on the wall clock; nothing
// here runs on a paused clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use panelgate::sync::now_ms;
use rusqlite::{Connection, OpenFlags, params};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

#[path = "loadkit/curves.rs"]
mod curves;
#[path = "loadkit/seed.rs"]
mod seed;
#[path = "loadkit/soak.rs"]
mod soak;

/// panelgate's own schema, so the baseline writes into exactly the tables, indexes, checks
/// and triggers the gateway writes into.
const MIGRATIONS: [&str; 2] = [
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_sync_leases.sql"),
];

#[derive(Parser)]
#[command(about = "Helpers of the load benchmark (benches/load.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A minimal keep-alive HTTP/1.1 server answering {"status":"ok"} to every request.
    Hello {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The durable work of one panelgate `add`, in a loop, on a fresh database file.
    SqliteBaseline {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
    },
    /// Open-loop, fixed-rate POSTs with coordinated-omission-corrected latency.
    Latency {
        #[arg(long)]
        url: String,
        /// The form-urlencoded body of every request.
        #[arg(long)]
        body: String,
        /// An extra request header, `Name: value`; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// `LO:HI`: each request's body has `{id}` replaced by an id drawn from LO..=HI, so
        /// that the requests spread over a whole ledger instead of one cached order.
        #[arg(long)]
        ids: Option<String>,
        /// Draw the ids of `--ids` in order, LO first, instead of at random: each is used
        /// once while the run has fewer requests than ids (first requests, with cold caches).
        #[arg(long)]
        in_order: bool,
        /// Draw each id of `--ids` once, scattered over the range, before any is drawn again:
        /// while the run has fewer requests than ids, no answer can come from a cache.
        #[arg(long, conflicts_with = "in_order")]
        once: bool,
    },
    /// Adds orders (and their charge and refund entries) to a panelgate database: finished
    /// history, or with `--open` placed orders for sync to follow.
    Seed {
        /// A SQLite file, or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The customer (by name) who placed them.
        #[arg(long)]
        client: String,
        #[arg(long)]
        orders: u64,
        /// The upstream the orders were placed at.
        #[arg(long, default_value = "sim")]
        upstream: String,
        /// The local service id of the orders.
        #[arg(long, default_value_t = 1001)]
        service: u64,
        /// The upstream's id of that service.
        #[arg(long, default_value_t = 1)]
        upstream_service: u64,
        /// The service's rate per 1000, in 0.00001 units.
        #[arg(long, default_value_t = 126_000)]
        rate_units: i64,
        /// Placed orders in progress, never synced, instead of finished ones.
        #[arg(long)]
        open: bool,
        /// The upstream's id of the first order (the others follow it). The default is far
        /// from anything the simulator hands out in a benchmark run.
        #[arg(long, default_value_t = 50_000_000)]
        first_upstream_order: i64,
    },
    /// Adds `count` customers named `{prefix}{i}`, each with that name as its API key (stored
    /// hashed as the gateway stores keys), i = 1 … count.
    SeedCustomers {
        /// A SQLite file, or a `postgres://` URL.
        #[arg(long)]
        db: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u64,
    },
    /// A fixed-rate open-loop mix (status, status of 100, a few adds, services now and then)
    /// with latency, errors and the gateway's RSS per time window.
    Soak {
        #[arg(long)]
        url: String,
        #[arg(long)]
        key: String,
        /// `LO:HI`: the existing orders asked about.
        #[arg(long)]
        ids: String,
        #[arg(long)]
        service: u64,
        #[arg(long)]
        quantity: u64,
        #[arg(long)]
        requests: u64,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Per 10,000 requests.
        #[arg(long, default_value_t = 300)]
        adds_per_10k: u64,
        /// Per 10,000 requests: status of 100 orders (the rest ask about one).
        #[arg(long, default_value_t = 2_000)]
        batches_per_10k: u64,
        #[arg(long, default_value_t = 5.0)]
        services_every_s: f64,
        #[arg(long, default_value_t = 10.0)]
        window_s: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// The gateway's pid, for its VmRSS.
        #[arg(long)]
        pid: u32,
        /// Where the per-window table (TSV) goes.
        #[arg(long)]
        windows: PathBuf,
    },
    #[command(flatten)]
    Curve(curves::Command),
    /// Counts orders and ledger entries, and checks that every client's balance is the sum
    /// of its ledger entries (read-only; fine while panelgate runs).
    Check {
        #[arg(long)]
        db: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Hello { listen } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(hello(listen)),
        Command::SqliteBaseline { db, seconds } => sqlite_baseline(&db, seconds),
        Command::Latency {
            url,
            body,
            headers,
            rate,
            seconds,
            connections,
            ids,
            in_order,
            once,
        } => {
            ensure!(
                rate > 0.0 && seconds > 0.0,
                "rate and seconds must be above 0"
            );
            ensure!(connections > 0, "at least one connection");
            let draw = match (in_order, once) {
                (true, _) => Draw::InOrder,
                (_, true) => Draw::Once,
                _ => Draw::Random,
            };
            let target = Target::new(&url, body, &headers)?.spread(ids.as_deref(), draw)?;
            // One thread is plenty for the rates measured here, and keeps the generator on
            // the single core it is pinned to without work-stealing hand-offs.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(latency(Arc::new(target), rate, seconds, connections))
        }
        Command::Seed {
            db,
            client,
            orders,
            upstream,
            service,
            upstream_service,
            rate_units,
            open,
            first_upstream_order,
        } => seed::seed(
            &db,
            &seed::Seed {
                client: &client,
                orders,
                upstream: &upstream,
                service,
                upstream_service,
                rate_units,
                open,
                first_upstream_order,
            },
        ),
        Command::SeedCustomers { db, prefix, count } => seed::seed_customers(&db, &prefix, count),
        Command::Soak {
            url,
            key,
            ids,
            service,
            quantity,
            requests,
            rate,
            adds_per_10k,
            batches_per_10k,
            services_every_s,
            window_s,
            connections,
            pid,
            windows,
        } => {
            let (lo, hi) = ids.split_once(':').context("--ids is LO:HI")?;
            ensure!(window_s > 0.0 && services_every_s > 0.0, "times above 0");
            soak::run(soak::Mix {
                url,
                key,
                ids: (lo.parse()?, hi.parse()?),
                service,
                quantity,
                requests,
                rate,
                adds_per_10k,
                batches_per_10k,
                services_every: Duration::from_secs_f64(services_every_s),
                window: Duration::from_secs_f64(window_s),
                connections,
                pid,
                windows,
            })
        }
        Command::Curve(command) => curves::run(command),
        Command::Check { db } => check(&db),
    }
}

// ---- hello ----

const HELLO: &[u8] = br#"{"status":"ok"}"#;

async fn hello(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like pass; a baseline that exits mid-run would
                // turn into a broken row.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // The gateway sets it too; without it small replies wait on Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                // Receiving the body is part of every request the gateway serves, so the
                // baseline pays for it too.
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(HELLO)))
                        .expect("a static response is valid"),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// ---- sqlite-baseline ----

fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// Opens a connection with the settings panelgate's store uses (`src/store/sqlite.rs`), and
/// checks that SQLite took them: a baseline on weaker durability would flatter itself.
fn open_like_panelgate(db: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(db, flags)
        .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    ensure!(mode == "wal", "journal_mode is {mode}, not wal");
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    ensure!(
        synchronous == 2,
        "synchronous is {synchronous}, not 2 (FULL)"
    );
    Ok(conn)
}

/// The statement of panelgate's `fetch_order`, which `create_order` runs before it commits.
const ORDER_SELECT: &str = "SELECT o.id AS id, o.customer_id AS customer_id, c.name AS customer, \
     o.service AS service, o.upstream AS upstream, o.upstream_service AS upstream_service, \
     o.upstream_order AS upstream_order, o.state AS state, o.status AS status, \
     o.charge AS charge, o.refunded AS refunded, o.billed AS billed, o.remains AS remains, \
     o.start_count AS start_count, o.cost AS cost, o.link AS link, o.fields AS fields, \
     o.note AS note, o.created_at AS created_at, o.updated_at AS updated_at, \
     o.synced_at AS synced_at \
     FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ?";

fn sqlite_baseline(db: &Path, seconds: f64) -> Result<()> {
    remove_database(db);
    let conn = open_like_panelgate(db, OpenFlags::default())?;
    for sql in MIGRATIONS {
        conn.execute_batch(sql)
            .context("applying panelgate's migrations")?;
    }
    let now = now_ms();
    conn.execute(
        "INSERT INTO customers (name, key_hash, grp, credit_limit, balance, enabled, created_at) \
         VALUES ('bench', zeroblob(32), 'default', 0, 0, 1, ?)",
        [now],
    )?;
    let customer = conn.last_insert_rowid();
    let opening: i64 = 1 << 60;
    conn.execute(
        "UPDATE customers SET balance = balance + ?1 WHERE id = ?2",
        params![opening, customer],
    )?;
    conn.execute(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES (?, ?, 'credit', NULL, 'opening balance', ?)",
        params![customer, opening, now],
    )?;

    // What the gateway stores for `add` of a Default service with link and quantity.
    let (service, upstream, upstream_service, billed) = (1001_i64, "sim", 1_i64, 1000_i64);
    let charge = 126_000_i64;
    let link = "https://example.com/p";
    let fields = r#"{"link":"https://example.com/p","quantity":"1000"}"#;

    let mut begin = conn.prepare_cached("BEGIN IMMEDIATE")?;
    let mut commit = conn.prepare_cached("COMMIT")?;
    let mut balance_of =
        conn.prepare_cached("SELECT balance, credit_limit FROM customers WHERE id = ?")?;
    let mut insert_order = conn.prepare_cached(
        "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, status, \
         charge, refunded, billed, link, fields, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
    )?;
    let mut debit = conn.prepare_cached(
        "UPDATE customers SET balance = balance + ?1 \
         WHERE id = ?2 AND balance + ?1 >= -credit_limit",
    )?;
    let mut insert_entry = conn.prepare_cached(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    let mut fetch_order = conn.prepare_cached(ORDER_SELECT)?;
    let mut mark_placed = conn.prepare_cached(
        "UPDATE orders SET state = 'placed', upstream_order = ?, status = ?, updated_at = ? \
         WHERE id = ? AND state = 'dispatching'",
    )?;

    let mut latencies = Vec::new();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut upstream_order = 1_i64;
    while Instant::now() < until {
        let t = Instant::now();
        let now = now_ms();

        // create_order: the funds check, the order, `post` (check again, guarded debit,
        // ledger entry), and the order read back, in one immediate transaction.
        begin.execute([])?;
        let (balance, limit): (i64, i64) =
            balance_of.query_row([customer], |r| Ok((r.get(0)?, r.get(1)?)))?;
        ensure!(
            balance - charge >= -limit,
            "the baseline customer ran out of funds"
        );
        insert_order.execute(params![
            customer,
            service,
            upstream,
            upstream_service,
            "dispatching",
            "Pending",
            charge,
            billed,
            link,
            fields,
            now,
            now
        ])?;
        let id = conn.last_insert_rowid();
        let (balance, limit): (i64, i64) =
            balance_of.query_row([customer], |r| Ok((r.get(0)?, r.get(1)?)))?;
        ensure!(
            balance - charge >= -limit,
            "the baseline customer ran out of funds"
        );
        ensure!(
            debit.execute(params![-charge, customer])? == 1,
            "debit refused"
        );
        insert_entry.execute(params![customer, -charge, "charge", id, None::<&str>, now])?;
        fetch_order.query_row([id], |r| {
            // Decode every column, as the gateway's row mapping does.
            for i in 0..r.as_ref().column_count() {
                std::hint::black_box(r.get_ref(i)?);
            }
            Ok(())
        })?;
        commit.execute([])?;

        // mark_placed, after the upstream said yes.
        begin.execute([])?;
        ensure!(
            mark_placed.execute(params![upstream_order, "Pending", now_ms(), id])? == 1,
            "order {id} was not dispatching"
        );
        commit.execute([])?;

        upstream_order += 1;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let orders = latencies.len();
    latencies.sort_unstable();
    println!(
        "{}",
        json!({
            "orders": orders,
            "seconds": round3(elapsed),
            "per_sec": round3(orders as f64 / elapsed),
            "p50_us": percentile(&latencies, 0.50),
            "p99_us": percentile(&latencies, 0.99),
            "journal_mode": "wal",
            "synchronous": "FULL",
        })
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The nearest-rank percentile of sorted values (0 when there are none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- latency ----

struct Target {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    path: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Ids to put in place of `{id}` in the body, and how many were drawn.
    ids: Option<(u64, u64, std::sync::atomic::AtomicU64)>,
    draw: Draw,
}

/// How the ids of `--ids` are drawn.
#[derive(Clone, Copy)]
enum Draw {
    /// At random, with repeats (a ledger's hot and cold orders alike).
    Random,
    /// In order, LO first.
    InOrder,
    /// Each once, scattered: a stride through the range that is coprime to its length.
    Once,
}

impl Target {
    fn new(url: &str, body: String, headers: &[String]) -> Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("URL {url}"))?;
        ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// URLs are supported"
        );
        let authority = uri
            .authority()
            .context("the URL has no host")?
            .as_str()
            .to_owned();
        ensure!(
            uri.port_u16().is_some(),
            "the URL needs an explicit port: {url}"
        );
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let headers = headers
            .iter()
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .with_context(|| format!("header {h:?} is not `Name: value`"))?;
                Ok((
                    HeaderName::from_bytes(name.trim().as_bytes())?,
                    HeaderValue::from_str(value.trim())?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Target {
            authority,
            path,
            body: Bytes::from(body),
            headers,
            ids: None,
            draw: Draw::Random,
        })
    }

    /// Draws each request's `{id}` from `LO:HI` (none given: the body as it is).
    fn spread(mut self, ids: Option<&str>, draw: Draw) -> Result<Target> {
        self.draw = draw;
        if let Some(range) = ids {
            let (lo, hi) = range.split_once(':').context("--ids is LO:HI")?;
            let (lo, hi): (u64, u64) = (lo.parse()?, hi.parse()?);
            ensure!(lo <= hi, "--ids {range}: LO above HI");
            self.ids = Some((lo, hi, std::sync::atomic::AtomicU64::new(0)));
        }
        Ok(self)
    }

    fn body(&self) -> Bytes {
        let Some((lo, hi, drawn)) = &self.ids else {
            return self.body.clone();
        };
        let n = drawn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let len = hi - lo + 1;
        let id = lo
            + match self.draw {
                Draw::InOrder => n % len,
                Draw::Random => splitmix(n) % len,
                // A prime above any range here (so coprime to its length): n ↦ n·P mod len
                // visits every id once per len draws, consecutive ones far apart.
                Draw::Once => ((n % len) as u128 * 2_654_435_761 % len as u128) as u64,
            };
        let text = String::from_utf8_lossy(&self.body).replace("{id}", &id.to_string());
        Bytes::from(text)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        self.request_with(self.body())
    }

    /// A request with this body instead of the target's own.
    fn request_with(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut builder = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(body))
            .expect("the parts were validated")
    }
}

/// A well-mixed function of `n` (splitmix64): the same spread of ids on every run.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Conn> {
    let stream = TcpStream::connect(t.authority.as_str())
        .await
        .with_context(|| format!("connecting to {}", t.authority))?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One request and its whole reply; `Ok(false)` for a reply that is not a success.
async fn exchange(conn: &mut Conn, t: &Target) -> Result<bool> {
    conn.ready().await?;
    let reply = conn.send_request(t.request()).await?;
    let status = reply.status();
    let body = reply.into_body().collect().await?.to_bytes();
    Ok(status == StatusCode::OK && !body.starts_with(br#"{"error""#))
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    errors: u64,
    /// Microseconds from each request's scheduled instant to the end of its reply.
    latencies: Vec<u64>,
}

/// How long in-flight requests may still finish after the last one was scheduled.
const DRAIN: Duration = Duration::from_secs(5);

/// Bounds each connection's set-up and warm-up request, so a stalled server ends the run.
const WARM_UP_LIMIT: Duration = Duration::from_secs(10);

async fn latency(t: Arc<Target>, rate: f64, seconds: f64, connections: usize) -> Result<()> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = tokio::time::timeout(WARM_UP_LIMIT, connect(&t))
            .await
            .context("connecting took too long")??;
        // Warm-up, not counted: a connection's first request pays for its setup, and a
        // wrong reply here means the run would measure nothing but errors.
        let ok = tokio::time::timeout(WARM_UP_LIMIT, exchange(&mut conn, &t))
            .await
            .context("the warm-up request got no reply in time")??;
        ensure!(
            ok,
            "the warm-up request to {}{} got an error reply",
            t.authority,
            t.path
        );
        conns.push(conn);
    }

    let scheduled = (rate * seconds).round() as u64;
    let t0 = Instant::now() + Duration::from_millis(10);
    let deadline = t0 + Duration::from_secs_f64(seconds) + DRAIN;
    let (tx, rx) = unbounded_channel::<Instant>();
    // A plain thread keeps the schedule: its sleeps are precise to tens of microseconds,
    // where the runtime's timer rounds to milliseconds. Whatever it oversleeps is in the
    // latency of both sides of a comparison alike.
    let scheduler = std::thread::spawn(move || {
        for i in 0..scheduled {
            let at = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                break;
            }
        }
    });
    let queue = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(worker(t.clone(), conn, queue.clone(), deadline)))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let tally = w.await?;
        total.sent += tally.sent;
        total.ok += tally.ok;
        total.errors += tally.errors;
        total.latencies.extend(tally.latencies);
    }
    // Whatever was scheduled but never sent (the drain ran out) is dropped with the queue.
    drop(queue);
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    let l = &mut total.latencies;
    l.sort_unstable();
    println!(
        "{}",
        json!({
            "scheduled": scheduled,
            "sent": total.sent,
            "ok": total.ok,
            "errors": total.errors + (scheduled - total.sent),
            "p50_us": percentile(l, 0.50),
            "p90_us": percentile(l, 0.90),
            "p99_us": percentile(l, 0.99),
            "p999_us": percentile(l, 0.999),
            "max_us": l.last().copied().unwrap_or(0),
        })
    );
    Ok(())
}

async fn worker(
    t: Arc<Target>,
    mut conn: Conn,
    queue: Arc<Mutex<UnboundedReceiver<Instant>>>,
    deadline: Instant,
) -> Tally {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut tally = Tally::default();
    loop {
        let next = {
            let mut queue = queue.lock().await;
            tokio::time::timeout_at(deadline, queue.recv()).await
        };
        let Ok(Some(scheduled)) = next else {
            break;
        };
        tally.sent += 1;
        match tokio::time::timeout_at(deadline, exchange(&mut conn, &t)).await {
            Ok(Ok(ok)) => {
                tally.latencies.push(scheduled.elapsed().as_micros() as u64);
                if ok {
                    tally.ok += 1;
                } else {
                    tally.errors += 1;
                }
            }
            Ok(Err(_)) => {
                tally.errors += 1;
                // The connection is gone: a fresh one, or this worker is done.
                match connect(&t).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
            Err(_) => {
                tally.errors += 1;
                break;
            }
        }
    }
    tally
}

// ---- check ----

fn check(db: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // One read transaction, so the counts and sums are of one instant.
    conn.execute_batch("BEGIN")?;
    let orders: i64 = conn.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))?;
    let entries: i64 = conn.query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))?;
    let mut off = conn.prepare(
        "SELECT c.name, c.balance, COALESCE(SUM(l.amount), 0) FROM customers c \
         LEFT JOIN ledger l ON l.customer_id = c.id GROUP BY c.id \
         HAVING c.balance <> COALESCE(SUM(l.amount), 0)",
    )?;
    let broken: Vec<String> = off
        .query_map([], |r| {
            Ok(format!(
                "{}: balance {} != entries {}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    ensure!(
        broken.is_empty(),
        "ledger invariant broken: {}",
        broken.join("; ")
    );
    let miscounted: i64 = conn.query_row(
        "SELECT COUNT(*) FROM customers c \
         WHERE c.order_count <> (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id)",
        [],
        |r| r.get(0),
    )?;
    ensure!(
        miscounted == 0,
        "{miscounted} customers' order_count differs from their orders"
    );
    println!(
        "{}",
        json!({"orders": orders, "ledger_entries": entries, "balances_match_ledger": true})
    );
    Ok(())
}
