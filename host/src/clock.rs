//! Wall-clock formatting for mail headers and log lines.
//!
//! All times are written in UTC: the `Date`-style stamp carries `+0000` and the syslog stamp
//! carries no zone at all, so a reader of the log must know that tern logs in UTC, not in the
//! host's local time. Times before 1970 are formatted too (the calendar is proleptic Gregorian).

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as an RFC 5322 section 3.3 date-time in UTC, for example
/// `Thu, 3 Dec 2026 15:24:51 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[c.weekday],
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// Formats `t` as a classic syslog (RFC 3164) timestamp in UTC, for example `Dec  3 15:24:51`:
/// the day of the month is padded to two characters with a space, as syslog does.
pub fn syslog_stamp(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[c.month - 1],
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar date and time of day, to the second.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    /// 1 to 12.
    month: usize,
    /// 1 to 31.
    day: u32,
    /// 0 is Sunday.
    weekday: usize,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn from_system_time(t: SystemTime) -> Civil {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // Round towards the past, so 0.5 s before the epoch is 23:59:59.
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                -whole - i64::from(d.subsec_nanos() > 0)
            }
        };
        Civil::from_unix_seconds(secs)
    }

    fn from_unix_seconds(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = date_from_days(days);

        // 1970-01-01 was a Thursday.
        let weekday = (days + 4).rem_euclid(7) as usize;

        Civil {
            year,
            month,
            day,
            weekday,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }
}

/// Converts days since 1970-01-01 to (year, month 1-12, day 1-31) in the Gregorian calendar.
///
/// The year is counted from March, so that the leap day falls at the very end of it; a 400-year
/// era then always holds exactly 146,097 days, and each part below is plain integer division.
fn date_from_days(days: i64) -> (i64, usize, u32) {
    // Days from 0000-03-01 to 1970-01-01.
    const SHIFT: i64 = 719_468;
    const DAYS_PER_ERA: i64 = 146_097;

    let z = days.saturating_add(SHIFT);
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z.rem_euclid(DAYS_PER_ERA);

    // A year of the era is 365 days, plus one every 4 years, minus one every 100, except the
    // last day of the era (a 400th year), which belongs to year 399.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);

    // Months from March: 31 30 31 30 31 31 30 31 30 31 31 28/29, a pattern of 153 days per 5.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as usize;

    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn epoch() {
        assert_eq!(rfc5322_date(at(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(syslog_stamp(at(0)), "Jan  1 00:00:00");
    }

    #[test]
    fn spec_example() {
        // date -u -d '2026-12-03 15:24:51' +%s
        let t = at(1_796_311_491);
        assert_eq!(rfc5322_date(t), "Thu, 3 Dec 2026 15:24:51 +0000");
        assert_eq!(syslog_stamp(t), "Dec  3 15:24:51");
    }

    #[test]
    fn two_digit_day_and_subsecond() {
        let t = at(1_000_000_000) + Duration::from_millis(999);
        assert_eq!(rfc5322_date(t), "Sun, 9 Sep 2001 01:46:40 +0000");
        assert_eq!(syslog_stamp(at(1_234_567_890)), "Feb 13 23:31:30");
    }

    #[test]
    fn leap_days() {
        // 2024-02-29 12:00:00, 2000-02-29 (divisible by 400), 2016-12-31 (day 366).
        assert_eq!(
            rfc5322_date(at(1_709_208_000)),
            "Thu, 29 Feb 2024 12:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_483_228_799)),
            "Sat, 31 Dec 2016 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_483_228_800)),
            "Sun, 1 Jan 2017 00:00:00 +0000"
        );
    }

    #[test]
    fn not_leap_in_century() {
        // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
        assert_eq!(
            rfc5322_date(at(4_107_456_000)),
            "Sun, 28 Feb 2100 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(4_107_542_400)),
            "Mon, 1 Mar 2100 00:00:00 +0000"
        );
    }

    #[test]
    fn before_epoch() {
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(rfc5322_date(t), "Wed, 31 Dec 1969 23:59:59 +0000");
        let t = UNIX_EPOCH - Duration::from_secs(86_400 * 365);
        assert_eq!(rfc5322_date(t), "Wed, 1 Jan 1969 00:00:00 +0000");
    }

    #[test]
    fn every_day_round_trips() {
        // Walk day by day over 1600..2500 and check that dates advance by exactly one day.
        let mut prev = date_from_days(-135_000);
        for days in -134_999..195_000 {
            let d = date_from_days(days);
            let next_in_month = d == (prev.0, prev.1, prev.2 + 1);
            let next_month = d.2 == 1 && (d.0, d.1) == next_month_of(prev.0, prev.1);
            assert!(next_in_month || next_month, "{prev:?} -> {d:?}");
            if next_month {
                assert_eq!(prev.2, month_length(prev.0, prev.1), "{prev:?}");
            }
            prev = d;
        }
    }

    fn next_month_of(year: i64, month: usize) -> (i64, usize) {
        if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        }
    }

    fn month_length(year: i64, month: usize) -> u32 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }
}
