//! Progress on a terminal (stderr): bytes done, rate, time left. Nothing
//! when stderr is not a terminal or with `--quiet`, so pipes and logs of
//! backup products stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress { enabled: !quiet && std::io::stderr().is_terminal(), total, done: 0, start: now, last: now }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.enabled && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 { (self.total.saturating_sub(self.done)) as f64 / rate } else { 0.0 };
        let pct = if self.total > 0 { self.done as f64 * 100.0 / self.total as f64 } else { 100.0 };
        let width = 30usize;
        let filled = ((pct / 100.0) * width as f64) as usize;
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        eprint!(
            "\r[{bar}] {pct:5.1}% {} / {} {}/s ETA {:.0}s   ",
            crate::human_size(self.done),
            crate::human_size(self.total),
            crate::human_size(rate as u64),
            left
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.enabled {
            self.draw();
            eprintln!();
        }
    }
}

/// Holds the read rate to `bytes_per_sec` (token bucket, 1 s burst).
pub struct RateLimit {
    rate: f64,
    start: Instant,
    consumed: f64,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit { rate: bytes_per_sec as f64, start: Instant::now(), consumed: 0.0 }
    }

    pub fn take(&mut self, n: u64) {
        self.consumed += n as f64;
        let due = self.consumed / self.rate;
        let now = self.start.elapsed().as_secs_f64();
        if due > now {
            std::thread::sleep(Duration::from_secs_f64(due - now));
        }
    }
}

/// Parses `200M`, `1G`, `500k`, `1048576` (bytes per second; binary units).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].trim_end_matches(['B', 'b', '/', 's']).to_ascii_lowercase();
            let mult = match unit.trim_end_matches('i') {
                "" => 1u64,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(format!("unknown unit in rate {s:?} (use k, M or G)")),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("bad rate {s:?}"))?;
    if !(n > 0.0) {
        return Err(format!("rate must be positive: {s:?}"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_parse() {
        assert_eq!(super::parse_rate("200M").unwrap(), 200 << 20);
        assert_eq!(super::parse_rate("1.5G").unwrap(), 3 << 29);
        assert_eq!(super::parse_rate("4096").unwrap(), 4096);
        assert!(super::parse_rate("0").is_err());
        assert!(super::parse_rate("5X").is_err());
    }
}
