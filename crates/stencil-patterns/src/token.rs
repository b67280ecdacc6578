//! The tokenizer: one forward pass over a line, no allocation per token.
//!
//! A line is cut into whitespace runs, single punctuation bytes and *chunks* (maximal runs of other
//! bytes). Each chunk is classified as a whole (URL, e-mail, UUID, IP, MAC, host:port, date/time,
//! duration, size, number, hex, path, id, name, word); a chunk that is none of these is split into
//! alphanumeric runs and punctuation. `key=` starts a key/value pair whose value is always dynamic, and
//! quoted strings are one token, except a message: the quoted value of a message key (`"msg":"…"` in
//! JSON, `msg="…"` in logfmt) is its two quotes and the text between them, cut like any text. (PATTERNS.md
//! §2.2 makes every quoted string one token; for a message that hid its template from the miner, so JSON
//! lines on the text path grouped by their keys alone, or not at all.) A quoted HTTP request line
//! (`"GET /v2/… HTTP/1.1"`) is cut too: its method is structural and its target is split at `/`, so
//! requests group by method and endpoint and ids inside paths are values (see `request_line`). And a
//! quoted value (`'/udev/vcs2'`, `"10.0.0.1"`: no whitespace, one chunk of a value's class) is that value
//! between two quote marks, so that it is a slot as it would be unquoted, not a word that splits the
//! event (see `quoted_value`). Token spans always tile the line exactly.
//!
//! Each class has a *role* for the miner: structural (always static), mined (static until it varies) or
//! dynamic (a slot from the first sighting).
//!
//! [`tokenize`] is a pure function of the line. A [`Tokenizer`] (one per engine) cuts the same tokens and
//! remembers how it cut recent chunks, so that a chunk the stream repeats is not classified again (see
//! `memo`).

mod memo;

use memo::Memo;

/// The class of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Class {
    /// Run of whitespace.
    Ws,
    /// One punctuation or control byte.
    Punct,
    /// Letters, `_`, non-ASCII; no digit.
    Word,
    /// Digit-free words joined by `.`, `-` or `$`.
    Name,
    /// A quoted string (one token, even with spaces).
    Quoted,
    /// `key=` (static, includes the `=`).
    Key,
    /// The value after a `key=` (possibly empty).
    KvValue,
    /// An integer.
    Int,
    /// A decimal number.
    Float,
    /// `0x…`, or 8+ hex digits with a digit and a letter.
    Hex,
    /// `8-4-4-4-12` hex.
    Uuid,
    /// Letters and digits mixed, with `_ - .`.
    Id,
    /// Dotted quad, optional `:port`.
    IPv4,
    /// IPv6 forms.
    IPv6,
    /// A MAC address.
    Mac,
    /// `name:port`.
    HostPort,
    /// A date, a time, or both.
    DateTime,
    /// A number with a time unit.
    Duration,
    /// A number with a size unit.
    Size,
    /// A file path.
    Path,
    /// `scheme://…`.
    Url,
    /// `local@domain`.
    Email,
    /// A parenthesised group without whitespace: `(host.example.com)`, `()`.
    Group,
    /// The method of a quoted HTTP request line (`GET` in `"GET /a HTTP/1.1"`): it names the event, so
    /// it is structural.
    Method,
    /// A path segment of words (`servers`, `os-keypairs`, `favicon.ico`) in a request line's target: mined
    /// like a word, but never in the same position as a value (`/servers/detail` and `/servers/<id>`
    /// are different endpoints).
    Segment,
    /// Text that may not go into a compat template (characters above U+FFFF). (The last class: see
    /// `CLASS_COUNT`.)
    Opaque,
}

/// How the miner treats a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Always static, and must be equal for two lines to share a pattern.
    Structural,
    /// Static until it varies; then the miner may turn it into a slot.
    Mined,
    /// A slot from the first sighting.
    Dynamic,
}

impl Class {
    /// The class's role.
    #[inline]
    pub fn role(self) -> Role {
        // A table (the miner asks for every token, several times): one load, not a chain of tests.
        ROLES[self as usize]
    }

    /// The role by the class's rules (what [`ROLES`] is made of).
    const fn rule(self) -> Role {
        match self {
            Class::Ws | Class::Punct | Class::Key | Class::Method => Role::Structural,
            Class::Word | Class::Name | Class::Quoted | Class::Segment => Role::Mined,
            _ => Role::Dynamic,
        }
    }
}

/// How many classes there are (`Opaque` is the last).
const CLASS_COUNT: usize = Class::Opaque as usize + 1;

/// Every class, in declaration order.
const CLASSES: [Class; CLASS_COUNT] = [
    Class::Ws,
    Class::Punct,
    Class::Word,
    Class::Name,
    Class::Quoted,
    Class::Key,
    Class::KvValue,
    Class::Int,
    Class::Float,
    Class::Hex,
    Class::Uuid,
    Class::Id,
    Class::IPv4,
    Class::IPv6,
    Class::Mac,
    Class::HostPort,
    Class::DateTime,
    Class::Duration,
    Class::Size,
    Class::Path,
    Class::Url,
    Class::Email,
    Class::Group,
    Class::Method,
    Class::Segment,
    Class::Opaque,
];

/// [`Class::role`] by class number.
static ROLES: [Role; CLASS_COUNT] = {
    let mut t = [Role::Dynamic; CLASS_COUNT];
    let mut i = 0;
    while i < CLASSES.len() {
        assert!(CLASSES[i] as usize == i, "CLASSES is in declaration order");
        t[i] = CLASSES[i].rule();
        i += 1;
    }
    t
};

/// One token: a span of the line and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Byte offset of the first byte.
    pub start: u32,
    /// Byte offset past the last byte.
    pub end: u32,
    /// The class.
    pub class: Class,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, line: &'a str) -> &'a str {
        line.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }
}

const WS: u8 = 1;
const DELIM: u8 = 2;
const QUOTE: u8 = 3;

/// Byte classes: whitespace, hard delimiters (always one `Punct`), quotes; 0 = chunk byte.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = DELIM; // C0 controls are single punctuation tokens
        i += 1;
    }
    t[0x7f] = DELIM;
    t[b' ' as usize] = WS;
    t[b'\t' as usize] = WS;
    t[b'\r' as usize] = WS;
    t[b'\n' as usize] = WS;
    t[0x0b] = WS;
    t[0x0c] = WS;
    let delims = b",;()[]{}<>|=`";
    let mut j = 0;
    while j < delims.len() {
        t[delims[j] as usize] = DELIM;
        j += 1;
    }
    t[b'"' as usize] = QUOTE;
    t[b'\'' as usize] = QUOTE;
    t
};

/// Longest quoted string taken as one token.
const MAX_QUOTED: usize = 1024;

/// Cuts `line` into tokens, appending them to `out` (cleared first). A [`Tokenizer`] cuts the same
/// tokens, sooner when chunks repeat.
pub fn tokenize(line: &str, out: &mut Vec<Token>) {
    tokenize_with(line, &mut Memo::disabled(), out);
}

fn tokenize_with(line: &str, memo: &mut Memo, out: &mut Vec<Token>) {
    out.clear();
    scan(line, 0, true, memo, out);
    merge_dates(line.as_bytes(), out);
}

/// A tokenizer that remembers how it cut recent chunks (see the `memo` module): a stream's lines repeat
/// most of their typed chunks (hosts, paths, addresses, class names), and a chunk it remembers is not
/// classified again. Its tokens are [`tokenize`]'s, always.
#[derive(Debug)]
pub struct Tokenizer {
    memo: Memo,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer::new()
    }
}

impl Tokenizer {
    /// A tokenizer with an empty memo (40 KiB: 1,024 slots of a chunk of up to 32 bytes and its cut).
    pub fn new() -> Self {
        Tokenizer { memo: Memo::new() }
    }

