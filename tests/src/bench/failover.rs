//! The failover scenarios (issue 17): a peer's death, and the DUT's own
//! crash and restart, each read from the DUT's kernel FIB.
//!
//! **peer-death**: the DUT has two eBGP peers on links of their own, A
//! (namespace `a`, 10.0.0.11; the DUT is 10.0.0.1) and B (namespace `b`,
//! 10.0.1.12; the DUT 10.0.1.1). Variant `move`: both announce the same N
//! prefixes, B's AS path one ASN longer, so the FIB holds all N via A;
//! variant `gone`: only A announces them (B sends End-of-RIB alone). Then
//! A's end of its veth is set down: the DUT's interface loses carrier and
//! stays administratively up, which is what a dead box or a pulled cable
//! looks like from the DUT. Measured: from the link going down to the FIB
//! holding exactly what it must (all N via B / none of them), and the most
//! prefixes missing at once meanwhile (a blackhole while moving). Deleting
//! A's end instead would delete the DUT's end too (a veth pair goes as
//! one): that is the DUT's own interface vanishing, and the kernel then
//! flushes the IPv4 routes through it by itself, without notifications,
//! timing the kernel rather than the daemon. Hold time 9 s everywhere: the
//! fallback when a daemon does not react to the carrier loss. No BFD here.
//!
//! **restart**: one peer (namespace `inj`, 10.0.0.11) announces N prefixes
//! and End-of-RIB; the FIB holds them. Every process of the DUT is
//! SIGKILLed (a crash: nothing cleans up) and, one second later, started
//! again with its graceful-restart recovery (see [`super::dut::Layout`]).
//! The peer, a graceful-restart helper (RFC 4724 §3), changed its table
//! meanwhile: 10% of the prefixes withdrawn, another 10% moved to a second
//! next hop (10.0.0.111); on the new session it sends that table and
//! End-of-RIB. Measured: the most prefixes of the peer's current table
//! missing from the FIB at once, from the kill until the FIB matches it;
//! the time from the new process's start to the FIB matching the peer's
//! table exactly (stale routes swept, changes installed); and, polled,
//! to the changes alone being in.

use super::dut::{Dut, Kind, Layout};
use super::encode::{self, PeerView};
use super::fibwatch::FibWatch;
use super::peer::{self, Injector};
use super::run::load1;
use super::scenario::{self, Failover};
use super::table::Table;
use anyhow::{anyhow, bail, Context, Result};
use petrel_bgp::wire::Prefix;
use petrel_tests::lab::Lab;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hold time on the failover sessions (RFC 4271 §4.2), short so that a
/// daemon that does not notice the carrier loss ends the run by itself.
pub const HOLD: u16 = 9;
/// Graceful restart time (RFC 4724 §3) of every DUT in `restart`; FRR's
/// zebra `-K` and BIRD's `graceful restart wait` take the same value.
pub const RESTART_TIME: u16 = 30;
/// No FIB change for this long: settled.
const QUIET: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

/// One measurement of one DUT.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `move`, `gone` (peer-death) or `restart`.
    pub variant: &'static str,
    /// Link down (peer-death) or process start (restart) to the FIB
    /// holding exactly what it must.
    pub seconds: f64,
    /// The most expected prefixes missing from the FIB at once meanwhile.
    pub max_missing: usize,
    pub detail: Value,
}

impl Outcome {
    pub fn json(&self) -> Value {
        let mut v = json!({
            "variant": self.variant,
            "seconds": self.seconds,
            "max_missing": self.max_missing,
        });
        if let (Some(o), Some(d)) = (v.as_object_mut(), self.detail.as_object()) {
            o.extend(d.clone());
        }
        v
    }
}

/// The variants a scenario measures per DUT and repetition.
pub fn variants(f: Failover) -> &'static [&'static str] {
    match f {
        Failover::PeerDeath => &["move", "gone"],
        Failover::Restart => &["restart"],
    }
}

pub fn run(kind: Kind, f: Failover, variant: &str, table: &Table) -> Result<Outcome> {
    match (f, variant) {
        (Failover::PeerDeath, "move") => peer_death(kind, table, true),
        (Failover::PeerDeath, _) => peer_death(kind, table, false),
        (Failover::Restart, _) => restart(kind, table),
    }
}

/// Our OPEN to a restarting DUT: a graceful restart helper.
const HELPER: encode::OpenOpts = encode::OpenOpts {
    gr_helper: true,
    add_path_receive: false,
};

