//! `rampart vault ...`: the keyring and file encryption from the command line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rampart_vault::{Algorithm, Keyring, MasterKey, RotationPolicy, Store, envelope, stream};

#[derive(clap::Args)]
pub struct VaultArgs {
    /// Where the keyring and encrypted files live.
    #[arg(
        long,
        env = "RAMPART_DATA_DIR",
        default_value = "rampart-data",
        global = true
    )]
    data_dir: PathBuf,
    /// A file holding the master key in base64, instead of RAMPART_MASTER_KEY.
    #[arg(long, global = true)]
    master_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: VaultCommand,
}

#[derive(clap::Subcommand)]
enum VaultCommand {
    /// Create the keyring with a first key, `default`. The master key comes from
    /// --master-key-file, RAMPART_MASTER_KEY or (derived with Argon2id)
    /// RAMPART_MASTER_PASSPHRASE; without any, one is generated and printed once.
    Init {
        #[arg(long, default_value = "aes-256-gcm")]
        algorithm: Algorithm,
    },
    /// Keys, versions, ages, use counts and the rotation policy; never key bytes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Add a key.
    Create {
        name: String,
        #[arg(long, default_value = "aes-256-gcm")]
        algorithm: Algorithm,
    },
    /// Give a key a new primary version; with --due, every key whose primary is older than the
    /// policy allows.
    Rotate {
        #[arg(required_unless_present = "due")]
        name: Option<String>,
        #[arg(long)]
        due: bool,
    },
    /// Encrypt a value (argument or stdin) and print its text form `rampart:v<N>:...`.
    Encrypt {
        #[arg(long, default_value = "default")]
        key: String,
        /// Associated data: the same must be given to decrypt.
        #[arg(long, default_value = "")]
        aad: String,
        value: Option<String>,
    },
    /// Decrypt a text-form ciphertext (argument or stdin) and print the plaintext.
    Decrypt {
        #[arg(long, default_value = "")]
        aad: String,
        ciphertext: Option<String>,
    },
    /// Re-encrypt text-form ciphertexts (arguments, or one per line on stdin) under their
    /// key's primary version; the plaintext never leaves the process.
    Rewrap {
        #[arg(long, default_value = "")]
        aad: String,
        ciphertexts: Vec<String>,
    },
    /// Re-encrypt files made by encrypt-file under their key's primary version, in place and
    /// without plaintext on disk, with a progress bar.
    RewrapFiles {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Versions below N no longer decrypt.
    MinVersion { name: String, version: u32 },
    /// Delete the versions below a bound; versions that still decrypt need --force.
    Trim {
        name: String,
        #[arg(long)]
        below: u32,
        #[arg(long)]
        force: bool,
    },
    /// Encrypt a file of any size in constant memory.
    EncryptFile {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value = "default")]
        key: String,
        /// Segment size in bytes (65536 to 1048576).
        #[arg(long, default_value_t = stream::DEFAULT_SEGMENT)]
        segment: usize,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// The encrypted file store under the data directory.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Decrypt a file made by encrypt-file.
    DecryptFile {
        input: PathBuf,
        output: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand)]
