//! Hosts behind a login node, as most HPC sites reach their compute nodes: real OpenSSH
//! servers in a network namespace this machine cannot enter, reached only through a bastion
//! on the namespace's one link (tests/common/netns.rs). One shared connection to each jump
//! host per run, handshakes turned away tried again, a failed bastion reported once.

mod common;
use common::netns::{self, Netns, PORT};
use common::*;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Each node writes what sshd told its shell about the connection (client and server
/// address) to its own file: proof of where the step ran and through what.
const RECIPE: &str =
    "fn defaults() { #{ out: \"\" } }\nsh(`echo \"$SSH_CONNECTION\" > '${vars.out}'`);\n";

/// The bastion's sshd: OpenSSH defaults (MaxStartups 10:30:100, MaxSessions 10) and
/// logins logged.
const BASTION: &str = "LogLevel INFO";

/// A node's sshd.
const NODE: &str = "LogLevel ERROR";

/// `[hosts.NAME]` for a server of the namespace at `addr` (its port), with `extra` lines.
fn host(name: &str, addr: &str, port: u16, key: &Path, extra: &str) -> String {
    format!(
        "\n[hosts.{name}]\naddress = \"{addr}\"\nport = {port}\nuser = \"root\"\nkey = \"{}\"\n{extra}\n",
        key.display()
    )
}

/// Node `i`'s inventory name and address inside the namespace.
fn node(i: usize) -> (String, String) {
    (format!("node{i:02}"), format!("127.0.1.{i}"))
}

/// Starts `n` node sshds in `ns` (127.0.1.1 ...).
fn start_nodes(ns: &mut Netns, n: usize) {
    for i in 1..=n {
        ns.sshd(&node(i).1, NODE);
    }
}

/// Node table lines for nodes `range`, each behind `jump`, writing to `ns`'s `out-NAME`.
fn node_hosts(ns: &Netns, range: std::ops::RangeInclusive<usize>, jump: &str) -> String {
    range
        .map(|i| {
            let (name, addr) = node(i);
            let out = ns.path(&format!("out-{name}"));
            host(
                &name,
                &addr,
                PORT,
                &ns.client_key,
                &format!(
                    "jump = \"{jump}\"\nvars = {{ out = \"{}\" }}",
                    out.display()
                ),
            )
        })
        .collect()
}

/// `[groups.nodes]` naming nodes 1..=n.
fn nodes_group(n: usize) -> String {
    let names: Vec<String> = (1..=n).map(|i| format!("\"{}\"", node(i).0)).collect();
    format!("\n[groups.nodes]\nhosts = [{}]\n", names.join(", "))
}

fn recipe(ns: &Netns) -> PathBuf {
    netns::write(ns.dir.path(), "where.rhai", RECIPE)
}

fn run_nodes(ns: &Netns, inv: &Path) -> Test {
    Test::new()
        .arg("run")
        .arg(recipe(ns))
        .args(["--group", "nodes", "-i"])
        .arg(inv)
}

#[test]
fn every_node_behind_one_bastion_is_reached_on_every_run_through_one_login_per_hop() {
    let mut ns = Netns::new();
    let far = ns.far.clone();
    let bastion = ns.sshd(&far, BASTION);
    // A second login node, itself reached through the bastion (a nested jump).
    let inner = ns.sshd("127.0.0.2", BASTION);
    const N: usize = 24;
    start_nodes(&mut ns, N);
    for s in ns.servers.iter().skip(1) {
        assert!(
            !netns::reachable_from_here(&s.addr, PORT),
            "{} must be reachable only through the bastion",
            s.addr
        );
    }
    let kh = ns.known_hosts();
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    inv.push_str(&host("bastion", &far, PORT, &ns.client_key, ""));
    inv.push_str(&host(
        "inner",
        "127.0.0.2",
        PORT,
        &ns.client_key,
        "jump = \"bastion\"",
    ));
    inv.push_str(&node_hosts(&ns, 1..=16, "bastion"));
    inv.push_str(&node_hosts(&ns, 17..=N, "inner"));
    inv.push_str(&nodes_group(N));
    let inv = netns::write(ns.dir.path(), "inventory.toml", &inv);

    for run in 1..=3 {
        for i in 1..=N {
            std::fs::remove_file(ns.path(&format!("out-{}", node(i).0))).ok();
        }
        let out = run_nodes(&ns, &inv).arg("--json").run();
        assert_eq!(
            out.code,
            0,
            "run {run}: {}\nbastion: {}",
            out.show(),
            ns.servers[bastion].log()
        );
        let recaps = out.recaps();
        assert_eq!(recaps.len(), N, "{}", out.show());
        for i in 1..=N {
            let (name, addr) = node(i);
            let said = std::fs::read_to_string(ns.path(&format!("out-{name}")))
                .unwrap_or_else(|_| panic!("run {run}: {name} was not reached: {}", out.show()));
            // SSH_CONNECTION = client ip, client port, server ip, server port.
            let f: Vec<&str> = said.split_whitespace().collect();
            assert_eq!(f.get(2), Some(&addr.as_str()), "{name}: {said}");
            assert_eq!(f.get(3), Some(&PORT.to_string().as_str()), "{name}: {said}");
        }
        // One login per hop and per run, whatever the number of nodes behind it.
        assert_eq!(
            ns.servers[bastion].logins(),
            run,
            "bastion logins after run {run}:\n{}",
            ns.servers[bastion].log()
        );
        assert_eq!(
            ns.servers[inner].logins(),
            run,
            "inner logins after run {run}:\n{}",
            ns.servers[inner].log()
        );
    }
}

/// A TCP front for `to`: turns away the first `refuse` connections as sshd does past
/// MaxStartups (odd ones: a reset; even ones: sshd's "Not allowed at this time" and a close),
/// then passes bytes both ways. Its port is the one the kernel gave its listener.
fn turning_away(to: String, refuse: usize) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= refuse {
                if n % 2 == 1 {
                    reset(&c);
                } else {
                    let _ = c.write_all(b"Not allowed at this time\r\n");
                }
                drop(c);
                continue;
            }
            let Ok(up) = TcpStream::connect(&to) else {
                continue;
            };
            let (mut a, mut b) = (
                c.try_clone().expect("clone"),
                up.try_clone().expect("clone"),
            );
            let mut up2 = up;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut up2);
                let _ = up2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut b, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

