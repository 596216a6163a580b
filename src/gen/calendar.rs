//! Days and builds: a civil-date calendar (days since 1970-01-01, no clock, no time
//! zone) and a model of the Firefox release train that gives each
//! (application, channel) the builds it had on a given day, with their build IDs and
//! versions.
//!
//! The model follows the rapid-release cycle: the real release days of Firefox 5
//! (2011-06-21) to 35, then one every 6 weeks; beta one version ahead, aurora two,
//! nightly three. Nightly and aurora build once a day, beta twice a week, release once
//! per version plus a dot release.
//! Build times are a hash of (application, channel, day), so a build ID is the same in
//! every data set, as in the real world.

use super::rng::hash;

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Parses `yyyy-MM-dd` or `yyyyMMdd` (a real date, years 1000–9999).
pub fn parse_day(s: &str) -> Option<i64> {
    let digits: String = match s.len() {
        10 if s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' => {
            [&s[..4], &s[5..7], &s[8..]].concat()
        }
        8 => s.to_string(),
        _ => return None,
    };
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..].parse().ok()?;
    let z = days_from_civil(y, m, d);
    (y >= 1000 && civil_from_days(z) == (y, m, d)).then_some(z)
}

/// `yyyyMMdd` of a day number.
pub fn fmt_day(z: i64) -> String {
    let (y, m, d) = civil_from_days(z);
    format!("{y:04}{m:02}{d:02}")
}

/// `yyyy/MM/dd` of a day number (the HDFS folder).
pub fn fmt_day_path(z: i64) -> String {
    let (y, m, d) = civil_from_days(z);
    format!("{y:04}/{m:02}/{d:02}")
}

/// An application that sent classic telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// Desktop Firefox.
    Firefox,
    /// Firefox for Android.
    Fennec,
    /// Thunderbird.
    Thunderbird,
}

impl App {
    /// `info.appName`.
    pub fn name(self) -> &'static str {
        match self {
            App::Firefox => "Firefox",
            App::Fennec => "Fennec",
            App::Thunderbird => "Thunderbird",
        }
    }

    /// `info.appID`.
    pub fn id(self) -> &'static str {
        match self {
            App::Firefox => "{ec8030f7-c20a-464f-9b0e-13a3a9e97384}",
            App::Fennec => "{aa3c5121-dab2-40e2-81ca-7ea25febc110}",
            App::Thunderbird => "{3550f703-e582-4d05-9a08-453d09bdfdc6}",
        }
    }
}

/// An update channel. `Esr` and `Default` (self-built) are outside the storage
/// schema's list and land in `OTHER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Release.
    Release,
    /// Beta, one version ahead.
    Beta,
    /// Aurora, two versions ahead.
    Aurora,
    /// Nightly, three versions ahead.
    Nightly,
    /// Extended support release.
    Esr,
    /// A build made outside Mozilla's infrastructure.
    Default,
}

impl Channel {
    /// `info.appUpdateChannel`.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Release => "release",
            Channel::Beta => "beta",
            Channel::Aurora => "aurora",
            Channel::Nightly => "nightly",
            Channel::Esr => "esr",
            Channel::Default => "default",
        }
    }

    /// The hg repository of the channel's builds (for revision URLs).
    pub fn repo(self) -> &'static str {
        match self {
            Channel::Release => "releases/mozilla-release",
            Channel::Beta => "releases/mozilla-beta",
            Channel::Aurora => "releases/mozilla-aurora",
            Channel::Esr => "releases/mozilla-esr17",
            Channel::Nightly | Channel::Default => "mozilla-central",
        }
    }

    /// How far back builds of this channel are still in use, in builds.
    pub fn depth(self) -> usize {
        match self {
            Channel::Release | Channel::Esr => 40,
            Channel::Beta => 200,
            Channel::Aurora | Channel::Nightly | Channel::Default => 500,
        }
    }
}

/// Release days of Firefox 5 to 35 (the rapid-release years the store covers).
const RELEASES: [(i64, u32, u32); 31] = [
    (2011, 6, 21),
    (2011, 8, 16),
    (2011, 9, 27),
    (2011, 11, 8),
    (2011, 12, 20),
    (2012, 1, 31),
    (2012, 3, 13),
    (2012, 4, 24),
    (2012, 6, 5),
    (2012, 7, 17),
    (2012, 8, 28),
    (2012, 10, 9),
    (2012, 11, 20),
    (2013, 1, 8),
    (2013, 2, 19),
    (2013, 4, 2),
    (2013, 5, 14),
    (2013, 6, 25),
    (2013, 8, 6),
    (2013, 9, 17),
    (2013, 10, 29),
    (2013, 12, 10),
    (2014, 2, 4),
    (2014, 3, 18),
    (2014, 4, 29),
    (2014, 6, 10),
    (2014, 7, 22),
    (2014, 9, 2),
    (2014, 10, 14),
    (2014, 12, 1),
    (2015, 1, 13),
];

/// The first version in [`RELEASES`].
const FIRST_RAPID: i64 = 5;

/// A rapid-release cycle, for days past the table.
const CYCLE: i64 = 42;

/// The release day of version `v` (≥ 5): from the table, then every 6 weeks.
pub fn release_day(v: i64) -> i64 {
    let last = RELEASES.len() as i64 - 1;
    let i = (v - FIRST_RAPID).clamp(0, last);
    let (y, m, d) = RELEASES[i as usize];
    days_from_civil(y, m, d) + (v - FIRST_RAPID - i) * CYCLE
}

/// The release version current on `day` (4 before Firefox 5).
pub fn release_version(day: i64) -> i64 {
    let mut v = FIRST_RAPID - 1;
    while release_day(v + 1) <= day {
        v += 1;
    }
    v
}

