//! The primitives recipes call: each checks, decides, applies only what differs, and reports a step.
//! `step` (the plan, reported and carried out), `options` (typed options), `attrs` (modes,
//! owners, `stat`) and `fields` (results) serve every family: `command`, `files`, `download`,
//! `packages`, `services`, `users`, `facts` and `remote`.

/// An option whose value is one word of a fixed list: a typo fails when the options are read,
/// before anything is checked or changed on a host. Aliases are accepted but not listed.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident, $field:literal,
     [$($word:literal => $var:ident),+ $(,)?]
     $(, aliases [$($alias:literal => $avar:ident),* $(,)?])?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($var),+ }
        impl $name {
            /// The documented values.
            pub const WORDS: &'static [&'static str] = &[$($word),+];
            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$var),)+
                    $($($alias => Ok($name::$avar),)*)?
                    _ => Err($crate::primitives::bad_choice($field, s, Self::WORDS)),
                }
            }
            #[allow(dead_code)] // not every choice is printed back
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $word),+ }
            }
        }
        impl $crate::primitives::options::OptType for $name {
            const KIND: $crate::primitives::options::Kind =
                $crate::primitives::options::Kind::Choice(Self::WORDS, |s| Self::parse(s).map(|_| ()));
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod attrs;
pub mod command;
pub mod download;
pub mod facts;
pub mod failure;
pub mod fields;
pub mod files;
pub mod options;
pub mod packages;
pub mod prefetch;
pub mod read;
pub mod remote;
pub mod services;
pub mod step;
pub mod template;
pub mod unpack;
pub mod users;
#[cfg(test)]
mod write_tests;

pub use attrs::*;
pub use failure::StepError;
pub use options::{bad_choice, opt_value, opts, Presence};
pub use step::*;

use rhai::Dynamic;

/// The members of an inventory group as a Rhai array (`[]` for an unknown group).
pub fn group_array(inv: &crate::inventory::Inventory, group: &str) -> rhai::Array {
    inv.group_members(group)
        .unwrap_or_default()
        .into_iter()
        .map(Dynamic::from)
        .collect()
}
