//! Child processes of the harness: started in their own process group, their output forwarded
//! line by line, and signalled (or killed with their whole group) when no longer wanted.
//!
//! Signals go through the `kill` command rather than a libc binding: the harness sends a handful
//! of them, and this keeps the crate free of `unsafe` and of new dependencies.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: "please stop" (what ECS sends first when a task is stopped).
    Term,
    /// SIGKILL: stop now.
    Kill,
}

impl Signal {
    fn kill_flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
        }
    }

    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        })
    }
}

/// Sends `signal` to one process. Returns whether `kill` succeeded (false when the process is gone).
pub fn signal_process(pid: u32, signal: Signal) -> bool {
    run_kill(signal, &pid.to_string())
}

/// Sends `signal` to every process of the group led by `pgid` (a child spawned with
/// [`new_group_command`]). Returns whether `kill` succeeded (false when the group is gone).
pub fn signal_process_group(pgid: u32, signal: Signal) -> bool {
    run_kill(signal, &format!("-{pgid}"))
}

fn run_kill(signal: Signal, target: &str) -> bool {
    // Blocking, but `kill` returns at once; this also runs from `Drop`, where nothing can be awaited.
    std::process::Command::new("kill")
        .args([signal.kill_flag(), "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// A command that starts in its own process group (so the whole group can be killed), is killed
/// if its `Child` is dropped, reads nothing from stdin, and has its output piped for forwarding.
pub fn new_group_command(program: impl Into<OsString>) -> Command {
    let mut command = Command::new(program.into());
    command.process_group(0).kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Gives the child only `PATH`, `HOME` and `env`, the way a Lambda sandbox or a container sees
/// just what its configuration declares (no AWS profile or credentials of the developer leak in).
pub fn set_clean_env<'a>(command: &mut Command, env: impl IntoIterator<Item = (&'a String, &'a String)>) {
    command.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env);
}

/// Forwards the child's stdout and stderr, line by line, to our stderr with `[prefix]` in front,
/// so a test run with `--nocapture` (or the local run) shows what each process logged.
pub fn forward_output(child: &mut Child, prefix: &str) {
    if let Some(stdout) = child.stdout.take() {
        spawn_line_copier(stdout, prefix.to_owned(), None);
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_line_copier(stderr, prefix.to_owned(), None);
    }
}

/// The last lines a process printed, for error messages.
#[derive(Debug, Clone, Default)]
pub struct OutputTail {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl OutputTail {
    const KEEP: usize = 40;

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == Self::KEEP {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The kept lines, oldest first, joined with newlines.
    pub fn text(&self) -> String {
        match self.lines.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }
}

/// Keeps the child's last output lines in `tail` and logs each at debug level under `prefix`.
pub fn capture_output(child: &mut Child, prefix: &str, tail: &OutputTail) {
    if let Some(stdout) = child.stdout.take() {
        spawn_line_copier(stdout, prefix.to_owned(), Some(tail.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_line_copier(stderr, prefix.to_owned(), Some(tail.clone()));
    }
}

fn spawn_line_copier<R>(stream: R, prefix: String, tail: Option<OutputTail>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = line.trim_end_matches(['\n', '\r']);
                    match &tail {
                        Some(tail) => {
                            tracing::debug!(target: "sluice_local::child", "[{prefix}] {line}");
                            tail.push(line.to_owned());
                        }
                        None => eprintln!("[{prefix}] {line}"),
                    }
                }
            }
        }
    });
}