/// Makes closing `c` send a TCP reset (SO_LINGER with a zero timeout).
fn reset(c: &TcpStream) {
    use std::os::fd::AsRawFd;
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[test]
fn a_bastion_that_turns_the_first_handshakes_away_is_tried_again() {
    let mut ns = Netns::new();
    let far = ns.far.clone();
    let bastion = ns.sshd(&far, BASTION);
    const N: usize = 4;
    start_nodes(&mut ns, N);
    let (port, seen) = turning_away(format!("{far}:{PORT}"), 2);
    // The bastion as this machine names it: the front's address and port.
    let key_line = ns.servers[bastion].known_host();
    let front_line = key_line.replacen(
        &format!("[{far}]:{PORT}"),
        &format!("[127.0.0.1]:{port}"),
        1,
    );
    let kh = ns.known_hosts();
    let lines = std::fs::read_to_string(&kh).unwrap_or_default();
    std::fs::write(&kh, format!("{lines}{front_line}")).expect("known_hosts");
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    inv.push_str(&host("bastion", "127.0.0.1", port, &ns.client_key, ""));
    inv.push_str(&node_hosts(&ns, 1..=N, "bastion"));
    inv.push_str(&nodes_group(N));
    let inv = netns::write(ns.dir.path(), "inventory.toml", &inv);

    let out = run_nodes(&ns, &inv).arg("--json").run();
    assert_eq!(out.code, 0, "{}", out.show());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "two turned away, the third let through"
    );
    assert_eq!(ns.servers[bastion].logins(), 1);
    let err = out.stderr.clone();
    assert!(
        err.contains("jump host bastion") && err.contains("connected at try 3"),
        "the report says how many tries the bastion took: {err}"
    );

    // The same for a host reached directly: its recap counts the tries.
    seen.store(0, Ordering::SeqCst);
    let out = Test::new()
        .arg("run")
        .arg(recipe(&ns))
        .args(["--host", "bastion", "--var"])
        .arg(format!("out={}", ns.path("out-bastion").display()))
        .args(["--json", "-i"])
        .arg(&inv)
        .run();
    assert_eq!(out.code, 0, "{}", out.show());
    assert_eq!(out.recap("bastion")["connect_tries"], 3, "{}", out.show());

    // Fewer tries than it takes: every node fails with the bastion's one message.
    seen.store(0, Ordering::SeqCst);
    let out = run_nodes(&ns, &inv)
        .args(["--json", "--connection-attempts", "2"])
        .run();
    assert_eq!(out.code, 1, "{}", out.show());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "one bastion handshake per try, not per node"
    );
    for r in out.recaps() {
        assert_eq!(r["unreachable"], true, "{r}");
        let msg = r["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains("jump host bastion") && msg.contains("2 tries"),
            "{msg}"
        );
    }
}

