//! SQL injection: a tokenizer for SQL fragments (the libinjection approach) and an analysis of
//! the token stream in the three places user input lands in a query: as a bare value
//! (`id=1 OR 1=1`), inside a single-quoted string, inside a double-quoted string. In a quoted
//! context the input's text up to the first quote of that kind is the end of the application's
//! string; what follows is what the attacker adds to the query.

use std::sync::LazyLock;

use crate::Hits;
use crate::LetterFilter;
use crate::NextClose;
use crate::View;
use crate::literals::{Found, List};
use crate::rules::{self, Rule};
use crate::shape::Shape;

/// Tokens beyond this are not analysed; the limit keeps the analysis linear and attacks put
/// their structure in the first tokens.
const MAX_TOKENS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str {
        closed: bool,
    },
    Num,
    Word(Kw),
    Func(Kw),
    Var,
    Cmp,
    Logic,
    /// A binary operator.
    Op,
    /// An operator that is also unary: `-`, `+`, `~`, `!`.
    Sign,
    LParen,
    RParen,
    Comma,
    Semi,
    Comment,
    Dot,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Words with a meaning in SQL; `Ident` is any other name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    Ident,
    Union,
    Select,
    From,
    Where,
    Order,
    Group,
    By,
    Having,
    Limit,
    Offset,
    Into,
    Outfile,
    Procedure,
    All,
    Distinct,
    Top,
    Null,
    Bool,
    Not,
    And,
    Or,
    Like,
    Between,
    In,
    Is,
    Case,
    When,
    Then,
    Else,
    End,
    As,
    Join,
    /// Statements that can start a stacked query.
    Statement,
    Exec,
    Waitfor,
    Delay,
    /// Functions attackers use to stall, read files or force errors.
    DangerousFn,
    /// Functions boolean and error-based blind injection are built from.
    ProbeFn,
    /// Functions without arguments that tell who and where the query runs.
    InfoFn,
    /// `DIV` and `MOD`: arithmetic spelled as words.
    Arith,
    /// MySQL's `BINARY` cast, written before an operand.
    Binary,
    /// Functions that turn codes into text to dodge quote filters.
    CharFn,
    /// Catalogue tables and system procedures.
    Schema,
}

/// Words with a meaning in SQL, by what they are.
const KEYWORDS: &[(Kw, &[&str])] = &[
    (Kw::Union, &["union"]),
    (Kw::Select, &["select"]),
    (Kw::From, &["from"]),
    (Kw::Where, &["where"]),
    (Kw::Order, &["order"]),
    (Kw::Group, &["group"]),
    (Kw::By, &["by"]),
    (Kw::Having, &["having"]),
    (Kw::Limit, &["limit"]),
    (Kw::Offset, &["offset"]),
    (Kw::Into, &["into"]),
    (Kw::Outfile, &["outfile", "dumpfile"]),
    (Kw::Procedure, &["procedure"]),
    (Kw::All, &["all"]),
    (Kw::Distinct, &["distinct", "distinctrow"]),
    (Kw::Top, &["top"]),
    (Kw::Null, &["null"]),
    (Kw::Bool, &["true", "false"]),
    (Kw::Not, &["not"]),
    (Kw::And, &["and"]),
    // `eqv` and `imp`: the logical operators of Microsoft Access SQL.
    (Kw::Or, &["or", "xor", "eqv", "imp"]),
    (Kw::Like, &["like", "rlike", "regexp", "glob", "sounds"]),
    (Kw::Between, &["between"]),
    (Kw::In, &["in"]),
    (Kw::Is, &["is"]),
    (Kw::Case, &["case"]),
    (Kw::When, &["when"]),
    (Kw::Then, &["then"]),
    (Kw::Else, &["else"]),
    (Kw::End, &["end"]),
    (Kw::As, &["as"]),
    (Kw::Join, &["join"]),
    (
        Kw::Statement,
        &[
            "insert",
            "update",
            "delete",
            "drop",
            "create",
            "alter",
            "truncate",
            "declare",
            "shutdown",
            "grant",
            "revoke",
            "replace",
            "rename",
            "handler",
            "call",
            "load",
            "set",
            "begin",
            "commit",
            "rollback",
            "use",
            "show",
            "describe",
            "merge",
            "backup",
            "restore",
            "kill",
            "reconfigure",
        ],
    ),
    (Kw::Exec, &["exec", "execute"]),
    (Kw::Waitfor, &["waitfor"]),
    (Kw::Delay, &["delay", "time"]),
    (
        Kw::DangerousFn,
        &[
            "sleep",
            "benchmark",
            "pg_sleep",
            "pg_read_file",
            "pg_ls_dir",
            "load_file",
            "extractvalue",
            "updatexml",
            "xp_cmdshell",
            "xp_dirtree",
            "xp_regread",
            "sys_eval",
            "sys_exec",
            "randomblob",
            "name_const",
            "geometrycollection",
            "multipoint",
            "polygon",
            "linestring",
            "multilinestring",
            "multipolygon",
            "exp",
            "utl_http.request",
            "utl_inaddr.get_host_address",
            "dbms_pipe.receive_message",
            "dbms_lock.sleep",
            "ctxsys.drithsx.sn",
            "dbms_xmlgen.getxml",
            "lo_import",
            "lo_export",
            "openrowset",
            "opendatasource",
        ],
    ),
    (
        Kw::ProbeFn,
        &[
            "ascii",
            "substring",
            "substr",
            "mid",
            "length",
            "len",
            "ord",
            "if",
            "iif",
            "ifnull",
            "isnull",
            "nullif",
            "coalesce",
            "count",
            "cast",
            "convert",
            "hex",
            "unhex",
            "md5",
            "sha1",
            "left",
            "right",
            "instr",
            "locate",
            "position",
            "elt",
            "make_set",
            "floor",
            "rand",
            "row",
            "concat",
            "concat_ws",
            "group_concat",
            "string_agg",
            "listagg",
            "is_srvrolemember",
            "has_dbaccess",
            "bin",
            "char_length",
            "reverse",
            "strcmp",
            "lower",
            "upper",
            "trim",
            "now",
            "rownum",
            "unicode",
        ],
    ),
    (
        Kw::InfoFn,
        &[
            "version",
            "database",
            "user",
            "current_user",
            "system_user",
            "session_user",
            "schema",
            "db_name",
            "user_name",
            "charset",
            "collation",
            "coercibility",
            "connection_id",
            "last_insert_id",
        ],
    ),
    (Kw::Arith, &["div", "mod"]),
    (Kw::Binary, &["binary"]),
    (Kw::CharFn, &["char", "chr", "nchar"]),
    (
        Kw::Schema,
        &[
            "information_schema",
            "sysobjects",
            "syscolumns",
            "sysdatabases",
            "sysusers",
            "pg_catalog",
            "pg_shadow",
            "pg_user",
            "sqlite_master",
            "sqlite_schema",
            "all_tables",
            "user_tables",
            "all_users",
            "dba_users",
            "msysobjects",
            "msysaccessobjects",
            "mysql.user",
            "master..sysdatabases",
            "sys.tables",
            "sys.objects",
            "sys.databases",
            "sys.sql_logins",
            "dual",
        ],
    ),
];

/// A keyword and what it is, or an empty slot.
type KeywordSlot = Option<(&'static [u8], Kw)>;

/// The keywords in an open-addressed table hashed on a word's length and three of its
/// bytes: a lookup computes no full hash and, with the table this sparse, compares one entry.
/// The table never changes after it is built, so input cannot lengthen its probe runs.
struct Keywords {
    slots: Box<[KeywordSlot]>,
    filter: LetterFilter,
}

impl Keywords {
    const SLOTS: usize = 1024;

    fn slot(word: &[u8]) -> usize {
        let (first, second, last) = (
            word.first().copied().unwrap_or(0),
            word.get(1).copied().unwrap_or(0),
            word.last().copied().unwrap_or(0),
        );
        let mixed = (word.len() as u32)
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(u32::from(first) << 16 | u32::from(second) << 8 | u32::from(last))
            .wrapping_mul(0x85eb_ca6b);
        (mixed >> 22) as usize % Self::SLOTS
    }

    fn get(&self, word: &[u8]) -> Option<Kw> {
        let mut slot = Self::slot(word);
        loop {
            let (entry, kw) = self.slots[slot]?;
            if entry == word {
                return Some(kw);
            }
            slot = (slot + 1) % Self::SLOTS;
        }
    }
}

static KEYWORD: LazyLock<Keywords> = LazyLock::new(|| {
    let mut filter = LetterFilter::default();
    let mut slots = vec![None; Keywords::SLOTS].into_boxed_slice();
    for (kw, list) in KEYWORDS {
        for word in *list {
            filter.insert(word);
            let mut slot = Keywords::slot(word.as_bytes());
            while slots[slot].is_some() {
                slot = (slot + 1) % Keywords::SLOTS;
            }
            slots[slot] = Some((word.as_bytes(), *kw));
        }
    }
    Keywords { slots, filter }
});

/// The starts of names of catalogue tables and system procedures, beside those [`KEYWORDS`]
/// lists whole.
const CATALOGUE_PREFIXES: [&str; 7] = [
    "information_schema.",
    "xp_",
    "sp_",
    "master..",
    "master.dbo.",
    "pg_",
    "sys.",
];

/// What the literal search looks for for the bare gate: every word the gate lets through on
/// its own (the keywords but the weak ones, the catalogue prefixes, and the names that start
/// a statement after a `;`), each by its first four bytes. A view that holds none of these
/// starts, not even inside a longer word, has none of the words as a word. (The whole words
/// would add 930 states to the search's 2,470; their starts add 280.)
pub(crate) fn gate_words() -> Vec<String> {
    let start = |word: &str| word[..word.len().min(4)].to_owned();
    let mut words = Vec::new();
    for (kw, list) in KEYWORDS.iter().filter(|(kw, _)| !weak_keyword(*kw)) {
        for word in *list {
            if *kw == Kw::CharFn {
                // A rule reads `chr` only as a call, `(` after spaces or a comment (which the
                // gate admits by itself), or after a `+` the SQL check reads as a space:
                // `chrome` in every browser's User-Agent is neither.
                words.extend(CALL_STARTS.iter().map(|after| format!("{word}{after}")));
            } else {
                words.push(start(word));
            }
        }
    }
    words.extend(
        CATALOGUE_PREFIXES
            .iter()
            .chain(&STATEMENT_NAMES)
            .map(|w| start(w)),
    );
    words.sort_unstable();
    words.dedup();
    words
}

/// What may follow a name the lexer reads as a call: `(`, or a space before it.
const CALL_STARTS: [&str; 8] = ["(", " ", "\t", "\n", "\r", "\x0b", "\x0c", "+"];

/// Names (not keywords) that start a statement after `;`: `; do (1=1)`, `; while 1=1`.
const STATEMENT_NAMES: [&str; 2] = ["do", "while"];

/// Most words in a value are not SQL, and only names with `_` or `.` are checked against the
/// catalogue prefixes. Inlined, as the lexer's and the gate's words are its hot callers.
#[inline(always)]
fn keyword(word: &str) -> Kw {
    let keywords = &*KEYWORD;
    let bytes = word.as_bytes();
    if keywords.filter.may_hold(word)
        && let Some(kw) = keywords.get(bytes)
    {
        return kw;
    }
    let catalogue = matches!(
        word.as_bytes().first(),
        Some(b'i' | b'x' | b's' | b'm' | b'p')
    ) && bytes.iter().any(|&b| b == b'_' || b == b'.')
        && CATALOGUE_PREFIXES
            .iter()
            .any(|prefix| word.starts_with(prefix));
    if catalogue { Kw::Schema } else { Kw::Ident }
}

const WORD_BYTE: u8 = 1;
const SPACE_BYTE: u8 = 2;

/// Byte classes for the lexer: the bytes of an SQL name (letters, digits, `_`, `$`) and the
/// bytes SQL reads as whitespace.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' {
            table[b] = WORD_BYTE;
        }
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0) {
            table[b] = SPACE_BYTE;
        }
        b += 1;
    }
    table
};

