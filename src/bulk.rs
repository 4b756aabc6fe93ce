//! Reading bulk files row by row and writing exports, as streams: any file size in
//! bounded memory. Shared by the import and export endpoints and the CLI.
//!
//! A problem with one row is that row's error; a problem with the file itself (not UTF-8,
//! not a JSON array, no usable CSV header) is a [`FileError`] and stops the read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::domain::bulk::{csv_header, csv_record, Columns, Format, RowError};
use crate::domain::{AttrType, AttributeDef, Contact};

/// What is wrong with a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError(pub String);

/// One row read: its number and the contact object, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub row: u64,
    pub object: Result<Value, RowError>,
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
    let mut input = BufReader::with_capacity(64 * 1024, input);
    check_encoding(&mut input)?;
    match format {
        Format::Csv => read_csv(input, types, first_row, columns, sink),
        Format::Json => read_json(input, first_row, sink),
        Format::Ndjson => read_ndjson(input, first_row, sink),
    }
}

/// Refuses UTF-16 and UTF-32 files up front, by their byte order mark.
fn check_encoding(input: &mut impl BufRead) -> Result<(), FileError> {
    let head = input
        .fill_buf()
        .map_err(|err| FileError(format!("cannot read the file: {err}")))?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(FileError(
            "the file is UTF-16; save it as UTF-8 and import again".into(),
        ));
    }
    if head.is_empty() {
        return Err(FileError("the file is empty".into()));
    }
    Ok(())
}

fn not_utf8(row: u64) -> FileError {
    FileError(format!(
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
        Some(Err(err)) => return Err(FileError(format!("cannot read the header row: {err}"))),
        None => {
            return Err(FileError(
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
        .map_err(FileError)?;
    for (row, record) in (first_row..).zip(records) {
        let record = record.map_err(|err| FileError(format!("row {row}: {err}")))?;
        let cells: Vec<&str> = record
            .iter()
            .map(std::str::from_utf8)
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
    input: impl BufRead,
    first_row: u64,
    sink: &mut dyn FnMut(Row) -> bool,
) -> Result<(), FileError> {
    for (i, line) in input.split(b'\n').enumerate() {
        let row = first_row + i as u64;
        let line = line.map_err(|err| FileError(format!("cannot read line {row}: {err}")))?;
        let line = std::str::from_utf8(&line).map_err(|_| not_utf8(row))?;
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let object = serde_json::from_str::<Value>(line).map_err(|err| RowError {
            row,
            external_id: None,
            field: None,
            message: format!("not valid JSON: {err}"),
        });
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
        Err(err) if err.classify() == serde_json::error::Category::Data => {
            return Err(FileError(
                "a JSON import is an array of contact objects ([{...}, ...])".into(),
            ))
        }
        Err(err) => return Err(FileError(format!("not valid JSON: {err}"))),
    }
    de.end()
        .map_err(|err| FileError(format!("not valid JSON after the array: {err}")))
}

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
        let mut stopped = false;
        while let Some(value) = seq.next_element::<Value>()? {
            if stopped {
                continue;
            }
            let row = self.next_row;
            self.next_row += 1;
            stopped = !(self.sink)(Row {
                row,
                object: Ok(value),
            });
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// Writes exports chunk by chunk: the opening (CSV header, `[`), rows, the closing.
pub struct ExportWriter {
    format: Format,
    defs: Vec<AttributeDef>,
    rows: u64,
}

impl ExportWriter {
    /// `defs`: the agent's attribute definitions, one CSV column each.
    pub fn new(format: Format, defs: Vec<AttributeDef>) -> Self {
        Self {
            format,
            defs,
            rows: 0,
        }
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
                Format::Csv => out.extend(csv_line(&csv_record(contact, &self.defs))),
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
            .0
            .contains("external_id"));
        assert!(read(Format::Csv, b"external_id\n\xff\xfe\n")
            .unwrap_err()
            .0
            .contains("UTF-8"));
        assert!(read(Format::Csv, b"\xff\xfee\0x\0")
            .unwrap_err()
            .0
            .contains("UTF-16"));
        assert!(read(Format::Json, b"{\"a\":1}")
            .unwrap_err()
            .0
            .contains("array"));
        assert!(read(Format::Json, b"[{\"a\":1},")
            .unwrap_err()
            .0
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
