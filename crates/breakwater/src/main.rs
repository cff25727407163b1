//! The `breakwater` command.

use std::path::PathBuf;
use std::process::ExitCode;

use breakwater::Config;
use clap::{Parser, Subcommand};

/// Breakwater: stops inventory cascades across record, WMS, ERP and storefront.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file (with environment overrides) and print the cascade map.
    Check {
        /// The TOML configuration file.
        #[arg(long, env = "BREAKWATER_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
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
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
    }
}
