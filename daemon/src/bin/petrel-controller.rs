//! petrel-controller: watches the Kubernetes API and writes petrel's
//! datastore records (load-balancer addresses, Service advertisement,
//! node labels, garbage collection). See docs/kubernetes.md.

use anyhow::Context;
use clap::Parser;
use petrel_daemon::ctl::ipam::DatastoreArgs;
use petrel_daemon::k8s::election::{Election, Timing};
use petrel_daemon::k8s::lease::{self, Fence};
use petrel_daemon::k8s::metrics::{self, Metrics};
use petrel_daemon::k8s::sync::{Controller, Options};
use petrel_daemon::k8s::watch;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch as tokio_watch};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "petrel-controller",
    version,
    about = "Kubernetes Services, EndpointSlices, Nodes and Pods into petrel's datastore"
)]
struct Args {
    /// kubeconfig file; else $KUBECONFIG, ~/.kube/config, or the in-cluster
    /// service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// This controller's name in the leader lease (default: hostname and pid).
    #[arg(long)]
    identity: Option<String>,
    /// Prometheus metrics listener.
    #[arg(long, default_value = metrics::DEFAULT_ADDRESS)]
    metrics_listen: SocketAddr,
    /// How long a node keeps advertising a Local-policy Service after its
    /// last endpoint went away (docs/kubernetes.md says why 3 s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    endpoint_hold_down: Duration,
    /// How long a deleted Node's blocks wait before they are collected.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    node_grace: Duration,
    /// How long an address of a pod that does not exist waits before it
    /// is released (Calico: 15 minutes).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    leak_grace: Duration,
    /// How often nodes and leaked addresses are looked at.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    gc_interval: Duration,
    /// A full reconcile of every Service, besides the watches.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    resync: Duration,
}

/// `500ms`, `3s`, `10m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with ms, s, m or h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    }
}

async fn kube_client(path: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, or run in a pod with a service account",
        )?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}-{}", std::process::id())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store = args.datastore.open_store().await?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    // Fail early and clearly when the apiserver is unreachable or refuses us.
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    let id = args.identity.clone().unwrap_or_else(identity);
    info!(identity = %id, "petrel-controller starting");

    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    let (shutdown_tx, shutdown) = tokio_watch::channel(false);
    let fence = Arc::new(Fence::default());
    let (leading_tx, leading) = tokio_watch::channel(false);
    let election = tokio::spawn(lease::run(
        store.clone(),
        Election::new(&id, Timing::default()),
        fence.clone(),
        leading_tx,
        shutdown.clone(),
    ));

    let (tx, rx) = mpsc::channel(watch::CHANGES);
    let caches = watch::start(&client, tx, metrics.clone());
    let opts = Options {
        identity: id,
        hold_down: args.endpoint_hold_down,
        node_grace: args.node_grace,
        leak_grace: args.leak_grace,
        resync: args.resync,
        gc_every: args.gc_interval,
        ..Options::default()
    };
    let ctl = Controller::new(client, store, caches, opts, fence, metrics);
    let work = tokio::spawn(ctl.run(rx, leading, shutdown.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("stopping: giving the lease up");
    let _ = shutdown_tx.send(true);
    let _ = work.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petrel-controller: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("petrel-controller: {e:#}");
            ExitCode::from(1)
        }
    }
}
