//! The rule table: every finding names one of these rules.
//!
//! Scores follow the OWASP CRS anomaly model (critical 5, error 4, warning 3, notice 2): a
//! request is refused when the sum of its findings reaches the route's threshold (default 5),
//! so one critical finding blocks and weaker signals block only together. Each rule belongs to
//! a paranoia level; a route at level N evaluates the rules of levels 1..=N.

use serde::{Deserialize, Serialize};

/// What kind of attack a rule detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Sqli,
    Xss,
    Cmdi,
    Traversal,
    Lfi,
    Ssti,
    Nosqli,
    Ldapi,
    Xxe,
    Log4shell,
    Crlf,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Sqli => "sqli",
            Family::Xss => "xss",
            Family::Cmdi => "cmdi",
            Family::Traversal => "traversal",
            Family::Lfi => "lfi",
            Family::Ssti => "ssti",
            Family::Nosqli => "nosqli",
            Family::Ldapi => "ldapi",
            Family::Xxe => "xxe",
            Family::Log4shell => "log4shell",
            Family::Crlf => "crlf",
        }
    }
}

/// One detection rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub name: &'static str,
    pub family: Family,
    pub score: u8,
    pub paranoia: u8,
}

macro_rules! rules {
    ($($ident:ident = $id:literal, $name:literal, $family:ident, $score:literal, $pl:literal;)*) => {
        $(pub static $ident: Rule = Rule {
            id: $id,
            name: $name,
            family: Family::$family,
            score: $score,
            paranoia: $pl,
        };)*
        /// Every rule, in id order.
        pub static ALL: &[&Rule] = &[$(&$ident),*];
    };
}

