//! The `panelgate` command line: its flags and subcommands (`serve`, `check-config`,
//! `migrate`, `client …`, `order …`, `simulate`), each run against the library, with its
//! output printed for an operator or a script.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use panelgate::config::{self, Secret, SimulatorSection};
use panelgate::sim::{self, Chance, Faults, SimConfig};
use panelgate::{admin, app, money, operator};
use rust_decimal::Decimal;
use std::path::Path;

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
    /// Run the gateway: the API v2 server for downstream customers.
    Serve {
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate the config, fetch the upstreams' services lists, and print a summary.
    CheckConfig,
    /// Apply the database migrations (`serve` also does at start) and exit.
    Migrate,
    /// Manage customers (works while the server runs).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Inspect orders and resolve those of unknown outcome (works while the server runs).
    #[command(subcommand)]
    Order(OrderCommand),
    /// The admin API's tokens (docs/admin-api.md).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run a simulated provider panel (API v2) on loopback, for demos, tests and benchmarks.
    /// Settings come from the config file's `simulator:` section; flags override them.
    Simulate(Box<SimulateArgs>),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client; its new API key is printed alone on the last line (shown only once).
    Add {
        name: String,
        #[arg(long, default_value = "0")]
        balance: Decimal,
        #[arg(long, default_value = "default")]
        group: String,
        /// How far below zero the balance may go.
        #[arg(long, default_value = "0")]
        credit_limit: Decimal,
    },
    /// Add funds.
    Credit {
        name: String,
        amount: Decimal,
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove funds.
    Debit {
        name: String,
        amount: Decimal,
        #[arg(long)]
        note: Option<String>,
    },
    /// Clients by name: name, group, balance, orders. A page at a time: the next one starts
    /// `--after` the last name shown (said on stderr when there is more).
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        after: Option<String>,
    },
    /// Refuse the client's key from now on.
    Disable { name: String },
    /// Accept the client's key again.
    Enable { name: String },
    /// Give the client a new key (printed alone on the last line); the old one stops working.
    RotateKey { name: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create, list and revoke admin API tokens (stored hashed in the database).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed alone on the last line (shown only once).
    Add {
        name: String,
        /// read: every GET; write: everything.
        #[arg(long, value_parser = ["read", "write"])]
        role: String,
    },
    /// Every token: name, role, created.
    List,
    /// The token stops working at once, on every instance.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum OrderCommand {
    /// Orders, newest first.
    List {
        #[arg(long)]
        client: Option<String>,
        /// dispatching, placed, rejected, unknown or final.
        #[arg(long)]
        state: Option<String>,
        /// Only orders that need the operator: for any reason, or for REASON (unknown_outcome,
        /// refund_unknown, partial_without_remains, stuck). Adds their age to the table.
        #[arg(long, value_name = "REASON", num_args = 0..=1, default_missing_value = "any")]
        attention: Option<String>,
        /// Short for `--attention stuck`: placed orders not final after `sync.stuck_after`.
        #[arg(long, conflicts_with = "attention")]
        stuck: bool,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many (a page); the next page starts `--before` the last id shown (said
        /// on stderr when there is more).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        before: Option<i64>,
    },
    /// One order in full, as JSON.
    Show { id: i64 },
    /// Resolve an order of unknown outcome: it was placed upstream as N, or it was not placed
    /// (Canceled, full refund). Or settle a placed (stuck) order with the final status its
    /// upstream shows: --status Canceled (full refund), Partial --remains N, Completed.
    Resolve {
        id: i64,
        #[arg(
            long,
            conflicts_with_all = ["not_placed", "status"],
            required_unless_present_any = ["not_placed", "status"]
        )]
        upstream_order: Option<String>,
        #[arg(long, conflicts_with = "status")]
        not_placed: bool,
        /// Completed, Partial or Canceled (case does not matter).
        #[arg(long, value_parser = parse_status)]
        status: Option<panelgate::protocol::Status>,
        /// With --status Partial: what the upstream did not deliver.
        #[arg(long, requires = "status")]
        remains: Option<i64>,
    },
    /// Detach an order from its upstream order (when two local orders hold one): a placed one
    /// becomes unknown, for `order resolve`.
    Unlink { id: i64 },
    /// Settle an order marked refund_unknown or partial_without_remains (no automatic refund
    /// was made): refund X (0: nothing owed; never above what is still refundable), with a
    /// note on the ledger saying who decided and why, and clear the mark.
    Settle {
        id: i64,
        #[arg(long)]
        refund: Decimal,
        #[arg(long)]
        note: String,
    },
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
    /// Chance of an HTML 403 page instead of acting.
    #[arg(long)]
    http403: Option<Chance>,
    /// Chance of a 429 with a JSON error instead of acting.
    #[arg(long)]
    http429: Option<Chance>,
    /// Chance of acting (an add creates its order) and then answering 504 with a JSON error.
    #[arg(long)]
    http504: Option<Chance>,
    /// Chance of acting (an add creates its order) and then answering 200 with an empty body.
    #[arg(long)]
    empty: Option<Chance>,
    /// How replies are worded: standard, panel_script, list or opaque [default: standard].
    #[arg(long)]
    dialect: Option<sim::Dialect>,
    #[arg(long)]
    error_text: Option<String>,
    /// Serve the API at this path instead of /api/v2; other paths answer an HTML 404 page.
    #[arg(long)]
    api_path: Option<String>,
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

/// Logs to stderr; `RUST_LOG` overrides the level the config (or the default, `info`) sets.
/// Lines are written in batches ([`panelgate::logs`]); the returned guard writes the rest
/// at exit.
fn init_logs(format: LogFormat, level: &str) -> anyhow::Result<panelgate::logs::Flusher> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (writer, guard) =
        panelgate::logs::batched_stderr().context("starting the log writer thread")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(guard)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match cli.command {
        Command::Simulate(args) => runtime()?.block_on(simulate(&cli.config, *args)),
        Command::Serve { log_format } => {
            let cfg = config::load(&cli.config)?;
            serving_runtime(&cfg.runtime)?.block_on(serve(cfg, log_format))
        }
        Command::CheckConfig => runtime()?.block_on(check_config(&cli.config)),
        Command::Migrate => runtime()?.block_on(async {
            let cfg = config::load(&cli.config)?;
            let store = app::open_store(&cfg.database).await?;
            println!("{}: migrations applied", app::redact_url(&cfg.database));
            // Applied all the same; what is left for the operator is said, and fails the run.
            store.unique_upstream_orders().await?;
            Ok(())
        }),
        Command::Client(cmd) => runtime()?.block_on(client(&cli.config, cmd)),
        Command::Order(cmd) => runtime()?.block_on(order(&cli.config, cmd)),
        Command::Admin(AdminCommand::Token(cmd)) => runtime()?.block_on(token(&cli.config, cmd)),
    }
}

