//! The process figures Prometheus client libraries export, read from `/proc/self`.

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Process {
    pub rss_bytes: u64,
    pub vsize_bytes: u64,
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// User + system time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    /// Virtual memory, bytes.
    pub vsize: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat` (the command name may contain spaces and parentheses: the
/// fields start after its last `)`).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts with field 3 (state); field n is at index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn read() -> Option<Process> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // SAFETY: sysconf and getrlimit have no preconditions; `limit` is a valid out pointer.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max = (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0)
            .then_some(limit.rlim_cur as u64);
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
            max,
        )
    };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)? as f64;
    let page = u64::try_from(page).ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    Some(Process {
        rss_bytes: stat.rss_pages * page,
        vsize_bytes: stat.vsize,
        cpu_seconds: stat.cpu_ticks as f64 / ticks,
        start_time_seconds: btime as f64 + stat.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}
