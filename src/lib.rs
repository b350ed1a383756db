//! recipe: run editable Rhai install recipes on remote machines over SSH.
//!
//! The binary is the interface (docs/contracts.md); the library exposes only the command
//! line and the sandbox, which the integration tests drive. Read top-down: cli → commands →
//! run / controller → engine → primitives (fact, plan, apply) → context / host → transport.

pub mod cli;
mod commands;
mod context;
mod controller;
mod cpu;
mod engine;
mod errors;
mod hints;
mod host;
mod inventory;
mod known_hosts;
mod local_user;
mod modules;
mod planned;
mod primitives;
mod recipe;
mod report;
mod run;
pub mod sandbox;
mod secret_ops;
mod secrets;
mod ssh_config;
mod transport;
mod vars;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod test_bin;
#[cfg(test)]
mod test_precondition;
