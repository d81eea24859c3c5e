//! moto's server, the AWS stand-in: started on 127.0.0.1 from the project's venv with IAM enforced
//! (`local/moto/server.py`), waited for until it answers, and killed (with its process group) when
//! the [`MotoServer`] is dropped.
//!
//! Every request must be signed by a known IAM user and allowed by that user's policies, as in
//! AWS. The access key `test` / `test` belongs to an administrator (the harness's own calls);
//! [`crate::iam`] creates the users the programs run as. Each server appends its IAM decisions to
//! a file under [`IAM_AUDIT_DIR`], which the IAM coverage check reads.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::{Instant, sleep, timeout};

use crate::process::{self, OutputTail, Signal};

/// Where each moto server writes the IAM decisions it made (JSON Lines, one file per server).
pub const IAM_AUDIT_DIR: &str = "target/iam-audit";

/// How long moto gets to start answering.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `moto_server`, listening on 127.0.0.1 only.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    pid: Option<u32>,
    port: u16,
    output: OutputTail,
}

impl MotoServer {
    /// Starts moto's server with IAM enforced (`<venv>/bin/python local/moto/server.py`) on
    /// `port` (a free one when `None`) and waits until it answers HTTP requests. Fails if the port
    /// is taken, moto exits, or it does not answer within 20 s; the error then holds the end of
    /// moto's output.
    pub async fn start(port: Option<u16>) -> Result<Self> {
        let python = crate::repo::venv_tool("python")?;
        let launcher = crate::repo::in_repo("local/moto/server.py");
        let port = match port {
            Some(port) => {
                ensure_port_free(port)?;
                port
            }
            None => free_port()?,
        };
        let audit_dir = crate::repo::in_repo(IAM_AUDIT_DIR);
        std::fs::create_dir_all(&audit_dir).with_context(|| format!("cannot create {}", audit_dir.display()))?;
        let audit = audit_dir.join(format!("{}-{port}.jsonl", std::process::id()));
        let mut command = process::new_group_command(&python);
        command.arg(&launcher).args(["-H", "127.0.0.1", "-p", &port.to_string()]).env("SLUICE_IAM_AUDIT", &audit);
        let mut child = command.spawn().with_context(|| format!("cannot start {}", launcher.display()))?;
        let output = OutputTail::default();
        process::capture_output(&mut child, "moto", &output);
        let pid = child.id();
        let mut server = Self { child, pid, port, output };
        server.wait_until_ready().await?;
        tracing::info!(endpoint = %server.endpoint(), "moto is up");
        Ok(server)
    }

    /// The endpoint URL for SDK clients: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes moto (SIGSTOP): connections stay open and nothing answers, as with an endpoint
    /// that hangs.
    pub fn freeze(&self) -> bool {
        self.pid.is_some_and(|pid| process::signal_process_group(pid, Signal::Stop))
    }

    /// Lets a frozen moto carry on (SIGCONT).
    pub fn thaw(&self) -> bool {
        self.pid.is_some_and(|pid| process::signal_process_group(pid, Signal::Continue))
    }

    /// The last lines moto printed (its request log), for diagnosing a failed test.
    pub fn output_tail(&self) -> String {
        self.output.text()
    }

    /// Stops moto and waits until it has exited.
    pub async fn stop(mut self) {
        self.kill_group();
        // `wait` after SIGKILL returns at once; the error case (already reaped) needs nothing.
        let _ = self.child.wait().await;
    }

    async fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot check on moto's server")? {
                bail!("moto's server exited during start-up ({status}); its last output:\n{}", self.output.text());
            }
            if answers_http(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill_group();
                bail!(
                    "moto's server did not answer on 127.0.0.1:{} within {} s; its last output:\n{}",
                    self.port,
                    STARTUP_TIMEOUT.as_secs(),
                    self.output.text()
                );
            }
            sleep(Duration::from_millis(150)).await;
        }
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.pid.take() {
            process::signal_process_group(pid, Signal::Kill);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr().context("cannot read the bound address")?.port())
}

fn ensure_port_free(port: u16) -> Result<()> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
        format!(
            "port {port} on 127.0.0.1 is already in use (another moto_server or sluice-local?): \
             stop that process or choose another port"
        )
    })?;
    Ok(())
}

/// Whether something on the port answers a plain HTTP GET with a status line.
async fn answers_http(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        stream.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/"))
    };
    matches!(timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}