/// The runtime `serve` starts on. In the thread-per-core model it is the first core's:
/// [`app::start`] gives every other core a runtime of its own.
fn serving_runtime(r: &config::RuntimeConfig) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match r.model {
        config::RuntimeModel::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(r.threads);
            b
        }
        config::RuntimeModel::ThreadPerCore => tokio::runtime::Builder::new_current_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(cfg: config::Config, log_format: LogFormat) -> anyhow::Result<()> {
    let _logs = init_logs(log_format, &cfg.log_level)?;
    let running = app::start(cfg).await?;
    // Handlers first: a SIGHUP sent as soon as the line below is read (by a test, or a
    // service manager's reload) would otherwise meet the default action and kill us.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    // Tests and scripts read this line to learn the port; keep its shape.
    println!("listening on {}", running.url());
    std::io::stdout().flush()?;
    tracing::info!(addr = %running.addr, "panelgate serving");
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Failures are logged inside; the running config keeps serving.
                let _ = running.reload().await;
            }
        }
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn check_config(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    println!("{}: valid", path.display());
    let summary = admin::check_config(&cfg).await;
    for line in &summary.lines {
        println!("  {line}");
    }
    for w in &summary.warnings {
        println!("  warning: {w}");
    }
    for p in &summary.problems {
        println!("  problem: {p}");
    }
    if !summary.problems.is_empty() {
        bail!("{} problem(s) found", summary.problems.len());
    }
    Ok(())
}

async fn client(path: &Path, cmd: ClientCommand) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let store = app::open_store(&cfg.database).await?;
    let store = store.as_ref();
    let op = operator::Operator {
        store,
        cfg: &cfg,
        actor: operator::CLI,
    };
    let show = |name: &str, balance: i64| {
        format!(
            "{name}: balance {} {}",
            money::format(money::from_units(balance)),
            cfg.currency
        )
    };
    match cmd {
        ClientCommand::Add {
            name,
            balance,
            group,
            credit_limit,
        } => {
            let (c, key) = op.add_client(&name, balance, &group, credit_limit).await?;
            println!("created {} (group {})", show(&c.name, c.balance), c.group);
            println!("API key (shown only this once):");
            println!("{key}");
        }
        ClientCommand::Credit { name, amount, note } => {
            let done = op.adjust(&name, amount, note.as_deref(), None).await?;
            println!("{}", show(&done.name, done.balance));
        }
        ClientCommand::Debit { name, amount, note } => {
            let done = op.adjust(&name, -amount, note.as_deref(), None).await?;
            println!("{}", show(&done.name, done.balance));
        }
        ClientCommand::List { limit, after } => print_clients(store, limit, after).await?,
        ClientCommand::Disable { name } => {
            op.set_enabled(&name, false).await?;
            println!("{name}: disabled");
        }
        ClientCommand::Enable { name } => {
            op.set_enabled(&name, true).await?;
            println!("{name}: enabled");
        }
        ClientCommand::RotateKey { name } => {
            let key = op.rotate_key(&name).await?;
            println!("{name}: new API key (shown only this once; the old one no longer works):");
            println!("{key}");
        }
    }
    Ok(())
}

