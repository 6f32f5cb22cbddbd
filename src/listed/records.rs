//! Collection records as a block list: the database says what each block
//! needs (docs/protocol.md, "Collection records").
//!
//! Two forms, told apart by their first line ([`detect`]):
//!
//! - **CSV with a header**, as `psql -c "\copy (select uuid,
//!   replication_desired, storage_classes_desired, manifest_text from
//!   collections ...) to stdout with csv header"` writes it: RFC 4180
//!   quoting (the `csv` crate), so manifest text with its newlines sits in
//!   one quoted field; `storage_classes_desired` is a JSON array; an empty
//!   field is SQL null;
//! - **JSON lines**, one collection object per line (`jq -c '.items[]'` of
//!   `arv collection list`), or one page object `{"items": [...]}` per line.
//!
//! Columns and fields: `manifest_text` (required), `uuid`,
//! `replication_desired`, `storage_classes_desired`; others are ignored.
//! A manifest is checked as Arvados checks one (stream name, then block
//! locators, then file segments `POS:LEN:NAME`, on each line): a broken
//! manifest or a bad `replication_desired` refuses the list (exit 2),
//! naming the line and the collection's uuid.
//!
//! Memory: one record at a time (its manifest text whole), plus the sorter.

use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;

use super::parse::{classify, Word};
use super::sort::Listed;
use crate::index::Entry;
use crate::wants::{WantId, Wants, MAX_REPLICATION};

/// What a list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Locators, hashes or manifest text (`listed::parse`).
    Plain,
    /// Collection records, CSV with a header.
    Csv,
    /// Collection records, one JSON object per line.
    JsonLines,
}

impl Form {
    pub fn describe(self) -> &'static str {
        match self {
            Form::Plain => "block locators",
            Form::Csv => "collection records (CSV)",
            Form::JsonLines => "collection records (JSON lines)",
        }
    }
}

/// Tell the form from the start of the input (its first line, or as much
/// of it as `head` holds).
pub fn detect(head: &[u8]) -> Form {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Form::Plain;
    };
    let rest = &head[start..];
    if rest[0] == b'{' {
        return Form::JsonLines;
    }
    let mut lines = rest.split(|&b| b == b'\n');
    let line = lines.next().unwrap_or(rest);
    // psql's aligned output (`psql -c`, not `-At` or `--csv`) has the
    // column name too, then a rule of dashes: a plain list of manifests.
    if lines
        .next()
        .is_some_and(|l| l.trim_ascii_start().starts_with(b"-"))
    {
        return Form::Plain;
    }
    let is_header = line
        .split(|&b| b == b',')
        .map(|f| {
            let f = f.trim_ascii();
            f.strip_prefix(b"\"")
                .and_then(|f| f.strip_suffix(b"\""))
                .unwrap_or(f)
        })
        .any(|f| f.eq_ignore_ascii_case(b"manifest_text"));
    if is_header {
        Form::Csv
    } else {
        Form::Plain
    }
}

/// What reading the records gave.
#[derive(Default)]
pub struct Counts {
    pub records: u64,
    pub locators: u64,
    pub lines: u64,
}

/// Why a record list was refused; the caller names the file.
#[derive(Debug)]
pub struct Bad {
    pub line: u64,
    /// The record's `uuid`, when it has one.
    pub uuid: Option<String>,
    pub why: String,
}

/// Options every record is read with.
pub struct Reading<'a> {
    /// `--storage-classes`: replaces every record's classes.
    pub classes: Option<&'a [String]>,
}

/// One collection's fields, whichever form they came in.
struct Record<'a> {
    line: u64,
    uuid: Option<&'a str>,
    replication: Option<u32>,
    classes: Vec<String>,
    manifest: &'a str,
}

/// The longest collection record read (a JSON line, or a CSV record with
/// its quoted manifest), in bytes: 1 GiB. A record is held whole while it
/// is read, so an endless line (a file that is not a record list, a
/// runaway export) must not take all memory. Arvados bounds a manifest by
/// the API server's `MaxRequestSize` (128 MiB by default), and a page of
/// `arv collection list` by `MaxIndexDatabaseRead` (128 MiB by default)
/// plus its first row; JSON escaping at most doubles manifest text (its
/// newlines). 1 GiB is four times that, for sites that raised the limits,
/// and keeps the worst case (the line and its parsed strings) at a few
/// GiB.
pub const RECORD_MAX: usize = 1 << 30;

