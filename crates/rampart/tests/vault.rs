//! `rampart vault` end to end on real files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn rampart(dir: &Path, master: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rampart"));
    command
        .arg("vault")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAMPART_MASTER_KEY")
        .env_remove("RAMPART_MASTER_PASSPHRASE")
        .env_remove("RAMPART_DATA_DIR");
    if let Some(master) = master {
        command.env("RAMPART_MASTER_KEY", master);
    }
    command.output().expect("rampart runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "should have failed");
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn init(dir: &Path) -> String {
    let out = stdout(&rampart(dir, None, &["init"]));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("export RAMPART_MASTER_KEY="))
        .expect("the generated master key is printed once");
    line.to_owned()
}

#[test]
fn values_encrypt_decrypt_rotate_rewrap_and_trim() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let keyring = dir.path().join("data/keyring.json");
    assert_eq!(
        std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let m = Some(master.as_str());
    let sealed = stdout(&rampart(
        dir.path(),
        m,
        &["encrypt", "--aad", "user-7", "s3cret"],
    ));
    let sealed = sealed.trim();
    assert!(sealed.starts_with("rampart:v1:"), "{sealed}");
    assert_eq!(
        stdout(&rampart(
            dir.path(),
            m,
            &["decrypt", "--aad", "user-7", sealed]
        )),
        "s3cret"
    );
    let wrong = stderr(&rampart(
        dir.path(),
        m,
        &["decrypt", "--aad", "user-8", sealed],
    ));
    assert!(wrong.contains("has been changed"), "{wrong}");

    stdout(&rampart(dir.path(), m, &["rotate", "default"]));
    let rewrapped = stdout(&rampart(
        dir.path(),
        m,
        &["rewrap", "--aad", "user-7", sealed],
    ));
    assert!(rewrapped.starts_with("rampart:v2:"), "{rewrapped}");
    let refused = stderr(&rampart(
        dir.path(),
        m,
        &["trim", "default", "--below", "2"],
    ));
    assert!(refused.contains("--force"), "{refused}");
    stdout(&rampart(dir.path(), m, &["min-version", "default", "2"]));
    let below = stderr(&rampart(
        dir.path(),
        m,
        &["decrypt", "--aad", "user-7", sealed],
    ));
    assert!(
        below.contains("below the minimum decryption version 2"),
        "{below}"
    );
    stdout(&rampart(
        dir.path(),
        m,
        &["trim", "default", "--below", "2"],
    ));
    assert_eq!(
        stdout(&rampart(
            dir.path(),
            m,
            &["decrypt", "--aad", "user-7", rewrapped.trim()]
        )),
        "s3cret"
    );

    let status = stdout(&rampart(dir.path(), m, &["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["keys"][0]["primary"], 2);
    assert_eq!(status["keys"][0]["versions"].as_array().unwrap().len(), 1);
    let file = std::fs::read_to_string(&keyring).unwrap();
    assert!(!file.contains(&master));
}

#[test]
fn files_round_trip_and_a_bad_one_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let m = Some(master.as_str());
    let plain = dir.path().join("report.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&plain, &data).unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    stdout(&rampart(
        dir.path(),
        m,
        &[
            "encrypt-file",
            &p("report.bin"),
            &p("report.enc"),
            "--segment",
            "65536",
        ],
    ));
    stdout(&rampart(
        dir.path(),
        m,
        &["decrypt-file", &p("report.enc"), &p("report.out")],
    ));
    assert_eq!(std::fs::read(dir.path().join("report.out")).unwrap(), data);

    let exists = stderr(&rampart(
        dir.path(),
        m,
        &["decrypt-file", &p("report.enc"), &p("report.out")],
    ));
    assert!(exists.contains("--force"), "{exists}");

    let mut sealed = std::fs::read(dir.path().join("report.enc")).unwrap();
    let at = sealed.len() - 100;
    sealed[at] ^= 1;
    std::fs::write(dir.path().join("bad.enc"), &sealed).unwrap();
    stderr(&rampart(
        dir.path(),
        m,
        &["decrypt-file", &p("bad.enc"), &p("bad.out")],
    ));
    sealed.truncate(sealed.len() - 70_000);
    std::fs::write(dir.path().join("cut.enc"), &sealed).unwrap();
    stderr(&rampart(
        dir.path(),
        m,
        &["decrypt-file", &p("cut.enc"), &p("cut.out")],
    ));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bad.enc",
            "cut.enc",
            "data",
            "report.bin",
            "report.enc",
            "report.out"
        ],
        "no output and no temporary file from the failed decryptions"
    );
}

