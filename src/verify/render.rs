//! How a verification is shown to people: the per-day table (text, for stderr) and
//! the page a person signs off on (`--html`): one self-contained HTML file with the
//! same table and an inline SVG chart of source against destination records per
//! day, failing days marked. No script, no style sheet or font from the network.

use super::{DayRow, Verification};
use std::fmt::Write as _;

fn num(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// The per-day table with its totals, one line per day, aligned.
pub fn table(v: &Verification) -> String {
    let head = [
        "day",
        "source records",
        "written",
        "rejected",
        "dest records",
        "differences",
        "faults",
        "",
    ];
    let row = |d: &DayRow| {
        vec![
            d.day.clone(),
            num(d.source_records),
            num(d.written),
            num(d.rejected),
            num(d.dest_records),
            d.differences.to_string(),
            d.faults.to_string(),
            if d.failing() {
                "FAIL".into()
            } else {
                String::new()
            },
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    rows.extend(v.days.iter().map(row));
    rows.push(row(&v.totals));
    let widths: Vec<usize> = (0..head.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 || i == head.len() - 1 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart: per day, a bar for source records and one for destination records.
fn chart(v: &Verification) -> String {
    let days: Vec<&DayRow> = v.days.iter().filter(|d| d.day != "undated").collect();
    let val = |n: Option<u64>| n.unwrap_or(0);
    // The default mode reads no source record: its bars are what the manifests say
    // was written against what was found intact.
    let left = |d: &DayRow| d.source_records.or(d.written);
    let max = days
        .iter()
        .map(|d| val(left(d)).max(val(d.dest_records)))
        .max()
        .unwrap_or(0)
        .max(1);
    let (bar, gap, h, top, bottom, axis) = (14.0, 12.0, 200.0, 20.0, 60.0, 50.0);
    let width = axis + days.len() as f64 * (2.0 * bar + gap) + gap;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" role="img" aria-label="source and destination records per day">"#,
        w = width.max(200.0),
        ht = h + top + bottom
    );
    let _ = write!(
        s,
        r##"<text x="4" y="14" font-size="11">{max}</text><line x1="{axis}" y1="{top}" x2="{axis}" y2="{b}" stroke="#888"/><line x1="{axis}" y1="{b}" x2="{w}" y2="{b}" stroke="#888"/>"##,
        b = top + h,
        w = width
    );
    for (i, d) in days.iter().enumerate() {
        let x = axis + gap + i as f64 * (2.0 * bar + gap);
        let bar_of = |n: u64| h * n as f64 / max as f64;
        let (a, b) = (bar_of(val(left(d))), bar_of(val(d.dest_records)));
        let fail = d.failing();
        let _ = write!(
            s,
            r##"<g class="day{cls}" data-day="{day}"><title>{day}: source {src}, destination {dst}, differences {diff}</title><rect class="source" x="{x}" y="{ya}" width="{bar}" height="{a}" fill="#4a78b0"/><rect class="dest" x="{x2}" y="{yb}" width="{bar}" height="{b}" fill="{fill}"/><text x="{x}" y="{ty}" font-size="10" transform="rotate(45 {x} {ty})"{red}>{day}</text></g>"##,
            cls = if fail { " failing" } else { "" },
            day = esc(&d.day),
            src = num(left(d)),
            dst = num(d.dest_records),
            diff = d.differences,
            ya = top + h - a,
            x2 = x + bar,
            yb = top + h - b,
            fill = if fail { "#d03030" } else { "#50a050" },
            ty = top + h + 14.0,
            red = if fail {
                r##" fill="#d03030" font-weight="bold""##
            } else {
                ""
            },
        );
    }
    s.push_str("</svg>");
    s
}

/// The sign-off page.
pub fn html(v: &Verification) -> String {
    let verdict = if v.parity {
        "PARITY: the destination holds every source record".to_string()
    } else if let Some(why) = &v.incomplete {
        format!("INCOMPLETE: {why}")
    } else {
        format!("PARITY VIOLATED: {} findings", v.faults_total)
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>backfill verify: job {job}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.failing td {{ background: #fde0e0; color: #900; font-weight: bold; }}
tr.total td {{ border-top: 2px solid #444; font-weight: bold; }}
.verdict {{ font-size: 1.2em; padding: 0.5em; }}
.ok {{ background: #e0f5e0; }} .bad {{ background: #fde0e0; }}
</style></head><body>
<h1>backfill verify</h1>
<p id="verdict" class="verdict {cls}">{verdict}</p>
<p>Job <code>{job}</code> ({name}), mode {mode}{aw}; source <code>{src}</code>; destination <code>{dst}</code>; tool {tool}, mappings {maps}.</p>
"#,
        job = esc(&v.job),
        name = esc(&v.job_name),
        cls = if v.parity { "ok" } else { "bad" },
        verdict = esc(&verdict),
        mode = esc(&v.mode),
        aw = if v.all_writers { ", all writers" } else { "" },
        src = esc(&v.source),
        dst = esc(&v.destination),
        tool = esc(&v.tool_version),
        maps = esc(&v.mappings_version),
    );
    if let Some(sample) = &v.sample {
        let _ = writeln!(
            s,
            "<p id=\"sample\">Sampled {} of {} {} (fraction {}).</p>",
            sample.selected.len(),
            sample.of,
            esc(&sample.by),
            sample.fraction
        );
    }
    s.push_str("<h2>Records per day</h2>\n");
    s.push_str(&chart(v));
    s.push_str("\n<p><span style=\"color:#4a78b0\">&#9632;</span> source &nbsp; <span style=\"color:#50a050\">&#9632;</span> destination &nbsp; <span style=\"color:#d03030\">&#9632;</span> failing day</p>\n");
    s.push_str("<table id=\"days\"><thead><tr><th>day</th><th>source records</th><th>written</th><th>rejected</th><th>dest records</th><th>differences</th><th>faults</th><th>other writers' objects</th></tr></thead><tbody>\n");
    let row = |s: &mut String, d: &DayRow, class: &str| {
        let _ = writeln!(
            s,
            "<tr class=\"{class}\" data-day=\"{day}\"><td>{day}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(d.source_records),
            num(d.written),
            num(d.rejected),
            num(d.dest_records),
            d.differences,
            d.faults,
            d.other_writers,
            day = esc(&d.day),
        );
    };
    for d in &v.days {
        row(&mut s, d, if d.failing() { "day failing" } else { "day" });
    }
    row(&mut s, &v.totals, "total");
    s.push_str("</tbody></table>\n");
    if !v.faults.is_empty() {
        s.push_str("<h2>Findings</h2>\n<ul id=\"faults\">\n");
        for f in &v.faults {
            let _ = writeln!(
                s,
                "<li><b>{}</b>{}: {}</li>",
                esc(&f.kind.name()),
                f.day
                    .as_deref()
                    .map(|d| format!(" ({})", esc(d)))
                    .unwrap_or_default(),
                esc(&f.message)
            );
        }
        if v.faults_total > v.faults.len() as u64 {
            let _ = writeln!(
                s,
                "<li>… and {} more (see the JSON report)</li>",
                v.faults_total - v.faults.len() as u64
            );
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verification {
        let day = |d: &str, n: u64, diff: u64| DayRow {
            day: d.into(),
            source_records: Some(n),
            written: Some(n),
            rejected: Some(0),
            dest_records: Some(n - diff),
            differences: diff,
            ..Default::default()
        };
        Verification {
            job: "abcd<1234".into(),
            days: vec![day("20131010", 10, 0), day("20131011", 8, 1)],
            totals: day("total", 18, 1),
            ..Default::default()
        }
    }

    #[test]
    fn table_aligns_and_marks_failing_days() {
        let t = table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("day "));
        assert!(!lines[1].contains("FAIL"));
        assert!(lines[2].starts_with("20131011") && lines[2].ends_with("FAIL"));
        assert!(lines[3].starts_with("total"));
    }

    #[test]
    fn page_is_self_contained_and_escaped() {
        let p = html(&sample());
        assert!(
            !p.contains(" src=") && !p.contains(" href="),
            "no external asset"
        );
        assert!(!p.contains("<script"));
        assert!(p.contains("abcd&lt;1234"));
        assert!(p.contains(r#"<tr class="day failing" data-day="20131011">"#));
        assert!(p.contains(r#"<g class="day failing" data-day="20131011">"#));
        assert!(p.contains(r#"<g class="day" data-day="20131010">"#));
    }
}
