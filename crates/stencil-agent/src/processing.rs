//! A source's processing rules, in the Datadog Agent's vocabulary (`log_processing_rules`):
//! `exclude_at_match`, `include_at_match` and `mask_sequences`, applied in the order they are written
//! to each event (after `multi_line` joined it, as the Datadog Agent does), and the opt-in detection of
//! an event's status from its severity word or JSON level field.
//!
//! Rules work on bytes (`regex::bytes`), so a line that is not UTF-8 is matched and masked like any
//! other, and what no rule touches is shipped byte for byte.

use std::borrow::Cow;

use regex::bytes::Regex;

/// One rule of `log_processing_rules` (except `multi_line`, which the [`crate::multiline`] aggregator
/// applies before these).
#[derive(Debug, Clone)]
pub enum Rule {
    /// Drop events that match.
    ExcludeAtMatch {
        /// The rule's `name` (the metric label of what it drops).
        name: String,
        /// What an event must not contain.
        pattern: Regex,
    },
    /// Drop events that do not match (with several, an event must match them all).
    IncludeAtMatch {
        /// The rule's `name`.
        name: String,
        /// What an event must contain.
        pattern: Regex,
    },
    /// Replace every match with `placeholder` (`$1`, `${name}` refer to capture groups).
    MaskSequences {
        /// The rule's `name`.
        name: String,
        /// What to hide.
        pattern: Regex,
        /// What replaces it (`replace_placeholder`).
        placeholder: Vec<u8>,
    },
}

impl Rule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        match self {
            Rule::ExcludeAtMatch { name, .. }
            | Rule::IncludeAtMatch { name, .. }
            | Rule::MaskSequences { name, .. } => name,
        }
    }
}

/// What the rules made of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Ship this text (the event itself when no mask matched).
    Keep(Cow<'a, [u8]>),
    /// Dropped by the named rule.
    Drop(&'a str),
}

/// Applies `rules` in order to `event`.
pub fn apply<'a>(rules: &'a [Rule], event: &'a [u8]) -> Verdict<'a> {
    let mut text = Cow::Borrowed(event);
    for rule in rules {
        match rule {
            Rule::ExcludeAtMatch { name, pattern } => {
                if pattern.is_match(&text) {
                    return Verdict::Drop(name);
                }
            }
            Rule::IncludeAtMatch { name, pattern } => {
                if !pattern.is_match(&text) {
                    return Verdict::Drop(name);
                }
            }
            Rule::MaskSequences {
                pattern,
                placeholder,
                ..
            } => {
                if let Cow::Owned(masked) = pattern.replace_all(&text, placeholder.as_slice()) {
                    text = Cow::Owned(masked);
                }
            }
        }
    }
    Verdict::Keep(text)
}

/// How far into an event the severity word is looked for: it sits near the start in every common
/// layout, and looking further would find words of the message itself.
const STATUS_WINDOW: usize = 200;

/// The status of `event` from its severity word (`ERROR`, `warn`, `[E]`…) or, for a JSON object, from
/// its `level`, `severity`, `status` or `lvl` field (strings, or bunyan/pino numbers): one of the
/// Datadog statuses (`emergency`, `alert`, `critical`, `error`, `warning`, `notice`, `info`, `debug`),
/// or `None` when nothing says.
pub fn detect_status(event: &[u8]) -> Option<&'static str> {
    let head = &event[..event.len().min(STATUS_WINDOW)];
    if head.first() == Some(&b'{') {
        if let Some(status) = json_level(event) {
            return Some(status);
        }
    }
    // The first word of the head that names a severity, as a whole word.
    head.split(|b| !b.is_ascii_alphabetic())
        .filter(|w| (3..=9).contains(&w.len()))
        .find_map(severity_word)
}

