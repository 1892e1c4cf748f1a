//! tern's mail protocols as pure, deterministic state machines.
#![deny(missing_docs)]

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod dovecot;
pub mod dsn;
pub mod net;
pub mod policy;
pub mod recipient;
pub mod replay;
pub mod reply;
pub mod sasl;
pub mod server;