fn is_word_byte(b: u8) -> bool {
    BYTE_CLASS[usize::from(b)] == WORD_BYTE
}

fn is_space(b: u8) -> bool {
    BYTE_CLASS[usize::from(b)] == SPACE_BYTE
}

/// Splits a (lower-cased) SQL fragment into tokens. `start` skips a prefix the caller has
/// already read as a string.
struct Lexer<'a> {
    text: &'a str,
    s: &'a [u8],
    pos: usize,
    /// Inside a MySQL `/*! ... */` comment, whose content MySQL executes.
    in_exec_comment: bool,
    /// Block comments nest, as PostgreSQL reads them, instead of ending at the first `*/`.
    nested_comments: bool,
    /// A block comment held another `/*`: the two readings differ.
    saw_nested_opener: bool,
    /// A nested reading ran to the end without closing: later comments are not read nested,
    /// so no byte is scanned for nesting twice.
    nesting_unclosed: bool,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str, start: usize, nested_comments: bool) -> Self {
        Lexer {
            text: s,
            s: s.as_bytes(),
            pos: start,
            in_exec_comment: false,
            nested_comments,
            saw_nested_opener: false,
            nesting_unclosed: false,
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        let s = self.s;
        loop {
            // U+FFFD, where decoding met a byte that is no text (`1%A0union`), separates
            // words as a space does: a byte some databases read as whitespace.
            while self.pos < s.len() {
                if is_space(s[self.pos]) {
                    self.pos += 1;
                } else if s[self.pos] == 0xef && s[self.pos..].starts_with("\u{fffd}".as_bytes()) {
                    self.pos += 3;
                } else {
                    break;
                }
            }
            if self.pos >= s.len() {
                return None;
            }
            // `/*!50000union*/`: MySQL runs the content; read through the markers.
            if s[self.pos] == b'/' && s[self.pos..].starts_with(b"/*!") {
                self.pos += 3;
                while self.pos < s.len() && s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                self.in_exec_comment = true;
                continue;
            }
            if self.in_exec_comment && s[self.pos..].starts_with(b"*/") {
                self.pos += 2;
                self.in_exec_comment = false;
                continue;
            }
            if s[self.pos].is_ascii_digit()
                && let Some(len) = empty_exponent(&s[self.pos..])
            {
                self.pos += len;
                continue;
            }
            break;
        }
        let start = self.pos;
        let b = s[start];
        let kind = match b {
            b'\'' | b'"' => {
                let closed = self.skip_string(b);
                Kind::Str { closed }
            }
            b'`' => {
                self.pos += 1;
                match memchr::memchr(b'`', &s[self.pos..]) {
                    Some(off) => self.pos += off + 1,
                    None => self.pos = s.len(),
                }
                Kind::Word(Kw::Ident)
            }
            b'-' if s.get(start + 1) == Some(&b'-') => {
                self.skip_line();
                Kind::Comment
            }
            b'#' => {
                self.skip_line();
                Kind::Comment
            }
            b'/' if s.get(start + 1) == Some(&b'*') => {
                let body = &s[start + 2..];
                let first_end = crate::find(body, b"*/");
                // Up to the `*` of the first `*/`, so `/*/` counts as an opener.
                let before_first_end = first_end.map_or(body.len(), |end| end + 1);
                if crate::find(&body[..before_first_end], b"/*").is_some() {
                    self.saw_nested_opener = true;
                }
                let end = if self.nested_comments && !self.nesting_unclosed {
                    let nested = nested_comment_end(body);
                    self.nesting_unclosed = nested.is_none();
                    nested.or(first_end)
                } else {
                    first_end
                };
                match end {
                    Some(off) => self.pos = start + 2 + off + 2,
                    None => self.pos = s.len(),
                }
                Kind::Comment
            }
            b'0'..=b'9' => {
                self.skip_number();
                Kind::Num
            }
            b'.' if s.get(start + 1).is_some_and(u8::is_ascii_digit) => {
                self.skip_number();
                Kind::Num
            }
            // `@'name'`, `@"name"`: a MySQL user variable with a quoted name.
            b'@' if matches!(s.get(start + 1), Some(b'\'' | b'"' | b'`')) => {
                self.pos += 1;
                self.skip_string(s[start + 1]);
                Kind::Var
            }
            b'@' => {
                self.pos += 1;
                while self.pos < s.len()
                    && (s[self.pos].is_ascii_alphanumeric()
                        || matches!(s[self.pos], b'_' | b'@' | b'.' | b'$'))
                {
                    self.pos += 1;
                }
                Kind::Var
            }
            b'a'..=b'z' | b'_' | b'$' => {
                // N'..', X'..', B'..', Q'..' string prefixes.
                if matches!(b, b'n' | b'x' | b'b' | b'q' | b'e') && s.get(start + 1) == Some(&b'\'')
                {
                    self.pos += 1;
                    let closed = self.skip_string(b'\'');
                    return Some(Token {
                        kind: Kind::Str { closed },
                        start,
                        end: self.pos,
                    });
                }
                self.skip_word();
                // A word is ASCII, so both ends are character boundaries.
                let word = self.text.get(start..self.pos).unwrap_or("");
                let kw = keyword(word);
                if matches!(kw, Kw::And | Kw::Or) {
                    Kind::Logic
                } else if weak_keyword(kw) || matches!(kw, Kw::Where | Kw::Having | Kw::From) {
                    // Operators and clauses, also when a parenthesis follows: `in (1)`.
                    Kind::Word(kw)
                } else if call_follows(s, self.pos) {
                    Kind::Func(kw)
                } else if kw == Kw::Arith {
                    Kind::Op
                } else {
                    Kind::Word(kw)
                }
            }
            b'(' => {
                self.pos += 1;
                Kind::LParen
            }
            b')' => {
                self.pos += 1;
                Kind::RParen
            }
            b',' => {
                self.pos += 1;
                Kind::Comma
            }
            b';' => {
                self.pos += 1;
                Kind::Semi
            }
            b'.' => {
                self.pos += 1;
                Kind::Dot
            }
            b'=' | b'<' | b'>' | b'!' => {
                self.pos += 1;
                while self.pos < s.len() && matches!(s[self.pos], b'=' | b'<' | b'>') {
                    self.pos += 1;
                }
                if &s[start..self.pos] == b"!" {
                    Kind::Sign
                } else {
                    Kind::Cmp
                }
            }
            b'|' | b'&' if s.get(start + 1) == Some(&b) => {
                self.pos += 2;
                // `||` is also string concatenation; both read as joining two expressions.
                Kind::Logic
            }
            b'-' | b'+' | b'~' => {
                self.pos += 1;
                Kind::Sign
            }
            b'|' | b'&' | b'^' | b'*' | b'/' | b'%' | b':' => {
                self.pos += 1;
                Kind::Op
            }
            // MySQL's `\N` is NULL.
            b'\\'
                if s.get(start + 1) == Some(&b'n')
                    && !s.get(start + 2).is_some_and(|c| is_word_byte(*c)) =>
            {
                self.pos += 2;
                Kind::Word(Kw::Null)
            }
            _ => {
                self.pos += crate::decode_utf8_len(b);
                Kind::Other
            }
        };
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }

    /// Skips a quoted string from its opening quote; doubled quotes and backslashes escape.
    fn skip_string(&mut self, quote: u8) -> bool {
        let s = self.s;
        let mut i = self.pos + 1;
        while i < s.len() {
            match s[i] {
                b'\\' => i += 2,
                c if c == quote => {
                    if s.get(i + 1) == Some(&quote) {
                        i += 2;
                    } else {
                        self.pos = i + 1;
                        return true;
                    }
                }
                _ => i += 1,
            }
        }
        self.pos = s.len();
        false
    }

    fn skip_line(&mut self) {
        match memchr::memchr(b'\n', &self.s[self.pos..]) {
            Some(off) => self.pos += off + 1,
            None => self.pos = self.s.len(),
        }
    }

    fn skip_number(&mut self) {
        self.pos = number_end(self.s, self.pos);
    }

    fn skip_word(&mut self) {
        self.pos = word_end(self.s, self.pos);
    }
}

/// Whether the next thing after spaces and comments from `from` is `(`: the word that ends
/// there is read as a call. Inlined into its two hot callers, the lexer and the bare gate:
/// as a call it cost the body with no string repeated 83,000 instructions more.
#[inline(always)]
fn call_follows(s: &[u8], from: usize) -> bool {
    let mut i = from;
    loop {
        while i < s.len() && is_space(s[i]) {
            i += 1;
        }
        if s[i.min(s.len())..].starts_with(b"/*") {
            match crate::find(&s[i + 2..], b"*/") {
                Some(off) => i += 2 + off + 2,
                None => return false,
            }
            continue;
        }
        return s.get(i) == Some(&b'(');
    }
}

/// Tokenizes `s` from `start`; returns whether a block comment held another `/*`, where
/// reading comments as nested (`nested_comments`) gives other tokens.
fn tokenize(s: &str, start: usize, nested_comments: bool, out: &mut Vec<Token>) -> bool {
    out.clear();
    let mut lexer = Lexer::new(s, start, nested_comments);
    while out.len() < MAX_TOKENS {
        match lexer.next_token() {
            Some(t) => out.push(t),
            None => break,
        }
    }
    lexer.saw_nested_opener
}

/// Where a number that starts at `from` ends: digits and dots with an exponent, or `0x` or
/// `0b` and hex digits.
#[inline(always)]
fn number_end(s: &[u8], from: usize) -> usize {
    let mut pos = from;
    if s[pos..].starts_with(b"0x") || s[pos..].starts_with(b"0b") {
        pos += 2;
        while pos < s.len() && s[pos].is_ascii_hexdigit() {
            pos += 1;
        }
        return pos;
    }
    while pos < s.len() && (s[pos].is_ascii_digit() || s[pos] == b'.') {
        pos += 1;
    }
    if pos < s.len()
        && s[pos] == b'e'
        && s.get(pos + 1)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+')
    {
        pos += 2;
        while pos < s.len() && s[pos].is_ascii_digit() {
            pos += 1;
        }
    }
    pos
}