/// Read collection records of `form` from `input`, handing each block
/// (with its collection's want) to `on`; an `Err` from `on` is an I/O
/// error of the caller's (the sort's temporary files).
pub fn read(
    input: impl Read,
    form: Form,
    opts: &Reading<'_>,
    wants: &mut Wants,
    on: &mut impl FnMut(Listed, &mut Wants),
) -> Result<Counts, ReadError> {
    read_capped(input, form, opts, wants, on, RECORD_MAX)
}

/// [`read`] with records of at most `max` bytes (a CSV record may pass it
/// by up to the CSV reader's 8 KiB buffer).
fn read_capped(
    input: impl Read,
    form: Form,
    opts: &Reading<'_>,
    wants: &mut Wants,
    on: &mut impl FnMut(Listed, &mut Wants),
    max: usize,
) -> Result<Counts, ReadError> {
    match form {
        Form::Csv => read_csv(input, opts, wants, on, max),
        Form::JsonLines => read_json_lines(input, opts, wants, on, max),
        Form::Plain => Ok(Counts::default()),
    }
}

/// Why a record over `max` bytes is refused.
fn too_long(max: usize) -> String {
    format!(
        "the record is longer than {}, the most keep-rsync reads as one collection record \
         (Arvados' own limits keep a manifest far below it): this is not a record list, or a \
         line break is missing",
        crate::console::human_bytes(max as u64)
    )
}

/// Counts the bytes read from `inner` since the last [`Capped::reset`],
/// failing with [`TooLong`] past `max`: a CSV record's bound.
struct Capped<R> {
    inner: R,
    since: std::rc::Rc<std::cell::Cell<usize>>,
    max: usize,
}

/// The error [`Capped`] reads fail with.
#[derive(Debug)]
struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for TooLong {}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since.get() > self.max {
            return Err(std::io::Error::other(TooLong));
        }
        let n = self.inner.read(buf)?;
        self.since.set(self.since.get() + n);
        Ok(n)
    }
}

/// A record list could not be read: refused (bad input), or unreadable.
#[derive(Debug)]
pub enum ReadError {
    Bad(Bad),
    Io { line: u64, error: std::io::Error },
}

fn bad(line: u64, uuid: Option<&str>, why: impl Into<String>) -> ReadError {
    ReadError::Bad(Bad {
        line,
        uuid: uuid.map(str::to_string),
        why: why.into(),
    })
}

fn add_record(
    r: Record<'_>,
    opts: &Reading<'_>,
    wants: &mut Wants,
    counts: &mut Counts,
    on: &mut impl FnMut(Listed, &mut Wants),
) -> Result<(), ReadError> {
    let classes = opts.classes.map_or(&r.classes[..], |c| c);
    let want: WantId = wants
        .of_collection(classes, r.replication)
        .map_err(|why| bad(r.line, r.uuid, why))?;
    let n = scan_manifest(r.manifest, &mut |e: Entry| {
        on(
            Listed {
                hash: e.hash,
                size: e.size,
                want,
            },
            &mut *wants,
        )
    })
    .map_err(|why| bad(r.line, r.uuid, why))?;
    counts.records += 1;
    counts.locators += n;
    Ok(())
}

