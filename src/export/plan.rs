//! Planning: which folders of the source are read and how files become units.
//! A group is one source folder (one day in the old HDFS layout); a unit is a file,
//! or a byte range of a SequenceFile larger than the split size.

use super::manifest::short_hash;
use super::unit::UnitSpec;
use crate::source::FileEntry;
use serde::{Deserialize, Serialize};

/// An inclusive range of submission days, `yyyyMMdd` as numbers; a missing bound is
/// open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayWindow {
    /// First day, inclusive.
    pub from: Option<u32>,
    /// Last day, inclusive.
    pub to: Option<u32>,
}

impl DayWindow {
    /// Whether the window selects everything.
    pub fn is_open(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether `day` is inside.
    pub fn contains(&self, day: u32) -> bool {
        self.from.is_none_or(|f| day >= f) && self.to.is_none_or(|t| day <= t)
    }

    fn lo(&self) -> u32 {
        self.from.unwrap_or(0)
    }

    fn hi(&self) -> u32 {
        self.to.unwrap_or(u32::MAX)
    }
}

/// Whether the union of `covered` holds every day of `w`.
pub fn covers(covered: &[DayWindow], w: &DayWindow) -> bool {
    let mut sorted: Vec<&DayWindow> = covered.iter().collect();
    sorted.sort_by_key(|c| c.lo());
    // The first day of `w` not yet known to be covered.
    let mut next = w.lo();
    for c in sorted {
        if c.lo() > next {
            break;
        }
        if c.hi() >= w.hi() {
            return true;
        }
        if c.hi() >= next {
            next = shift_day(c.hi(), 1);
        }
    }
    next > w.hi()
}

/// Where a record's day puts it for one run over a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayClass {
    /// Exported by this run.
    Selected,
    /// Exported by an earlier run with another window: skipped, not counted.
    Covered,
    /// Outside every window so far: counted as filtered.
    Outside,
}

/// Which days a run exports from a folder: its `--from`/`--to` window, minus the
/// windows earlier runs of the same job already exported from that folder (so that
/// widening the window adds only the new days).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// This run's window.
    pub window: DayWindow,
    /// Windows already exported from the folder.
    pub covered: Vec<DayWindow>,
}

impl Selection {
    /// Classifies a record by its legacy key. Keys whose day cannot be read belong
    /// to the folder's first run only (they are errors, and must be counted once).
    pub fn classify(&self, key: &[u8]) -> DayClass {
        let day = (key.len() > 9 && key[1..9].iter().all(u8::is_ascii_digit)).then(|| {
            key[1..9]
                .iter()
                .fold(0u32, |a, &c| a * 10 + (c - b'0') as u32)
        });
        match day {
            None if self.covered.is_empty() => DayClass::Selected,
            None => DayClass::Covered,
            Some(d) => self.classify_day(d),
        }
    }

    /// Classifies a record of submission day `day` (`yyyyMMdd` as a number).
    pub fn classify_day(&self, day: u32) -> DayClass {
        if self.covered.iter().any(|c| c.contains(day)) {
            DayClass::Covered
        } else if self.window.contains(day) {
            DayClass::Selected
        } else {
            DayClass::Outside
        }
    }
}

/// The day a folder path names, from its last three segments `yyyy/MM/dd`.
pub fn folder_day(dir: &str) -> Option<u32> {
    let segs: Vec<&str> = dir.rsplit('/').take(3).collect();
    if segs.len() != 3 {
        return None;
    }
    let (d, m, y) = (segs[0], segs[1], segs[2]);
    let ok = y.len() == 4 && m.len() == 2 && d.len() == 2;
    let text = format!("{y}{m}{d}");
    if ok && crate::core::rowkey::is_real_date(text.as_bytes()) {
        text.parse().ok()
    } else {
        None
    }
}

