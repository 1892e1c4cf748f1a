//! Host services shared by every runtime: config, accounts, Maildir, TLS, log.

pub mod accounts;
pub mod clock;
pub mod config;
pub mod dns;
pub mod dovecot;
pub mod headers;
pub mod log;
pub mod maildir;
pub mod password;
pub mod queue;
pub mod service;
pub mod tls;
