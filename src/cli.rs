//! Command line: clap definitions, turned into plain configs, dispatched to one function per command.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

use crate::commands::run::RunConfig;
use crate::errors::{failed, Error, EXIT_OK, EXIT_USAGE};
use crate::host::ConnConfig;

#[derive(Parser, Debug)]
#[command(
    name = "recipe",
    version = env!("RECIPE_VERSION"),
    about = "Run editable Rhai install recipes on remote machines over SSH"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct ConnArgs {
    /// known_hosts file (overrides the inventory's `known_hosts`)
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// Record unknown host keys (a changed key is still refused)
    #[arg(long)]
    accept_new_host_keys: bool,
    /// Run on this machine instead of over SSH (host name "local")
    #[arg(long)]
    local: bool,
    /// Seconds to wait for a connection and SSH handshake
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    connect_timeout: u64,
    /// Tries per connection when it is reset, refused or closed before login (default: the
    /// inventory's connection_attempts, else 3)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::inventory::MAX_CONNECTION_ATTEMPTS as i64))]
    connection_attempts: Option<u32>,
}

impl ConnArgs {
    fn config(&self) -> ConnConfig {
        ConnConfig {
            known_hosts: self.known_hosts.clone(),
            accept_new: self.accept_new_host_keys,
            local: self.local,
            connect_timeout: self.connect_timeout,
            connection_attempts: self.connection_attempts,
        }
    }
}

/// `--via` and the flags that go with it.
#[derive(Args, Debug, Clone)]
struct ViaArgs {
    /// Run node-local on the selected hosts through Slurm (srun from --login), not over SSH to each
    #[arg(long, value_name = "slurm[:PARTITION]", requires = "login")]
    via: Option<String>,
    /// With --via: the login or master node (an inventory host) the controller connects to
    #[arg(long, value_name = "HOST", requires = "via")]
    login: Option<String>,
    /// With --via: where Slurm is installed on the login node (sinfo and srun in DIR/bin);
    /// default: the login host's `slurm_prefix`/`slurm_install` in the inventory, then its PATH
    #[arg(long, value_name = "DIR", requires = "via")]
    slurm_prefix: Option<String>,
}

