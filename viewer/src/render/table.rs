//! The ranked growth table of `leakscope diff`, sized to the terminal:
//! numbers keep their columns, function names are shortened from the left
//! (the end of a Rust path is the part that names the code).

use crate::analysis::Growth;

/// A value with its unit made readable: `12.5 MiB`, `340 ms`, `1200`.
pub fn format_value(v: i64, unit: &str) -> String {
    let a = v.unsigned_abs() as f64;
    let sign = if v < 0 { "-" } else { "" };
    match unit {
        "bytes" => {
            let (div, name) = if a >= 1024.0 * 1024.0 * 1024.0 {
                (1024.0 * 1024.0 * 1024.0, "GiB")
            } else if a >= 1024.0 * 1024.0 {
                (1024.0 * 1024.0, "MiB")
            } else if a >= 1024.0 {
                (1024.0, "KiB")
            } else {
                return format!("{v} B");
            };
            format!("{sign}{:.1} {name}", a / div)
        }
        "nanoseconds" => {
            if a >= 1e9 {
                format!("{sign}{:.2} s", a / 1e9)
            } else if a >= 1e6 {
                format!("{sign}{:.1} ms", a / 1e6)
            } else if a >= 1e3 {
                format!("{sign}{:.1} us", a / 1e3)
            } else {
                format!("{v} ns")
            }
        }
        _ => format!("{v}"),
    }
}

/// `+12.5 MiB`: a signed change.
pub fn format_delta(v: i64, unit: &str) -> String {
    let s = format_value(v, unit);
    if v > 0 { format!("+{s}") } else { s }
}

/// Growth relative to the base, `+25%`, `new` when the base is 0, `gone`
/// when the new value is.
pub fn format_percent(g: &Growth) -> String {
    if g.base == 0 {
        "new".into()
    } else if g.new == 0 {
        "gone".into()
    } else {
        format!("{:+.0}%", (g.new - g.base) as f64 * 100.0 / g.base as f64)
    }
}

/// Keeps the last `max` characters of `s`, with `…` in front when cut.
fn tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let skip = n - (max - 1);
    format!("…{}", s.chars().skip(skip).collect::<String>())
}

/// The table: rank, change, %, new value, then function and file:line in
/// the width left. At most `limit` rows; `width` is the terminal's.
pub fn growth_table(rows: &[Growth], unit: &str, width: usize, limit: usize) -> String {
    let width = width.max(64);
    let fixed = 5 + 1 + 12 + 1 + 7 + 1 + 12 + 2;
    let room = width - fixed;
    // file:line gets what it needs up to a third of the room; the function
    // name, which says more, the rest.
    let longest_at = rows
        .iter()
        .take(limit)
        .map(|g| g.file.chars().count() + 1 + g.line.to_string().len())
        .max()
        .unwrap_or(0)
        .max("file:line".len());
    let file_w = longest_at.min(room / 3);
    let func_w = room - file_w - 1;
    let mut out = format!(
        "{:>5} {:>12} {:>7} {:>12}  {:<func_w$} {}\n",
        "rank",
        "change",
        "%",
        "now",
        "function",
        tail("file:line", file_w)
    );
    for (i, g) in rows.iter().take(limit).enumerate() {
        let at = if g.file.is_empty() {
            String::new()
        } else {
            format!("{}:{}", g.file, g.line)
        };
        out.push_str(&format!(
            "{:>5} {:>12} {:>7} {:>12}  {:<func_w$} {}\n",
            i + 1,
            format_delta(g.delta(), unit),
            format_percent(g),
            format_value(g.new, unit),
            tail(&g.function, func_w),
            tail(&at, file_w),
        ));
    }
    if rows.len() > limit {
        out.push_str(&format!("  ... {} more\n", rows.len() - limit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(function: &str, base: i64, new: i64) -> Growth {
        Growth {
            function: function.into(),
            file: "src/leaky.rs".into(),
            line: 58,
            base,
            new,
        }
    }

    #[test]
    fn values_read_like_pprof() {
        assert_eq!(format_value(512, "bytes"), "512 B");
        assert_eq!(
            format_value(25 * 1024 * 1024 + 512 * 1024, "bytes"),
            "25.5 MiB"
        );
        assert_eq!(format_delta(-2048, "bytes"), "-2.0 KiB");
        assert_eq!(format_value(340_000_000, "nanoseconds"), "340.0 ms");
        assert_eq!(format_delta(12, "count"), "+12");
        assert_eq!(format_percent(&g("a", 100, 125)), "+25%");
        assert_eq!(format_percent(&g("a", 0, 5)), "new");
        assert_eq!(format_percent(&g("a", 5, 0)), "gone");
    }

    #[test]
    fn table_fits_the_width_and_keeps_the_end_of_names() {
        let long = "leakscope::leaky::some::very::deep::module::path::leak_heap_kib";
        let rows = vec![g(long, 0, 26_214_400), g("b", 10, 5)];
        for width in [64, 80, 120] {
            let t = growth_table(&rows, "bytes", width, 10);
            for line in t.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            assert!(t.contains("leak_heap_kib"), "{t}");
            assert!(t.lines().nth(1).unwrap().contains("+25.0 MiB"), "{t}");
        }
        let t = growth_table(&rows, "bytes", 200, 1);
        assert!(t.contains(long) && t.contains("src/leaky.rs:58"), "{t}");
        assert!(t.ends_with("  ... 1 more\n"), "{t}");
    }
}
