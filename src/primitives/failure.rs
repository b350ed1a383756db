//! Why a step failed, kept typed until it is shown: `Display` here is the one place that
//! turns it into text, for the step's event, the host's recap and the recipe error.

use crate::transport::{ExecOutput, TransportError};

/// How many of a failed command's last lines a message shows.
const TAIL_LINES: usize = 15;

/// A step's failure.
#[derive(Debug)]
pub enum StepError {
    /// The host could not be asked: unreachable, connection lost, no answer in time, host
    /// key or login refused. `doing`: what the step was doing (`copying X from h2`).
    Transport {
        error: TransportError,
        doing: Option<String>,
    },
    /// A command ended with a non-zero status: the status and the last lines it printed.
    Command {
        status: i32,
        tail: String,
        doing: Option<String>,
    },
    /// The call's options are wrong (found at the call, before any round trip).
    Options(String),
    /// The step will not do it: what it was asked or found cannot be done; the message says
    /// what to do instead.
    Refused(String),
    /// Ctrl-C or SIGTERM stopped it.
    Interrupted(String),
    /// Not a failure: the collecting pass of the probes asked ahead stopped the step's body
    /// at its probe ([`super::prefetch`]); never shown.
    Ahead(super::prefetch::Ahead),
}

impl StepError {
    /// A command that ended badly, with the last lines of its stderr (or stdout).
    pub fn command(out: &ExecOutput) -> StepError {
        let err = out.stderr_str();
        let text = if err.trim().is_empty() {
            out.stdout_str()
        } else {
            err
        };
        let lines: Vec<&str> = text.trim_end().lines().collect();
        StepError::Command {
            status: out.status,
            tail: lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
            doing: None,
        }
    }

    /// The same failure, said to have happened while `what` (a transport or command
    /// failure; the others say it themselves).
    pub fn doing(mut self, what: impl Into<String>) -> StepError {
        match &mut self {
            StepError::Transport { doing, .. } | StepError::Command { doing, .. } => {
                *doing = Some(what.into())
            }
            _ => {}
        }
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = |d: &Option<String>| d.as_ref().map(|d| format!("{d}: ")).unwrap_or_default();
        match self {
            StepError::Transport { error, doing } => write!(f, "{}{error}", prefix(doing)),
            StepError::Command {
                status,
                tail,
                doing,
            } => {
                write!(f, "{}exit status {status}", prefix(doing))?;
                if !tail.is_empty() {
                    write!(f, ":\n{tail}")?;
                }
                Ok(())
            }
            StepError::Options(m) | StepError::Refused(m) | StepError::Interrupted(m) => {
                f.write_str(m)
            }
            StepError::Ahead(a) => write!(f, "probe asked ahead ({a:?})"),
        }
    }
}

impl From<TransportError> for StepError {
    fn from(e: TransportError) -> StepError {
        match e {
            TransportError::Interrupted(m) => StepError::Interrupted(m),
            // A secret's placeholder on its way to the host: refused before it left.
            TransportError::Refused(m) => StepError::Refused(m),
            error => StepError::Transport { error, doing: None },
        }
    }
}

/// A step's own checks say what is wrong in words: they refuse.
impl From<String> for StepError {
    fn from(m: String) -> StepError {
        StepError::Refused(m)
    }
}

impl From<&str> for StepError {
    fn from(m: &str) -> StepError {
        StepError::Refused(m.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_shows_its_status_and_last_lines() {
        let out = ExecOutput {
            status: 2,
            stdout: b"ignored\n".to_vec(),
            stderr: (1..=20)
                .map(|i| format!("e{i}\n"))
                .collect::<String>()
                .into_bytes(),
        };
        let e = StepError::command(&out);
        let text = e.to_string();
        assert!(text.starts_with("exit status 2:\ne6\n"), "{text}");
        assert!(text.ends_with("e20"), "{text}");
        let e = StepError::command(&ExecOutput {
            status: 1,
            stdout: b"only stdout\n".to_vec(),
            stderr: vec![],
        })
        .doing("cannot read /x on h2");
        assert_eq!(
            e.to_string(),
            "cannot read /x on h2: exit status 1:\nonly stdout"
        );
        let e = StepError::command(&ExecOutput {
            status: 3,
            ..Default::default()
        });
        assert_eq!(e.to_string(), "exit status 3");
    }

    #[test]
    fn transport_errors_keep_their_kind() {
        let e: StepError = TransportError::Interrupted("interrupted (Ctrl-C)".into()).into();
        assert!(matches!(e, StepError::Interrupted(_)));
        let e: StepError = TransportError::Timeout("no answer within 19s".into()).into();
        assert_eq!(
            e.doing("copying /a from h2").to_string(),
            "copying /a from h2: timed out: no answer within 19s"
        );
    }
}
