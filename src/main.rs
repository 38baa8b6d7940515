//! The command line: parse, load configuration, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mp_resolver::aws::Clients;
use mp_resolver::config::{self, Sources, EXIT_CONFIG};
use mp_resolver::emulator::{self, EmulatorSettings};
use mp_resolver::observe::{admin, emf, logging};
use mp_resolver::{ops, worker::Worker};

#[derive(Parser)]
#[command(
    name = "mp-resolver",
    version,
    about = "Resolves AWS Marketplace registration tokens from SQS into customers on SNS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the container's command). Configured by config/default.toml, --config and MPR_ variables.
    #[command(
        after_help = "Example:\n  MPR_QUEUE_URL=https://sqs.us-east-1.amazonaws.com/123456789012/tokens \\\n  MPR_DLQ_URL=https://sqs.us-east-1.amazonaws.com/123456789012/tokens-dlq \\\n  MPR_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:customers mp-resolver run"
    )]
    Run {
        /// A TOML file layered over the defaults (environment variables still win).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Serve the product's fulfillment URL: queue the buyer's token, redirect to your sign-up page with a signupId.
    #[command(
        after_help = "Example:\n  MPR_QUEUE_URL=https://sqs.us-east-1.amazonaws.com/123456789012/tokens \\\n  MPR_INTAKE__REGISTRATION_URL=https://example.com/signup mp-resolver intake\n\nListens on [intake] listen (default 0.0.0.0:8080); health and metrics on [admin] listen."
    )]
    Intake {
        /// A TOML file layered over the defaults (environment variables still win).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the local worker's (or intake's) /healthz says healthy (for container health checks; no curl needed).
    #[command(
        after_help = "Example (ECS task definition healthCheck):\n  [\"CMD\", \"/usr/local/bin/mp-resolver\", \"healthcheck\"]\n\nThe address is [admin] listen from the configuration (MPR_ADMIN__LISTEN, default 0.0.0.0:9090, asked on 127.0.0.1)."
    )]
    Healthcheck {
        /// Ask this address instead of the configured one, e.g. 127.0.0.1:9090.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<SocketAddr>,
        /// The same configuration file `run` was given.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Preflight: configuration, queues, redrive policy, visibility timeout, topic and ResolveCustomer permission, each with its fix.
    Check(ops::cli::CheckArgs),
    /// Put registration tokens on the token queue (for trials and smoke tests).
    Enqueue(ops::cli::EnqueueArgs),
    /// List dead-letters grouped by reason (`dlq list`), or move them back to their queue (`dlq redrive`); `--lifecycle` / `--usage` for those lanes'.
    Dlq(ops::cli::DlqArgs),
    /// List the metrics the worker emits, as CloudWatch (EMF) names: name, kind, unit, label dimensions.
    #[command(
        after_help = "The names /metrics uses, without the _total suffix; labels become dimensions (after Service and QueueName).\nscripts/deploy-check.sh compares them with the metrics the deployment's dashboard and alarms name."
    )]
    Metrics,
    /// Read the customer registry: `customers show <license-arn|agreement-id|account-id>`, `customers list [--access grant|revoke]`.
    Customers(ops::customers::CustomersArgs),
    /// Usage: `usage send` puts usage events on the usage queue, `usage show <license-arn|account-id> [--hour H]` the hours the store holds and where each stands.
    Usage(ops::usage::UsageArgs),
    /// The store's own chores: `store create-table` makes the DynamoDB table (idempotent, for local use and tests).
    Store(ops::cli::StoreArgs),
    /// Serve a local stand-in for the Marketplace Metering ResolveCustomer and Entitlement Service GetEntitlements APIs.
    #[command(
        after_help = "Example:\n  mp-resolver emulator --listen 127.0.0.1:4599 --quota 20\n  AWS_ENDPOINT_URL_MARKETPLACE_METERING=http://127.0.0.1:4599 mp-resolver run ...\n  aws marketplace-entitlement get-entitlements --endpoint-url http://127.0.0.1:4599 --product-code prod-abc"
    )]
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4599")]
        listen: SocketAddr,
        #[command(flatten)]
        settings: EmulatorSettings,
    },
}

fn main() -> ExitCode {
    let command = match Cli::parse().command {
        // `run` reads its configuration first: `worker.runtime_threads` chooses its runtime.
        Command::Run { config } => return start_run(config),
        other => other,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mp-resolver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Run { .. } => unreachable!("`run` is started above"),
        Command::Intake { config } => runtime.block_on(intake(config)),
        Command::Healthcheck { addr, config } => runtime.block_on(healthcheck(addr, config)),
        Command::Check(args) => runtime.block_on(ops::cli::check(args)),
        Command::Enqueue(args) => runtime.block_on(ops::cli::enqueue(args)),
        Command::Dlq(args) => runtime.block_on(ops::cli::dlq(args)),
        Command::Store(args) => runtime.block_on(ops::cli::store(args)),
        Command::Customers(args) => runtime.block_on(ops::customers::customers(args)),
        Command::Usage(args) => runtime.block_on(ops::usage::usage(args)),
        Command::Metrics => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(
                &mut std::io::stdout(),
                ops::metrics::catalogue_text().as_bytes(),
            );
            ExitCode::SUCCESS
        }
        Command::Emulator { listen, settings } => {
            // The same rules as `POST /emulator/config`.
            if let Err(problem) = settings.validate() {
                eprintln!("mp-resolver emulator: {problem}");
                return ExitCode::from(2);
            }
            runtime.block_on(serve_emulator(listen, settings))
        }
    }
}

