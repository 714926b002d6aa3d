//! `order-expire`: parses the command line and wires the library together.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use order_expire::cli::{Cli, Command};
use order_expire::cmd::{check, schedule, sweep};
use order_expire::config::Settings;
use order_expire::worker::{self, WorkerOptions};
use order_expire::{Error, logging, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    // Both TLS users (redis, mysql_async) share one process-wide rustls provider; a second
    // install attempt just means one is already there.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the underlying libraries put in their messages.
            let message = logging::one_line(&e.to_string());
            eprintln!("order-expire: error: {message}");
            match e {
                Error::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let env_file = cli.env_file.ok_or_else(|| {
        Error::Usage(
            "--env FILE is required: the Laravel app's .env, e.g. --env /var/www/app/.env".into(),
        )
    })?;
    let settings = Settings::load(&env_file, &cli.mapping.overrides())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let args = cli.run;
            let options = WorkerOptions {
                concurrency: usize::from(args.concurrency),
                queue_size: args.queue_size,
                configure_redis: args.configure_redis,
                stop_timeout: Duration::from_secs(args.stop_timeout),
                batch_size: usize::from(args.batch_size),
                batch_wait: Duration::from_millis(args.batch_wait_ms),
            };
            let stop = CancellationToken::new();
            shutdown::cancel_on_signal(stop.clone())
                .map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
            worker::run(&settings, &options, stop).await.map(|_| ())
        }
        Command::Schedule {
            order_id,
            ttl,
            value,
        } => {
            let key = schedule::schedule(&settings, order_id, ttl, value.as_deref()).await?;
            println!("{key} expires in {ttl} s");
            Ok(())
        }
        Command::Check { json, no_connect } => {
            let report = check::run(&settings, !no_connect).await;
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| Error::Runtime(format!("cannot print the report: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", report.text());
            }
            if report.healthy() {
                Ok(())
            } else {
                Err(Error::CheckFailed("see the report above".into()))
            }
        }
        Command::Sweep { dry_run } => {
            let summary = sweep::run_once(&settings, dry_run).await?;
            println!("{summary}");
            Ok(())
        }
    }
}