enum StoreCommand {
    /// Encrypt a file into the store; prints its id.
    Put {
        file: PathBuf,
        /// The name kept with it (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        #[arg(long, default_value = "default")]
        key: String,
    },
    /// Decrypt an object into a file.
    Get {
        id: String,
        output: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Objects with their names, sizes, content types, ages and key versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an object.
    Rm { id: String },
    /// Re-encrypt every object under its key's primary version, with a progress bar.
    Rewrap,
}

const KEYRING_FILE: &str = "keyring.json";
const STORE_DIR: &str = "store";

pub fn run(args: VaultArgs) -> Result<()> {
    let path = args.data_dir.join(KEYRING_FILE);
    if let VaultCommand::Init { algorithm } = args.command {
        return init(
            &args.data_dir,
            &path,
            args.master_key_file.as_deref(),
            algorithm,
        );
    }
    if !path.exists() {
        bail!(
            "no keyring at {}: run `rampart vault init` first (or set --data-dir / RAMPART_DATA_DIR)",
            path.display()
        );
    }
    let master = master_key(args.master_key_file.as_deref(), Some(&path))?;
    let keyring = rampart_vault::load(&path, &master)?;
    let save = |keyring: &Keyring| rampart_vault::save(keyring, &path, &master);
    match args.command {
        VaultCommand::Init { .. } => unreachable!("handled above"),
        VaultCommand::Status { json } => status(&keyring, json)?,
        VaultCommand::Create { name, algorithm } => {
            keyring.create_key(&name, algorithm)?;
            save(&keyring)?;
            println!("created key `{name}` ({})", algorithm.name());
        }
        VaultCommand::Rotate { name, due } => {
            if due {
                let rotated = keyring.rotate_due(now())?;
                save(&keyring)?;
                for (name, version) in &rotated {
                    println!("rotated `{name}` to version {version}");
                }
                if rotated.is_empty() {
                    println!("no key is due for rotation");
                }
            } else if let Some(name) = name {
                let version = keyring.rotate(&name)?;
                save(&keyring)?;
                println!("rotated `{name}` to version {version}");
            }
        }
        VaultCommand::Encrypt { key, aad, value } => {
            let plaintext = argument_or_stdin(value)?;
            let sealed = keyring.encrypt(&key, &plaintext, aad.as_bytes())?;
            save(&keyring)?;
            println!("{}", envelope::to_text(&sealed)?);
        }
        VaultCommand::Decrypt { aad, ciphertext } => {
            let text = argument_or_stdin(ciphertext)?;
            let text = String::from_utf8(text).context("the ciphertext is not text")?;
            let sealed = envelope::from_text(&text)?;
            let plaintext = zeroize::Zeroizing::new(keyring.decrypt(&sealed, aad.as_bytes())?);
            let mut out = std::io::stdout().lock();
            out.write_all(&plaintext)?;
            out.flush()?;
        }
        VaultCommand::Rewrap { aad, ciphertexts } => {
            let inputs = if ciphertexts.is_empty() {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                ciphertexts
            };
            let mut out = Vec::with_capacity(inputs.len());
            for (line, text) in inputs.iter().enumerate() {
                let sealed = envelope::from_text(text)
                    .with_context(|| format!("ciphertext {}", line + 1))?;
                let rewrapped = keyring
                    .rewrap(&sealed, aad.as_bytes())
                    .with_context(|| format!("ciphertext {}", line + 1))?;
                out.push(envelope::to_text(&rewrapped)?);
            }
            save(&keyring)?;
            for text in out {
                println!("{text}");
            }
        }
        VaultCommand::RewrapFiles { files } => {
            let sizes: Vec<u64> = files
                .iter()
                .map(|f| std::fs::metadata(f).map(|m| m.len()))
                .collect::<std::io::Result<_>>()
                .context("reading the files to rewrap")?;
            let bar = progress(sizes.iter().sum());
            let mut changed = 0;
            for (file, size) in files.iter().zip(sizes) {
                bar.set_message(file.display().to_string());
                if stream::rewrap_file(&keyring, file, b"")
                    .with_context(|| format!("rewrapping {}", file.display()))?
                    .is_some()
                {
                    changed += 1;
                }
                bar.inc(size);
            }
            bar.finish_and_clear();
            save(&keyring)?;
            println!("rewrapped {changed} of {} file(s)", files.len());
        }
        VaultCommand::MinVersion { name, version } => {
            keyring.set_min_decryption_version(&name, version)?;
            save(&keyring)?;
            println!("`{name}`: versions below {version} no longer decrypt");
        }
        VaultCommand::Trim { name, below, force } => {
            let deleted = keyring.trim(&name, below, force)?;
            save(&keyring)?;
            println!("`{name}`: deleted {deleted} version(s) below {below}");
        }
        VaultCommand::EncryptFile {
            input,
            output,
            key,
            segment,
            force,
        } => {
            let mut input = open_input(&input)?;
            let bytes = write_output(&output, force, |out| {
                stream::encrypt(&keyring, &key, segment, b"", &mut input, out)
            })?;
            save(&keyring)?;
            println!("encrypted {bytes} bytes into {}", output.display());
        }
        VaultCommand::Store { command } => {
            store(&keyring, &args.data_dir.join(STORE_DIR), command)?;
            save(&keyring)?;
        }
        VaultCommand::DecryptFile {
            input,
            output,
            force,
        } => {
            let mut input = open_input(&input)?;
            let bytes = write_output(&output, force, |out| {
                stream::decrypt(&keyring, b"", &mut input, out)
            })?;
            println!("decrypted {bytes} bytes into {}", output.display());
        }
    }
    Ok(())
}

fn store(keyring: &Keyring, dir: &Path, command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Put {
            file,
            name,
            content_type,
            key,
        } => {
            let store = Store::open(dir, keyring, &key)?;
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let object = store.put(&name, &content_type, &mut open_input(&file)?)?;
            println!("{}", object.id);
        }
        StoreCommand::Get { id, output, force } => {
            let store = first_key_store(dir, keyring)?;
            let object = write_output(&output, force, |out| store.get(&id, out))?;
            println!(
                "{} ({} bytes) into {}",
                object.name,
                object.size,
                output.display()
            );
        }
        StoreCommand::List { json } => {
            let objects = first_key_store(dir, keyring)?.list()?;
            if json {
                println!("{}", serde_json::to_string(&objects)?);
            } else {
                for o in objects {
                    println!(
                        "{}  {:>10}  {:<24}  {}  {} v{}",
                        o.id, o.size, o.content_type, o.name, o.key, o.key_version
                    );
                }
            }
        }
        StoreCommand::Rm { id } => {
            first_key_store(dir, keyring)?.remove(&id)?;
            println!("removed {id}");
        }
        StoreCommand::Rewrap => {
            let store = first_key_store(dir, keyring)?;
            let objects = store.list()?;
            let total: u64 = objects.iter().map(|o| o.size).sum();
            let bar = progress(total);
            let mut changed = 0;
            for object in &objects {
                bar.set_message(object.name.clone());
                if store.rewrap(&object.id)? {
                    changed += 1;
                }
                bar.inc(object.size);
            }
            bar.finish_and_clear();
            println!("rewrapped {changed} of {} object(s)", objects.len());
        }
    }
    Ok(())
}

