//! When backup jobs run: five-field cron schedules (`minute hour day-of-month month
//! day-of-week`) in local time, with `DOW#N` for the N-th such weekday of the month. The
//! default, [`FIRST_SUNDAY`], is the first Sunday of every month at 03:00.
//!
//! Fields take `*`, `N`, `A-B`, `*/S`, `A-B/S`, `A/S` and comma lists; months and weekdays
//! also take names (`JAN`, `SUN`); weekday 0 and 7 are Sunday. As in Vixie cron, when both
//! day fields are restricted a day matching either runs. `@hourly`, `@daily`, `@weekly`,
//! `@monthly` and `@yearly` are shorthands. A local time skipped by a daylight-saving
//! change runs at the shifted time.
//!
//! Catching up: a job is due when the first run its schedule gives after its last run (or
//! after it was added) has passed; a machine that was off for three months runs it once.

/// The default schedule: the first Sunday of every month at 03:00.
pub const FIRST_SUNDAY: &str = "0 3 * * SUN#1";

/// How many years ahead a schedule is searched for its next run (Feb 29 on a Sunday
/// recurs every 28 years).
const SEARCH_YEARS: i64 = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid schedule {schedule:?}: {why}")]
pub struct ScheduleError {
    schedule: String,
    why: String,
}

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u32,
    /// Bit d (1–31).
    days: u32,
    /// Bit m (1–12).
    months: u16,
    /// Bit w (0–6, Sunday 0): every such weekday.
    weekdays: u8,
    /// (weekday, n): the n-th (1–5) such weekday of the month.
    nth: Vec<(u8, u8)>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// A local (or UTC) calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
}

/// Converts between instants (Unix seconds) and calendar times.
pub trait Zone {
    fn civil(&self, secs: i64) -> Civil;
    /// The instant of a calendar time (a skipped local time maps past the gap).
    fn instant(&self, c: Civil) -> i64;
}

/// Coordinated universal time.
pub struct Utc;

/// The machine's local time zone (`TZ`, `/etc/localtime`), through the C library.
pub struct Local;

impl Zone for Utc {
    fn civil(&self, secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
        }
    }
    fn instant(&self, c: Civil) -> i64 {
        days_from_civil(c.year, c.month, c.day) * 86_400
            + i64::from(c.hour) * 3600
            + i64::from(c.minute) * 60
    }
}

