//! JSON logs (PATTERNS.md §6) in the compat profile, with exactness checked (`json_exact`).
//!
//! A record that is exactly one JSON object (no surrounding whitespace) with a message — the first
//! non-empty string among `message`, `msg`, `log`, `text`, `MESSAGE`, then `data.message`,
//! `event.message`, `payload.message` — is split into the message text (pattern-encoded like any line)
//! and typed columns: one per leaf, objects flattened to key paths up to depth 3, arrays and large or
//! empty objects kept as raw JSON. The intake rebuilds the document by setting each column at its path
//! and the message last (v3), or after as many columns as preceded it in the record (the `json-order`
//! extension, [`plan`]'s `anywhere`), so the structural path is taken only when that rebuild, serialized
//! compactly, gives back the record byte for byte. Anything else (other spacing, escapes, duplicate keys;
//! on v3, a message that is not last) takes the text path, which is lossless too.

use serde_json::{Map, Value};
use stencil_codec::datum::JsonKind;
use stencil_codec::float_text;
use stencil_codec::json::{build_document, join_key_path};

/// Where to look for the message, in order. The tokenizer cuts these keys' quoted values like text too.
pub(crate) const MESSAGE_KEYS: [&str; 5] = ["message", "msg", "log", "text", "MESSAGE"];
/// Nested message locations, after the top-level ones.
const NESTED_PARENTS: [&str; 3] = ["data", "event", "payload"];
/// Objects kept whole under these names.
const BOX_NAMES: [&str; 6] = [
    "attributes",
    "attrs",
    "headers",
    "labels",
    "metadata",
    "tags",
];
/// Deepest key path.
const MAX_DEPTH: usize = 3;
/// Largest object flattened.
const MAX_OBJECT_KEYS: usize = 32;
/// Most columns in one schema.
pub const MAX_COLUMNS: usize = 128;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer whose canonical text is the lexeme.
    Int(i64),
    /// A float whose canonical text is the lexeme.
    Float(f64),
    /// A string.
    Str(String),
    /// Any other JSON value, verbatim (compact).
    Raw(String),
}

impl Leaf {
    /// The schema kind.
    pub fn kind(&self) -> JsonKind {
        match self {
            Leaf::Null => JsonKind::Null,
            Leaf::Bool(_) => JsonKind::Bool,
            Leaf::Int(_) => JsonKind::Int,
            Leaf::Float(_) => JsonKind::Float,
            Leaf::Str(_) => JsonKind::String,
            Leaf::Raw(_) => JsonKind::RawJson,
        }
    }

    fn to_json(&self) -> Option<Value> {
        Some(match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => Value::Bool(*b),
            Leaf::Int(i) => Value::from(*i),
            Leaf::Float(f) => serde_json::from_str(&float_text(*f).ok()?).ok()?,
            Leaf::Str(s) => Value::String(s.clone()),
            Leaf::Raw(r) => serde_json::from_str(r).ok()?,
        })
    }
}

/// How a JSON record is sent structurally.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Escaped key path of the message.
    pub message_key: String,
    /// The message text.
    pub message: String,
    /// Escaped key path and value of each column, in document order.
    pub columns: Vec<(String, Leaf)>,
    /// How many columns precede the message in the record, when it is not after all of them (then the
    /// schema needs the `json-order` extension).
    pub message_at: Option<u32>,
}

impl Plan {
    /// The schema identity: message key, then each column's key and kind.
    pub fn identity(&self) -> String {
        let mut id = self.message_key.clone();
        if let Some(at) = self.message_at {
            id.push('@');
            id.push_str(&at.to_string());
        }
        for (key, leaf) in &self.columns {
            id.push('\u{0}');
            id.push_str(key);
            id.push(char::from(b'0' + leaf.kind() as u8));
        }
        id
    }
}

