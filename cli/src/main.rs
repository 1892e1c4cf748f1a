//! `tern`: the command line of SPEC.md section 1.
//!
//! Exit codes: 0 success, 1 a runtime failure (one line on stderr naming the file or
//! address), 2 a usage or configuration error.
//!
//! All three runtimes exist: blocking, smol (the default) and mio.
//!
//! Run under the name `sendmail` (argv[0]), tern acts as `tern sendmail`. `tern sendmail`
//! exits as sendmail(1) does: 0 when the message is in the maildrop, 64 (EX_USAGE) for bad
//! arguments or no recipients, 65 (EX_DATAERR) for an unreadable message, 67 (EX_NOUSER)
//! for a malformed address, 73 (EX_CANTCREAT) when the maildrop cannot be written.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tern_host::config::{self, Config, RuntimeKind};
use tern_host::password::{Scheme, hash_password};
use tern_host::service::{self, Services};

mod sendmail;

/// Where the embedded default keeps everything, relative to the working directory.
const EMBEDDED_DATA_DIR: &str = "./tern-data";

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "A mail server: SMTP, submission, LMTP and Maildir"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every listener until SIGTERM or SIGINT.
    Serve {
        /// The configuration file; without one, the embedded default under ./tern-data.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The runtime; overrides `runtime` in the configuration.
        #[arg(long, value_enum)]
        runtime: Option<RuntimeArg>,
    },
    /// Print the effective configuration with every default filled in.
    CheckConfig {
        /// The configuration file; without one, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Read a password and print its `{SCHEME}hash` for an accounts file.
    Passwd {
        /// ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT or PLAIN.
        #[arg(long, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// Manage the accounts file.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List the outbound queue, or retry it now with `flush`.
    Queue {
        /// `flush`: ask the running server to retry every queued message now.
        #[arg(value_parser = ["flush"])]
        action: Option<String>,
        /// The configuration file; without one, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Read a message on stdin and drop it into the maildrop for the server to deliver.
    Sendmail {
        /// The configuration file; without one, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The envelope sender (`<>` or "" for the null sender).
        #[arg(short = 'f', value_name = "FROM")]
        from: Option<String>,
        /// Take the recipients from To:, Cc: and Bcc: (and remove Bcc:).
        #[arg(short = 't')]
        from_headers: bool,
        /// Accepted and ignored, as sendmail's -i/-oi (a lone `.` does not end the input).
        #[arg(short = 'i', hide = true)]
        ignore_dots: bool,
        /// Accepted and ignored (sendmail's -o options such as -oi, -oem).
        #[arg(short = 'o', value_name = "OPTION", hide = true)]
        options: Vec<String>,
        /// The recipients.
        recipients: Vec<String>,
    },
    /// Write a self-signed certificate and key (cert.pem, key.pem).
    Cert {
        /// The host name the certificate is for.
        #[arg(long)]
        hostname: String,
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Replay a recorded session through the state machine and compare every output.
    Replay {
        /// A recording written by a listener with `record_sessions`.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or replace its password, asking for the password.
    Add {
        /// The user name (`name` or `name@domain`).
        name: String,
        /// The configuration whose accounts file is changed; without one, the embedded
        /// default's ./tern-data/users.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeArg {
    Blocking,
    Smol,
    Mio,
}

/// A failure and the exit code it calls for.
struct Failure {
    code: u8,
    message: String,
    /// Whether the message already starts with where it happened (`FILE:LINE:COLUMN:`),
    /// as SPEC.md section 1 wants config errors printed, with no program name before it.
    located: bool,
}

fn main() -> ExitCode {
    // Called as `sendmail` (a symlink, or a mail program's argv[0]), tern is `tern sendmail`,
    // as Postfix's sendmail is.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .is_some_and(|name| name == "sendmail")
    {
        args.insert(1, "sendmail".into());
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Serve { config, runtime } => serve(config.as_deref(), runtime),
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Passwd { scheme } => passwd(&scheme),
        Command::User {
            command: UserCommand::Add { name, config },
        } => user_add(&name, config.as_deref()),
        Command::Cert { hostname, out } => cert(&hostname, &out),
        Command::Queue { action, config } => queue(action.as_deref(), config.as_deref()),
        Command::Sendmail {
            config,
            from,
            from_headers,
            ignore_dots,
            options,
            recipients,
        } => {
            // sendmail -oi is -i; other -o options are accepted and ignored.
            let ignore_dots = ignore_dots || options.iter().any(|o| o == "i");
            sendmail::run(
                config.as_deref(),
                from,
                from_headers,
                ignore_dots,
                recipients,
            )
        }
        Command::Replay { file } => replay(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.located => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
        Err(failure) => {
            eprintln!("tern: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// SPEC.md section 8: exit 0 when every output matched, 1 at the first that differed (or an
/// unreadable file), 2 when the file is not a recording.
fn replay(path: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
        located: false,
    })?;
    let recording = tern_core::replay::Recording::parse(&text).map_err(|e| Failure {
        code: 2,
        message: format!("{}:{e}", path.display()),
        located: true,
    })?;
    match recording.replay(std::time::Instant::now()) {
        Ok(summary) => {
            println!("replay: {} events, all outputs matched", summary.events);
            Ok(())
        }
        Err(mismatch) => {
            println!("replay: {mismatch}");
            Err(Failure {
                code: 1,
                message: format!("{}: an output differs from the recording", path.display()),
                located: false,
            })
        }
    }
}

fn serve(path: Option<&Path>, runtime: Option<RuntimeArg>) -> Result<(), Failure> {
    let (config, created) = match path {
        Some(path) => (load(path)?, None),
        None => {
            let embedded = service::embedded(Path::new(EMBEDDED_DATA_DIR)).map_err(runtime_err)?;
            (embedded.config, embedded.created)
        }
    };
    if config.listeners.is_empty() {
        return Err(usage("the configuration has no [[listener]]".to_owned()));
    }

    let runtime = match runtime {
        Some(RuntimeArg::Blocking) => RuntimeKind::Blocking,
        Some(RuntimeArg::Smol) => RuntimeKind::Smol,
        Some(RuntimeArg::Mio) => RuntimeKind::Mio,
        None => config.runtime,
    };
    // Said on stdout with the listeners, so that stderr stays one line when start fails.
    let runtime_line = format!("runtime: {}", runtime.name());

    let mailbox_path = config.mailbox.path.clone();
    let postmaster = config
        .aliases
        .iter()
        .find(|alias| alias.name == "postmaster")
        .map(|alias| alias.targets.join(", "));
    let users_file = config.accounts.file.clone();
    let services = Arc::new(Services::new(config).map_err(runtime_err)?);
    let bound = services.bind().map_err(runtime_err)?;
    tern_host::queue::start(&services)
        .map_err(|e| runtime_err(format!("cannot start the queue: {e}")))?;

    let listeners: Vec<(String, String)> = bound
        .iter()
        .map(|b| (b.name.clone(), b.address.clone()))
        .collect();
    let ready = move || {
        println!("{runtime_line}");
        if let Some((name, password)) = &created {
            let file = users_file.as_deref().unwrap_or(Path::new("users"));
            println!(
                "account: {name} password: {password} (shown once; stored hashed in {})",
                file.display()
            );
        }
        for (name, address) in &listeners {
            println!("listening: {name} on {address}");
        }
        match &postmaster {
            Some(target) => println!("mail: {mailbox_path} (postmaster goes to {target})"),
            None => println!("mail: {mailbox_path}"),
        }
    };
    match runtime {
        RuntimeKind::Mio => tern_runtime_mio::run(services, bound, ready),
        RuntimeKind::Smol => tern_runtime_smol::run(services, bound, ready),
        RuntimeKind::Blocking => tern_runtime_blocking::run(services, bound, ready),
    }
    .map_err(|e| runtime_err(format!("cannot run: {e}")))
}

fn check_config(path: Option<&Path>) -> Result<(), Failure> {
    let config = match path {
        Some(path) => load(path)?,
        None => config::embedded_default(Path::new(EMBEDDED_DATA_DIR)),
    };
    print!("{}", config.to_toml());
    Ok(())
}

/// `tern queue`: one line per message (id, age, sender, recipients, last error), like
/// Postfix's mailq; `tern queue flush` leaves the trigger file the server looks for.
fn queue(action: Option<&str>, path: Option<&Path>) -> Result<(), Failure> {
    let config = config_or_default(path)?;
    let dir = config.data_dir.join("queue");
    if action == Some("flush") {
        tern_host::queue::Queue::request_flush(&dir).map_err(runtime_err)?;
        println!("flush requested; the running server retries every queued message now");
        return Ok(());
    }
    if !dir.exists() {
        println!("Mail queue is empty");
        return Ok(());
    }
    let queue = tern_host::queue::Queue::open_for_listing(&dir).map_err(runtime_err)?;
    let (entries, errors) = queue.entries().map_err(runtime_err)?;
    for error in errors {
        eprintln!("tern: {error}");
    }
    if entries.is_empty() {
        println!("Mail queue is empty");
        return Ok(());
    }
    let now = tern_host::queue::unix_now();
    for entry in &entries {
        let age = now.saturating_sub(entry.arrival);
        let sender = if entry.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &entry.sender
        };
        println!(
            "{}  {}  {}  {sender}",
            entry.id,
            entry.size,
            format_age(age)
        );
        for rcpt in &entry.recipients {
            if rcpt.state != tern_host::queue::State::Pending {
                continue;
            }
            match &rcpt.last_error {
                Some(error) => println!("    {}  ({error})", rcpt.address),
                None => println!("    {}", rcpt.address),
            }
        }
    }
    println!("-- {} message(s)", entries.len());
    Ok(())
}

fn format_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn config_or_default(path: Option<&Path>) -> Result<Config, Failure> {
    match path {
        Some(path) => load(path),
        None => Ok(config::embedded_default(Path::new(EMBEDDED_DATA_DIR))),
    }
}

fn passwd(scheme: &str) -> Result<(), Failure> {
    let scheme: Scheme = scheme
        .parse()
        .map_err(|_| usage(format!("unknown password scheme {scheme}")))?;
    let password = read_password()?;
    println!("{}", hash_password(scheme, &password));
    Ok(())
}

fn user_add(name: &str, path: Option<&Path>) -> Result<(), Failure> {
    let config = match path {
        Some(path) => load(path)?,
        None => config::embedded_default(Path::new(EMBEDDED_DATA_DIR)),
    };
    let Some(file) = config.accounts.file else {
        return Err(usage("the configuration has no [accounts] file".to_owned()));
    };
    let password = read_password()?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| runtime_err(format!("cannot create {}: {e}", parent.display())))?;
    }
    let stored = hash_password(Scheme::Argon2id, &password);
    tern_host::accounts::add_user(&file, name, &stored).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => usage(e.to_string()),
        _ => runtime_err(format!("{}: {e}", file.display())),
    })?;
    println!("{name} added to {}", file.display());
    Ok(())
}

fn cert(hostname: &str, out: &Path) -> Result<(), Failure> {
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    if cert.exists() || key.exists() {
        return Err(runtime_err(format!(
            "{} or {} exists already; remove them first",
            cert.display(),
            key.display()
        )));
    }
    let (cert, key) = tern_host::tls::generate_self_signed(hostname, out).map_err(runtime_err)?;
    println!("certificate: {}", cert.display());
    println!("private key: {}", key.display());
    Ok(())
}

fn load(path: &Path) -> Result<Config, Failure> {
    config::load(path).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
        located: true,
    })
}

/// Reads a password: without echo (asked twice) on a terminal, else one line of stdin.
fn read_password() -> Result<String, Failure> {
    let password = if io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(runtime_err)?;
        let again = rpassword::prompt_password("Retype password: ").map_err(runtime_err)?;
        if first != again {
            return Err(usage("the passwords differ".to_owned()));
        }
        first
    } else {
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(runtime_err)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err(usage("empty password".to_owned()));
    }
    Ok(password)
}

fn usage(message: String) -> Failure {
    Failure {
        code: 2,
        message,
        located: false,
    }
}

fn runtime_err(error: impl ToString) -> Failure {
    Failure {
        code: 1,
        message: error.to_string(),
        located: false,
    }
}
