//! Child processes of the harness: started in their own process group, their output forwarded
//! line by line, and signalled (or killed with their whole group) when no longer wanted.
//!
//! Signals go through the `kill` command rather than a libc binding: the harness sends a handful
//! of them, and this keeps the crate free of `unsafe` and of new dependencies.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Environment variables, sorted by name.
pub type EnvMap = BTreeMap<String, String>;

/// The signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: "please stop" (what ECS sends first when a task is stopped).
    Term,
    /// SIGKILL: stop now.
    Kill,
    /// SIGSTOP: freeze (a process that stops answering without closing its connections).
    Stop,
    /// SIGCONT: carry on after SIGSTOP.
    Continue,
}

impl Signal {
    fn kill_flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
            Signal::Stop => "-STOP",
            Signal::Continue => "-CONT",
        }
    }

    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
            Signal::Stop => 19,
            Signal::Continue => 18,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Stop => "SIGSTOP",
            Signal::Continue => "SIGCONT",
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
/// so a test run with `--nocapture` (or the local run) shows what each process logged; with
/// `keep`, the lines are also kept there.
pub fn forward_output(child: &mut Child, prefix: &str, keep: Option<&OutputTail>) {
    for stream in [child.stdout.take().map(Stream::Out), child.stderr.take().map(Stream::Err)].into_iter().flatten() {
        spawn_line_copier(stream, prefix.to_owned(), LineCopy { forward: true, keep: keep.cloned() });
    }
}

/// The last lines a process printed.
#[derive(Debug, Clone)]
pub struct OutputTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
}

impl Default for OutputTail {
    /// Enough for an error message.
    fn default() -> Self {
        Self::keeping(40)
    }
}

impl OutputTail {
    /// Keeps the last `lines` lines.
    pub fn keeping(lines: usize) -> Self {
        Self { lines: Arc::default(), keep: lines.max(1) }
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == self.keep {
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
    for stream in [child.stdout.take().map(Stream::Out), child.stderr.take().map(Stream::Err)].into_iter().flatten() {
        spawn_line_copier(stream, prefix.to_owned(), LineCopy { forward: false, keep: Some(tail.clone()) });
    }
}

/// One of a child's two output streams.
enum Stream {
    Out(tokio::process::ChildStdout),
    Err(tokio::process::ChildStderr),
}

/// Where a copied line goes.
struct LineCopy {
    /// To our stderr, prefixed.
    forward: bool,
    keep: Option<OutputTail>,
}

fn spawn_line_copier(stream: Stream, prefix: String, copy: LineCopy) {
    match stream {
        Stream::Out(out) => copy_lines(out, prefix, copy),
        Stream::Err(err) => copy_lines(err, prefix, copy),
    }
}

fn copy_lines<R>(stream: R, prefix: String, copy: LineCopy)
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
                    if copy.forward {
                        eprintln!("[{prefix}] {line}");
                    } else {
                        tracing::debug!(target: "sluice_local::child", "[{prefix}] {line}");
                    }
                    if let Some(keep) = &copy.keep {
                        keep.push(line.to_owned());
                    }
                }
            }
        }
    });
}