/// Where a name that starts at `from` ends: name bytes, and dots inside qualified names
/// (`information_schema.tables`, `master..sysdatabases`).
#[inline(always)]
fn word_end(s: &[u8], from: usize) -> usize {
    let mut pos = from;
    while pos < s.len()
        && (is_word_byte(s[pos])
            || s[pos] == b'.'
                && s.get(pos + 1)
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_' || *n == b'.'))
    {
        pos += 1;
    }
    pos
}

/// Whether the bare reading of a value can hold anything [`analyse`] reports there. Every
/// rule for a bare value needs a comment, `||` or `&&`, `@@`, MySQL's `\N`, a catalogue
/// name, or an SQL keyword other than the operators and clause words of [`weak_keyword`]
/// (`order` and `group` only with a `by`, they and the [`call_only_keyword`]s otherwise only
/// as a call); or else three calls (`a(b) c(d) e(f)`, keyword density: three `(`), or a `;`
/// before a statement that starts with a name (`; do (1=1)`, `; while 1=1`). A value with
/// none of them (an address, a link, a phone number, a browser's `(KHTML, like Gecko)`) is
/// not tokenized as bare SQL. The literal search tells whether any of the words occurs at all,
/// even inside a longer word ([`gate_words`]); where one does, the words are cut where the
/// lexer cuts them: after a number, a name may start (`1union`).
fn bare_may_say_sql(view: &str, shape: Shape, found: Found) -> bool {
    let s = view.as_bytes();
    if shape.any(const { Shape::bytes(b"#\\") })
        || found.has(List::SqlPair)
            && (shape.has(b'-') && crate::find(s, b"--").is_some()
                || shape.has(b'/') && shape.has(b'*') && crate::find(s, b"/*").is_some()
                || shape.has(b'|') && crate::find(s, b"||").is_some()
                || shape.has(b'&') && crate::find(s, b"&&").is_some()
                || shape.has(b'@') && crate::find(s, b"@@").is_some())
        || shape.has(b'(') && memchr::memchr_iter(b'(', s).nth(2).is_some()
    {
        return true;
    }
    if !found.has(List::SqlWord) {
        return false;
    }
    let statement_end = shape.has(b';');
    let (mut clause, mut by) = (false, false);
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'0'..=b'9' => i = number_end(s, i),
            b'a'..=b'z' | b'_' | b'$' => {
                let end = word_end(s, i);
                // Name bytes are ASCII, so both ends are character boundaries.
                let word = view.get(i..end).unwrap_or("");
                match keyword(word) {
                    Kw::Ident => {
                        if statement_end && STATEMENT_NAMES.contains(&word) {
                            return true;
                        }
                    }
                    kw if weak_keyword(kw) => {}
                    // The words that count only as a call (`1-order(1)`, `true()`), read as
                    // the lexer reads one; and `order by`, `group by`: the clause counts with
                    // its `by`, whose place in the text is left to the analysis.
                    kw if call_only_keyword(kw) || matches!(kw, Kw::Order | Kw::Group | Kw::By) => {
                        if call_follows(s, end) {
                            return true;
                        }
                        by |= kw == Kw::By;
                        clause |= matches!(kw, Kw::Order | Kw::Group);
                        if clause && by {
                            return true;
                        }
                    }
                    _ => return true,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    false
}

/// Keywords that a bare rule reads as a word only after a stronger one (`waitfor delay`,
/// `union all`, `select top`, `case ... end`, `into outfile`, `limit 1 offset`, `select
/// user`) or inside a condition that a logical operator joins (`true`, `binary`, `div`);
/// as a call (`user()`, `true()`) they count on their own. Most are words of prose: `time`,
/// `all`, `top`, `end`, `user`, `version`.
fn call_only_keyword(kw: Kw) -> bool {
    matches!(
        kw,
        Kw::Bool
            | Kw::Delay
            | Kw::All
            | Kw::Distinct
            | Kw::Top
            | Kw::End
            | Kw::Arith
            | Kw::Binary
            | Kw::InfoFn
            | Kw::Offset
            | Kw::Procedure
            | Kw::Outfile
    )
}

/// Operators and clause words that no bare rule reads without a stronger keyword, a logical
/// operator or a comment beside them: what they compare or join is judged only after `and`,
/// `or`, `case` or a breakout. The lexer never reads them as calls, so they count toward no
/// keyword density. (`like` is in every browser's User-Agent, `in`, `is`, `as` and `not` in
/// most sentences.)
fn weak_keyword(kw: Kw) -> bool {
    matches!(
        kw,
        Kw::In
            | Kw::Like
            | Kw::Is
            | Kw::Between
            | Kw::Not
            | Kw::When
            | Kw::Then
            | Kw::Else
            | Kw::As
    )
}

/// Where the `*/` that closes a nested block comment starts in its body (after the opening
/// `/*`), or `None` when the nesting never closes.
fn nested_comment_end(body: &[u8]) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = 0;
    while i + 1 < body.len() {
        match &body[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// `1.e(`, `1.e,`: a number with an empty exponent before a parenthesis or a comma, which
/// MySQL reads as nothing at all; filters see a number glued to the next token. Its length.
fn empty_exponent(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !s[digits..].starts_with(b".e") {
        return None;
    }
    matches!(s.get(digits + 2), Some(b'(' | b')' | b',')).then_some(digits + 2)
}

/// The context user input was put in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    /// Inside a string delimited by this quote.
    Quoted(u8),
}

/// Buffers the analysis reuses from value to value.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    tokens: Vec<Token>,
    kinds: Vec<Kind>,
    starts: Vec<usize>,
}

pub(crate) fn scan(input: View<'_>, hits: &mut Hits) {
    let (view, shape) = (input.text, input.shape);
    // Nothing SQL can be said without a space, an operator, a quote or a parenthesis.
    if shape.within(Shape::WORD.with(const { Shape::bytes(b".@-") }))
        && !(shape.has(b'-') && crate::find(view.as_bytes(), b"--").is_some())
    {
        return;
    }
    if shape.any(const { Shape::bytes(b"'\"\\;") }) && quote_probe(view) {
        hits.add(&rules::SQLI_QUOTE_PROBE, view, 0);
    }
    if shape.has(b'/') && shape.has(b'!') && versioned_comment(view.as_bytes()) {
        hits.add(&rules::SQLI_VERSIONED_COMMENT, view, 0);
    }
    if shape.has(b';')
        && shape.any(const { Shape::bytes(b"-#*") })
        && let Some(at) = terminated_statement(view.as_bytes())
    {
        hits.add(&rules::SQLI_STACKED, view, at);
    }
    let mut scratch = std::mem::take(&mut hits.sql);
    // `1+union+select+1`: a form-encoded space that reached us undecoded.
    let spaced = shape.any(Shape::SPACE.with(Shape::LINE_BREAK))
        || shape.any(Shape::NON_ASCII) && memchr::memchr(0xa0, view.as_bytes()).is_some();
    if shape.has(b'+') && !spaced {
        scan_text(
            &view.replace('+', " "),
            shape,
            input.found,
            hits,
            &mut scratch,
        );
    }
    scan_text(view, shape, input.found, hits, &mut scratch);
    hits.sql = scratch;
}

/// `'`, `1'`, `"`, `' '`, `1\`, `;`: nothing but quotes, escapes or a statement end, perhaps
/// after a number; the probe that looks for a query error. `' or "` too: quotes that do not
/// pair up around a lone `or` or `and`. (A backtick alone is left out: `` 1234` `` is a typo
/// as often as a probe.)
fn quote_probe(view: &str) -> bool {
    let rest = view
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit());
    if !rest
        .bytes()
        .next()
        .is_some_and(|b| matches!(b, b'\'' | b'"' | b'\\' | b';'))
    {
        return false;
    }
    let (mut single, mut double, mut others, mut logic) = (0, 0, 0, false);
    for word in rest.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if matches!(word, "or" | "and" | "||" | "&&") {
            if logic {
                return false;
            }
            logic = true;
            continue;
        }
        for b in word.bytes() {
            match b {
                b'\'' => single += 1,
                b'"' => double += 1,
                b'\\' | b';' => others += 1,
                _ => return false,
            }
        }
    }
    let quotes = single + double + others;
    if logic {
        single + double >= 2 && (single % 2 == 1 || double % 2 == 1)
    } else {
        (1..=4).contains(&quotes)
    }
}

/// `;--`, `;#`, `; /*`, `'; -- `: the statement ends and a comment cuts what the query had
/// after it, wherever it appears (also inside what reads as a comment). With a space between
/// them, as prose puts a dash after a semicolon, the `--` comment must be empty (or `-- -a`)
/// to count.
fn terminated_statement(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = memchr::memchr(b';', &bytes[from..]) {
        let at = from + off;
        let after = &bytes[at + 1..];
        let spaces = after.iter().take_while(|b| is_space(**b)).count();
        let rest = &after[spaces..];
        let comment = rest.starts_with(b"/*")
            || rest.starts_with(b"--")
                && if spaces == 0 {
                    rest.get(2).is_none_or(|b| is_space(*b) || *b == b'-')
                } else {
                    // Nothing, or the `-- -a` that keeps a trailing space from being trimmed.
                    let tail = rest[2..].trim_ascii();
                    tail.is_empty() || tail.len() <= 3 && tail[0] == b'-'
                }
            || spaces == 0 && rest.starts_with(b"#") && rest.get(1).is_none_or(|b| is_space(*b));
        if comment {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `/*!50000select*/`, `/*!1111'*/`, `/*!union*/`: MySQL runs what a `/*!` comment holds,
/// after an optional version number; a way to hide SQL from filters that drop comments.
/// Licence banners in scripts and style sheets (`/*! normalize.css v8 | MIT */`) start with a
/// space and hold other punctuation.
fn versioned_comment(bytes: &[u8]) -> bool {
    let mut from = 0;
    // The first `*/` after a comment's start closes it, and every comment before it.
    let mut closes = NextClose::new(bytes, b"*/");
    while let Some(off) = crate::find(&bytes[from..], b"/*!") {
        let content_start = from + off + 3;
        if bytes.get(content_start).is_some_and(u8::is_ascii_digit) {
            return true;
        }
        if let Some(end) = closes.at_or_after(content_start) {
            let body = &bytes[content_start..end];
            if body.first().is_some_and(u8::is_ascii_alphabetic)
                && body.iter().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'=' | b'-' | b'(' | b')')
                        || is_space(*b)
                })
            {
                return true;
            }
        }
        from += off + 3;
    }
    false
}

/// `shape` tells which quotes occur in the view.
/// `found` is what the literal search found in `view`, or in the same with `+` for a space
/// (which makes and breaks none of the lists the SQL check reads).
fn scan_text(view: &str, shape: Shape, found: Found, hits: &mut Hits, scratch: &mut Scratch) {
    if scan_contexts(view, shape, found, false, hits, scratch) {
        // `1/* /* */ */ or 1=1`: PostgreSQL nests comments, MySQL ends them at the first
        // `*/`; each reading can hide what the other shows.
        scan_contexts(view, shape, found, true, hits, scratch);
    }
}

/// Analyses the value as bare SQL and after each quote that could close the application's
/// string; returns whether a block comment held another `/*`.
fn scan_contexts(
    view: &str,
    shape: Shape,
    found: Found,
    nested: bool,
    hits: &mut Hits,
    scratch: &mut Scratch,
) -> bool {
    let bytes = view.as_bytes();
    let mut saw_nested = false;
    if bare_may_say_sql(view, shape, found) {
        saw_nested = tokenize(view, 0, nested, &mut scratch.tokens);
        analyse(view, Context::Bare, hits, scratch);
    }
    for quote in [b'\'', b'"'] {
        if shape.has(quote)
            && let Some(at) = closing_quote(bytes, quote)
        {
            saw_nested |= tokenize(view, at + 1, nested, &mut scratch.tokens);
            analyse(view, Context::Quoted(quote), hits, scratch);
        }
    }
    saw_nested
}

/// Whether the rest of a value after a reopening quote reads as a sentence, as after a word
/// quoted in prose (`the 'or' operator returns true`): several words. What an attacker
/// reopens is an operand the application's closing quote completes (`' or '1`, `a' or 'b`).
fn quotes_a_word_in_prose(rest: &str) -> bool {
    rest.split_ascii_whitespace().nth(1).is_some()
}

/// The first quote that ends a string: a doubled quote is an escaped one inside it.
fn closing_quote(bytes: &[u8], quote: u8) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr(quote, &bytes[from..])?;
        if bytes.get(at + 1) != Some(&quote) {
            return Some(at);
        }
        from = at + 2;
    }
}

/// Tokens with comments removed, for matching sequences that comments only pad.
fn without_comments(tokens: &[Token]) -> impl Iterator<Item = (usize, &Token)> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind != Kind::Comment)
}

fn is_literal(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Num | Kind::Str { .. } | Kind::Var | Kind::Word(Kw::Null | Kw::Bool)
    )
}