    /// Cuts `line` into tokens, appending them to `out` (cleared first), as [`tokenize`] does.
    pub fn tokenize(&mut self, line: &str, out: &mut Vec<Token>) {
        tokenize_with(line, &mut self.memo, out);
    }
}

/// A key whose quoted value is a log message (`"msg":"…"` in JSON, `msg="…"` in logfmt): the JSON
/// path's message keys, journald's `MESSAGE` among them.
fn is_message_key(key: &[u8]) -> bool {
    crate::json::MESSAGE_KEYS
        .iter()
        .any(|k| k.as_bytes() == key)
}

/// Tokenizes `line[start..]`. With `messages`, the quoted value of a message key (see
/// [`is_message_key`]) is cut like text between its two quotes instead of being one token, so that the
/// miner learns the message's own template: JSON logs that take the text path (message not last, other
/// spacing) and logfmt lines group by what they say, not only by their keys. Not recursive: the text
/// inside is scanned without it.
fn scan(line: &str, start: usize, messages: bool, memo: &mut Memo, out: &mut Vec<Token>) {
    let b = line.as_bytes();
    let n = b.len();
    let mut i = start;
    let mut after_key = false;
    while i < n {
        let c = BYTE_CLASS[b[i] as usize];
        if after_key {
            after_key = false;
            // The value of `key=`: up to whitespace or a closing delimiter; may be empty or quoted.
            let quoted = if c == QUOTE { quoted_end(b, i) } else { None };
            if let Some(end) = quoted.filter(|_| messages && key_is_message(b, out)) {
                message_text(line, i, end, memo, out);
                i = end;
                continue;
            }
            let end = quoted.unwrap_or_else(|| kv_end(b, i));
            out.push(tok(i, end, Class::KvValue));
            i = end;
            continue;
        }
        match c {
            WS => {
                let mut j = i + 1;
                while j < n && BYTE_CLASS[b[j] as usize] == WS {
                    j += 1;
                }
                out.push(tok(i, j, Class::Ws));
                i = j;
            }
            QUOTE => match quoted_end(b, i) {
                Some(end) if messages && b[i] == b'"' && json_message_follows(b, out) => {
                    message_text(line, i, end, memo, out);
                    i = end;
                }
                Some(end) => {
                    if !request_line(line, i, end, out) && !quoted_value(line, i, end, out) {
                        out.push(tok(i, end, mined(line, i, end, Class::Quoted)));
                    }
                    i = end;
                }
                None => {
                    out.push(tok(i, i + 1, Class::Punct));
                    i += 1;
                }
            },
            DELIM => {
                // `(host)` and `()` are one dynamic token, so that an empty group still lines up.
                if b[i] == b'(' {
                    if let Some(end) = group_end(b, i) {
                        out.push(tok(i, end, mined(line, i, end, Class::Group)));
                        i = end;
                        continue;
                    }
                }
                out.push(tok(i, i + 1, Class::Punct));
                i += 1;
            }
            _ => {
                // The chunk's end, and which byte categories it holds, in the same pass: `classify`
                // does not read the bytes again to learn them, and a chunk of letters (and `_`) only,
                // the commonest, is a word it would only confirm.
                let mut seen = 0u16;
                let mut j = i;
                // Letters, eight at a time (most chunks are words); the rest a byte at a time.
                while let Some(word) = b.get(j..j + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
                    let run = leading_letters(u64::from_le_bytes(word));
                    if run > 0 {
                        seen |= 1 << LETTER;
                    }
                    j += run;
                    if run < 8 {
                        break;
                    }
                }
                while j < n {
                    let k = CHUNK_CLASS[b[j] as usize];
                    if k == CHUNK_END {
                        break;
                    }
                    seen |= 1 << k;
                    j += 1;
                }
                let letters = seen == 1 << LETTER;
                if j < n && b[j] == b'=' && is_key(&b[i..j]) {
                    out.push(tok(i, j + 1, Class::Key));
                    i = j + 1;
                    after_key = true;
                    continue;
                }
                if letters {
                    // Most words are not capitalised: they skip the call.
                    let class = if b[i].is_ascii_uppercase() && is_calendar_word(&b[i..j]) {
                        Class::DateTime
                    } else {
                        Class::Word
                    };
                    out.push(tok(i, j, class));
                } else if seen == 1 << DIGIT {
                    // Digits only, the commonest value: an integer, as `classify` would say.
                    out.push(tok(i, j, Class::Int));
                } else {
                    memo.chunk(line, i, j, seen, out);
                }
                i = j;
            }
        }
    }
    if after_key {
        out.push(tok(n, n, Class::KvValue));
    }
}

/// The quoted message `line[start..end]` as its quotes and the text between them.
fn message_text(line: &str, start: usize, end: usize, memo: &mut Memo, out: &mut Vec<Token>) {
    out.push(tok(start, start + 1, Class::Punct));
    // The closing quote is ASCII, so `end - 1` is a character boundary.
    scan(&line[..end - 1], start + 1, false, memo, out);
    out.push(tok(end - 1, end, Class::Punct));
}

/// Cuts `line[start..end]`, a double-quoted string, as an HTTP request line when it is one: `"`, the
/// method, a space, the target, a space, the protocol (`HTTP/1.1`) and `"`. False, pushing nothing,
/// otherwise.
///
/// Access logs (Common and Combined Log Format, nginx, most web frameworks and API servers) quote the
/// request line. As one quoted token it varies on every line, so every request of a service shared one
/// pattern whatever its method and endpoint. Cut, the method is structural, the target's segments of
/// words are mined (see [`Class::Segment`]) and its ids and numbers are values: requests group by method
/// and endpoint, and an id inside a path (`/v2/<tenant>/servers`) is a value of its own.
fn request_line(line: &str, start: usize, end: usize, out: &mut Vec<Token>) -> bool {
    let b = line.as_bytes();
    if b[start] != b'"' || end < start + 2 {
        return false;
    }
    let inner = &b[start + 1..end - 1];
    let Some(m) = inner.iter().position(|&c| c == b' ') else {
        return false;
    };
    if !(3..=10).contains(&m) || !inner[..m].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let rest = &inner[m + 1..];
    let Some(t) = rest.iter().position(|&c| c == b' ') else {
        return false;
    };
    let (target, protocol) = (&rest[..t], &rest[t + 1..]);
    let version = protocol.strip_prefix(b"HTTP/").unwrap_or_default();
    let version_ok = !version.is_empty()
        && version.len() <= 4
        && version[0].is_ascii_digit()
        && version.iter().all(|&c| c.is_ascii_digit() || c == b'.');
    if !version_ok || target.is_empty() {
        return false;
    }
    let method = start + 1;
    let target_start = method + m + 1;
    let target_end = target_start + t;
    out.push(tok(start, method, Class::Punct));
    out.push(tok(method, method + m, Class::Method));
    out.push(tok(method + m, target_start, Class::Ws));
    if target[0] == b'/' {
        request_target(line, target_start, target_end, out);
    } else {
        // A proxy's absolute URL, `CONNECT`'s host:port, `OPTIONS *`: one token, as anywhere else.
        chunk(line, target_start, target_end, categories(target), out);
    }
    out.push(tok(target_end, target_end + 1, Class::Ws));
    out.push(tok(target_end + 1, end - 1, Class::Name));
    out.push(tok(end - 1, end, Class::Punct));
    true
}

