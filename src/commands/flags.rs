//! The flags of `recipe run`, defined once: clap reads them (flattened into the command
//! line); every mode of the run (commands/run.rs) and `--via` (commands/via.rs) use them.

use std::path::PathBuf;

use crate::host::ConnConfig;

/// The flags of `recipe run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunConfig {
    /// Recipe path, or a bare name looked up in ./recipes/
    pub recipe: String,
    /// Target host (inventory name, or anything `ssh NAME` accepts); repeatable
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Target inventory group ("all" = every host); repeatable
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Inventory file (TOML)
    #[arg(short = 'i', long, value_name = "INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Set a declared variable; repeatable
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Check and report what would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Show unified diffs of file contents
    #[arg(long)]
    pub diff: bool,
    /// Hosts worked on at once
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub forks: usize,
    /// JSON Lines events on stdout, nothing else
    #[arg(long)]
    pub json: bool,
    /// More output (-v: timings and debug notes; -vv: diffs of changes too)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only failures and the recap (no line per step)
    #[arg(short, long)]
    pub quiet: bool,
    /// Default time limit of one command, in seconds
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
    /// How to reach the hosts (set from the connection flags).
    #[arg(skip)]
    pub conn: ConnConfig,
    /// A task of --via slurm: the file of per-node hosts and variables
    #[arg(long, value_name = "FILE", hide = true)]
    pub slurm_node: Option<PathBuf>,
}