fn layout(injectors: Vec<(IpAddr, u32)>, graceful_restart: bool) -> Layout {
    Layout {
        asn: scenario::DUT_AS,
        router_id: "10.0.0.1".into(),
        v6: false,
        injectors,
        monitor: None,
        bfd: false,
        hold: Some(HOLD),
        graceful_restart: graceful_restart.then_some(RESTART_TIME),
        reflector: None,
    }
}

/// `t` announced by the peer `asn` with next hop `nh`, its own AS
/// `1 + prepend` times; End-of-RIB after it when `eor`.
fn announce(t: &Table, asn: u32, nh: IpAddr, prepend: usize) -> Vec<u8> {
    let pre = move |_| prepend;
    encode::announce(
        t,
        &PeerView {
            asn,
            next_hop: nh,
            prepend: &pre,
            // eBGP: no LOCAL_PREF (RFC 4271 §5.1.5).
            local_pref: None,
        },
    )
    .concat()
}

/// Every prefix of `prefixes` via `gw`, as the FIB watcher keys them.
fn via<'a>(
    prefixes: impl IntoIterator<Item = &'a Prefix>,
    gw: IpAddr,
) -> super::fibwatch::KeyMap<Option<IpAddr>> {
    prefixes
        .into_iter()
        .map(|p| (encode::prefix_key(p), Some(gw)))
        .collect()
}

