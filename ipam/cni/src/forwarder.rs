//! What runs when a runtime execs `petrel-ipam`: answer VERSION and
//! malformed invocations here, forward the rest to petreld's IPAM service,
//! and when no service accepts the connection, exec `petrel-ipam-direct`
//! (the datastore half, installed beside this binary) with the same
//! environment and the same stdin, so that its output and exit status are
//! the plugin's.
//!
//! Only a failure to *connect* leads to the direct plugin (see
//! [`crate::client`]): once the service took a request, any failure is a
//! CNI error and never a second attempt.
//!
//! Logs go to stderr: errors always (`PETREL_LOG=off` silences them), the
//! route taken when `PETREL_LOG` names debug or trace.

use crate::client::{self, Forward};
use crate::conf::parse;
use crate::env::Env;
use crate::error::{code, CniError};
use crate::output::{output, print, version_result};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The datastore half's binary name, looked for beside this one.
pub const DIRECT_BINARY: &str = "petrel-ipam-direct";

/// Set in the direct plugin's environment. A forwarder that finds it was
/// exec'd as the direct plugin (a copy of itself installed under that
/// name) and stops, instead of exec'ing itself forever.
pub const EXEC_MARK: &str = "PETREL_IPAM_FROM_FORWARDER";

/// Where one invocation goes.
#[derive(Debug)]
pub enum Route {
    /// Answered here: VERSION, and any command or config that every path
    /// would refuse the same way before touching anything.
    Answer(Result<Option<Value>, CniError>),
    /// To the service listening at this socket, waiting this long for its
    /// answer once it accepted.
    Service(PathBuf, Duration),
    /// The config turns forwarding off (`"daemon_socket": ""`): straight to
    /// the direct plugin.
    Direct,
}

/// Decide the route from the environment and the config alone (no I/O).
/// The checks are the ones the direct plugin and the service make first
/// (`CNI_COMMAND`, then the config), so the errors are the same.
pub fn route(env: &Env, stdin: &[u8]) -> Route {
    let command = match env.command() {
        Ok(c) => c,
        Err(e) => return Route::Answer(Err(e)),
    };
    if command == "VERSION" {
        return Route::Answer(Ok(Some(version_result())));
    }
    let ipam = match parse(stdin) {
        Ok((_, ipam)) => ipam,
        Err(e) => return Route::Answer(Err(e)),
    };
    match ipam.daemon_socket() {
        // The wire format carries the config as a JSON string.
        Some(path) if std::str::from_utf8(stdin).is_ok() => {
            Route::Service(path, ipam.daemon_timeout())
        }
        _ => Route::Direct,
    }
}

/// The plugin's `main`.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(code::IO_FAILURE, "cannot read stdin", e.to_string());
        return fail(err, &stdin);
    }
    if std::env::var_os(EXEC_MARK).is_some() {
        let exe = std::env::current_exe().unwrap_or_default();
        let err = CniError::new(
            code::IO_FAILURE,
            format!(
                "{} is the petrel-ipam forwarder, not {DIRECT_BINARY}",
                exe.display()
            ),
            format!(
                "install {DIRECT_BINARY} from petrel's build (target/release/{DIRECT_BINARY}) \
                 beside petrel-ipam"
            ),
        );
        return fail(err, &stdin);
    }
    match route(&env, &stdin) {
        Route::Answer(Err(e)) => fail(e, &stdin),
        Route::Answer(ok) => print(output(&ok, &stdin)),
        Route::Direct => {
            debug("forwarding is off in the config: running the direct plugin");
            exec_direct(&env, &stdin, None)
        }
        Route::Service(path, timeout) => {
            // from_utf8 cannot fail here: route checked it.
            let text = String::from_utf8_lossy(&stdin);
            match client::forward(&path, &env, &text, timeout) {
                Forward::Answered(reply) => print((reply.stdout, reply.exit)),
                Forward::Failed(e) => fail(e, &stdin),
                Forward::NoService(e) => {
                    debug(&format!(
                        "no IPAM service at {} ({e}): running the direct plugin",
                        path.display()
                    ));
                    exec_direct(&env, &stdin, Some((&path, e)))
                }
            }
        }
    }
}