rules! {
    SQLI_UNION = 2101, "sqli-union-select", Sqli, 5, 1;
    SQLI_STACKED = 2102, "sqli-stacked-query", Sqli, 5, 1;
    SQLI_TIME = 2103, "sqli-time-blind", Sqli, 5, 1;
    SQLI_FILE = 2104, "sqli-file-access", Sqli, 5, 1;
    SQLI_BREAKOUT_EXPR = 2105, "sqli-string-breakout-expression", Sqli, 5, 1;
    SQLI_BREAKOUT_COMMENT = 2106, "sqli-string-breakout-comment", Sqli, 5, 1;
    SQLI_BREAKOUT_CLAUSE = 2107, "sqli-breakout-clause", Sqli, 5, 1;
    SQLI_TAUTOLOGY = 2108, "sqli-boolean-tautology", Sqli, 5, 1;
    SQLI_SELECT = 2109, "sqli-select-statement", Sqli, 5, 1;
    SQLI_DANGEROUS_FN = 2110, "sqli-dangerous-function", Sqli, 5, 1;
    SQLI_SCHEMA = 2111, "sqli-schema-probe", Sqli, 5, 1;
    SQLI_PROC = 2112, "sqli-stored-procedure", Sqli, 5, 1;
    SQLI_CHAR_CONCAT = 2113, "sqli-char-concatenation", Sqli, 5, 1;
    SQLI_BOOLEAN_FN = 2114, "sqli-boolean-blind-function", Sqli, 5, 1;
    SQLI_STATEMENT = 2115, "sqli-data-statement", Sqli, 5, 1;
    SQLI_COMMENTED_EXPRESSION = 2116, "sqli-commented-expression", Sqli, 5, 1;
    SQLI_QUOTE_PROBE = 2117, "sqli-quote-probe", Sqli, 5, 1;
    SQLI_VERSIONED_COMMENT = 2118, "sqli-mysql-versioned-comment", Sqli, 5, 1;
    SQLI_BREAKOUT_OPERATOR = 2201, "sqli-string-breakout-operator", Sqli, 3, 2;
    SQLI_KEYWORD_DENSITY = 2202, "sqli-keyword-density", Sqli, 3, 2;
    SQLI_NUMERIC_LOGIC = 2203, "sqli-numeric-logic", Sqli, 3, 2;

    XSS_SCRIPT_TAG = 3101, "xss-dangerous-tag", Xss, 5, 1;
    XSS_EVENT_HANDLER = 3102, "xss-event-handler", Xss, 5, 1;
    XSS_SCRIPT_URL = 3103, "xss-script-url", Xss, 5, 1;
    XSS_STYLE_SCRIPT = 3104, "xss-style-script", Xss, 5, 1;
    XSS_ATTRIBUTE_BREAKOUT = 3105, "xss-attribute-breakout", Xss, 5, 1;
    XSS_JS_SINK = 3106, "xss-javascript-sink", Xss, 3, 1;
    XSS_JS_CALL = 3107, "xss-javascript-probe-call", Xss, 5, 1;
    XSS_RAWTEXT_BREAKOUT = 3108, "xss-raw-text-breakout", Xss, 5, 1;
    XSS_STYLE_INJECTION = 3109, "xss-style-injection", Xss, 5, 1;
    XSS_URL_MARKUP = 3110, "xss-markup-in-url", Xss, 5, 1;
    XSS_HTML_TAG = 3201, "xss-html-tag", Xss, 3, 2;
    XSS_HTML_COMMENT = 3202, "xss-html-comment-or-cdata", Xss, 3, 2;

    CMDI_CHAINED = 4101, "cmdi-chained-command", Cmdi, 5, 1;
    CMDI_SUBSTITUTION = 4102, "cmdi-command-substitution", Cmdi, 5, 1;
    CMDI_SHELL_PATH = 4103, "cmdi-shell-path", Cmdi, 5, 1;
    CMDI_SHELLSHOCK = 4104, "cmdi-shellshock", Cmdi, 5, 1;
    CMDI_SSI = 4105, "cmdi-server-side-include", Cmdi, 5, 1;
    CMDI_COMMAND_LINE = 4106, "cmdi-command-line", Cmdi, 5, 1;
    CMDI_CODE_EXEC = 4107, "cmdi-code-execution-call", Cmdi, 5, 1;
    CMDI_BARE_COMMAND = 4201, "cmdi-bare-command", Cmdi, 3, 2;

    TRAVERSAL_DOTDOT = 5101, "traversal-dot-dot-segment", Traversal, 5, 1;
    LFI_OS_FILE = 5102, "lfi-sensitive-file", Lfi, 5, 1;
    LFI_WRAPPER = 5103, "lfi-stream-wrapper", Lfi, 5, 1;
    LFI_NULL_BYTE = 5104, "lfi-null-byte-truncation", Lfi, 5, 1;
    LFI_SYSTEM_DIR = 5201, "lfi-system-directory", Lfi, 3, 2;

    SSTI_EXPRESSION = 6101, "ssti-template-expression", Ssti, 5, 1;
    NOSQLI_OPERATOR = 7101, "nosqli-query-operator", Nosqli, 5, 1;
    NOSQLI_JS = 7102, "nosqli-javascript-injection", Nosqli, 5, 1;
    LDAPI_FILTER = 8101, "ldapi-filter-injection", Ldapi, 5, 1;
    XXE_DOCTYPE = 9101, "xxe-doctype-entity", Xxe, 5, 1;
    XXE_XML_DECL = 9201, "xxe-xml-declaration", Xxe, 3, 2;
    LOG4SHELL_LOOKUP = 10101, "log4shell-jndi-lookup", Log4shell, 5, 1;
    CRLF_HEADER = 11101, "crlf-header-injection", Crlf, 5, 1;
}

/// The rule with this id, if there is one.
pub fn by_id(id: u32) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sorted_and_levels_valid() {
        for pair in ALL.windows(2) {
            assert!(
                pair[0].id < pair[1].id,
                "{} before {}",
                pair[0].id,
                pair[1].id
            );
        }
        for r in ALL {
            assert!((1..=4).contains(&r.paranoia), "{}", r.name);
            assert!((1..=5).contains(&r.score), "{}", r.name);
        }
        assert_eq!(by_id(2101).map(|r| r.name), Some("sqli-union-select"));
        assert!(by_id(1).is_none());
    }
}
