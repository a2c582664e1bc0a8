//! A peer section of the configuration, as the speaker takes it.

use super::{MaxPrefixAction, NextHopMode, Peer};
use petrel_bgp::rib;
use petrel_bgp::speaker::{self, PeerSettings};
use std::time::Duration;

impl Peer {
    /// The speaker's settings for this peer.
    pub fn settings(&self) -> PeerSettings {
        let mut p = PeerSettings::new(self.address, self.asn);
        p.port = self.port;
        p.local_address = self.local_address;
        p.local_port = self.local_port;
        p.local_as = self.local_as;
        p.allow_own_as = self.allow_own_as;
        p.password = self.password.clone();
        p.passive = self.passive;
        p.hold_time = self.hold_time;
        p.keepalive = self.keepalive;
        p.ttl_security = self.ttl_security;
        p.next_hop = match self.next_hop {
            NextHopMode::SelfAddr => rib::NextHopMode::SelfAddr,
            NextHopMode::Keep => rib::NextHopMode::Keep,
        };
        p.rr_client = self.route_reflector_client;
        p.local_routes_only = self.local_routes_only;
        p.families = self.families.clone();
        p.add_path = self.add_path.clone();
        p.graceful_restart = self
            .graceful_restart
            .map(|g| speaker::GracefulRestartSettings {
                restart_time: g.restart_time,
                long_lived_stale_time: g.long_lived_stale_time,
            });
        p.max_prefix = self.max_prefix.map(|m| {
            (
                m.limit,
                match m.action {
                    MaxPrefixAction::Warn => speaker::MaxPrefixAction::Warn,
                    MaxPrefixAction::Restart { after_secs } => {
                        speaker::MaxPrefixAction::Restart(Duration::from_secs(after_secs))
                    }
                },
            )
        });
        p.import = self.import.clone();
        p.export = self.export.clone();
        p.bfd = self.bfd.as_ref().map(super::Bfd::settings);
        p
    }
}