/// Replace this process with the direct plugin, with the same environment
/// and `stdin` as its standard input. Returns only if that fails: with a
/// CNI error saying what is missing. `no_service` is why the service was
/// not used, if forwarding was on.
fn exec_direct(env: &Env, stdin: &[u8], no_service: Option<(&Path, std::io::Error)>) -> ExitCode {
    let code = match no_service {
        // petreld not (yet) running is the transient case.
        Some(_) => code::TRY_AGAIN_LATER,
        None => code::IO_FAILURE,
    };
    let why = match &no_service {
        Some((path, e)) => format!("no petrel IPAM service at {} ({e})", path.display()),
        None => "forwarding is off (\"daemon_socket\": \"\")".to_string(),
    };
    let looked = places(env);
    let Some(bin) = looked
        .iter()
        .map(|d| d.join(DIRECT_BINARY))
        .find(|p| p.is_file())
    else {
        let dirs: Vec<String> = looked.iter().map(|d| d.display().to_string()).collect();
        return fail(
            CniError::new(
                code,
                format!("{why}, and no {DIRECT_BINARY} to reach the datastore directly"),
                format!(
                    "looked in {}; install {DIRECT_BINARY} beside petrel-ipam, or start petreld \
                     (its IPAM service answers at ipam.daemon_socket)",
                    if dirs.is_empty() {
                        "no directory".to_string()
                    } else {
                        dirs.join(", ")
                    }
                ),
            ),
            stdin,
        );
    };
    let input = match memfd_holding(stdin) {
        Ok(f) => f,
        Err(e) => {
            let err = CniError::new(
                code::IO_FAILURE,
                format!(
                    "{why}, and the config cannot be handed to {}",
                    bin.display()
                ),
                format!("memfd_create: {e}"),
            );
            return fail(err, stdin);
        }
    };
    // Only returns on failure.
    let e = Command::new(&bin).env(EXEC_MARK, "1").stdin(input).exec();
    fail(
        CniError::new(
            code,
            format!("{why}, and {} cannot be run", bin.display()),
            e.to_string(),
        ),
        stdin,
    )
}

/// Where the direct plugin may be: beside this binary (after symlinks),
/// then in the runtime's plugin directories.
fn places(env: &Env) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    for d in std::env::split_paths(OsStr::new(env.path.as_deref().unwrap_or(""))) {
        if !d.as_os_str().is_empty() && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// An in-memory file holding `bytes`, positioned at its start: the direct
/// plugin's stdin. Unlike a pipe it cannot fill up before anyone reads it.
fn memfd_holding(bytes: &[u8]) -> std::io::Result<File> {
    // SAFETY: a constant NUL-terminated name; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"petrel-ipam-stdin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

fn fail(e: CniError, stdin: &[u8]) -> ExitCode {
    if std::env::var("PETREL_LOG").map_or(true, |v| v != "off") {
        eprintln!("petrel-ipam: {e}");
    }
    print(output(&Err(e), stdin))
}

fn debug(msg: &str) {
    if std::env::var("PETREL_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace")) {
        eprintln!("petrel-ipam: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> Env {
        Env {
            command: Some(command.into()),
            container_id: Some("c".into()),
            ifname: Some("eth0".into()),
            ..Default::default()
        }
    }

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"petrel-ipam","datastore":{"path":"/x"}}}"#;

    #[test]
    fn version_and_bad_invocations_are_answered_here() {
        let Route::Answer(Ok(Some(v))) = route(&env("VERSION"), b"") else {
            panic!("VERSION is answered here")
        };
        assert_eq!(v["cniVersion"], "1.1.0");
        for (env, stdin, code) in [
            (Env::default(), CONF.as_bytes(), code::INVALID_ENV),
            (env("ATTACH"), CONF.as_bytes(), code::INVALID_ENV),
            (env("ADD"), &b"{\"cniVersion\": "[..], code::DECODE_FAILURE),
            (
                env("ADD"),
                br#"{"cniVersion":"1.1.0","name":"n"}"#,
                code::INVALID_CONFIG,
            ),
        ] {
            match route(&env, stdin) {
                Route::Answer(Err(e)) => assert_eq!(e.code, code, "{e:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_rest_goes_to_the_service_unless_the_config_turns_it_off() {
        match route(&env("ADD"), CONF.as_bytes()) {
            Route::Service(p, t) => {
                assert_eq!(p, Path::new(crate::conf::DEFAULT_DAEMON_SOCKET));
                assert_eq!(t, crate::conf::DEFAULT_DAEMON_TIMEOUT);
            }
            other => panic!("{other:?}"),
        }
        let off = CONF.replace(r#""datastore""#, r#""daemon_socket":"","datastore""#);
        assert!(matches!(route(&env("DEL"), off.as_bytes()), Route::Direct));
    }

    #[test]
    fn the_direct_plugin_reads_the_config_from_the_start() {
        let mut f = memfd_holding(CONF.as_bytes()).unwrap();
        let mut back = String::new();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, CONF);
    }
}
