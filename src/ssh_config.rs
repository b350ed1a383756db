//! Resolve a host name the way `ssh NAME` would: HostName, User, Port, IdentityFile, ProxyJump.
//!
//! OpenSSH's own resolution (`ssh -G NAME`) is preferred: it handles `Match`, `Include`,
//! `CanonicalizeHostname` and every quirk exactly. `ssh -G` prints defaults for everything
//! (current user, port 22, the default identity files), so its output is compared with a
//! baseline run that reads no config at all (`ssh -F /dev/null -G NAME`): a value counts as
//! set only when it differs from that baseline. A value set to exactly its default is thus
//! reported as unset, which is harmless because callers then fall back to the same default.
//! When `ssh` is missing or fails, the `ssh2-config` crate parses the file instead (no `Match`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the ssh configuration says about one host; `None`/empty means "not configured".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedHost {
    /// `HostName`: the real address to connect to.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`s, with `~` and the `%d %u %h %r %p %n %%` tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` as written: one or more `[user@]host[:port]`, comma separated.
    pub proxy_jump: Option<String>,
}

/// Resolve `name` with the user's default configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`).
pub fn resolve(name: &str) -> ResolvedHost {
    resolve_with(name, None)
}

/// Resolve `name` with `config` instead of the default files (`ssh -F config -G name`).
/// Results are cached per process: a run resolves the same names many times.
pub fn resolve_with(name: &str, config: Option<&Path>) -> ResolvedHost {
    type Cache = Mutex<HashMap<(String, Option<PathBuf>), ResolvedHost>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (name.to_string(), config.map(Path::to_path_buf));
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock() {
        if let Some(hit) = map.get(&key) {
            return hit.clone();
        }
    }
    let resolved = resolve_uncached(name, config);
    if let Ok(mut map) = cache.lock() {
        map.insert(key, resolved.clone());
    }
    resolved
}

fn resolve_uncached(name: &str, config: Option<&Path>) -> ResolvedHost {
    if !is_plausible_name(name) {
        return ResolvedHost::default();
    }
    if !config_may_apply(config) {
        // No config file (nor anything it includes) sets any of the values resolved here:
        // the answer is "not configured", without two `ssh -G` processes per host.
        return ResolvedHost::default();
    }
    if let Some(found) = resolve_with_openssh(name, config) {
        return found;
    }
    match resolve_with_crate(name, config) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!("ssh config not used for {name}: {e}");
            ResolvedHost::default()
        }
    }
}

/// Keywords that can change what `resolve` reports (lowercase). `Match` can do anything.
const RELEVANT: &[&str] = &[
    "hostname",
    "user",
    "port",
    "identityfile",
    "proxyjump",
    "match",
    "canonicalizehostname",
    "canonicaldomains",
];

/// Whether the config files `ssh` would read (and their `Include`s) mention any keyword that
/// matters here; computed once per process. When unsure (an unreadable file, a glob more
/// complex than `dir/*suffix`), it says yes and `ssh -G` decides.
fn config_may_apply(config: Option<&Path>) -> bool {
    static ANSWER: OnceLock<Mutex<HashMap<Option<PathBuf>, bool>>> = OnceLock::new();
    let key = config.map(Path::to_path_buf);
    let cache = ANSWER.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().ok().and_then(|m| m.get(&key).copied()) {
        return hit;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let files: Vec<(PathBuf, PathBuf)> = match config {
        Some(f) => vec![(
            f.to_path_buf(),
            f.parent().unwrap_or(Path::new("/")).to_path_buf(),
        )],
        None => {
            let mut v = Vec::new();
            if let Some(h) = &home {
                v.push((h.join(".ssh/config"), h.join(".ssh")));
            }
            v.push((
                PathBuf::from("/etc/ssh/ssh_config"),
                PathBuf::from("/etc/ssh"),
            ));
            v
        }
    };
    let mut todo = files;
    let mut seen = 0;
    let mut answer = false;
    while let Some((file, base)) = todo.pop() {
        seen += 1;
        if seen > 64 {
            answer = true;
            break;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                answer = true;
                break;
            }
        };
        for line in text.lines() {
            let line = line.trim();
            let mut words = line
                .split(|c: char| c.is_whitespace() || c == '=')
                .filter(|w| !w.is_empty());
            let Some(kw) = words.next().map(str::to_ascii_lowercase) else {
                continue;
            };
            if kw.starts_with('#') {
                continue;
            }
            if RELEVANT.contains(&kw.as_str()) {
                answer = true;
                break;
            }
            if kw == "include" {
                for pat in words {
                    let pat = match (pat.strip_prefix("~/"), &home) {
                        (Some(rest), Some(h)) => h.join(rest),
                        _ => base.join(pat),
                    };
                    match expand_simple_glob(&pat) {
                        Some(found) => todo.extend(found.into_iter().map(|f| (f, base.clone()))),
                        None => answer = true,
                    }
                }
            }
        }
        if answer {
            break;
        }
    }
    if let Ok(mut m) = cache.lock() {
        m.insert(key, answer);
    }
    answer
}

