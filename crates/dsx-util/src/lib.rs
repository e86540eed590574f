//! Small helpers every dsx crate needs exactly one copy of: the Unix clock ([`time`]),
//! retry delays with jitter ([`backoff`]) and environment variable parsing ([`env`]).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod env;
pub mod time;

pub use backoff::{Backoff, Jitter};
pub use env::EnvError;
pub use time::{unix_now, unix_now_millis};