fn analyse(view: &str, context: Context, hits: &mut Hits, scratch: &mut Scratch) {
    let tokens = &scratch.tokens;
    if tokens.is_empty() {
        return;
    }
    scratch.kinds.clear();
    scratch.starts.clear();
    for (_, token) in without_comments(tokens) {
        scratch.kinds.push(token.kind);
        scratch.starts.push(token.start);
    }
    let t = &scratch.kinds[..];
    let pos = &scratch.starts[..];
    let at = |i: usize| t.get(i).copied();
    let hit = |hits: &mut Hits, rule: &'static Rule, i: usize| {
        let start = pos.get(i).copied().unwrap_or(0);
        hits.add(rule, view, start);
    };

    // Statement structure, wherever it appears.
    let mut keyword_count = 0;
    let quoted = matches!(context, Context::Quoted(_));
    let commented = tokens.len() != t.len();

    // Whether a comment follows the last non-comment token: the rest of the query is cut.
    let ends_in_comment = tokens
        .last()
        .is_some_and(|tk| tk.kind == Kind::Comment && comment_is_terminator(view, tk));
    for i in 0..t.len() {
        match t[i] {
            Kind::Word(Kw::Union) | Kind::Func(Kw::Union) => {
                let mut j = i + 1;
                while matches!(at(j), Some(Kind::Word(Kw::All | Kw::Distinct))) {
                    j += 1;
                }
                // `union select 1,2`, `union (select ...)`, `union select name from t`,
                // `union 1,2,3`; not `union select of running shoes`.
                let selects = numeric_list(t, j, 3)
                    || match at(j) {
                        Some(Kind::LParen) => {
                            matches!(
                                at(j + 1),
                                Some(Kind::Word(Kw::Select) | Kind::Func(Kw::Select))
                            )
                        }
                        Some(Kind::Word(Kw::Select) | Kind::Func(Kw::Select)) => {
                            select_is_sql(t, j)
                            || numeric_list(t, j + 1, MAX_TOKENS)
                            // `union select 'x'--`, `'union select '2`
                            || matches!(at(j + 1), Some(Kind::Str { closed: false }))
                            || ends_in_comment
                                && at(j + 1).is_some_and(is_literal)
                                && at(j + 2).is_none()
                            || matches!(at(j + 1), None | Some(Kind::Word(_)))
                                && matches!(
                                    at(j + 2),
                                    None | Some(Kind::Comma | Kind::Word(Kw::From))
                                )
                        }
                        _ => false,
                    }
                    || context == Context::Bare && union_probe(t, i, commented);
                if selects {
                    hit(hits, &rules::SQLI_UNION, i);
                }
            }
            Kind::Semi if stacked_statement(view, t, pos, i + 1) => {
                hit(hits, &rules::SQLI_STACKED, i)
            }
            Kind::Func(Kw::DangerousFn) => hit(hits, &rules::SQLI_DANGEROUS_FN, i),
            Kind::Word(Kw::DangerousFn) if view[pos[i]..].starts_with("xp_cmdshell") => {
                hit(hits, &rules::SQLI_DANGEROUS_FN, i)
            }
            Kind::Word(Kw::Waitfor) if matches!(at(i + 1), Some(Kind::Word(Kw::Delay))) => {
                hit(hits, &rules::SQLI_TIME, i)
            }
            Kind::Word(Kw::Into)
                if matches!(
                    at(i + 1),
                    Some(Kind::Word(Kw::Outfile) | Kind::Func(Kw::Outfile))
                ) =>
            {
                hit(hits, &rules::SQLI_FILE, i)
            }
            // `dual` is also an English word: only `from dual` is Oracle's table.
            Kind::Word(Kw::Schema) | Kind::Func(Kw::Schema)
                if word_at(view, pos[i]) != "dual" || i > 0 && t[i - 1] == Kind::Word(Kw::From) =>
            {
                hit(hits, &rules::SQLI_SCHEMA, i)
            }
            // `length(version())`, `database() like schema()`, `1=user()`
            Kind::Func(Kw::InfoFn)
                if at(i + 1) == Some(Kind::LParen)
                    && at(i + 2) == Some(Kind::RParen)
                    && (i > 0 && joins_sql(t[i - 1])
                        || at(i + 3).is_some_and(|k| {
                            joins_sql(k)
                                || matches!(
                                    k,
                                    Kind::Word(
                                        Kw::From | Kw::Where | Kw::Limit | Kw::Order | Kw::Group
                                    )
                                )
                        })) =>
            {
                hit(hits, &rules::SQLI_SCHEMA, i)
            }
            // `iif(1=2, a, b)`: a condition of constants decides what the query returns.
            Kind::Func(Kw::ProbeFn)
                if matches!(word_at(view, pos[i]), "if" | "iif")
                    && at(i + 1) == Some(Kind::LParen)
                    && at(i + 2).is_some_and(is_literal)
                    && at(i + 3) == Some(Kind::Cmp)
                    && at(i + 4).is_some_and(is_literal)
                    && at(i + 5) == Some(Kind::Comma) =>
            {
                hit(hits, &rules::SQLI_BOOLEAN_FN, i)
            }
            // `ascii(substring(password,1,1))`: one character of a value, as a number.
            Kind::Func(Kw::ProbeFn)
                if at(i + 1) == Some(Kind::LParen)
                    && at(i + 2) == Some(Kind::Func(Kw::ProbeFn))
                    && matches!(
                        word_at(view, pos[i]),
                        "ascii" | "ord" | "unicode" | "hex" | "bin" | "length" | "char_length"
                    )
                    && matches!(
                        word_at(view, pos[i + 2]),
                        "substring" | "substr" | "mid" | "left" | "right"
                    ) =>
            {
                hit(hits, &rules::SQLI_BOOLEAN_FN, i)
            }
            Kind::Word(Kw::Case) => {
                let mut shape = ExpressionShape::default();
                if (WholeExpression { t }).case(i, 0, &mut shape).is_some()
                    && (shape.literal || shape.string || shape.call || shape.operator)
                {
                    hit(hits, &rules::SQLI_BOOLEAN_FN, i)
                }
            }
            Kind::Var if view[pos[i]..].starts_with("@@") => hit(hits, &rules::SQLI_SCHEMA, i),
            Kind::Word(Kw::Exec)
                if matches!(
                    at(i + 1),
                    Some(Kind::Word(Kw::Schema) | Kind::Func(Kw::Schema))
                ) =>
            {
                hit(hits, &rules::SQLI_PROC, i)
            }
            Kind::Func(Kw::Exec) if matches!(at(i + 2), Some(Kind::Var | Kind::Str { .. })) => {
                hit(hits, &rules::SQLI_PROC, i)
            }
            Kind::Func(Kw::CharFn) => {
                // char(..)+char(..) or char(..)||char(..): a string built from codes.
                if let Some(close) = (i + 1..t.len()).find(|&j| t[j] == Kind::RParen)
                    && matches!(at(close + 1), Some(Kind::Op | Kind::Sign | Kind::Logic))
                    && matches!(at(close + 2), Some(Kind::Func(Kw::CharFn)))
                {
                    hit(hits, &rules::SQLI_CHAR_CONCAT, i);
                }
            }
            // `(select system_user)` too: a sub-query of one information function, and
            // `select current_user;`, one of SQL's niladic functions, which no prose names.
            Kind::Word(Kw::Select) | Kind::Func(Kw::Select)
                if select_is_sql(t, i)
                    || at(i + 1) == Some(Kind::Word(Kw::InfoFn))
                        && (i > 0
                            && t[i - 1] == Kind::LParen
                            && at(i + 2) == Some(Kind::RParen)
                            || matches!(
                                word_at(view, pos[i + 1]),
                                "current_user" | "session_user" | "system_user"
                            ) && matches!(
                                at(i + 2),
                                None | Some(Kind::Semi | Kind::Comma | Kind::Word(Kw::From))
                            )) =>
            {
                hit(hits, &rules::SQLI_SELECT, i)
            }
            Kind::Word(Kw::Statement)
                if data_statement(view, t, pos, i, StatementAt::Standalone { ends_in_comment }) =>
            {
                hit(hits, &rules::SQLI_STATEMENT, i)
            }
            // `and ascii(substring(...))`, `or (select ...)`
            Kind::Logic
                if matches!(
                    at(i + 1),
                    Some(Kind::Func(
                        Kw::ProbeFn | Kw::InfoFn | Kw::CharFn | Kw::DangerousFn
                    ))
                ) || matches!(at(i + 1), Some(Kind::LParen))
                    && matches!(
                        at(i + 2),
                        Some(Kind::Word(Kw::Select) | Kind::Func(Kw::Select))
                    ) =>
            {
                hit(hits, &rules::SQLI_BOOLEAN_FN, i)
            }
            _ => {}
        }
        if matches!(
            t[i],
            Kind::Word(
                Kw::Union
                    | Kw::Select
                    | Kw::From
                    | Kw::Where
                    | Kw::Having
                    | Kw::Into
                    | Kw::Statement
                    | Kw::Exec
                    | Kw::Null
            ) | Kind::Func(_)
                | Kind::Logic
        ) {
            keyword_count += 1;
        }
    }
    if keyword_count >= 3 && context == Context::Bare {
        hit(hits, &rules::SQLI_KEYWORD_DENSITY, 0);
    }
    // `(1 or 1) --`, `( binary ( 'a' or 'b') ) --`: the whole value is one SQL expression,
    // closed by a comment that cuts the rest of the query.
    if context == Context::Bare && ends_in_comment {
        let mut shape = ExpressionShape::default();
        let parsed = WholeExpression { t }.expression(0, 0, &mut shape);
        // An operator alone needs a space: `1611/abc--` is a token, `1 / abc --` is not.
        let spaced_operator = shape.operator && view.bytes().any(is_space);
        // `1--`, `@@version /*`, `1*1--`: numbers alone, and a comment with nothing in it.
        let bare_literal = shape.literal
            && !shape.name
            && tokens
                .last()
                .is_some_and(|tk| comment_is_empty(&view.as_bytes()[tk.start..tk.end]));
        if parsed == Some(t.len())
            && (shape.call || shape.string || spaced_operator || bare_literal)
        {
            hit(hits, &rules::SQLI_COMMENTED_EXPRESSION, 0);
        }
    }

    // What follows the end of the application's value.
    let mut call_prefix = false;
    let mut k = match context {
        // `x' 'y' like ...`: MySQL joins adjacent strings, so an operator may follow a
        // second one.
        Context::Quoted(_) => usize::from(
            at(0) == Some(Kind::Str { closed: true }) && at(1).is_some_and(is_binary_operator),
        ),
        Context::Bare => {
            // A value that starts with an operator or clause continues one the application
            // already has (`id=1` + ` AND 1=1--`).
            // `) or ('1'='1`: closing the application's parenthesis is a continuation too.
            if at(0).is_some_and(|first| is_binary_operator(first) && first != Kind::Sign)
                || at(0) == Some(Kind::RParen)
                || matches!(
                    at(0),
                    Some(Kind::Word(
                        Kw::Order | Kw::Group | Kw::Having | Kw::Where | Kw::Limit
                    ))
                )
            {
                0
            } else {
                // A bare value that is a number (`1`, `-1`, `(1)`), a variable or a name,
                // perhaps aliased (`x AS y`), or only the alias of the application's column
                // (` AS x WHERE 1=1`).
                if at(0) == Some(Kind::Word(Kw::As)) && at(1) == Some(Kind::Word(Kw::Ident)) {
                    2
                } else {
                    let mut k = 0;
                    while at(k) == Some(Kind::LParen) {
                        k += 1;
                    }
                    if at(k) == Some(Kind::Sign) && at(k + 1) == Some(Kind::Num) {
                        k += 1;
                    }
                    match at(k) {
                        Some(
                            Kind::Num
                            | Kind::Var
                            | Kind::Word(Kw::Ident)
                            | Kind::Str { closed: true },
                        ) => {
                            k += 1;
                            // `17,23 order by 16`: a list of numbers.
                            while at(k - 1) == Some(Kind::Num)
                                && at(k) == Some(Kind::Comma)
                                && at(k + 1) == Some(Kind::Num)
                            {
                                k += 2;
                            }
                        }
                        // `pi() and cos(pi())=-1`: a call of an SQL function, or of any name
                        // without arguments.
                        Some(Kind::Func(kw))
                            if at(k + 1) == Some(Kind::LParen)
                                && (kw != Kw::Ident || at(k + 2) == Some(Kind::RParen)) =>
                        {
                            call_prefix = true;
                            k = skip_parens(t, k + 1);
                        }
                        _ => return,
                    }
                    if at(k) == Some(Kind::Word(Kw::As)) && at(k + 1) == Some(Kind::Word(Kw::Ident))
                    {
                        k += 2;
                    }
                    k
                }
            }
        }
    };
    // A continuation (no prefix at all) is judged like a number: the application's value.
    let numeric_prefix = context == Context::Bare
        && (k == 0
            || matches!(
                at(k - 1),
                Some(Kind::Num | Kind::Var | Kind::RParen | Kind::Str { closed: true })
            )
            || at(k.saturating_sub(2)) == Some(Kind::Word(Kw::As)));
    while at(k) == Some(Kind::RParen) {
        k += 1;
    }
    let breakout = if quoted { 0 } else { k.saturating_sub(1) };
    if quoted {
        let first_raw = tokens
            .iter()
            .position(|tk| tk.kind != Kind::RParen && tk.kind != Kind::Semi);
        if let Some(first) = first_raw
            && tokens[first].kind == Kind::Comment
            && comment_is_terminator(view, &tokens[first])
        {
            hits.add(&rules::SQLI_BREAKOUT_COMMENT, view, tokens[first].start);
        }
        // `' –`: a dash alone after the quote, a comment whose second dash was lost or
        // typeset.
        if t == [Kind::Sign] && &view[pos[0]..] == "-" && view[..pos[0]].ends_with(' ') {
            hit(hits, &rules::SQLI_BREAKOUT_COMMENT, 0);
        }
        // `x'; anything -- -a`: the string and the statement end, and a comment cuts what
        // the query had after them.
        if at(0) == Some(Kind::Semi) && t.len() > 1 && ends_in_comment {
            hit(hits, &rules::SQLI_STACKED, 0);
        }
        // `x'; declare @s ...`, `x' exec master..xp_cmdshell`: a statement right after the
        // string, with or without the `;`.
        if matches!(
            at(k),
            Some(Kind::Word(Kw::Statement | Kw::Exec) | Kind::Func(Kw::Exec))
        ) && stacked_statement(view, t, pos, k)
        {
            hit(hits, &rules::SQLI_STACKED, k);
        }
    }

    match at(k) {
        Some(Kind::Word(Kw::Order | Kw::Group)) if quoted || numeric_prefix => {
            // `' order by 3--`, `1 group by 2`
            let column = matches!(
                at(k + 2),
                Some(Kind::Num | Kind::Word(Kw::Ident) | Kind::Func(_))
            );
            let after = if matches!(at(k + 2), Some(Kind::Func(_))) {
                skip_parens(t, k + 3)
            } else {
                k + 3
            };
            let end = matches!(
                at(after),
                None | Some(
                    Kind::Comma
                        | Kind::Semi
                        | Kind::RParen
                        | Kind::Str { closed: false }
                        | Kind::Word(
                            Kw::Ident | Kw::Limit | Kw::Having | Kw::Union | Kw::Procedure
                        )
                )
            );
            if at(k + 1) == Some(Kind::Word(Kw::By))
                && column
                && end
                && (quoted
                    || ends_in_comment
                    || matches!(at(k + 2), Some(Kind::Num | Kind::Func(Kw::ProbeFn))))
            {
                hit(hits, &rules::SQLI_BREAKOUT_CLAUSE, k);
            }
        }
        Some(Kind::Word(Kw::Where | Kw::Having)) => {
            // After a name too: `id having (1 or true)`, a condition of constants alone.
            if let Some(tail) = expression(t, k)
                && (tail.comparison && (quoted || numeric_prefix)
                    || tail.constant_logic && tail.end == t.len())
            {
                hit(hits, &rules::SQLI_BREAKOUT_CLAUSE, k);
            }
        }
        // `1) from users where name=`: the rest of a sub-query.
        Some(Kind::Word(Kw::From))
            if numeric_prefix
                && k > 0
                && at(k - 1) == Some(Kind::RParen)
                && matches!(at(k + 1), Some(Kind::Word(Kw::Ident | Kw::Schema)))
                && at(k + 2) == Some(Kind::Word(Kw::Where)) =>
        {
            hit(hits, &rules::SQLI_BREAKOUT_CLAUSE, k);
        }
        Some(Kind::Word(Kw::Limit))
            if (quoted || numeric_prefix) && at(k + 1) == Some(Kind::Num) =>
        {
            if matches!(
                at(k + 2),
                None | Some(Kind::Comma | Kind::Word(Kw::Offset) | Kind::Str { closed: false })
            ) {
                hit(hits, &rules::SQLI_BREAKOUT_CLAUSE, k);
            }
        }
        Some(Kind::Word(Kw::Into)) if quoted || numeric_prefix => {
            if matches!(at(k + 1), Some(Kind::Var | Kind::Word(Kw::Outfile))) {
                hit(hits, &rules::SQLI_BREAKOUT_CLAUSE, k);
            }
        }
        // `',NULL,NULL) waitfor ...`, `', 'x') union ...`: closing an argument list.
        Some(Kind::Comma)
            if quoted
                && at(k + 1).is_some_and(is_literal)
                && t.iter().skip(k).any(|&x| x == Kind::RParen) =>
        {
            let rule = if ends_in_comment {
                &rules::SQLI_BREAKOUT_EXPR
            } else {
                &rules::SQLI_BREAKOUT_OPERATOR
            };
            hit(hits, rule, breakout);
        }
        Some(first) if is_binary_operator(first) || negated_operator(t, k) => {
            let Some(tail) = expression(t, k) else {
                return;
            };
            // After a breakout any `#` comments out the rest, prose-like or not.
            let terminated = (ends_in_comment
                || quoted
                    && tokens.last().is_some_and(|tk| {
                        tk.kind == Kind::Comment && view[tk.start..].starts_with('#')
                    }))
                && tail.end == t.len();
            let logic = first == Kind::Logic;
            match context {
                Context::Quoted(quote) => {
                    // `"&page=1&ref=x`: a query string after a quote reads as bitwise AND.
                    let query_string = first == Kind::Op && view[pos[k]..].starts_with('&');
                    // `' || '`, `a' div 'b`: an operator between the application's string and
                    // one its own closing quote completes, unless a sentence follows the
                    // reopening quote. Prose and searches quote words in double quotes
                    // (`"like" stamp`) more often, so there it takes two operands.
                    let reopened = tail.open_string.is_some_and(|i| {
                        view.as_bytes()[pos[i]] == quote
                            && if quote == b'\'' {
                                !quotes_a_word_in_prose(&view[pos[i] + 1..])
                            } else {
                                logic && (tail.operands >= 2 || tail.unary)
                                // `"-"`: a symbol, and the value ends at the reopening quote.
                                || k + 2 == t.len()
                                    && pos[i] + 1 == view.len()
                                    && !view.as_bytes()[pos[k]].is_ascii_alphabetic()
                            }
                    });
                    let strong = tail.comparison && !query_string
                        || tail.call
                        || terminated
                        || tail.subquery
                        || logic && tail.numeric_operand
                        || reopened;
                    if strong {
                        hit(hits, &rules::SQLI_BREAKOUT_EXPR, breakout);
                    } else {
                        hit(hits, &rules::SQLI_BREAKOUT_OPERATOR, breakout);
                    }
                }
                Context::Bare
                    if tail.logic
                        && (!call_prefix || tail.comparison)
                        && (tail.comparison
                            && (numeric_prefix || terminated || tail.literal_comparison)
                            || tail.call
                            || tail.subquery
                            || terminated && numeric_prefix) =>
                {
                    hit(hits, &rules::SQLI_TAUTOLOGY, k)
                }
                // `1 or 1 group by`: a condition of constants, then a clause.
                Context::Bare
                    if k > 0
                        && numeric_prefix
                        && logic
                        && tail.operands == 1
                        && tail.numeric_operand
                        && matches!(
                            at(tail.end),
                            Some(Kind::Word(
                                Kw::Group | Kw::Order | Kw::Having | Kw::Limit | Kw::Union
                            ))
                        ) =>
                {
                    hit(hits, &rules::SQLI_TAUTOLOGY, k)
                }
                // `and 1`, `or true`: the whole value continues the application's condition
                // with a constant.
                Context::Bare
                    if k == 0
                        && logic
                        && tail.operands == 1
                        && tail.numeric_operand
                        && tail.end == t.len() =>
                {
                    hit(hits, &rules::SQLI_TAUTOLOGY, k)
                }
                // `1 - ord('a')`: arithmetic on the application's number with an SQL function.
                Context::Bare if k > 0 && numeric_prefix && !tail.logic && tail.sql_call => {
                    hit(hits, &rules::SQLI_BOOLEAN_FN, k)
                }
                Context::Bare if tail.logic && numeric_prefix => {
                    hit(hits, &rules::SQLI_NUMERIC_LOGIC, k)
                }
                Context::Bare => {}
            }
        }
        _ => {}
    }
}

