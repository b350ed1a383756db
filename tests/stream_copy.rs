//! Host-to-host copies of big files (`file(dest, #{from_host, src})`) stream through the
//! controller in bounded chunks: the content arrives whole and checked, a second run changes
//! nothing, and the controller never holds the file (its peak resident memory, VmHWM, stays
//! far below the file's size).

mod common;
use common::*;

/// An inventory with two hosts on the same sshd: "a" holds the file, "b" gets it.
fn two_hosts(sshd: &Sshd) -> std::path::PathBuf {
    common::loopback::inventory_of(sshd, &["a", "b"], "")
}

/// `recipe run RECIPE -i INV --host b --json`.
fn copy(recipe: &std::path::Path, inv: &std::path::Path) -> Test {
    Test::new()
        .arg("run")
        .arg(recipe)
        .arg("-i")
        .arg(inv)
        .args(["--host", "b", "--json"])
}

/// Runs the copy and watches the process's peak resident memory (VmHWM, reset at exec).
fn run_watched(recipe: &std::path::Path, inv: &std::path::Path) -> (Output, usize) {
    let mut child = copy(recipe, inv)
        .timeout(std::time::Duration::from_secs(300))
        .spawn();
    let status_file = format!("/proc/{}/status", child.pid());
    let mut peak_kib = 0usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        if let Ok(st) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the copy hangs");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child.finish(), peak_kib / 1024)
}

#[test]
fn a_big_file_streams_host_to_host_and_is_never_held_whole() {
    let sshd = Sshd::start();
    let inv = two_hosts(&sshd);

    // 96 MiB that does not compress: a hash chain.
    const MIB: usize = 1024 * 1024;
    let src = sshd.path("big.bin");
    let mut data = Vec::with_capacity(96 * MIB);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 96 * MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&src, &data).expect("write source");
    drop(data);
    let dst = sshd.path("copy.bin");
    let recipe = sshd.path("copy.rhai");
    std::fs::write(
        &recipe,
        format!(
            "// Copies a big file from a to b.\nfile({:?}, #{{from_host: \"a\", src: {:?}, mode: \"0640\"}});\n",
            dst.display().to_string(),
            src.display().to_string()
        ),
    )
    .expect("recipe");

    let (out, peak_mib) = run_watched(&recipe, &inv);
    let ev = out.events();
    assert!(out.success(), "{}", out.show());
    let step = ev
        .iter()
        .find(|e| e["event"] == "step" && e["op"] == "file")
        .expect("a file step");
    assert_eq!(step["status"], "changed", "{step}");
    assert!(step.to_string().contains("streamed from a"), "{step}");
    assert_eq!(sha256_file(&dst), sha256_file(&src), "the copy differs");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dst).expect("copy").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // The recipe process's peak memory stayed far below the file's size.
    assert!(
        peak_mib < 64,
        "the controller peaked at {peak_mib} MiB copying a 96 MiB file: it held it whole"
    );

    // Second run: already the same content, nothing to do.
    let ev = copy(&recipe, &inv).run().expect_success().events();
    let step = ev
        .iter()
        .find(|e| e["event"] == "step" && e["op"] == "file")
        .expect("a file step");
    assert_eq!(step["status"], "ok", "{step}");
}

/// A destination that fails part-way (its disk fills up) ends the copy at once with the
/// destination's own error; the source, still sending, is stopped too. Before, the sender
/// waited for room the finished receiver would never make, until the run's time limit.
#[test]
fn a_copy_whose_destination_fills_up_fails_at_once() {
    if !require_root("mounting a small file system") {
        return;
    }
    let sshd = Sshd::start();
    let inv = two_hosts(&sshd);
    let full = sshd.path("full");
    let _m = Tmpfs::mount(&full, "4m");
    // 48 MiB into 4 MiB of room.
    let src = sshd.path("big.bin");
    let f = std::fs::File::create(&src).expect("source");
    f.set_len(48 * 1024 * 1024).expect("size");
    drop(f);
    let recipe = sshd.path("fill.rhai");
    std::fs::write(
        &recipe,
        format!(
            "// Copies a big file from a into a folder that is too small on b.\nfile({:?}, #{{from_host: \"a\", src: {:?}}});\n",
            full.join("copy.bin").display().to_string(),
            src.display().to_string()
        ),
    )
    .expect("recipe");
    // The copy must end on the destination's error, not on its time limit (no clock: a
    // copy that waited would say it did not finish within 120s).
    copy(&recipe, &inv)
        .args(["--timeout", "120"])
        .timeout(std::time::Duration::from_secs(200))
        .run()
        .expect_code(1)
        .expect_contains(&["No space left on device"])
        .expect_lacks(&["within 120s", "timed out", "no answer"]);
    // Nothing half-written is left behind in the destination folder.
    let left: Vec<_> = std::fs::read_dir(&full)
        .expect("folder")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
