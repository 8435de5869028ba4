//! Test helpers: a real `redis-server` on a free port, and gateway processes.
//!
//! Every test that needs Redis starts its own server (never the machine's 6379) and the server
//! stops when the handle drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl RedisServer {
    /// Starts a throwaway server (no persistence) and waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port())
    }

    /// Starts a throwaway server on `port` (to restart one where a client expects it).
    pub fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::start_with(port, &[])
    }

    /// Starts a server on `port` whose data lives in `dir` (`SAVE` writes it there; a server
    /// started again on the same `dir` loads it): a restart that keeps the data.
    pub fn start_in(port: u16, dir: &std::path::Path) -> anyhow::Result<Self> {
        let dir = dir.to_string_lossy().into_owned();
        Self::start_with(port, &["--dir", &dir, "--dbfilename", "dump.rdb"])
    }

    fn start_with(port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start redis-server (is it installed?): {e}"))?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("redis-server did not start on port {port}")
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open and every command hangs, as with a
    /// stalled Redis. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill {sig} failed");
        Ok(())
    }

    /// Runs a command through `redis-cli` (e.g. `FLUSHALL`).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory, in KiB (`VmRSS` of `/proc/PID/status`; 0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The gateway binary built by cargo for this profile.
pub fn gateway_bin() -> PathBuf {
    if let Ok(p) = std::env::var("UNDERSTUDY_BIN") {
        return PathBuf::from(p);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    target.join(profile).join("understudy-gateway")
}

/// A gateway child process, killed on drop.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Gateway {
    /// Starts the gateway binary found by [`gateway_bin`].
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_bin(&gateway_bin(), args).await
    }

    /// Starts `bin` with `args` (plus `--listen`) and waits for `/readyz`.
    pub async fn start_bin(bin: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(Command::new(bin), bin, args).await
    }

    /// Starts the gateway binary with its open-file limit (soft and hard) set to `open_files`.
    pub async fn start_with_open_files(open_files: u64, args: &[&str]) -> anyhow::Result<Self> {
        let bin = gateway_bin();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(&bin);
        Self::spawn(cmd, &bin, args).await
    }

    async fn spawn(mut cmd: Command, bin: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = cmd
            .arg("--listen")
            .arg(&listen)
            .args(["--drain-grace", "0s"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let gw = Gateway {
            child,
            base: format!("http://{listen}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", gw.base)).send().await
                && r.status().is_success()
            {
                return Ok(gw);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("gateway did not become ready at {}", gw.base)
    }
}

impl Gateway {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An SSE reader over a streaming response: yields `(id, event, data)` per event, and keeps the
/// comment lines it skipped.
pub struct Sse {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    /// Comment lines seen so far (without the leading `:`).
    pub comments: Vec<String>,
}

impl Sse {
    /// Reads `resp`'s body as SSE.
    pub fn new(resp: reqwest::Response) -> Sse {
        use futures::StreamExt;
        Sse {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next event within `limit`; `None` at the end of the stream or on timeout.
    pub async fn next(&mut self, limit: Duration) -> Option<(Option<String>, String, String)> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                let mut any = false;
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        self.comments.push(c.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some((id, event, data));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    /// Whether the stream ends within `limit`.
    pub async fn ends(&mut self, limit: Duration) -> bool {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }
}