/// A severity word (any case, as whole word) to its Datadog status.
fn severity_word(word: &[u8]) -> Option<&'static str> {
    let mut lower = [0u8; 9];
    let lower = &mut lower[..word.len()];
    lower.copy_from_slice(word);
    lower.make_ascii_lowercase();
    // Any case: `ERROR`, `Error` and `error` all name the severity in the layouts seen in practice.
    Some(match &*lower {
        b"emerg" | b"emergency" | b"panic" => "emergency",
        b"alert" => "alert",
        b"crit" | b"critical" | b"fatal" | b"severe" => "critical",
        b"err" | b"error" | b"eror" => "error",
        b"warn" | b"warning" => "warning",
        b"notice" => "notice",
        b"info" => "info",
        b"debug" | b"trace" | b"verbose" | b"dbug" => "debug",
        _ => return None,
    })
}

/// The level field of a JSON object line, found by scanning (no full parse): the first of `"level"`,
/// `"severity"`, `"lvl"`, `"status"` followed by `:` and a string or a number.
fn json_level(line: &[u8]) -> Option<&'static str> {
    for key in [
        &b"\"level\""[..],
        b"\"severity\"",
        b"\"lvl\"",
        b"\"status\"",
        b"\"log.level\"",
    ] {
        let Some(at) = find(line, key) else { continue };
        let rest = &line[at + key.len()..];
        let rest = rest
            .trim_ascii_start()
            .strip_prefix(b":")?
            .trim_ascii_start();
        if let Some(s) = rest.strip_prefix(b"\"") {
            let end = s.iter().position(|&b| b == b'"')?;
            let word = &s[..end];
            if (3..=9).contains(&word.len()) {
                if let Some(status) = severity_word(word) {
                    return Some(status);
                }
            }
            return None;
        }
        // bunyan and pino: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let n: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        return Some(match n {
            0..=29 => "debug",
            30..=39 => "info",
            40..=49 => "warning",
            50..=59 => "error",
            _ => "critical",
        });
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(p: &str) -> Regex {
        Regex::new(p).unwrap()
    }

    #[test]
    fn rules_apply_in_order() {
        let rules = vec![
            Rule::ExcludeAtMatch {
                name: "health".into(),
                pattern: rx("GET /health"),
            },
            Rule::MaskSequences {
                name: "cards".into(),
                pattern: rx(r"\d{4}-\d{4}-\d{4}-(\d{4})"),
                placeholder: b"[card ending $1]".to_vec(),
            },
            Rule::IncludeAtMatch {
                name: "only_api".into(),
                pattern: rx("/api/"),
            },
        ];
        assert_eq!(apply(&rules, b"GET /health 200"), Verdict::Drop("health"));
        assert_eq!(apply(&rules, b"GET /home 200"), Verdict::Drop("only_api"));
        assert_eq!(
            apply(&rules, b"POST /api/pay card=1234-5678-9012-3456 ok"),
            Verdict::Keep(Cow::Owned(
                b"POST /api/pay card=[card ending 3456] ok".to_vec()
            ))
        );
        // Untouched text is not copied, and bytes that are not UTF-8 pass through.
        let odd = b"GET /api/x \xff\xfe";
        assert!(matches!(apply(&rules, odd), Verdict::Keep(Cow::Borrowed(b))if b == odd));
    }

    #[test]
    fn status_from_words_and_json_levels() {
        assert_eq!(
            detect_status(b"2024-01-01 12:00:00 ERROR db: timeout"),
            Some("error")
        );
        assert_eq!(detect_status(b"[warn] disk 91% full"), Some("warning"));
        assert_eq!(
            detect_status(b"Jan  1 00:00:00 host kernel: CRIT thermal"),
            Some("critical")
        );
        assert_eq!(detect_status(b"I am fine"), None);
        // Not inside longer words.
        assert_eq!(detect_status(b"informational errorless text"), None);
        assert_eq!(
            detect_status(br#"{"time":"t","level":"warn","msg":"x"}"#),
            Some("warning")
        );
        assert_eq!(
            detect_status(br#"{"level":50,"time":1,"msg":"boom"}"#),
            Some("error")
        );
        assert_eq!(
            detect_status(br#"{"severity": "DEBUG", "message": "m"}"#),
            Some("debug")
        );
        // A word far into a long message is not taken for the severity.
        let mut long = vec![b'x'; 300];
        long.extend_from_slice(b" ERROR");
        assert_eq!(detect_status(&long), None);
    }
}
