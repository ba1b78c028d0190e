//! `raftmq namesrv`: one name server, until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::Context;

/// Flags of `raftmq namesrv`.
#[derive(clap::Args)]
pub struct NamesrvArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9876")]
    listen: String,
    /// Seconds a broker may stay silent before it is dropped.
    #[arg(long, default_value_t = 120)]
    broker_timeout_secs: u64,
    /// Address to serve HTTP on (/health, /status, /metrics); none when not given.
    #[arg(long)]
    http: Option<String>,
}

/// Serves until a shutdown signal.
pub async fn run(args: NamesrvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.broker_timeout_secs > 0,
        "--broker-timeout-secs must be at least 1"
    );
    let config = namesrv::NamesrvConfig {
        listen: args.listen.clone(),
        broker_timeout: Duration::from_secs(args.broker_timeout_secs),
        ..Default::default()
    };
    let server = namesrv::Namesrv::start(&remoting::TcpTransport, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let http = match &args.http {
        Some(addr) => Some(raftmq::http::serve_namesrv(addr, &server).await?),
        None => None,
    };
    let mut ready = serde_json::json!({ "namesrv": server.local_addr().to_string() });
    if let Some(http) = &http {
        ready["http"] = http.local_addr().to_string().into();
    }
    println!("READY {ready}");
    crate::signal::shutdown_signal().await;
    if let Some(http) = http {
        http.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}
