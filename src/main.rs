//! The `panelgate` command line: thin wiring around the library.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use panelgate::sim::{self, Chance, Faults, SimConfig, catalog};

#[derive(Parser)]
#[command(
    name = "panelgate",
    version,
    about = "A reseller gateway for the SMM panel API v2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated provider panel (API v2) on loopback, for demos, tests and benchmarks.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// The API key clients must send.
    #[arg(long, env = "PANELGATE_SIM_KEY", hide_env_values = true)]
    key: String,
    /// Seed for every random choice (fates, timings, faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The panel account's starting balance.
    #[arg(long, default_value = "1000")]
    balance: rust_decimal::Decimal,
    #[arg(long, default_value = "USD")]
    currency: String,
    /// Clock speed: 1 is real time, 1000 finishes an order of thousands in well under a minute.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Serve a generated catalog of this many services (the built-in ones first).
    #[arg(long, conflicts_with = "catalog")]
    services: Option<usize>,
    /// Serve the services listed in this YAML file instead of the built-in catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Append a JSON line for every order created to this file.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// The first order (and refill) id, so that several simulators hand out different ids.
    #[arg(long, default_value_t = 1)]
    first_order_id: u64,
    /// Share of orders that end Partial on their own.
    #[arg(long, default_value = "0.12")]
    partial_share: Chance,
    /// Share of orders the panel cancels on its own.
    #[arg(long, default_value = "0.08")]
    cancel_share: Chance,
    /// Chance that a reply is delayed by --slow-ms.
    #[arg(long, default_value = "0")]
    slow: Chance,
    #[arg(long, default_value_t = 5000)]
    slow_ms: u64,
    /// Chance of an HTTP 500 page instead of acting.
    #[arg(long, default_value = "0")]
    http500: Chance,
    /// Chance of a 200 reply that is not JSON, instead of acting.
    #[arg(long, default_value = "0")]
    garbage: Chance,
    /// Chance of acting (an add creates its order) and then closing the connection unanswered.
    #[arg(long, default_value = "0")]
    hangup: Chance,
    /// Chance of an {"error": …} reply instead of acting.
    #[arg(long, default_value = "0")]
    error: Chance,
    #[arg(long)]
    error_text: Option<String>,
    /// Fault only these actions (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',')]
    fault_actions: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Simulate(args) => runtime.block_on(simulate(args)),
    }
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let services = match (&args.catalog, args.services) {
        (Some(path), _) => catalog::load(path).map_err(anyhow::Error::msg)?,
        (None, Some(n)) => catalog::generated(n, args.seed),
        (None, None) => catalog::builtin(),
    };
    let mut cfg = SimConfig::new(args.key);
    cfg.seed = args.seed;
    cfg.balance = args.balance;
    cfg.currency = args.currency;
    cfg.speed = args.speed;
    cfg.services = services;
    cfg.shares = sim::panel::Shares {
        partial: args.partial_share,
        cancel: args.cancel_share,
    };
    cfg.first_order_id = args.first_order_id;
    cfg.journal = args.journal;
    cfg.faults = Faults {
        slow: args.slow,
        slow_ms: args.slow_ms,
        http500: args.http500,
        garbage: args.garbage,
        hangup: args.hangup,
        error: args.error,
        error_text: args.error_text,
        actions: args.fault_actions,
    };
    let count = cfg.services.len();
    let handle = sim::start(cfg, args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    // Tests and scripts read this line to learn the port; keep its shape.
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    tracing::info!(addr = %handle.addr, services = count, speed = args.speed, "simulated panel ready");
    shutdown_signal().await;
    tracing::info!("shutting down");
    tokio::time::timeout(Duration::from_secs(15), handle.stop())
        .await
        .ok();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
