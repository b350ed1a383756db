//! The TOML inventory (hosts, groups, variables) and how a host name becomes a connection target.
//!
//! Parsing checks everything it can before any host is touched, and every error names the
//! file, line and column. Turning a name into a [`Target`] fills what the inventory leaves
//! out from the ssh configuration, then from defaults. An inventory host is looked up in the
//! ssh configuration by its `address` (its name when it has none), as `ssh ADDRESS` would be.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::local_user::{current_user, expand_tilde, home_dir};
use crate::ssh_config::{self, ResolvedHost};

/// Variables: name → JSON value (TOML datetimes become strings).
pub type Vars = BTreeMap<String, serde_json::Value>;

/// The name of the implicit group holding every inventory host.
pub const ALL_GROUP: &str = "all";

/// How many hops a jump chain may have; longer chains are surely loops.
const MAX_JUMP_DEPTH: usize = 16;

/// The most tries of one connection `connection_attempts` may ask for.
pub const MAX_CONNECTION_ATTEMPTS: u32 = 20;

/// A parsed inventory. Paths in it are already expanded (`~`) and absolute when the
/// inventory file's own path is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// The file this came from; `None` for [`Inventory::empty`].
    pub path: Option<PathBuf>,
    /// `known_hosts = ...`; `None` means the default (see [`Inventory::known_hosts_path`]).
    pub known_hosts: Option<PathBuf>,
    /// `connection_attempts = N` (as OpenSSH's ConnectionAttempts); `None` = the default.
    pub connection_attempts: Option<u32>,
    /// `[vars]`: every host's variables.
    pub vars: Vars,
    /// `[hosts.NAME]` tables.
    pub hosts: BTreeMap<String, HostEntry>,
    /// `[groups.NAME]` tables.
    pub groups: BTreeMap<String, Group>,
}

/// One `[hosts.NAME]` table as written; `None` = not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostEntry {
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Expanded and made relative to the inventory's folder.
    pub key: Option<PathBuf>,
    /// An inventory host name or `[user@]host[:port]`, or several of them comma separated.
    pub jump: Option<String>,
    pub become_: Option<bool>,
    pub vars: Vars,
}

/// One `[groups.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Inventory host names, in the order written, without duplicates.
    pub hosts: Vec<String>,
    pub vars: Vars,
}

/// Everything needed to connect to one host and run a recipe there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// The name as given (`--host`, group member, `host("...")`).
    pub name: String,
    /// What to connect to (address or DNS name).
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private keys to try, in order.
    pub keys: Vec<PathBuf>,
    /// The host to tunnel through, itself possibly behind another.
    pub jump: Option<Box<Target>>,
    /// Use sudo for privileged steps.
    #[serde(rename = "become")]
    pub become_: bool,
    /// Inventory `[vars]` < group vars (groups in name order) < host vars.
    pub vars: Vars,
    /// The inventory groups this host belongs to, in name order (`all` not included).
    pub groups: Vec<String>,
}

/// A bad inventory, or a host or group that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    pub path: Option<PathBuf>,
    /// 1-based line and column (in characters) of the offending text, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The offending line, shown under the message with a `^` marker.
    pub source_line: Option<String>,
}

impl InventoryError {
    /// An error without a position in a file.
    pub fn new(path: Option<&Path>, message: impl Into<String>) -> Self {
        InventoryError {
            path: path.map(Path::to_path_buf),
            line: None,
            column: None,
            message: message.into(),
            source_line: None,
        }
    }

    /// An error at byte offset `offset` of `text` (clamped to the text).
    fn at(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column, source) = locate(text, offset);
        InventoryError {
            path: Some(path.to_path_buf()),
            line: Some(line),
            column: Some(column),
            message: message.into(),
            source_line: Some(hide_secret_value(&source)),
        }
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inventory error: ")?;
        if let Some(path) = &self.path {
            write!(f, "{}:", path.display())?;
            if let (Some(line), Some(col)) = (self.line, self.column) {
                write!(f, "{line}:{col}:")?;
            }
            write!(f, " ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(src), Some(line), Some(col)) = (&self.source_line, self.line, self.column) {
            // Control characters would garble the terminal; tabs keep the marker aligned.
            // A very long line is cut to a window around the column.
            let (src, marker) = crate::errors::excerpt(src, col);
            let shown: String = src
                .chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .collect();
            let pad: String = shown
                .chars()
                .take(marker)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let gutter = " ".repeat(line.to_string().len());
            write!(f, "\n{gutter} |\n{line} | {shown}\n{gutter} | {pad}^")?;
        }
        Ok(())
    }
}

impl std::error::Error for InventoryError {}

/// A source line as an excerpt may show it: the value of a secret-named key
/// (`db_password = "..."`, also `db.password` and inside `{ ... }`) replaced, up to the end
/// of the line, by `<secret: hidden>` (the excerpt of a syntax error must not print it).
fn hide_secret_value(line: &str) -> String {
    for (i, _) in line.match_indices('=') {
        let before = line[..i].trim_end();
        let key = before
            .rsplit(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '.'))
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '"' || c == '\'');
        if crate::vars::is_secret_name(key) {
            return format!("{}= {}", &line[..i], crate::vars::HIDDEN);
        }
    }
    line.to_string()
}

/// Byte offset → (line, column in characters, that line's text), all 1-based; never panics.
fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
    let rest = text.get(line_start..).unwrap_or("");
    let source = rest.split('\n').next().unwrap_or("").trim_end_matches('\r');
    (line, column, source.to_string())
}

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    known_hosts: Option<Spanned<String>>,
    connection_attempts: Option<Spanned<i64>>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    key: Option<Spanned<String>>,
    jump: Option<Spanned<String>>,
    #[serde(rename = "become")]
    become_: Option<bool>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<toml::Value>>,
}

/// Read and parse the inventory at `path`.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let bytes = std::fs::read(path)
        .map_err(|e| InventoryError::new(Some(path), format!("cannot read the inventory: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(e.as_bytes()).into_owned();
        InventoryError::at(path, &valid, offset, "the inventory is not valid UTF-8")
    })?;
    parse(&text, path)
}

/// Parse inventory `text`; `path` names it in errors and anchors its relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
    parse_with_home(text, path, home_dir().as_deref())
}

/// Collects semantic errors; the one earliest in the file is reported.
struct Problems<'a> {
    path: &'a Path,
    text: &'a str,
    found: Vec<(usize, String)>,
}

