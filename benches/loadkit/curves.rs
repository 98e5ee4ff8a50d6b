//! The scale curves' helpers (`bash benches/load.sh curve ledger|sync`):
//!
//! - `sim-orders`: many orders at the simulator at once, held in progress (`sim-fate=hold`).
//! - `pass`: starts a gateway and times its first sync pass: from the first status call the
//!   upstream sees to the last order written, with the gateway's CPU time over it.
//! - `db-size`: bytes a database takes on disk.
//! - `plot`: one PNG per measured figure, x (size) on a log scale.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::HOST;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum Command {
    /// Creates `count` orders at a simulator, all held in progress; prints the first and last
    /// order ids (a fresh simulator hands them out in a row).
    SimOrders {
        /// The simulator's API URL (`http://host:port/api/v2`).
        #[arg(long)]
        url: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        service: u64,
        #[arg(long)]
        quantity: u64,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// Runs the gateway command after `--` and times its first sync pass over `orders` open
    /// orders at the simulator `sim` (nothing else may ask it for statuses meanwhile).
    Pass {
        /// The simulator's base URL (`http://host:port`).
        #[arg(long)]
        sim: String,
        #[arg(long)]
        key: String,
        /// The gateway's database (a SQLite file or a `postgres://` URL), to see the pass end.
        #[arg(long)]
        db: String,
        #[arg(long)]
        orders: u64,
        /// The upstream's request rate limit R, for the bound orders / 100 / R.
        #[arg(long)]
        rate: f64,
        /// Where the gateway's output goes.
        #[arg(long)]
        log: PathBuf,
        #[arg(last = true, required = true)]
        gateway: Vec<String>,
    },
    /// Bytes the database takes on disk (a SQLite file with its WAL, or a PostgreSQL database).
    DbSize {
        #[arg(long)]
        db: String,
    },
    /// Draws the figure `metric` of a results file (lines `metric<TAB>series<TAB>size<TAB>value`)
    /// as a PNG, one line per series, x on a log scale.
    Plot {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        metric: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        x_label: String,
        #[arg(long)]
        y_label: String,
        #[arg(long)]
        out: PathBuf,
        /// x on a linear scale (a time axis) instead of a log one (sizes).
        #[arg(long)]
        linear_x: bool,
        /// A TrueType font for the text (Debian's fonts-dejavu-core).
        #[arg(
            long,
            default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        )]
        font: PathBuf,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::SimOrders {
            url,
            key,
            service,
            quantity,
            count,
            connections,
        } => runtime()?.block_on(sim_orders(
            &url,
            &key,
            service,
            quantity,
            count,
            connections,
        )),
        Command::Pass {
            sim,
            key,
            db,
            orders,
            rate,
            log,
            gateway,
        } => {
            ensure!(rate > 0.0 && orders > 0, "rate and orders must be above 0");
            let rt = runtime()?;
            let watch = Watch {
                sim: &sim,
                key: &key,
                db: &db,
                orders,
            };
            pass(&rt, &watch, rate, &log, &gateway)
        }
        Command::DbSize { db } => {
            println!("{}", json!({ "bytes": db_size(&db)? }));
            Ok(())
        }
        Command::Plot {
            data,
            metric,
            title,
            x_label,
            y_label,
            out,
            linear_x,
            font,
        } => plot(
            &data,
            &metric,
            &Labels {
                title,
                x_label,
                y_label,
                linear_x,
            },
            &out,
            &font,
        ),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

// ---- sim-orders ----