fn read_csv(
    input: impl Read,
    opts: &Reading<'_>,
    wants: &mut Wants,
    on: &mut impl FnMut(Listed, &mut Wants),
    max: usize,
) -> Result<Counts, ReadError> {
    let since = std::rc::Rc::new(std::cell::Cell::new(0));
    let input = Capped {
        inner: input,
        since: since.clone(),
        max,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let mut at = 1;
    let csv_error = |e: csv::Error, at: u64| -> ReadError {
        let line = e.position().map_or(at, |p| p.line());
        match e.into_kind() {
            csv::ErrorKind::Io(error)
                if error
                    .get_ref()
                    .is_some_and(|e| e.downcast_ref::<TooLong>().is_some()) =>
            {
                bad(line, None, too_long(max))
            }
            csv::ErrorKind::Io(error) => ReadError::Io { line, error },
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => bad(
                line,
                None,
                format!("a record of {len} fields under a header of {expected_len}"),
            ),
            csv::ErrorKind::Utf8 { .. } => bad(line, None, "not UTF-8 text"),
            other => bad(line, None, format!("not CSV: {other:?}")),
        }
    };
    let header = rdr.byte_headers().map_err(|e| csv_error(e, at))?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    let Some(manifest_col) = col("manifest_text") else {
        return Err(bad(1, None, "the header has no manifest_text column"));
    };
    let (uuid_col, repl_col, classes_col) = (
        col("uuid"),
        col("replication_desired"),
        col("storage_classes_desired"),
    );
    let mut counts = Counts::default();
    let mut rec = csv::ByteRecord::new();
    loop {
        since.set(0);
        at = rdr.position().line();
        if !rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_error(e, at))?
        {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line());
        let field = |c: Option<usize>| -> Result<Option<&str>, ReadError> {
            match c.and_then(|c| rec.get(c)) {
                None => Ok(None),
                Some(b) => std::str::from_utf8(b)
                    .map(Some)
                    .map_err(|_| bad(line, None, "not UTF-8 text")),
            }
        };
        let uuid = field(uuid_col)?.filter(|u| !u.is_empty());
        let replication = match field(repl_col)?.map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(replication(v).map_err(|why| bad(line, uuid, why))?),
        };
        let classes = match field(classes_col)?.map(str::trim) {
            None | Some("") => Vec::new(),
            Some(v) => {
                let j: serde_json::Value = serde_json::from_str(v).map_err(|_| {
                    bad(
                        line,
                        uuid,
                        "storage_classes_desired is not a JSON array of class names",
                    )
                })?;
                classes(&j).map_err(|why| bad(line, uuid, why))?
            }
        };
        let manifest = field(Some(manifest_col))?.unwrap_or("");
        let r = Record {
            line,
            uuid,
            replication,
            classes,
            manifest,
        };
        add_record(r, opts, wants, &mut counts, on)?;
    }
    counts.lines = rdr.position().line().saturating_sub(1);
    Ok(counts)
}

/// A JSON line: a collection, or a page of them.
#[derive(Deserialize)]
struct JsonLine {
    #[serde(default)]
    items: Option<Vec<JsonCollection>>,
    #[serde(flatten)]
    this: JsonCollection,
}

#[derive(Deserialize, Default)]
struct JsonCollection {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    manifest_text: Option<String>,
    #[serde(default)]
    replication_desired: serde_json::Value,
    #[serde(default)]
    storage_classes_desired: serde_json::Value,
}

fn read_json_lines(
    input: impl Read,
    opts: &Reading<'_>,
    wants: &mut Wants,
    on: &mut impl FnMut(Listed, &mut Wants),
    max: usize,
) -> Result<Counts, ReadError> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut buf = Vec::new();
    let mut counts = Counts::default();
    loop {
        buf.clear();
        // At most `max` bytes and the line's end: never more in memory.
        let n = (&mut r)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|error| ReadError::Io {
                line: counts.lines + 1,
                error,
            })?;
        if n == 0 {
            break;
        }
        counts.lines += 1;
        let line = counts.lines;
        if n > max && !buf.ends_with(b"\n") {
            return Err(bad(line, None, too_long(max)));
        }
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let j: JsonLine = serde_json::from_slice(text).map_err(|e| {
            let why = if e.is_eof() {
                "a JSON object that does not end on its line: give one object per line \
                 (`jq -c '.items[]'`)"
                    .to_string()
            } else if e.is_data() {
                format!("not a collection record: {e}")
            } else {
                format!("not JSON: {e}")
            };
            bad(line, None, why)
        })?;
        let items = match j.items {
            Some(items) => items,
            None => vec![j.this],
        };
        for c in &items {
            let uuid = c.uuid.as_deref();
            let Some(manifest) = c.manifest_text.as_deref() else {
                return Err(bad(
                    line,
                    uuid,
                    "the record has no manifest_text (select it: `arv collection list --select \
                     '[\"uuid\",\"manifest_text\",\"replication_desired\",\"storage_classes_desired\"]'`)",
                ));
            };
            let replication = match &c.replication_desired {
                serde_json::Value::Null => None,
                serde_json::Value::Number(n) => {
                    Some(replication(&n.to_string()).map_err(|why| bad(line, uuid, why))?)
                }
                other => {
                    return Err(bad(
                        line,
                        uuid,
                        format!(
                            "replication_desired {} is not a whole number of replicas (0–{MAX_REPLICATION}) or null",
                            short(&other.to_string())
                        ),
                    ))
                }
            };
            let classes = match &c.storage_classes_desired {
                serde_json::Value::Null => Vec::new(),
                v => classes(v).map_err(|why| bad(line, uuid, why))?,
            };
            let rec = Record {
                line,
                uuid,
                replication,
                classes,
                manifest,
            };
            add_record(rec, opts, wants, &mut counts, on)?;
        }
    }
    Ok(counts)
}