/// The structural plan for `text`, or `None` for the text path. With `anywhere` (the `json-order`
/// extension), the message may be any member of the record; otherwise it must be its last.
pub fn plan(text: &str, anywhere: bool) -> Option<Plan> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') || !may_plan(bytes, anywhere) {
        return None;
    }
    let Value::Object(doc) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let message_path = find_message(&doc)?;
    let mut columns = Vec::new();
    let mut segments = Vec::new();
    let mut before = None;
    flatten(
        &doc,
        &mut segments,
        &message_path,
        &mut columns,
        &mut before,
    )?;
    if columns.len() > MAX_COLUMNS {
        return None;
    }
    let before = before?;
    let message = message_at_path(&doc, &message_path)?.to_owned();
    // Rebuild as the intake will, and insist on the same bytes: with the message last (v3's rule; a
    // nested message then goes last in its own object), else after the columns that precede it.
    let rebuilds = |at: usize| -> Option<bool> {
        let leaves = columns.iter().map(|(path, leaf)| {
            leaf.to_json()
                .map(|json| (path.clone(), json))
                .ok_or(stencil_codec::ErrorKind::NonFiniteFloat)
        });
        let rebuilt = build_document(leaves, &message_path, &message, Some(at)).ok()?;
        Some(serde_json::to_string(&rebuilt).ok()? == text)
    };
    // A top-level message before other members cannot come back last.
    let last_may_do = before == columns.len() || message_path.len() > 1;
    let message_at = if last_may_do && rebuilds(columns.len())? {
        None
    } else if anywhere && before < columns.len() && rebuilds(before)? {
        Some(u32::try_from(before).ok()?)
    } else {
        return None;
    };
    Some(Plan {
        message_key: join_key_path(&message_path),
        message,
        columns: columns
            .into_iter()
            .map(|(p, l)| (join_key_path(&p), l))
            .collect(),
        message_at,
    })
}

/// A necessary condition for [`plan`], checked before parsing (parsing, rebuilding and serializing
/// a record that cannot pass was over a third of the engine's time on Docker `json-file` lines, whose
/// `log` comes first). Without `anywhere` the rebuild puts the message last, so the record must end with
/// a message key and its string value (`…,"msg":"…"}`), unless the message may be nested (`"data":{`,
/// …), where it goes last in that object instead. With it, a message key must start a string member
/// somewhere (`"msg":"`).
fn may_plan(b: &[u8], anywhere: bool) -> bool {
    if anywhere {
        has_message_member(b) || has_nested_parent(b)
    } else {
        ends_with_message(b) || has_nested_parent(b)
    }
}

/// `"msg":"` (or another message key), looked for at each quote only.
fn has_message_member(b: &[u8]) -> bool {
    has_member(b, &MESSAGE_KEYS, b"\":\"")
}

/// `…"key":"value"}` with a message key: the value's opening quote, then the key's.
fn ends_with_message(b: &[u8]) -> bool {
    let Some(body) = b.strip_suffix(b"\"}") else {
        return false;
    };
    let Some(value) = unescaped_quote_before(body, body.len()) else {
        return false;
    };
    let Some(key_end) = value
        .checked_sub(2)
        .filter(|&k| body.get(k..value) == Some(b"\":"))
    else {
        return false;
    };
    unescaped_quote_before(body, key_end).is_some_and(|key_start| {
        MESSAGE_KEYS
            .iter()
            .any(|k| k.as_bytes() == &body[key_start + 1..key_end])
    })
}

/// `"data":{` and the like, looked for at each quote only.
fn has_nested_parent(b: &[u8]) -> bool {
    has_member(b, &NESTED_PARENTS, b"\":{")
}

/// A quoted name of `names` followed by `opens` (the end of the key and the start of its value).
fn has_member(b: &[u8], names: &[&str], opens: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        c == b'"'
            && names.iter().any(|name| {
                b.get(i + 1..).is_some_and(|rest| {
                    rest.starts_with(name.as_bytes()) && rest[name.len()..].starts_with(opens)
                })
            })
    })
}

