//! Engine behaviour: widening, pattern ids, eviction under small budgets, dictionary admission, JSON
//! schemas, determinism, and lossless round trips on arbitrary input.

mod common;

use common::{assert_lossless, encode_all, validate};
use proptest::prelude::*;
use stencil_codec::datum::{Content, Datum, JsonContext, JsonValue, Value};
use stencil_patterns::{Budget, Engine, EngineConfig, Meta};

fn now() -> EngineConfig {
    EngineConfig {
        define_after: 1,
        ..EngineConfig::default()
    }
}

fn patterns(datums: &[Datum]) -> Vec<(u64, String, Vec<u32>)> {
    datums
        .iter()
        .filter_map(|d| match d {
            Datum::PatternDefine(p) => Some((p.id, p.template.clone(), p.pos_list.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn typed_variants_share_a_pattern_without_widening() {
    let lines: Vec<&[u8]> = vec![
        b"took 15 ms on 10.0.0.1",
        b"took 2000 ms on 10.0.0.2",
        b"took 7 ms on db-1.example.com:5432",
    ];
    let datums = assert_lossless(&lines, now(), 10, "typed");
    validate(&datums);
    let defs = patterns(&datums);
    assert_eq!(defs.len(), 1, "one define, never widened: {defs:?}");
    assert_eq!(defs[0].1, "took  ms on ");
    assert_eq!(defs[0].2, vec![5, 12]);
}

#[test]
fn widening_resends_the_define_under_the_same_id() {
    let lines: Vec<&[u8]> = vec![
        b"Accepted password for root from 10.0.0.5 port 22 ssh2",
        b"Accepted password for alice from 10.0.0.7 port 4022 ssh2",
        b"Accepted password for bob from 10.0.0.8 port 1 ssh2",
    ];
    let datums = assert_lossless(&lines, now(), 1, "widening");
    validate(&datums);
    let defs = patterns(&datums);
    assert_eq!(defs.len(), 2, "defined, then widened once: {defs:?}");
    assert_eq!(defs[0].0, defs[1].0, "same id");
    assert!(
        defs[1].2.len() > defs[0].2.len(),
        "more slots after widening"
    );
    assert_eq!(defs[1].1, "Accepted password for  from  port  ");
    assert_eq!(defs[1].2, vec![22, 28, 34, 35]);
}

#[test]
fn volatile_slots_glued_by_punctuation_share_one_hole() {
    let lines: Vec<&[u8]> = vec![
        b"081109 203615 148 INFO block blk_1 of 12:34 from host-a",
        b"081109 203618 9 INFO block blk_2 of 5:6 from host-b",
        b"081110 000001 77 INFO block blk_3 of 7:899 from host-c",
    ];
    let datums = assert_lossless(&lines, now(), 1, "merged");
    validate(&datums);
    let merged = patterns(&datums);
    let unmerged_config = EngineConfig {
        merge_slots: false,
        ..now()
    };
    let datums = assert_lossless(&lines, unmerged_config, 1, "unmerged");
    validate(&datums);
    let unmerged = patterns(&datums);
    let last = |d: &[(u64, String, Vec<u32>)]| d.last().expect("a define").clone();
    let (m, u) = (last(&merged), last(&unmerged));
    assert!(
        m.2.len() < u.2.len(),
        "fewer holes when merged: {m:?} vs {u:?}"
    );
    // The date, time and pid become one value; the words around them stay static.
    assert!(m.1.starts_with(" INFO block "), "{m:?}");
    assert!(m.1.contains(" from "), "{m:?}");
}

/// Pattern ids of `lines`, one fresh engine.
fn pattern_ids(lines: &[&[u8]], config: EngineConfig) -> Vec<Option<u64>> {
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    lines
        .iter()
        .map(|l| engine.encode(l, &Meta::default(), &mut out).pattern)
        .collect()
}

/// PATTERNS.md §3.2 step 5: a value written with a varying number of tokens (an optional `(1.16 KB)`, a
/// lifetime of `00:01` or `<1 sec`) does not split the event; the spans rebuild every variant exactly,
/// empty ones included.
#[test]
fn values_of_varying_length_share_one_pattern_through_spans() {
    let lines: Vec<&[u8]> = vec![
        b"proxy.example.org:5070 close, 0 bytes sent, 0 bytes received, lifetime 00:01",
        b"proxy.example.org:5070 close, 403 bytes sent, 426 bytes received, lifetime <1 sec",
        b"proxy.example.org:5070 close, 451 bytes sent, 18846 bytes (18.4 KB) received, lifetime <1 sec",
        b"proxy.example.org:5070 close, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, lifetime 00:02",
        b"proxy.example.org:5070 close, 0 bytes sent, 0 bytes received, lifetime 00:03",
        b"proxy.example.org:5070 close, 1165 bytes (1.13 KB) sent, 815 bytes received, lifetime <1 sec",
    ];
    let ids = pattern_ids(&lines, now());
    assert!(
        ids.iter().all(|id| id.is_some() && *id == ids[0]),
        "{ids:?}"
    );
    let fixed = pattern_ids(
        &lines,
        EngineConfig {
            variable_length: false,
            ..now()
        },
    );
    let mut distinct = fixed.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 3, "without spans they split: {fixed:?}");

    let datums = assert_lossless(&lines, now(), 2, "spans");
    validate(&datums);
    let defs = patterns(&datums);
    assert!(defs.iter().all(|d| d.0 == defs[0].0), "one id: {defs:?}");
    let last = defs.last().expect("a define");
    assert!(
        last.1.contains(" close, ") && last.1.contains(" bytes") && last.1.contains("lifetime "),
        "{last:?}"
    );
    // The last line is structured, and its empty span is an empty string value.
    let Some(Datum::Log(log)) = datums.last() else {
        panic!("ends with a log");
    };
    let Content::Pattern { values, .. } = &log.content else {
        panic!("structured: {log:?}");
    };
    assert!(
        values.iter().any(|v| v.value == Value::Str(String::new())),
        "{values:?}"
    );
}

/// JSON logs that take the text path (here: the message is not last) and logfmt lines group by their
/// message's template, as text lines do, and the message's words stay in the pattern. When the quoted
/// message was one token, the first two lines shared a pattern with the message as one hole.
#[test]
fn messages_in_json_and_logfmt_group_by_what_they_say() {
    let json: Vec<&[u8]> = vec![
        br#"{"level":"info","msg":"user 1 logged in from 10.0.0.1","t":1}"#,
        br#"{"level":"info","msg":"disk /dev/sda is full","t":2}"#,
        br#"{"level":"info","msg":"user 2 logged in from 10.0.0.2","t":3}"#,
        br#"{"level":"info","msg":"disk /dev/sdb is full","t":4}"#,
    ];
    let logfmt: Vec<&[u8]> = vec![
        br#"t=1 level=info msg="user 1 logged in from 10.0.0.1""#,
        br#"t=2 level=info msg="disk /dev/sda is full""#,
        br#"t=3 level=info msg="user 2 logged in from 10.0.0.2""#,
        br#"t=4 level=info msg="disk /dev/sdb is full""#,
    ];
    for lines in [json, logfmt] {
        let ids = pattern_ids(&lines, now());
        assert_eq!(ids[0], ids[2], "{ids:?}");
        assert_eq!(ids[1], ids[3], "{ids:?}");
        assert_ne!(ids[0], ids[1], "{ids:?}");
        let datums = assert_lossless(&lines, now(), 2, "messages");
        validate(&datums);
        let templates: Vec<String> = patterns(&datums).into_iter().map(|d| d.1).collect();
        assert!(
            templates.iter().any(|t| t.contains(" logged in from "))
                && templates.iter().any(|t| t.contains(" is full")),
            "{templates:?}"
        );
    }
}

/// Access-log requests group by method and endpoint, with ids inside the path as values. When the quoted
/// request line was one token, all of these shared one pattern with the request as its hole.
#[test]
fn http_requests_group_by_method_and_endpoint() {
    let tenants = [
        "4f1e9c2ab7d34e5f9a0b1c2d3e4f5a6b",
        "0a9b8c7d6e5f40312233445566778899",
    ];
    let ids = [
        "3c0a1f6e-8d2b-4c51-9e7a-6b5d4c3b2a19",
        "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    ];
    // (endpoint, line): the endpoint is what a line should be grouped by.
    let mut lines: Vec<(u8, String)> = Vec::new();
    for i in 0..24usize {
        let (t, id) = (tenants[i % 2], ids[(i / 2) % 2]);
        let req = format!("[req-{i:04x}aa-1b2c] 10.0.{}.{} ", i % 7, i * 3 % 250);
        let tail = format!("status: 200 len: {} time: 0.{:04}", 1000 + i * 37, i * 91);
        let (endpoint, request) = match i % 4 {
            0 => (0, format!("GET /v2/{t}/servers/detail")),
            1 => (1, format!("GET /v2/{t}/servers/{id}")),
            2 => (2, format!("POST /v2/{t}/servers")),
            _ => (3, format!("DELETE /v2/{t}/servers/{id}")),
        };
        lines.push((endpoint, format!("{req}\"{request} HTTP/1.1\" {tail}")));
    }
    let raw: Vec<&[u8]> = lines.iter().map(|(_, l)| l.as_bytes()).collect();
    let got = pattern_ids(&raw, now());
    for (a, (ea, _)) in lines.iter().enumerate() {
        for (b, (eb, _)) in lines.iter().enumerate() {
            assert_eq!(
                got[a] == got[b],
                ea == eb,
                "lines {a} and {b}: {:?} / {:?}",
                lines[a].1,
                lines[b].1
            );
        }
    }
    let datums = assert_lossless(&raw, now(), 4, "requests");
    validate(&datums);
    let templates: Vec<String> = patterns(&datums).into_iter().map(|d| d.1).collect();
    assert!(
        templates
            .iter()
            .any(|t| t.contains("\"GET ///servers/detail HTTP/1.1\"")),
        "{templates:?}"
    );
}

/// Words that come and go mark another event, even next to values: no span for them.
/// Sibling merges: a word position that takes a third value becomes a slot, even in a line too short
/// for the similarity threshold to allow it; two values stay two events. The absorbed pattern is
/// deleted on the wire, reported by `Engine::merges`, and every line still comes back exactly.
#[test]
fn a_third_word_in_one_position_merges_the_siblings() {
    let users = [
        "cyrus", "news", "cyrus", "news", "test", "root", "news", "test9",
    ];
    let mut lines: Vec<String> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        lines.push(format!("session closed for user {u}"));
        // Two values only: `SPP` and `Agent` may be two events, and stay two patterns.
        let client = if i % 3 == 0 { "SPP" } else { "Agent" };
        lines.push(format!(
            "Session: {i}_{} initialized by client {client}.",
            i * 7
        ));
    }
    let raw: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let mut engine = Engine::new(now());
    let mut out = Vec::new();
    let mut merges = Vec::new();
    let mut ids = Vec::new();
    for l in &raw {
        ids.push(engine.encode(l, &Meta::default(), &mut out).pattern);
        merges.extend(engine.merges().iter().copied());
    }
    let (cyrus, news) = (ids[0], ids[2]);
    assert_ne!(cyrus, news, "two words could be two events");
    assert_eq!(merges, vec![(news.unwrap(), cyrus.unwrap())], "{ids:?}");
    for i in (8..16).step_by(2) {
        assert_eq!(
            ids[i], cyrus,
            "after the merge every user is one pattern: {ids:?}"
        );
    }
    assert!(
        out.iter()
            .any(|d| matches!(d, Datum::PatternDelete { id } if Some(*id) == news)),
        "the absorbed pattern is deleted"
    );
    assert_ne!(ids[1], ids[3], "SPP and Agent stay apart: {ids:?}");
    // The `test9` line: a value where words were, in the opened slot.
    assert_eq!(ids[14], cyrus);
    let datums = assert_lossless(&raw, now(), 3, "siblings");
    validate(&datums);
    // With sibling merges off, the short lines never group.
    let off = pattern_ids(
        &raw,
        EngineConfig {
            sibling_words: 0,
            ..now()
        },
    );
    assert_ne!(off[8], off[0], "{off:?}");
}

#[test]
fn added_words_are_another_event() {
    let lines: Vec<&[u8]> = vec![
        b"total of 1 ddr error(s) detected and corrected",
        b"total of 3 ddr error(s) detected and corrected",
        b"total of 1 ddr error(s) detected and corrected over 282 seconds",
        b"session opened for user cyrus by (uid=0)",
        b"session opened for user root by LOGIN(uid=0)",
        b"Received block blk_1 of size 67108864 from /10.0.0.1",
        b"Received block blk_2 src: /10.0.0.2:1 dest: /10.0.0.3:2 of size 67108864",
    ];
    let ids = pattern_ids(&lines, now());
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2], "{ids:?}");
    // An empty `key=` value is an absent thing: another event than the same key with a value.
    let pam: Vec<&[u8]> = vec![
        b"authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=10.0.0.1",
        b"authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=example.org",
        b"authentication failure; logname= uid=0 euid=0 tty=:0 ruser= rhost=",
    ];
    let pam_ids = pattern_ids(&pam, now());
    assert_eq!(pam_ids[0], pam_ids[1], "{pam_ids:?}");
    assert_ne!(pam_ids[1], pam_ids[2], "{pam_ids:?}");
    assert_ne!(ids[3], ids[4], "{ids:?}");
    assert_ne!(ids[5], ids[6], "{ids:?}");
}

#[test]
fn define_after_two_sends_the_first_line_raw() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    let a = engine.encode(
        b"disk full on sda at 91 percent",
        &Meta::default(),
        &mut out,
    );
    assert!(!a.structured && a.pattern.is_some());
    assert!(patterns(&out).is_empty(), "pending: no define yet");
    let b = engine.encode(
        b"disk full on sdb at 97 percent",
        &Meta::default(),
        &mut out,
    );
    assert!(b.structured);
    assert_eq!(a.pattern, b.pattern);
    assert_eq!(patterns(&out).len(), 1);
    validate(&out);
}

#[test]
fn ids_are_never_reused_and_budgets_hold_under_eviction() {
    let config = EngineConfig {
        define_after: 1,
        patterns: Budget::new(8, 16 << 10),
        values: Budget::new(16, 4 << 10),
        meta: Budget::new(4, 4 << 10),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config.clone());
    let mut out = Vec::new();
    // 40 distinct leading words: 40 patterns for a budget of 8.
    let word = |i: usize| -> String {
        (0..3)
            .map(|k| char::from(b'a' + ((i / 26usize.pow(k)) % 26) as u8))
            .collect()
    };
    let lines: Vec<String> = (0..500)
        .map(|i| format!("{} happened to user{} code {}", word(i % 40 * 7), i % 23, i))
        .collect();
    let tags: Vec<String> = (0..10).map(|i| format!("env:e{i}")).collect();
    for (i, line) in lines.iter().enumerate() {
        let tag = [tags[i % 10].as_str()];
        engine.encode(
            line.as_bytes(),
            &Meta {
                timestamp: i as i64,
                tags: &tag,
                ..Meta::default()
            },
            &mut out,
        );
        let (patterns, _, _) = engine.state_size();
        assert!(patterns <= 8, "pattern cap holds after every record");
    }
    validate(&out);
    let deletes = out
        .iter()
        .filter(|d| matches!(d, Datum::PatternDelete { .. }))
        .count();
    assert!(deletes > 0, "evictions happened");
    let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    assert_lossless(&refs, config, 50, "tiny budgets");
}

#[test]
fn dictionary_admission_on_second_sighting() {
    let mut engine = Engine::new(now());
    let mut out = Vec::new();
    for user in ["alice", "bob", "alice", "alice", "x"] {
        engine.encode(
            format!("login ok user={user} now").as_bytes(),
            &Meta::default(),
            &mut out,
        );
    }
    let values: Vec<Value> = out
        .iter()
        .filter_map(|d| match d {
            Datum::Log(l) => match &l.content {
                Content::Pattern { values, .. } => Some(values[0].value.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(
        matches!(&values[0], Value::Str(s) if s == "alice"),
        "first sighting inline: {values:?}"
    );
    assert!(matches!(&values[1], Value::Str(s) if s == "bob"));
    assert!(
        matches!(values[2], Value::Dict(_)),
        "second sighting admitted: {values:?}"
    );
    assert_eq!(values[2], values[3], "then referenced");
    assert!(
        matches!(&values[4], Value::Str(s) if s == "x"),
        "1 byte: never admitted"
    );
    validate(&out);
}

#[test]
fn tags_are_canonical_and_empty_is_absent() {
    let mut engine = Engine::new(now());
    let mut out = Vec::new();
    engine.encode(
        b"a",
        &Meta {
            tags: &["b:2", "a:1", "b:2"],
            ..Meta::default()
        },
        &mut out,
    );
    engine.encode(
        b"a",
        &Meta {
            tags: &["a:1", "b:2"],
            ..Meta::default()
        },
        &mut out,
    );
    engine.encode(
        b"a",
        &Meta {
            tags: &[],
            ..Meta::default()
        },
        &mut out,
    );
    let defined: Vec<&str> = out
        .iter()
        .filter_map(|d| match d {
            Datum::DictDefine(e) => Some(e.value.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(defined, ["a:1,b:2"]);
    let logs: Vec<_> = out
        .iter()
        .filter_map(|d| {
            if let Datum::Log(l) = d {
                Some(l.tags.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[2], None);
}

#[test]
fn json_schemas_with_every_value_kind_round_trip() {
    let lines: Vec<&[u8]> = vec![
        br#"{"level":"info","n":3,"ratio":0.25,"ok":true,"none":null,"big":18446744073709551615,"arr":[1,{"a":2}],"user":{"id":7,"name":"ann"},"msg":"user ann logged in"}"#,
        br#"{"level":"warn","n":-4,"ratio":159.6,"ok":false,"none":null,"big":9999999999999999,"arr":[],"user":{"id":8,"name":"bob"},"msg":"user bob logged in"}"#,
        br#"{"msg":"first","level":"info"}"#,
        br#"{"data":{"x":1,"message":"nested"}}"#,
        br#"{"a":1.0,"msg":"lexeme kept"}"#,
    ];
    let datums = assert_lossless(&lines, now(), 10, "json");
    validate(&datums);
    let columns: Vec<&Vec<JsonValue>> = datums
        .iter()
        .filter_map(|d| match d {
            Datum::Log(l) => match &l.json {
                Some(JsonContext::Columns { values, .. }) => Some(values),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        columns.len(),
        4,
        "all but the message-first document go structural"
    );
    let kinds: Vec<_> = columns[0].iter().map(JsonValue::kind).collect();
    use stencil_codec::datum::JsonKind::*;
    assert_eq!(
        kinds,
        [String, Int, Float, Bool, Null, RawJson, RawJson, Int, String]
    );
    let schemas = datums
        .iter()
        .filter(|d| matches!(d, Datum::SchemaDefine(_)))
        .count();
    // Kinds are part of a schema's identity: `big` is raw JSON in the first document (over i64) and an int
    // in the second, so the two get different schemas; the nested and `a` documents get their own.
    assert_eq!(schemas, 4);
}

#[test]
fn output_is_deterministic() {
    let lines: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "req {} GET /api/v{}/items?id={} took {}ms user=u{}",
                i,
                i % 3,
                i * 7,
                i % 50,
                i % 9
            )
        })
        .collect();
    let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    assert_eq!(
        encode_all(&refs, EngineConfig::default()),
        encode_all(&refs, EngineConfig::default())
    );
}

#[test]
fn hard_inputs_round_trip() {
    let long = "word ".repeat(200_000); // 1 MB line
    let many = "x ".repeat(1_000);
    let inputs: Vec<&[u8]> = vec![
        b"",
        b"   ",
        b"\t \t",
        b"crlf line\r",
        b"nul \x00 inside \x00",
        b"ctrl \x01\x1b[31mred\x1b[0m del \x7f",
        b"bad utf8 \xff\xfe here",
        b"lone continuation \x80",
        b"overlong \xc0\xaf",
        b"surrogate \xed\xa0\x80",
        b"truncated \xe2\x82",
        "emoji \u{1F600} in text \u{1F600}".as_bytes(),
        "literal replacement \u{FFFD} and BOM \u{FEFF}".as_bytes(),
        "escape marker \u{F8FE}FF literal".as_bytes(),
        b"!!!",
        long.as_bytes(),
        many.as_bytes(),
        b"key= value=\"quoted value\" empty=",
    ];
    let doubled: Vec<&[u8]> = inputs.iter().chain(inputs.iter()).copied().collect();
    validate(&assert_lossless(&doubled, now(), 7, "hard inputs"));
    validate(&assert_lossless(
        &doubled,
        EngineConfig::default(),
        3,
        "hard inputs, define_after 2",
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Arbitrary bytes, any mix: every record comes back byte for byte.
    #[test]
    fn arbitrary_bytes_round_trip(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..40)) {
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let rebuilt = common::round_trip(&refs, now(), 5);
        prop_assert_eq!(rebuilt.len(), refs.len());
        for (a, b) in rebuilt.iter().zip(&refs) {
            prop_assert_eq!(a.as_slice(), *b);
        }
    }

    /// Quoted HTTP request lines with arbitrary targets (any bytes but space and the quote, `/`, `?`, `&`
    /// and `=` among them, often) and methods: every record comes back byte for byte.
    #[test]
    fn request_lines_round_trip(parts in prop::collection::vec(("[A-Z]{2,11}", "[/?&=a-z0-9%.\\-]{0,12}", prop::collection::vec(any::<u8>(), 0..12), 0u8..3), 1..40)) {
        let lines: Vec<Vec<u8>> = parts
            .iter()
            .map(|(method, target, extra, version)| {
                let mut line = format!("1.2.3.4 \"{method} {target}").into_bytes();
                line.extend(extra.iter().copied().filter(|b| *b != b' ' && *b != b'"'));
                line.extend_from_slice(format!(" HTTP/1.{version}\" 200 {}", target.len()).as_bytes());
                line
            })
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let rebuilt = common::round_trip(&refs, now(), 5);
        prop_assert_eq!(rebuilt.len(), refs.len());
        for (a, b) in rebuilt.iter().zip(&refs) {
            prop_assert_eq!(a.as_slice(), *b);
        }
    }

    /// JSON documents among text lines and arbitrary bytes, on the default wire (each source structured
    /// or raw, a raw source's JSON logs as their lines), with the settings `ship --wire auto` uses, JSON
    /// logs on the text path and as documents (`--json-documents`): every record comes back byte for
    /// byte.
    #[test]
    fn json_and_text_round_trip_on_the_default_wire(parts in prop::collection::vec((0u8..4, any::<u32>(), "[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..40)), 1..80)) {
        let lines: Vec<Vec<u8>> = parts
            .iter()
            .map(|(kind, n, w, bytes)| match kind {
                0 => format!("{{\"level\":\"info\",\"n\":{n},\"user\":\"{w}\",\"msg\":\"job {w} done\"}}").into_bytes(),
                1 => format!("{{\"msg\":\"first {w}\",\"n\":{n}}}").into_bytes(),
                2 => format!("job {n} by {w} exit={}", n % 7).into_bytes(),
                _ => bytes.clone(),
            })
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        for (config, batch) in [(false, 3), (false, 50), (true, 3), (true, 50)] {
            let config = now().for_default_wire(config);
            let trip = stencil_patterns::roundtrip::round_trip_on(&refs, config.clone(), batch, stencil_codec::Extensions::ALL)
                .unwrap_or_else(|e| panic!("round trip failed: {e}"));
            prop_assert_eq!(trip.rebuilt.len(), refs.len());
            for (a, b) in trip.rebuilt.iter().zip(&refs) {
                prop_assert_eq!(a.as_slice(), *b);
            }
        }
    }

    /// JSON documents with the message anywhere, nested, or in journald's key, sent as documents
    /// (`json_order`) on every wire: a stream that agreed `json-order` (the default wire), one whose
    /// intake knows the other extensions but not it, and plain v3 (those logs as their text). Every
    /// record comes back byte for byte.
    #[test]
    fn placed_messages_round_trip_on_every_wire(parts in prop::collection::vec((0u8..5, any::<u32>(), "[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..40)), 1..80)) {
        let lines: Vec<Vec<u8>> = parts
            .iter()
            .map(|(kind, n, w, bytes)| match kind {
                0 => format!("{{\"level\":30,\"msg\":\"job {w} done in {n} ms\",\"pid\":{n},\"v\":0}}").into_bytes(),
                1 => format!("{{\"MESSAGE\":\"Started {w}.\",\"_PID\":\"{n}\"}}").into_bytes(),
                2 => format!("{{\"ts\":{n},\"event\":{{\"message\":\"{w} {n}\",\"code\":{}}},\"ok\":true}}", n % 7).into_bytes(),
                3 => format!("{{\"level\":\"info\",\"msg\":\"last {w}\"}}").into_bytes(),
                _ => bytes.clone(),
            })
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let config = EngineConfig { define_after: 1, json_order: true, ..now() };
        let older = stencil_codec::Extensions { json_order: false, ..stencil_codec::Extensions::ALL };
        for wire in [stencil_codec::Extensions::ALL, older, stencil_codec::Extensions::default()] {
            let trip = stencil_patterns::roundtrip::round_trip_on(&refs, config.clone(), 7, wire)
                .unwrap_or_else(|e| panic!("round trip failed on {wire}: {e}"));
            prop_assert_eq!(trip.rebuilt.len(), refs.len());
            for (a, b) in trip.rebuilt.iter().zip(&refs) {
                prop_assert_eq!(a.as_slice(), *b);
            }
        }
    }

    /// Lines whose values take a varying number of tokens, in any order: spans rebuild them exactly.
    #[test]
    fn varying_length_values_round_trip(parts in prop::collection::vec((any::<u16>(), prop::option::of(0u16..999), any::<bool>(), 0u8..3), 1..60)) {
        let lines: Vec<String> = parts
            .iter()
            .map(|(n, kb, short, lead)| {
                let kb = kb.map_or(String::new(), |k| format!(" ({}.{} KB)", k / 10, k % 10));
                let life = if *short { "<1 sec".to_owned() } else { format!("00:{:02}", n % 60) };
                let lead = ["", " ", "  "][*lead as usize];
                format!("{lead}host:{n} close, {n} bytes{kb} sent, lifetime {life}")
            })
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let datums = assert_lossless(&refs, now(), 7, "varying");
        validate(&datums);
    }

    /// Templated lines with random values: lossless, valid, and they share patterns.
    #[test]
    fn templated_lines_round_trip(values in prop::collection::vec((any::<u32>(), "[a-z]{1,8}", any::<i16>(), "\\PC{0,6}"), 1..60)) {
        let lines: Vec<String> = values.iter().map(|(n, w, i, s)| format!("job {n} by {w} exit={i} note {s}")).collect();
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let datums = assert_lossless(&refs, now(), 9, "templated");
        validate(&datums);
    }
}
