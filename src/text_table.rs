//! Plain-text tables for a terminal: the one renderer behind the demo's live
//! table and `bms-gateway status`. Each column is as wide as its widest cell
//! or its title, so the columns line up whatever the names are (a serial
//! port's path is much wider than `can0`).

use std::fmt::Write;

/// Which side of its column a cell keeps to: text left, numbers right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns between two cells.
const GAP: &str = "  ";

/// A table being filled: titles first, then rows of cells.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells at its end are left empty; extra cells
    /// are a programming error.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert!(cells.len() <= self.columns.len(), "more cells than columns");
        self.rows.push(cells);
    }

    /// The title line and one line per row, each ending in a newline.
    /// Trailing blanks are trimmed.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        let titles: Vec<&str> = self.columns.iter().map(|(title, _)| *title).collect();
        self.line(&mut out, &widths, &titles);
        for row in &self.rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.line(&mut out, &widths, &cells);
        }
        out
    }

    fn widths(&self) -> Vec<usize> {
        let cell_width = |k: usize| {
            let rows = self.rows.iter().filter_map(|r| r.get(k)).map(|c| c.chars().count());
            rows.max().unwrap_or(0)
        };
        let titles = self.columns.iter().map(|(title, _)| title.chars().count());
        titles.enumerate().map(|(k, title)| title.max(cell_width(k))).collect()
    }

    fn line(&self, out: &mut String, widths: &[usize], cells: &[&str]) {
        let mut line = String::new();
        for (k, ((_, align), width)) in self.columns.iter().zip(widths).enumerate() {
            let cell = cells.get(k).copied().unwrap_or("");
            if k > 0 {
                line.push_str(GAP);
            }
            let _ = match align {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A number with `decimals` decimals, or `-` when there is none.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_line_up() {
        let mut t = Table::new(&[("NAME", Align::Left), ("IF", Align::Left), ("SOC", Align::Right)]);
        t.row(vec!["1".into(), "can0".into(), "55".into()]);
        t.row(vec!["2".into(), "/dev/ttyUSB0".into(), "100".into()]);
        t.row(vec!["COMBINED".into()]);
        // Widths worked out by hand: NAME 8 (COMBINED), IF 12 (the path),
        // SOC 3; two blanks between columns; trailing blanks trimmed.
        assert_eq!(
            t.render(),
            "NAME      IF            SOC\n\
             1         can0           55\n\
             2         /dev/ttyUSB0  100\n\
             COMBINED\n"
        );
    }

    #[test]
    fn a_missing_number_is_a_dash() {
        assert_eq!(number(None, 2), "-");
        assert_eq!(number(Some(52.126), 2), "52.13");
        assert_eq!(number(Some(-3.04), 1), "-3.0");
    }
}