/// Whether `n, n` (numbers or NULLs) starts within `within` tokens from `from`: the column
/// list of a UNION-based injection.
fn numeric_list(t: &[Kind], from: usize, within: usize) -> bool {
    let item = |k: &Kind| matches!(k, Kind::Num | Kind::Word(Kw::Null));
    t.get(from..)
        .unwrap_or_default()
        .windows(3)
        .take(within)
        .any(|w| item(&w[0]) && w[1] == Kind::Comma && item(&w[2]))
}

/// `-1 union`, `1/1/**/union`: a number (negative, computed or followed by comments) and a
/// UNION that ends the value, the probe that precedes a UNION-based injection.
fn union_probe(t: &[Kind], union: usize, commented: bool) -> bool {
    let mut j = usize::from(t.first() == Some(&Kind::Sign));
    if t.get(j) != Some(&Kind::Num) {
        return false;
    }
    j += 1;
    while matches!(t.get(j), Some(Kind::Op | Kind::Sign)) && t.get(j + 1) == Some(&Kind::Num) {
        j += 2;
    }
    j == union
        && (union > 1 || commented)
        && t[union..]
            .iter()
            .all(|k| matches!(k, Kind::Word(Kw::Union) | Kind::Func(Kw::Union)))
}

/// Tokens that join an operand to SQL around it.
fn joins_sql(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::LParen
            | Kind::Comma
            | Kind::Cmp
            | Kind::Logic
            | Kind::Op
            | Kind::Sign
            | Kind::Word(Kw::Select | Kw::Like | Kw::Is | Kw::In | Kw::Between)
    )
}

/// The SQL name that starts at `at`.
fn word_at(view: &str, at: usize) -> &str {
    let rest = &view.as_bytes()[at..];
    let len = rest.iter().take_while(|b| is_word_byte(**b)).count();
    &view[at..at + len]
}

/// `NOT LIKE`, `NOT BETWEEN`, `NOT IN` at `t[i]`.
fn negated_operator(t: &[Kind], i: usize) -> bool {
    t.get(i) == Some(&Kind::Word(Kw::Not))
        && matches!(
            t.get(i + 1),
            Some(Kind::Word(Kw::Like | Kw::Between | Kw::In))
        )
}

fn is_binary_operator(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Logic
            | Kind::Cmp
            | Kind::Op
            | Kind::Sign
            | Kind::Word(Kw::Like | Kw::Between | Kw::Is | Kw::In)
    )
}

/// What a breakout's tail does, once it parses as `op operand (op operand)*`.
#[derive(Default)]
struct Tail {
    /// Index just past the expression.
    end: usize,
    comparison: bool,
    literal_comparison: bool,
    call: bool,
    subquery: bool,
    numeric_operand: bool,
    logic: bool,
    operands: usize,
    /// Ends with a string the application's own closing quote completes: its index.
    open_string: Option<usize>,
    /// A call of a function SQL knows.
    sql_call: bool,
    /// A unary operator before an operand: `or !"0`.
    unary: bool,
    /// Parentheses that hold constants joined by logic: `(1 or true)`.
    constant_logic: bool,
}

