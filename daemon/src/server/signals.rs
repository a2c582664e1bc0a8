//! The main loop: SIGHUP reloads the file, the heartbeat feeds systemd's
//! watchdog, SIGTERM/SIGINT stop (gracefully under graceful restart).

use super::{file_origins, Running};
use crate::config::Config;
use crate::fib::task::FibTask;
use crate::health::Health;
use crate::intent::Source;
use crate::systemd::Notifier;
use petrel_bgp::speaker::Speaker;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// What the main loop watches.
pub(super) struct MainLoop<'a> {
    pub(super) config_path: &'a Path,
    pub(super) notifier: &'a Notifier,
    pub(super) speaker: Speaker,
    pub(super) fib: FibTask,
    pub(super) fib_routes: Arc<AtomicUsize>,
    pub(super) health: Arc<Health>,
    pub(super) beat_every: Duration,
}

impl MainLoop<'_> {
    /// Runs until SIGTERM or SIGINT, then stops the speaker.
    pub(super) async fn run(self, state: Arc<tokio::sync::Mutex<Running>>) -> anyhow::Result<()> {
        let MainLoop {
            config_path,
            notifier,
            speaker,
            fib,
            fib_routes,
            health,
            beat_every,
        } = self;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut beat = tokio::time::interval(beat_every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ready_sent = false;
        let notify = |r: std::io::Result<()>| {
            if let Err(e) = r {
                warn!(error = %e, "cannot notify systemd");
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    notify(notifier.reloading());
                    let mut s = state.lock().await;
                    if let Err(e) = reload(&mut s, config_path).await {
                        error!(error = %e, "configuration not reloaded");
                    }
                    // Ends the RELOADING=1 state whatever the outcome.
                    ready_sent = false;
                }
                _ = beat.tick() => {
                    // Only when the speaker and the FIB task both answer: a stuck
                    // one stops the watchdog and systemd restarts petreld.
                    let alive = tokio::time::timeout(beat_every, async {
                        let peers = speaker.peers().await.ok()?;
                        fib.ping().await.then_some(peers)
                    })
                    .await;
                    match alive {
                        Ok(Some(peers)) => {
                            health.beat();
                            notify(notifier.watchdog());
                            let line = crate::systemd::status_line(&peers, fib_routes.load(Ordering::Relaxed), &health);
                            notify(notifier.status(&line));
                        }
                        _ => warn!("speaker or FIB task did not answer within {beat_every:?}; watchdog not fed"),
                    }
                }
                _ = health.changed() => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            if !ready_sent && health.is_ready() {
                ready_sent = true;
                let peers = speaker.peers().await.unwrap_or_default();
                let line = crate::systemd::status_line(
                    &peers,
                    fib_routes.load(Ordering::Relaxed),
                    &health,
                );
                info!(status = %line, "ready");
                notify(notifier.ready(&line));
            }
        }
        notify(notifier.stopping());
        let s = state.lock().await;
        if s.cfg.bgp.graceful_restart.is_some() {
            // RFC 4724 §4.2: a session that ends without a NOTIFICATION keeps
            // our routes at every GR-capable peer for the restart time, and
            // the kernel keeps ours: a restart (an upgrade, systemctl restart)
            // does not disturb forwarding. A node stopped for good is
            // withdrawn when the restart time runs out.
            info!("stopping gracefully: sessions closed without NOTIFICATION, routes kept for the restart time");
            // BFD says AdminDown first: RFC 5882 §3.2, the peers must not take
            // it for a forwarding failure and end the sessions they keep our
            // routes by (the kernel's routes stay: forwarding goes on).
            let _ = s.speaker.stop_bfd().await;
        } else {
            info!("stopping");
            let _ = s.speaker.shutdown(Some("petreld stopping".into())).await;
        }
        let _ = std::fs::remove_file(&s.cfg.control_socket);
        Ok(())
    }
}

/// SIGHUP: applies peer and origination changes; sessions not concerned are untouched.
async fn reload(s: &mut Running, path: &Path) -> anyhow::Result<()> {
    let mut new = Config::load(path)?;
    // What was resolved at start stays: the node's AS may come from the
    // cluster, and identity changes need a restart anyway.
    if new.node.name != s.cfg.node.name
        || new.node.router_id != s.cfg.node.router_id
        || new.node.asn_from_file != s.cfg.node.asn_from_file
        || (new.node.asn_from_file && new.node.asn != s.cfg.node.asn)
        || new.node.addresses != s.cfg.node.addresses
        || new.bgp.listen != s.cfg.bgp.listen
        || new.datastore != s.cfg.datastore
    {
        warn!(
            "node identity, listen addresses and the datastore change only on restart; other changes are applied"
        );
    }
    new.node = s.cfg.node.clone();
    new.datastore = s.cfg.datastore.clone();
    {
        let mut i = s.intent.lock().await;
        i.set_peers(Source::File, crate::intent::file_peers(&new))
            .await?;
        i.set_origins(Source::File, file_origins(&new), None)
            .await?;
    }
    info!("configuration reloaded");
    s.cfg = new;
    Ok(())
}
