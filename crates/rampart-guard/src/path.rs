//! Path traversal and local file inclusion, on the path view (URL and overlong decoding done,
//! backslashes read as separators).

use std::cell::OnceCell;
use std::sync::LazyLock;

use crate::View;
use crate::literals::{Found, List};
use crate::rules;
use crate::shape::Shape;
use crate::{Hits, Patterns};

static SENSITIVE: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(SENSITIVE_FILES));
static WRAPPER: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(WRAPPERS));
static SYSTEM_DIR: LazyLock<Patterns> = LazyLock::new(|| Patterns::new(SYSTEM_DIRS));

/// Files and places whose name in a parameter only makes sense as an attempt to read them.
pub(crate) const SENSITIVE_FILES: &[&str] = &[
    "etc/passwd",
    "etc/shadow",
    "etc/group",
    "etc/hosts",
    "etc/issue",
    "etc/motd",
    "etc/sudoers",
    "etc/crontab",
    "etc/fstab",
    "etc/profile",
    "etc/bashrc",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/mysql/",
    "etc/httpd/",
    "etc/apache",
    "etc/nginx/",
    "etc/php",
    "etc/ssh/",
    "etc/security/",
    "etc/master.passwd",
    "etc/inetd.conf",
    "etc/syslog.conf",
    "etc/my.cnf",
    "etc/redis",
    "etc/ld.so",
    "proc/self/",
    "proc/version",
    "proc/cmdline",
    "proc/mounts",
    "proc/net/",
    "proc/sched_debug",
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/1/",
    "var/log/",
    "var/mail/",
    "var/spool/",
    "var/www/",
    "var/lib/mysql",
    "usr/local/apache",
    "usr/local/etc/",
    "/root/",
    ".bash_history",
    ".bash_profile",
    ".bashrc",
    ".zsh_history",
    ".mysql_history",
    ".ssh/",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "authorized_keys",
    "known_hosts",
    ".htaccess",
    ".htpasswd",
    ".git/",
    ".svn/",
    ".env",
    ".aws/credentials",
    ".docker/config",
    "boot.ini",
    "win.ini",
    "system.ini",
    "windows/system32",
    "windows/repair",
    "winnt/",
    "repair/sam",
    "system32/config",
    "inetpub/",
    "autoexec.bat",
    "config.sys",
    "pagefile.sys",
    "web.config",
    "web-inf/",
    "meta-inf/",
    "wp-config",
    "config.inc.php",
    "configuration.php",
    "localsettings.php",
    "settings.php",
    "php.ini",
    "my.ini",
    "httpd.conf",
    "httpd.ini",
    "apache2.conf",
    "nginx.conf",
    "applicationhost.config",
    "sam.log",
    "access.log",
    "access_log",
    "error.log",
    "error_log",
    "desktop.ini",
    "/dev/null",
    "/dev/random",
    "/dev/zero",
    "/dev/fd/",
    "/dev/stdin",
    "etc/init.d",
    "usr/local/lib/php",
    "phpinfo",
    "install.php",
    "server-status",
    "sites-available",
    "sites-enabled",
    "lighttpd.conf",
    "tomcat-users.xml",
    "server.xml",
    "catalina",
    "xampp/",
    "apache/logs",
    "apache/conf",
    "program files",
    "documents and settings",
    "windows/win",
    "winnt/win",
    "system32/drivers",
    "etc/shells",
    "etc/environment",
    "etc/sysconfig",
    "logs/access",
    "logs/error",
];

/// Stream wrappers and schemes that make an include read or run something else.
pub(crate) const WRAPPERS: &[&str] = &[
    "php://",
    "file://",
    "expect://",
    "zip://",
    "phar://",
    "data://",
    "glob://",
    "zlib://",
    "compress.zlib://",
    "compress.bzip2://",
    "ogg://",
    "rar://",
    "ssh2.",
    "jar:",
    "netdoc:",
    "gopher://",
    "dict://",
    "ldap://",
    "tftp://",
    // Pieces of PHP filter chains (`php://filter/convert.iconv.UTF8.CSISO2022KR|...`).
    "convert.iconv.",
    "convert.base64-",
    "convert.quoted-printable",
    "string.rot13",
    "zlib.deflate",
    "zlib.inflate",
    "/resource=",
];

/// Absolute paths into system directories: a value that starts with `/` and one of these
/// (alone, or followed by `/`) is a file name the application was never meant to open.
/// Users' homes and `/tmp` are not among them: files people name there are their own (the
/// sensitive ones, `.ssh/`, `.bash_history`, are names of their own).
const SYSTEM_ROOTS: &[&str] = &[
    "etc", "proc", "var", "usr", "sys", "root", "boot", "dev", "opt", "srv", "private", "library",
    "system", "bin", "sbin", "lib",
];