/// Parses `op operand (op operand)*` from `t[k]` (the first operator) and returns what it
/// holds, or `None` when the tokens are not a valid continuation of an SQL expression. The
/// expression must end the input or be followed by `;`, `)` or a clause keyword.
fn expression(t: &[Kind], k: usize) -> Option<Tail> {
    let mut tail = Tail::default();
    let mut j = k;
    let mut last_operand = None;
    loop {
        // An operator (or the clause keyword that starts the expression).
        if negated_operator(t, j) {
            j += 1;
        }
        match t.get(j) {
            None if j > k => break,
            Some(Kind::Cmp) => {
                tail.comparison = true;
                j += 1;
            }
            Some(Kind::Word(Kw::Is)) => {
                // `IS [NOT] NULL|TRUE|FALSE` and nothing else.
                let mut n = j + 1;
                if t.get(n) == Some(&Kind::Word(Kw::Not)) {
                    n += 1;
                }
                // MySQL reads `is 0` too, as `is false`.
                if !matches!(t.get(n), Some(Kind::Word(Kw::Null | Kw::Bool) | Kind::Num)) {
                    return None;
                }
                tail.comparison = true;
                j += 1;
            }
            Some(Kind::Word(Kw::Between | Kw::In)) => {
                tail.comparison = true;
                j += 1;
            }
            Some(Kind::Word(Kw::Like)) => {
                // LIKE compares, but `"x" LIKE "y"` is also how people quote a word.
                tail.comparison |= t[..j].contains(&Kind::Logic);
                j += 1;
                // `SOUNDS LIKE`
                if t.get(j) == Some(&Kind::Word(Kw::Like)) {
                    j += 1;
                }
            }
            Some(Kind::Logic) => {
                tail.logic = true;
                j += 1;
            }
            // `' or 1=1 –`: a dash (typographic, folded or single) where a comment was meant,
            // ending the value.
            Some(Kind::Other | Kind::Sign) if j > k && j + 1 == t.len() => break,
            Some(Kind::Op | Kind::Sign | Kind::Word(Kw::Where | Kw::Having)) => j += 1,
            Some(
                Kind::Semi
                | Kind::RParen
                | Kind::Word(
                    Kw::Order | Kw::Group | Kw::Limit | Kw::Union | Kw::Into | Kw::Procedure,
                ),
            ) if j > k => break,
            _ => return None,
        }
        while matches!(
            t.get(j),
            Some(Kind::Word(Kw::Not | Kw::Binary) | Kind::Sign)
        ) {
            tail.unary = true;
            j += 1;
        }
        // An operand.
        let operand = *t.get(j)?;
        // What the operand is for the comparison: `(3)` is the number 3.
        let mut value = operand;
        match operand {
            Kind::Str { closed: false } => {
                if j + 1 != t.len() {
                    return None;
                }
                tail.open_string = Some(j);
                j += 1;
            }
            Kind::Num | Kind::Var => {
                tail.numeric_operand = true;
                j += 1;
            }
            Kind::Str { closed: true }
            | Kind::Word(
                Kw::Ident
                | Kw::Null
                | Kw::Bool
                | Kw::Schema
                | Kw::ProbeFn
                | Kw::InfoFn
                | Kw::CharFn
                | Kw::DangerousFn,
            ) => {
                if matches!(operand, Kind::Word(Kw::Null | Kw::Bool)) {
                    tail.numeric_operand = true;
                }
                j += 1;
                while t.get(j) == Some(&Kind::Dot) && matches!(t.get(j + 1), Some(Kind::Word(_))) {
                    j += 2;
                }
                if matches!(operand, Kind::Str { .. }) {
                    // `'a' 'b'`: adjacent strings are one string in MySQL.
                    while let Some(&Kind::Str { closed }) = t.get(j) {
                        if !closed {
                            if j + 1 != t.len() {
                                return None;
                            }
                            tail.open_string = Some(j);
                        }
                        tail.operands += 1;
                        j += 1;
                    }
                }
            }
            Kind::Func(_) | Kind::LParen => {
                if operand == Kind::LParen
                    && matches!(
                        t.get(j + 1),
                        Some(Kind::Word(Kw::Select) | Kind::Func(Kw::Select))
                    )
                {
                    tail.subquery = true;
                }
                tail.call |= matches!(operand, Kind::Func(_));
                tail.sql_call |= matches!(operand, Kind::Func(kw) if kw != Kw::Ident);
                let open = if operand == Kind::LParen { j } else { j + 1 };
                let close = skip_parens(t, open);
                // What the parentheses hold counts too: `' or ('a'='a`.
                let inner = &t[open.min(close)..close];
                tail.comparison |= inner.contains(&Kind::Cmp);
                tail.call |= inner.iter().any(|k| matches!(k, Kind::Func(_)));
                let signed = usize::from(t.get(open + 1) == Some(&Kind::Sign));
                if operand == Kind::LParen
                    && close == open + 3 + signed
                    && is_literal(t[open + 1 + signed])
                {
                    value = t[open + 1 + signed];
                    tail.numeric_operand |= !matches!(value, Kind::Str { .. });
                }
                if operand == Kind::LParen && close > open + 1 {
                    let held = &t[open + 1..close - 1];
                    tail.constant_logic |= held.contains(&Kind::Logic)
                        && held.iter().all(|&k| {
                            is_literal(k) && !matches!(k, Kind::Str { .. })
                                || matches!(k, Kind::Logic | Kind::Cmp | Kind::Sign)
                        });
                }
                j = close;
            }
            _ => return None,
        }
        if let Some(prev) = last_operand
            && tail.comparison
            && is_literal(prev)
            && is_literal(value)
        {
            tail.literal_comparison = true;
        }
        last_operand = Some(value);
        tail.operands += 1;
    }
    tail.end = j;
    Some(tail)
}

/// What a whole-value expression holds.
#[derive(Default)]
struct ExpressionShape {
    operator: bool,
    call: bool,
    string: bool,
    /// A number, variable, NULL or boolean.
    literal: bool,
    /// A column or other name.
    name: bool,
}

/// A recursive-descent reading of tokens as one SQL expression: operands (numbers, strings,
/// variables, names, calls, parenthesized expressions, sub-queries) joined by binary operators.
/// Depth is bounded and every token is read once, so the cost is linear.
struct WholeExpression<'a> {
    t: &'a [Kind],
}

const MAX_EXPRESSION_DEPTH: usize = 32;

impl WholeExpression<'_> {
    /// The index after the expression that starts at `i`.
    fn expression(&self, i: usize, depth: usize, shape: &mut ExpressionShape) -> Option<usize> {
        let mut i = self.operand(i, depth, shape)?;
        while let Some(&kind) = self.t.get(i) {
            if !is_binary_operator(kind) {
                break;
            }
            shape.operator = true;
            i = self.operand(i + 1, depth, shape)?;
        }
        Some(i)
    }

    fn operand(&self, mut i: usize, depth: usize, shape: &mut ExpressionShape) -> Option<usize> {
        if depth > MAX_EXPRESSION_DEPTH {
            return None;
        }
        // Unary operators, and MySQL's `BINARY` cast.
        while matches!(self.t.get(i), Some(Kind::Sign | Kind::Word(Kw::Not)))
            || self.t.get(i) == Some(&Kind::Word(Kw::Binary))
                && self.t.get(i + 1).is_some_and(|k| *k != Kind::Comma)
        {
            i += 1;
        }
        match *self.t.get(i)? {
            Kind::Num | Kind::Var | Kind::Word(Kw::Null | Kw::Bool) => {
                shape.literal = true;
                Some(i + 1)
            }
            Kind::Word(Kw::Ident) => {
                shape.name = true;
                Some(i + 1)
            }
            Kind::Word(Kw::Case) => self.case(i, depth, shape),
            // A scalar sub-query inside parentheses: `binary(select 'b')`.
            Kind::Word(Kw::Select) if i > 0 && self.t[i - 1] == Kind::LParen => {
                shape.call = true;
                self.expression(i + 1, depth + 1, shape)
            }
            Kind::Str { closed: true } => {
                shape.string = true;
                Some(i + 1)
            }
            Kind::Func(_) => {
                shape.call = true;
                if self.t.get(i + 1) != Some(&Kind::LParen) {
                    return None;
                }
                self.arguments(i + 2, depth, shape)
            }
            Kind::LParen => {
                if matches!(
                    self.t.get(i + 1),
                    Some(Kind::Word(Kw::Select) | Kind::Func(Kw::Select))
                ) {
                    shape.call = true;
                    let end = skip_parens(self.t, i);
                    return (self.t.get(end - 1) == Some(&Kind::RParen)).then_some(end);
                }
                let end = self.expression(i + 1, depth + 1, shape)?;
                (self.t.get(end) == Some(&Kind::RParen)).then_some(end + 1)
            }
            _ => None,
        }
    }

    /// `CASE [x] WHEN a THEN b [WHEN ...] [ELSE c] END` from its `CASE`.
    fn case(&self, i: usize, depth: usize, shape: &mut ExpressionShape) -> Option<usize> {
        let mut j = i + 1;
        if self.t.get(j) != Some(&Kind::Word(Kw::When)) {
            j = self.expression(j, depth + 1, shape)?;
        }
        let mut arms = 0;
        while self.t.get(j) == Some(&Kind::Word(Kw::When)) {
            j = self.expression(j + 1, depth + 1, shape)?;
            if self.t.get(j) != Some(&Kind::Word(Kw::Then)) {
                return None;
            }
            j = self.expression(j + 1, depth + 1, shape)?;
            arms += 1;
        }
        if arms == 0 {
            return None;
        }
        if self.t.get(j) == Some(&Kind::Word(Kw::Else)) {
            j = self.expression(j + 1, depth + 1, shape)?;
        }
        (self.t.get(j) == Some(&Kind::Word(Kw::End))).then_some(j + 1)
    }

    /// A call's arguments from after its `(`: nothing, or expressions separated by commas.
    fn arguments(&self, i: usize, depth: usize, shape: &mut ExpressionShape) -> Option<usize> {
        if self.t.get(i) == Some(&Kind::RParen) {
            return Some(i + 1);
        }
        let mut i = self.expression(i, depth + 1, shape)?;
        while self.t.get(i) == Some(&Kind::Comma) {
            i = self.expression(i + 1, depth + 1, shape)?;
        }
        (self.t.get(i) == Some(&Kind::RParen)).then_some(i + 1)
    }
}

/// From a `(`, the index after its matching `)` (or the end).
fn skip_parens(t: &[Kind], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, kind) in t.iter().enumerate().skip(open) {
        match kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    t.len()
}

/// A comment of nothing but its markers, spaces and quotes, or one that only hides the query
/// from the log (`-- sp_password`).
fn comment_is_empty(text: &[u8]) -> bool {
    let body = text
        .strip_prefix(b"--")
        .or_else(|| text.strip_prefix(b"/*"))
        .or_else(|| text.strip_prefix(b"#"))
        .unwrap_or(text);
    let body = body.strip_suffix(b"*/").unwrap_or(body);
    // Quotes only (`1/*'*/`): a quote a filter sees and the database does not.
    body.iter()
        .all(|b| is_space(*b) || matches!(b, b'\'' | b'"' | b'`'))
        || crate::find(body, b"sp_password").is_some()
}

/// `--` and `#` cut the line when followed by a space or nothing; `/*` always opens a comment.
fn comment_is_terminator(view: &str, token: &Token) -> bool {
    let text = &view.as_bytes()[token.start..token.end];
    if text.starts_with(b"/*") {
        return true;
    }
    if text.starts_with(b"--") {
        return text
            .get(2)
            .is_none_or(|b| is_space(*b) || matches!(b, b'-' | b'#' | b'\''))
            || text[2..].starts_with(b"sp_password");
    }
    // `#` comments in MySQL only; prose uses `#` too, so only a `#` that ends the line counts.
    text.get(1)
        .is_none_or(|b| matches!(b, b'\n' | b'\r' | b'#' | b'-'))
}