/// `client list`: a page of clients by name, one a line.
async fn print_clients(
    store: &dyn panelgate::store::Store,
    limit: u32,
    after: Option<String>,
) -> anyhow::Result<()> {
    let search = panelgate::store::CustomerSearch {
        contains: None,
        after,
        limit: Some(limit.saturating_add(1)),
    };
    let mut clients = store.list_customers(&search).await?;
    let more = clients.len() > limit as usize;
    clients.truncate(limit as usize);
    println!(
        "{:<24} {:<12} {:>16} {:>8}",
        "NAME", "GROUP", "BALANCE", "ORDERS"
    );
    if more && let Some((last, _)) = clients.last() {
        eprintln!("more clients: add --after {:?}", last.name);
    }
    for (c, orders) in clients {
        let state = if c.enabled { "" } else { "disabled" };
        println!(
            "{:<24} {:<12} {:>16} {:>8} {state}",
            c.name,
            c.group,
            money::format(money::from_units(c.balance)),
            orders
        );
    }
    Ok(())
}

async fn order(path: &Path, cmd: OrderCommand) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let store = app::open_store(&cfg.database).await?;
    let store = store.as_ref();
    let op = operator::Operator {
        store,
        cfg: &cfg,
        actor: operator::CLI,
    };
    match cmd {
        OrderCommand::List {
            client,
            state,
            attention,
            stuck,
            json,
            limit,
            before,
        } => {
            // `--stuck` is short for `--attention stuck`.
            let attention = if stuck {
                Some("stuck".into())
            } else {
                attention
            };
            let page = admin::Page {
                before,
                limit: Some(limit.saturating_add(1)),
            };
            let mut orders =
                admin::list_orders(store, client, state.as_deref(), attention.as_deref(), page)
                    .await?;
            if orders.len() > limit as usize {
                orders.truncate(limit as usize);
                if let Some(last) = orders.last() {
                    eprintln!("more orders: add --before {}", last.id);
                }
            }
            if json {
                let list: Vec<_> = orders.iter().map(admin::order_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if attention.is_some() {
                print_attention(&orders);
            } else {
                print_orders(&orders);
            }
        }
        OrderCommand::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&admin::order_json(
                    &admin::show_order(store, id).await?
                ))?
            );
        }
        OrderCommand::Resolve {
            id,
            upstream_order,
            not_placed: _,
            status,
            remains,
        } => {
            let done = match status {
                Some(status) => op.resolve_ended(id, status, remains).await?,
                None => op.resolve(id, upstream_order.as_deref()).await?,
            };
            println!("{done}");
        }
        OrderCommand::Unlink { id } => println!("{}", op.unlink(id).await?),
        OrderCommand::Settle { id, refund, note } => {
            println!("{}", op.settle(id, refund, &note).await?);
        }
    }
    Ok(())
}

