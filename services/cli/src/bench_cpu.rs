//! CPU time per phase of the bench, from `/proc`: this process (the in-process sequencer
//! nodes, the bench's clients and its subscriber together) and the PostgreSQL server (every
//! backend and auxiliary process `pg_stat_activity` lists, and the postmaster), so the cost
//! per event can be split between the two. PostgreSQL is measured only when it runs on this
//! machine (its processes are visible here).

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use anyhow::Result;
use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use syncline_coordination::db::{self, SessionKind};
use syncline_coordination::DbConfig;

/// CPU used over a phase, in µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// This process.
    pub syncline_us: f64,
    /// The PostgreSQL server (`None`: not on this machine).
    pub postgres_us: Option<f64>,
}

impl Cpu {
    /// "syncline X µs, PostgreSQL Y µs" per event for `events` events.
    pub fn per_event(&self, events: u64) -> String {
        let n = events.max(1) as f64;
        let pg = self.postgres_us.map_or("n/a".to_string(), |p| format!("{:.0}", p / n));
        format!("{:.0} / {pg}", self.syncline_us / n)
    }
}

/// A running measurement: started with [`Meter::start`], read with [`Meter::stop`].
pub struct Meter {
    cfg: DbConfig,
    own: u64,
    postgres: Option<HashMap<i32, u64>>,
}

impl Meter {
    /// Take the starting figures.
    pub async fn start(url: &str) -> Result<Meter> {
        let cfg = DbConfig::new(url);
        let postgres = match server_pids(&cfg).await? {
            pids if pids.is_empty() => None,
            pids => Some(pids.into_iter().filter_map(|p| ticks(p).map(|t| (p, t))).collect()),
        };
        Ok(Meter { cfg, own: ticks_self(), postgres })
    }

    /// CPU since [`Meter::start`]. Server processes that started meanwhile count in full;
    /// those that ended meanwhile are lost (the phases keep their sessions open throughout).
    pub async fn stop(self) -> Result<Cpu> {
        let syncline_us = to_us(ticks_self().saturating_sub(self.own));
        let postgres_us = match self.postgres {
            None => None,
            Some(before) => {
                let now = server_pids(&self.cfg).await?;
                let pids: BTreeSet<i32> = now.into_iter().chain(before.keys().copied()).collect();
                let used: u64 = pids
                    .into_iter()
                    .filter_map(|p| ticks(p).map(|t| t.saturating_sub(before.get(&p).copied().unwrap_or(0))))
                    .sum();
                Some(to_us(used))
            }
        };
        Ok(Cpu { syncline_us, postgres_us })
    }
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The server's processes that are visible on this machine: every process in
/// `pg_stat_activity` (backends, WAL writer, checkpointer, …) and their parent, the
/// postmaster. Empty when the server runs elsewhere.
async fn server_pids(cfg: &DbConfig) -> Result<Vec<i32>> {
    let mut c = db::connect(cfg, SessionKind::Pooled).await?;
    let rows: Vec<Pid> =
        diesel::sql_query("select pid from pg_stat_activity where pid is not null").load(&mut c).await?;
    let mut pids: Vec<i32> = rows.into_iter().map(|r| r.pid).filter(|p| is_postgres(*p)).collect();
    if let Some(parent) = <[i32]>::first(&pids).and_then(|p| parent(*p)).filter(|p| is_postgres(*p)) {
        pids.push(parent);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn is_postgres(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent(pid: i32) -> Option<i32> {
    // Field 4 of stat (ppid) is the second after the command name.
    stat_fields(&pid.to_string())?.get(1)?.parse().ok()
}

/// User plus system CPU of `pid`, in clock ticks.
fn ticks(pid: i32) -> Option<u64> {
    cpu_of(&pid.to_string())
}

fn ticks_self() -> u64 {
    cpu_of("self").unwrap_or(0)
}

fn cpu_of(pid: &str) -> Option<u64> {
    // utime and stime are fields 14 and 15 of stat: the 12th and 13th after the command name.
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn to_us(ticks: u64) -> f64 {
    ticks as f64 * 1e6 / clock_ticks_per_second() as f64
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    #[test]
    fn this_process_is_measured() {
        let before = ticks_self();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(ticks_self() > before, "300 ms of spinning used no CPU");
        assert!(parent(std::process::id() as i32).is_some());
    }
}
