//! The `rampart` binary: parses the command line, loads configuration, sets up logging,
//! and wires the library crates together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rampart_gateway::{Config, ConfigError, DEFAULT_CONFIG_TOML, Gateway};
use tracing_subscriber::EnvFilter;

mod vault;

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "A security-first protection layer for AI services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in front of an upstream.
    Serve(ServeArgs),
    /// Write a commented default configuration file.
    Init {
        /// Where to write it.
        #[arg(default_value = "rampart.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate a configuration file and report `file:line:column: problem`.
    Check {
        #[arg(long, short, default_value = "rampart.toml")]
        config: PathBuf,
    },
    /// Request inspection tools.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
    /// Keys, encryption, rotation and encrypted files.
    Vault(vault::VaultArgs),
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Run a labelled corpus through the inspection in process and report detection per
    /// family, false positives per source and decisions per second.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// JSON lines with `label`, `family`, `src` and `payload` (the shared `dev.jsonl` format).
    #[arg(long)]
    corpus: PathBuf,
    /// Where each payload goes: query, form, json or header.
    #[arg(long = "where", default_value = "query")]
    placement: rampart_guard::eval::Placement,
    /// Paranoia level 1-4.
    #[arg(long, default_value_t = 1)]
    paranoia: u8,
    /// Anomaly score at which a request is blocked.
    #[arg(long, default_value_t = 5)]
    threshold: u32,
    /// text or json.
    #[arg(long, default_value = "text")]
    format: OutputFormat,
    /// Also print each missed attack or each blocked benign payload, with the rules that
    /// matched, to stderr.
    #[arg(long)]
    list: Option<ListKind>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListKind {
    Missed,
    Blocked,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file; without one, the embedded defaults are used.
    #[arg(long, short, env = "RAMPART_CONFIG")]
    config: Option<PathBuf>,
    /// Upstream server for the `default` pool (replaces the config's servers).
    #[arg(long)]
    upstream: Option<String>,
    /// Proxy listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address (default 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Log filter, e.g. `info` or `rampart=debug` (also RUST_LOG).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Init { path, force } => init(&path, force),
        Command::Check { config } => check(&config),
        Command::Guard {
            command: GuardCommand::Eval(args),
        } => guard_eval(&args),
        Command::Vault(args) => vault::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; use --force to replace it",
            path.display()
        );
    }
    // Write next to the target and rename, so a failure never leaves half a file.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rampart.toml".into())
    ));
    std::fs::write(&tmp, DEFAULT_CONFIG_TOML)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}", path.display())
    })?;
    println!("wrote {}", path.display());
    Ok(())
}

fn check(path: &Path) -> Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{}: ok ({} route(s), {} upstream pool(s), listen {}, admin {})",
        path.display(),
        config.routes.len(),
        config.upstreams.len(),
        config.server.listen,
        config.server.admin
    );
    Ok(())
}

fn guard_eval(args: &EvalArgs) -> Result<()> {
    let config = rampart_guard::GuardConfig {
        paranoia: args.paranoia,
        threshold: args.threshold,
        ..Default::default()
    };
    let policy = rampart_guard::Policy::new(&config)?;
    let file = std::fs::File::open(&args.corpus)
        .with_context(|| format!("cannot open {}", args.corpus.display()))?;
    let rows = rampart_guard::eval::read_corpus(std::io::BufReader::new(file))
        .with_context(|| format!("{}", args.corpus.display()))?;
    let evaluation = rampart_guard::eval::evaluate_each(
        &policy,
        args.placement,
        &rows,
        |(label, _, src, payload), blocked, report| {
            let attack = label == "attack";
            let show = match args.list {
                Some(ListKind::Missed) => attack && !blocked,
                Some(ListKind::Blocked) => !attack && blocked,
                None => false,
            };
            if show {
                let rules: Vec<_> = report.findings().iter().map(|f| f.name).collect();
                eprintln!("{src}\t{payload:?}\t{}", rules.join(","));
            }
        },
    );
    match args.format {
        OutputFormat::Text => print!("{}", evaluation.to_text()),
        OutputFormat::Json => println!("{}", serde_json::to_string(&evaluation)?),
    }
    Ok(())
}

/// The configuration to serve: the file (or the embedded defaults) with the command-line
/// overrides applied.
fn load_config(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(upstream) = &args.upstream {
        let pool = config
            .upstreams
            .entry("default".to_owned())
            .or_insert_with(|| rampart_gateway::config::UpstreamConfig::with_servers(Vec::new()));
        pool.servers = vec![upstream.clone()];
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.server.admin = admin;
    }
    config.validate().map_err(|invalid| ConfigError {
        file: None,
        position: None,
        message: format!("with the command-line options: {}", invalid.message),
    })?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<()> {
    let (writer, _flush_guard) = tracing_appender::non_blocking(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(
            EnvFilter::try_new(&args.log)
                .with_context(|| format!("bad log filter `{}`", args.log))?,
        )
        .with_writer(writer)
        .init();

    let config = load_config(&args).map_err(|e| anyhow::anyhow!("{e}"))?;
    // One thread: the current-thread scheduler, which skips the work-stealing machinery.
    let mut runtime = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let gateway = Gateway::bind(config).await?;
        let handle = gateway.handle();
        let signals = tokio::spawn(async move {
            if let Err(e) = handle_signals(handle, &args).await {
                tracing::error!(error = %e, "signal handling failed");
            }
        });
        gateway.run().await;
        signals.abort();
        Ok::<_, anyhow::Error>(())
    })
}

#[cfg(unix)]
async fn handle_signals(handle: rampart_gateway::GatewayHandle, args: &ServeArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // Failures are logged and counted by the gateway; the old config stays.
                let _ = handle.reload_with(|| load_config(args)).await;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stop signal: draining");
    handle.shutdown();
    Ok(())
}

#[cfg(not(unix))]
async fn handle_signals(handle: rampart_gateway::GatewayHandle, _args: &ServeArgs) -> Result<()> {
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    Ok(())
}