/// A value shown in a message, cut short.
fn short(v: &str) -> String {
    if v.chars().count() > 24 {
        format!("{}…", v.chars().take(24).collect::<String>())
    } else {
        v.to_string()
    }
}

fn replication(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n <= MAX_REPLICATION => Ok(n),
        _ => Err(format!(
            "replication_desired {:?} is not a whole number of replicas (0–{MAX_REPLICATION}) or null",
            short(v)
        )),
    }
}

/// `storage_classes_desired`: a JSON array of class names.
fn classes(v: &serde_json::Value) -> Result<Vec<String>, String> {
    let why = || {
        "storage_classes_desired is not a JSON array of class names (names without commas, \
         '=' or spaces)"
            .to_string()
    };
    let serde_json::Value::Array(a) = v else {
        return Err(why());
    };
    a.iter()
        .map(|c| match c {
            serde_json::Value::String(s)
                if !s.is_empty()
                    && !s.chars().any(|ch| {
                        ch == ',' || ch == '=' || ch.is_whitespace() || ch.is_control()
                    }) =>
            {
                Ok(s.clone())
            }
            _ => Err(why()),
        })
        .collect()
}

/// Check manifest text as Arvados does and hand each block locator to
/// `on`: every line is a stream name (`.` or `./path`), one or more block
/// locators, then one or more file segments `POS:LEN:NAME`. Returns the
/// locators seen; `Err` says which manifest line broke which rule (never
/// a signature: only the safe part of a bad locator is shown).
pub fn scan_manifest(text: &str, on: &mut impl FnMut(Entry)) -> Result<u64, String> {
    let mut n = 0;
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    for (i, line) in lines.iter().enumerate() {
        let at = || format!("its manifest_text, line {}", i + 1);
        if line.is_empty() {
            // The newline that ends the last stream, or an empty collection.
            if i == last {
                continue;
            }
            return Err(format!("{}: an empty line in manifest text", at()));
        }
        let mut tokens = line.split(' ');
        let stream = tokens.next().unwrap_or("");
        if !(stream == "." || stream.starts_with("./")) {
            return Err(format!(
                "{}: a stream must start with its name (\".\" or \"./DIR\")",
                at()
            ));
        }
        let (mut blocks, mut files) = (0u64, 0u64);
        for t in tokens {
            if t.is_empty() {
                return Err(format!("{}: two spaces in a row", at()));
            }
            match classify(t.as_bytes(), t.len() > super::parse::MAX_WORD) {
                Word::Locator(e) if files == 0 => {
                    blocks += 1;
                    on(e);
                }
                Word::Locator(_) => {
                    return Err(format!("{}: a block locator after a file segment", at()))
                }
                Word::Malformed { shown, why } => {
                    return Err(format!("{}: {shown:?} is not a block locator: {why}", at()))
                }
                Word::NotLocator if is_file_segment(t) && blocks > 0 => files += 1,
                Word::NotLocator => {
                    return Err(format!(
                        "{}: a word that is neither a block locator nor a file segment \
                         (POS:LEN:NAME)",
                        at()
                    ))
                }
            }
        }
        if blocks == 0 {
            return Err(format!("{}: a stream with no block locator", at()));
        }
        if files == 0 {
            return Err(format!("{}: a stream with no file segment", at()));
        }
        n += blocks;
    }
    Ok(n)
}