async fn sim_orders(
    url: &str,
    key: &str,
    service: u64,
    quantity: u64,
    count: u64,
    connections: usize,
) -> Result<()> {
    let body = format!(
        "key={key}&action=add&service={service}&quantity={quantity}\
         &link=https%3A%2F%2Fexample.com%2Fo%3Fsim-fate%3Dhold"
    );
    let target = std::sync::Arc::new(super::Target::new(url, body, &[])?);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (target, next) = (target.clone(), next.clone());
        tasks.spawn(async move {
            let mut conn = super::connect(&target).await?;
            let (mut lo, mut hi) = (u64::MAX, 0);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let reply = post(&mut conn, &target).await?;
                let id = reply["order"]
                    .as_u64()
                    .with_context(|| format!("the simulator did not place an order: {reply}"))?;
                (lo, hi) = (lo.min(id), hi.max(id));
            }
            Ok::<_, anyhow::Error>((lo, hi))
        });
    }
    let (mut first, mut last) = (u64::MAX, 0);
    while let Some(done) = tasks.join_next().await {
        let (lo, hi) = done??;
        (first, last) = (first.min(lo), last.max(hi));
    }
    ensure!(
        last + 1 - first == count,
        "the simulator's ids {first}..={last} are not {count} in a row: use a fresh one"
    );
    println!(
        "{}",
        json!({ "count": count, "first": first, "last": last })
    );
    Ok(())
}

async fn post(conn: &mut super::Conn, t: &super::Target) -> Result<Value> {
    conn.ready().await?;
    let reply = conn.send_request(t.request()).await?;
    let body = reply.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

// ---- pass ----

/// What a pass is watched through.
struct Watch<'a> {
    sim: &'a str,
    key: &'a str,
    db: &'a str,
    orders: u64,
}

impl Watch<'_> {
    /// Multi-status calls the simulator has answered so far.
    async fn status_calls(&self) -> Result<u64> {
        let uri: hyper::Uri = self.sim.parse()?;
        let authority = uri.authority().context("no host")?.as_str().to_owned();
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("/_sim/state?key={}", self.key))
            .header(HOST, authority)
            .body(Full::new(Bytes::new()))?;
        let body = send.send_request(req).await?.into_body().collect().await?;
        let state: Value = serde_json::from_slice(&body.to_bytes())?;
        Ok(state["requests"]["status"].as_u64().unwrap_or(0))
    }

    /// Open orders not synced yet.
    fn unsynced(&self, rt: &tokio::runtime::Runtime) -> Result<i64> {
        const SQL: &str =
            "SELECT COUNT(*) FROM orders WHERE state = 'placed' AND synced_at IS NULL";
        if is_postgres(self.db) {
            return rt.block_on(async {
                let mut conn: sqlx::PgConnection = sqlx::Connection::connect(self.db).await?;
                Ok(sqlx::query_scalar::<_, i64>(SQL)
                    .fetch_one(&mut conn)
                    .await?)
            });
        }
        let conn = rusqlite::Connection::open_with_flags(
            self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn.query_row(SQL, [], |r| r.get(0))?)
    }
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32, tick: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it do not.
    let rest = stat.rsplit_once(')').context("unreadable stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / tick))
}

