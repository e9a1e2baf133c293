//! What /proc says about the processes under test and the machine: memory, CPU time per
//! thread, how busy the machine is, and how many files a process may open.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A process's resident memory, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: every resident page, KiB.
    pub rss_kib: u64,
    /// `RssAnon`: the heap, stacks and other anonymous pages, KiB (no code, no shared files).
    pub anon_kib: u64,
    pub threads: u64,
}

/// The process's memory now; `None` once it has gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, anon_kib: field("RssAnon:")?, threads: field("Threads:")? })
}

/// Samples the process's memory every `every` for `window` and returns the median sample by
/// RSS, so one sample taken mid-allocation does not decide the figure.
pub fn settled_memory(pid: u32, window: Duration, every: Duration) -> Option<Memory> {
    let until = Instant::now() + window;
    let mut samples = Vec::new();
    loop {
        samples.extend(memory(pid));
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(every);
    }
    samples.sort_by_key(|m| m.rss_kib);
    samples.get(samples.len() / 2).copied()
}

/// Descriptors the process holds.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// This process's open-files limits (soft, hard).
pub fn open_files_limit() -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open-files line")?;
    let parse = |v: &str| if v == "unlimited" { Ok(u64::MAX) } else { v.parse::<u64>() };
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    match fields.as_slice() {
        [soft, hard, ..] => Ok((parse(soft)?, parse(hard)?)),
        _ => bail!("cannot parse {line:?}"),
    }
}

/// Raises this process's soft open-files limit to the hard one (with prlimit(1): the crate
/// forbids `unsafe`, so no setrlimit), so that it and the servers it starts, which inherit the
/// limit, may hold as many sockets as the machine allows. Returns the soft limit after.
pub fn raise_open_files() -> anyhow::Result<u64> {
    let (soft, hard) = open_files_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .context("cannot run prlimit to raise the open-files soft limit")?;
    let (soft, _) = open_files_limit()?;
    if !status.success() {
        eprintln!("authchat-bench: prlimit could not raise the open-files soft limit; it stays {soft}");
    }
    Ok(soft)
}

/// Fails unless this process may hold `sockets` more descriptors than it holds now.
pub fn ensure_room_for(sockets: usize) -> anyhow::Result<()> {
    /// Descriptors besides the sockets: runtime, listeners, stdio, log files, /proc reads.
    const SLACK: u64 = 128;
    let (soft, hard) = open_files_limit()?;
    let needed = open_fds(std::process::id()).unwrap_or(0) + sockets as u64 + SLACK;
    if soft < needed {
        bail!(
            "{sockets} sockets need about {needed} open files and this process may open {soft} (hard limit {hard}); \
             at most about {} fit here",
            soft.saturating_sub(needed - sockets as u64)
        );
    }
    Ok(())
}

/// The whole machine's (busy, total) CPU time in ms, from the first line of /proc/stat (user
/// nice system idle iowait irq softirq steal, in 10 ms ticks); idle and iowait are not busy.
pub fn machine_cpu_ms() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(((total - idle) as f64 * 10.0, total as f64 * 10.0))
}

/// How busy the machine is over `window`, as a fraction of all its cores.
pub fn machine_busy(window: Duration) -> Option<f64> {
    let (busy0, total0) = machine_cpu_ms()?;
    std::thread::sleep(window);
    let (busy1, total1) = machine_cpu_ms()?;
    (total1 > total0).then(|| (busy1 - busy0) / (total1 - total0))
}

/// Waits, at most `limit`, for a second in which the machine is below `below` busy (a
/// fraction of all cores), so a run does not start in another process's burst. Returns how
/// busy the last second was.
pub fn wait_until_quiet(below: f64, limit: Duration) -> Option<f64> {
    let give_up = Instant::now() + limit;
    loop {
        let busy = machine_busy(Duration::from_secs(1))?;
        if busy < below || Instant::now() >= give_up {
            return Some(busy);
        }
    }
}

/// On-CPU nanoseconds and name of every thread of some processes, by (pid, tid), and the whole
/// machine's CPU time, to see what other processes took.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    pub threads: BTreeMap<(u32, u32), (String, u64)>,
    pub machine: Option<(f64, f64)>,
}

/// Reads /proc/PID/task/*/schedstat (its first field is the time on CPU, ns) and comm.
pub fn cpu_snapshot(pids: &[u32]) -> CpuSnapshot {
    let mut threads = BTreeMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let dir = task.path();
            let ns = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
            if let Some(ns) = ns {
                threads.insert((*pid, tid), (name, ns));
            }
        }
    }
    CpuSnapshot { threads, machine: machine_cpu_ms() }
}

/// One thread's CPU time between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    pub pid: u32,
    pub name: String,
    pub ms: f64,
}

/// CPU time each thread used between two snapshots, largest first, and the machine's busy and
/// total time (ms) over the same span.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub threads: Vec<ThreadCpu>,
    pub machine: Option<(f64, f64)>,
}

pub fn cpu_used(before: &CpuSnapshot, after: &CpuSnapshot) -> CpuUse {
    let mut threads: Vec<ThreadCpu> = after
        .threads
        .iter()
        .map(|(key, (name, ns))| {
            let was = before.threads.get(key).map_or(0, |(_, ns)| *ns);
            ThreadCpu { pid: key.0, name: name.clone(), ms: ns.saturating_sub(was) as f64 / 1e6 }
        })
        .collect();
    threads.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let machine = before.machine.zip(after.machine).map(|((b0, t0), (b1, t1))| (b1 - b0, t1 - t0));
    CpuUse { threads, machine }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_threads_and_an_open_files_limit() {
        let me = memory(std::process::id()).expect("/proc/self/status");
        assert!(me.rss_kib > 0 && me.threads >= 1);
        let (soft, hard) = open_files_limit().unwrap();
        assert!(soft <= hard);
        assert!(open_fds(std::process::id()).unwrap() >= 3);
    }

    #[test]
    fn cpu_time_of_this_thread_is_seen() {
        let me = [std::process::id()];
        let before = cpu_snapshot(&me);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let used = cpu_used(&before, &cpu_snapshot(&me)).threads;
        assert!(used.first().is_some_and(|t| t.ms > 5.0), "{used:?}");
    }
}
