//! `soak`: a long open-loop run of a panel's everyday mix at a fixed rate, reported per time
//! window (latency, errors, the gateway's resident memory), so that growth over time shows.
//!
//! The mix: mostly `status` of one order or of 100 orders drawn from the ledger, a few
//! percent `add`, and one `services` every few seconds, as a panel polls its providers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::{Conn, Target, connect, percentile, splitmix};

/// What a run is made of.
pub struct Mix {
    pub url: String,
    pub key: String,
    /// Orders to ask about: ids LO..=HI, existing and finished.
    pub ids: (u64, u64),
    /// The `add` request's service and quantity.
    pub service: u64,
    pub quantity: u64,
    pub requests: u64,
    pub rate: f64,
    /// Per 10,000 requests: `add`s, and `status` of 100 orders (the rest: of one).
    pub adds_per_10k: u64,
    pub batches_per_10k: u64,
    pub services_every: Duration,
    pub window: Duration,
    pub connections: usize,
    /// The gateway's process, whose VmRSS is sampled each window.
    pub pid: u32,
    /// The per-window table (TSV).
    pub windows: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Status,
    Batch,
    Add,
    Services,
}

const KINDS: [Kind; 4] = [Kind::Status, Kind::Batch, Kind::Add, Kind::Services];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Batch => "status_100",
            Kind::Add => "add",
            Kind::Services => "services",
        }
    }
}

/// One scheduled request: when, its number, what it asks.
type Job = (Instant, u64, Kind);

/// One answered (or failed) request.
struct Sample {
    window: u32,
    latency_us: u32,
    kind: Kind,
    ok: bool,
}

impl Mix {
    fn kind_of(&self, n: u64, services_each: u64) -> Kind {
        if n.is_multiple_of(services_each) {
            return Kind::Services;
        }
        let pick = splitmix(n) % 10_000;
        if pick < self.adds_per_10k {
            Kind::Add
        } else if pick < self.adds_per_10k + self.batches_per_10k {
            Kind::Batch
        } else {
            Kind::Status
        }
    }

    fn body(&self, n: u64, kind: Kind) -> String {
        let (lo, hi) = self.ids;
        let id = |k: u64| lo + splitmix(n.wrapping_mul(131).wrapping_add(k)) % (hi - lo + 1);
        let key = &self.key;
        match kind {
            Kind::Status => format!("key={key}&action=status&order={}", id(0)),
            Kind::Batch => {
                let ids: Vec<String> = (0..100).map(|k| id(k).to_string()).collect();
                format!("key={key}&action=status&orders={}", ids.join("%2C"))
            }
            // A link of its own each: the same link twice in a row may be refused as a repeat.
            Kind::Add => format!(
                "key={key}&action=add&service={}&quantity={}&link=https%3A%2F%2Fexample.com%2Fsoak{n}",
                self.service, self.quantity
            ),
            Kind::Services => format!("key={key}&action=services"),
        }
    }
}

/// Whether a reply is what that request should get: 200, and no error anywhere in it (every
/// order asked about exists, every add is affordable).
fn answered(kind: Kind, status: hyper::StatusCode, body: &[u8]) -> bool {
    let clean = status == hyper::StatusCode::OK && !contains(body, br#""error""#);
    clean
        && match kind {
            Kind::Add => contains(body, br#""order""#),
            Kind::Services => body.starts_with(b"["),
            Kind::Status | Kind::Batch => body.starts_with(b"{"),
        }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The gateway's resident memory now, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?)
}

pub fn run(mix: Mix) -> Result<()> {
    ensure!(
        mix.rate > 0.0 && mix.requests > 0,
        "rate and requests above 0"
    );
    ensure!(mix.ids.0 <= mix.ids.1, "ids: LO above HI");
    ensure!(mix.connections > 0, "at least one connection");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mix = Arc::new(mix);
    let rss_start = rss_kib(mix.pid)?;
    let (samples, rss) = rt.block_on(drive(mix.clone()))?;
    let rss_end = rss_kib(mix.pid)?;
    report(&mix, &samples, &rss, rss_start, rss_end)
}

/// Runs the schedule; returns every sample and the RSS taken at each window's end.
async fn drive(mix: Arc<Mix>) -> Result<(Vec<Sample>, Vec<u64>)> {
    let target = Arc::new(Target::new(&mix.url, String::new(), &[])?);
    let mut conns = Vec::with_capacity(mix.connections);
    for _ in 0..mix.connections {
        conns.push(connect(&target).await?);
    }
    let scheduled = mix.requests;
    let services_each = ((mix.rate * mix.services_every.as_secs_f64()).round() as u64).max(1);
    let t0 = Instant::now() + Duration::from_millis(10);
    let last = t0 + Duration::from_secs_f64(scheduled as f64 / mix.rate);
    let deadline = last + super::DRAIN;
    let (tx, rx) = unbounded_channel::<Job>();
    let schedule = mix.clone();
    // A plain thread keeps the schedule, as in `latency`: precise sleeps, and a slow server
    // cannot slow the offered rate down.
    let scheduler = std::thread::spawn(move || {
        for n in 0..scheduled {
            let at = t0 + Duration::from_secs_f64(n as f64 / schedule.rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx
                .send((at, n, schedule.kind_of(n, services_each)))
                .is_err()
            {
                break;
            }
        }
    });
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, pid, window) = (done.clone(), mix.pid, mix.window);
        std::thread::spawn(move || {
            let mut rss = Vec::new();
            let mut next = t0 + window;
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next {
                    rss.push(rss_kib(pid).unwrap_or(0));
                    next += window;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            rss
        })
    };
    let queue = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let (mix, t, q) = (mix.clone(), target.clone(), queue.clone());
            tokio::spawn(worker(mix, t, c, q, t0, deadline))
        })
        .collect();
    let mut samples = Vec::with_capacity(scheduled as usize);
    for w in workers {
        samples.extend(w.await?);
    }
    drop(queue);
    done.store(true, Ordering::Relaxed);
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    let rss = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler thread panicked"))?;
    Ok((samples, rss))
}

