//! Reading bulk files row by row and writing exports, as streams: any file size in
//! bounded memory. Shared by the import and export endpoints and the CLI.
//!
//! A problem with one row is that row's error; a problem with the file itself (not UTF-8,
//! not a JSON array, no usable CSV header) is a [`FileError`] and stops the read.
//!
//! Memory stays bounded whatever a file's shape: no record is read past
//! [`max_record_bytes`] (longer than any valid contact can be written), counted as the
//! bytes stream in, and a JSON row keeps at most [`MAX_ROW_VALUES`] values; the rest of
//! a larger row is read past without being kept.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::domain::attr::{MAX_ATTRIBUTES, MAX_TEXT_CHARS};
use crate::domain::bulk::{
    csv_header, csv_record, neutralize_cell, restore_cell, Columns, Format, RowError,
};
use crate::domain::{AttrType, AttributeDef, Contact};

/// What is wrong with a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file cannot be read as its format says.
    Invalid(String),
    /// A record is longer than any valid contact row; reading stopped there.
    RecordTooLong { row: u64, limit: u64 },
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(message) => f.write_str(message),
            Self::RecordTooLong { row, limit } => write!(
                f,
                "row {row} is longer than {limit} bytes, more than any valid contact takes; nothing was imported"
            ),
        }
    }
}

/// One row read: its number and the contact object, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub row: u64,
    pub object: Result<Value, RowError>,
}

/// Most values (scalars, arrays and objects, at any depth) one JSON row may hold. A
/// valid contact has about 200 at most (9 fields, 20 Stripe accounts of 3, 100
/// attributes); unknown keys are allowed but ignored, so a row may carry some more.
pub const MAX_ROW_VALUES: usize = 10_000;

/// Bytes read ahead of the parser; a record is measured to within this.
const READ_AHEAD: usize = 64 * 1024;

/// The longest record a file of `format` may hold: more than the largest valid contact
/// row. That row has 100 attribute values of 4096 characters; a character takes at
/// most 4 bytes in CSV (a doubled quote takes 2), and in JSON at most 12 (a `\uXXXX`
/// escape for each half of a surrogate pair). The core fields, Stripe accounts and
/// names fit in the 64 KiB added.
pub fn max_record_bytes(format: Format) -> u64 {
    let per_char = match format {
        Format::Csv => 4,
        Format::Json | Format::Ndjson => 12,
    };
    let value = per_char * MAX_TEXT_CHARS as u64 + 128;
    let bytes = MAX_ATTRIBUTES as u64 * value + 64 * 1024;
    // Whole MiB, so the limit reads well in messages.
    bytes.div_ceil(1 << 20) << 20
}

/// How far the current record has come: bytes pulled from the file since the last row
/// was delivered, and that row's successor's number.
struct Budget {
    since_row: Cell<u64>,
    limit: u64,
    next_row: Cell<u64>,
    tripped: Cell<bool>,
}

impl Budget {
    fn delivered(&self, row: u64) {
        self.since_row.set(0);
        self.next_row.set(row + 1);
    }

    /// The error for the record that tripped the limit, if one did.
    fn too_long(&self) -> Option<FileError> {
        self.tripped.get().then(|| FileError::RecordTooLong {
            row: self.next_row.get(),
            limit: self.limit,
        })
    }
}

/// The file, failing once a record has pulled more than its budget allows.
struct Metered<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let budget = &self.budget;
        if budget.since_row.get() > budget.limit + READ_AHEAD as u64 {
            budget.tripped.set(true);
            return Err(std::io::Error::other("record too long"));
        }
        let n = self.inner.read(buf)?;
        budget.since_row.set(budget.since_row.get() + n as u64);
        Ok(n)
    }
}

/// Reads `input` as `format`, handing each row to `sink` until it returns false. Rows
/// are numbered from `first_row` (CSV: the first data row, under the header). For CSV,
/// `types` types the attribute cells and `columns` receives the header.
pub fn read_rows(
    input: impl Read,
    format: Format,
    types: &BTreeMap<String, AttrType>,
    first_row: u64,
    columns: &mut Option<Columns>,
    sink: &mut dyn FnMut(Row) -> bool,
) -> Result<(), FileError> {
    let budget = Rc::new(Budget {
        since_row: Cell::new(0),
        limit: max_record_bytes(format),
        // A CSV header is row 1, above the first data row.
        next_row: Cell::new(if format == Format::Csv {
            first_row - 1
        } else {
            first_row
        }),
        tripped: Cell::new(false),
    });
    let metered = Metered {
        inner: input,
        budget: Rc::clone(&budget),
    };
    let mut input = BufReader::with_capacity(READ_AHEAD, metered);
    let mut counted = |row: Row| {
        budget.delivered(row.row);
        sink(row)
    };
    let result = check_encoding(&mut input).and_then(|()| match format {
        Format::Csv => read_csv(input, types, first_row, columns, &mut counted),
        Format::Json => read_json(input, first_row, &mut counted),
        Format::Ndjson => read_ndjson(input, first_row, &budget, &mut counted),
    });
    match budget.too_long() {
        Some(err) => Err(err),
        None => result,
    }
}