/// `POS:LEN:NAME`, decimal position and length.
fn is_file_segment(t: &str) -> bool {
    let mut parts = t.splitn(3, ':');
    let num =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    num(parts.next()) && num(parts.next()) && parts.next().is_some_and(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOO: &str = "acbd18db4cc2f85cedef654fccc4a4d8";
    const BAR: &str = "37b51d194a7513e45b56f6524f2d51f2";

    fn run(text: &str) -> Result<(Vec<Listed>, Counts, Wants), ReadError> {
        let mut wants = Wants::new();
        let mut got = Vec::new();
        let counts = read(
            text.as_bytes(),
            detect(text.as_bytes()),
            &Reading { classes: None },
            &mut wants,
            &mut |l, _| got.push(l),
        )?;
        Ok((got, counts, wants))
    }

    fn refused(
        r: Result<(Vec<Listed>, Counts, Wants), ReadError>,
    ) -> (u64, Option<String>, String) {
        match r {
            Err(ReadError::Bad(b)) => (b.line, b.uuid, b.why),
            Err(ReadError::Io { error, .. }) => panic!("io: {error}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn forms_are_detected() {
        assert_eq!(detect(b"uuid,manifest_text\n"), Form::Csv);
        assert_eq!(detect(b"\"uuid\",\"MANIFEST_TEXT\"\r\n"), Form::Csv);
        assert_eq!(detect(b"  {\"uuid\": 1}\n"), Form::JsonLines);
        assert_eq!(detect(format!("{FOO}+3\n").as_bytes()), Form::Plain);
        assert_eq!(
            detect(format!(". {FOO}+3 0:3:foo\n").as_bytes()),
            Form::Plain
        );
        assert_eq!(detect(b""), Form::Plain);
        assert_eq!(
            detect(b" manifest_text\n---------\n(0 rows)\n"),
            Form::Plain
        );
        assert_eq!(detect(b"manifest_text\n\". x\"\n"), Form::Csv);
    }

    #[test]
    fn psql_csv_with_newlines_in_quoted_manifests() {
        let csv = format!(
            "uuid,replication_desired,storage_classes_desired,manifest_text\n\
             zzzzz-4zz18-000000000000001,3,\"[\"\"default\"\"]\",\". {FOO}+3 0:3:foo\n./sub {BAR}+3 0:3:bar\n\"\n\
             zzzzz-4zz18-000000000000002,,\"[\"\"archive\"\"]\",\". {FOO}+3 0:3:foo\n\"\n\
             zzzzz-4zz18-000000000000003,1,,\"\"\n"
        );
        let (got, counts, wants) = run(&csv).unwrap();
        assert_eq!((counts.records, counts.locators), (3, 3));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].hash.to_string(), FOO);
        assert_eq!(got[1].hash.to_string(), BAR);
        assert_eq!(got[0].want, got[1].want);
        let w: Vec<(u8, u32)> = wants.resolve(got[2].want, 2, None).collect();
        assert_eq!(w, [(1, 2)], "null replication: the destination's default");
    }

    #[test]
    fn json_lines_and_pages() {
        let one = format!(
            r#"{{"uuid":"zzzzz-4zz18-000000000000001","replication_desired":1,"storage_classes_desired":["archive","default"],"manifest_text":". {FOO}+3+A0123456789abcdef0123456789abcdef01234567@7fffffff 0:3:foo\n"}}"#
        );
        let page = format!(
            r#"{{"kind":"arvados#collectionList","items":[{{"uuid":"u2","manifest_text":". {BAR}+3 0:3:bar\n","replication_desired":null}}]}}"#
        );
        let (got, counts, _) = run(&format!("{one}\n\n{page}\n")).unwrap();
        assert_eq!((counts.records, counts.locators, got.len()), (2, 2, 2));
    }

    /// A record over the cap is refused naming its line, before more of
    /// it is read (with the cap at 100 B; [`RECORD_MAX`] in use).
    #[test]
    fn records_longer_than_the_cap_are_refused() {
        let ok = format!(r#"{{"uuid":"u1","manifest_text":". {FOO}+3 0:3:foo\n"}}"#);
        assert!(ok.len() < 100);
        let long = format!(
            r#"{{"uuid":"u2","manifest_text":". {FOO}+3 {}0:3:foo\n"}}"#,
            format!("{BAR}+3 ").repeat(20)
        );
        let read = |text: &str, max| {
            let mut wants = Wants::new();
            read_capped(
                text.as_bytes(),
                detect(text.as_bytes()),
                &Reading { classes: None },
                &mut wants,
                &mut |_, _| {},
                max,
            )
            .map(|_| ())
        };
        read(&format!("{ok}\n{long}\n"), RECORD_MAX).unwrap();
        read(&format!("{ok}\n{ok}"), ok.len()).unwrap();
        for text in [format!("{ok}\n{long}\n{ok}\n"), format!("{ok}\n{long}")] {
            let (line, _, why) = refused(read(&text, 100).map(|_| Default::default()));
            assert_eq!(line, 2, "{why}");
            assert!(why.contains("longer than 100 B"), "{why}");
        }
        // CSV: the quoted manifest of one record is bounded the same way
        // (by the cap plus the CSV reader's 8 KiB buffer).
        let row =
            |u: &str, n: usize| format!("{u},\". {}0:3:foo\n\"\n", format!("{FOO}+3 ").repeat(n));
        let csv = format!(
            "uuid,manifest_text\n{}{}{}",
            row("u1", 1),
            row("u2", 1000),
            row("u3", 1)
        );
        read(&csv, RECORD_MAX).unwrap();
        let (line, _, why) = refused(read(&csv, 100).map(|_| Default::default()));
        assert_eq!(line, 4, "the line u2 starts on: {why}");
        assert!(why.contains("longer than 100 B"), "{why}");
    }

    #[test]
    fn broken_records_name_line_and_uuid() {
        let csv = format!(
            "uuid,replication_desired,manifest_text\nu1,2,\". {FOO}+3 0:3:foo\n\"\nu2,-1,\". {FOO}+3 0:3:foo\"\n"
        );
        let (line, uuid, why) = refused(run(&csv));
        assert_eq!((line, uuid.as_deref()), (4, Some("u2")));
        assert!(why.contains("replication_desired \"-1\""), "{why}");
        for (manifest, says) in [
            (format!(". {} 0:3:foo", &FOO[..31]), "31 hex digits"),
            (format!("foo {FOO}+3 0:3:foo"), "stream must start"),
            (". 0:3:foo".to_string(), "neither a block locator"),
            (format!(". {FOO}+3"), "no file segment"),
            (format!(". {FOO}+3 0:3:foo {BAR}+3"), "after a file segment"),
            (format!(". {FOO}+3  0:3:foo"), "two spaces"),
        ] {
            let j = serde_json::json!({"uuid": "zzzzz-4zz18-bad", "manifest_text": manifest});
            let (line, uuid, why) = refused(run(&format!("{{}}\n{j}\n").replacen("{}\n", "", 1)));
            assert_eq!(
                (line, uuid.as_deref()),
                (1, Some("zzzzz-4zz18-bad")),
                "{manifest}"
            );
            assert!(
                why.contains(says) && why.contains("manifest_text, line 1"),
                "{why}"
            );
        }
        let (_, _, why) = refused(run(
            r#"{"uuid":"u","manifest_text":"","replication_desired":"3"}"#,
        ));
        assert!(why.contains("replication_desired"), "{why}");
        let (_, _, why) = refused(run("{\n\"uuid\": 1}\n"));
        assert!(why.contains("jq -c"), "{why}");
        let (_, _, why) = refused(run(
            r#"{"uuid":"u","manifest_text":"","storage_classes_desired":"default"}"#,
        ));
        assert!(why.contains("storage_classes_desired"), "{why}");
    }
}
