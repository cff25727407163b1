//! The `breakwater` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use breakwater::metrics::{self as m};
use breakwater::Config;
use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

/// Breakwater: stops inventory cascades across record, WMS, ERP and storefront.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The article's SKU-1247 story on an in-process Kafka, with and without propagation.
    Demo,
    /// Run the processor.
    Run {
        /// The TOML configuration file (BREAKWATER_* environment variables override it).
        #[arg(long, env = "BREAKWATER_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file (with environment overrides) and print the cascade map.
    Check {
        /// The TOML configuration file.
        #[arg(long, env = "BREAKWATER_CONFIG")]
        config: PathBuf,
    },
    /// Create every topic the configuration names that does not exist yet.
    Topics {
        /// The TOML configuration file.
        #[arg(long, env = "BREAKWATER_CONFIG")]
        config: PathBuf,
        /// Partitions per topic (all topics are co-partitioned).
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own report; its in-process brokers shutting down are not news.
    let default_filter = match cli.command {
        Command::Demo => "warn,rdkafka=off,librdkafka=off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Demo => report(runtime().and_then(|rt| {
            rt.block_on(async {
                let mut out = std::io::stdout();
                breakwater::demo::run(&mut out).await?;
                Ok(())
            })
        })),
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                println!("{}: ok", config.display());
                for s in c.model.systems() {
                    println!(
                        "  system {:<12} in: {:<32} propagation: {}",
                        s.name, s.input_topic, s.propagation_topic
                    );
                }
                for h in c.model.handoffs() {
                    println!("  handoff {} -> {} within {} ms", h.from, h.to, h.window_ms);
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Topics {
            config,
            partitions,
            replication,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(runtime().and_then(|rt| {
                rt.block_on(breakwater::topics::create_topics(
                    &cfg,
                    partitions,
                    replication,
                ))
                .context("creating topics")
                .map(|created| {
                    for t in created {
                        println!("created {t}");
                    }
                })
            }))
        }
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(runtime().and_then(|rt| rt.block_on(serve(cfg))))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Handlers go in before anything slow, so a SIGTERM during start-up is a clean stop
    // rather than the default action (death without a final commit).
    let shutdown = shutdown_signal().context("installing signal handlers")?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(m::HANDOFF_LATENCY.into()), m::LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(m::COMMIT_DURATION.into()), m::COMMIT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(m::COMMIT_RECORDS.into()), m::BATCH_BUCKETS)?
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    m::describe();
    metrics_process::Collector::default().describe();
    metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    breakwater::run(cfg, Some(handle), shutdown).await?;
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future completes on either signal.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