impl Problems<'_> {
    fn add(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found.push((span.start, message.into()));
    }

    fn into_result(mut self) -> Result<(), InventoryError> {
        self.found.sort_by_key(|(offset, _)| *offset);
        match self.found.into_iter().next() {
            Some((offset, message)) => {
                Err(InventoryError::at(self.path, self.text, offset, message))
            }
            None => Ok(()),
        }
    }
}

fn parse_with_home(
    text: &str,
    path: &Path,
    home: Option<&Path>,
) -> Result<Inventory, InventoryError> {
    let raw: RawInventory = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        InventoryError::at(path, text, offset, e.message().trim_end())
    })?;
    let base = base_dir(path);
    let mut problems = Problems {
        path,
        text,
        found: Vec::new(),
    };
    let mut inventory = Inventory {
        path: Some(path.to_path_buf()),
        ..Inventory::default()
    };

    if let Some(kh) = &raw.known_hosts {
        if kh.get_ref().trim().is_empty() {
            problems.add(kh.span(), "known_hosts must not be empty");
        } else {
            inventory.known_hosts = Some(resolve_path(kh.get_ref(), &base, home));
        }
    }
    if let Some(n) = &raw.connection_attempts {
        match u32::try_from(*n.get_ref()) {
            Ok(v) if (1..=MAX_CONNECTION_ATTEMPTS).contains(&v) => {
                inventory.connection_attempts = Some(v)
            }
            _ => problems.add(
                n.span(),
                format!(
                    "connection_attempts must be 1 to {MAX_CONNECTION_ATTEMPTS} (tries per host \
                     when a connection is reset or refused before login)"
                ),
            ),
        }
    }
    inventory.vars = convert_vars(&raw.vars, &mut problems);

    for (name, spanned) in &raw.hosts {
        let host = spanned.get_ref();
        if let Err(why) = check_name(name) {
            problems.add(spanned.span(), format!("host name {name:?} {why}"));
        }
        let mut entry = HostEntry {
            become_: host.become_,
            vars: convert_vars(&host.vars, &mut problems),
            ..HostEntry::default()
        };
        if let Some(a) = &host.address {
            match check_name(a.get_ref()) {
                Ok(()) => entry.address = Some(a.get_ref().clone()),
                Err(why) => problems.add(a.span(), format!("address {:?} {why}", a.get_ref())),
            }
        }
        if let Some(u) = &host.user {
            match check_user(u.get_ref()) {
                Ok(()) => entry.user = Some(u.get_ref().clone()),
                Err(why) => problems.add(u.span(), format!("user {:?} {why}", u.get_ref())),
            }
        }
        if let Some(p) = &host.port {
            match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => entry.port = Some(port),
                _ => problems.add(
                    p.span(),
                    format!("port must be between 1 and 65535, not {}", p.get_ref()),
                ),
            }
        }
        if let Some(k) = &host.key {
            if k.get_ref().trim().is_empty() {
                problems.add(k.span(), "key must not be empty");
            } else {
                entry.key = Some(resolve_path(k.get_ref(), &base, home));
            }
        }
        if let Some(j) = &host.jump {
            match parse_jump_list(j.get_ref()) {
                Ok(_) => entry.jump = Some(j.get_ref().clone()),
                Err(why) => problems.add(j.span(), format!("jump {:?}: {why}", j.get_ref())),
            }
        }
        inventory.hosts.insert(name.clone(), entry);
    }

    for (name, spanned) in &raw.groups {
        let group = spanned.get_ref();
        if name == ALL_GROUP {
            problems.add(
                spanned.span(),
                "group \"all\" is implicit (every inventory host); put variables for all hosts in [vars]",
            );
            continue;
        }
        if let Err(why) = check_name(name) {
            problems.add(spanned.span(), format!("group name {name:?} {why}"));
        }
        let mut members: Vec<String> = Vec::new();
        for member in &group.hosts {
            let m = member.get_ref();
            if !raw.hosts.contains_key(m) {
                problems.add(
                    member.span(),
                    format!(
                        "group {name:?} names unknown host {m:?} (inventory hosts: {})",
                        list_or_none(raw.hosts.keys())
                    ),
                );
            } else if !members.contains(m) {
                members.push(m.clone());
            }
        }
        let vars = convert_vars(&group.vars, &mut problems);
        inventory.groups.insert(
            name.clone(),
            Group {
                hosts: members,
                vars,
            },
        );
    }

    // Jump chains through inventory hosts must end somewhere.
    for (name, spanned) in &raw.hosts {
        if let Some(j) = &spanned.get_ref().jump {
            if let Some(cycle) = inventory.jump_cycle(name) {
                problems.add(j.span(), format!("jump loop: {}", cycle.join(" -> ")));
            }
        }
    }

    problems.into_result()?;
    Ok(inventory)
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = names.map(String::as_str).collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(", ")
    }
}

fn convert_vars(raw: &BTreeMap<String, Spanned<toml::Value>>, problems: &mut Problems) -> Vars {
    let mut out = Vars::new();
    for (key, value) in raw {
        match toml_to_json(value.get_ref()) {
            Ok(v) => {
                out.insert(key.clone(), v);
            }
            Err(why) => problems.add(value.span(), format!("variable {key:?}: {why}")),
        }
    }
    out
}

fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} is not a finite number"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => {
            J::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => J::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Host, group and address names: no spaces or control characters, nothing `ssh` would
/// take for an option, nothing that reads as `user@host`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("must not be empty")
    } else if name.starts_with('-') {
        Err("must not start with '-'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain spaces or control characters")
    } else if name.contains(['@', ',', '/']) {
        Err("must not contain '@', ',' or '/'")
    } else {
        Ok(())
    }
}

fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("must not be empty")
    } else if user.starts_with('-') {
        Err("must not start with '-'")
    } else if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain spaces or control characters")
    } else if user.contains(['@', ':', ',']) {
        Err("must not contain '@', ':' or ','")
    } else {
        Ok(())
    }
}

/// `[user@]host[:port]`, with `[v6addr]:port` for IPv6 (a bare IPv6 address has no port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dest {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_dest(spec: &str) -> Result<Dest, String> {
    // ProxyJump also accepts `ssh://[user@]host[:port]`.
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, hostport) = match spec.rsplit_once('@') {
        Some((u, h)) => {
            check_user(u).map_err(|why| format!("user {u:?} {why}"))?;
            (Some(u.to_string()), h)
        }
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {hostport:?}"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("unexpected {after:?} after ']'")),
            },
        }
    } else if hostport.matches(':').count() == 1 {
        hostport
            .split_once(':')
            .map_or((hostport, None), |(h, p)| (h, Some(p)))
    } else {
        (hostport, None)
    };
    if host.is_empty() {
        return Err("missing host name".into());
    }
    if host.starts_with('-')
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!("bad host name {host:?}"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("port must be between 1 and 65535, not {p:?}")),
        },
    };
    Ok(Dest {
        user,
        host: host.to_string(),
        port,
    })
}

