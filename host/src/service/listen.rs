//! Listening sockets: TCP, and Unix sockets with Dovecot's `unix_listener` mode and owners.
//!
//! The socket file is made with the process's umask and its mode and owners are set right
//! after, so for that moment it may be more (or less) open than `mode` says.

use std::fs::{self, Permissions};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::StartError;
use crate::config::{Bind, Listener};

/// A bound listening socket of one listener.
#[derive(Debug)]
pub struct Bound {
    /// The listener's index in the configuration.
    pub listener: usize,
    /// The listener's name.
    pub name: String,
    /// Where it listens, as printed at start: `127.0.0.1:2525` (the real port when the
    /// configuration said 0) or the socket path.
    pub address: String,
    /// The socket, in blocking mode.
    pub socket: Socket,
}

/// A listening socket.
#[derive(Debug)]
pub enum Socket {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix socket.
    Unix(UnixListener),
}

pub(super) fn bind(index: usize, listener: &Listener) -> Result<Bound, StartError> {
    let (socket, address) = match &listener.bind {
        Bind::Tcp(addr) => {
            let socket = TcpListener::bind(addr)
                .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
            let address = socket
                .local_addr()
                .map_or_else(|_| addr.to_string(), |a| a.to_string());
            (Socket::Tcp(socket), address)
        }
        Bind::Unix {
            path,
            mode,
            user,
            group,
        } => {
            let socket = bind_unix(path, *mode, user.as_deref(), group.as_deref())
                .map_err(|e| StartError(format!("cannot listen on {}: {e}", path.display())))?;
            (Socket::Unix(socket), path.display().to_string())
        }
    };
    Ok(Bound {
        listener: index,
        name: listener.name.clone(),
        address,
        socket,
    })
}

/// Binds a Unix socket at `path`, replacing a stale one (a socket nobody accepts on), and
/// sets its mode and owners. The parent directory is created when missing.
fn bind_unix(
    path: &Path,
    mode: u32,
    user: Option<&str>,
    group: Option<&str>,
) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening there",
                ));
            }
            fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }

    let socket = UnixListener::bind(path)?;
    fs::set_permissions(path, Permissions::from_mode(mode))?;
    let uid = user
        .map(|name| id_of(name, "/etc/passwd", "user"))
        .transpose()?;
    let gid = group
        .map(|name| id_of(name, "/etc/group", "group"))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    Ok(socket)
}

/// The numeric id of a user or group: a number as it is, else the third field of its line in
/// `/etc/passwd` or `/etc/group`. Users known only to NSS modules (LDAP and the like) are not
/// found; give their number instead.
fn id_of(name: &str, table: &str, what: &str) -> io::Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let text = fs::read_to_string(table)?;
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {what} {name} in {table}"),
            )
        })
}
