use std::fmt;
use std::io;

/// Everything that can go wrong in the packet plumbing.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An instance name that cannot tag a rule (allowed: 1-64 of `[A-Za-z0-9_.-]`).
    InvalidInstance(String),
    /// A helper program (`iptables`, `ip`) could not be started (usually: not installed).
    Spawn {
        /// The program.
        program: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// A helper program ran and failed.
    Command {
        /// The full command line.
        command: String,
        /// Its exit status (`None` when killed by a signal).
        status: Option<i32>,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The NFQUEUE netlink socket failed (open, bind, recv or verdict).
    Queue(io::Error),
    /// A queued packet is not an IPv4 UDP/TCP packet we can parse.
    Parse(String),
    /// A network device does not exist in this namespace.
    NoSuchDevice(String),
    /// A system call or file access failed.
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInstance(s) => write!(f, "invalid instance name {s:?}"),
            Error::Spawn { program, source } => write!(f, "cannot run {program}: {source}"),
            Error::Command {
                command,
                status,
                stderr,
            } => write!(
                f,
                "`{command}` failed ({}): {}",
                status.map_or("signal".to_string(), |s| format!("exit {s}")),
                stderr.trim()
            ),
            Error::Queue(e) => write!(f, "nfqueue: {e}"),
            Error::Parse(s) => write!(f, "unparsable packet: {s}"),
            Error::NoSuchDevice(d) => write!(f, "no such device {d:?}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            Error::Queue(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `program args...`, returning stdout, or [`Error::Command`] with stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_in(None, program, args)
}

/// Like [`run`], but the child first enters the network namespace `netns` (an open
/// `/proc/.../ns/net` file), whatever namespace the calling thread is in.
pub(crate) fn run_in(
    netns: Option<&std::fs::File>,
    program: &str,
    args: &[&str],
) -> Result<String, Error> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if let Some(ns) = netns {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; `fd` stays open in the child until exec (the parent
        // owns it for longer than this call).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: program.to_string(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
