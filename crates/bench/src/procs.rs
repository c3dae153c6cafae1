//! The harness's processes and what it reads of them: servers started as child processes
//! (optionally pinned to a core with `taskset`), their CPU time and peak RSS from `/proc`,
//! and the machine's description.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Linux reports process CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture's user ABI.
const USER_HZ: f64 = 100.0;

/// A server running as a child process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub pid: u32,
    child: tokio::process::Child,
    log: PathBuf,
}

/// How to start a server.
#[derive(Debug)]
pub struct Launch<'a> {
    pub name: &'static str,
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub env: Vec<(String, String)>,
    /// Run on this core only (`taskset -c`), or anywhere.
    pub core: Option<usize>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The address it will listen on, and the path that answers 200 once it does.
    pub addr: SocketAddr,
    pub ready_path: &'a str,
}

impl Server {
    pub async fn start(launch: Launch<'_>) -> anyhow::Result<Self> {
        let log = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        let mut command = match launch.core {
            Some(core) => {
                let mut c = tokio::process::Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(launch.program);
                c
            }
            None => tokio::process::Command::new(launch.program),
        };
        command
            .args(launch.args)
            .envs(launch.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| {
            format!(
                "starting {}{}",
                launch.program.display(),
                if launch.core.is_some() {
                    " under taskset (util-linux; --no-pin runs without it)"
                } else {
                    ""
                }
            )
        })?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = Self {
            name: launch.name,
            addr: launch.addr,
            pid,
            child,
            log: launch.log,
        };
        server.wait_ready(launch.ready_path).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, path: &str) -> anyhow::Result<()> {
        let url = format!("http://{}{path}", self.addr);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before answering; its log:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not answer {url} within 30 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU seconds (user + system, all threads) the server has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmRSS:").map(|k| k * 1024)
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmHWM:").map(|k| k * 1024)
    }

    /// Stop it (SIGKILL; the harness's data is temporary).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU seconds of this process (the load generator) so far.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds("/proc/self/stat")
}

/// `utime + stime` of a `/proc/<pid>/stat` file, in seconds.
fn cpu_seconds(stat_path: &str) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("parsing {stat_path}"))
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces, inside parentheses): state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Pin this process (every thread it has now, and those it starts later) to `core`.
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the load generator; --no-pin skips it")?;
    if !status.success() {
        bail!("taskset could not pin the load generator to core {core} ({status})");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// One line describing the machine: CPU model, cores, memory, OS and kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown OS".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, {os}, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmHWM:").unwrap() > 0);
        assert!(own_cpu_seconds().unwrap() >= 0.0);
        assert!(machine().contains("cores"));
    }
}