impl ViaArgs {
    fn via(self) -> Result<Option<crate::commands::via::Via>, Error> {
        let Some(spec) = self.via else {
            return Ok(None);
        };
        let mut v = crate::commands::via::Via::parse(&spec).map_err(crate::errors::usage)?;
        v.login = self.login;
        v.slurm_prefix = self.slurm_prefix;
        Ok(Some(v))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a recipe on hosts
    Run {
        #[command(flatten)]
        run: Box<RunConfig>,
        #[command(flatten)]
        via: ViaArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Parse and check recipes without touching any host
    Check {
        #[arg(required = true)]
        recipes: Vec<String>,
    },
    /// List recipes with their doc line and variables
    List {
        /// Folder of recipes (default ./recipes)
        dir: Option<PathBuf>,
    },
    /// Print a host's facts as JSON
    Facts {
        #[arg(long = "host", value_name = "NAME")]
        host: Option<String>,
        #[arg(short = 'i', long, value_name = "INVENTORY")]
        inventory: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Reference of every primitive (Markdown), or Rhai definition files for editors
    Doc {
        /// Write Rhai definition files (for editor completion) into this folder instead
        #[arg(long, value_name = "DIR")]
        definitions: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the manual page recipe(1) (roff), or write every page (recipe-run(1), ...) into DIR
    Man {
        /// Write recipe.1 and one page per subcommand into this folder instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Throw-away local test hosts (systemd-nspawn)
    Sandbox {
        #[command(subcommand)]
        action: SandboxCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SandboxCmd {
    /// Boot hosts (default master,w1,w2) and write an inventory
    Up {
        #[arg(long, value_delimiter = ',', default_value = "master,w1,w2")]
        hosts: Vec<String>,
        #[arg(long, default_value = "default")]
        name: String,
        /// Folder served over HTTP to the hosts (default: the sandbox's files/)
        #[arg(long, value_name = "DIR")]
        serve: Option<PathBuf>,
        /// Extra packages baked into the base image
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// Debian release of the hosts: bookworm (12) or trixie (13)
        #[arg(long, default_value = "bookworm", value_parser = parse_release)]
        release: crate::sandbox::Release,
        /// Minimal hosts, like a debootstrap minbase install: systemd and sshd, no curl,
        /// wget, sudo or procps
        #[arg(long)]
        minimal: bool,
    },
    /// Stop the hosts and remove everything the sandbox made
    Down {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List sandboxes, hosts, addresses and state
    Status {
        #[arg(long)]
        name: Option<String>,
    },
    #[command(hide = true)]
    ServeFiles {
        dir: PathBuf,
        addr: std::net::SocketAddr,
    },
    /// Runs one host's systemd-nspawn, booting it again after a reboot (exit status 133).
    #[command(hide = true)]
    HostSupervisor {
        program: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Parses arguments and runs; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    init_tracing(&cli.cmd);
    match dispatch(cli.cmd) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if let Some(text) = e.render() {
                eprint!("{}", crate::report::printable(&text));
            }
            e.code()
        }
    }
}

/// Runs one command.
fn dispatch(cmd: Cmd) -> Result<(), Error> {
    match cmd {
        Cmd::Run { mut run, via, conn } => {
            run.conn = conn.config();
            crate::commands::run::run(*run, via.via()?)
        }
        Cmd::Check { recipes } => crate::commands::check(&recipes),
        Cmd::List { dir } => crate::commands::list(dir),
        Cmd::Facts {
            host,
            inventory,
            conn,
        } => crate::commands::facts(host, inventory, conn.config()),
        Cmd::Doc { definitions } => crate::commands::doc(definitions),
        Cmd::Completions { shell } => {
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut visible(command()), "recipe", &mut out);
            Ok(())
        }
        Cmd::Man { dir } => man(dir),
        Cmd::Sandbox { action } => sandbox(action),
    }
}

/// The clap definition of the whole command line (for completions, the man page, and the
/// test that docs/contracts.md lists every subcommand and flag).
pub fn command() -> clap::Command {
    Cli::command()
}

/// `cmd` without its hidden arguments and subcommands (internal ones: `run --slurm-node`,
/// `sandbox serve-files`, `sandbox host-supervisor`), which the completion generators would offer.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string())
        .about(cmd.get_about().cloned().unwrap_or_default())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|c| !c.is_hide_set())
                .cloned()
                .map(visible),
        );
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_string());
    }
    if let Some(t) = cmd.get_long_about() {
        out = out.long_about(t.clone());
    }
    if let Some(t) = cmd.get_after_help() {
        out = out.after_help(t.clone());
    }
    if let Some(t) = cmd.get_after_long_help() {
        out = out.after_long_help(t.clone());
    }
    out
}

fn man(dir: Option<PathBuf>) -> Result<(), Error> {
    // The man pages are written for every subcommand but `help` (whose page would only repeat
    // this one), so none of them may point to `recipe-help(1)`.
    let cmd = visible(command()).disable_help_subcommand(true);
    let res = match &dir {
        Some(d) => clap_mangen::generate_to(cmd, d),
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
    };
    match (res, dir) {
        (Ok(()), Some(d)) => {
            println!("wrote the manual pages into {}", d.display());
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(e), _) => Err(failed(format!("cannot write the manual page: {e}"))),
    }
}

fn sandbox(action: SandboxCmd) -> Result<(), Error> {
    let res = match action {
        SandboxCmd::Up {
            hosts,
            name,
            serve,
            packages,
            release,
            minimal,
        } => crate::sandbox::up(&crate::sandbox::UpOptions {
            name,
            hosts,
            serve,
            packages,
            release,
            minimal,
        })
        .map(|_| ()),
        SandboxCmd::Down { name } => crate::sandbox::down(&name),
        SandboxCmd::Status { name } => {
            crate::sandbox::status(name.as_deref()).map(|s| print!("{s}"))
        }
        SandboxCmd::ServeFiles { dir, addr } => crate::sandbox::serve_files(&dir, addr),
        // Ends with systemd-nspawn's own exit status, as its unit would show it.
        SandboxCmd::HostSupervisor { program, args } => {
            match crate::sandbox::supervise(&program, &args) {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(e),
            }
        }
    };
    res.map_err(|e| failed(format!("{e:#}")))
}

fn parse_release(s: &str) -> Result<crate::sandbox::Release, String> {
    crate::sandbox::Release::parse(s).map_err(|e| e.to_string())
}

fn init_tracing(cmd: &Cmd) {
    let level = match cmd {
        Cmd::Run { run, .. } if run.verbose >= 3 => "debug",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::report::LogWriter::make)
        .try_init();
}
