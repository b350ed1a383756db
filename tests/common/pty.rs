//! What a person at a terminal sees of a run: a pseudo-terminal (openpty) given to the CLI as
//! its stderr, where its status lines are drawn, read back through the `vt100` terminal
//! emulator, now or screen by screen as the output came.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The size of the tests' terminals unless they ask for another.
pub const ROWS: u16 = 40;
pub const COLS: u16 = 200;

/// A terminal of `rows` x `cols`, without scrollback.
pub fn parser_of(rows: u16, cols: u16) -> vt100::Parser {
    let n = |v: u16| std::num::NonZeroU16::new(v).expect("not zero");
    vt100::Parser::new(n(rows), n(cols), 0)
}

/// A terminal of ROWS x COLS.
pub fn parser() -> vt100::Parser {
    parser_of(ROWS, COLS)
}

/// The non-blank lines of a screen, trailing blanks dropped.
pub fn lines_of(screen: &vt100::Screen) -> Vec<String> {
    screen
        .contents()
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The lines left on a ROWS x COLS terminal after the whole of `bytes`.
pub fn final_screen(bytes: &[u8]) -> Vec<String> {
    let mut p = parser();
    p.process(bytes);
    lines_of(p.screen())
}

/// A pseudo-terminal whose other end a child gets as stderr ([`Terminal::stderr`]); what it
/// writes is kept in the chunks it was read in.
pub struct Terminal {
    rows: u16,
    cols: u16,
    slave: Option<OwnedFd>,
    chunks: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Terminal {
    pub fn open(rows: u16, cols: u16) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fds, owned right after; `size` outlives the call.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds from openpty, owned once each.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let seen = chunks.clone();
        // Always read: a full terminal would block the writer.
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(master);
            let mut buf = [0u8; 8192];
            loop {
                match f.read(&mut buf) {
                    // EIO once every writer has closed its end.
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.lock().expect("lock").push(buf[..n].to_vec()),
                }
            }
        });
        Terminal {
            rows,
            cols,
            slave: Some(slave),
            chunks,
        }
    }

    /// The terminal's end for a child (once).
    pub fn stderr(&mut self) -> OwnedFd {
        self.slave.take().expect("the terminal's end is given once")
    }

    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.chunks.lock().expect("lock").concat()
    }

    /// The screen now.
    pub fn screen(&self) -> Vec<String> {
        let mut p = parser_of(self.rows, self.cols);
        p.process(&self.bytes());
        lines_of(p.screen())
    }

    /// Every screen the terminal showed, after each chunk of output in turn (the same one
    /// twice in a row once).
    pub fn screens(&self) -> Vec<Vec<String>> {
        let mut p = parser_of(self.rows, self.cols);
        let mut all: Vec<Vec<String>> = Vec::new();
        for c in self.chunks.lock().expect("lock").iter() {
            p.process(c);
            let s = lines_of(p.screen());
            if all.last() != Some(&s) {
                all.push(s);
            }
        }
        all
    }

    /// Waits (up to a minute: the step is held, so no timing check) until the screen has a
    /// line with every piece; that line.
    pub fn wait_for_line(&self, pieces: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if let Some(l) = screen.iter().find(|l| pieces.iter().all(|p| l.contains(p))) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {pieces:?} on the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The output once the writers are done: no new bytes for a moment.
    pub fn settled(&self) -> Vec<u8> {
        let mut last = usize::MAX;
        loop {
            let n = self.chunks.lock().expect("lock").len();
            if n == last {
                return self.bytes();
            }
            last = n;
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