/// One build: its build ID and `info.appVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// `yyyyMMddhhmmss`.
    pub build_id: String,
    /// `info.appVersion`.
    pub version: String,
    /// The day the build was made.
    pub day: i64,
}

fn build_id(app: App, channel: Channel, day: i64, hour_lo: u64, hour_span: u64) -> String {
    let h = hash(&[app as u64, channel as u64, day as u64]);
    let hh = hour_lo + h % hour_span;
    let mm = (h >> 16) % 60;
    let ss = (h >> 32) % 60;
    format!("{}{hh:02}{mm:02}{ss:02}", fmt_day(day))
}

/// The `rank`-th most recent build (0 = newest) of `app` on `channel` made before
/// `day` (so its build ID is earlier than the day).
pub fn build_before(app: App, channel: Channel, day: i64, rank: usize) -> Build {
    let rank = rank as i64;
    match channel {
        Channel::Nightly | Channel::Default => {
            let d = day - 1 - rank;
            let v = release_version(d) + 3;
            Build {
                build_id: build_id(app, channel, d, 2, 3),
                version: format!("{v}.0a1"),
                day: d,
            }
        }
        Channel::Aurora => {
            let d = day - 1 - rank;
            let v = release_version(d) + 2;
            Build {
                build_id: build_id(app, channel, d, 0, 2),
                version: format!("{v}.0a2"),
                day: d,
            }
        }
        Channel::Beta => {
            // Betas build twice a week (on the weekdays of Tuesday and Friday).
            let mut d = day - 1;
            let mut left = rank;
            loop {
                if matches!(d.rem_euclid(7), 0 | 3) {
                    if left == 0 {
                        break;
                    }
                    left -= 1;
                }
                d -= 1;
            }
            let v = release_version(d) + 1;
            Build {
                build_id: build_id(app, channel, d, 10, 10),
                version: format!("{v}.0"),
                day: d,
            }
        }
        Channel::Release | Channel::Esr => {
            // Two builds per version, newest first: the dot release (built 10 days
            // after release day) and the release (built 7 days before it). Versions
            // before 5 are not modelled: deeper ranks get the oldest build.
            let mut builds = Vec::new();
            let mut v = release_version(day - 1);
            while v >= FIRST_RAPID && builds.len() as i64 <= rank {
                let r = release_day(v);
                for (build_day, dot) in [(r + 10, true), (r - 7, false)] {
                    if build_day < day {
                        builds.push((build_day, v, dot));
                    }
                }
                v -= 1;
            }
            let (d, v, dot) = builds[(rank as usize).min(builds.len() - 1)];
            let version = match channel {
                Channel::Esr => {
                    let base = [24, 17, 10].into_iter().find(|&b| b <= v).unwrap_or(10);
                    match v - base + i64::from(dot) {
                        0 => format!("{base}.0"),
                        k => format!("{base}.0.{k}"),
                    }
                }
                _ if dot => format!("{v}.0.1"),
                _ => format!("{v}.0"),
            };
            Build {
                build_id: build_id(app, channel, d, 14, 6),
                version,
                day: d,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for (y, m, d, z) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 11_017),
            (2013, 10, 11, 15_989),
            (1969, 12, 31, -1),
        ] {
            assert_eq!(days_from_civil(y, m, d), z);
            assert_eq!(civil_from_days(z), (y, m, d));
        }
        for z in -1000..30_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn day_parsing() {
        assert_eq!(parse_day("2013-10-11"), Some(15_989));
        assert_eq!(parse_day("20131011"), Some(15_989));
        assert_eq!(parse_day("2013-02-30"), None);
        assert_eq!(parse_day("2013/10/11"), None);
        assert_eq!(parse_day("201310"), None);
        assert_eq!(fmt_day(15_989), "20131011");
        assert_eq!(fmt_day_path(15_989), "2013/10/11");
    }

    #[test]
    fn release_train_matches_history() {
        // Firefox 21 shipped 2013-05-14, Firefox 24 on 2013-09-17.
        assert_eq!(release_version(days_from_civil(2013, 5, 14)), 21);
        assert_eq!(release_version(days_from_civil(2013, 9, 17)), 24);
        // The shipped revision table's range: aurora 23.0a2 on 2013-05-14.
        let b = build_before(
            App::Firefox,
            Channel::Aurora,
            days_from_civil(2013, 5, 15),
            0,
        );
        assert_eq!(b.version, "23.0a2");
        assert!(b.build_id.starts_with("20130514"));
    }

    #[test]
    fn builds_are_before_the_day_and_stable() {
        let day = parse_day("2013-10-11").unwrap();
        for ch in [
            Channel::Release,
            Channel::Beta,
            Channel::Aurora,
            Channel::Nightly,
            Channel::Esr,
            Channel::Default,
        ] {
            let mut seen = std::collections::HashSet::new();
            for rank in 0..ch.depth() {
                let b = build_before(App::Firefox, ch, day, rank);
                assert_eq!(b.build_id.len(), 14);
                assert!(b.build_id.as_str() < "20131011000000", "{ch:?} {b:?}");
                assert!(
                    seen.insert(b.build_id.clone()),
                    "{ch:?} rank {rank} repeats"
                );
                assert_eq!(b, build_before(App::Firefox, ch, day, rank));
            }
            // The newest build one day later is still known the next day.
            let newest = build_before(App::Firefox, ch, day, 0);
            assert!((0..5).any(|r| build_before(App::Firefox, ch, day + 1, r) == newest));
        }
        let b = build_before(App::Firefox, Channel::Release, day, 0);
        assert_eq!(b.version, "24.0.1");
    }
}