fn clock_ticks() -> Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn pass(
    rt: &tokio::runtime::Runtime,
    w: &Watch,
    rate: f64,
    log: &PathBuf,
    gateway: &[String],
) -> Result<()> {
    let calls = w.orders.div_ceil(100);
    let bound = calls as f64 / rate;
    // Calls before this pass (for other orders) are not its own.
    let before = rt.block_on(w.status_calls())?;
    let tick = clock_ticks()?;
    let out = std::fs::File::create(log)?;
    let mut child = std::process::Command::new(&gateway[0])
        .args(&gateway[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", gateway[0]))?;
    let pid = child.id();
    let measured = (|| {
        let limit = Instant::now() + Duration::from_secs_f64(bound * 10.0 + 120.0);
        let mut first = None;
        loop {
            ensure!(Instant::now() < limit, "the pass did not end in time");
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited ({status}); see {}", log.display());
            }
            let seen = rt.block_on(w.status_calls())? - before;
            if seen > 0 && first.is_none() {
                first = Some((Instant::now(), cpu_time(pid, tick)?, seen));
            }
            if seen >= calls && w.unsynced(rt)? == 0 {
                let (t0, cpu0, seen0) = first.context("no status call seen")?;
                return Ok((t0.elapsed(), cpu_time(pid, tick)? - cpu0, seen0));
            }
            std::thread::sleep(Duration::from_millis(if seen >= calls { 20 } else { 5 }));
        }
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let (took, cpu, seen_first) = measured?;
    let secs = took.as_secs_f64();
    println!(
        "{}",
        json!({
            "orders": w.orders,
            "rate": rate,
            "status_calls": calls,
            "bound_s": super::round3(bound),
            "pass_s": super::round3(secs),
            "pass_over_bound": super::round3(secs / bound),
            "orders_per_s": (w.orders as f64 / secs).round(),
            "cpu_s": super::round3(cpu.as_secs_f64()),
            "cpu_us_per_order": super::round3(cpu.as_secs_f64() * 1e6 / w.orders as f64),
            "calls_before_first_seen": seen_first - 1,
        })
    );
    Ok(())
}

// ---- db-size ----

fn db_size(db: &str) -> Result<u64> {
    if is_postgres(db) {
        return runtime()?.block_on(async {
            let mut conn: sqlx::PgConnection = sqlx::Connection::connect(db).await?;
            let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&mut conn)
                .await?;
            Ok(u64::try_from(n)?)
        });
    }
    let mut total = 0;
    for suffix in ["", "-wal"] {
        if let Ok(meta) = std::fs::metadata(format!("{db}{suffix}")) {
            total += meta.len();
        }
    }
    ensure!(total > 0, "no database file at {db}");
    Ok(total)
}

// ---- plot ----

struct Labels {
    title: String,
    x_label: String,
    y_label: String,
    linear_x: bool,
}

/// One line of a plot: its name and its (size, value) points.
type Series = (String, Vec<(f64, f64)>);

/// Each series' points of `metric`, by size, in the order the series first appear.
fn read_series(data: &PathBuf, metric: &str) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(data).with_context(|| format!("{}", data.display()))?;
    let mut series: Vec<Series> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let [m, name, size, value] = cells[..] else {
            bail!("not `metric<TAB>series<TAB>size<TAB>value`: {line:?}");
        };
        if m != metric {
            continue;
        }
        let point = (size.parse::<f64>()?, value.parse::<f64>()?);
        match series.iter_mut().find(|(n, _)| n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name.to_owned(), vec![point])),
        }
    }
    ensure!(
        !series.is_empty(),
        "no figure {metric:?} in {}",
        data.display()
    );
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(series)
}

fn plot(data: &PathBuf, metric: &str, l: &Labels, out: &PathBuf, font: &PathBuf) -> Result<()> {
    use plotters::prelude::*;
    let series = read_series(data, metric)?;
    // Text is drawn with ab_glyph from this font file: no fontconfig or FreeType needed.
    let bytes = std::fs::read(font).with_context(|| format!("font {}", font.display()))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
        .map_err(|_| anyhow!("{} is not a usable font", font.display()))?;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max, y_max) = points.fold((f64::MAX, 0_f64, 0_f64), |(a, b, c), &(x, y)| {
        (a.min(x), b.max(x), c.max(y))
    });
    let root = BitMapBackend::new(out, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let y = 0_f64..(y_max * 1.15).max(f64::MIN_POSITIVE);
    if l.linear_x {
        draw(&root, &series, l, 0_f64..x_max * 1.02, y)?;
    } else {
        draw(
            &root,
            &series,
            l,
            (x_min * 0.8..x_max * 1.25).log_scale(),
            y,
        )?;
    }
    root.present()?;
    Ok(())
}

/// The chart on `root`, x over `x` (a log or a linear range).
fn draw<X>(
    root: &plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend, plotters::coord::Shift>,
    series: &[Series],
    l: &Labels,
    x: X,
    y: std::ops::Range<f64>,
) -> Result<()>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    use plotters::prelude::*;
    let mut chart = ChartBuilder::on(root)
        .caption(&l.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(&l.x_label)
        .y_desc(&l.y_label)
        .x_label_formatter(&|x| human(*x))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// 1000 as 1k, 1000000 as 1M.
fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{}M", x / 1e6),
        x if x >= 1e3 => format!("{}k", x / 1e3),
        x => format!("{x}"),
    }
}
