//! A lab of real BGP daemons in network namespaces, for the interop suites.
//!
//! A [`Lab`] owns a set of uniquely named network namespaces, joined by veth
//! [`Link`]s, and a scratch folder. Drivers ([`bird::Bird`], [`frr::Frr`],
//! [`gobgp::Gobgp`], [`exabgp::Exabgp`], [`petreld::Petreld`]) start one
//! daemon each inside a namespace as a [`Daemon`]: stdin is null and all
//! output goes to a log file, so nothing holds a test's pipes open. Every wait
//! is a [`wait_until`] loop with a deadline that also checks that the daemons
//! involved are still alive, and puts their logs into the error: a crashed
//! daemon fails fast instead of looking slow. Each driver lists what a daemon
//! received as [`Route`]s with the same fields, so assertions read alike.
//!
//! [`raw::RawSpeaker`] sends UPDATEs byte for byte (what no daemon will
//! send); [`fib`] reads a namespace's kernel routes; [`topo`] has the small
//! topologies of the petrel suites and one [`topo::Speaker`] trait over
//! BIRD, FRR, GoBGP and petreld so a scenario is written once; its read
//! side, [`topo::View`], is how any test waits for a daemon's sessions,
//! routes and BFD.
//!
//! Dropping a [`Lab`] kills every process left in its namespaces and deletes
//! them; [`sweep_leftovers`] (run by [`Lab::new`]) removes what a crashed
//! earlier run left behind. Namespace names carry the creating process id, so
//! parallel tests and parallel test binaries never collide.
//!
//! Environment: `PETREL_LAB_DEADLINE` (seconds, default 60) bounds every
//! wait; `PETREL_LAB_KEEP=1` keeps the scratch folder (configs and logs)
//! under `$TMPDIR/petrel-lab/`; `PETREL_BIN_DIR` says where `petreld` and
//! `petrelctl` are (see [`crate::bin`]).
//!
//! ```no_run
//! use petrel_tests::lab::topo::View;
//! use petrel_tests::lab::{self, bird, frr, Lab};
//! # fn main() -> anyhow::Result<()> {
//! let lab = Lab::new("bird-frr")?;
//! let (a, b) = (lab.netns("bird")?, lab.netns("frr")?);
//! lab.link(&a, &["10.99.1.1/24"], &b, &["10.99.1.2/24"])?;
//! let mut bc = bird::Config::new("10.99.1.1", 4200000001);
//! bc.originate("10.201.0.0/24", &["64512:1"], &[]);
//! bc.peer(bird::Peer::new("frr", "10.99.1.2", 4200000002).source("10.99.1.1"));
//! let bird = bird::Bird::start(&lab, &a, &bc.render())?;
//! bird.wait_established("frr")?;
//! let routes = bird.received("frr")?;
//! # Ok(()) }
//! ```

pub mod bird;
pub mod cluster;
pub mod etcd;
pub mod exabgp;
pub mod failover;
pub mod fib;
pub mod frr;
pub mod gobgp;
pub mod k8s;
pub mod kube;
pub mod metrics;
mod netns;
pub mod petreld;
mod process;
pub mod raw;
mod route;
pub mod topo;

pub use netns::{remove_named, sweep_leftovers, Lab, Link, Netns};
pub use process::{wait_until, Daemon, DEADLINE};
pub use route::{prefixes, Route};

/// Whether this machine can run the lab: root, `ip netns` and the given
/// programs on `PATH` (or as absolute paths).
pub fn can_run(programs: &[&str]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("root (network namespaces)".into());
    }
    for p in std::iter::once(&"ip").chain(programs) {
        if which(p).is_none() {
            return Err(format!("program {p}"));
        }
    }
    Ok(())
}

/// [`crate::require`] for a lab test: `true` when root, netns and the
/// programs are there; skips (or fails in CI) otherwise.
pub fn require_lab(programs: &[&str]) -> bool {
    match can_run(programs) {
        Ok(()) => true,
        Err(what) => crate::require(false, &format!("lab: {what}")),
    }
}

/// The full path of a program on `PATH` (absolute paths are checked as is).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(program);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/lib/frr"].map(Into::into))
        .map(|d| d.join(program))
        .find(|f| f.is_file())
}
