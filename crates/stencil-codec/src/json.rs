//! JSON helpers for v3 schemas and JSON reconstruction (PROTOCOL.md §11.4).
//!
//! A schema key is an **escaped key path**: segments joined by `.`, with `\.` for a literal dot and `\\` for
//! a literal backslash. The pattern engine escapes with [`join_key_path`]; the decoder splits with
//! [`split_key_path`] and builds the document with [`insert_at`], which refuses duplicate paths and paths
//! that run through non-object values.

use serde_json::{Map, Value as Json};

use crate::error::ErrorKind;

/// The deepest key path a schema may name. Documents are built and serialized recursively, so an
/// unbounded path (one 107-byte batch can name 21,000 levels) would overflow the stack. Real loggers nest
/// a handful of levels; serde_json's own parser stops at 128.
pub const MAX_KEY_PATH_DEPTH: usize = 64;

/// Splits an escaped key path into its segments (`a\.b.c` → `["a.b", "c"]`). A path of more than
/// [`MAX_KEY_PATH_DEPTH`] segments is [`ErrorKind::JsonPathTooDeep`].
pub fn split_key_path(path: &str) -> Result<Vec<String>, ErrorKind> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ ('.' | '\\')) => current.push(next),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            '.' => {
                segments.push(std::mem::take(&mut current));
                if segments.len() >= MAX_KEY_PATH_DEPTH {
                    return Err(ErrorKind::JsonPathTooDeep {
                        limit: MAX_KEY_PATH_DEPTH,
                    });
                }
            }
            other => current.push(other),
        }
    }
    segments.push(current);
    Ok(segments)
}

/// Joins segments into an escaped key path, the inverse of [`split_key_path`].
pub fn join_key_path<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for c in seg.as_ref().chars() {
            if c == '.' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Sets `value` at the nested path `segments` inside `root`, creating intermediate objects.
///
/// Descending through an existing object is allowed (the message may go into a `RAW_JSON` object); setting
/// a path that already holds a value, or descending through a non-object, is [`ErrorKind::JsonPathConflict`].
pub fn insert_at(
    root: &mut Map<String, Json>,
    segments: &[String],
    value: Json,
) -> Result<(), ErrorKind> {
    let conflict = || ErrorKind::JsonPathConflict(join_key_path(segments));
    let Some((last, parents)) = segments.split_last() else {
        return Err(conflict());
    };
    let mut node = root;
    for seg in parents {
        let entry = node
            .entry(seg.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        node = match entry {
            Json::Object(map) => map,
            _ => return Err(conflict()),
        };
    }
    if node.contains_key(last) {
        return Err(conflict());
    }
    node.insert(last.clone(), value);
    Ok(())
}

/// A JSON log's document as PROTOCOL.md §11.4 builds it: each column set at its path, in order, and the
/// message set after `message_at` of them (`json-order`), or after all of them when `None` (v3's rule).
/// The intake rebuilds with it, and the engine checks with it that a record comes back byte for byte.
pub fn build_document<I>(
    columns: I,
    message_path: &[String],
    message: &str,
    message_at: Option<usize>,
) -> Result<Map<String, Json>, ErrorKind>
where
    I: IntoIterator<Item = Result<(Vec<String>, Json), ErrorKind>>,
{
    let mut root = Map::new();
    let mut placed = false;
    for (i, column) in columns.into_iter().enumerate() {
        if message_at == Some(i) {
            insert_at(&mut root, message_path, Json::String(message.to_owned()))?;
            placed = true;
        }
        let (path, value) = column?;
        insert_at(&mut root, &path, value)?;
    }
    if !placed {
        insert_at(&mut root, message_path, Json::String(message.to_owned()))?;
    }
    Ok(root)
}

/// Parses text that must be exactly one JSON value.
pub fn parse_raw_json(text: &str) -> Result<Json, ErrorKind> {
    serde_json::from_str(text).map_err(|e| ErrorKind::InvalidRawJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_round_trip() {
        for segs in [
            vec!["a"],
            vec!["a.b", "c"],
            vec!["x\\y", "", "z."],
            vec![""],
        ] {
            let joined = join_key_path(&segs);
            assert_eq!(split_key_path(&joined).expect("shallow"), segs, "{joined}");
        }
        assert_eq!(
            split_key_path("a\\.b.c").expect("shallow"),
            vec!["a.b", "c"]
        );
    }

    #[test]
    fn insert_detects_conflicts() {
        let mut root = Map::new();
        insert_at(&mut root, &["a".into(), "b".into()], Json::from(1)).expect("insert");
        insert_at(&mut root, &["a".into(), "c".into()], Json::from(2)).expect("sibling");
        assert!(insert_at(&mut root, &["a".into(), "b".into()], Json::from(3)).is_err());
        assert!(insert_at(
            &mut root,
            &["a".into(), "b".into(), "x".into()],
            Json::from(3)
        )
        .is_err());
        assert_eq!(Json::Object(root).to_string(), r#"{"a":{"b":1,"c":2}}"#);
    }
}
