//! recipe: run editable Rhai install recipes on remote machines over SSH.

pub mod cli;
pub mod commands;
pub mod context;
pub mod controller;
pub mod engine;
pub mod errors;
pub mod host;
pub mod inventory;
pub mod known_hosts;
pub mod planned;
pub mod primitives;
pub mod recipe;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod secrets;
pub mod ssh_config;
pub mod transport;
pub mod vars;

#[cfg(test)]
mod fuzz_tests;