/// The position of the last `"` before `end` that is not escaped (an even number of backslashes
/// before it).
fn unescaped_quote_before(b: &[u8], end: usize) -> Option<usize> {
    let mut i = end;
    while i > 0 {
        i -= 1;
        if b[i] == b'"' {
            let backslashes = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
            if backslashes % 2 == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn message_at_path<'a>(doc: &'a Map<String, Value>, path: &[String]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut node = doc;
    for p in parents {
        node = node.get(p)?.as_object()?;
    }
    node.get(last)?.as_str()
}

fn find_message(doc: &Map<String, Value>) -> Option<Vec<String>> {
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if let Some(key) = MESSAGE_KEYS.iter().find(|k| non_empty(doc.get(**k))) {
        return Some(vec![(*key).to_owned()]);
    }
    NESTED_PARENTS
        .iter()
        .find(|p| {
            non_empty(
                doc.get(**p)
                    .and_then(Value::as_object)
                    .and_then(|o| o.get("message")),
            )
        })
        .map(|p| vec![(*p).to_owned(), "message".to_owned()])
}

/// Appends `obj`'s columns to `out` in document order, and sets `before` to the number of columns that
/// precede the message.
fn flatten(
    obj: &Map<String, Value>,
    segments: &mut Vec<String>,
    message: &[String],
    out: &mut Vec<(Vec<String>, Leaf)>,
    before: &mut Option<usize>,
) -> Option<()> {
    for (key, value) in obj {
        segments.push(key.clone());
        let on_message_path = message.starts_with(segments);
        if segments.as_slice() == message {
            *before = Some(out.len());
        } else {
            match value {
                Value::Object(m)
                    if on_message_path
                        || (segments.len() < MAX_DEPTH
                            && !m.is_empty()
                            && m.len() <= MAX_OBJECT_KEYS
                            && !BOX_NAMES.contains(&key.as_str())) =>
                {
                    flatten(m, segments, message, out, before)?;
                }
                other => out.push((segments.clone(), leaf(other)?)),
            }
        }
        segments.pop();
    }
    Some(())
}

fn leaf(v: &Value) -> Option<Leaf> {
    Some(match v {
        Value::Null => Leaf::Null,
        Value::Bool(b) => Leaf::Bool(*b),
        Value::Number(n) => {
            let lexeme = n.to_string();
            let canonical_int = lexeme
                .parse::<i64>()
                .ok()
                .filter(|i| i.to_string() == lexeme);
            match canonical_int {
                Some(i) => Leaf::Int(i),
                None => match lexeme.parse::<f64>() {
                    Ok(f) if lexeme.contains('.') && float_text(f).is_ok_and(|t| t == lexeme) => {
                        Leaf::Float(f)
                    }
                    _ => Leaf::Raw(lexeme),
                },
            }
        }
        Value::String(s) => Leaf::Str(s.clone()),
        other => Leaf::Raw(serde_json::to_string(other).ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_last_documents_go_structural() {
        let p = plan(r#"{"level":"info","n":3,"ratio":0.5,"ok":true,"x":null,"big":18446744073709551615,"arr":[1,2],"msg":"hello world"}"#, false)
            .expect("structural");
        assert_eq!(p.message_key, "msg");
        assert_eq!(p.message, "hello world");
        let kinds: Vec<_> = p.columns.iter().map(|(_, l)| l.kind()).collect();
        use JsonKind::*;
        assert_eq!(kinds, [String, Int, Float, Bool, Null, RawJson, RawJson]);
    }

    #[test]
    fn nested_messages_and_paths() {
        let p =
            plan(r#"{"ts":1,"data":{"user":{"id":7},"message":"m"}}"#, false).expect("structural");
        assert_eq!(p.message_key, "data.message");
        assert_eq!(
            p.columns
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["ts", "data.user.id"]
        );
        let p = plan(r#"{"a.b":1,"msg":"x"}"#, false).expect("structural");
        assert_eq!(p.columns[0].0, "a\\.b");
    }

    /// `may_plan` only skips records that `plan` would refuse: every record here that goes structural
    /// passes it, and the ones it stops are refused anyway.
    #[test]
    fn the_quick_check_never_refuses_a_structural_record() {
        let structural = [
            r#"{"level":"info","msg":"hello world"}"#,
            r#"{"a":"x\\","msg":"say \"hi\""}"#,
            r#"{"a":1,"message":"ends with a backslash \\"}"#,
            r#"{"ts":1,"data":{"user":{"id":7},"message":"m"}}"#,
            r#"{"data":{"x":1,"message":"m"},"level":"info"}"#,
            r#"{"n":[1,2],"text":"t"}"#,
            r#"{"log":"l"}"#,
        ];
        for text in structural {
            assert!(plan(text, false).is_some(), "{text}");
            assert!(may_plan(text.as_bytes(), false), "{text}");
        }
        for text in [
            r#"{"log":"line\n","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#,
            r#"{"msg":"m","n":1}"#,
            r#"{"x":"msg","y":"z"}"#,
            r#"{"a":"\"msg\":\"b"}"#,
        ] {
            assert!(!may_plan(text.as_bytes(), false), "{text}");
            assert!(plan(text, false).is_none(), "{text}");
        }
    }

    #[test]
    fn inexact_documents_take_the_text_path() {
        for text in [
            r#"{"msg":"hello","level":"info"}"#, // message not last: the intake appends it
            r#"{"a": 1, "msg":"x"}"#,            // spacing
            r#" {"msg":"x"}"#,                   // surrounding whitespace
            r#"{"a":1,"a":2,"msg":"x"}"#,        // duplicate keys
            r#"{"a":"\u00e9","msg":"x"}"#,       // escape style
            r#"{"a":1.0,"msg":"x"}"#,            // lexeme kept as raw is fine, but…
            r#"{"level":"info"}"#,               // no message
            r#"{"msg":""}"#,                     // empty message
            "[1,2]",
        ] {
            let got = plan(text, false);
            if text.contains("1.0") {
                assert!(
                    matches!(got.as_ref().map(|p| &p.columns[0].1), Some(Leaf::Raw(r)) if r == "1.0"),
                    "{text}"
                );
            } else {
                assert!(got.is_none(), "{text}");
            }
        }
    }

    /// With `json-order`, the message may be any member: the schema says how many columns precede it,
    /// and the rebuild in that order gives back the record.
    #[test]
    fn json_order_places_the_message_anywhere() {
        for (text, key, at) in [
            // bunyan, zap, logrus: the message among the other members.
            (
                r#"{"name":"app","hostname":"h","pid":7,"level":30,"msg":"started","time":"2026-01-01T00:00:00.000Z","v":0}"#,
                "msg",
                Some(4),
            ),
            (r#"{"msg":"first","level":"info"}"#, "msg", Some(0)),
            (
                r#"{"level":"info","MESSAGE":"journald","_PID":"1"}"#,
                "MESSAGE",
                Some(1),
            ),
            // A nested message before a sibling, and one last in its object (v3 can carry that).
            (
                r#"{"ts":1,"event":{"message":"m","code":3},"level":"info"}"#,
                "event.message",
                Some(1),
            ),
            (
                r#"{"data":{"x":1,"message":"m"},"level":"info"}"#,
                "data.message",
                None,
            ),
            (r#"{"level":"info","msg":"last"}"#, "msg", None),
        ] {
            let p = plan(text, true).unwrap_or_else(|| panic!("structural: {text}"));
            assert_eq!((p.message_key.as_str(), p.message_at), (key, at), "{text}");
            assert!(may_plan(text.as_bytes(), true), "{text}");
            // Without the extension only the records that need no place go structurally.
            assert_eq!(plan(text, false).is_some(), at.is_none(), "{text}");
        }
        for text in [
            r#"{"msg": "spaced", "level": "info"}"#,
            r#"{"level":"info"}"#,
            r#"{"msg":"","level":"info"}"#,
            r#"{"msg":"dup","msg":"twice","a":1}"#,
        ] {
            assert!(plan(text, true).is_none(), "{text}");
        }
    }

    /// The schema identity tells apart two records that differ only by the message's place.
    #[test]
    fn the_message_place_is_part_of_the_schema() {
        let first = plan(r#"{"msg":"m","a":1,"b":2}"#, true).expect("structural");
        let middle = plan(r#"{"a":1,"msg":"m","b":2}"#, true).expect("structural");
        assert_ne!(first.identity(), middle.identity());
        assert_eq!(first.columns, middle.columns);
    }
}
