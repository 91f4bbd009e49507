//! Typed columns for topics whose values are JSON (topic config `parquet.value.format=json`).
//!
//! Besides the `value` bytes (always kept unchanged), such a topic's files get one nullable
//! column per top-level field of its object values, named `value_<field>` (characters outside
//! `[A-Za-z0-9_]` become `_`), typed from the values in that file:
//!
//! ```text
//! every non-null value true/false      boolean
//! every non-null value an integer      int64
//! every non-null value a number        float64
//! every non-null value a string        string
//! anything else (objects, arrays, a mix of kinds)   string holding the field's JSON text
//! ```
//! A record whose value is not a JSON object, or lacks the field, has null there. At most
//! [`FIELDS_MAX`] fields (the most frequent) become columns. Types are per file: engines that
//! read many files unify them by name (DuckDB `union_by_name = true`; pyarrow
//! `unify_schemas(..., promote_options="permissive")`).

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, Schema};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Typed columns one file has at most.
pub const FIELDS_MAX: usize = 100;

/// The prefix of every JSON field's column name.
pub const COLUMN_PREFIX: &str = "value_";

/// What a field holds in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Bool,
    Int,
    Float,
    Text,
    /// Mixed kinds, objects or arrays: the field's JSON text.
    Json,
}

impl JsonType {
    fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(JsonType::Bool),
            Value::Number(n) if n.is_i64() => Some(JsonType::Int),
            Value::Number(_) => Some(JsonType::Float),
            Value::String(_) => Some(JsonType::Text),
            Value::Array(_) | Value::Object(_) => Some(JsonType::Json),
        }
    }

    fn merge(self, other: JsonType) -> JsonType {
        match (self, other) {
            (a, b) if a == b => a,
            (JsonType::Int, JsonType::Float) | (JsonType::Float, JsonType::Int) => JsonType::Float,
            _ => JsonType::Json,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            JsonType::Bool => DataType::Boolean,
            JsonType::Int => DataType::Int64,
            JsonType::Float => DataType::Float64,
            JsonType::Text | JsonType::Json => DataType::Utf8,
        }
    }
}

/// The typed columns of one file: (JSON key, column name, type), in column order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonFields {
    fields: Vec<(String, String, JsonType)>,
}

/// `value_<key>` with characters outside `[A-Za-z0-9_]` replaced.
fn column_name(key: &str) -> String {
    let mut name = String::with_capacity(COLUMN_PREFIX.len() + key.len());
    name.push_str(COLUMN_PREFIX);
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// The top-level fields of a value, if it is a JSON object.
fn object(value: Option<&[u8]>) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(value?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Collects what the values of one file hold, then says which columns to write.
#[derive(Debug, Default)]
pub struct JsonInference {
    seen: HashMap<String, (usize, Option<JsonType>)>,
}

impl JsonInference {
    pub fn observe(&mut self, value: Option<&[u8]>) {
        let Some(map) = object(value) else { return };
        for (key, field) in map {
            let entry = self.seen.entry(key).or_insert((0, None));
            entry.0 += 1;
            if let Some(kind) = JsonType::of(&field) {
                entry.1 = Some(entry.1.map_or(kind, |k| k.merge(kind)));
            }
        }
    }

    /// The most frequent fields (ties by name), each with a distinct column name.
    pub fn finish(self) -> JsonFields {
        let mut by_count: Vec<(String, usize, JsonType)> = self
            .seen
            .into_iter()
            .map(|(key, (count, kind))| (key, count, kind.unwrap_or(JsonType::Text)))
            .collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut names = std::collections::HashSet::new();
        let mut fields = Vec::new();
        for (key, _, kind) in by_count {
            if fields.len() == FIELDS_MAX {
                break;
            }
            let name = column_name(&key);
            if names.insert(name.clone()) {
                fields.push((key, name, kind));
            }
        }
        fields.sort_by(|a, b| a.1.cmp(&b.1));
        JsonFields { fields }
    }
}

impl JsonFields {
    /// The base schema followed by these columns.
    pub fn schema(&self, base: &Schema) -> Arc<Schema> {
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(
            self.fields
                .iter()
                .map(|(_, name, kind)| Field::new(name, kind.data_type(), true)),
        );
        Arc::new(Schema::new(fields))
    }

    pub fn builders(&self) -> JsonBuilders {
        JsonBuilders {
            columns: self
                .fields
                .iter()
                .map(|(key, _, kind)| {
                    let builder = match kind {
                        JsonType::Bool => Builder::Bool(BooleanBuilder::new()),
                        JsonType::Int => Builder::Int(Int64Builder::new()),
                        JsonType::Float => Builder::Float(Float64Builder::new()),
                        JsonType::Text | JsonType::Json => Builder::Text(StringBuilder::new()),
                    };
                    (key.clone(), builder)
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
}

/// The values of the typed columns for the rows not yet written.
#[derive(Debug, Default)]
pub struct JsonBuilders {
    columns: Vec<(String, Builder)>,
}

impl JsonBuilders {
    /// Appends one row: the value's fields, or nulls.
    pub fn append(&mut self, value: Option<&[u8]>) {
        if self.columns.is_empty() {
            return;
        }
        let map = object(value).unwrap_or_default();
        for (key, builder) in &mut self.columns {
            let field = map.get(key).filter(|v| !v.is_null());
            match builder {
                Builder::Bool(b) => b.append_option(field.and_then(Value::as_bool)),
                Builder::Int(b) => b.append_option(field.and_then(Value::as_i64)),
                Builder::Float(b) => b.append_option(field.and_then(Value::as_f64)),
                Builder::Text(b) => b.append_option(field.map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })),
            }
        }
    }

    /// The columns so far, emptying the builders.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns
            .iter_mut()
            .map(|(_, builder)| -> ArrayRef {
                match builder {
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                    Builder::Text(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_one_type_per_field_and_names_columns_safely() {
        let mut inference = JsonInference::default();
        for value in [
            &br#"{"price": 3, "qty": 1, "user": "ann", "ok": true, "tags": ["a"], "odd key": 1}"#[..],
            br#"{"price": 2.5, "qty": 2, "user": "bob", "ok": false, "tags": {"x": 1}}"#,
            br#"{"price": null, "user": 7}"#,
            br#"not json"#,
            br#"[1, 2]"#,
        ] {
            inference.observe(Some(value));
        }
        inference.observe(None);
        let fields = inference.finish();
        let got: Vec<(&str, &str, JsonType)> = fields
            .fields
            .iter()
            .map(|(k, n, t)| (k.as_str(), n.as_str(), *t))
            .collect();
        assert_eq!(
            got,
            vec![
                ("odd key", "value_odd_key", JsonType::Int),
                ("ok", "value_ok", JsonType::Bool),
                ("price", "value_price", JsonType::Float),
                ("qty", "value_qty", JsonType::Int),
                ("tags", "value_tags", JsonType::Json),
                ("user", "value_user", JsonType::Json),
            ]
        );
        let mut builders = fields.builders();
        builders.append(Some(br#"{"price": 4, "tags": [1], "user": "x"}"#));
        builders.append(Some(b"garbage"));
        let columns = builders.finish();
        assert_eq!(columns.len(), 6);
        assert!(columns.iter().all(|c| c.len() == 2));
        assert_eq!(columns[1].null_count(), 2, "ok is null in both rows");
    }
}
