//! Daemons started with stdin null and output to a log file, and wait loops
//! with deadlines that notice a dead daemon.

use super::netns::{kill, Lab, Netns};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails (not a timing
/// assertion: only a guard against hanging). `PETREL_LAB_DEADLINE` seconds
/// overrides it.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn deadline() -> Duration {
    std::env::var("PETREL_LAB_DEADLINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEADLINE)
}

/// One process running inside a namespace, killed on drop.
pub struct Daemon {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args` in `ns` with `env`, stdin null, stdout and
    /// stderr appended to `log`. `name` labels errors.
    pub fn spawn(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        log: &Path,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open log {}", log.display()))?;
        let child = ns
            .command(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name} ({program})"))?;
        let d = Daemon {
            name: name.to_string(),
            pid: child.id(),
            child: Mutex::new(child),
            log: log.to_path_buf(),
        };
        lab.register(&d);
        Ok(d)
    }

    /// The process id (`ip netns exec` execs into the program).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The label given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process still runs (reaps it if it exited).
    pub fn alive(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGSTOP: the process stays, silent, its sockets open (a hung node).
    pub fn pause(&self) {
        kill(self.pid, libc::SIGSTOP);
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        kill(self.pid, libc::SIGCONT);
    }

    /// SIGKILL, and reap.
    pub fn kill9(&self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM, wait for the exit (SIGKILL at the deadline).
    pub fn stop(&self) -> Result<()> {
        kill(self.pid, libc::SIGTERM);
        let end = Instant::now() + deadline();
        while Instant::now() < end {
            if !self.alive() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        Err(anyhow!(
            "{} ignored SIGTERM; killed. Log:\n{}",
            self.name,
            self.log_tail(40)
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            self.kill9();
        }
    }
}

/// Polls `f` until it returns `Ok(Some(v))`. Fails when the deadline
/// passes, or at once when one of `daemons` dies; the error holds the last
/// error of `f` and the tail of each daemon's log.
pub fn wait_until<T>(
    what: &str,
    daemons: &[&Daemon],
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    let mut pause = Duration::from_millis(10);
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        let dead = daemons.iter().find(|d| !d.alive());
        let expired = start.elapsed() > deadline();
        if dead.is_some() || expired {
            let mut msg = match dead {
                Some(d) => format!("waiting for {what}: {} (pid {}) died", d.name, d.pid),
                None => format!("waiting for {what}: no success within {:?}", deadline()),
            };
            if let Some(e) = last_err {
                msg += &format!("\nlast error: {e:#}");
            }
            for d in daemons {
                msg += &format!(
                    "\n----- {} log ({}) -----\n{}",
                    d.name,
                    d.log.display(),
                    d.log_tail(60)
                );
            }
            return Err(anyhow!(msg));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