/// `select` followed by what only a query has: a function, a number, `*`, a variable, a
/// sub-expression, or a column list and a `from` with a table.
fn select_is_sql(t: &[Kind], i: usize) -> bool {
    let mut j = i + 1;
    while matches!(t.get(j), Some(Kind::Word(Kw::All | Kw::Distinct))) {
        j += 1;
    }
    if t.get(j) == Some(&Kind::Word(Kw::Top)) {
        j += 2;
    }
    match t.get(j) {
        Some(
            Kind::Func(_)
            | Kind::Num
            | Kind::Var
            | Kind::LParen
            | Kind::Word(Kw::Null | Kw::Schema | Kw::Case),
        ) => true,
        Some(Kind::Str { .. }) => matches!(
            t.get(j + 1),
            Some(Kind::Comma | Kind::Logic | Kind::Word(Kw::From | Kw::Union | Kw::Into))
        ),
        // `select *`, `select -1`
        Some(Kind::Op) => true,
        Some(Kind::Sign) => matches!(
            t.get(j + 1),
            Some(Kind::Num | Kind::Str { .. } | Kind::Func(_) | Kind::LParen)
        ),
        Some(Kind::Word(_)) => {
            // A column list: names separated by commas, then `from` and a table name.
            if t.get(j + 1) == Some(&Kind::Dot) {
                return true;
            }
            let Some(mut k) = select_item(t, j) else {
                return garbled_select_list(t, j);
            };
            let mut items = 1;
            while t.get(k) == Some(&Kind::Comma) {
                let Some(next) = select_item(t, k + 1) else {
                    return garbled_select_list(t, j);
                };
                k = next;
                items += 1;
            }
            t.get(k) == Some(&Kind::Word(Kw::From))
                && matches!(t.get(k + 1), Some(Kind::Word(_)))
                && (items > 1
                    || matches!(
                        t.get(k + 2),
                        None | Some(
                            Kind::Word(Kw::Limit | Kw::Order | Kw::Group | Kw::Union)
                                | Kind::Semi
                                | Kind::RParen
                                | Kind::Dot
                                | Kind::Logic
                        )
                    )
                    || t.get(k + 2) == Some(&Kind::Word(Kw::Where)) && t.get(k + 3).is_some())
                || garbled_select_list(t, j)
        }
        _ => false,
    }
}

/// `select a,f(((1)),2 from t where`: a list whose parentheses do not balance, with a number
/// or a call, still followed by `from name where`.
fn garbled_select_list(t: &[Kind], j: usize) -> bool {
    let window = &t[j..t.len().min(j + 32)];
    let Some(from) = window.iter().position(|k| *k == Kind::Word(Kw::From)) else {
        return false;
    };
    let list = &window[..from];
    list.contains(&Kind::Comma)
        && list.iter().any(|k| matches!(k, Kind::Num | Kind::Func(_)))
        && window.get(from + 1) == Some(&Kind::Word(Kw::Ident))
        && window.get(from + 2) == Some(&Kind::Word(Kw::Where))
}

/// One item of a select list from `t[j]`: operands (names, literals, calls, parentheses)
/// joined by arithmetic. The index after it.
fn select_item(t: &[Kind], mut j: usize) -> Option<usize> {
    loop {
        while t.get(j) == Some(&Kind::Sign) {
            j += 1;
        }
        j = match *t.get(j)? {
            Kind::Word(Kw::Ident | Kw::Null | Kw::Bool | Kw::Schema)
            | Kind::Num
            | Kind::Str { .. }
            | Kind::Var => {
                let mut n = j + 1;
                while t.get(n) == Some(&Kind::Dot) && matches!(t.get(n + 1), Some(Kind::Word(_))) {
                    n += 2;
                }
                n
            }
            Kind::Func(_) => skip_parens(t, j + 1),
            Kind::LParen => skip_parens(t, j),
            _ => return None,
        };
        if matches!(t.get(j), Some(Kind::Op | Kind::Sign)) {
            j += 1;
        } else {
            return Some(j);
        }
    }
}

/// A statement after `;` that reads as SQL, not as a sentence.
fn stacked_statement(view: &str, t: &[Kind], pos: &[usize], i: usize) -> bool {
    let Some(&kind) = t.get(i) else { return false };
    let word = &view[pos[i]..];
    match kind {
        Kind::Word(Kw::Select) | Kind::Func(Kw::Select) => select_is_sql(t, i),
        Kind::Word(Kw::Exec) | Kind::Func(Kw::Exec) => {
            matches!(
                t.get(i + 1),
                Some(Kind::Word(Kw::Schema) | Kind::Func(_) | Kind::Var | Kind::LParen)
            ) || kind == Kind::Func(Kw::Exec)
        }
        Kind::Word(Kw::Waitfor) => t.get(i + 1) == Some(&Kind::Word(Kw::Delay)),
        Kind::Word(Kw::Statement) => {
            if word.starts_with("declare") || word.starts_with("set") {
                t.get(i + 1) == Some(&Kind::Var)
                    || matches!(t.get(i + 1), Some(Kind::Word(_)))
                        && t.get(i + 2) == Some(&Kind::Cmp)
            } else if word.starts_with("shutdown")
                || word.starts_with("commit")
                || word.starts_with("rollback")
            {
                matches!(
                    t.get(i + 1),
                    None | Some(Kind::Semi | Kind::Word(Kw::Ident))
                ) && t.get(i + 2).is_none()
            } else if word.starts_with("begin") {
                matches!(t.get(i + 1), Some(Kind::Word(Kw::Statement)))
            } else if word.starts_with("load") {
                // `load data infile`, `load xml local infile`
                (i + 1..t.len().min(i + 5)).any(|j| word_at(view, pos[j]) == "infile")
            } else if word.starts_with("call") {
                matches!(t.get(i + 1), Some(Kind::Func(_)))
            } else if word.starts_with("drop") || word.starts_with("truncate") {
                // `; drop users --`: a name and the end of the statement.
                matches!(t.get(i + 1), Some(Kind::Word(Kw::Ident)))
                    && matches!(t.get(i + 2), None | Some(Kind::Semi))
                    || data_statement(view, t, pos, i, StatementAt::AfterBreak)
            } else {
                data_statement(view, t, pos, i, StatementAt::AfterBreak)
            }
        }
        // `; do (1=1)`
        Kind::Func(Kw::Ident) => word_at(view, pos[i]) == "do",
        // `; if 1=1 shutdown`, `; while 1=1 ...`, `; if exists (`
        Kind::Word(Kw::ProbeFn | Kw::Ident) if matches!(word_at(view, pos[i]), "if" | "while") => {
            matches!(t.get(i + 1), Some(Kind::Num | Kind::Word(Kw::Not)))
                && t.get(i + 2) == Some(&Kind::Cmp)
                || matches!(t.get(i + 1), Some(Kind::Func(Kw::Ident)))
                    && word_at(view, pos[i + 1]) == "exists"
        }
        _ => false,
    }
}

/// Where a data statement stands.
#[derive(Clone, Copy)]
enum StatementAt {
    /// After a `;` or a string breakout: its words are enough.
    AfterBreak,
    /// Anywhere else, where words alone (`create user account`, `delete from cart`) are
    /// prose: it must show SQL's own syntax (a value list, `set c =`, a `where` condition, an
    /// ending `;`, or a comment that cuts the query after it).
    Standalone { ends_in_comment: bool },
}