#[test]
fn wrong_master_key_loose_permissions_and_no_keyring_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let none = stderr(&rampart(
        dir.path(),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        &["status"],
    ));
    assert!(none.contains("rampart vault init"), "{none}");
    init(dir.path());
    let missing = stderr(&rampart(dir.path(), None, &["status"]));
    assert!(
        missing.contains("RAMPART_MASTER_KEY is not set"),
        "{missing}"
    );
    let wrong = stderr(&rampart(
        dir.path(),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        &["status"],
    ));
    assert!(wrong.contains("master key does not open"), "{wrong}");
    let keyring = dir.path().join("data/keyring.json");
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o640)).unwrap();
    let loose = stderr(&rampart(
        dir.path(),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        &["status"],
    ));
    assert!(loose.contains("chmod 600"), "{loose}");
    let again = stderr(&rampart(dir.path(), None, &["init"]));
    assert!(again.contains("already exists"), "{again}");
}

#[test]
fn the_master_key_can_come_from_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, &master).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_arg = key_file.to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["vault", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--master-key-file", &key_arg, "encrypt"])
        .env_remove("RAMPART_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let sealed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout(&rampart(
            dir.path(),
            Some(&master),
            &["decrypt", sealed.trim()]
        )),
        "from stdin"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = stderr(&rampart(
        dir.path(),
        None,
        &["--master-key-file", &key_arg, "status"],
    ));
    assert!(loose.contains("chmod 600"), "{loose}");
}

#[test]
fn a_passphrase_can_stand_for_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |passphrase: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["vault", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .env_remove("RAMPART_MASTER_KEY")
            .env("RAMPART_MASTER_PASSPHRASE", passphrase)
            .output()
            .unwrap()
    };
    let init = stdout(&run("a long enough passphrase", &["init"]));
    assert!(!init.contains("export"), "nothing to show: {init}");
    let keyring = std::fs::read_to_string(dir.path().join("data/keyring.json")).unwrap();
    assert!(keyring.contains("\"memory_kib\": 19456"), "{keyring}");
    let sealed = stdout(&run("a long enough passphrase", &["encrypt", "hi"]));
    assert_eq!(
        stdout(&run(
            "a long enough passphrase",
            &["decrypt", sealed.trim()]
        )),
        "hi"
    );
    let wrong = stderr(&run("another long passphrase", &["decrypt", sealed.trim()]));
    assert!(wrong.contains("master key does not open"), "{wrong}");
    let short = stderr(&run("short", &["status"]));
    assert!(short.contains("at least 12 characters"), "{short}");
}