/// Whether a value names a system root or a path inside one: `/etc`, `/etc/…`. Only the
/// first segment is compared, once against each root.
fn in_system_root(value: &str) -> bool {
    let Some(rest) = value.strip_prefix('/') else {
        return false;
    };
    // `/` is ASCII: a byte search finds it with less work than a character search.
    let first = rest
        .bytes()
        .position(|b| b == b'/')
        .map_or(rest, |at| &rest[..at]);
    SYSTEM_ROOTS.contains(&first)
}

/// System directories and drive roots anywhere in a value.
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "/etc/",
    "/proc/",
    "/var/",
    "/usr/",
    "/sys/",
    "/dev/",
    "/tmp/",
    "/opt/",
    "c:/",
    "/windows/",
    "/winnt/",
];

/// `raw` is the value before the decoding pipeline, of shape `raw_shape`: repeated decoding
/// can also destroy a name (`%%35%%63boot.ini` decodes on to `%cboot.ini`, then to a byte and
/// `oot.ini`).
pub(crate) fn scan(input: View<'_>, raw: &str, raw_shape: Shape, hits: &mut Hits) {
    let (view, shape, found) = (input.text, input.shape, input.found);
    let bytes = view.as_bytes();
    let raw_escapes = raw_shape.has(b'%');
    // A NUL byte has no place in text; C code below the application stops reading at it.
    if raw_shape.any(Shape::CONTROL) && raw.contains('\0')
        || raw_escapes && (raw.contains("%00") || raw.contains("%2500"))
    {
        hits.add(&rules::LFI_NULL_BYTE, view, 0);
    }
    let hex = shape.any(Shape::DIGIT)
        && shape.any(Shape::LETTER_X)
        && found.has(List::HexPrefix)
        && crate::find(bytes, b"0x").is_some();
    if !hex && !shape.any(const { Shape::bytes(b"./:%?") }.with(Shape::NON_ASCII)) {
        return;
    }
    // The view with encoding debris read as separators, built at most once and only when the
    // plain view shows nothing. Debris never makes dots (but `0x2e` does), nor joins parts of a
    // name: the loose view can show a `..` only where the view has one or a hex spelling, and
    // a sensitive name only where it has the name's longest part.
    let debris = hex
        || shape.any(const { Shape::bytes(b"%?") })
        || shape.any(Shape::NON_ASCII) && view.contains('\u{fffd}');
    let loose = OnceCell::new();
    let loose_view = || {
        loose
            .get_or_init(|| debris.then(|| crate::decode::loose_path(view)).flatten())
            .as_deref()
    };
    let dotdot = shape.has(b'.') && found.has(List::DotDot) && crate::find(bytes, b"..").is_some();
    if dotdot && let Some(pos) = traversal(bytes) {
        hits.add(&rules::TRAVERSAL_DOTDOT, view, pos);
    } else if (hex || dotdot)
        && let Some(loose) = loose_view()
        && let Some(pos) = traversal(loose.as_bytes())
    {
        hits.add(&rules::TRAVERSAL_DOTDOT, loose, pos);
    }
    if found.has(List::SensitiveFile)
        && let Some(pos) = sensitive_file(bytes)
    {
        hits.add(&rules::LFI_OS_FILE, view, pos);
    } else if (hex || found.has(List::SensitiveSegment))
        && let Some(loose) = loose_view()
        && let Some(pos) = sensitive_file_in_other_view(loose.as_bytes())
    {
        hits.add(&rules::LFI_OS_FILE, loose, pos);
    } else if raw_escapes
        && let Some(loose) = crate::decode::loose_path(&raw.to_ascii_lowercase())
        && let Some(pos) = sensitive_file_in_other_view(loose.as_bytes())
    {
        hits.add(&rules::LFI_OS_FILE, &loose, pos);
    }
    if found.has(List::Wrapper)
        && let Some((_, pos)) = WRAPPER
            .find_iter(bytes)
            .find(|(_, pos)| *pos == 0 || !bytes[pos - 1].is_ascii_alphanumeric())
    {
        hits.add(&rules::LFI_WRAPPER, view, pos);
    }
    if !shape.has(b'/') {
        return;
    }
    let trimmed = view.trim_start_matches(['"', '\'', ' ']);
    if in_system_root(trimmed) || windows_drive_path(trimmed) {
        hits.add(&rules::LFI_OS_FILE, view, 0);
    }
    // Absolute paths into system directories and drive roots: weak alone.
    if found.has(List::SystemDir)
        && let Some((_, pos)) = SYSTEM_DIR.find_iter(bytes).find(|(dir, pos)| {
            *pos == 0 || !bytes[pos - 1].is_ascii_alphanumeric() || dir.starts_with('/')
        })
    {
        hits.add(&rules::LFI_SYSTEM_DIR, view, pos);
    }
}

/// `c:/windows/...`, `d:/inetpub`: a drive root and a directory name.
fn windows_drive_path(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() > 4
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && b[2] == b'/'
        && b[3].is_ascii_alphanumeric()
}

