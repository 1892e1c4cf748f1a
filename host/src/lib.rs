//! Host services shared by every runtime: config, accounts, Maildir, TLS, log.
pub mod accounts;
pub mod password;