/// `dir/file` or `dir/prefix*suffix` (no wildcard in `dir`); `None` for anything else.
fn expand_simple_glob(pat: &Path) -> Option<Vec<PathBuf>> {
    let name = pat.file_name()?.to_str()?;
    let dir = pat.parent()?;
    if dir.to_str()?.contains(['*', '?', '[']) {
        return None;
    }
    if !name.contains(['*', '?', '[']) {
        return Some(vec![pat.to_path_buf()]);
    }
    let (pre, post) = name.split_once('*')?;
    if post.contains(['*', '?', '[']) || pre.contains(['?', '[']) {
        return None;
    }
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post) {
                out.push(e.path());
            }
        }
    }
    Some(out)
}

/// Names that `ssh` would take as an option or reject anyway are never passed to it.
fn is_plausible_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `ssh -G` through OpenSSH; `None` when the binary is missing or the config is invalid.
pub(crate) fn resolve_with_openssh(name: &str, config: Option<&Path>) -> Option<ResolvedHost> {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(file) = config {
        args.push("-F".as_ref());
        args.push(file.as_os_str());
    }
    args.extend([
        std::ffi::OsStr::new("-G"),
        std::ffi::OsStr::new("--"),
        std::ffi::OsStr::new(name),
    ]);
    let configured = run_ssh(&args)?;
    let baseline = run_ssh(&[
        "-F".as_ref(),
        "/dev/null".as_ref(),
        "-G".as_ref(),
        "--".as_ref(),
        name.as_ref(),
    ]);
    Some(from_ssh_g(
        name,
        &parse_ssh_g(&configured),
        baseline.as_deref().map(parse_ssh_g).as_ref(),
    ))
}

/// Runs `ssh ARGS` with a time limit (a `Match exec` in a config could hang).
fn run_ssh(args: &[&std::ffi::OsStr]) -> Option<String> {
    let mut child = Command::new("ssh")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // Read on a thread so a large output cannot block the child while we wait.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    if !status.success() {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The `key value` lines of `ssh -G`; keys are lowercase, `identityfile` repeats.
#[derive(Debug, Default, Clone, PartialEq)]
struct SshG {
    hostname: Option<String>,
    user: Option<String>,
    port: Option<String>,
    identity_files: Vec<String>,
    proxy_jump: Option<String>,
}

fn parse_ssh_g(text: &str) -> SshG {
    let mut out = SshG::default();
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => continue,
        };
        match key {
            "hostname" => out.hostname = Some(value.to_string()),
            "user" => out.user = Some(value.to_string()),
            "port" => out.port = Some(value.to_string()),
            "identityfile" => out.identity_files.push(value.to_string()),
            "proxyjump" => out.proxy_jump = Some(value.to_string()),
            _ => {}
        }
    }
    out
}

/// OpenSSH's default identity files, used only when the baseline run failed.
const OPENSSH_DEFAULT_IDENTITIES: &[&str] = &[
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];

fn from_ssh_g(name: &str, got: &SshG, baseline: Option<&SshG>) -> ResolvedHost {
    // Without a baseline, assume OpenSSH's documented defaults.
    let fallback;
    let base = match baseline {
        Some(b) => b,
        None => {
            fallback = SshG {
                hostname: Some(name.to_lowercase()),
                user: Some(crate::local_user::current_user()),
                port: Some("22".into()),
                identity_files: OPENSSH_DEFAULT_IDENTITIES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                proxy_jump: None,
            };
            &fallback
        }
    };
    let differs = |v: &Option<String>, b: &Option<String>| match v {
        Some(v) if Some(v) != b.as_ref() && !v.is_empty() => Some(v.clone()),
        _ => None,
    };
    let hostname = differs(&got.hostname, &base.hostname);
    let user = differs(&got.user, &base.user);
    let port = differs(&got.port, &base.port).and_then(|p| p.parse::<u16>().ok());
    let proxy_jump = differs(&got.proxy_jump, &base.proxy_jump).filter(|j| j != "none");
    let identity_files = if got.identity_files != base.identity_files {
        let host = got.hostname.clone().unwrap_or_else(|| name.to_string());
        let remote_user = got.user.clone().unwrap_or_default();
        let port = got.port.clone().unwrap_or_else(|| "22".into());
        let tokens = Tokens {
            name,
            host: &host,
            remote_user: &remote_user,
            port: &port,
        };
        got.identity_files
            .iter()
            .map(|f| tokens.expand(f))
            .collect()
    } else {
        Vec::new()
    };
    ResolvedHost {
        hostname,
        user,
        port,
        identity_files,
        proxy_jump,
    }
}