/// A jump value: one or more destinations, comma separated, first hop first.
fn parse_jump_list(spec: &str) -> Result<Vec<Dest>, String> {
    spec.split(',').map(|hop| parse_dest(hop.trim())).collect()
}

/// The folder relative inventory paths start from: the inventory file's, made absolute.
fn base_dir(inventory: &Path) -> PathBuf {
    let dir = match inventory.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir)
    }
}

fn resolve_path(raw: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    let expanded = expand_tilde(raw, home);
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

// ---------------------------------------------------------------------------------------
// Targets

/// Where targets get what the inventory does not say; tests swap in their own.
struct Context<'a> {
    resolve: &'a dyn Fn(&str) -> ResolvedHost,
    home: Option<PathBuf>,
    user: String,
}

impl Context<'_> {
    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`, those that exist.
    fn default_keys(&self) -> Vec<PathBuf> {
        let Some(home) = &self.home else {
            return Vec::new();
        };
        ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|k| home.join(".ssh").join(k))
            .filter(|p| p.is_file())
            .collect()
    }
}

impl Inventory {
    /// The inventory used when no `-i` is given: no hosts, groups or variables.
    pub fn empty() -> Inventory {
        Inventory::default()
    }

    /// The known_hosts file to use: the inventory's, else `~/.ssh/known_hosts`.
    pub fn known_hosts_path(&self) -> PathBuf {
        match &self.known_hosts {
            Some(p) => p.clone(),
            None => expand_tilde("~/.ssh/known_hosts", home_dir().as_deref()),
        }
    }

    /// The targets named by `--host` (inventory hosts or anything `ssh NAME` accepts) and
    /// `--group` (must exist; `all` = every inventory host), in the order given, each once.
    pub fn select(
        &self,
        hosts: &[String],
        groups: &[String],
    ) -> Result<Vec<Target>, InventoryError> {
        self.prewarm_ssh_config(hosts, groups);
        let resolve = |name: &str| ssh_config::resolve(name);
        self.select_in(hosts, groups, &self.system_context(&resolve))
    }

    /// Resolves every selected host's ssh config at once, a few threads in parallel: each
    /// resolution runs `ssh -G` twice, a process of 5-15 ms, and doing 2 x N of them one
    /// after the other delayed the first connection by seconds at 100 hosts. The results
    /// land in ssh_config's cache, which `select_in` then reads.
    fn prewarm_ssh_config(&self, hosts: &[String], groups: &[String]) {
        let mut names: Vec<String> = hosts.to_vec();
        for g in groups {
            names.extend(self.group_members(g).unwrap_or_default());
        }
        let mut aliases: Vec<String> = names
            .iter()
            .map(|n| {
                self.hosts
                    .get(n)
                    .and_then(|e| e.address.clone())
                    .unwrap_or_else(|| n.clone())
            })
            .collect();
        aliases.sort();
        aliases.dedup();
        if aliases.len() < 2 {
            return;
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
        let chunk = aliases.len().div_ceil(threads.min(aliases.len()));
        std::thread::scope(|s| {
            for part in aliases.chunks(chunk) {
                s.spawn(move || {
                    for a in part {
                        ssh_config::resolve(a);
                    }
                });
            }
        });
    }

    /// The target for one name, as `host("master")` in a recipe asks for it.
    pub fn target(&self, name: &str) -> Result<Target, InventoryError> {
        let resolve = |name: &str| ssh_config::resolve(name);
        self.target_in(name, &self.system_context(&resolve))
    }

    /// The members of `group` (`all` = every inventory host), or `None` if there is no such group.
    pub fn group_members(&self, group: &str) -> Option<Vec<String>> {
        if group == ALL_GROUP {
            return Some(self.hosts.keys().cloned().collect());
        }
        self.groups.get(group).map(|g| g.hosts.clone())
    }

    /// Every group name, `all` first.
    pub fn group_names(&self) -> Vec<String> {
        std::iter::once(ALL_GROUP.to_string())
            .chain(self.groups.keys().filter(|g| *g != ALL_GROUP).cloned())
            .collect()
    }

    fn system_context<'a>(&self, resolve: &'a dyn Fn(&str) -> ResolvedHost) -> Context<'a> {
        Context {
            resolve,
            home: home_dir(),
            user: current_user(),
        }
    }

    fn not_in_inventory(&self, h: &str) -> String {
        let hint = crate::hints::did_you_mean(h, self.hosts.keys().map(String::as_str))
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        let known: Vec<&str> = self.hosts.keys().map(String::as_str).collect();
        format!(
            "host {h:?} is not in the inventory{hint}; its hosts: {}. To reach a host outside \
             the inventory, add it as [hosts.{h}] (with its address), or run without -i",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    fn error(&self, message: impl Into<String>) -> InventoryError {
        InventoryError::new(self.path.as_deref(), message)
    }

    fn select_in(
        &self,
        hosts: &[String],
        groups: &[String],
        ctx: &Context,
    ) -> Result<Vec<Target>, InventoryError> {
        // With an inventory file, a `--host` must be one of its hosts: a typo would otherwise
        // be looked up in DNS and reported unreachable, after other hosts were touched.
        if self.path.is_some() {
            for h in hosts {
                let named = self.hosts.contains_key(h)
                    || parse_dest(h).is_ok_and(|d| self.hosts.contains_key(&d.host));
                if !named {
                    return Err(self.error(self.not_in_inventory(h)));
                }
            }
        }
        let mut names: Vec<String> = hosts.to_vec();
        for group in groups {
            match self.group_members(group) {
                Some(members) => names.extend(members),
                None => {
                    return Err(self.error(format!(
                        "unknown group {group:?} (known groups: {})",
                        self.group_names().join(", ")
                    )))
                }
            }
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names.iter().map(|n| self.target_in(n, ctx)).collect()
    }

    fn target_in(&self, name: &str, ctx: &Context) -> Result<Target, InventoryError> {
        let mut chain = Vec::new();
        self.build(name, ctx, &mut chain, true)
    }

    /// Builds the target for `spec`; `chain` holds the hosts being built (loop detection);
    /// `with_jump` is false for the later hops of a jump list, whose jump the list decides.
    fn build(
        &self,
        spec: &str,
        ctx: &Context,
        chain: &mut Vec<String>,
        with_jump: bool,
    ) -> Result<Target, InventoryError> {
        let (dest, entry) = match self.hosts.get(spec) {
            Some(entry) => (
                Dest {
                    user: None,
                    host: spec.to_string(),
                    port: None,
                },
                Some(entry),
            ),
            None => {
                let dest =
                    parse_dest(spec).map_err(|why| self.error(format!("host {spec:?}: {why}")))?;
                let entry = self.hosts.get(&dest.host);
                (dest, entry)
            }
        };
        if chain.contains(&dest.host) || chain.len() >= MAX_JUMP_DEPTH {
            let looped = chain.contains(&dest.host);
            let mut hops = chain.clone();
            hops.push(dest.host.clone());
            let what = if looped {
                "jump loop".to_string()
            } else {
                format!("jump chain longer than {MAX_JUMP_DEPTH} hops")
            };
            return Err(self.error(format!("{what}: {}", hops.join(" -> "))));
        }

        let empty = HostEntry::default();
        let entry_or_empty = entry.unwrap_or(&empty);
        // Like `ssh ADDRESS`: the ssh config is consulted for what would be typed.
        let alias = entry_or_empty
            .address
            .clone()
            .unwrap_or_else(|| dest.host.clone());
        let resolved = (ctx.resolve)(&alias);

        let address = resolved.hostname.clone().unwrap_or(alias);
        let port = dest
            .port
            .or(entry_or_empty.port)
            .or(resolved.port)
            .unwrap_or(22);
        let user = dest
            .user
            .clone()
            .or_else(|| entry_or_empty.user.clone())
            .or_else(|| resolved.user.clone())
            .unwrap_or_else(|| ctx.user.clone());
        let keys = match &entry_or_empty.key {
            Some(k) => vec![k.clone()],
            None => {
                // Like OpenSSH, configured identity files that do not exist are skipped.
                let configured: Vec<PathBuf> = resolved
                    .identity_files
                    .iter()
                    .filter(|p| p.is_file())
                    .cloned()
                    .collect();
                if configured.is_empty() {
                    ctx.default_keys()
                } else {
                    configured
                }
            }
        };
        let become_ = entry_or_empty.become_.unwrap_or(user != "root");

        let jump = if with_jump {
            let spec = entry_or_empty.jump.clone().or(resolved.proxy_jump);
            match spec {
                Some(list) => {
                    chain.push(dest.host.clone());
                    let built = self.build_jump(&list, ctx, chain);
                    chain.pop();
                    built?
                }
                None => None,
            }
        } else {
            None
        };

        let (vars, groups) = match entry {
            Some(e) => self.vars_for(&dest.host, e),
            None => (self.vars.clone(), Vec::new()),
        };
        Ok(Target {
            name: spec.to_string(),
            address,
            port,
            user,
            keys,
            jump,
            become_,
            vars,
            groups,
        })
    }

    /// `a,b,c` → c reached through b, reached through a (as OpenSSH's ProxyJump); the first
    /// hop keeps its own jump.
    fn build_jump(
        &self,
        list: &str,
        ctx: &Context,
        chain: &mut Vec<String>,
    ) -> Result<Option<Box<Target>>, InventoryError> {
        let hops: Vec<&str> = list.split(',').map(str::trim).collect();
        if hops.iter().any(|h| h.is_empty()) {
            return Err(self.error(format!("jump {list:?}: empty hop")));
        }
        let mut previous: Option<Box<Target>> = None;
        for (i, hop) in hops.iter().enumerate() {
            let mut target = self.build(hop, ctx, chain, i == 0)?;
            if previous.is_some() {
                target.jump = previous.take();
            }
            previous = Some(Box::new(target));
        }
        Ok(previous)
    }

    /// `[vars]` < each group containing `host` (name order) < the host's own vars.
    fn vars_for(&self, host: &str, entry: &HostEntry) -> (Vars, Vec<String>) {
        let mut vars = self.vars.clone();
        let mut groups = Vec::new();
        for (name, group) in &self.groups {
            if group.hosts.iter().any(|h| h == host) {
                vars.extend(group.vars.clone());
                groups.push(name.clone());
            }
        }
        vars.extend(entry.vars.clone());
        (vars, groups)
    }

    /// A jump loop through inventory hosts starting at `start`, as the names along it.
    fn jump_cycle(&self, start: &str) -> Option<Vec<String>> {
        let mut path = vec![start.to_string()];
        self.walk_jumps(start, &mut path)
    }

    fn walk_jumps(&self, host: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
        let jump = self.hosts.get(host)?.jump.as_deref()?;
        let hops = parse_jump_list(jump).ok()?;
        // Only the first hop's own jump is followed, as when connecting.
        for (i, hop) in hops.iter().enumerate() {
            let hop = &hop.host;
            if !self.hosts.contains_key(hop) {
                continue;
            }
            if path.contains(hop) {
                let mut cycle = path.clone();
                cycle.push(hop.clone());
                return Some(cycle);
            }
            if i == 0 && path.len() < MAX_JUMP_DEPTH {
                path.push(hop.clone());
                let found = self.walk_jumps(hop, path);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
        }
        None
    }
}

/// Checks that this machine can resolve the address it will connect to for each target
/// (the outermost jump host, for a target behind one), so that a misspelt or unknown name is
/// bad input found before any host is touched, not an unreachable host. Looked up a few at a
/// time in parallel.
pub fn check_resolvable(targets: &[Target]) -> Result<(), InventoryError> {
    use std::net::ToSocketAddrs;
    let first_hop = |t: &Target| -> (String, String, u16) {
        let mut hop = t;
        while let Some(j) = &hop.jump {
            hop = j;
        }
        (t.name.clone(), hop.address.clone(), hop.port)
    };
    let hops: Vec<(String, String, u16)> = targets.iter().map(first_hop).collect();
    let lookup = |(name, addr, port): &(String, String, u16)| -> Option<String> {
        match (addr.as_str(), *port).to_socket_addrs() {
            Ok(mut a) => match a.next() {
                Some(_) => None,
                None => Some(format!("host {name:?}: {addr} has no address")),
            },
            Err(e) => Some(format!(
                "host {name:?}: cannot resolve {addr} ({e}); check the name, or give its \
                 address (inventory `address`, or HostName in ~/.ssh/config)"
            )),
        }
    };
    let threads = 8.min(hops.len()).max(1);
    let chunk = hops.len().div_ceil(threads).max(1);
    let mut bad: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = hops
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().filter_map(lookup).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if bad.is_empty() {
        return Ok(());
    }
    let more = bad.len() - 1;
    let mut msg = bad.swap_remove(0);
    if more > 0 {
        msg.push_str(&format!(" (and {more} more unresolvable hosts)"));
    }
    Err(InventoryError::new(None, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    const EXAMPLE: &str = r#"known_hosts = "~/.ssh/known_hosts"

[vars]
slurm_version = "22.05.8"
role = "generic"

[hosts.master]
address = "192.0.2.10"
user = "root"
port = 22
key = "~/.ssh/id_ed25519"
jump = "bastion"
vars = { slurm_role = "controller" }

[hosts.bastion]
address = "198.51.100.7"
user = "jumper"
port = 2200
key = "keys/bastion"

[hosts.w1]
[hosts.w2]
become = false

[groups.workers]
hosts = ["w1", "w2"]
vars = { role = "worker", partition = "batch" }

[groups.gpu]
hosts = ["w2"]
vars = { partition = "gpu" }
"#;

    fn home() -> PathBuf {
        PathBuf::from("/home/tester")
    }

    fn inv(text: &str) -> Inventory {
        parse_with_home(text, Path::new("/site/inv.toml"), Some(&home())).unwrap()
    }

    fn err(text: &str) -> InventoryError {
        parse_with_home(text, Path::new("/site/inv.toml"), Some(&home())).unwrap_err()
    }

    /// A stand-in for `ssh -G`: a fixed table of names.
    fn fake_ssh(table: &[(&str, ResolvedHost)]) -> impl Fn(&str) -> ResolvedHost {
        let map: HashMap<String, ResolvedHost> = table
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |name: &str| map.get(name).cloned().unwrap_or_default()
    }

    fn ctx<'a>(resolve: &'a dyn Fn(&str) -> ResolvedHost, home: Option<&Path>) -> Context<'a> {
        Context {
            resolve,
            home: home.map(Path::to_path_buf),
            user: "tester".into(),
        }
    }

    fn no_ssh() -> impl Fn(&str) -> ResolvedHost {
        |_: &str| ResolvedHost::default()
    }

    #[test]
    fn parses_the_design_example() {
        let inv = inv(EXAMPLE);
        assert_eq!(inv.path.as_deref(), Some(Path::new("/site/inv.toml")));
        assert_eq!(inv.known_hosts, Some(home().join(".ssh/known_hosts")));
        assert_eq!(inv.vars["slurm_version"], json!("22.05.8"));
        let master = &inv.hosts["master"];
        assert_eq!(master.address.as_deref(), Some("192.0.2.10"));
        assert_eq!(master.user.as_deref(), Some("root"));
        assert_eq!(master.port, Some(22));
        assert_eq!(master.key, Some(home().join(".ssh/id_ed25519")));
        assert_eq!(master.jump.as_deref(), Some("bastion"));
        assert_eq!(master.become_, None);
        assert_eq!(master.vars["slurm_role"], json!("controller"));
        // Relative paths start at the inventory's folder.
        assert_eq!(
            inv.hosts["bastion"].key,
            Some(PathBuf::from("/site/keys/bastion"))
        );
        assert_eq!(inv.hosts["w1"], HostEntry::default());
        assert_eq!(inv.hosts["w2"].become_, Some(false));
        assert_eq!(inv.groups["workers"].hosts, vec!["w1", "w2"]);
        assert_eq!(inv.group_names(), vec!["all", "gpu", "workers"]);
        assert_eq!(
            inv.group_members("all").unwrap(),
            vec!["bastion", "master", "w1", "w2"]
        );
        assert_eq!(inv.group_members("gpu").unwrap(), vec!["w2"]);
        assert_eq!(inv.group_members("nope"), None);
    }

    #[test]
    fn empty_inventory_and_empty_file() {
        let empty = Inventory::empty();
        assert_eq!(empty.group_names(), vec!["all"]);
        assert_eq!(empty.group_members("all").unwrap(), Vec::<String>::new());
        let parsed = inv("");
        assert!(parsed.hosts.is_empty() && parsed.known_hosts.is_none());
        assert!(Inventory::empty()
            .known_hosts_path()
            .ends_with(".ssh/known_hosts"));
        assert_eq!(
            inv("known_hosts = \"kh\"").known_hosts_path(),
            PathBuf::from("/site/kh")
        );
        assert_eq!(
            inv("known_hosts = \"/abs/kh\"").known_hosts,
            Some(PathBuf::from("/abs/kh"))
        );
    }

    #[test]
    fn syntax_error_shows_file_line_column_and_marker() {
        let e = err("[vars]\nx = 1\ny = = 2\n");
        assert_eq!((e.line, e.column), (Some(3), Some(5)));
        let shown = e.to_string();
        assert!(
            shown.starts_with("inventory error: /site/inv.toml:3:5: "),
            "{shown}"
        );
        assert!(shown.ends_with("\n  |\n3 | y = = 2\n  |     ^"), "{shown}");
    }

    #[test]
    fn a_syntax_error_never_shows_a_secret_value() {
        for text in [
            "[vars]\ndb_password = \"INVSECRET-333\n",
            "[vars]\napi_key = \"INVSECRET-333\" x\n",
            "[vars]\ndb = { passphrase = \"INVSECRET-333\", port = }\n",
            "[vars]\ndb.private_key = 'INVSECRET-333\n",
            "[hosts.a]\naddress = \"a\"\n[hosts.a.vars]\n\"join_tokens\" = [\"INVSECRET-333\",\n",
        ] {
            let shown = err(text).to_string();
            assert!(!shown.contains("INVSECRET"), "{shown}");
            assert!(shown.contains("<secret: hidden>"), "{shown}");
        }
        let shown = err("[vars]\nport = \"22\n").to_string();
        assert!(shown.contains("port = \"22"), "{shown}");
    }

    #[test]
    fn unknown_fields_are_refused_at_their_key() {
        let e = err("[hosts.a]\nadress = \"x\"\n");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.column, Some(1));
        assert!(e.message.contains("unknown field `adress`"), "{e}");
        let e = err("host = 1\n");
        assert!(e.message.contains("unknown field `host`"), "{e}");
        let e = err("[groups.g]\nmembers = []\n");
        assert!(e.message.contains("unknown field `members`"), "{e}");
    }

    #[test]
    fn bad_ports() {
        for (value, col) in [("0", 8), ("70000", 8), ("-1", 8)] {
            let e = err(&format!("[hosts.a]\nport = {value}\n"));
            assert_eq!((e.line, e.column), (Some(2), Some(col)), "{e}");
            assert_eq!(
                e.message,
                format!("port must be between 1 and 65535, not {value}")
            );
        }
        let e = err("[hosts.a]\nport = \"22\"\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn group_naming_an_unknown_host() {
        let e = err("[hosts.w1]\n[groups.g]\nhosts = [\"w1\", \"w3\"]\n");
        assert_eq!((e.line, e.column), (Some(3), Some(16)), "{e}");
        assert_eq!(
            e.message,
            "group \"g\" names unknown host \"w3\" (inventory hosts: w1)"
        );
        let e = err("[groups.g]\nhosts = [\"x\"]\n");
        assert!(e.message.ends_with("(inventory hosts: none)"), "{e}");
    }

    #[test]
    fn group_all_is_reserved() {
        let e = err("[hosts.a]\n[groups.all]\nhosts = [\"a\"]\n");
        assert!(e.message.contains("implicit"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn duplicate_group_members_are_kept_once() {
        let inv = inv("[hosts.a]\n[hosts.b]\n[groups.g]\nhosts = [\"b\", \"a\", \"b\"]\n");
        assert_eq!(inv.groups["g"].hosts, vec!["b", "a"]);
    }

    #[test]
    fn jump_loops_are_found_at_parse_time() {
        let e = err("[hosts.a]\njump = \"b\"\n[hosts.b]\njump = \"c\"\n[hosts.c]\njump = \"a\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(8)), "{e}");
        assert_eq!(e.message, "jump loop: a -> b -> c -> a");
        let e = err("[hosts.a]\njump = \"root@a:2222\"\n");
        assert_eq!(e.message, "jump loop: a -> a");
        // A later hop of a list is a loop too; a non-inventory hop breaks nothing.
        let e = err("[hosts.a]\njump = \"outside,a\"\n");
        assert_eq!(e.message, "jump loop: a -> a");
        inv("[hosts.a]\njump = \"b\"\n[hosts.b]\njump = \"elsewhere\"\n");
    }

    #[test]
    fn connection_attempts_are_bounded() {
        assert_eq!(
            inv("connection_attempts = 5\n").connection_attempts,
            Some(5)
        );
        assert_eq!(inv("").connection_attempts, None);
        for bad in ["0", "-1", "21", "99999999999"] {
            let e = err(&format!("connection_attempts = {bad}\n"));
            assert!(e.message.contains("1 to 20"), "{bad}: {e}");
            assert_eq!((e.line, e.column), (Some(1), Some(23)), "{bad}");
        }
    }

    #[test]
    fn bad_jump_syntax() {
        for bad in [
            "",
            "user@",
            "@host",
            "host:99999",
            "host:0",
            "[::1",
            "[::1]x",
            "a,,b",
            "-oX",
        ] {
            let e = err(&format!("[hosts.a]\njump = {bad:?}\n"));
            assert_eq!(e.line, Some(2), "{bad}: {e}");
            assert!(e.message.starts_with("jump "), "{bad}: {e}");
        }
        inv("[hosts.a]\njump = \"u@h:2222, [::1]:22,fe80::1,plain,ssh://u@x:2\"\n");
    }

    #[test]
    fn bad_names_addresses_and_users() {
        let e = err("[hosts.\"bad name\"]\n");
        assert!(e.message.contains("host name \"bad name\""), "{e}");
        assert_eq!(e.line, Some(1));
        let e = err("[hosts.a]\naddress = \"-oProxyCommand=x\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(11)));
        let e = err("[hosts.a]\nuser = \"a b\"\n");
        assert!(e.message.starts_with("user \"a b\""), "{e}");
        let e = err("[hosts.a]\nkey = \"  \"\n");
        assert_eq!(e.message, "key must not be empty");
        let e = err("known_hosts = \"\"\n");
        assert_eq!(e.message, "known_hosts must not be empty");
        let e = err("[groups.\"\"]\n");
        assert!(e.message.contains("group name \"\""), "{e}");
    }

    #[test]
    fn the_earliest_problem_is_reported() {
        let e = err("[hosts.a]\nport = 0\n[groups.g]\nhosts = [\"zz\"]\n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn variable_values() {
        let inv = inv(
            "[vars]\nwhen = 1979-05-27T07:32:00Z\nlist = [1, \"two\", 3.5, true]\n\
             table = { a = { b = [] } }\n",
        );
        assert_eq!(inv.vars["when"], json!("1979-05-27T07:32:00Z"));
        assert_eq!(inv.vars["list"], json!([1, "two", 3.5, true]));
        assert_eq!(inv.vars["table"], json!({"a": {"b": []}}));
        let e = err("[vars]\nx = 1\nbad = nan\n");
        assert_eq!((e.line, e.column), (Some(3), Some(7)));
        assert_eq!(e.message, "variable \"bad\": NaN is not a finite number");
        let e = err("[hosts.a]\nvars = { deep = [inf] }\n");
        assert!(e.message.contains("inf is not a finite number"), "{e}");
    }

    #[test]
    fn variable_precedence() {
        let inv = inv(EXAMPLE);
        let resolve = no_ssh();
        let c = ctx(&resolve, None);
        let w1 = inv.target_in("w1", &c).unwrap();
        assert_eq!(w1.vars["role"], json!("worker"));
        assert_eq!(w1.vars["partition"], json!("batch"));
        assert_eq!(w1.vars["slurm_version"], json!("22.05.8"));
        assert_eq!(w1.groups, vec!["workers"]);
        // gpu sorts before workers, so workers' value wins for w2.
        let w2 = inv.target_in("w2", &c).unwrap();
        assert_eq!(w2.vars["partition"], json!("batch"));
        assert_eq!(w2.groups, vec!["gpu", "workers"]);
        let master = inv.target_in("master", &c).unwrap();
        assert_eq!(master.vars["slurm_role"], json!("controller"));
        assert_eq!(master.vars["role"], json!("generic"));
        assert!(master.groups.is_empty());
        // Host vars beat group vars.
        let inv2 = super::tests::inv(
            "[vars]\nx = 1\n[hosts.h]\nvars = { x = 3 }\n[groups.g]\nhosts = [\"h\"]\nvars = { x = 2 }\n",
        );
        assert_eq!(inv2.target_in("h", &c).unwrap().vars["x"], json!(3));
        // A host outside the inventory still gets [vars].
        assert_eq!(
            inv.target_in("other", &c).unwrap().vars["role"],
            json!("generic")
        );
    }

    #[test]
    fn inventory_fields_win_over_ssh_config() {
        let inv = inv(EXAMPLE);
        let resolve = fake_ssh(&[(
            "192.0.2.10",
            ResolvedHost {
                hostname: Some("10.9.9.9".into()),
                user: Some("cfguser".into()),
                port: Some(2022),
                identity_files: vec![],
                proxy_jump: Some("cfgjump".into()),
            },
        )]);
        let c = ctx(&resolve, None);
        let master = inv.target_in("master", &c).unwrap();
        // The config is consulted for the address, as `ssh 192.0.2.10` would be.
        assert_eq!(master.address, "10.9.9.9");
        assert_eq!(master.user, "root");
        assert_eq!(master.port, 22);
        assert_eq!(master.keys, vec![home().join(".ssh/id_ed25519")]);
        assert!(!master.become_, "root needs no sudo");
        let bastion = master.jump.as_deref().unwrap();
        assert_eq!(bastion.name, "bastion");
        assert_eq!(bastion.address, "198.51.100.7");
        assert_eq!(bastion.user, "jumper");
        assert_eq!(bastion.port, 2200);
        assert_eq!(bastion.keys, vec![PathBuf::from("/site/keys/bastion")]);
        assert!(bastion.become_);
        assert!(bastion.jump.is_none());
    }

    #[test]
    fn missing_fields_come_from_ssh_config_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_rsa"), "").unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "").unwrap();
        std::fs::write(home.join("cfgkey"), "").unwrap();
        let inv = inv("[hosts.w1]\n[hosts.w2]\nuser = \"admin\"\n");
        let resolve = fake_ssh(&[(
            "w1",
            ResolvedHost {
                hostname: Some("10.0.0.1".into()),
                user: Some("slurm".into()),
                port: Some(2222),
                identity_files: vec![home.join("missing"), home.join("cfgkey")],
                proxy_jump: None,
            },
        )]);
        let c = ctx(&resolve, Some(home));
        let w1 = inv.target_in("w1", &c).unwrap();
        assert_eq!(
            (w1.address.as_str(), w1.user.as_str(), w1.port),
            ("10.0.0.1", "slurm", 2222)
        );
        assert_eq!(w1.keys, vec![home.join("cfgkey")]);
        assert!(w1.become_);
        let w2 = inv.target_in("w2", &c).unwrap();
        assert_eq!(
            (w2.address.as_str(), w2.user.as_str(), w2.port),
            ("w2", "admin", 22)
        );
        // Defaults: existing ones of id_ed25519, id_ecdsa, id_rsa, in that order.
        assert_eq!(
            w2.keys,
            vec![home.join(".ssh/id_ed25519"), home.join(".ssh/id_rsa")]
        );
        let anon = inv.target_in("anon", &c).unwrap();
        assert_eq!(anon.user, "tester");
        assert_eq!(anon.address, "anon");
    }

    #[test]
    fn names_outside_the_inventory_resolve_like_ssh() {
        let inv = Inventory::empty();
        let resolve = fake_ssh(&[
            (
                "box",
                ResolvedHost {
                    hostname: Some("box.example".into()),
                    user: Some("u".into()),
                    port: Some(2200),
                    identity_files: vec![],
                    proxy_jump: Some("gw".into()),
                },
            ),
            (
                "gw",
                ResolvedHost {
                    hostname: Some("gw.example".into()),
                    ..ResolvedHost::default()
                },
            ),
        ]);
        let c = ctx(&resolve, None);
        let t = inv.target_in("box", &c).unwrap();
        assert_eq!(
            (t.address.as_str(), t.user.as_str(), t.port),
            ("box.example", "u", 2200)
        );
        let gw = t.jump.as_deref().unwrap();
        assert_eq!(
            (gw.name.as_str(), gw.address.as_str()),
            ("gw", "gw.example")
        );
        // user@host:port overrides the config, like `ssh -p`.
        let t = inv.target_in("root@box:2022", &c).unwrap();
        assert_eq!(t.name, "root@box:2022");
        assert_eq!(
            (t.address.as_str(), t.user.as_str(), t.port),
            ("box.example", "root", 2022)
        );
        assert!(!t.become_);
        let t = inv.target_in("[fe80::1]:2200", &c).unwrap();
        assert_eq!((t.address.as_str(), t.port), ("fe80::1", 2200));
        let t = inv.target_in("fe80::2", &c).unwrap();
        assert_eq!((t.address.as_str(), t.port), ("fe80::2", 22));
        for bad in ["", "u@", "h:abc", "-x", "a b"] {
            let e = inv.target_in(bad, &c).unwrap_err();
            assert!(e.to_string().starts_with("inventory error: host "), "{e}");
        }
    }

    #[test]
    fn user_at_inventory_host_keeps_the_entry() {
        let inv = inv(EXAMPLE);
        let resolve = no_ssh();
        let c = ctx(&resolve, None);
        let t = inv.target_in("admin@bastion:2201", &c).unwrap();
        assert_eq!(
            (t.address.as_str(), t.user.as_str(), t.port),
            ("198.51.100.7", "admin", 2201)
        );
        assert_eq!(t.keys, vec![PathBuf::from("/site/keys/bastion")]);
    }

    #[test]
    fn jump_lists_chain_like_proxyjump() {
        let inv = inv(
            "[hosts.t]\njump = \"a, u@b:2022\"\n[hosts.a]\njump = \"c\"\n[hosts.b]\njump = \"ignored\"\n[hosts.c]\n",
        );
        let resolve = no_ssh();
        let c = ctx(&resolve, None);
        let t = inv.target_in("t", &c).unwrap();
        // t is reached through b, b through a, a through its own jump c.
        let b = t.jump.as_deref().unwrap();
        assert_eq!(
            (b.name.as_str(), b.user.as_str(), b.port),
            ("u@b:2022", "u", 2022)
        );
        let a = b.jump.as_deref().unwrap();
        assert_eq!(a.name, "a");
        let c_hop = a.jump.as_deref().unwrap();
        assert_eq!(c_hop.name, "c");
        assert!(c_hop.jump.is_none());
    }

    #[test]
    fn jump_loops_from_ssh_config_are_errors_not_overflows() {
        let inv = Inventory::empty();
        let looping = |name: &str| ResolvedHost {
            proxy_jump: Some(if name == "a" { "b" } else { "a" }.into()),
            ..ResolvedHost::default()
        };
        let c = ctx(&looping, None);
        let e = inv.target_in("a", &c).unwrap_err();
        assert_eq!(e.message, "jump loop: a -> b -> a");
        // Ever new names: stopped by the depth limit.
        let endless = |name: &str| ResolvedHost {
            proxy_jump: Some(format!("{name}x")),
            ..ResolvedHost::default()
        };
        let c = ctx(&endless, None);
        let e = inv.target_in("h", &c).unwrap_err();
        assert!(
            e.message
                .starts_with("jump chain longer than 16 hops: h -> hx -> hxx"),
            "{e}"
        );
    }

    #[test]
    fn select_orders_dedupes_and_checks_groups() {
        let inv = inv(EXAMPLE);
        let resolve = no_ssh();
        let c = ctx(&resolve, None);
        let names = |hosts: &[&str], groups: &[&str]| -> Vec<String> {
            let hosts: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
            let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
            inv.select_in(&hosts, &groups, &c)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(
            names(&["w2", "master"], &["workers"]),
            vec!["w2", "master", "w1"]
        );
        assert_eq!(
            names(&[], &["gpu", "all"]),
            vec!["w2", "bastion", "master", "w1"]
        );
        assert_eq!(names(&["w1", "w1"], &[]), vec!["w1"]);
        assert!(names(&[], &[]).is_empty());
        // A name outside an inventory file is refused (with a hint), not looked up.
        let e = inv
            .select_in(&["mastr".to_string()], &[], &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("host \"mastr\" is not in the inventory"), "{e}");
        assert!(e.contains("did you mean \"master\"?"), "{e}");
        assert!(e.contains("run without -i"), "{e}");
        assert!(inv
            .select_in(&["root@w1:2222".to_string()], &[], &c)
            .is_ok());
        // Without an inventory file any name is a target, as `ssh NAME` would take it.
        let none = Inventory::empty();
        assert!(none.select_in(&["x.example".to_string()], &[], &c).is_ok());
        let e = inv.select_in(&[], &["wokers".to_string()], &c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inventory error: /site/inv.toml: unknown group \"wokers\" (known groups: all, gpu, workers)"
        );
        let e = Inventory::empty()
            .select_in(&[], &["g".to_string()], &c)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "inventory error: unknown group \"g\" (known groups: all)"
        );
    }

    #[test]
    fn unresolvable_addresses_are_found_before_connecting() {
        let t = |name: &str, address: &str, jump: Option<Target>| Target {
            name: name.into(),
            address: address.into(),
            port: 22,
            user: "root".into(),
            keys: vec![],
            jump: jump.map(Box::new),
            become_: false,
            vars: Vars::new(),
            groups: vec![],
        };
        assert!(check_resolvable(&[t("a", "127.0.0.1", None)]).is_ok());
        let e = check_resolvable(&[
            t("a", "127.0.0.1", None),
            t("typo", "nosuchhost.invalid", None),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("host \"typo\": cannot resolve nosuchhost.invalid"),
            "{e}"
        );
        // Behind a jump host, the jump host resolves the name: only the first hop is ours.
        let behind = t(
            "inner",
            "inner.invalid",
            Some(t("bastion", "127.0.0.1", None)),
        );
        assert!(check_resolvable(&[behind]).is_ok());
    }

    #[test]
    fn public_entry_points_work_without_a_test_context() {
        let inv = inv("[hosts.local]\naddress = \"127.0.0.1\"\nuser = \"me\"\nport = 2201\nkey = \"/k\"\njump = \"root@127.0.0.2\"\n");
        let t = inv.target("local").unwrap();
        assert_eq!(
            (t.address.as_str(), t.port, t.user.as_str()),
            ("127.0.0.1", 2201, "me")
        );
        let all = inv.select(&[], &["all".into()]).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn load_reads_files_and_reports_io_and_encoding_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        std::fs::write(&path, "[hosts.a]\nkey = \"k\"\n").unwrap();
        let inv = load(&path).unwrap();
        assert_eq!(inv.hosts["a"].key, Some(dir.path().join("k")));
        let missing = dir.path().join("missing.toml");
        let e = load(&missing).unwrap_err();
        assert!(e.to_string().contains("cannot read the inventory"), "{e}");
        assert!(e.to_string().contains("missing.toml"), "{e}");
        std::fs::write(&path, b"[vars]\nx = \"\xff\"\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(6)));
        assert!(e.message.contains("UTF-8"));
    }

    #[test]
    fn locate_handles_any_offset() {
        let text = "ab\né\tx\n";
        assert_eq!(locate(text, 0), (1, 1, "ab".into()));
        assert_eq!(locate(text, 3), (2, 1, "é\tx".into()));
        assert_eq!(locate(text, 4), (2, 1, "é\tx".into()), "inside a character");
        assert_eq!(locate(text, 6), (2, 3, "é\tx".into()));
        assert_eq!(locate(text, 999), (3, 1, String::new()));
        assert_eq!(locate("", 5), (1, 1, String::new()));
    }

    #[test]
    fn marker_lines_up_with_tabs_and_hides_control_characters() {
        let e = InventoryError {
            path: Some("f".into()),
            line: Some(12),
            column: Some(4),
            message: "m".into(),
            source_line: Some("\tx\u{1b}y".into()),
        };
        assert_eq!(
            e.to_string(),
            "inventory error: f:12:4: m\n   |\n12 | \tx?y\n   | \t  ^"
        );
    }

    #[test]
    fn deeply_nested_values_are_refused_not_crashed_on() {
        // toml limits nesting itself, so converting values cannot overflow the stack.
        let nested = |open: &str, close: &str, depth: usize| {
            let text = format!(
                "[vars]\nx = {}1{}\n",
                open.repeat(depth),
                close.repeat(depth)
            );
            parse_with_home(&text, Path::new("x.toml"), None)
        };
        assert!(nested("[", "]", 10).is_ok());
        let e = nested("[", "]", 100_000).unwrap_err();
        assert!(e.message.contains("recursion"), "{e}");
        assert!(nested("{a=", "}", 100_000).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_any_text(text in "\\PC*") {
            let _ = parse_with_home(&text, Path::new("fuzz.toml"), None).map_err(|e| e.to_string());
        }

        #[test]
        fn parse_never_panics_on_mangled_inventories(
            cuts in proptest::collection::vec((0usize..2000, "[\\[\\]{}=\",.@:!#\\n a-z0-9~\\-]{0,6}"), 1..6)
        ) {
            let mut text = EXAMPLE.to_string();
            for (at, insert) in cuts {
                let mut at = at.min(text.len());
                while !text.is_char_boundary(at) { at -= 1; }
                text.insert_str(at, &insert);
            }
            if let Ok(inv) = parse_with_home(&text, Path::new("fuzz.toml"), None) {
                let resolve = no_ssh();
                let c = ctx(&resolve, None);
                let names: Vec<String> = inv.hosts.keys().cloned().collect();
                let _ = inv.select_in(&names, &inv.group_names(), &c);
            }
        }
    }
}
