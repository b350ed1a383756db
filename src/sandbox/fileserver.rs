//! The sandbox file server: a small static HTTP GET/HEAD server that shows a controller folder to the hosts.

use super::paths::Layout;
use super::probe;
use super::process;
use super::tools;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Port tried first for the file server.
pub const PREFERRED_PORT: u16 = 8000;

/// Names the `recipe` binary to run as `recipe sandbox serve-files DIR ADDR`.
pub const BIN_ENV: &str = "RECIPE_BIN";

/// Serves the files below `dir` over HTTP at `addr` until the process is killed.
/// Only GET and HEAD; no file outside `dir` is ever served (no `..`, no symlink escapes).
pub fn serve_files(dir: &Path, addr: SocketAddr) -> Result<()> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot serve {}: no such folder", dir.display()))?;
    if !root.is_dir() {
        bail!("cannot serve {}: not a folder", dir.display());
    }
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("serving {} at http://{addr}/", root.display());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &root);
        });
    }
    Ok(())
}

/// Turns a request path into a path below `root`, or None if it would leave `root`.
pub fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(&decoded).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    if text.contains('\0') {
        return None;
    }
    Some(text)
}

fn respond(
    s: &mut TcpStream,
    code: &str,
    ctype: &str,
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        s.write_all(body)?;
    }
    s.flush()
}

fn handle(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(8192).read_line(&mut line)?;
    // Skip the headers.
    loop {
        let mut h = String::new();
        let n = reader.by_ref().take(8192).read_line(&mut h)?;
        if n == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n",
            false,
        );
    }
    let Some(path) = resolve(root, target) else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            b"bad path\n",
            head,
        );
    };
    // Symlinks must not lead out of the served folder.
    let real = match path.canonicalize() {
        Ok(r) if r.starts_with(root) => r,
        _ => {
            return respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                head,
            )
        }
    };
    if real.is_dir() {
        let body = listing(&real, target);
        return respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            body.as_bytes(),
            head,
        );
    }
    let mut file = match std::fs::File::open(&real) {
        Ok(f) => f,
        Err(_) => {
            return respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                head,
            )
        }
    };
    let len = file.metadata()?.len();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if !head {
        std::io::copy(&mut file, &mut stream)?;
    }
    stream.flush()
}

fn listing(dir: &Path, target: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let mut n = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        n.push('/');
                    }
                    n
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let base = if target.ends_with('/') {
        target.to_string()
    } else {
        format!("{target}/")
    };
    let mut s = format!("<html><body><h1>{}</h1><ul>\n", html_escape(&base));
    for n in names {
        let e = html_escape(&n);
        s.push_str(&format!(
            "<li><a href=\"{}{e}\">{e}</a></li>\n",
            html_escape(&base)
        ));
    }
    s.push_str("</ul></body></html>\n");
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The `recipe` binary to run the file server and the hosts' supervisors with: `$RECIPE_BIN`, this program if it is
/// `recipe`, or a `recipe` next to it (or one folder up, as cargo lays out tests).
pub fn recipe_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find the running program")?;
    if exe.file_name().is_some_and(|n| n == "recipe") {
        return Ok(exe);
    }
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("recipe");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the `recipe` program to run the file server and the hosts' supervisors: set {BIN_ENV}=/path/to/recipe")
}

/// Starts `recipe sandbox serve-files DIR ADDR` detached; waits until it answers.
pub fn start(layout: &Layout, dir: &Path, addr: SocketAddrV4) -> Result<u32> {
    let program = recipe_binary()?;
    let args = vec![
        "sandbox".into(),
        "serve-files".into(),
        dir.as_os_str().to_os_string(),
        addr.to_string().into(),
    ];
    let pid = process::spawn_detached(&program, &args, &layout.dir, &layout.files_log())?;
    process::write_pid(&layout.files_pid(), pid)?;
    let up = probe::wait_until(
        Duration::from_secs(10),
        || probe::port_open(addr, Duration::from_millis(200)),
        || !process::alive(pid),
    );
    if !up {
        bail!(
            "the file server (`{} sandbox serve-files`) did not start listening on {addr}; its log {}:\n{}",
            program.display(),
            layout.files_log().display(),
            tools::tail(&layout.files_log(), 15)
        );
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn resolve_stays_inside() {
        let root = Path::new("/srv/x");
        assert_eq!(
            resolve(root, "/a/b.tar.gz"),
            Some(PathBuf::from("/srv/x/a/b.tar.gz"))
        );
        assert_eq!(
            resolve(root, "/a%20b?x=1"),
            Some(PathBuf::from("/srv/x/a b"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/x")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(resolve(root, "/%zz"), None);
        assert_eq!(resolve(root, "/a%00b"), None);
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hi there").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("sub/leak")).unwrap();
        let port = probe::free_port(Ipv4Addr::LOCALHOST, 0).unwrap();
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || serve_files(&root, addr));
        assert!(probe::wait_until(
            Duration::from_secs(5),
            || TcpStream::connect(addr).is_ok(),
            || false
        ));
        let r = get(addr, "/hello.txt");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("Content-Length: 8"), "{r}");
        assert!(r.ends_with("hi there"), "{r}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "/../../etc/passwd").starts_with("HTTP/1.1 400"));
        assert!(get(addr, "/sub/leak").starts_with("HTTP/1.1 404"));
        let l = get(addr, "/");
        assert!(l.contains("hello.txt") && l.contains("sub/"), "{l}");
    }
}
