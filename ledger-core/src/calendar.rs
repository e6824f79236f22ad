//! Accounting periods: calendar months in UTC (`2026-01`), and inclusive ranges of them (`2026-01..2026-03`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One calendar month in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    /// 1..=12
    month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a month (YYYY-MM, years 2000..2199) or a range of months (YYYY-MM..YYYY-MM)")]
pub struct BadPeriod(pub String);

impl Month {
    /// A month between 2000-01 and 2199-12 (the core's command-time bounds).
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((2000..2200).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Month {
        Month {
            year: at.year(),
            month: at.month(),
        }
    }

    /// Its first instant (inclusive).
    pub fn start(&self) -> DateTime<Utc> {
        Utc.from_utc_datetime(
            &NaiveDate::from_ymd_opt(self.year, self.month, 1)
                .expect("a valid month")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        )
    }

    /// The month after (2199-12 has none within bounds, but its start is still computed).
    pub fn next(&self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The first instant after it (exclusive end).
    pub fn end(&self) -> DateTime<Utc> {
        self.next().start()
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.start() && at < self.end()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = BadPeriod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPeriod(s.to_string());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Month::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of months: `2026-01` alone or `2026-01..2026-03`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonthRange {
    pub first: Month,
    pub last: Month,
}

impl MonthRange {
    pub fn start(&self) -> DateTime<Utc> {
        self.first.start()
    }
    pub fn end(&self) -> DateTime<Utc> {
        self.last.end()
    }
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.start() && at < self.end()
    }
}

impl fmt::Display for MonthRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

impl FromStr for MonthRange {
    type Err = BadPeriod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = match s.split_once("..") {
            Some((a, b)) => (a.parse::<Month>(), b.parse::<Month>()),
            None => (s.parse(), s.parse()),
        };
        let (first, last) = (
            first.map_err(|_| BadPeriod(s.to_string()))?,
            last.map_err(|_| BadPeriod(s.to_string()))?,
        );
        if last < first {
            return Err(BadPeriod(s.to_string()));
        }
        Ok(MonthRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_bound_and_order() {
        let jan: Month = "2026-01".parse().unwrap();
        assert_eq!(jan.start().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(jan.end().to_rfc3339(), "2026-02-01T00:00:00+00:00");
        assert_eq!(
            "2026-12".parse::<Month>().unwrap().end().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        for bad in [
            "2026-13", "2026-00", "26-01", "2026-1", "1999-12", "2200-01", "2026-01x", "",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        let range: MonthRange = "2026-01..2026-03".parse().unwrap();
        assert!(range.contains("2026-03-31T23:59:59Z".parse().unwrap()));
        assert!(!range.contains("2026-04-01T00:00:00Z".parse().unwrap()));
        assert!("2026-03..2026-01".parse::<MonthRange>().is_err());
        assert_eq!(range.to_string(), "2026-01..2026-03");
        assert_eq!(
            Month::of("2026-02-28T10:00:00Z".parse().unwrap()).to_string(),
            "2026-02"
        );
    }
}