/// Polls `done` every 5 ms (the instants that matter are the FIB
/// watcher's) until it holds; fails after `limit` or when a DUT process
/// died (`dut`, when it should be running).
fn wait(
    what: &str,
    limit: Duration,
    dut: Option<&Dut>,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        if let Some(d) = dut {
            d.check_alive()?;
        }
        if start.elapsed() > limit {
            bail!("{what} not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the FIB to equal `want` and then to stay quiet for [`QUIET`].
fn load(
    fib: &FibWatch,
    dut: &Dut,
    want: super::fibwatch::KeyMap<Option<IpAddr>>,
    what: &str,
) -> Result<()> {
    fib.state.lock().unwrap().expect(want);
    wait(what, Duration::from_secs(600), Some(dut), || {
        let g = fib.state.lock().unwrap();
        if let Some(e) = &g.error {
            bail!("FIB watcher: {e}");
        }
        Ok(g.exact_at.is_some() && g.last_event.is_some_and(|t| t.elapsed() >= QUIET))
    })
}

fn peer_death(kind: Kind, table: &Table, moved: bool) -> Result<Outcome> {
    let (a, b, dut_a, dut_b) = (
        ip("10.0.0.11"),
        ip("10.0.1.12"),
        ip("10.0.0.1"),
        ip("10.0.1.1"),
    );
    let (as_a, as_b) = (scenario::injector_as(0), scenario::injector_as(1));
    let lab = Lab::new(&format!("fail-{}", kind.name()))?;
    let (dut_ns, a_ns, b_ns) = (lab.netns("dut")?, lab.netns("a")?, lab.netns("b")?);
    let link_a = lab.link(&dut_ns, &["10.0.0.1/24"], &a_ns, &["10.0.0.11/24"])?;
    lab.link(&dut_ns, &["10.0.1.1/24"], &b_ns, &["10.0.1.12/24"])?;
    let fib = FibWatch::start(&dut_ns)?;
    let l = layout(vec![(a, as_a), (b, as_b)], false);
    let dut = Dut::start(kind, &lab, &dut_ns, &l)?;
    let mut ia = Injector::new(peer::establish(&a_ns, a, dut_a, as_a).context("peer A")?)?;
    let mut ib = Injector::new(peer::establish(&b_ns, b, dut_b, as_b).context("peer B")?)?;
    // B's copy one ASN longer: A's path is best for every prefix.
    let mut sb = if moved {
        announce(table, as_b, b, 1)
    } else {
        Vec::new()
    };
    sb.extend(encode::end_of_rib(false));
    let mut sa = announce(table, as_a, a, 0);
    sa.extend(encode::end_of_rib(false));
    let writers = [ib.stream(Arc::new(sb))?, ia.stream(Arc::new(sa))?];
    load(&fib, &dut, via(&table.prefixes, a), "every prefix via A")?;
    for w in writers {
        w.join().map_err(|_| anyhow!("writer panicked"))??;
    }

    let target = if moved {
        via(&table.prefixes, b)
    } else {
        Default::default()
    };
    fib.state.lock().unwrap().expect(target);
    let load_before = load1();
    let ifname = link_a.b.clone();
    let (t_call, ioctl_seconds) = a_ns.enter(move || set_down(&ifname))?;
    let what = if moved {
        "every prefix via B"
    } else {
        "no prefix left"
    };
    let waited = wait(
        what,
        Duration::from_secs(3 * HOLD as u64 + 60),
        Some(&dut),
        || {
            let g = fib.state.lock().unwrap();
            Ok(g.exact_at.is_some() && g.carrier_lost_at.is_some())
        },
    );
    if let Err(e) = waited {
        let g = fib.state.lock().unwrap();
        let sample = dut_ns
            .ip(&["-4", "-d", "route", "show"])
            .unwrap_or_default();
        bail!(
            "{e:#}: {} routes left, {} via A, carrier loss seen: {}; the DUT's routes now:\n{}",
            g.count,
            g.via(a),
            g.carrier_lost_at.is_some(),
            sample.lines().take(8).collect::<Vec<_>>().join("\n")
        );
    }
    let out = {
        let g = fib.state.lock().unwrap();
        // The clock: the DUT's interface losing carrier, as its namespace's
        // netlink reports it (the ioctl that causes it can wait seconds for
        // the kernel's locks on a busy machine).
        let t0 = g.carrier_lost_at.unwrap_or(t_call);
        Outcome {
            variant: if moved { "move" } else { "gone" },
            seconds: g.exact_at.map_or(f64::NAN, |t| (t - t0).as_secs_f64()),
            max_missing: g.max_missing,
            detail: json!({
                "fib_count_after": g.count,
                "via_a_after": g.via(a),
                "set_down_ioctl_seconds": ioctl_seconds,
                "carrier_lost_after_call_seconds": (t0 - t_call).as_secs_f64(),
                // Includes the kernel's linkwatch batching of the carrier
                // event (up to 1 s, machine-wide): see docs/benchmarks.md.
                "seconds_from_ioctl_return": g.exact_at.map(|t| {
                    t.saturating_duration_since(t_call + Duration::from_secs_f64(ioctl_seconds))
                        .as_secs_f64()
                }),
                "load1": load_before,
            }),
        }
    };
    ia.close();
    ib.close();
    dut.stop();
    drop(fib);
    drop(lab);
    Ok(out)
}

fn restart(kind: Kind, table: &Table) -> Result<Outcome> {
    let (a, moved_nh, dut_a) = (
        ip("10.0.0.11"),
        scenario::churn_next_hop(false),
        ip("10.0.0.1"),
    );
    let asn = scenario::injector_as(0);
    let lab = Lab::new(&format!("restart-{}", kind.name()))?;
    let (dut_ns, inj_ns) = (lab.netns("dut")?, lab.netns("inj")?);
    lab.link(
        &dut_ns,
        &["10.0.0.1/24"],
        &inj_ns,
        &["10.0.0.11/24", "10.0.0.111/24"],
    )?;
    let fib = FibWatch::start(&dut_ns)?;
    let l = layout(vec![(a, asn)], true);
    let dut = Dut::start(kind, &lab, &dut_ns, &l)?;
    let mut inj = Injector::new(peer::establish_with(&inj_ns, a, dut_a, asn, HELPER)?.0)?;
    let mut s0 = announce(table, asn, a, 0);
    s0.extend(encode::end_of_rib(false));
    let w = inj.stream(Arc::new(s0))?;
    load(&fib, &dut, via(&table.prefixes, a), "the table in the FIB")?;
    w.join().map_err(|_| anyhow!("writer panicked"))??;

    // The peer's table from the crash on: every tenth prefix withdrawn,
    // every tenth (offset 5) via the second next hop.
    let (keep, moved) = split(table);
    let mut want = via(&keep.prefixes, a);
    want.extend(via(&moved.prefixes, moved_nh));
    let withdrawn = table.len() - keep.len() - moved.len();
    let mut s1 = announce(&keep, asn, a, 0);
    s1.extend(announce(&moved, asn, moved_nh, 0));
    s1.extend(encode::end_of_rib(false));

    fib.state.lock().unwrap().expect(want);
    let load_before = load1();
    dut.crash();
    inj.close();
    let t_kill = Instant::now();
    let kept = fib.state.lock().unwrap().count;
    std::thread::sleep(Duration::from_secs(1));
    let kept_1s = fib.state.lock().unwrap().count;

    let t_start = Instant::now();
    let dut = Dut::restart(kind, &lab, &dut_ns, &l)?;
    let mut inj = Injector::new(
        peer::establish_with(&inj_ns, a, dut_a, asn, HELPER)
            .context("the session after the restart")?
            .0,
    )?;
    let t_est = Instant::now();
    let w = inj.stream(Arc::new(s1))?;
    // Polled: the changes alone in (nothing of the table missing, the
    // moved prefixes via their new next hop), stale routes maybe still there.
    let mut changes_at = None;
    wait(
        "the peer's current table, exactly",
        Duration::from_secs(RESTART_TIME as u64 + 180),
        Some(&dut),
        || {
            let g = fib.state.lock().unwrap();
            if changes_at.is_none() && g.missing == 0 && g.via(moved_nh) == moved.len() {
                changes_at = Some(Instant::now());
            }
            Ok(g.exact_at.is_some())
        },
    )?;
    w.join().map_err(|_| anyhow!("writer panicked"))??;
    let out = {
        let g = fib.state.lock().unwrap();
        let exact = g.exact_at.unwrap_or(t_start);
        Outcome {
            variant: "restart",
            seconds: (exact - t_start).as_secs_f64(),
            max_missing: g.max_missing,
            detail: json!({
                "established_seconds": (t_est - t_start).as_secs_f64(),
                "changes_in_seconds_polled": changes_at.map(|t| (t.min(exact) - t_start).as_secs_f64()),
                "kill_to_exact_seconds": (exact - t_kill).as_secs_f64(),
                "fib_count_at_kill": kept,
                "fib_count_1s_after_kill": kept_1s,
                "fib_count_after": g.count,
                "withdrawn": withdrawn,
                "moved": moved.len(),
                "load1": load_before,
            }),
        }
    };
    inj.close();
    dut.stop();
    drop(fib);
    drop(lab);
    Ok(out)
}

/// Sets the interface `name` of this thread's namespace down (IFF_UP off,
/// SIOCSIFFLAGS) and returns the instant just before, with how long the
/// call took (an `ip link set down` would add a process start).
fn set_down(name: &str) -> Result<(Instant, f64)> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        bail!("interface name {name:?} too long");
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: valid fd and ifreq for these two requests.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            bail!("SIOCGIFFLAGS {name}: {}", std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        let t0 = Instant::now();
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            bail!("SIOCSIFFLAGS {name}: {}", std::io::Error::last_os_error());
        }
        Ok((t0, t0.elapsed().as_secs_f64()))
    }
}

/// `table` as the peer holds it after the crash: (prefixes kept as they
/// were, prefixes moved to the second next hop); every tenth prefix is in
/// neither (withdrawn).
pub fn split(table: &Table) -> (Table, Table) {
    let (mut keep, mut moved) = (Table::default(), Table::default());
    for (i, p) in table.prefixes.iter().enumerate() {
        let t = match i % 10 {
            0 => continue,
            5 => &mut moved,
            _ => &mut keep,
        };
        t.prefixes.push(*p);
        t.attr_of.push(table.attr_of[i]);
    }
    keep.attrs = table.attrs.clone();
    moved.attrs = table.attrs.clone();
    (keep, moved)
}

#[cfg(test)]
mod tests {
    use super::super::table::synthetic;
    use super::*;

    #[test]
    fn after_the_crash_a_tenth_is_withdrawn_and_a_tenth_moved() {
        let t = synthetic(1000, false, 7);
        let (keep, moved) = split(&t);
        assert_eq!((keep.len(), moved.len()), (800, 100));
        assert_eq!(moved.prefixes[0], t.prefixes[5]);
        assert!(!keep.prefixes.contains(&t.prefixes[0]));
        // Each keeps its own attribute set.
        assert_eq!(keep.attr_of[0], t.attr_of[1]);
        let (a, b) = (ip("10.0.0.11"), ip("10.0.0.111"));
        let mut want = via(&keep.prefixes, a);
        want.extend(via(&moved.prefixes, b));
        assert_eq!(want.len(), 900);
    }

    #[test]
    fn failover_layouts_set_hold_time_and_graceful_restart() {
        let l = layout(vec![(ip("10.0.0.11"), 65001)], true);
        let p = super::super::dut::petreld_toml(&l, "/s");
        assert!(
            p.contains("graceful_restart = { restart_time = 30 }"),
            "{p}"
        );
        assert!(p.contains("hold_time = 9"), "{p}");
        let b = super::super::dut::bird_conf(&l);
        assert!(b.contains("graceful restart wait 30;"), "{b}");
        assert!(b.contains("merge paths off; graceful restart on; }"), "{b}");
        assert!(
            b.contains(
                "hold time 9; check link on; graceful restart on; graceful restart time 30;"
            ),
            "{b}"
        );
        let f = super::super::dut::frr_conf(&l);
        assert!(
            f.contains(" bgp graceful-restart preserve-fw-state\n"),
            "{f}"
        );
        assert!(f.contains(" neighbor 10.0.0.11 timers 3 9\n"), "{f}");
        assert!(!p.contains("10.1.0.2") && !b.contains("protocol bgp mon"));
    }
}