#[test]
fn a_wrong_key_for_the_bastion_fails_once_for_every_node_behind_it() {
    let mut ns = Netns::new();
    let far = ns.far.clone();
    let bastion = ns.sshd(&far, BASTION);
    const N: usize = 20;
    start_nodes(&mut ns, N);
    let wrong = ns.path("wrong_key");
    keygen(&wrong);
    let kh = ns.known_hosts();
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    inv.push_str(&host("bastion", &far, PORT, &wrong, ""));
    inv.push_str(&node_hosts(&ns, 1..=N, "bastion"));
    inv.push_str(&nodes_group(N));
    let inv = netns::write(ns.dir.path(), "inventory.toml", &inv);

    let out = run_nodes(&ns, &inv).env_remove("SSH_AUTH_SOCK").run();
    assert_eq!(out.code, 1, "{}", out.show());
    let all = out.all();
    // Said in full once; the other nodes point at it.
    assert_eq!(
        all.matches("jump host bastion").count(),
        1,
        "the bastion's failure once: {all}"
    );
    assert!(all.contains("authentication failed"), "{all}");
    assert_eq!(all.matches("same as node01").count(), N - 1, "{all}");
    // One try at the bastion for all of them: authentication is never retried. sshd logs the
    // close once it has seen it, which may be just after recipe has exited.
    loopback::wait_until("the bastion's log of the refused login", 20, || {
        ns.servers[bastion]
            .log()
            .contains("authenticating user root")
    });
    let log = ns.servers[bastion].log();
    assert_eq!(
        log.matches("authenticating user root").count(),
        1,
        "one handshake with the bastion: {log}"
    );
    assert_eq!(ns.servers[bastion].logins(), 0);
}

#[test]
fn big_copies_between_hosts_behind_one_bastion_do_not_wait_on_each_other() {
    // Every end of the copies shares the bastion connection: its incoming data must never
    // wait for a slow reader, or the source's data and the destinations' windows wait on
    // each other (they did, with 4 destinations).
    let mut ns = Netns::new();
    let far = ns.far.clone();
    ns.sshd(&far, BASTION);
    const N: usize = 5;
    start_nodes(&mut ns, N);
    let kh = ns.known_hosts();
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    inv.push_str(&host("bastion", &far, PORT, &ns.client_key, ""));
    inv.push_str(&node_hosts(&ns, 1..=N, "bastion"));
    inv.push_str(&nodes_group(N));
    let inv = netns::write(ns.dir.path(), "inventory.toml", &inv);
    let src = ns.path("big.bin");
    let bytes = common::leaks::random_bytes(24 << 20);
    std::fs::write(&src, &bytes).expect("source");
    let recipe = netns::write(
        ns.dir.path(),
        "copy.rhai",
        "fn defaults() { #{ src: \"\", out: \"\" } }\nfile(vars.out, #{from_host: \"node01\", src: vars.src});\n",
    );
    let mut t = Test::new().arg("run").arg(&recipe);
    for i in 2..=N {
        t = t.args(["--host", &node(i).0]);
    }
    t.arg("--var")
        .arg(format!("src={}", src.display()))
        .args(["--json", "-i"])
        .arg(&inv)
        .timeout(std::time::Duration::from_secs(300))
        .run()
        .expect_success();
    for i in 2..=N {
        let got = std::fs::read(ns.path(&format!("out-{}", node(i).0))).expect("copied");
        assert!(got == bytes, "the copy on {} differs", node(i).0);
    }
}