/// The `ssh_config(5)` TOKENS that IdentityFile accepts; `ssh -G` prints them unexpanded.
struct Tokens<'a> {
    name: &'a str,
    host: &'a str,
    remote_user: &'a str,
    port: &'a str,
}

impl Tokens<'_> {
    fn expand(&self, raw: &str) -> PathBuf {
        let home = crate::local_user::home_dir();
        let home_str = home
            .as_ref()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut out = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('d') => out.push_str(&home_str),
                Some('u') => out.push_str(&crate::local_user::current_user()),
                Some('h') => out.push_str(self.host),
                Some('r') => out.push_str(self.remote_user),
                Some('p') => out.push_str(self.port),
                Some('n') => out.push_str(self.name),
                // Unknown tokens are kept as written, so the error later shows them.
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        crate::local_user::expand_tilde(&out, home.as_deref())
    }
}

/// Fallback: parse the config file with `ssh2-config` (no `Match`, no system config).
pub(crate) fn resolve_with_crate(
    name: &str,
    config: Option<&Path>,
) -> Result<ResolvedHost, String> {
    use ssh2_config::{ParseRule, SshConfig};
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => crate::local_user::home_dir()
            .ok_or("no home directory")?
            .join(".ssh")
            .join("config"),
    };
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut parser = SshConfig::default();
    if let Some(home) = crate::local_user::home_dir() {
        parser = parser.home_dir(home);
    }
    let parsed = parser
        .parse(
            &mut reader,
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let params = parsed.query(name);
    let home = crate::local_user::home_dir();
    let proxy_jump = params
        .proxy_jump
        .map(|hops| hops.join(","))
        .filter(|j| !j.is_empty() && j != "none");
    Ok(ResolvedHost {
        hostname: params.host_name.filter(|h| h != name),
        user: params.user,
        port: params.port,
        identity_files: params
            .identity_file
            .unwrap_or_default()
            .iter()
            .map(|p| crate::local_user::expand_tilde(&p.to_string_lossy(), home.as_deref()))
            .collect(),
        proxy_jump,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const SAMPLE: &str = "\
Host master
    HostName 192.0.2.10
    User admin
    Port 2222
    IdentityFile /keys/master_ed25519
    IdentityFile /keys/second
    ProxyJump jumper@bastion:2200

Host w? worker-*
    User slurm
    IdentityFile ~/.ssh/worker_key

Host *.internal !skip.internal
    ProxyJump bastion

Host bastion
    HostName 198.51.100.7
";

    fn home() -> PathBuf {
        crate::local_user::home_dir().unwrap_or_default()
    }

    fn ssh_available() -> bool {
        Command::new("ssh")
            .arg("-V")
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Each case runs through both resolvers, so the fallback keeps up with OpenSSH.
    fn both(name: &str, cfg: &Path) -> Vec<ResolvedHost> {
        let mut all = vec![resolve_with_crate(name, Some(cfg)).unwrap()];
        // Without `ssh` the comparison with OpenSSH is lost: a failure, or a counted skip.
        if crate::test_precondition::require(
            ssh_available(),
            "OpenSSH's `ssh` to compare with `ssh -G` (scripts/deps installs openssh-client)",
        ) {
            all.push(resolve_with_openssh(name, Some(cfg)).expect("ssh -G ran"));
        }
        all
    }

    #[test]
    fn full_host_block() {
        let (_d, cfg) = config(SAMPLE);
        for r in both("master", &cfg) {
            assert_eq!(r.hostname.as_deref(), Some("192.0.2.10"));
            assert_eq!(r.user.as_deref(), Some("admin"));
            assert_eq!(r.port, Some(2222));
            assert_eq!(
                r.identity_files,
                vec![
                    PathBuf::from("/keys/master_ed25519"),
                    PathBuf::from("/keys/second")
                ]
            );
            assert_eq!(r.proxy_jump.as_deref(), Some("jumper@bastion:2200"));
        }
    }

    #[test]
    fn glob_patterns_and_tilde() {
        let (_d, cfg) = config(SAMPLE);
        for name in ["w1", "worker-17"] {
            for r in both(name, &cfg) {
                assert_eq!(r.hostname, None, "{name}");
                assert_eq!(r.user.as_deref(), Some("slurm"));
                assert_eq!(r.port, None);
                assert_eq!(r.identity_files, vec![home().join(".ssh/worker_key")]);
                assert_eq!(r.proxy_jump, None);
            }
        }
        // `w?` needs exactly one character.
        for r in both("w12", &cfg) {
            assert_eq!(r.user, None);
        }
    }

    #[test]
    fn negated_pattern() {
        let (_d, cfg) = config(SAMPLE);
        for r in both("db.internal", &cfg) {
            assert_eq!(r.proxy_jump.as_deref(), Some("bastion"));
        }
        for r in both("skip.internal", &cfg) {
            assert_eq!(r.proxy_jump, None);
        }
    }

    #[test]
    fn unconfigured_host_is_all_none() {
        let (_d, cfg) = config(SAMPLE);
        for r in both("elsewhere.example", &cfg) {
            assert_eq!(r, ResolvedHost::default());
        }
    }

    #[test]
    fn first_value_wins() {
        let (_d, cfg) = config("Host a\n  User first\nHost *\n  User second\n  Port 2200\n");
        for r in both("a", &cfg) {
            assert_eq!(r.user.as_deref(), Some("first"));
            assert_eq!(r.port, Some(2200));
        }
        for r in both("b", &cfg) {
            assert_eq!(r.user.as_deref(), Some("second"));
        }
    }

    #[test]
    fn multi_hop_proxy_jump_is_kept_whole() {
        let (_d, cfg) = config("Host deep\n  ProxyJump a,u@b:2022\n");
        for r in both("deep", &cfg) {
            assert_eq!(r.proxy_jump.as_deref(), Some("a,u@b:2022"));
        }
    }

    #[test]
    fn openssh_tokens_are_expanded() {
        if !ssh_available() {
            return;
        }
        let (_d, cfg) = config(
            "Host tok\n  HostName real.example\n  User bob\n  Port 2200\n  IdentityFile %d/k-%r@%h:%p-%n-%%\n",
        );
        let r = resolve_with_openssh("tok", Some(&cfg)).unwrap();
        let expected = format!("{}/k-bob@real.example:2200-tok-%", home().display());
        assert_eq!(r.identity_files, vec![PathBuf::from(expected)]);
    }

    #[test]
    fn bad_config_and_missing_file_give_nothing() {
        let (_d, cfg) = config("Host a\n  Port notanumber\n");
        assert_eq!(resolve_with("a", Some(&cfg)), ResolvedHost::default());
        let missing = Path::new("/nonexistent/ssh/config");
        assert_eq!(resolve_with("a", Some(missing)), ResolvedHost::default());
    }

    #[test]
    fn hostile_names_are_not_passed_to_ssh() {
        let (_d, cfg) = config("Host *\n  User someone\n");
        for name in ["", "-oProxyCommand=touch /tmp/x", "a b", "a\nb"] {
            assert_eq!(resolve_with(name, Some(&cfg)), ResolvedHost::default());
        }
    }

    #[test]
    fn resolve_with_caches_and_matches_direct_calls() {
        let (_d, cfg) = config(SAMPLE);
        let first = resolve_with("master", Some(&cfg));
        assert_eq!(first.port, Some(2222));
        assert_eq!(resolve_with("master", Some(&cfg)), first);
    }

    #[test]
    fn ssh_g_comparison_without_baseline() {
        let got = parse_ssh_g(
            "user root\nhostname x.example\nport 22\nidentityfile ~/.ssh/id_rsa\nproxyjump none\n",
        );
        let r = from_ssh_g("x", &got, None);
        assert_eq!(r.hostname.as_deref(), Some("x.example"));
        assert_eq!(r.port, None);
        assert_eq!(r.proxy_jump, None);
        assert_eq!(r.identity_files, vec![home().join(".ssh/id_rsa")]);
        let same_as_default = parse_ssh_g("hostname x\nport 22\n");
        assert_eq!(
            from_ssh_g("X", &same_as_default, None).hostname,
            None,
            "ssh lowercases the name"
        );
    }

    #[test]
    fn ssh_g_parser_ignores_garbage() {
        let got = parse_ssh_g("\n   \nport\nport 99999\nweird line here\nuser  spaced \n");
        let base = SshG::default();
        let r = from_ssh_g("h", &got, Some(&base));
        assert_eq!(r.port, None);
        assert_eq!(r.user.as_deref(), Some("spaced"));
    }
}
