//! The pprof protobuf model (profile.proto of github.com/google/pprof), as
//! prost messages, plus gzip encoding and decoding.
//!
//! Field numbers follow profile.proto exactly; that file is the contract with
//! `go tool pprof` and every other pprof client.

use std::io::{Read, Write};

use prost::Message;

use crate::error::{Error, Result};

/// A whole profile: samples, the locations and functions they point at, and
/// the string table every name is an index into (`string_table[0] == ""`).
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    /// What each value of a sample measures, in order.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Memory mappings of the process; the main binary comes first.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Program locations (addresses with their symbolized lines).
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by locations.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings of the profile; index 0 is the empty string.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regexp (string index) of frames to drop when displaying.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regexp (string index) of frames to keep when displaying.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Time of collection, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Duration of collection in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// The kind of events between sampled occurrences.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Number of events between sampled occurrences.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index into the string table of the preferred sample type.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A sample type or period type: string indices of type and unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct ValueType {
    /// String index of the type, e.g. "inuse_space".
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// String index of the unit, e.g. "bytes".
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One sample: a call stack (leaf first) and its values.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels (string or numeric).
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: `key` with either a string (`str`) or a number (`num`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the value, for string labels.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The value, for numeric labels.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the unit of `num`.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A mapped object (executable or shared library).
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapping.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// One past the last address of the mapping.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset the mapping starts at.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the object's path.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the GNU build ID, as lowercase hex.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations in this mapping have function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Locations in this mapping have file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Locations in this mapping have line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Locations in this mapping have inlined frames resolved.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program address and what it resolves to.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Id of the mapping holding `address`, 0 if unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The instruction address (callers: return address − 1).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost inlined frame first; the last line is the real function.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several addresses were folded into this location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A source line inside a function.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Line {
    /// Id of the function.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Line number, 0 if unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Column number, 0 if unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function: its names and source file.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Function {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the human-readable name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the mangled (linker) name.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line of the function, 0 if unknown.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

impl Profile {
    /// The string at `index`, or "" when out of range.
    pub fn string(&self, index: i64) -> &str {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.string_table.get(i))
            .map_or("", String::as_str)
    }

    /// Adds a free-form comment (shown by `go tool pprof -raw` and `-comments`).
    pub fn add_comment(&mut self, text: &str) {
        let index = match self.string_table.iter().position(|s| s == text) {
            Some(i) => i as i64,
            None => {
                self.string_table.push(text.to_owned());
                self.string_table.len() as i64 - 1
            }
        };
        self.comment.push(index);
    }

    /// `(type, unit)` names of the sample types, in order.
    pub fn sample_type_names(&self) -> Vec<(&str, &str)> {
        self.sample_type
            .iter()
            .map(|vt| (self.string(vt.r#type), self.string(vt.unit)))
            .collect()
    }

    /// Encodes as gzipped protobuf, the form every pprof client reads.
    pub fn encode_gzip(&self) -> Vec<u8> {
        let raw = self.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 3 + 64),
            flate2::Compression::default(),
        );
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    }

    /// Decodes a profile, gzipped or not. `origin` names the source in errors.
    pub fn decode_bytes(bytes: &[u8], origin: &str) -> Result<Profile> {
        let invalid = |message: String| Error::InvalidProfile {
            origin: origin.to_owned(),
            message,
        };
        let owned;
        let raw: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| invalid(format!("gzip stream is damaged or truncated ({e})")))?;
            owned = out;
            &owned
        } else {
            bytes
        };
        if raw.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let profile = Profile::decode(raw).map_err(|e| invalid(format!("protobuf: {e}")))?;
        profile.validate().map_err(invalid)?;
        Ok(profile)
    }

    /// Checks the invariants pprof clients rely on: string 0 is empty, ids are
    /// unique and non-zero, references resolve, value counts match.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.string_table.first().map(String::as_str) != Some("") {
            return Err("string_table[0] must be the empty string".into());
        }
        let strings = self.string_table.len() as i64;
        let check_str = |i: i64, what: &str| {
            if (0..strings).contains(&i) {
                Ok(())
            } else {
                Err(format!("{what} refers to string {i}, beyond the table"))
            }
        };
        let mut mapping_ids = std::collections::HashSet::new();
        for m in &self.mapping {
            if m.id == 0 || !mapping_ids.insert(m.id) {
                return Err(format!("mapping id {} is zero or repeated", m.id));
            }
            check_str(m.filename, "mapping filename")?;
            check_str(m.build_id, "mapping build id")?;
        }
        let mut function_ids = std::collections::HashSet::new();
        for f in &self.function {
            if f.id == 0 || !function_ids.insert(f.id) {
                return Err(format!("function id {} is zero or repeated", f.id));
            }
            check_str(f.name, "function name")?;
            check_str(f.system_name, "function system name")?;
            check_str(f.filename, "function filename")?;
        }
        let mut location_ids = std::collections::HashSet::new();
        for l in &self.location {
            if l.id == 0 || !location_ids.insert(l.id) {
                return Err(format!("location id {} is zero or repeated", l.id));
            }
            if l.mapping_id != 0 && !mapping_ids.contains(&l.mapping_id) {
                return Err(format!(
                    "location {} refers to unknown mapping {}",
                    l.id, l.mapping_id
                ));
            }
            if let Some(line) = l
                .line
                .iter()
                .find(|ln| !function_ids.contains(&ln.function_id))
            {
                return Err(format!(
                    "location {} refers to unknown function {}",
                    l.id, line.function_id
                ));
            }
        }
        for vt in &self.sample_type {
            check_str(vt.r#type, "sample type")?;
            check_str(vt.unit, "sample unit")?;
        }
        for (i, s) in self.sample.iter().enumerate() {
            if s.value.len() != self.sample_type.len() {
                return Err(format!(
                    "sample {i} has {} values for {} sample types",
                    s.value.len(),
                    self.sample_type.len()
                ));
            }
            if let Some(id) = s.location_id.iter().find(|id| !location_ids.contains(id)) {
                return Err(format!("sample {i} refers to unknown location {id}"));
            }
        }
        Ok(())
    }
}