/// The target of a request line, `line[start..end]` (it starts with `/`): each `/` is punctuation, a
/// segment of words is a [`Class::Segment`], any other segment is classified like a chunk, and a query's
/// `key=` parameters (`?a=1&b=2`) are structural keys with dynamic values.
fn request_target(line: &str, start: usize, end: usize, out: &mut Vec<Token>) {
    let b = line.as_bytes();
    let query = b[start..end]
        .iter()
        .position(|&c| c == b'?')
        .map_or(end, |q| start + q);
    separated(b, start, query, b'/', out, |i, j, out| {
        let seen = categories(&b[i..j]);
        match classify_seen(&b[i..j], seen) {
            Some(Class::Word | Class::Name) => {
                out.push(tok(i, j, mined(line, i, j, Class::Segment)));
            }
            _ => chunk(line, i, j, seen, out),
        }
    });
    if query < end {
        out.push(tok(query, query + 1, Class::Punct));
        // Parameters between `&`s: `key=` and its value when it has that form, else like a chunk.
        separated(b, query + 1, end, b'&', out, |i, j, out| {
            match b[i..j].iter().position(|&c| c == b'=') {
                Some(k) if is_key(&b[i..i + k]) => {
                    out.push(tok(i, i + k + 1, Class::Key));
                    out.push(tok(i + k + 1, j, Class::KvValue));
                }
                _ => chunk(line, i, j, categories(&b[i..j]), out),
            }
        });
    }
}

/// Cuts `b[start..end]` at each `sep`, which is punctuation; `piece` tokenizes each non-empty span
/// between them.
fn separated(
    b: &[u8],
    start: usize,
    end: usize,
    sep: u8,
    out: &mut Vec<Token>,
    mut piece: impl FnMut(usize, usize, &mut Vec<Token>),
) {
    let mut i = start;
    while i < end {
        if b[i] == sep {
            out.push(tok(i, i + 1, Class::Punct));
            i += 1;
            continue;
        }
        let j = b[i..end]
            .iter()
            .position(|&c| c == sep)
            .map_or(end, |k| i + k);
        piece(i, j, out);
        i = j;
    }
}

/// True when the tokens so far end with a JSON message key and its colon: `"msg":`, `"message" : `.
fn json_message_follows(b: &[u8], out: &[Token]) -> bool {
    let mut rest = out.iter().rev().filter(|t| t.class != Class::Ws);
    let colon = rest
        .next()
        .is_some_and(|t| t.class == Class::Punct && b[t.start as usize] == b':');
    colon
        && rest.next().is_some_and(|t| {
            t.class == Class::Quoted
                && t.end - t.start >= 2
                && b[t.start as usize] == b'"'
                && is_message_key(&b[t.start as usize + 1..t.end as usize - 1])
        })
}

/// A quoted value (`'/udev/vcs2'`, `"10.0.0.1"`): when the inside of the quotes `line[start..end]` is
/// one token of a value's class, it is that token between two quote marks, so that it varies as the
/// same value does unquoted. Pushes the three tokens and returns true; false for anything else (text
/// with spaces, a word), which stays one `Quoted` token.
fn quoted_value(line: &str, start: usize, end: usize, out: &mut Vec<Token>) -> bool {
    let (from, to) = (start + 1, end - 1);
    let inside = &line.as_bytes()[from..to];
    if inside.is_empty() || inside.iter().any(|&c| BYTE_CLASS[c as usize] == WS) {
        return false;
    }
    let Some(class) =
        classify_seen(inside, categories(inside)).filter(|c| c.role() == Role::Dynamic)
    else {
        return false;
    };
    out.push(tok(start, from, Class::Punct));
    out.push(tok(from, to, fix_role(line, from, to, class)));
    out.push(tok(to, end, Class::Punct));
    true
}

/// True when the last token is the `key=` of a message key (`msg=`).
fn key_is_message(b: &[u8], out: &[Token]) -> bool {
    out.last().is_some_and(|t| {
        t.class == Class::Key && is_message_key(&b[t.start as usize..t.end as usize - 1])
    })
}

/// Joins a date written as several words (`Sun Dec 04 04:47:44 2005`, `Jun  9 06:06:20`) into one
/// `DateTime` token: a run of date parts (calendar words, numbers, times) separated by one or two spaces,
/// holding a time or a calendar word and at least two parts. One value instead of five on the wire.
fn merge_dates(b: &[u8], tokens: &mut Vec<Token>) {
    merge_dates_with(b, tokens, true);
}

/// A token that may be part of a date written as several words.
fn date_part(t: &Token) -> bool {
    matches!(t.class, Class::DateTime | Class::Int)
}

/// A token that makes a run of date parts a date.
fn date_anchor(t: &Token) -> bool {
    t.class == Class::DateTime
}

/// Whitespace that may separate the parts of a date: one or two spaces.
fn date_gap(b: &[u8], t: &Token) -> bool {
    t.class == Class::Ws
        && t.end - t.start <= 2
        && b[t.start as usize..t.end as usize]
            .iter()
            .all(|&c| c == b' ')
}

/// [`merge_dates`]. With `skip`, the tokens before the run of parts that holds the next `DateTime` (the
/// tokens after the last one) are moved as a block, not visited one by one: every merged run holds a
/// `DateTime`, so none of them can start one. Without it (tests), every token is visited.
fn merge_dates_with(b: &[u8], tokens: &mut Vec<Token>, skip: bool) {
    let (part, anchor) = (date_part, date_anchor);
    let gap = |t: &Token| date_gap(b, t);
    let (mut i, mut out) = (0, 0);
    // The next `DateTime` at or after `i` (`None` before the first search).
    let mut next: Option<usize> = None;
    while i < tokens.len() {
        if skip && next.is_none_or(|a| a < i) {
            let Some(a) = tokens[i..].iter().position(anchor).map(|p| i + p) else {
                // Nothing merged yet: the tokens are where they belong.
                if out == i {
                    return;
                }
                tokens.copy_within(i.., out);
                out += tokens.len() - i;
                break;
            };
            next = Some(a);
            let mut s = a;
            while s >= i + 2 && gap(&tokens[s - 1]) && part(&tokens[s - 2]) {
                s -= 2;
            }
            if out != i {
                tokens.copy_within(i..s, out);
            }
            out += s - i;
            i = s;
        }
        let mut j = i;
        let mut parts = 0;
        let mut anchored = false;
        if part(&tokens[i]) {
            // Extend over `part (gap part)*`.
            j = i + 1;
            parts = 1;
            anchored = anchor(&tokens[i]);
            while j + 1 < tokens.len() && gap(&tokens[j]) && part(&tokens[j + 1]) {
                anchored |= anchor(&tokens[j + 1]);
                parts += 1;
                j += 2;
            }
        }
        // A comma fraction right after a time (`18:01:47,978`) belongs to it.
        if parts >= 1
            && anchored
            && j + 1 < tokens.len()
            && tokens[j].class == Class::Punct
            && b[tokens[j].start as usize] == b','
            && tokens[j].start == tokens[j - 1].end
            && tokens[j + 1].class == Class::Int
            && tokens[j + 1].start == tokens[j].end
            && b[tokens[j - 1].start as usize..tokens[j - 1].end as usize].contains(&b':')
        {
            parts += 1;
            j += 2;
        }
        if parts >= 2 && anchored {
            tokens[out] = tok(
                tokens[i].start as usize,
                tokens[j - 1].end as usize,
                Class::DateTime,
            );
            i = j;
        } else {
            tokens[out] = tokens[i];
            i += 1;
        }
        out += 1;
    }
    tokens.truncate(out);
}

fn tok(start: usize, end: usize, class: Class) -> Token {
    Token {
        start: start as u32,
        end: end as u32,
        class,
    }
}

/// A mined class, unless the text holds characters above U+FFFF (compat templates are BMP-only).
fn mined(line: &str, start: usize, end: usize, class: Class) -> Class {
    if line.as_bytes()[start..end].iter().any(|&b| b >= 0xF0) {
        Class::Opaque
    } else {
        class
    }
}