/// Refuses UTF-16 and UTF-32 files up front, by their byte order mark.
fn check_encoding(input: &mut impl BufRead) -> Result<(), FileError> {
    let head = input
        .fill_buf()
        .map_err(|err| FileError::Invalid(format!("cannot read the file: {err}")))?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(FileError::Invalid(
            "the file is UTF-16; save it as UTF-8 and import again".into(),
        ));
    }
    if head.is_empty() {
        return Err(FileError::Invalid("the file is empty".into()));
    }
    Ok(())
}

fn not_utf8(row: u64) -> FileError {
    FileError::Invalid(format!(
        "row {row} is not valid UTF-8; save the file as UTF-8 and import again"
    ))
}

fn read_csv(
    input: impl Read,
    types: &BTreeMap<String, AttrType>,
    first_row: u64,
    columns_out: &mut Option<Columns>,
    sink: &mut dyn FnMut(Row) -> bool,
) -> Result<(), FileError> {
    let mut reader = csv_reader(input);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(err)) => {
            return Err(FileError::Invalid(format!(
                "cannot read the header row: {err}"
            )))
        }
        None => {
            return Err(FileError::Invalid(
                "the file is empty; a CSV import needs a header row".into(),
            ))
        }
    };
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let cell = std::str::from_utf8(cell).map_err(|_| not_utf8(1))?;
            Ok(if i == 0 {
                cell.trim_start_matches('\u{feff}').to_owned()
            } else {
                cell.to_owned()
            })
        })
        .collect::<Result<_, FileError>>()?;
    let columns = Columns::parse(&header.iter().map(String::as_str).collect::<Vec<_>>())
        .map_err(FileError::Invalid)?;
    for (row, record) in (first_row..).zip(records) {
        let record = record.map_err(|err| FileError::Invalid(format!("row {row}: {err}")))?;
        let cells: Vec<&str> = record
            .iter()
            .map(|cell| std::str::from_utf8(cell).map(restore_cell))
            .collect::<Result<_, _>>()
            .map_err(|_| not_utf8(row))?;
        let object = columns
            .to_object(&cells, types)
            .map_err(|(field, message)| {
                let external_id = columns.external_id(&cells);
                RowError {
                    row,
                    external_id,
                    field: Some(field),
                    message,
                }
            });
        if !sink(Row { row, object }) {
            break;
        }
    }
    *columns_out = Some(columns);
    Ok(())
}

fn read_ndjson(
    mut input: impl BufRead,
    first_row: u64,
    budget: &Budget,
    sink: &mut dyn FnMut(Row) -> bool,
) -> Result<(), FileError> {
    let mut line = Vec::new();
    for row in first_row.. {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|err| FileError::Invalid(format!("cannot read line {row}: {err}")))?;
        if read == 0 {
            break;
        }
        let text = std::str::from_utf8(&line).map_err(|_| not_utf8(row))?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            // A blank line is not a row, but the next one is numbered after it.
            budget.delivered(row);
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let object = bounded_value(&mut de)
            .and_then(|value| de.end().map(|()| value).map_err(|err| err.to_string()))
            .map_err(|message| RowError {
                row,
                external_id: None,
                field: None,
                message: format!("not valid JSON: {message}"),
            })
            .and_then(|value| value.ok_or_else(|| too_many_values(row)));
        if !sink(Row { row, object }) {
            break;
        }
    }
    Ok(())
}

