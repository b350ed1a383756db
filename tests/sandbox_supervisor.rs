//! The supervisor of a sandbox host (`recipe sandbox host-supervisor`, hidden): it starts
//! the host's systemd-nspawn again when the container rebooted (exit status 133) and never
//! after a stop. Here a shell script stands in for systemd-nspawn (its exit statuses are
//! the ones nspawn.c uses), so no root is needed; tests/sandbox.rs reboots a real host.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_reboot_starts_it_again_anything_else_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("boots");
    // Two reboots (133), then a power-off with status 7.
    let script = format!(
        "echo boot >> {l}; [ $(wc -l < {l}) -lt 3 ] && exit 133; exit 7",
        l = log.display()
    );
    let out = Test::new()
        .args(["sandbox", "host-supervisor", "/bin/sh", "-c", &script])
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(lines(&log), 3, "booted again after each reboot only");
    assert_eq!(
        out.code,
        7,
        "nspawn's own status is the supervisor's\n{}",
        out.show()
    );
    assert_eq!(
        out.stderr.matches("the host rebooted").count(),
        2,
        "{}",
        out.show()
    );
}

#[test]
fn a_stop_is_passed_on_and_nothing_starts_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("boots");
    // Like nspawn on SIGTERM: the container goes down; this one answers with a reboot's
    // status, the worst case (a stop that comes while the host reboots).
    let script = format!(
        "echo boot >> {l}; trap 'kill $!; exit 133' TERM; sleep 60 & wait",
        l = log.display()
    );
    let run = Test::new()
        .args(["sandbox", "host-supervisor", "/bin/sh", "-c", &script])
        .timeout(Duration::from_secs(60))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&log) < 1 {
        assert!(Instant::now() < deadline, "the stand-in never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the shell set its trap.
    std::thread::sleep(Duration::from_millis(500));
    run.signal(libc::SIGTERM);
    let out = run.finish();
    assert_eq!(out.code, 133, "{}", out.show());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines(&log), 1, "started again after a stop\n{}", out.show());
}