/// Adds `days` (may be negative) to a `yyyyMMdd` day.
pub fn shift_day(day: u32, days: i64) -> u32 {
    let (y, m, d) = (
        (day / 10000) as i64,
        ((day / 100) % 100) as i64,
        (day % 100) as i64,
    );
    let n = days_from_civil(y, m, d) + days;
    let (y, m, d) = civil_from_days(n);
    (y * 10000 + m * 100 + d) as u32
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether a folder is read under `window`: folders that name no day always are;
/// dated folders are when their day is within the window widened by `margin` days
/// (a folder can hold a few records of a neighbouring day).
pub fn folder_selected(dir: &str, window: &DayWindow, margin: u32) -> bool {
    if window.is_open() {
        return true;
    }
    let Some(day) = folder_day(dir) else {
        return true;
    };
    let wide = DayWindow {
        from: window.from.map(|f| shift_day(f, -(margin as i64))),
        to: window.to.map(|t| shift_day(t, margin as i64)),
    };
    wide.contains(day)
}

/// Whether folder `dir` is in share `shard` = (I, N) of the folders (always, with
/// no shard): by a hash of the folder's name, so every run agrees without talking,
/// and shares are even over many folders.
pub fn in_shard(dir: &str, shard: Option<(u32, u32)>) -> bool {
    match shard {
        None => true,
        Some((i, n)) => {
            let h = crate::export::manifest::sha256(format!("shard\0{dir}").as_bytes());
            u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % u64::from(n) == u64::from(i)
        }
    }
}

/// Parses `I/N` (0 ≤ I < N).
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a shard (I/N, e.g. 0/4)"))?;
    let i: u32 = i.trim().parse().map_err(|_| format!("{s:?}: bad index"))?;
    let n: u32 = n.trim().parse().map_err(|_| format!("{s:?}: bad count"))?;
    if n == 0 || i >= n {
        return Err(format!(
            "{s:?}: the index must be below the count (0/{n} to {}/{n})",
            n.saturating_sub(1)
        ));
    }
    Ok((i, n))
}

/// The group id of a folder: a hash of its name, after the writer id when the
/// folder is a raw log of the live server (`ingest`), so its objects carry it.
pub fn group_id(dir: &str) -> String {
    let h = short_hash(&format!("group\0{dir}"), 8);
    match crate::ingest::writer_of(dir) {
        Some(w) => format!("{w}-{h}"),
        None => h,
    }
}

/// A folder's files as units, in order: files larger than `split_size` become
/// several units (only SequenceFiles are actually split; for other files the first
/// unit reads everything and the rest read nothing).
pub fn units(files: &[FileEntry], split_size: u64) -> Vec<UnitSpec> {
    let split = split_size.max(1);
    let mut out = Vec::new();
    for f in files {
        let mut start = 0;
        loop {
            let end = (start + split).min(f.size);
            out.push(UnitSpec {
                file: f.path.clone(),
                start,
                end,
                file_size: f.size,
            });
            if end >= f.size {
                break;
            }
            start = end;
        }
    }
    out
}