/// A progress bar in bytes on stderr; hidden when stderr is not a terminal.
fn progress(total: u64) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// The store opened with any key: reading, listing and removing do not choose one.
fn first_key_store<'k>(dir: &Path, keyring: &'k Keyring) -> Result<Store<'k>> {
    let key = keyring
        .status()
        .into_iter()
        .next()
        .map(|k| k.name)
        .context("the keyring has no keys")?;
    Ok(Store::open(dir, keyring, &key)?)
}

fn open_input(path: &Path) -> Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The master key: from `--master-key-file`, else `RAMPART_MASTER_KEY`, else derived from
/// `RAMPART_MASTER_PASSPHRASE` with the keyring's salt (a new one for a new keyring).
fn master_key(file: Option<&Path>, keyring: Option<&Path>) -> Result<MasterKey> {
    if let Some(path) = file {
        return Ok(MasterKey::from_file(path)?);
    }
    if std::env::var_os(MasterKey::ENV).is_none()
        && let Ok(passphrase) = std::env::var(MasterKey::PASSPHRASE_ENV)
    {
        let passphrase = zeroize::Zeroizing::new(passphrase);
        let kdf = match keyring {
            Some(path) => rampart_vault::passphrase_kdf(path)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} was made with a master key, not a passphrase: set {}",
                    path.display(),
                    MasterKey::ENV
                )
            })?,
            None => return Ok(MasterKey::from_passphrase(&passphrase, None)?),
        };
        return Ok(MasterKey::from_passphrase(&passphrase, Some(kdf))?);
    }
    Ok(MasterKey::from_env()?)
}

fn init(dir: &Path, path: &Path, key_file: Option<&Path>, algorithm: Algorithm) -> Result<()> {
    if path.exists() {
        bail!(
            "{} already exists: the keyring is made once (`rampart vault status` shows it)",
            path.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let explicit = key_file.is_some()
        || std::env::var_os(MasterKey::ENV).is_some()
        || std::env::var_os(MasterKey::PASSPHRASE_ENV).is_some();
    let (master, generated) = if explicit {
        (master_key(key_file, None)?, None)
    } else {
        let (master, text) = MasterKey::generate()?;
        (master, Some(text))
    };
    let keyring = Keyring::new(RotationPolicy::default());
    keyring.create_key("default", algorithm)?;
    rampart_vault::save(&keyring, path, &master)?;
    println!(
        "created {} with key `default` ({})",
        path.display(),
        algorithm.name()
    );
    if let Some(text) = generated {
        println!(
            "master key (shown once; keep it in a secret store, the keyring cannot be opened \
             without it):\nexport {}={}",
            MasterKey::ENV,
            text.as_str()
        );
    }
    Ok(())
}

fn status(keyring: &Keyring, json: bool) -> Result<()> {
    let keys = keyring.status();
    let policy = keyring.policy();
    if json {
        println!("{}", serde_json::json!({ "policy": policy, "keys": keys }));
        return Ok(());
    }
    println!(
        "rotation: every {} h or {} encryptions per version",
        policy.max_age_secs / 3600,
        policy.max_encryptions
    );
    for key in keys {
        println!(
            "{}  {}  primary v{}  decrypts from v{}",
            key.name, key.algorithm, key.primary, key.min_decryption_version
        );
        for v in key.versions {
            println!(
                "  v{:<4} age {:>8}  encryptions {}",
                v.version,
                humanize(v.age_secs),
                v.encryptions
            );
        }
    }
    Ok(())
}

fn humanize(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn argument_or_stdin(value: Option<String>) -> Result<Vec<u8>> {
    match value {
        Some(v) => Ok(v.into_bytes()),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
            Ok(bytes)
        }
    }
}

/// Writes `output` with [`rampart_vault::write_file`]: a failure never leaves a partial file
/// where a good one was. An existing file is only replaced with `--force`.
fn write_output<T>(
    output: &Path,
    force: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, rampart_vault::VaultError>,
) -> Result<T> {
    if output.exists() && !force {
        bail!("{} exists; use --force to replace it", output.display());
    }
    Ok(rampart_vault::write_file(output, write)?)
}