/// `insert into t values`, `update t set c=`, `delete from t`, `drop table t`.
fn data_statement(view: &str, t: &[Kind], pos: &[usize], i: usize, at: StatementAt) -> bool {
    let word = &view[pos[i]..];
    let next = t.get(i + 1);
    let after = t.get(i + 2);
    let strict = matches!(at, StatementAt::Standalone { .. });
    let cut = matches!(
        at,
        StatementAt::Standalone {
            ends_in_comment: true
        }
    );
    let ended = |j: usize| t.get(j) == Some(&Kind::Semi) || cut && t.get(j).is_none();
    if word.starts_with("insert") {
        next == Some(&Kind::Word(Kw::Into))
            && matches!(after, Some(Kind::Word(_) | Kind::Func(_)))
            && (!strict
                || matches!(t.get(i + 3), Some(Kind::LParen | Kind::Word(Kw::Select)))
                || t.get(i + 3).is_some() && word_at(view, pos[i + 3]) == "values")
    } else if word.starts_with("update") {
        matches!(next, Some(Kind::Word(_)))
            && after == Some(&Kind::Word(Kw::Statement))
            && t.get(i + 3).is_some()
            && view[pos[i + 2]..].starts_with("set")
            && (!strict || t.get(i + 4) == Some(&Kind::Cmp))
    } else if word.starts_with("backup") {
        // `backup database master to disk='\\host\share\x.bak'`
        matches!(next, Some(Kind::Word(_)))
            && matches!(word_at(view, pos[i + 1]), "database" | "log")
            && matches!(after, Some(Kind::Word(_)))
            && t.get(i + 3)
                .is_some_and(|_| matches!(word_at(view, pos[i + 3]), "to"))
            && (!strict || t.get(i + 5) == Some(&Kind::Cmp))
    } else if word.starts_with("grant") || word.starts_with("revoke") {
        // `grant connect to name`, `revoke all on t from u`; standalone, `grant x on t to u`.
        let has = |w: &str| (i + 2..t.len().min(i + 6)).any(|j| word_at(view, pos[j]) == w);
        matches!(next, Some(Kind::Word(_)))
            && if strict {
                has("on") && (has("to") || has("from"))
            } else {
                has("to") || has("on") || has("from")
            }
    } else if word.starts_with("delete") {
        // `delete low_priority quick ignore from t`
        let mut j = i + 1;
        while j < i + 4
            && t.get(j) == Some(&Kind::Word(Kw::Ident))
            && ["low_priority", "quick", "ignore"].contains(&word_at(view, pos[j]))
        {
            j += 1;
        }
        t.get(j) == Some(&Kind::Word(Kw::From))
            && matches!(t.get(j + 1), Some(Kind::Word(_)))
            && if strict {
                // `delete from t where a=1`
                t.get(j + 2) == Some(&Kind::Word(Kw::Where)) && t[j + 3..].contains(&Kind::Cmp)
                    || ended(j + 2)
            } else {
                matches!(
                    t.get(j + 2),
                    None | Some(Kind::Word(Kw::Where) | Kind::Semi)
                )
            }
    } else if word.starts_with("drop")
        || word.starts_with("truncate")
        || word.starts_with("alter")
        || word.starts_with("create")
    {
        matches!(next, Some(Kind::Word(_)))
            && {
                let object = &view[pos[i + 1]..];
                [
                    "table",
                    "database",
                    "user",
                    "procedure",
                    "function",
                    "view",
                    "schema",
                    "index",
                    "trigger",
                ]
                .iter()
                .any(|o| object.starts_with(o))
            }
            && matches!(after, Some(Kind::Word(_) | Kind::Func(_)))
            && (!strict || ended(i + 3) || matches!(after, Some(Kind::Func(_))))
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::families;

    fn sqli(input: &str) -> bool {
        families(input, 1).contains(&"sqli")
    }

    #[test]
    fn every_keyword_is_found_as_what_it_is_and_other_words_are_names() {
        for (kw, list) in KEYWORDS {
            for word in *list {
                assert_eq!(keyword(word), *kw, "{word}");
            }
        }
        for word in [
            "unions",
            "selec",
            "orr",
            "a",
            "x86_64",
            "mozilla",
            "information",
        ] {
            assert_eq!(keyword(word), Kw::Ident, "{word}");
        }
        assert_eq!(keyword("information_schema.columns"), Kw::Schema);
    }

    /// Whether the bare reading of a view finds anything, asked without the gate.
    fn bare_findings(view: &str) -> bool {
        let mut hits = Hits::default();
        let mut scratch = Scratch::default();
        for nested in [false, true] {
            tokenize(view, 0, nested, &mut scratch.tokens);
            analyse(view, Context::Bare, &mut hits, &mut scratch);
        }
        !hits.is_empty()
    }

    /// The gate with what it knows of a view in the scan: the literal search's answer on
    /// `searched`, the base view, also for the view with `+` read as a space. Where the scan
    /// would have no answer, this one is stricter than the scan's "anything may occur".
    fn gate_with(view: &str, searched: &str) -> bool {
        bare_may_say_sql(view, Shape::of(view), Found::of(searched.as_bytes()))
    }

    fn gate(view: &str) -> bool {
        gate_with(view, view)
    }

    /// The gate may let through views the analysis finds clean, never skip one it flags.
    fn gate_admits(view: &str, searched: &str) -> bool {
        !bare_findings(view) || gate_with(view, searched)
    }

    #[test]
    fn the_bare_gate_admits_every_bare_finding_in_the_shared_corpus() {
        let mut lowered = String::new();
        let mut flagged = 0;
        for payload in crate::eval::shared_corpus_payloads() {
            // The views the SQL check reads: the base view (decoded, lower-cased), and the
            // same with `+` read as a space.
            let (base, _) = crate::decode::base_shaped(&payload, Shape::of(&payload), &mut lowered);
            for view in [base.to_string(), base.replace('+', " ")] {
                assert!(
                    gate_admits(&view, &base),
                    "the gate skips the bare findings of {view:?}"
                );
                flagged += usize::from(bare_findings(&view));
            }
        }
        // Enough findings that the property was put to the test.
        assert!(flagged > 10_000, "{flagged} views with bare findings");
    }

    #[test]
    fn the_bare_gate_admits_each_kind_of_bare_finding() {
        // One for each condition of the gate, each flagged by the bare reading alone.
        for view in [
            "1union select 1,2,3",
            "0xabunion select 1,2",
            "0bunion select 1,2",
            "1e5union select 1,2",
            "/*!50000union*/ select 1,2",
            "1; while 1=1",
            "1; do (1=1)",
            "1 order by 1",
            "1 group by 2--",
            "1-order(1)",
            "1-user()",
            "1 waitfor delay '0:0:5'",
            "null null null",
            "char(65)+char(66)",
            "chr (65)||chr (66)",
            "a(b) c(d) e(f)",
            "\\n \\n \\n",
            "@@version",
            "1 || 1=1",
            "1 && 1=1",
            "1 #",
            "1 --",
            "1 /*",
        ] {
            assert!(bare_findings(view), "{view:?} is flagged bare");
            assert!(gate(view), "{view:?}");
        }
        // The view with `+` read as a space, which the scan gives the base view's literals.
        let (base, spaced) = ("char+(65)-char+(66)", "char (65)-char (66)");
        assert!(bare_findings(spaced) && gate_with(spaced, base));
        for clean in [
            "calle de alcalá 42, 28014 madrid",
            "https://shop.example.com/cart?item=1&qty=2",
            "+34 612 345 678",
            // Weak keywords, two calls, a `;` before a name.
            "mozilla/5.0 (x11; linux x86_64) applewebkit/537.36 (khtml, like gecko) chrome/126.0",
            "this is not as good as it looks in the photo",
            "see (figure 2) in the guide; thanks",
            "a character (in two parts)",
            "order 5 for customer number 35",
            "please group the orders of last week",
            "all the time, every user, to the end: true",
        ] {
            assert!(!gate(clean), "{clean:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Fragments glued with and without spaces, so numbers run into names, names into
        /// quotes and comments into operators.
        #[test]
        fn the_bare_gate_admits_every_bare_finding(parts in proptest::collection::vec(
            proptest::sample::select(&[
                "union", "select", "all", "from", "where", "order", "by", "limit", "into",
                "outfile", "or", "and", "not", "null", "true", "is", "like", "in", "case",
                "when", "then", "else", "end", "if", "while", "do", "between", "as", "rlike",
                "time", "delay", "waitfor", "user", "top", "distinct", "div", "binary", "offset",
                "procedure", "sleep", "exec", "declare",
                "shutdown", "drop", "table", "char", "version", "information_schema.tables",
                "sp_who", "xp_cmdshell", "@@version", "@a", "1", "0x", "ab", "e", "9", "x",
                "'", "\"", "`", " ", " ", "(", ")", ";", ",", ".", "=", "<", ">", "!", "-",
                "+", "*", "/", "|", "&", "#", "--", "/*", "*/", "/*!", "\\n", "\\",
            ][..]), 1..12)) {
            let view = parts.concat();
            proptest::prop_assert!(gate_admits(&view, &view), "{:?}", view);
            let spaced = view.replace('+', " ");
            proptest::prop_assert!(gate_admits(&spaced, &view), "{:?} read as {:?}", view, spaced);
        }
    }

    /// Every sentence of up to three words, each the first word of a kind of keyword, a
    /// name, or a token between them: the sentences of keywords that glued fragments seldom
    /// make (`null null null`, `user ()`, `order by 1`).
    #[test]
    fn the_bare_gate_admits_every_bare_finding_among_three_keywords() {
        let words: Vec<&str> = KEYWORDS
            .iter()
            .filter_map(|(_, words)| words.first().copied())
            .chain([
                "x", "do", "while", "if", "1", "'a'", "(", ")", "()", ",", ";", "=", "-", "--",
                "@v",
            ])
            .collect();
        let mut view = String::new();
        let mut flagged = 0;
        for a in &words {
            for b in std::iter::once(&"").chain(&words) {
                for c in std::iter::once(&"").chain(&words) {
                    view.clear();
                    for word in [a, b, c].into_iter().filter(|w| !w.is_empty()) {
                        view.push_str(word);
                        view.push(' ');
                    }
                    assert!(gate_admits(&view, &view), "the gate skips {view:?}");
                    flagged += usize::from(bare_findings(&view));
                }
            }
        }
        assert!(flagged > 1000, "{flagged} sentences with bare findings");
    }

    #[test]
    fn classic_injections_are_found() {
        for attack in [
            "' or 1=1 --",
            "admin'--",
            "admin' #",
            "1 OR 1=1",
            "-1 UNION SELECT 1,2,3",
            "1' union all select null,null--",
            "x'; DROP TABLE users; --",
            "1; waitfor delay '0:0:5'--",
            "1 AND SLEEP(5)",
            "' and ascii(substring((select version()),1,1))>52 --",
            "1' AND 1=0 UNION SELECT * FROM users",
            "' UNION/**/SELECT password/**/FROM users--",
            "/*!50000union*/ /*!50000select*/ 1,2",
            "1 into outfile '/var/www/shell.php'",
            "'; exec master..xp_cmdshell 'dir'--",
            "' or 'a'='a",
            "\") or (\"1\"=\"1",
            "1 order by 5--",
            "char(65)+char(66)",
            "select @@version",
            "SELECT name FROM users WHERE id=1",
            "'+if(benchmark(3000000,md5(1)),null,null),null)--",
            "1) or pg_sleep(5)--",
            "%27%20OR%201%3D1%20--",
            " ( 1 OR 1 )  --",
            "( BINARY ( 'a' OR 'b') ) --",
            "(cos(1) * 2) #",
            " AS INJECTX WHERE 1=1 AND 1=0--",
        ] {
            assert!(sqli(attack), "missed: {attack}");
        }
    }

    #[test]
    fn fragments_and_probes_are_found() {
        for attack in [
            // An operator between the application's string and a reopened one.
            "x' || 'y",
            "A' OR 'B",
            "A 'OR' B",
            "' or '1 ",
            "abc' div 'd",
            "5' xor '0",
            "k'*col is \\N or '1",
            "'or not true #x",
            "1\"or!\"2",
            "\"+\"",
            // A doubled quote is an escaped one; the breakout comes after it.
            "o''brien' and (select 1)=1--",
            // UNION probes and column lists.
            "-7 union",
            "3/1/**/union",
            "-9 union 1,2,3--",
            "x' union(select pass from accounts)",
            "-5 union all select top 1 name,11,12 from accounts--",
            "-2.5 union select 'marker'--",
            // Information functions, blind extraction, conditions of constants.
            "len(database())",
            "database() like 'a%'",
            "ord(mid(passwd,2,1))",
            "case when 3>2 then 1 else 0 end",
            "foo AND (7)=(7)",
            "2 and 4 not between 1 and 3",
            "floor(pi()) and cos(0)=1",
            "name having (2 or false)",
            "iif(5=6,1,1/0)",
            "9 - ascii('b')",
            // Statements and clauses.
            "7; delete quick from accounts",
            "4;load data infile '/etc/passwd'",
            "9;call proc(@x)",
            "12;drop audit --",
            "'; if 2=2 shutdown--",
            "3;do (2=2)",
            "x' declare @v varchar(10)",
            "1; grant all on db to guest",
            "backup database prod to disk='\\\\h\\s\\x.bak'",
            "2 into outfile('/tmp/x')",
            "1 order by ifnull(0,id)",
            "8,9 order by 3",
            "(select login-1 from accounts limit 2,1)",
            "select a,cos(b),3 from t where",
            "select a,cos(((b)),3 from t where",
            "4) from accounts where login=",
            "'9' or '9'='9",
            ") or ('a'='a",
            // Comments that cut the query, typeset dashes, versioned comments.
            "77--",
            "@@hostname /*",
            "17;-- ",
            "' or 2=2 \u{2013}",
            "8 /*!12345 or 1 */",
            // Probes for a query error.
            "'",
            "7'",
            "\"",
            "and 1",
            "5 version() limit 1,1",
            "x or 2=(select system_user)",
            "1\u{fffd}union\u{fffd}select\u{fffd}2--",
            "ab'rlike binary 0#x",
            "14 or (1) group by x",
            "7/*'*/",
            "x' eqv strcomp(name, 'a') imp 'b",
            // A number with an empty exponent, which MySQL reads as nothing.
            "1' or 1.e(1) or '1'='1",
            // Nested comments, as PostgreSQL reads them.
            "1/* /*/ */ */ or 1=1-",
            "1/* /* / */ */ or 1=1-",
            // A user variable with a quoted name.
            "1\"OR@\"1\" IS NULL #1",
            "1'; anything: goto anything -- -a",
            // Adjacent strings, which MySQL joins.
            "0' '1' like (0) and 1 sounds like a or true#1",
            "' or \"",
            "1/*!1111'*/",
            "/*!union*/select 1",
            "select current_user;",
            "select session_user",
        ] {
            assert!(sqli(attack), "missed: {attack}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for benign in [
            "O'Brien",
            // A word quoted in a sentence: the reopened "string" is the rest of the sentence.
            "the 'or' operator returns true when either side is true",
            "Use 'and' or 'or' to combine conditions",
            "Rock 'n' roll",
            "Select the best option from the list",
            "union members select a new leader",
            "best union select of running shoes",
            "Tom & Jerry",
            "cats and dogs",
            "\"SWEATER DRESS\" AND \"CHRISTMAS\"",
            "it's 5 o'clock -- time for tea",
            "(select all that apply)",
            "drop me a line",
            "price: 10-20",
            "a=1&b=2",
            "https://example.com/search?q=select+from&page=2",
            "1 or 2 items",
            "'#hashtag",
            "Mary's and John's",
            "update your profile settings",
            "1611/IioXXIG1ti8rspL2vbXFy--",
            "(see below) --",
            "(note) --",
            "Thanks -- M.",
            "as requested, where possible",
            "O''Brien",
            "Local 705 union",
            "\"like\" stamp",
            "SMALL \"&\" SIGN",
            "in case when needed",
            "1 or 2",
            "the version() call in node",
            "Save() and Exit()",
            "/*! jQuery v3.7 */",
            "12 inch",
            "'#hashtag and more",
            "1 or 2 groups",
            "dual band router",
            "5 -- :)",
            "the imp of the perverse",
            "create user account",
            "delete from cart",
            "insert into basket",
            "grant access to team",
            "alter table settings",
            "Delivery took 2-3 days; -- great service",
            "items; # of units",
            "section 1.e(2) of the contract, and 1.e) below",
            "notes /* see /* inner */ here */ or later",
            "email me @\"work\" or at home",
            "it's; fine -- thanks",
            "the 'a' 'b' and 'c' keys",
            "\"and\"",
            "/*! normalize.css v8.0.1 | MIT License */",
            "select user from the list",
        ] {
            assert!(!sqli(benign), "false positive: {benign}");
        }
    }
}