/// The end of `(…)` when the inside has no whitespace, brackets or quotes (at most 256 bytes).
fn group_end(b: &[u8], start: usize) -> Option<usize> {
    let limit = (start + 256).min(b.len());
    let mut j = start + 1;
    while j < limit {
        match b[j] {
            b')' => return Some(j + 1),
            c if BYTE_CLASS[c as usize] != 0 || c == b'(' => return None,
            _ => j += 1,
        }
    }
    None
}

fn quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let q = b[start];
    let mut j = start + 1;
    let limit = (start + MAX_QUOTED).min(b.len());
    while j < limit {
        match b[j] {
            b'\\' => j += 2,
            b'\n' | b'\r' => return None,
            c if c == q => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

fn kv_end(b: &[u8], start: usize) -> usize {
    let mut j = start;
    while j < b.len()
        && BYTE_CLASS[b[j] as usize] != WS
        && !matches!(b[j], b',' | b';' | b'&' | b')' | b']' | b'}' | b'>')
    {
        j += 1;
    }
    j
}

fn is_key(k: &[u8]) -> bool {
    matches!(k.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && k.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Classifies the chunk `line[start..end]`, whose byte categories are `seen`, pushing one or more
/// tokens. (Inlined: the memo calls it on the hot path for every chunk it does not hold.)
#[inline(always)]
fn chunk(line: &str, start: usize, end: usize, seen: u16, out: &mut Vec<Token>) {
    push_cut(line, start, end, cut(line, start, end, seen), out);
}

/// How a chunk is cut into tokens: decided from its bytes alone (so [`memo`] may remember it), pushed
/// by [`push_cut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// One token of this class.
    Whole(Class),
    /// A token of this class over the first `.1` bytes, then each trailing byte as punctuation.
    Trimmed(Class, u32),
    /// Alphanumeric runs and single punctuation bytes ([`split`]).
    Split,
}

/// Decides how the chunk `line[start..end]`, whose byte categories are `seen`, is cut.
fn cut(line: &str, start: usize, end: usize, seen: u16) -> Cut {
    let b = line.as_bytes();
    // Without a non-ASCII byte (the commonest case, known from `seen`), no character is above U+FFFF.
    let ascii = seen & (1 << NON_ASCII) == 0;
    if let Some(class) = classify_seen(&b[start..end], seen) {
        return Cut::Whole(if ascii {
            class
        } else {
            fix_role(line, start, end, class)
        });
    }
    // Trailing sentence punctuation (`from 10.0.0.5.`, `src:`) stays outside a typed token.
    let mut trimmed = end;
    while trimmed > start + 1 && matches!(b[trimmed - 1], b'.' | b':' | b'!' | b'?') {
        trimmed -= 1;
    }
    if trimmed < end {
        let w = &b[start..trimmed];
        if let Some(class) = classify_seen(w, categories(w)) {
            let class = fix_role(line, start, trimmed, class);
            return Cut::Trimmed(class, (trimmed - start) as u32);
        }
    }
    // A chunk with digits that is no known kind (`Package_for_KB31~31bf~amd64~~6.1.1.0`) is one value; a
    // digit-free one (`a:b`, `foo$bar`) is split so that its words can stay static.
    if seen & (1 << DIGIT) != 0 && (ascii || !b[start..end].iter().any(|&c| c >= 0xF0)) {
        return Cut::Whole(Class::Id);
    }
    Cut::Split
}

/// Pushes the tokens of the chunk `line[start..end]` as `cut` says.
#[inline(always)]
fn push_cut(line: &str, start: usize, end: usize, cut: Cut, out: &mut Vec<Token>) {
    match cut {
        Cut::Whole(class) => out.push(tok(start, end, class)),
        Cut::Trimmed(class, len) => {
            let trimmed = start + len as usize;
            out.push(tok(start, trimmed, class));
            for k in trimmed..end {
                out.push(tok(k, k + 1, Class::Punct));
            }
        }
        Cut::Split => split(line, start, end, out),
    }
}

fn fix_role(line: &str, start: usize, end: usize, class: Class) -> Class {
    match class.role() {
        Role::Mined => mined(line, start, end, class),
        _ => class,
    }
}

/// Splits an unclassifiable chunk into alphanumeric runs and single punctuation bytes.
fn split(line: &str, start: usize, end: usize, out: &mut Vec<Token>) {
    let b = line.as_bytes();
    let mut i = start;
    while i < end {
        if is_word_byte(b[i]) {
            let mut j = i + 1;
            while j < end && is_word_byte(b[j]) {
                j += 1;
            }
            let class = classify_word(&b[i..j]);
            out.push(tok(i, j, fix_role(line, i, j, class)));
            i = j;
        } else {
            out.push(tok(i, i + 1, Class::Punct));
            i += 1;
        }
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// An alphanumeric run: number, hex, id or word.
fn classify_word(w: &[u8]) -> Class {
    let digits = w.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == w.len() {
        Class::Int
    } else if digits == 0 {
        Class::Word
    } else if is_hex_id(w) {
        Class::Hex
    } else {
        Class::Id
    }
}

fn is_hex_id(w: &[u8]) -> bool {
    w.len() >= 8 && w.iter().all(u8::is_ascii_hexdigit)
}

/// Byte categories seen by [`classify_seen`]: 0 digit, 1 letter or `_`, 2 `.`, 3 `:`, 4 `-`, 5 `/` or `\\`,
/// 6 `@`, 7 non-ASCII, 8 anything else; [`CHUNK_END`] for the bytes that end a chunk (whitespace,
/// delimiters, quotes: `BYTE_CLASS` not 0), so that the tokenizer finds a chunk's end and its categories
/// with one lookup per byte.
static CHUNK_CLASS: [u8; 256] = {
    let mut t = [8u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if BYTE_CLASS[i] != 0 {
            CHUNK_END
        } else {
            match i as u8 {
                b'0'..=b'9' => 0,
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => LETTER,
                b'.' => 2,
                b':' => 3,
                b'-' => 4,
                b'/' | b'\\' => 5,
                b'@' => 6,
                0x80..=0xff => 7,
                _ => 8,
            }
        };
        i += 1;
    }
    t
};

/// How many of the eight bytes of `word` (little-endian: its first byte is the lowest), from the first,
/// are ASCII letters: SWAR, a few operations for eight bytes instead of a table lookup each.
fn leading_letters(word: u64) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // `| 0x20` lower-cases letters and maps no other byte onto a letter; the high bit is kept, so
    // non-ASCII bytes are refused below.
    let lower = word | 0x2020_2020_2020_2020;
    let low7 = lower & !HIGH;
    // Per byte, no carries (at most 0x7f + 0x1f): the high bit says `>= b'a'`, then `> b'z'`.
    let at_least_a = low7.wrapping_add(0x1f1f_1f1f_1f1f_1f1f);
    let past_z = low7.wrapping_add(0x0505_0505_0505_0505);
    let letters = at_least_a & !past_z & !lower & HIGH;
    ((!letters & HIGH).trailing_zeros() / 8) as usize
}

/// [`CHUNK_CLASS`]'s category of digits.
const DIGIT: u8 = 0;
/// [`CHUNK_CLASS`]'s category of bytes above 0x7f.
const NON_ASCII: u8 = 7;
/// [`CHUNK_CLASS`]'s category of letters and `_`.
const LETTER: u8 = 1;
/// [`CHUNK_CLASS`]'s mark of a byte that ends a chunk.
const CHUNK_END: u8 = 15;
/// The categories whose counts [`classify_seen`] needs: `.`, `:`, `-`, `@`.
const COUNTED: u16 = 1 << 2 | 1 << 3 | 1 << 4 | 1 << 6;

/// The categories of a number's bytes (digits, `.`, `-`): no other can be in one ([`is_number`]).
const NUMBER_BYTES: u16 = 1 << DIGIT | 1 << 2 | 1 << 4;

/// What [`is_ipv6`] needs of a chunk with `colons` colons: fewer than six groups need a `::`.
fn may_be_ipv6(w: &[u8], colons: usize) -> bool {
    colons >= 5 || has_double_colon(w)
}

/// What [`is_datetime`] needs: a time (two colons) or two date separators.
fn may_be_datetime(colons: usize, dashes: usize, slashes: bool) -> bool {
    colons >= 2 || dashes >= 2 || slashes
}

/// What [`is_number`] needs: digits, at most one `.` and one `-`, nothing else.
fn may_be_number(seen: u16, dots: usize, dashes: usize) -> bool {
    seen & !NUMBER_BYTES == 0 && dots <= 1 && dashes <= 1
}

/// What [`unit_number`] needs: a unit's letters, and otherwise a number's bytes.
fn may_be_unit_number(seen: u16, dashes: usize) -> bool {
    seen & (1 << LETTER) != 0 && seen & !(NUMBER_BYTES | 1 << LETTER) == 0 && dashes <= 1
}

/// The categories of a chunk's bytes, a bit each (what the tokenizer gathers as it finds the chunk); a
/// byte that would end a chunk counts as "anything else".
fn categories(w: &[u8]) -> u16 {
    w.iter().fold(0, |seen, &c| {
        let k = CHUNK_CLASS[c as usize];
        seen | 1 << if k == CHUNK_END { 8 } else { k }
    })
}

/// Per byte, what [`classify_seen`] adds to its packed separator counts: one in the 32-bit lane of `.` (lane 0),
/// `:` (1), `-` (2) or `@` (3), nothing for other bytes. Adding a table entry per byte counts all four
/// without a branch.
static CHUNK_COUNT: [u128; 256] = {
    let mut t = [0u128; 256];
    t[b'.' as usize] = 1;
    t[b':' as usize] = 1 << 32;
    t[b'-' as usize] = 1 << 64;
    t[b'@' as usize] = 1 << 96;
    t
};

/// Classifies a whole chunk from its bytes alone (the tests' reference for what the tokenizer does).
#[cfg(test)]
pub(crate) fn classify(w: &[u8]) -> Option<Class> {
    classify_seen(w, categories(w))
}

/// Classifies a whole chunk whose byte categories are `seen` (see [`categories`]), or `None` if it must
/// be split.
fn classify_seen(w: &[u8], seen: u16) -> Option<Class> {
    let first = *w.first()?;
    // Counts of the rare separators, each in its own 32-bit lane (a chunk is a span of one line, whose
    // offsets are `u32`, so no lane can overflow): branch-free per byte, and only when there are some.
    let mut counts = 0u128;
    if seen & COUNTED != 0 {
        for &c in w {
            counts = counts.wrapping_add(CHUNK_COUNT[c as usize]);
        }
    }
    let lane = |k: u32| ((counts >> (32 * k)) as u32) as usize;
    let (dots, colons, dashes, at) = (lane(0), lane(1), lane(2), lane(3));
    let has = |k: u8| seen & (1 << k) != 0;
    let (digits, alpha, slashes, high, other) = (has(0), has(1), has(5), has(7), has(8));
    if slashes && is_url(w) {
        return Some(Class::Url);
    }
    if at == 1 && is_email(w) {
        return Some(Class::Email);
    }
    if !digits {
        if slashes {
            return is_path(w).then_some(Class::Path);
        }
        if other || colons > 0 || at > 0 {
            return None;
        }
        if dots + dashes > 0 {
            let name_ok = first != b'.' && first != b'-' && !matches!(w.last(), Some(b'.' | b'-'));
            return name_ok.then_some(Class::Name);
        }
        return Some(if is_calendar_word(w) {
            Class::DateTime
        } else {
            Class::Word
        });
    }
    // Chunks with digits.
    if seen == 1 {
        // Digits only: none of the kinds below but a number can be made of them alone.
        return Some(Class::Int);
    }
    if w.len() == 36 && dashes == 4 && is_uuid(w) {
        return Some(Class::Uuid);
    }
    if colons == 5 && w.len() == 17 && is_mac(w) {
        return Some(Class::Mac);
    }
    if dots == 3 && is_ipv4_port(w) {
        return Some(Class::IPv4);
    }
    // Each test below runs only where the counts allow it to pass (an address has `::` or five colons; a
    // date a time or two date separators; a number only digits, one `-` and one `.`), so that the
    // commonest chunks (times, ids) skip the byte loops of the others.
    if colons >= 2 && may_be_ipv6(w, colons) && is_ipv6(w) {
        return Some(Class::IPv6);
    }
    if may_be_datetime(colons, dashes, slashes) && is_datetime(w, colons, dashes, dots, slashes) {
        return Some(Class::DateTime);
    }
    if may_be_number(seen, dots, dashes) && is_number(w) {
        return Some(if dots == 1 { Class::Float } else { Class::Int });
    }
    if w.len() > 2
        && w[0] == b'0'
        && (w[1] == b'x' || w[1] == b'X')
        && w[2..].iter().all(u8::is_ascii_hexdigit)
    {
        return Some(Class::Hex);
    }
    if let Some(class) = may_be_unit_number(seen, dashes)
        .then(|| unit_number(w))
        .flatten()
    {
        return Some(class);
    }
    if slashes {
        return is_path(w).then_some(Class::Path);
    }
    if colons == 1 && is_host_port(w) {
        return Some(Class::HostPort);
    }
    if !high && !other && colons == 0 && at == 0 {
        // Only letters and digits: a hex id?
        if seen & !0b11 == 0 && is_hex_id(w) {
            return Some(Class::Hex);
        }
        if alpha {
            return Some(Class::Id);
        }
    }
    None
}

/// Day and month names (`Mon`, `Sunday`, `Jun`, `June`): parts of dates, so dynamic. Capitalised, any
/// case after the first letter.
fn is_calendar_word(w: &[u8]) -> bool {
    /// Each name in full; its first three letters are the abbreviation, and tell the names apart.
    const FULL: [&[u8]; 19] = [
        b"monday",
        b"tuesday",
        b"wednesday",
        b"thursday",
        b"friday",
        b"saturday",
        b"sunday",
        b"january",
        b"february",
        b"march",
        b"april",
        b"may",
        b"june",
        b"july",
        b"august",
        b"september",
        b"october",
        b"november",
        b"december",
    ];
    /// The abbreviations, lower case, as numbers (one comparison each).
    const ABBREVIATIONS: [u32; 19] = {
        let mut t = [0u32; 19];
        let mut i = 0;
        while i < 19 {
            t[i] = u32::from_le_bytes([FULL[i][0], FULL[i][1], FULL[i][2], 0]);
            i += 1;
        }
        t
    };
    if !(3..=9).contains(&w.len()) || !w[0].is_ascii_uppercase() {
        return false;
    }
    // `| 0x20` lower-cases ASCII letters and maps no other byte onto a letter.
    let abbreviation = u32::from_le_bytes([w[0] | 0x20, w[1] | 0x20, w[2] | 0x20, 0]);
    ABBREVIATIONS
        .iter()
        .position(|&a| a == abbreviation)
        .is_some_and(|k| w.len() == 3 || w.eq_ignore_ascii_case(FULL[k]))
}

fn is_number(w: &[u8]) -> bool {
    let body = w.strip_prefix(b"-").unwrap_or(w);
    let mut parts = body.splitn(2, |&c| c == b'.');
    let int = parts.next().unwrap_or_default();
    let frac = parts.next();
    !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
}

fn digits_in(w: &[u8], lo: usize, hi: usize) -> bool {
    (lo..=hi).contains(&w.len()) && w.iter().all(u8::is_ascii_digit)
}

fn is_ipv4(w: &[u8]) -> bool {
    let mut n = 0;
    for part in w.split(|&c| c == b'.') {
        n += 1;
        if !digits_in(part, 1, 3)
            || part.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')) > 255
        {
            return false;
        }
    }
    n == 4
}

fn is_ipv4_port(w: &[u8]) -> bool {
    match w.iter().position(|&c| c == b':') {
        Some(p) => is_ipv4(&w[..p]) && digits_in(&w[p + 1..], 1, 5),
        None => is_ipv4(w),
    }
}

/// True when `w` holds `::` (an IPv6 address with fewer than six groups must).
fn has_double_colon(w: &[u8]) -> bool {
    w.windows(2).any(|p| p == b"::")
}

fn is_ipv6(w: &[u8]) -> bool {
    let w = w.strip_prefix(b"[").unwrap_or(w);
    let core = match w.iter().position(|&c| c == b'%' || c == b']') {
        Some(p) => &w[..p],
        None => w,
    };
    let groups = core.split(|&c| c == b':').count();
    // `hh:mm:ss` has three groups too: an address needs `::` or at least six groups.
    let compressed = has_double_colon(core);
    (3..=8).contains(&groups)
        && (compressed || groups >= 6)
        && core
            .iter()
            .all(|c| c.is_ascii_hexdigit() || *c == b':' || *c == b'.')
        && core
            .split(|&c| c == b':')
            .all(|g| g.len() <= 4 || is_ipv4(g))
}

fn is_mac(w: &[u8]) -> bool {
    w.chunks(3).all(|g| {
        g[0].is_ascii_hexdigit() && g[1].is_ascii_hexdigit() && (g.len() == 2 || g[2] == b':')
    })
}

fn is_uuid(w: &[u8]) -> bool {
    w.iter().enumerate().all(|(i, c)| {
        if matches!(i, 8 | 13 | 18 | 23) {
            *c == b'-'
        } else {
            c.is_ascii_hexdigit()
        }
    })
}

fn is_url(w: &[u8]) -> bool {
    let Some(p) = w.windows(3).position(|x| x == b"://") else {
        return false;
    };
    p > 0
        && w[..p]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn is_email(w: &[u8]) -> bool {
    let Some(p) = w.iter().position(|&c| c == b'@') else {
        return false;
    };
    let (local, domain) = (&w[..p], &w[p + 1..]);
    !local.is_empty()
        && domain.contains(&b'.')
        && !domain.ends_with(b".")
        && domain
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
}

fn is_path(w: &[u8]) -> bool {
    let abs = w.starts_with(b"/")
        || w.starts_with(b"./")
        || w.starts_with(b"~/")
        || w.starts_with(b"\\\\");
    let windows = w.len() > 2 && w[0].is_ascii_alphabetic() && w[1] == b':' && w[2] == b'\\';
    let segments = w.iter().filter(|&&c| c == b'/').count();
    (abs || windows || segments >= 2) && w.len() > 1
}

fn is_host_port(w: &[u8]) -> bool {
    let Some(p) = w.iter().position(|&c| c == b':') else {
        return false;
    };
    let host = &w[..p];
    digits_in(&w[p + 1..], 1, 5)
        && !host.is_empty()
        && host.iter().any(u8::is_ascii_alphabetic)
        && host
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// Dates, times and date-times in common layouts: `2024-01-15`, `2024/01/15`, `10:30:00.123`,
/// `2016-09-28T04:30:30Z`, `17/06/09`, `10/Oct/2000:13:55:36`, `2005-06-03-15.42.50.675872`.
/// `colons`, `dashes` and `dots` are the chunk's counts of `:`, `-` and `.`; `slashes` whether it holds
/// a `/` or `\\`.
fn is_datetime(w: &[u8], colons: usize, dashes: usize, dots: usize, slashes: bool) -> bool {
    if !w[0].is_ascii_digit() || w.len() < 5 {
        return false;
    }
    let mut groups = 0;
    let mut seps = 0;
    let mut month_name = false;
    let mut i = 0;
    while i < w.len() {
        let c = w[i];
        if c.is_ascii_digit() {
            let s = i;
            while i < w.len() && w[i].is_ascii_digit() {
                i += 1;
            }
            if i - s > 4 && groups > 0 && i - s > 9 {
                return false;
            }
            groups += 1;
            continue;
        }
        match c {
            b'-' | b'/' | b':' | b'.' | b',' | b'+' => seps += 1,
            b'T' | b'Z' => {}
            b'A'..=b'Z' | b'a'..=b'z' if !month_name => {
                // A month name between slashes (CLF `10/Oct/2000`).
                let s = i;
                while i < w.len() && w[i].is_ascii_alphabetic() {
                    i += 1;
                }
                if i - s != 3 {
                    return false;
                }
                month_name = true;
                continue;
            }
            _ => return false,
        }
        i += 1;
    }
    let has_time = colons >= 2;
    let date_seps =
        dashes >= 2 || (slashes && dashes + w.iter().filter(|&&c| c == b'/').count() >= 2);
    // A dotted quad without a time is an address, not a date.
    let dotted_quad = dots == 3;
    groups >= 3 && seps >= 2 && (has_time || date_seps) && (has_time || !dotted_quad)
}

/// A number with a duration or size unit: `30s`, `2h45m10s`, `15ms`, `512MB`, `4KiB`.
fn unit_number(w: &[u8]) -> Option<Class> {
    let body = w.strip_prefix(b"-").unwrap_or(w);
    let mut i = 0;
    let mut duration_parts = 0;
    let mut size = false;
    while i < body.len() {
        let s = i;
        while i < body.len() && (body[i].is_ascii_digit() || body[i] == b'.') {
            i += 1;
        }
        if i == s {
            return None;
        }
        let u = i;
        while i < body.len() && body[i].is_ascii_alphabetic() {
            i += 1;
        }
        match &body[u..i] {
            b"ns" | b"us" | b"ms" | b"s" | b"m" | b"h" | b"d" => duration_parts += 1,
            b"B" | b"K" | b"KB" | b"KiB" | b"M" | b"MB" | b"MiB" | b"G" | b"GB" | b"GiB" | b"T"
            | b"TB" | b"TiB" | b"k" | b"kB"
                if i == body.len() && duration_parts == 0 =>
            {
                size = true
            }
            _ => return None,
        }
    }
    if size {
        Some(Class::Size)
    } else if duration_parts > 0 {
        Some(Class::Duration)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A chunk of letters takes the tokenizer's shortcut; its class is what `classify` says.
        #[test]
        fn letter_chunks_are_classified_as_classify_would(w in "[A-Za-z_]{1,12}") {
            let mut out = Vec::new();
            tokenize(&w, &mut out);
            proptest::prop_assert_eq!(out.len(), 1);
            proptest::prop_assert_eq!(Some(out[0].class), classify(w.as_bytes()));
        }
    }

    proptest::proptest! {
        /// A `Tokenizer` remembers chunks, never tokens of its own: over lines that repeat chunks, and
        /// chunks that share their first words (`2005-06-14` and `2005-06-14-11.30.39`) or differ in a
        /// trailing byte, each line's tokens are `tokenize`'s.
        #[test]
        fn a_tokenizer_cuts_what_tokenize_cuts(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    "(2005-06-14|2005-06-14\\.|2005-06-14-11\\.30\\.39\\.961375|10\\.0\\.0\\.1|10\\.0\\.0\\.1:|\
                     14:41:57|a:b|x1|x1\\.|/a/b1|blk_-74139105072|blk_-74139105072609|é1:|\u{1F600}x1|\
                     [0-9a-f:.x_/-]{1,40}| |, |=)",
                    0..12,
                ),
                1..24,
            ),
        ) {
            let mut tokenizer = Tokenizer::new();
            let (mut memo, mut plain) = (Vec::new(), Vec::new());
            for words in lines {
                let line = words.concat();
                tokenizer.tokenize(&line, &mut memo);
                tokenize(&line, &mut plain);
                proptest::prop_assert_eq!(&memo, &plain, "{:?}", line);
            }
        }

        /// The tokenizer gathers a chunk's byte categories as it finds the chunk's end; a chunk that is
        /// one known kind gets the class `classify` gives it from the bytes alone.
        #[test]
        fn chunks_are_classified_as_classify_would(w in "[0-9a-fA-Z_.:/@x-]{1,24}") {
            if let Some(class) = classify(w.as_bytes()) {
                let mut out = Vec::new();
                tokenize(&w, &mut out);
                proptest::prop_assert_eq!(out.len(), 1);
                proptest::prop_assert_eq!(out[0].class, class);
            }
        }

        /// `classify` runs a typed test only where the chunk's counts let it pass: each gate is a
        /// condition the test needs, so gating it changes no class. Chunks shaped like addresses,
        /// dates and times, numbers and units, and any mix of the bytes the gates count.
        #[test]
        fn each_gate_is_a_condition_its_test_needs(
            w in proptest::prop_oneof![
                "[0-9a-f]{1,4}(:{1,2}[0-9a-f]{0,4}){1,8}",
                "[0-9]{1,4}([-/:.,T+][0-9]{1,4}){1,6}Z?",
                "[0-9]{1,2}/[A-Z][a-z]{2}/[0-9]{4}(:[0-9]{2}){0,3}",
                "-?[0-9]{1,6}([.][0-9]{1,3})?",
                "-?[0-9]{1,3}([.][0-9])?(ns|ms|s|m|h|d|KB|MiB|GiB|k)([0-9]{1,2}(s|m))?",
                "[0-9a-fA-Z_.:/@x-]{1,24}",
            ]
        ) {
            let w = w.as_bytes();
            let seen = categories(w);
            let count = |c: u8| w.iter().filter(|&&x| x == c).count();
            let (colons, dashes, dots) = (count(b':'), count(b'-'), count(b'.'));
            let slashes = seen & (1 << 5) != 0;
            if is_ipv6(w) {
                proptest::prop_assert!(may_be_ipv6(w, colons));
            }
            if is_datetime(w, colons, dashes, dots, slashes) {
                proptest::prop_assert!(may_be_datetime(colons, dashes, slashes));
            }
            if is_number(w) {
                proptest::prop_assert!(may_be_number(seen, dots, dashes));
            }
            if unit_number(w).is_some() {
                proptest::prop_assert!(may_be_unit_number(seen, dashes));
            }
        }

        /// Skipping the tokens that cannot start a date merges the same dates as visiting every token.
        #[test]
        fn dates_merge_as_from_the_first_token(
            words in proptest::collection::vec(
                "(Mon|Jun|June|Dec|9|04|2005|06:06:20|2005-12-04|x|:|,978|  | )", 0..14),
        ) {
            let line = words.concat();
            let mut short = Vec::new();
            scan(&line, 0, true, &mut Memo::disabled(), &mut short);
            let mut full = short.clone();
            merge_dates_with(line.as_bytes(), &mut short, true);
            merge_dates_with(line.as_bytes(), &mut full, false);
            proptest::prop_assert_eq!(short, full);
        }
    }

    #[test]
    fn leading_letters_counts_the_ascii_letters_before_anything_else() {
        for (bytes, n) in [
            (*b"abcdefgh", 8),
            (*b"ABCDEFGH", 8),
            (*b"azAZazAZ", 8),
            (*b"abc def ", 3),
            (*b"1abcdefg", 0),
            (*b"ab_cdefg", 2),
            (*b"abc@defg", 3),
            (*b"abc[defg", 3),
            (*b"abc`defg", 3),
            (*b"abc{defg", 3),
            (*b"abcdefg\xe9", 7),
            (*b"abcdefg\xc1", 7),
            (*b"abcdefg\xfa", 7),
        ] {
            assert_eq!(leading_letters(u64::from_le_bytes(bytes)), n, "{bytes:?}");
        }
        // Every byte value in every position: a letter exactly when ASCII alphabetic.
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut bytes = *b"abcdefgh";
                bytes[pos] = c;
                let want = if c.is_ascii_alphabetic() { 8 } else { pos };
                assert_eq!(
                    leading_letters(u64::from_le_bytes(bytes)),
                    want,
                    "{c:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn day_and_month_names_are_calendar_words_in_any_case_after_a_capital() {
        for w in [
            "Mon",
            "MON",
            "Monday",
            "MONDAY",
            "Tue",
            "Wed",
            "Wednesday",
            "Thu",
            "Fri",
            "Sat",
            "Saturday",
            "Sun",
            "Jan",
            "January",
            "Feb",
            "Mar",
            "March",
            "Apr",
            "May",
            "Jun",
            "June",
            "Jul",
            "July",
            "Aug",
            "Sep",
            "September",
            "Oct",
            "Nov",
            "Dec",
            "DeCeMbEr",
        ] {
            assert!(is_calendar_word(w.as_bytes()), "{w}");
        }
        for w in [
            "mon",
            "Mo",
            "Mond",
            "Mayday",
            "Junes",
            "Sept",
            "Jux",
            "Dec_",
            "M@n",
            "Septembers",
        ] {
            assert!(!is_calendar_word(w.as_bytes()), "{w}");
        }
    }

    #[test]
    fn calendar_words_are_dates_by_the_shortcut_too() {
        for w in ["Mon", "June", "September", "Word", "lower_case", "_"] {
            let mut out = Vec::new();
            tokenize(w, &mut out);
            assert_eq!(Some(out[0].class), classify(w.as_bytes()), "{w}");
        }
    }

    #[test]
    fn quoted_request_lines_are_cut_into_method_target_and_protocol() {
        let line = r#"1.2.3.4 "GET /v2/4f1e9c2ab7d34e5f9a0b1c2d3e4f5a6b/servers/detail?limit=5&x=a HTTP/1.1" 200"#;
        let c = classes(line);
        let joined: String = c.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(joined, line);
        let want = [
            ("GET", Class::Method),
            ("v2", Class::Id),
            ("4f1e9c2ab7d34e5f9a0b1c2d3e4f5a6b", Class::Hex),
            ("servers", Class::Segment),
            ("detail", Class::Segment),
            ("limit=", Class::Key),
            ("5", Class::KvValue),
            ("x=", Class::Key),
            ("a", Class::KvValue),
            ("HTTP/1.1", Class::Name),
        ];
        for (text, class) in want {
            assert!(c.contains(&(text.into(), class)), "{text}: {c:?}");
        }
        assert_eq!(c.iter().filter(|(t, _)| t == "\"").count(), 2, "{c:?}");
        // Anything else quoted stays one token: a user agent, a lower-case word, no protocol, a target
        // that is not a path, single quotes.
        for quoted in [
            r#""Mozilla/5.0 (X11; Linux x86_64)""#,
            r#""get /a HTTP/1.1""#,
            r#""GET /a""#,
            r#""GET /a HTTP/x""#,
            r#""GET /a HTTP/1.1 extra""#,
            "'GET /a HTTP/1.1'",
        ] {
            let c = classes(&format!("x {quoted} y"));
            assert!(
                c.contains(&(quoted.into(), Class::Quoted)),
                "{quoted}: {c:?}"
            );
        }
        // Odd targets still tile the line.
        for line in [
            r#""GET / HTTP/1.0""#,
            r#""GET //a//b/ HTTP/2""#,
            r#""POST /a?b HTTP/1.1""#,
            r#""GET http://example.com/a?b=1 HTTP/1.1""#,
            r#""CONNECT example.com:443 HTTP/1.1""#,
            r#""OPTIONS * HTTP/1.1""#,
            r#""GET /a?&=&b=&&c=d=e&9=1 HTTP/1.1""#,
            r#""GET /%7Euser/caf\u00e9/\"x\" HTTP/1.1""#,
            "\"GET /\u{1F600}/x HTTP/1.1\"",
        ] {
            let c = classes(line);
            let joined: String = c.iter().map(|(t, _)| t.as_str()).collect();
            assert_eq!(joined, line);
            assert!(c.iter().any(|(_, k)| *k == Class::Method), "{line}: {c:?}");
        }
    }

    fn classes(line: &str) -> Vec<(String, Class)> {
        let mut out = Vec::new();
        tokenize(line, &mut out);
        out.iter()
            .map(|t| (t.text(line).to_string(), t.class))
            .collect()
    }

    fn typed(chunk: &str) -> Option<Class> {
        classify(chunk.as_bytes())
    }

    #[test]
    fn tokens_tile_the_line() {
        for line in [
            "",
            " ",
            "a=",
            "x=\"q v\" y=1,z",
            "Jun  9 06:06:20 host sshd[123]: ok",
            "\u{1F600} \x00\x7f é",
        ] {
            let mut out = Vec::new();
            tokenize(line, &mut out);
            let mut at = 0;
            for t in &out {
                assert_eq!(t.start, at, "{line:?}");
                at = t.end;
            }
            assert_eq!(at as usize, line.len(), "{line:?}");
        }
    }

    #[test]
    fn typed_classes() {
        assert_eq!(typed("10.0.0.5"), Some(Class::IPv4));
        assert_eq!(typed("10.0.0.5:8080"), Some(Class::IPv4));
        assert_eq!(typed("10.0.0.256"), None, "octet 256 is not an IPv4");
        assert_eq!(typed("fe80::1%eth0"), Some(Class::IPv6));
        assert_eq!(typed("::1"), Some(Class::IPv6));
        assert_eq!(typed("00:1a:2b:3c:4d:5e"), Some(Class::Mac));
        assert_eq!(
            typed("123e4567-e89b-12d3-a456-426614174000"),
            Some(Class::Uuid)
        );
        assert_eq!(typed("2024-01-15"), Some(Class::DateTime));
        assert_eq!(typed("10:30:00.123"), Some(Class::DateTime));
        assert_eq!(typed("2016-09-28T04:30:30Z"), Some(Class::DateTime));
        assert_eq!(typed("10/Oct/2000:13:55:36"), Some(Class::DateTime));
        assert_eq!(typed("-42"), Some(Class::Int));
        assert_eq!(typed("99.99"), Some(Class::Float));
        assert_eq!(typed("0xdeadBEEF"), Some(Class::Hex));
        assert_eq!(typed("30s"), Some(Class::Duration));
        assert_eq!(typed("2h45m10s"), Some(Class::Duration));
        assert_eq!(typed("512MB"), Some(Class::Size));
        assert_eq!(typed("/var/log/syslog"), Some(Class::Path));
        assert_eq!(typed("https://example.com/a?b=c"), Some(Class::Url));
        assert_eq!(typed("root@example.com"), Some(Class::Email));
        assert_eq!(typed("proxy.cse.cuhk.edu.hk:5070"), Some(Class::HostPort));
        assert_eq!(typed("blk_-1608999687919862906"), Some(Class::Id));
        assert_eq!(typed("ssh2"), Some(Class::Id));
        assert_eq!(typed("dfs.DataNode$PacketResponder"), None);
        assert_eq!(typed("host.example.com"), Some(Class::Name));
        assert_eq!(typed("Receiving"), Some(Class::Word));
    }

    #[test]
    fn sentence_punctuation_and_keys() {
        let c = classes("from 10.0.0.5. user=bob x= done");
        assert!(c.contains(&("10.0.0.5".into(), Class::IPv4)));
        assert!(c.contains(&(".".into(), Class::Punct)));
        assert!(c.contains(&("user=".into(), Class::Key)));
        assert!(c.contains(&("bob".into(), Class::KvValue)));
        assert!(
            c.contains(&("".into(), Class::KvValue)),
            "an empty value is a token: {c:?}"
        );
        let c = classes("note=\"a b c\" ok");
        assert!(c.contains(&("\"a b c\"".into(), Class::KvValue)));
        let c = classes("say 'hello world' now");
        assert!(c.contains(&("'hello world'".into(), Class::Quoted)));
    }

    #[test]
    fn a_quoted_value_is_the_value_between_quote_marks() {
        let c = classes("creating device node '/udev/vcsa2' from \"10.0.0.1\" id '42'");
        for (text, class) in [
            ("/udev/vcsa2", Class::Path),
            ("10.0.0.1", Class::IPv4),
            ("42", Class::Int),
        ] {
            assert!(c.contains(&(text.into(), class)), "{text}: {c:?}");
        }
        assert_eq!(c.iter().filter(|(t, _)| t == "'").count(), 4, "{c:?}");
        // Words, text with spaces and empty quotes stay one token.
        for quoted in ["'hlt'", "\"a b 1\"", "''", "\"hello\""] {
            let c = classes(&format!("check {quoted} now"));
            assert!(
                c.contains(&(quoted.into(), Class::Quoted)),
                "{quoted}: {c:?}"
            );
        }
    }

    #[test]
    fn quoted_messages_are_cut_like_text() {
        // JSON, whatever the spacing, and logfmt: the message's words are tokens of their own.
        for line in [
            r#"{"level":"info","msg":"user 42 logged in","t":1}"#,
            r#"{"level": "info", "message" : "user 42 logged in"}"#,
            r#"ts=1 level=info msg="user 42 logged in" x=1"#,
        ] {
            let c = classes(line);
            assert!(c.contains(&("user".into(), Class::Word)), "{line}: {c:?}");
            assert!(c.contains(&("42".into(), Class::Int)), "{line}: {c:?}");
            assert!(c.contains(&("\"".into(), Class::Punct)), "{line}: {c:?}");
        }
        // Other keys' strings stay one token, and so does a message key that is a value, not a key.
        let c = classes(r#"{"user":"a b","k":"msg","v":"c d"}"#);
        assert!(c.contains(&("\"a b\"".into(), Class::Quoted)), "{c:?}");
        assert!(c.contains(&("\"c d\"".into(), Class::Quoted)), "{c:?}");
        // Escapes, quotes and messages inside the message: the tokens still tile the line.
        for line in [
            r#"{"msg":"say \"hi\" to \u00e9","n":1}"#,
            r#"{"msg":"{\"msg\":\"a b\"}"}"#,
            r#"msg="a msg="b msg="c"" x"#,
            r#"{"msg":""}"#,
            r#"msg="""#,
        ] {
            let c = classes(line);
            let joined: String = c.iter().map(|(t, _)| t.as_str()).collect();
            assert_eq!(joined, line);
        }
        let c = classes(r#"{"msg":"say \"hi\" to \u00e9","n":1}"#);
        assert!(c.contains(&("say".into(), Class::Word)), "{c:?}");
    }

    #[test]
    fn multi_word_dates_are_one_token() {
        let c = classes("[Sun Dec 04 04:47:44 2005] [notice] ok");
        assert!(
            c.contains(&("Sun Dec 04 04:47:44 2005".into(), Class::DateTime)),
            "{c:?}"
        );
        let c = classes("Jun  9 06:06:20 combo sshd");
        assert!(
            c.contains(&("Jun  9 06:06:20".into(), Class::DateTime)),
            "{c:?}"
        );
        let c = classes("2015-10-18 18:01:47,978 INFO x");
        assert!(
            c.contains(&("2015-10-18 18:01:47,978".into(), Class::DateTime)),
            "{c:?}"
        );
        let c = classes("took 15 ms");
        assert!(
            c.contains(&("15".into(), Class::Int)),
            "numbers alone stay numbers: {c:?}"
        );
    }

    #[test]
    fn non_bmp_text_is_never_mined() {
        let c = classes("smile \u{1F600}ok");
        assert!(
            c.iter()
                .any(|(t, k)| t.contains('\u{1F600}') && *k == Class::Opaque),
            "{c:?}"
        );
    }
}
