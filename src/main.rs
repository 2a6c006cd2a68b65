//! The `runway-exporter` binary: parse the command line, set up logging, call into the
//! library, and map the error to an exit code (64 for a bad configuration, 1 otherwise).
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use runway_exporter::{
    normalize_code, ConfigError, LogFormat, Overrides, ScanFormat, Settings, Table,
};

/// Exit code for a configuration that cannot be used (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "runway-exporter",
    version,
    about = "Runway task outcomes as Prometheus metrics: failure codes, retry advice and credit loss."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Overrides,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run(Overrides),
    /// Read files from the start, print the metrics, exit.
    Scan {
        /// Output format.
        #[arg(long, value_enum, default_value = "prometheus")]
        format: ScanFormat,
        /// Configuration file for the record format and tables.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Task logs to read.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Explain failure codes (reads one code per line from standard input when none given).
    Classify {
        /// A failure-code table to use instead of the built-in one.
        #[arg(long, value_name = "FILE")]
        table: Option<PathBuf>,
        codes: Vec<String>,
    },
    /// Validate and print the effective configuration; exit 0 or 64.
    CheckConfig(Overrides),
}

/// Sets up logging to standard error.
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

fn explain(table: &Table, code: &str, out: &mut impl Write) -> std::io::Result<()> {
    let normalized = normalize_code(Some(code));
    let c = table.classify(&normalized);
    writeln!(
        out,
        "{}\tcategory={} retry={} credits={} rule={}\t{}",
        normalized.as_str(),
        c.category,
        c.retry,
        c.credits,
        c.rule.as_deref().unwrap_or("-"),
        c.description
    )
}

fn classify(table: Option<PathBuf>, codes: Vec<String>) -> anyhow::Result<()> {
    let table = match table {
        Some(p) => Table::from_file(&p).map_err(ConfigError::from)?,
        None => Table::builtin(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if codes.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read standard input")?;
            if !line.trim().is_empty() {
                explain(&table, &line, &mut out)?;
            }
        }
    } else {
        for code in &codes {
            explain(&table, code, &mut out)?;
        }
    }
    Ok(())
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(o)) => run(o),
        Some(Command::CheckConfig(o)) => {
            let settings = Settings::load(&o)?;
            // What `run` would refuse, `check-config` refuses too.
            runway_exporter::api_key(&settings)?;
            print!("{}", settings.to_toml());
            Ok(())
        }
        Some(Command::Classify { table, codes }) => classify(table, codes),
        Some(Command::Scan {
            format,
            config,
            files,
        }) => {
            let settings = Settings::load(&Overrides {
                config,
                ..Overrides::default()
            })?;
            init_logging("warn", LogFormat::Text);
            let out = runway_exporter::scan(&settings, &files, format)?;
            std::io::stdout().lock().write_all(out.as_bytes())?;
            Ok(())
        }
    }
}

fn run(o: Overrides) -> anyhow::Result<()> {
    let settings = Settings::load(&o)?;
    // The TLS provider for the Runway API client (rustls with ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(&settings.log.level, settings.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(runway_exporter::run(settings, o))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                EXIT_CONFIG
            } else {
                1
            };
            eprintln!("runway-exporter: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
