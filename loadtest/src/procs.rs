//! What a server process tree costs, read from /proc: CPU time (user + system of every
//! process in the tree, plus what their reaped children used) and resident memory.

use std::collections::HashMap;
use std::time::Duration;

/// Fields of /proc/PID/stat after the command name: (ppid, utime+stime+cutime+cstime ticks).
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[1] = ppid (4), f[11..=14] = utime, stime, cutime, cstime (14-17).
    let ppid = f.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += f.get(i)?.parse::<i64>().ok()?.max(0) as u64;
    }
    Some((ppid, ticks))
}

fn all_processes() -> HashMap<u32, (u32, u64)> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(v) = parse_stat(&text) {
                map.insert(pid, v);
            }
        }
    }
    map
}

/// `root` and every process descended from it.
pub fn tree(root: u32) -> Vec<u32> {
    let procs = all_processes();
    descendants(root, &procs.iter().map(|(p, (pp, _))| (*p, *pp)).collect())
}

fn descendants(root: u32, parent_of: &HashMap<u32, u32>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(child, parent)| **parent == p && **child != p)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time used so far by `root` and all its descendants (threads included).
pub fn cpu_time(root: u32) -> Duration {
    let procs = all_processes();
    let parent_of = procs.iter().map(|(p, (pp, _))| (*p, *pp)).collect();
    let ticks: u64 = descendants(root, &parent_of)
        .iter()
        .filter_map(|p| procs.get(p).map(|(_, t)| *t))
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second())
}

/// Resident memory (KiB) of `root` and all its descendants.
pub fn rss_kib(root: u32) -> u64 {
    tree(root)
        .iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            parse_vm_rss(&status)
        })
        .sum()
}

/// Resident memory (KiB) of process `pid` alone (`VmRSS` of /proc/PID/status); 0 if gone.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_vm_rss(&s))
        .unwrap_or(0)
}

/// Open file descriptors of process `pid` (entries of /proc/PID/fd); 0 if gone.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Established TCP connections of process `pid` to `port` (any address), from its socket
/// descriptors and /proc/net/tcp and tcp6: e.g. edgegw's upstream connections to a backend.
pub fn connections_to(pid: u32, port: u16) -> u64 {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap_or_default())
        .map(|table| count_established(&table, port, &inodes))
        .sum()
}

/// Rows of a /proc/net/tcp table in state ESTABLISHED to remote `port` whose inode is one
/// of `inodes`.
fn count_established(table: &str, port: u16, inodes: &std::collections::HashSet<String>) -> u64 {
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&remote) && f[3] == "01" && inodes.contains(f[9])
        })
        .count() as u64
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's open-file limit to at least `want` (the hard limit too when this
/// process may, as root can; else the soft limit up to the hard one); returns the new soft
/// limit. Children started afterwards inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let both = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &both) == 0 {
            return want;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = want.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return old;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "1234 (a b) c) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some((1, 310)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn established_rows_are_counted_by_remote_port_and_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:A1B2 0100007F:24DB 01 00000000:00000000 00:00000000 00000000 0 0 111 1\n\
            1: 0100007F:A1B3 0100007F:24DB 06 00000000:00000000 00:00000000 00000000 0 0 112 1\n\
            2: 0100007F:A1B4 0100007F:24DB 01 00000000:00000000 00:00000000 00000000 0 0 999 1\n\
            3: 0100007F:A1B5 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 113 1\n";
        let inodes = ["111", "112", "113"]
            .map(String::from)
            .into_iter()
            .collect();
        assert_eq!(count_established(table, 0x24DB, &inodes), 1);
        assert_eq!(count_established(table, 0x1F90, &inodes), 1);
        assert_eq!(count_established(table, 1, &inodes), 0);
        assert_eq!(connections_to(u32::MAX, 443), 0);
    }

    #[test]
    fn descendants_follow_the_tree() {
        let parent_of: HashMap<u32, u32> = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1)]
            .into_iter()
            .collect();
        let mut d = descendants(10, &parent_of);
        d.sort();
        assert_eq!(d, vec![10, 11, 12, 13]);
    }

    #[test]
    fn own_process_is_measurable() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        // Burn CPU until the kernel's tick counter shows it (bounded).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time(me) == Duration::ZERO && start.elapsed() < Duration::from_secs(5) {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_time(me) > Duration::ZERO);
        assert!(vm_rss_kib(me) > 0);
        assert!(open_fds(me) >= 3);
        assert_eq!(open_fds(u32::MAX), 0);
        assert_eq!(parse_vm_rss("Name: x\nVmRSS:\t  1234 kB\n"), Some(1234));
    }
}