fn sensitive_file(bytes: &[u8]) -> Option<usize> {
    SENSITIVE.find_iter(bytes).find_map(|(file, pos)| {
        // A name, not the start of a longer word (`.envelope`), except under `/etc/` and
        // `/proc/` where any file is sensitive.
        let boundary_after = file.ends_with('/')
            || bytes.get(pos + file.len()).is_none_or(|b| {
                !b.is_ascii_alphanumeric() || file.starts_with("etc/") || file.starts_with("proc/")
            });
        boundary_after.then_some(pos)
    })
}

/// In a view the combined literal search has not read: that one pass tells first whether
/// any name occurs, which is cheaper than the search for the leftmost name and its position.
fn sensitive_file_in_other_view(bytes: &[u8]) -> Option<usize> {
    if !Found::of(bytes).has(List::SensitiveFile) {
        return None;
    }
    sensitive_file(bytes)
}

/// A `..` segment that leaves a directory: `../`, `/..` at the end, and the variants servers
/// accept (`....//`, `..;/`, `..%00/`, control characters between the dots and the slash).
fn traversal(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = crate::find(&bytes[from..], b"..") {
        let at = from + off;
        let mut end = at + 2;
        while end < bytes.len() && bytes[end] == b'.' {
            end += 1;
        }
        from = end;
        let starts_segment = at == 0
            || matches!(bytes[at - 1], b'/' | b'=' | b':' | b'\'' | b'"')
            || bytes[at - 1] < 0x20;
        let mut after = end;
        while after < bytes.len()
            && (bytes[after] < 0x20
                || matches!(bytes[after], b';' | b'?' | b'\xef' | b'\xbf' | b'\xbd'))
            && after - end < 6
        {
            after += 1;
        }
        let ends_segment = bytes.get(after) == Some(&b'/');
        let trailing = after == bytes.len() && end == at + 2 && at > 0 && bytes[at - 1] == b'/';
        if (starts_segment && ends_segment)
            || trailing
            || (ends_segment && bytes.get(after + 1) == Some(&b'.'))
        {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::test_support::families;

    fn flagged(input: &str) -> bool {
        let f = families(input, 1);
        f.contains(&"traversal") || f.contains(&"lfi")
    }

    #[test]
    fn a_system_root_is_its_first_segment_alone_or_before_a_slash() {
        for path in [
            "/etc",
            "/etc/",
            "/etc/passwd",
            "/proc/self/environ",
            "/library/x",
        ] {
            assert!(super::in_system_root(path), "{path}");
        }
        for path in [
            "/etcetera",
            "/api/v1/etc",
            "etc/passwd",
            "/",
            "",
            "/tmp/etc",
        ] {
            assert!(!super::in_system_root(path), "{path}");
        }
    }

    #[test]
    fn traversal_and_inclusion_are_found() {
        for attack in [
            "../../../etc/passwd",
            "..\\..\\windows\\win.ini",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "%252e%252e%252fboot.ini",
            "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/shadow",
            "....//....//etc/hosts",
            "..;/admin",
            "/etc/passwd",
            "php://filter/convert.base64-encode/resource=index.php",
            "file:///c:/windows/win.ini",
            "C:\\boot.ini",
            "/proc/self/environ",
            "images/../../../../etc/issue",
            "..%00/secret",
            "%uff0e%uff0e%uff0fetc/passwd",
        ] {
            assert!(flagged(attack), "missed: {attack}");
        }
    }

    #[test]
    fn traversals_spelled_in_hex_are_found() {
        // Dots and slashes only in `0x` spellings; the `.` of the file name has the literal
        // search read the value, which must have seen the `0x`.
        for attack in ["0x2e0x2e0x2f0x2e0x2e0x2fapp.log", "0x2e0x2e0x5cconfig.bak"] {
            assert!(
                families(attack, 1).contains(&"traversal"),
                "missed: {attack}"
            );
        }
    }

    #[test]
    fn every_sensitive_name_is_found_with_debris_for_its_separators() {
        // `?` and undecodable escapes read as separators in the loose view.
        for name in super::SENSITIVE_FILES.iter().filter(|n| n.contains('/')) {
            for debris in ["?", "%zz", "%c0%9v"] {
                let input = format!("x={}", name.replace('/', debris));
                let f = families(&input, 1);
                assert!(f.contains(&"lfi"), "missed: {input}");
            }
        }
    }

    #[test]
    fn ordinary_paths_and_text_are_left_alone() {
        for benign in [
            "images/logo.png",
            "wait... what?",
            "version 1.2.3",
            "https://example.com/a/b?c=d",
            "etc. and so on",
            "the envelope",
            "report..final.pdf",
            "/api/v1/users",
            "/home/user/file.txt",
            "/tmp/upload-1234.csv",
        ] {
            assert!(!flagged(benign), "false positive: {benign}");
        }
    }
}