/// Errors shown on stderr at most, so that a broken run says why without flooding.
const SHOWN_ERRORS: usize = 5;

async fn worker(
    mix: Arc<Mix>,
    t: Arc<Target>,
    mut conn: Conn,
    queue: Arc<Mutex<UnboundedReceiver<Job>>>,
    t0: Instant,
    deadline: Instant,
) -> Vec<Sample> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut out = Vec::new();
    let mut shown = 0;
    loop {
        let next = {
            let mut queue = queue.lock().await;
            tokio::time::timeout_at(deadline, queue.recv()).await
        };
        let Ok(Some((at, n, kind))) = next else {
            break;
        };
        let window =
            (at.saturating_duration_since(t0).as_secs_f64() / mix.window.as_secs_f64()) as u32;
        let body = Bytes::from(mix.body(n, kind));
        let reply = tokio::time::timeout_at(deadline, exchange(&mut conn, &t, body)).await;
        let timed_out = reply.is_err();
        let ok = match reply {
            Ok(Ok((status, bytes))) => {
                let ok = answered(kind, status, &bytes);
                if !ok && shown < SHOWN_ERRORS {
                    shown += 1;
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
                    eprintln!("soak: {} got {status}: {text}", kind.name());
                }
                ok
            }
            Ok(Err(e)) => {
                eprintln!("soak: {}: {e:#}", kind.name());
                match connect(&t).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
                false
            }
            Err(_) => false,
        };
        let latency_us = at.elapsed().as_micros().min(u32::MAX as u128) as u32;
        out.push(Sample {
            window,
            latency_us,
            kind,
            ok,
        });
        if timed_out {
            break;
        }
    }
    out
}

async fn exchange(conn: &mut Conn, t: &Target, body: Bytes) -> Result<(hyper::StatusCode, Bytes)> {
    conn.ready().await?;
    let reply = conn.send_request(t.request_with(body)).await?;
    let status = reply.status();
    Ok((status, reply.into_body().collect().await?.to_bytes()))
}

fn report(mix: &Mix, samples: &[Sample], rss: &[u64], start: u64, end: u64) -> Result<()> {
    let windows = samples.iter().map(|s| s.window + 1).max().unwrap_or(0) as usize;
    let mut per: Vec<(Vec<u64>, u64)> = (0..windows).map(|_| (Vec::new(), 0)).collect();
    for s in samples {
        let w = &mut per[s.window as usize];
        w.0.push(u64::from(s.latency_us));
        w.1 += u64::from(!s.ok);
    }
    let mut table = String::from("t_s\trequests\terrors\tp50_us\tp99_us\trss_mib\n");
    let mut worst = (0, 0);
    for (i, (lat, errors)) in per.iter_mut().enumerate() {
        lat.sort_unstable();
        let p99 = percentile(lat, 0.99);
        if p99 > worst.1 {
            worst = (i, p99);
        }
        let t_s = (i as f64 + 1.0) * mix.window.as_secs_f64();
        let rss_mib = rss.get(i).copied().unwrap_or(end) as f64 / 1024.0;
        table.push_str(&format!(
            "{t_s}\t{}\t{errors}\t{}\t{p99}\t{rss_mib:.1}\n",
            lat.len(),
            percentile(lat, 0.5)
        ));
    }
    std::fs::write(&mix.windows, table)
        .with_context(|| format!("writing {}", mix.windows.display()))?;
    let mut all: Vec<u64> = samples.iter().map(|s| u64::from(s.latency_us)).collect();
    all.sort_unstable();
    let by_kind: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .map(|&k| {
            let of = samples.iter().filter(|s| s.kind == k);
            let errors = of.clone().filter(|s| !s.ok).count();
            (
                k.name().into(),
                json!({ "sent": of.count(), "errors": errors }),
            )
        })
        .collect();
    let errors = samples.iter().filter(|s| !s.ok).count() as u64;
    let unsent = mix.requests - samples.len() as u64;
    println!(
        "{}",
        json!({
            "scheduled": mix.requests,
            "sent": samples.len(),
            "errors": errors + unsent,
            "by_kind": by_kind,
            "p50_us": percentile(&all, 0.5),
            "p99_us": percentile(&all, 0.99),
            "max_us": all.last().copied().unwrap_or(0),
            "worst_window_s": (worst.0 as f64 + 1.0) * mix.window.as_secs_f64(),
            "worst_window_p99_us": worst.1,
            "rss_start_mib": super::round3(start as f64 / 1024.0),
            "rss_end_mib": super::round3(end as f64 / 1024.0),
            "rss_max_mib": super::round3(rss.iter().copied().max().unwrap_or(end).max(end) as f64 / 1024.0),
            "windows": windows,
        })
    );
    Ok(())
}
