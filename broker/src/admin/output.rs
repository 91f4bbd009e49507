//! What the admin commands print: aligned tables for people, one JSON document for scripts.

use super::Output;
use comfy_table::{presets, CellAlignment, ContentArrangement, Table as Comfy};
use serde::Serialize;

/// A table printed with aligned, borderless columns (as `kafka-topics` and `rpk` print).
pub struct Table {
    table: Comfy,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        let mut table = Comfy::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.to_vec());
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
            column.set_cell_alignment(CellAlignment::Left);
        }
        Table { table }
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.table
            .add_row(cells.into_iter().map(|c| c.to_string()).collect::<Vec<_>>());
        self
    }

    pub fn print(&self) {
        for line in self.table.lines() {
            println!("{}", line.trim_end());
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON, or `table()`'s tables for people.
pub fn show<T: Serialize>(output: Output, value: &T, table: impl FnOnce(&T)) -> anyhow::Result<()> {
    match output {
        Output::Json => json(value),
        Output::Table => {
            table(value);
            Ok(())
        }
    }
}

/// A failure of one item of a command (the command goes on and exits 1).
pub fn failed(what: &str, why: &str) {
    eprintln!("error: {what}: {why}");
}

/// An empty cell: `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}