/// Parses `yyyyMMdd` or `yyyy-MM-dd` into a checked day.
pub fn parse_day(s: &str) -> Result<u32, String> {
    let digits: String = if s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' {
        format!("{}{}{}", &s[..4], &s[5..7], &s[8..])
    } else {
        s.to_string()
    };
    if digits.len() == 8 && crate::core::rowkey::is_real_date(digits.as_bytes()) {
        Ok(digits.parse().expect("digits"))
    } else {
        Err(format!("{s:?} is not a day (yyyyMMdd or yyyy-MM-dd)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_days() {
        assert_eq!(folder_day("data/telemetry/2013/10/11"), Some(20131011));
        assert_eq!(folder_day("2013/10/11"), Some(20131011));
        assert_eq!(folder_day("10/11"), None);
        assert_eq!(folder_day("2013/02/30"), None);
        assert_eq!(folder_day("x/2013/1/11"), None);
    }

    #[test]
    fn day_arithmetic() {
        assert_eq!(shift_day(20131231, 1), 20140101);
        assert_eq!(shift_day(20130301, -1), 20130228);
        assert_eq!(shift_day(20120301, -1), 20120229);
        assert_eq!(shift_day(20131011, 0), 20131011);
        assert_eq!(shift_day(20131011, -3650), 20031014);
    }

    #[test]
    fn selection_with_margin() {
        let w = DayWindow {
            from: Some(20131011),
            to: Some(20131011),
        };
        assert!(folder_selected("d/2013/10/11", &w, 0));
        assert!(!folder_selected("d/2013/10/12", &w, 0));
        assert!(folder_selected("d/2013/10/12", &w, 1));
        assert!(folder_selected("d/2013/10/10", &w, 1));
        assert!(!folder_selected("d/2013/10/09", &w, 1));
        assert!(folder_selected("undated", &w, 0));
        assert!(folder_selected("d/2013/10/01", &DayWindow::default(), 0));
    }

    #[test]
    fn splitting() {
        let f = |p: &str, size| FileEntry {
            path: p.into(),
            size,
        };
        let u = units(&[f("a", 10), f("b", 0), f("c", 25)], 10);
        let got: Vec<_> = u
            .iter()
            .map(|u| (u.file.as_str(), u.start, u.end))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 0, 10),
                ("b", 0, 0),
                ("c", 0, 10),
                ("c", 10, 20),
                ("c", 20, 25)
            ]
        );
    }

    #[test]
    fn coverage() {
        let w = |f: Option<u32>, t: Option<u32>| DayWindow { from: f, to: t };
        let oct = w(Some(20131001), Some(20131031));
        assert!(covers(&[w(None, None)], &oct));
        assert!(covers(&[oct], &w(Some(20131010), Some(20131011))));
        assert!(!covers(&[], &oct));
        assert!(!covers(&[w(Some(20131001), Some(20131015))], &oct));
        assert!(covers(
            &[
                w(Some(20131016), Some(20131031)),
                w(Some(20131001), Some(20131015))
            ],
            &oct
        ));
        assert!(!covers(
            &[
                w(Some(20131017), Some(20131031)),
                w(Some(20131001), Some(20131015))
            ],
            &oct
        ));
        assert!(covers(
            &[w(Some(20130930), Some(20130930)), w(Some(20131001), None)],
            &w(Some(20130930), None)
        ));
        assert!(!covers(&[oct], &w(None, Some(20131031))));
    }

    #[test]
    fn classify_by_key_day() {
        let key = |d: &str| crate::core::rowkey::build(d, "17caa68c-25f5-450a-9cce-7d31318846d8");
        let first = Selection {
            window: DayWindow {
                from: Some(20131010),
                to: Some(20131010),
            },
            covered: vec![],
        };
        assert_eq!(first.classify(&key("20131010")), DayClass::Selected);
        assert_eq!(first.classify(&key("20131011")), DayClass::Outside);
        assert_eq!(first.classify(b"bad"), DayClass::Selected);
        let second = Selection {
            window: DayWindow {
                from: Some(20131010),
                to: Some(20131011),
            },
            covered: vec![first.window],
        };
        assert_eq!(second.classify(&key("20131010")), DayClass::Covered);
        assert_eq!(second.classify(&key("20131011")), DayClass::Selected);
        assert_eq!(second.classify(&key("20131012")), DayClass::Outside);
        assert_eq!(second.classify(b"bad"), DayClass::Covered);
    }

    #[test]
    fn days() {
        assert_eq!(parse_day("20131011"), Ok(20131011));
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(
            parse_shard("4/4").is_err() && parse_shard("0/0").is_err() && parse_shard("x").is_err()
        );
        // Every folder is in exactly one share, and shares are near even.
        let mut counts = [0; 4];
        for d in 0..400 {
            let dir = format!("data/telemetry/2013/{:02}/{:02}", d / 31 + 1, d % 31 + 1);
            let shares: Vec<u32> = (0..4).filter(|&i| in_shard(&dir, Some((i, 4)))).collect();
            assert_eq!(shares.len(), 1, "{dir}");
            counts[shares[0] as usize] += 1;
            assert!(in_shard(&dir, None));
        }
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(parse_day("2013-10-11"), Ok(20131011));
        assert!(parse_day("2013-02-30").is_err());
        assert!(parse_day("201310").is_err());
    }
}
