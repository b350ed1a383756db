//! A controller killed outright (SIGKILL) in the middle of writing a large file: the target
//! keeps the old file whole (or, had the write finished, the new one), never a part of it,
//! and no temporary file is left once the orphaned worker on the target has ended; the next
//! run writes the new file and the one after changes nothing (README "Atomic files",
//! docs/security.md).

mod common;
use common::leaks::random_bytes;
use common::loopback::*;
use common::*;

#[test]
fn a_controller_killed_mid_write_leaves_the_old_file_or_the_new_one() {
    let s = Sshd::start();
    let dir = s.dir.path();
    // 50 MiB: far more than the loopback socket and pipe buffers hold, so a controller
    // stopped while the temporary file is being filled cannot have sent it all.
    let big = random_bytes(50 * 1024 * 1024);
    std::fs::write(dir.join("big.src"), &big).expect("big");
    let base = dir.join("t");
    std::fs::create_dir_all(&base).expect("base");
    let old = b"the old content\n".to_vec();
    std::fs::write(base.join("big.bin"), &old).expect("old");
    let recipe = write(
        dir,
        "big.rhai",
        &format!(
            "// One large file.\nfile({:?}, #{{src: \"big.src\", mode: \"0600\"}});\n",
            base.join("big.bin").display().to_string()
        ),
    );
    let inv = s.inventory("t1", "");

    let child = run_all(&recipe, &inv).spawn();
    wait_until("the temporary file", 120, || !leftovers(&base).is_empty());
    // Frozen first, so what reached the target can be looked at: part of the file.
    child.signal(libc::SIGSTOP);
    let partial: u64 = leftovers(&base)
        .iter()
        .filter_map(|n| std::fs::metadata(base.join(n)).ok())
        .map(|m| m.len())
        .sum();
    assert!(
        partial < big.len() as u64,
        "the write had ended before the kill"
    );
    child.signal(libc::SIGKILL);
    assert_eq!(child.finish().code, -1, "killed by the signal");
    // The connection is gone; the worker on the target sees its input end and cleans up.
    wait_until("the temporary file to go", 60, || {
        leftovers(&base).is_empty()
    });
    let now = std::fs::read(base.join("big.bin")).expect("target");
    assert!(
        now == old || now == big,
        "a partial file: {} bytes (old {}, new {})",
        now.len(),
        old.len(),
        big.len()
    );

    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(std::fs::read(base.join("big.bin")).expect("new") == big);
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("t1")["changed"], 0, "{}", r.show());
    assert!(leftovers(&base).is_empty(), "{:?}", leftovers(&base));
}
