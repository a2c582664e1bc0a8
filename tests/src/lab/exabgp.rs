//! ExaBGP 4.2: a scripted speaker that only dials out. Announcements go
//! through an API process (`tail -F` of a command file the driver appends
//! to), so a test can inject at any time: routes with any attributes, raw
//! attributes (`attribute [0xCODE 0xFLAGS 0xVALUE]`), AS_SET, and a
//! 2-octet-ASN speaker (`asn4 = false`: ExaBGP then sends AS_TRANS and
//! AS4_PATH itself). Whole hex UPDATEs ExaBGP cannot express are sent by
//! [`super::raw::RawSpeaker`] instead.
//!
//! Traps: settings come from dotted environment variables (hence `env`);
//! `exabgp.api.ack=false` or ExaBGP blocks writing acks no one reads; it
//! sends AS_PATH verbatim (put its own AS first for eBGP).

use super::{Daemon, Lab, Netns};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

/// One `neighbor` section.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub peer: String,
    pub local_address: String,
    pub local_as: u32,
    pub peer_as: u32,
    pub router_id: String,
    pub hold_time: u16,
    pub ipv4: bool,
    pub ipv6: bool,
    /// `false`: a 2-octet-ASN speaker (no 4-octet AS capability).
    pub asn4: bool,
    pub graceful_restart: Option<u32>,
    /// `md5-password`.
    pub password: Option<String>,
}

impl Neighbor {
    pub fn new(peer: &str, peer_as: u32, local_address: &str, local_as: u32) -> Neighbor {
        Neighbor {
            peer: peer.into(),
            local_address: local_address.into(),
            local_as,
            peer_as,
            router_id: if local_address.contains(':') {
                "10.255.255.4".into()
            } else {
                local_address.into()
            },
            hold_time: 90,
            ipv4: true,
            ipv6: true,
            asn4: true,
            graceful_restart: None,
            password: None,
        }
    }
    pub fn hold_time(mut self, s: u16) -> Self {
        self.hold_time = s;
        self
    }
    /// A 2-octet-ASN speaker: no 4-octet AS capability, and a peer whose
    /// AS does not fit is configured as AS_TRANS (23456), as such a router
    /// would be.
    pub fn asn2(mut self) -> Self {
        self.asn4 = false;
        if self.peer_as > 0xffff {
            self.peer_as = 23456;
        }
        self
    }
    pub fn families(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }
    pub fn graceful_restart(mut self, t: u32) -> Self {
        self.graceful_restart = Some(t);
        self
    }
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.into());
        self
    }
}

/// A running ExaBGP.
pub struct Exabgp {
    ns: Netns,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Exabgp {
    /// Starts ExaBGP with these neighbours; nothing is announced until
    /// [`Exabgp::announce`].
    pub fn start(lab: &Lab, ns: &Netns, neighbors: &[Neighbor]) -> Result<Exabgp> {
        let dir = lab.subdir(&format!("exabgp-{}", ns.name()))?;
        let cmds = dir.join("commands");
        std::fs::write(&cmds, "")?;
        let mut c = format!(
            "process api {{\n  run /usr/bin/tail -n +1 -F {};\n  encoder text;\n}}\n",
            cmds.display()
        );
        for n in neighbors {
            let _ = writeln!(c, "neighbor {} {{", n.peer);
            let _ = writeln!(
                c,
                "  router-id {};\n  local-address {};\n  local-as {};\n  peer-as {};\n  hold-time {};",
                n.router_id, n.local_address, n.local_as, n.peer_as, n.hold_time
            );
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "  md5-password \"{pw}\";");
            }
            c += "  family {";
            if n.ipv4 {
                c += " ipv4 unicast;";
            }
            if n.ipv6 {
                c += " ipv6 unicast;";
            }
            c += " }\n  capability {";
            if !n.asn4 {
                c += " asn4 disable;";
            }
            c += " route-refresh enable;";
            if let Some(t) = n.graceful_restart {
                let _ = write!(c, " graceful-restart {t};");
            }
            c += " }\n  api { processes [ api ]; }\n}\n";
        }
        std::fs::write(dir.join("exabgp.conf"), c)?;
        let mut e = Exabgp {
            ns: ns.clone(),
            dir,
            daemon: None,
        };
        e.launch(lab)?;
        Ok(e)
    }

    fn launch(&mut self, lab: &Lab) -> Result<()> {
        let conf = self.dir.join("exabgp.conf");
        let d = Daemon::spawn(
            lab,
            &self.ns,
            "exabgp",
            &self.dir.join("exabgp.log"),
            "env",
            &[
                "exabgp.daemon.user=root",
                "exabgp.api.cli=false",
                "exabgp.api.ack=false",
                "exabgp.reactor.speed=0.01",
                "exabgp.log.destination=stdout",
                "exabgp.log.level=INFO",
                "exabgp.tcp.bind=",
                "exabgp",
                &conf.to_string_lossy(),
            ],
            &[],
        )?;
        self.daemon = Some(d);
        Ok(())
    }

    /// The daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("exabgp was started")
    }

    /// Sends one API command, e.g. `announce route 10.0.0.0/24 next-hop
    /// self as-path [ 65004 ]`, or `neighbor 10.0.0.1 announce ...`.
    pub fn command(&self, line: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("commands"))
            .context("exabgp command file")?;
        writeln!(f, "{line}")?;
        Ok(())
    }

    /// `announce route PREFIX next-hop NH ATTRS` (ATTRS in ExaBGP syntax:
    /// `as-path [ 65004 ] community [ 1:2 ] attribute [ 0x63 0xc0 0x01 ]`).
    pub fn announce(&self, prefix: &str, next_hop: &str, attrs: &str) -> Result<()> {
        self.command(&format!(
            "announce route {prefix} next-hop {next_hop} {attrs}"
        ))
    }

    /// `announce attributes next-hop NH ATTRS nlri P1 P2 ...`: one UPDATE
    /// (or as many as needed) carrying all the prefixes.
    pub fn announce_many(&self, next_hop: &str, attrs: &str, prefixes: &[String]) -> Result<()> {
        self.command(&format!(
            "announce attributes next-hop {next_hop} {attrs} nlri {}",
            prefixes.join(" ")
        ))
    }

    /// `withdraw route PREFIX next-hop NH`.
    pub fn withdraw(&self, prefix: &str, next_hop: &str) -> Result<()> {
        self.command(&format!("withdraw route {prefix} next-hop {next_hop}"))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9();
        }
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    /// Starts again; the command file starts empty (nothing re-announced).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        std::fs::write(self.dir.join("commands"), "")?;
        self.launch(lab)
    }
}
