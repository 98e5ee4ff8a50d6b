//! The `panelgate` command line: thin wiring around the library.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use panelgate::config::{self, SimulatorSection};
use panelgate::sim::{self, Chance, Faults, SimConfig, catalog};

#[derive(Parser)]
#[command(
    name = "panelgate",
    version,
    about = "A reseller gateway for the SMM panel API v2"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "config.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated provider panel (API v2) on loopback, for demos, tests and benchmarks.
    /// Settings come from the config file's `simulator:` section; flags override them.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed) [default: 127.0.0.1:9001].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The API key clients must send.
    #[arg(long, env = "PANELGATE_SIM_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Seed for every random choice (fates, timings, faults) [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// The panel account's starting balance [default: 1000].
    #[arg(long)]
    balance: Option<rust_decimal::Decimal>,
    /// [default: USD]
    #[arg(long)]
    currency: Option<String>,
    /// Clock speed: 1 is real time, 1000 finishes an order of thousands in well under a minute [default: 1].
    #[arg(long)]
    speed: Option<f64>,
    /// Serve a generated catalog of this many services (the built-in ones first).
    #[arg(long, conflicts_with = "catalog")]
    services: Option<usize>,
    /// Serve the services listed in this YAML file instead of the built-in catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Append a JSON line for every order created to this file.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// The first order (and refill) id, so that several simulators hand out different ids [default: 1].
    #[arg(long)]
    first_order_id: Option<u64>,
    /// Share of orders that end Partial on their own [default: 0.12].
    #[arg(long)]
    partial_share: Option<Chance>,
    /// Share of orders the panel cancels on its own [default: 0.08].
    #[arg(long)]
    cancel_share: Option<Chance>,
    /// Chance that a reply is delayed by --slow-ms.
    #[arg(long)]
    slow: Option<Chance>,
    /// [default: 5000]
    #[arg(long)]
    slow_ms: Option<u64>,
    /// Chance of an HTTP 500 page instead of acting.
    #[arg(long)]
    http500: Option<Chance>,
    /// Chance of a 200 reply that is not JSON, instead of acting.
    #[arg(long)]
    garbage: Option<Chance>,
    /// Chance of acting (an add creates its order) and then closing the connection unanswered.
    #[arg(long)]
    hangup: Option<Chance>,
    /// Chance of an {"error": …} reply instead of acting.
    #[arg(long)]
    error: Option<Chance>,
    #[arg(long)]
    error_text: Option<String>,
    /// Fault only these actions (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',')]
    fault_actions: Option<Vec<String>>,
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
        Command::Simulate(args) => runtime.block_on(simulate(&cli.config, args)),
    }
}

/// The config file's `simulator:` section, or nothing if the file does not exist (the
/// simulator runs from flags alone).
fn simulator_section(path: &std::path::Path) -> anyhow::Result<SimulatorSection> {
    if !path.exists() {
        return Ok(SimulatorSection::default());
    }
    Ok(config::load(path)?.simulator.unwrap_or_default())
}

async fn simulate(config_path: &std::path::Path, args: SimulateArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let file = simulator_section(config_path)?;
    let key = args
        .key
        .or(file.key)
        .context("no key: pass --key or set simulator.key in the config file")?;
    let mut cfg = SimConfig::new(key);
    let speed = args.speed.or(file.speed).unwrap_or(1.0);
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("speed must be a positive number");
    }
    cfg.speed = speed;
    cfg.seed = args.seed.or(file.seed).unwrap_or(cfg.seed);
    cfg.balance = args.balance.or(file.balance).unwrap_or(cfg.balance);
    cfg.currency = args.currency.or(file.currency).unwrap_or(cfg.currency);
    cfg.services = match (
        args.catalog.or(file.catalog),
        args.services.or(file.services),
    ) {
        (Some(path), _) => catalog::load(&path).map_err(anyhow::Error::msg)?,
        (None, Some(n)) => catalog::generated(n, cfg.seed),
        (None, None) => catalog::builtin(),
    };
    cfg.shares.partial = args
        .partial_share
        .or(file.partial_share)
        .unwrap_or(cfg.shares.partial);
    cfg.shares.cancel = args
        .cancel_share
        .or(file.cancel_share)
        .unwrap_or(cfg.shares.cancel);
    cfg.first_order_id = args.first_order_id.or(file.first_order_id).unwrap_or(1);
    cfg.journal = args.journal.or(file.journal);
    let base = file.faults.unwrap_or_default();
    cfg.faults = Faults {
        slow: args.slow.unwrap_or(base.slow),
        slow_ms: args
            .slow_ms
            .unwrap_or(if base.slow_ms > 0 { base.slow_ms } else { 5000 }),
        http500: args.http500.unwrap_or(base.http500),
        garbage: args.garbage.unwrap_or(base.garbage),
        hangup: args.hangup.unwrap_or(base.hangup),
        error: args.error.unwrap_or(base.error),
        error_text: args.error_text.or(base.error_text),
        actions: args.fault_actions.unwrap_or(base.actions),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9001)));
    let count = cfg.services.len();
    let handle = sim::start(cfg, listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    // Tests and scripts read this line to learn the port; keep its shape.
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    tracing::info!(addr = %handle.addr, services = count, speed, "simulated panel ready");
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