fn read_json(
    input: impl Read,
    first_row: u64,
    sink: &mut dyn FnMut(Row) -> bool,
) -> Result<(), FileError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let elements = Elements {
        next_row: first_row,
        sink,
    };
    match de.deserialize_seq(elements) {
        Ok(()) => {}
        Err(err) if err.to_string().starts_with(STOPPED) => return Ok(()),
        Err(err) if err.classify() == serde_json::error::Category::Data => {
            return Err(FileError::Invalid(
                "a JSON import is an array of contact objects ([{...}, ...])".into(),
            ))
        }
        Err(err) => return Err(FileError::Invalid(format!("not valid JSON: {err}"))),
    }
    de.end()
        .map_err(|err| FileError::Invalid(format!("not valid JSON after the array: {err}")))
}

fn too_many_values(row: u64) -> RowError {
    RowError {
        row,
        external_id: None,
        field: Some("row".into()),
        message: format!("holds more than {MAX_ROW_VALUES} values; a contact has far fewer"),
    }
}

/// The error that ends a JSON array's read when the sink wants no more rows.
const STOPPED: &str = "contactd: the reader stopped";

/// Hands each element of a JSON array to the sink as it is parsed.
struct Elements<'a> {
    next_row: u64,
    sink: &'a mut dyn FnMut(Row) -> bool,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of contact objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let left = Cell::new(MAX_ROW_VALUES);
            let Some(value) = seq.next_element_seed(Bounded { left: &left })? else {
                return Ok(());
            };
            let row = self.next_row;
            self.next_row += 1;
            let go_on = (self.sink)(Row {
                row,
                object: value.ok_or_else(|| too_many_values(row)),
            });
            if !go_on {
                // Nothing more is wanted: stop reading rather than parse the rest.
                return Err(serde::de::Error::custom(STOPPED));
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// One JSON value of at most [`MAX_ROW_VALUES`] values, `None` when it holds more.
fn bounded_value<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Value>, String> {
    let left = Cell::new(MAX_ROW_VALUES);
    Bounded { left: &left }
        .deserialize(de)
        .map_err(|err| err.to_string())
}

/// Builds a [`Value`] while `left` allows one more value; past that it reads the rest
/// without keeping it and gives `None`.
struct Bounded<'a> {
    left: &'a Cell<usize>,
}