#[test]
fn the_store_keeps_lists_returns_rewraps_and_removes_files() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let m = Some(master.as_str());
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"meeting notes").unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let id = stdout(&rampart(
        dir.path(),
        m,
        &["store", "put", &file_arg, "--content-type", "text/plain"],
    ));
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let list = stdout(&rampart(dir.path(), m, &["store", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "notes.txt");
    assert_eq!(list[0]["size"], 13);
    assert_eq!(list[0]["key_version"], 1);

    stdout(&rampart(dir.path(), m, &["rotate", "default"]));
    let rewrap = stdout(&rampart(dir.path(), m, &["store", "rewrap"]));
    assert!(rewrap.contains("rewrapped 1 of 1"), "{rewrap}");
    let out = dir.path().join("back.txt");
    let out_arg = out.to_string_lossy().into_owned();
    stdout(&rampart(dir.path(), m, &["store", "get", &id, &out_arg]));
    assert_eq!(std::fs::read(&out).unwrap(), b"meeting notes");
    let list = stdout(&rampart(dir.path(), m, &["store", "list", "--json"]));
    assert!(list.contains("\"key_version\":2"), "{list}");
    stdout(&rampart(dir.path(), m, &["store", "rm", &id]));
    let gone = stderr(&rampart(
        dir.path(),
        m,
        &["store", "get", &id, &out_arg, "--force"],
    ));
    assert!(gone.contains("no object"), "{gone}");
}

/// Runs a shell script in a private mount namespace where `$FULL` is a 256 KiB tmpfs: needs
/// root (CI runs as root); elsewhere the test says it did not run.
fn with_small_disk(dir: &Path, script: &str) -> Option<Output> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        eprintln!("not root: the full-disk test needs a tmpfs mount and did not run");
        return None;
    }
    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=256k tmpfs \"$FULL\" && {script}"
        ))
        .env("FULL", &full)
        .env("RAMPART", env!("CARGO_BIN_EXE_rampart"))
        .env("DATA", dir.join("data"))
        .env_remove("RAMPART_MASTER_PASSPHRASE")
        .output()
        .expect("unshare runs");
    Some(output)
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 1 << 20]).unwrap();
    let script = r#"
        export RAMPART_MASTER_KEY="$M"
        echo good > "$FULL/out.bin"
        "$RAMPART" vault --data-dir "$DATA" encrypt-file "$BIG" "$FULL/out.bin" --force
        echo "exit=$?"
        cat "$FULL/out.bin"
        ls -A "$FULL"
    "#;
    let Some(output) = with_small_disk(
        dir.path(),
        &script
            .replace("$M", &master)
            .replace("$BIG", &big.to_string_lossy()),
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("exit=1"), "{stdout} {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let listing: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("exit="))
        .skip(1)
        .collect();
    assert_eq!(
        listing,
        ["good", "out.bin"],
        "the old file is intact and nothing else is left"
    );
}

#[test]
fn a_full_disk_never_loses_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let script = r#"
        export RAMPART_MASTER_KEY="$M"
        cp -a "$DATA" "$FULL/data"
        dd if=/dev/zero of="$FULL/filler" bs=1k count=1024 2>/dev/null
        "$RAMPART" vault --data-dir "$FULL/data" rotate default
        echo "exit=$?"
        "$RAMPART" vault --data-dir "$FULL/data" status --json
        ls -A "$FULL/data"
    "#;
    let Some(output) = with_small_disk(dir.path(), &script.replace("$M", &master)) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("exit=1"), "{stdout} {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stdout.contains("\"primary\":1"),
        "the old keyring still opens: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("keyring.json"), "{stdout}");
    assert!(!stdout.contains(".tmp"), "no temporary file left: {stdout}");
}

#[test]
fn encrypted_files_are_rewrapped_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let master = init(dir.path());
    let m = Some(master.as_str());
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (name, len) in [("a", 10usize), ("b", 300_000)] {
        std::fs::write(dir.path().join(name), vec![b'x'; len]).unwrap();
        stdout(&rampart(
            dir.path(),
            m,
            &["encrypt-file", &p(name), &p(&format!("{name}.rv"))],
        ));
    }
    stdout(&rampart(dir.path(), m, &["rotate", "default"]));
    let out = stdout(&rampart(
        dir.path(),
        m,
        &["rewrap-files", &p("a.rv"), &p("b.rv")],
    ));
    assert!(out.contains("rewrapped 2 of 2"), "{out}");
    let again = stdout(&rampart(dir.path(), m, &["rewrap-files", &p("a.rv")]));
    assert!(again.contains("rewrapped 0 of 1"), "{again}");
    stdout(&rampart(dir.path(), m, &["min-version", "default", "2"]));
    stdout(&rampart(
        dir.path(),
        m,
        &["decrypt-file", &p("b.rv"), &p("b.out")],
    ));
    assert_eq!(
        std::fs::read(dir.path().join("b.out")).unwrap(),
        vec![b'x'; 300_000]
    );
}
