//! Tables in kubectl's style (upper-case headers, columns three spaces apart), or json/yaml.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// What `-o` asks for instead of a table.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Prints `value` as json or yaml (yaml documents start with `---`, so a stream of them, as
/// `--watch` prints, stays valid).
pub fn print_object<T: Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("---\n{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// Rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                text.push_str(&" ".repeat(width - cell.chars().count() + 3));
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A duration in kubectl's short form: 45s, 12m, 3h, 5d.
pub fn short_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Time since `at`, short form; `<unknown>` as kubectl prints for a missing time.
pub fn age(at: Option<Timestamp>) -> String {
    match at {
        Some(at) => short_duration(Timestamp::now().as_second() - at.as_second()),
        None => "<unknown>".into(),
    }
}

/// A value or `-` when absent.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_their_widest_cell() {
        let rows = vec![vec!["orders".to_string(), "0".into()], vec!["a".into(), "12".into()]];
        assert_eq!(table(&["TOPIC", "PARTITION"], &rows), "TOPIC    PARTITION\norders   0\na        12\n");
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(119), "119s");
        assert_eq!(short_duration(600), "10m");
        assert_eq!(short_duration(3 * 3600), "3h");
        assert_eq!(short_duration(3 * 86400), "3d");
    }
}