impl Zone for Local {
    fn civil(&self, secs: i64) -> Civil {
        // SAFETY: localtime_r writes only into `tm`, which lives for the call.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let t = secs as libc::time_t;
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return Utc.civil(secs);
        }
        Civil {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
        }
    }
    fn instant(&self, c: Civil) -> i64 {
        // SAFETY: mktime reads and normalises `tm`, which lives for the call.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = (c.year - 1900) as i32;
        tm.tm_mon = c.month as i32 - 1;
        tm.tm_mday = c.day as i32;
        tm.tm_hour = c.hour as i32;
        tm.tm_min = c.minute as i32;
        tm.tm_isdst = -1;
        let t = unsafe { libc::mktime(&mut tm) };
        if t == -1 {
            Utc.instant(c)
        } else {
            t as i64
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (shared with the protocol's timestamps).
pub use shelf_protocol::civil_from_days;

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, Sunday 0.
fn weekday(y: i64, m: u32, d: u32) -> u8 {
    (days_from_civil(y, m, d) + 4).rem_euclid(7) as u8
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(text)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let err = |why: String| ScheduleError {
            schedule: text.to_string(),
            why,
        };
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = fields[..] else {
            return Err(err(format!(
                "{} fields; a schedule has five: minute hour day-of-month month day-of-week",
                fields.len()
            )));
        };
        let minutes = field(min, 0, 59, &[]).map_err(|w| err(format!("minute: {w}")))?;
        let hours = field(hour, 0, 23, &[]).map_err(|w| err(format!("hour: {w}")))?;
        let days = field(dom, 1, 31, &[]).map_err(|w| err(format!("day of month: {w}")))?;
        let months = field(mon, 1, 12, &MONTHS).map_err(|w| err(format!("month: {w}")))?;
        let mut weekdays = 0u8;
        let mut nth = Vec::new();
        for item in dow.split(',') {
            if let Some((day, n)) = item.split_once('#') {
                let day =
                    field(day, 0, 7, &WEEKDAYS).map_err(|w| err(format!("day of week: {w}")))?;
                let n: u8 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| err(format!("day of week: {item:?}: # takes 1 to 5")))?;
                for w in 0..=7 {
                    if day & (1 << w) != 0 {
                        nth.push(((w % 7) as u8, n));
                    }
                }
            } else {
                let bits =
                    field(item, 0, 7, &WEEKDAYS).map_err(|w| err(format!("day of week: {w}")))?;
                weekdays |= (bits & 0x7f) as u8 | u8::from(bits & 0x80 != 0);
            }
        }
        Ok(Schedule {
            text: text.trim().to_string(),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            nth,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }

    fn day_matches(&self, y: i64, m: u32, d: u32) -> bool {
        if self.months & (1 << m) == 0 {
            return false;
        }
        let w = weekday(y, m, d);
        let by_weekday = self.weekdays & (1 << w) != 0
            || self
                .nth
                .iter()
                .any(|&(nw, n)| nw == w && (d - 1) / 7 + 1 == u32::from(n));
        let by_day = self.days & (1 << d) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            (true, false) => by_day,
            (false, true) => by_weekday,
            (false, false) => true,
        }
    }

    /// The first run strictly after `after` (Unix seconds), in `zone`.
    pub fn next_after(&self, after: i64, zone: &impl Zone) -> Option<i64> {
        let start = zone.civil(after);
        let first_day = days_from_civil(start.year, start.month, start.day);
        for day in first_day..first_day + SEARCH_YEARS * 366 {
            let (y, m, d) = civil_from_days(day);
            if !self.day_matches(y, m, d) || d > days_in_month(y, m) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|mi| self.minutes & (1 << mi) != 0) {
                    let c = Civil {
                        year: y,
                        month: m,
                        day: d,
                        hour,
                        minute,
                    };
                    // Minutes before `after` on its own day are skipped cheaply.
                    if day == first_day && (hour, minute) < (start.hour, start.minute) {
                        continue;
                    }
                    let t = zone.instant(c);
                    if t > after {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// Whether a job last run (or added) at `last` is due at `now`: at most one catch-up
    /// run however many were missed.
    pub fn is_due(&self, last: i64, now: i64, zone: &impl Zone) -> bool {
        self.next_after(last, zone).is_some_and(|t| t <= now)
    }
}

/// Parses one cron field into a bit set of the values in `lo..=hi`.
fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            // Month names count from 1, weekday names from 0.
            return Ok(i as u32 + lo);
        }
        s.parse::<u32>()
            .ok()
            .filter(|v| (lo..=hi).contains(v))
            .ok_or_else(|| format!("{s:?} is not a number from {lo} to {hi}"))
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{item:?}: the step must be a positive number"))?,
            ),
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if item.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(format!("{item:?}: the range runs backwards"));
        }
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, hour: u32, minute: u32) -> i64 {
        Utc.instant(Civil {
            year: y,
            month: m,
            day: d,
            hour,
            minute,
        })
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        for day in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(weekday(2026, 11, 22), 0); // a Sunday
        assert_eq!(weekday(1970, 1, 1), 4); // a Thursday
    }

    #[test]
    fn first_sunday_across_months_and_years() {
        let s = Schedule::parse(FIRST_SUNDAY).unwrap();
        let next = |t| s.next_after(t, &Utc).unwrap();
        // Today (Sunday 22 Nov 2026) is the fourth Sunday: next is 6 Dec 2026 03:00.
        assert_eq!(next(at(2026, 11, 22, 12, 0)), at(2026, 12, 6, 3, 0));
        // Across the year: 3 Jan 2027 is the first Sunday of January.
        assert_eq!(next(at(2026, 12, 6, 3, 0)), at(2027, 1, 3, 3, 0));
        // A month whose first day is a Sunday: 1 Aug 2027.
        assert_eq!(next(at(2027, 7, 4, 3, 0)), at(2027, 8, 1, 3, 0));
        // Before 03:00 on the first Sunday itself, it is that day.
        assert_eq!(next(at(2027, 8, 1, 2, 59)), at(2027, 8, 1, 3, 0));
        // Exactly at a run: the next one.
        assert_eq!(next(at(2027, 8, 1, 3, 0)), at(2027, 9, 5, 3, 0));
        // Leap year February: 1 Feb 2032 is a Sunday... and 2028's is the 6th.
        assert_eq!(next(at(2028, 1, 31, 0, 0)), at(2028, 2, 6, 3, 0));
        assert_eq!(next(at(2032, 1, 31, 0, 0)), at(2032, 2, 1, 3, 0));
        // Every run of 2027 is a Sunday in the 1st–7th, one per month.
        let mut t = at(2026, 12, 31, 0, 0);
        for month in 1..=12 {
            t = next(t);
            let c = Utc.civil(t);
            assert_eq!((c.year, c.month, c.hour, c.minute), (2027, month, 3, 0));
            assert!(c.day <= 7 && weekday(c.year, c.month, c.day) == 0, "{c:?}");
        }
    }

    #[test]
    fn a_missed_run_is_caught_up_once() {
        let s = Schedule::parse(FIRST_SUNDAY).unwrap();
        // Last run 1 Feb 2026; the machine was off until 20 May 2026.
        let last = at(2026, 2, 1, 3, 5);
        let now = at(2026, 5, 20, 9, 0);
        assert!(s.is_due(last, now, &Utc));
        // It runs now; then nothing is due until 7 June.
        assert!(!s.is_due(now, now, &Utc));
        assert!(!s.is_due(now, at(2026, 6, 7, 2, 59), &Utc));
        assert!(s.is_due(now, at(2026, 6, 7, 3, 0), &Utc));
        // A job added today is not due before its first run.
        assert!(!s.is_due(at(2026, 11, 22, 12, 0), at(2026, 11, 30, 0, 0), &Utc));
    }

    #[test]
    fn other_schedules() {
        let next = |text: &str, t| Schedule::parse(text).unwrap().next_after(t, &Utc);
        let t = at(2026, 11, 22, 12, 34);
        assert_eq!(next("*/15 * * * *", t), Some(at(2026, 11, 22, 12, 45)));
        assert_eq!(next("@daily", t), Some(at(2026, 11, 23, 0, 0)));
        assert_eq!(next("30 2 * * MON-FRI", t), Some(at(2026, 11, 23, 2, 30)));
        assert_eq!(next("0 0 29 FEB *", t), Some(at(2028, 2, 29, 0, 0)));
        assert_eq!(
            next("0 0 31 * *", at(2026, 12, 31, 1, 0)),
            Some(at(2027, 1, 31, 0, 0))
        );
        // Vixie cron: both day fields restricted means either.
        assert_eq!(
            next("0 0 1 * SUN", at(2026, 11, 23, 0, 0)),
            Some(at(2026, 11, 29, 0, 0))
        );
        assert_eq!(next("0 9 * * 7", t), Some(at(2026, 11, 29, 9, 0)));
        assert_eq!(next("0 3 * * FRI#5", t), Some(at(2027, 1, 29, 3, 0)));
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * SUN#6",
            "5-1 * * * *",
            "*/0 * * * *",
            "* * * FOO *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(next("0 0 31 2 *", t), None);
    }
}
