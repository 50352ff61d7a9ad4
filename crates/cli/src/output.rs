//! Printing: plain text tables for people, JSON for scripts, times in
//! RFC 3339 (UTC).
//!
//! Everything goes through [`print`], which reports a closed stdout as an
//! error instead of panicking like `println!`, so `taskline ... | head`
//! ends quietly.

use std::io::Write;
use std::time::SystemTime;

use serde_json::Value;

use crate::error::CliError;

/// Writes `text` to stdout, plus a newline unless it ends with one.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    print(&serde_json::to_string_pretty(value).expect("JSON values serialize"))
}

/// Prints `value` as one line of JSON (JSON Lines).
pub fn print_json_line(value: &Value) -> Result<(), CliError> {
    print(&serde_json::to_string(value).expect("JSON values serialize"))
}

/// A time as RFC 3339 in UTC, to the second (for tables).
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time as RFC 3339 in UTC, to the millisecond (for JSON and details).
pub fn time_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Epoch milliseconds as text (`1738310400120`, as the scripts store
/// times) shown as RFC 3339 in UTC to the millisecond; `None` when `ms` is
/// not a number.
pub fn epoch_ms_text(ms: &str) -> Option<String> {
    let ms: u64 = ms.parse().ok()?;
    Some(time_ms(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
}

/// An optional time for JSON: RFC 3339 with milliseconds, or null.
pub fn json_time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time_ms(t)))
}

/// Stored JSON text as a JSON value (as a string when it does not parse,
/// so nothing is lost).
pub fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// A plain text table: left-aligned text columns, right-aligned numbers,
/// two spaces between columns, no borders (easy to read and to `grep`).
/// Drawn by `comfy-table`, which measures cells by their display width
/// (wide and combining characters line up).
pub struct Table(comfy_table::Table);

impl Table {
    /// A table with these column headers; a header starting with `>` is a
    /// right-aligned (numeric) column.
    pub fn new(headers: &[&str]) -> Table {
        let mut table = comfy_table::Table::new();
        // No borders, no lines: only the cells and their padding.
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(headers.iter().map(|h| h.trim_start_matches('>')));
        let last = headers.len().saturating_sub(1);
        for (i, header) in headers.iter().enumerate() {
            let Some(column) = table.column_mut(i) else { continue };
            // One space each side of every cell makes two between columns;
            // none at the table's edges.
            column.set_padding((u16::from(i > 0), u16::from(i < last)));
            if header.starts_with('>') {
                column.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        Table(table)
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.0.add_row(cells);
    }

    /// The table as text, one line per row, header first.
    pub fn render(&self) -> String {
        self.0.lines().map(|line| line.trim_end().to_string() + "\n").collect()
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 job` / `2 jobs`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", ">N"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long".into(), "100".into()]);
        assert_eq!(t.render(), "NAME    N\na       1\nlong  100\n");
        // Short rows print empty cells; the last column is not padded out.
        let mut t = Table::new(&["A", "B", ">C"]);
        t.row(vec!["x".into()]);
        t.row(vec!["y".into(), "bb".into(), "3".into()]);
        assert_eq!(t.render(), "A  B   C\nx\ny  bb  3\n");
        // Cells line up by display width, not by count of chars.
        let mut t = Table::new(&["NAME", "N"]);
        t.row(vec!["日本".into(), "1".into()]);
        assert_eq!(t.render(), "NAME  N\n日本  1\n");
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(plural(1, "job", "jobs"), "1 job");
    }

    #[test]
    fn stored_milliseconds_read_as_rfc3339() {
        assert_eq!(epoch_ms_text("1738310400120").as_deref(), Some("2025-01-31T08:00:00.120Z"));
        assert_eq!(epoch_ms_text("soon"), None);
    }
}