async fn token(path: &Path, cmd: TokenCommand) -> anyhow::Result<()> {
    use panelgate::store::admin::Role;
    let cfg = config::load(path)?;
    let store = app::open_store(&cfg.database).await?;
    let op = operator::Operator {
        store: store.as_ref(),
        cfg: &cfg,
        actor: operator::CLI,
    };
    match cmd {
        TokenCommand::Add { name, role } => {
            let role = Role::parse(&role).context("role: read or write")?;
            let token = op.add_token(&name, role).await?;
            println!(
                "admin token {name} ({}), shown only this once:",
                role.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List => {
            println!("{:<24} {:<6} CREATED (unix ms)", "NAME", "ROLE");
            for t in store.admin_tokens().await? {
                println!("{:<24} {:<6} {}", t.name, t.role.as_str(), t.created_at);
            }
        }
        TokenCommand::Revoke { name } => {
            op.revoke_token(&name).await?;
            println!("admin token {name}: revoked");
        }
    }
    Ok(())
}

/// `order list`: one order a line, newest first.
fn print_orders(orders: &[panelgate::store::Order]) {
    println!(
        "{:>8} {:<16} {:>7} {:<11} {:<11} {:>12} {:<10} UPSTREAM ORDER",
        "ID", "CLIENT", "SERVICE", "STATE", "STATUS", "CHARGE", "UPSTREAM"
    );
    for o in orders {
        println!(
            "{:>8} {:<16} {:>7} {:<11} {:<11} {:>12} {:<10} {}",
            o.id,
            o.customer,
            o.service,
            o.state.as_str(),
            o.status.as_str(),
            money::format(money::from_units(o.charge - o.refunded)),
            o.upstream,
            o.upstream_order.as_deref().unwrap_or("-")
        );
    }
}

/// `order list --attention`: the orders that need the operator, why, and how long they waited.
fn print_attention(orders: &[panelgate::store::Order]) {
    println!(
        "{:>8} {:<16} {:<24} {:<11} {:<11} {:>12} {:>7} {:>7} {:<10} UPSTREAM ORDER",
        "ID", "CLIENT", "REASON", "STATE", "STATUS", "CHARGE", "AGE", "QUIET", "UPSTREAM"
    );
    for o in orders {
        let (reason, age, quiet) = admin::attention_row(o);
        println!(
            "{:>8} {:<16} {:<24} {:<11} {:<11} {:>12} {:>7} {:>7} {:<10} {}",
            o.id,
            o.customer,
            reason,
            o.state.as_str(),
            o.status.as_str(),
            money::format(money::from_units(o.charge - o.refunded)),
            age,
            quiet,
            o.upstream,
            o.upstream_order.as_deref().unwrap_or("-")
        );
    }
}

fn parse_status(text: &str) -> Result<panelgate::protocol::Status, String> {
    use panelgate::protocol::Status;
    Status::parse_final(text)
        .ok_or_else(|| format!("one of {}", Status::FINAL.map(Status::as_str).join(", ")))
}

/// The config file's `simulator:` section, or nothing if the file does not exist (the
/// simulator runs from flags alone).
fn simulator_section(path: &Path) -> anyhow::Result<SimulatorSection> {
    if !path.exists() {
        return Ok(SimulatorSection::default());
    }
    Ok(config::load_simulator(path)?.unwrap_or_default())
}

async fn simulate(config_path: &Path, args: SimulateArgs) -> anyhow::Result<()> {
    let _logs = init_logs(args.log_format, "info")?;
    let settings = with_flags(simulator_section(config_path)?, args);
    let key = settings
        .key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .context("no key: pass --key or set simulator.key in the config file")?;
    let speed = settings.speed.unwrap_or(1.0);
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("speed must be a positive number");
    }
    let cfg = SimConfig::from_settings(key, &settings).map_err(anyhow::Error::msg)?;
    let listen = settings
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9001)));
    let count = cfg.services.len();
    let stop = shutdown_signal();
    let handle = sim::start(cfg, listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    // Tests and scripts read this line to learn the port; keep its shape.
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    tracing::info!(addr = %handle.addr, services = count, speed, "simulated panel ready");
    stop.await;
    tracing::info!("shutting down");
    tokio::time::timeout(Duration::from_secs(15), handle.stop())
        .await
        .ok();
    Ok(())
}

/// The config file's `simulator:` section with the flags given in place of its values.
fn with_flags(file: SimulatorSection, mut args: SimulateArgs) -> SimulatorSection {
    let faults = faults_with_flags(file.faults.unwrap_or_default(), &mut args);
    SimulatorSection {
        listen: args.listen.or(file.listen),
        key: args.key.map(Secret::new).or(file.key),
        seed: args.seed.or(file.seed),
        balance: args.balance.or(file.balance),
        currency: args.currency.or(file.currency),
        speed: args.speed.or(file.speed),
        services: args.services.or(file.services),
        catalog: args.catalog.or(file.catalog),
        journal: args.journal.or(file.journal),
        first_order_id: args.first_order_id.or(file.first_order_id),
        partial_share: args.partial_share.or(file.partial_share),
        cancel_share: args.cancel_share.or(file.cancel_share),
        faults: Some(faults),
        dialect: args.dialect.or(file.dialect),
        api_path: args.api_path.or(file.api_path),
    }
}

/// The file's faults with the fault flags given in place of their values. A slow reply is
/// 5 s unless the file or a flag says how slow.
fn faults_with_flags(base: Faults, args: &mut SimulateArgs) -> Faults {
    Faults {
        slow: args.slow.unwrap_or(base.slow),
        slow_ms: args
            .slow_ms
            .unwrap_or(if base.slow_ms > 0 { base.slow_ms } else { 5000 }),
        http500: args.http500.unwrap_or(base.http500),
        garbage: args.garbage.unwrap_or(base.garbage),
        hangup: args.hangup.unwrap_or(base.hangup),
        error: args.error.unwrap_or(base.error),
        error_text: args.error_text.take().or(base.error_text),
        http403: args.http403.unwrap_or(base.http403),
        http429: args.http429.unwrap_or(base.http429),
        http504: args.http504.unwrap_or(base.http504),
        empty: args.empty.unwrap_or(base.empty),
        actions: args.fault_actions.take().unwrap_or(base.actions),
    }
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called, not
/// when first polled: a signal sent right after the "ready" line must not kill the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}