impl Bounded<'_> {
    /// Counts one more value; false once none are left.
    fn take(&self) -> bool {
        let left = self.left.get();
        self.left.set(left.saturating_sub(1));
        left > 0
    }

    fn keep(&self, value: Value) -> Option<Value> {
        self.take().then_some(value)
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.keep(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.keep(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.keep(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.keep(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.keep(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(self.keep(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.keep(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(self.keep(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = self.take().then(Vec::new);
        while let Some(item) = seq.next_element_seed(Bounded { left: self.left })? {
            match (&mut items, item) {
                (Some(list), Some(item)) => list.push(item),
                _ => items = None,
            }
        }
        Ok(items.map(Value::Array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = self.take().then(Map::new);
        while let Some(key) = map.next_key::<String>()? {
            if object.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match map.next_value_seed(Bounded { left: self.left })? {
                Some(value) => {
                    if let Some(object) = &mut object {
                        object.insert(key, value);
                    }
                }
                None => object = None,
            }
        }
        Ok(object.map(Value::Object))
    }
}

/// Writes exports chunk by chunk: the opening (CSV header, `[`), rows, the closing.
pub struct ExportWriter {
    format: Format,
    defs: Vec<AttributeDef>,
    rows: u64,
    /// CSV cells as stored, without [`neutralize_cell`]'s quote (`?raw=true`).
    raw: bool,
}

impl ExportWriter {
    /// `defs`: the agent's attribute definitions, one CSV column each.
    pub fn new(format: Format, defs: Vec<AttributeDef>) -> Self {
        Self {
            format,
            defs,
            rows: 0,
            raw: false,
        }
    }

    /// Writes CSV cells as stored, formulas included.
    #[must_use]
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    pub fn start(&self) -> Vec<u8> {
        match self.format {
            Format::Csv => csv_line(&csv_header(&self.defs)),
            Format::Json => b"[".to_vec(),
            Format::Ndjson => Vec::new(),
        }
    }

    pub fn rows(&mut self, contacts: &[Contact]) -> Vec<u8> {
        let mut out = Vec::with_capacity(contacts.len() * 256);
        for contact in contacts {
            match self.format {
                Format::Csv => {
                    let mut cells = csv_record(contact, &self.defs);
                    if !self.raw {
                        cells = cells.into_iter().map(neutralize_cell).collect();
                    }
                    out.extend(csv_line(&cells));
                }
                Format::Json => {
                    out.extend_from_slice(if self.rows == 0 { b"\n" } else { b",\n" });
                    out.extend(serde_json::to_vec(&contact.to_json()).unwrap_or_default());
                }
                Format::Ndjson => {
                    out.extend(serde_json::to_vec(&contact.to_json()).unwrap_or_default());
                    out.push(b'\n');
                }
            }
            self.rows += 1;
        }
        out
    }

    pub fn end(&self) -> Vec<u8> {
        match self.format {
            Format::Json => b"\n]\n".to_vec(),
            Format::Csv | Format::Ndjson => Vec::new(),
        }
    }
}

/// A CSV reader that hands out the header as the first record and lets rows have any
/// number of cells (a short or long row is that row's error, not the file's).
pub fn csv_reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input)
}

/// One CSV line, quoted where needed, ending in CRLF as RFC 4180 says.
pub fn csv_line<S: AsRef<[u8]>>(cells: &[S]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(cells);
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(format: Format, text: &[u8]) -> Result<Vec<Row>, FileError> {
        let mut rows = Vec::new();
        let mut columns = None;
        read_rows(text, format, &BTreeMap::new(), 2, &mut columns, &mut |r| {
            rows.push(r);
            true
        })?;
        Ok(rows)
    }

    #[test]
    fn csv_handles_bom_quotes_newlines_and_crlf() {
        let text = "\u{feff}external_id,name,note\r\nu1,\"Rivera, Sam\",\"two\r\nlines\"\r\nu2,\"say \"\"hi\"\"\",\r\n";
        let rows = read(Format::Csv, text.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 2);
        assert_eq!(
            rows[0].object.as_ref().unwrap(),
            &json!({"external_id": "u1", "name": "Rivera, Sam", "custom_attributes": {"note": "two\r\nlines"}})
        );
        assert_eq!(rows[1].row, 3, "an embedded newline is still one row");
        assert_eq!(rows[1].object.as_ref().unwrap()["name"], "say \"hi\"");
    }

    #[test]
    fn file_level_problems_are_file_errors() {
        assert!(read(Format::Csv, b"").is_err());
        assert!(read(Format::Csv, b"name\nSam\n")
            .unwrap_err()
            .to_string()
            .contains("external_id"));
        assert!(read(Format::Csv, b"external_id\n\xff\xfe\n")
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert!(read(Format::Csv, b"\xff\xfee\0x\0")
            .unwrap_err()
            .to_string()
            .contains("UTF-16"));
        assert!(read(Format::Json, b"{\"a\":1}")
            .unwrap_err()
            .to_string()
            .contains("array"));
        assert!(read(Format::Json, b"[{\"a\":1},")
            .unwrap_err()
            .to_string()
            .contains("JSON"));
    }

    #[test]
    fn json_and_ndjson_rows_are_numbered() {
        let rows = read(Format::Json, b"[{\"external_id\":\"a\"}, 5]").unwrap();
        assert_eq!((rows[0].row, rows[1].row), (2, 3));
        assert_eq!(rows[1].object.as_ref().unwrap(), &json!(5));
        let rows = read(Format::Ndjson, b"{\"external_id\":\"a\"}\n\nnot json\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].row, 4, "blank lines count as lines");
        assert!(rows[1].object.is_err());
    }

    /// A reader of `head`, then `n` bytes of `fill`, then `tail`, made as it is read.
    fn generated<'a>(head: &'a str, fill: u8, n: u64, tail: &'a str) -> impl Read + 'a {
        head.as_bytes()
            .chain(std::io::repeat(fill).take(n))
            .chain(tail.as_bytes())
    }

    fn read_from(format: Format, input: impl Read) -> (Vec<Row>, Result<(), FileError>) {
        let mut rows = Vec::new();
        let mut columns = None;
        let first = if format == Format::Csv { 2 } else { 1 };
        let result = read_rows(
            input,
            format,
            &BTreeMap::new(),
            first,
            &mut columns,
            &mut |r| {
                rows.push(r);
                true
            },
        );
        (rows, result)
    }

    #[test]
    fn a_record_longer_than_any_valid_row_stops_the_read_naming_its_row() {
        for (format, head, tail) in [
            (Format::Csv, "external_id,name\nu1,Sam\nu2,", "\nu3,Ann\n"),
            (
                Format::Ndjson,
                "{\"external_id\":\"u1\"}\n\n{\"external_id\":\"",
                "\"}\n",
            ),
            (
                Format::Json,
                "[{\"external_id\":\"u1\"},{\"external_id\":\"",
                "\"}]",
            ),
        ] {
            let limit = max_record_bytes(format);
            let (rows, result) = read_from(format, generated(head, b'a', limit + (1 << 20), tail));
            let row = if format == Format::Json { 2 } else { 3 };
            assert_eq!(
                result,
                Err(FileError::RecordTooLong { row, limit }),
                "{format:?}"
            );
            assert_eq!(rows.len(), 1, "{format:?}: the row before it was read");
        }
    }

    #[test]
    fn the_largest_valid_row_fits_in_every_format() {
        // 100 attributes of 4096 characters outside the Basic Multilingual Plane, each
        // written as JSON escapes of both surrogates (the longest spelling) or as
        // 4-byte UTF-8 in CSV.
        let escaped = "\\ud83d\\ude00".repeat(MAX_TEXT_CHARS);
        let attrs: Vec<String> = (0..MAX_ATTRIBUTES)
            .map(|i| format!("\"attribute_{i:0>53}\":\"{escaped}\""))
            .collect();
        let object = format!(
            "{{\"external_id\":\"{}\",\"name\":\"{}\",\"custom_attributes\":{{{}}}}}",
            "e".repeat(255),
            "\\ud83d\\ude00".repeat(255),
            attrs.join(",")
        );
        let (rows, result) = read_from(Format::Ndjson, object.as_bytes());
        assert_eq!(result, Ok(()));
        assert!(rows[0].object.is_ok());
        let json = format!("[{object}]");
        let (rows, result) = read_from(Format::Json, json.as_bytes());
        assert_eq!((result, rows.len()), (Ok(()), 1));
        let value = "\u{1F600}".repeat(MAX_TEXT_CHARS);
        let header: Vec<String> = (0..MAX_ATTRIBUTES).map(|i| format!("a{i}")).collect();
        let csv = format!(
            "external_id,{}\nu1,{}\n",
            header.join(","),
            vec![value; MAX_ATTRIBUTES].join(",")
        );
        let (rows, result) = read_from(Format::Csv, csv.as_bytes());
        assert_eq!((result, rows.len()), (Ok(()), 1));
    }

    #[test]
    fn a_json_row_with_too_many_values_is_that_rows_error_and_the_next_is_read() {
        let many = vec!["0"; MAX_ROW_VALUES + 1].join(",");
        for (format, text) in [
            (
                Format::Json,
                format!("[{{\"external_id\":\"a\",\"x\":[{many}]}},{{\"external_id\":\"b\"}}]"),
            ),
            (
                Format::Ndjson,
                format!("{{\"external_id\":\"a\",\"x\":[{many}]}}\n{{\"external_id\":\"b\"}}\n"),
            ),
        ] {
            let (rows, result) = read_from(format, text.as_bytes());
            assert_eq!(result, Ok(()), "{format:?}");
            assert_eq!(rows.len(), 2, "{format:?}");
            let err = rows[0].object.as_ref().unwrap_err();
            assert_eq!(err.field.as_deref(), Some("row"));
            assert!(
                err.message.contains("more than 10000 values"),
                "{}",
                err.message
            );
            assert_eq!(rows[1].object.as_ref().unwrap()["external_id"], "b");
        }
    }

    #[test]
    fn bounded_values_equal_plain_parsing_below_the_limit() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9","a":0}"#;
        let mut de = serde_json::Deserializer::from_str(text);
        let bounded = bounded_value(&mut de).unwrap().unwrap();
        assert_eq!(bounded, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn exports_are_well_formed() {
        let contact = Contact {
            id: 1,
            external_id: "u1".into(),
            name: Some("Zoë \"Z\", Jr".into()),
            email: None,
            phonenumber: None,
            stripe_accounts: vec![],
            custom_attributes: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
            ..Contact::default()
        };
        let mut json_out = ExportWriter::new(Format::Json, vec![]);
        let mut bytes = json_out.start();
        bytes.extend(json_out.rows(&[contact.clone(), contact.clone()]));
        bytes.extend(json_out.end());
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 2);
        let mut csv_out = ExportWriter::new(Format::Csv, vec![]);
        let mut bytes = csv_out.start();
        bytes.extend(csv_out.rows(&[contact]));
        let rows = read(Format::Csv, &bytes).unwrap();
        assert_eq!(rows[0].object.as_ref().unwrap()["name"], "Zoë \"Z\", Jr");
    }
}