/// `mp-resolver run`: the configuration, then the runtime it asks for (`worker.runtime_threads`:
/// 0 is tokio's current-thread runtime, N a multi-thread runtime of N threads), then the worker.
fn start_run(config_file: Option<PathBuf>) -> ExitCode {
    let sources = Sources::from_process(config_file);
    let loaded = match config::load(&sources) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{}", ops::load::explain(&error, &sources, &ops::load::RUN));
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let runtime = match loaded.settings.worker.runtime_threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(loaded)),
        Err(e) => {
            eprintln!("mp-resolver: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(loaded: config::Loaded) -> ExitCode {
    let settings = loaded.settings;
    logging::init(settings.log.format, &settings.log.level);
    for name in &loaded.ignored_env {
        tracing::warn!(variable = %name, "environment variable with the MPR_ prefix matches no configuration key; ignored");
    }
    let admin = match tokio::net::TcpListener::bind(settings.admin.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "mp-resolver: configuration key `admin.listen` (env MPR_ADMIN__LISTEN): cannot listen on {}: {e}",
                settings.admin.listen
            );
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    tracing::info!(admin = %settings.admin.listen, "health and metrics listening");
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let clients = Clients::from_sdk_config_with_role(&shared, &settings).await;
    let store = match open_store(&settings, &shared).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let worker = Worker::new(clients, settings.clone(), store);
    let emf = emf::spawn(worker.telemetry().clone(), &settings);
    let result = worker.run_with_admin(admin, shutdown_signal()).await;
    emf.finish().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "admin listener failed");
            ExitCode::FAILURE
        }
    }
}

/// The store `[store]` names; a file that cannot be opened exits 78 naming the key.
async fn open_store(
    settings: &config::Settings,
    shared: &aws_config::SdkConfig,
) -> Result<mp_resolver::store::Store, ExitCode> {
    match mp_resolver::store::Store::open(&settings.store, shared).await {
        Ok(store) => {
            tracing::info!(store = store.describe(), "store open");
            Ok(store)
        }
        Err(error) => {
            eprintln!("mp-resolver: configuration key `store.path` (env MPR_STORE__PATH): {error}");
            Err(ExitCode::from(EXIT_CONFIG as u8))
        }
    }
}

async fn intake(config_file: Option<PathBuf>) -> ExitCode {
    let sources = Sources::from_process(config_file);
    let needs = &ops::load::INTAKE;
    let loaded = match ops::load::load_requiring(&sources, needs) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{}", ops::load::explain(&error, &sources, needs));
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let settings = loaded.settings;
    logging::init(settings.log.format, &settings.log.level);
    let mut listeners = Vec::new();
    for (key, addr) in [
        ("intake.listen", settings.intake.listen),
        ("admin.listen", settings.admin.listen),
    ] {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                eprintln!(
                    "mp-resolver intake: configuration key `{key}`: cannot listen on {addr}: {e}"
                );
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        }
    }
    let (Some(admin), Some(listener)) = (listeners.pop(), listeners.pop()) else {
        return ExitCode::FAILURE;
    };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let clients = Clients::from_sdk_config_with_role(&shared, &settings).await;
    // One signupId per token across every intake task: bound in the shared store.
    let store = match open_store(&settings, &shared).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let signup_ids = std::sync::Arc::new(mp_resolver::intake::signups::StoredSignupIds::new(store));
    let server =
        match mp_resolver::intake::Intake::with_signup_ids(clients.sqs, &settings, signup_ids) {
            Ok(server) => server,
            Err(error) => {
                eprintln!("mp-resolver intake: {error}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
    let bound =
        |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        listen = %bound(&listener),
        path = %settings.intake.path,
        admin = %bound(&admin),
        "fulfillment endpoint listening"
    );
    let emf = emf::spawn(server.telemetry().clone(), &settings);
    let result = server.run(listener, admin, shutdown_signal()).await;
    emf.finish().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "intake listener failed");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(addr: Option<SocketAddr>, config_file: Option<PathBuf>) -> ExitCode {
    let addr = match addr {
        Some(addr) => addr,
        None => match config::load(&Sources::from_process(config_file)) {
            Ok(loaded) => admin::local_address(loaded.settings.admin.listen),
            Err(error) => {
                eprintln!("mp-resolver healthcheck: {error}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        },
    };
    match admin::http_get(addr, "/healthz").await {
        Ok((200, body)) => {
            println!("healthy: {}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            println!("unhealthy (HTTP {status}): {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("unhealthy: no answer from {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_emulator(listen: SocketAddr, settings: EmulatorSettings) -> ExitCode {
    logging::init(config::LogFormat::Pretty, "info");
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mp-resolver emulator: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, ?settings, "Marketplace Metering and Entitlement emulator listening");
    match emulator::serve(listener, settings, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mp-resolver emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (ECS stopping the task) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
