//! TLS setup: a rustls server configuration from PEM files, the self-signed default
//! certificate, and the negotiated parameters for the `Received:` header.
//!
//! rustls runs with the ring provider, TLS 1.2 and 1.3, and no client certificates.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ProtocolVersion, ServerConfig};

/// A certificate or key that cannot be used, in one line that names the file, for example
/// `no private key found in /etc/tern/key.pem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Loads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) into a
/// server configuration for TLS 1.2 and 1.3 without client authentication. The key must match
/// the first certificate in the chain.
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_chain(certificate)?;
    let key = load_key(private_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError(format!(
            "private key {} does not match certificate {}",
            private_key.display(),
            certificate.display()
        )),
        e => TlsError(format!(
            "cannot use private key {} with certificate {}: {e}",
            private_key.display(),
            certificate.display()
        )),
    })?;

    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate for `hostname` and its key to `dir/cert.pem` and
/// `dir/key.pem` (key mode 0600), creating `dir` with mode 0700 if missing, and returns the
/// two paths. Existing files are never overwritten: if both exist they are returned as they
/// are; if only one exists that is an error, since a new key would not match the old
/// certificate.
///
/// Each file is written under a temporary name, fsynced and renamed into place, so a crash
/// leaves no half-written file under either name.
pub fn generate_self_signed(hostname: &str, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    match (cert_path.try_exists()?, key_path.try_exists()?) {
        (true, true) => return Ok((cert_path, key_path)),
        (false, false) => {}
        (true, false) | (false, true) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "only one of {} and {} exists; remove it or supply the other",
                    cert_path.display(),
                    key_path.display()
                ),
            ));
        }
    }

    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;

    let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .map_err(|e| io::Error::other(format!("cannot generate a certificate: {e}")))?;

    // The key goes in first: a certificate without its key would be useless at the next start.
    write_new(
        &key_path,
        generated.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    File::open(dir)?.sync_all()?;
    Ok((cert_path, key_path))
}

/// The negotiated TLS version and cipher suite in the form the `Received:` header uses, such as
/// `("TLS1.3", "TLS_AES_256_GCM_SHA384")`; `None` before the handshake has chosen them.
pub fn connection_info(conn: &ServerConnection) -> Option<(String, String)> {
    let version = match conn.protocol_version()? {
        ProtocolVersion::TLSv1_3 => "TLS1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLS1.2".to_string(),
        other => format!("{other:?}"),
    };
    let suite = conn.negotiated_cipher_suite()?.suite();
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string);

    // rustls prefixes its TLS 1.3 suites with TLS13_; the registered IANA names start TLS_.
    let name = match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    };
    Some((version, name))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path)
        .map_err(|e| TlsError(format!("cannot read certificate {}: {e}", path.display())))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("bad certificate in {}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path)
        .map_err(|e| TlsError(format!("cannot read private key {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError(format!("no private key found in {}", path.display())),
        e => TlsError(format!("bad private key in {}: {e}", path.display())),
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let tmp = path.with_extension("pem.new");

    // A leftover from a crash is ours to replace; mode applies only when creating, so it
    // is removed first rather than truncated.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(context(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(context)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(context)?;
    fs::rename(&tmp, path).map_err(context)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generate_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("a/tls");
        let (cert, key) = generate_self_signed("mail.example.net", &tls_dir).unwrap();
        assert_eq!(cert, tls_dir.join("cert.pem"));
        assert_eq!(key, tls_dir.join("key.pem"));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&tls_dir), 0o700);
        assert!(
            fs::read_to_string(&cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        server_config(&cert, &key).unwrap();
    }

    #[test]
    fn existing_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed("h", dir.path()).unwrap();
        let before = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
        let again = generate_self_signed("h", dir.path()).unwrap();
        assert_eq!(again, (cert.clone(), key.clone()));
        assert_eq!((fs::read(&cert).unwrap(), fs::read(&key).unwrap()), before);

        fs::remove_file(&cert).unwrap();
        let err = generate_self_signed("h", dir.path()).unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
        assert_eq!(fs::read(&key).unwrap(), before.1);
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = generate_self_signed("h", dir.path()).unwrap();
        let missing = dir.path().join("nope.pem");
        let err = server_config(&missing, &key).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read certificate {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed("h", dir.path()).unwrap();
        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, b"this is not PEM\n\x00\xff").unwrap();

        let err = server_config(&garbage, &key).unwrap_err();
        assert_eq!(
            err.0,
            format!("no certificate found in {}", garbage.display())
        );
        let err = server_config(&cert, &garbage).unwrap_err();
        assert_eq!(
            err.0,
            format!("no private key found in {}", garbage.display())
        );
        // A certificate where the key should be holds no key either.
        let err = server_config(&cert, &cert).unwrap_err();
        assert_eq!(err.0, format!("no private key found in {}", cert.display()));
    }

    #[test]
    fn mismatched_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, _) = generate_self_signed("h", &dir.path().join("a")).unwrap();
        let (_, key_b) = generate_self_signed("h", &dir.path().join("b")).unwrap();
        let err = server_config(&cert_a, &key_b).unwrap_err();
        assert_eq!(
            err.0,
            format!(
                "private key {} does not match certificate {}",
                key_b.display(),
                cert_a.display()
            )
        );
    }

    #[test]
    fn handshake_in_memory_tls13() {
        let server = handshake(&[&rustls::version::TLS13, &rustls::version::TLS12]);
        let (version, cipher) = connection_info(&server).unwrap();
        assert_eq!(version, "TLS1.3");
        assert!(
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_CHACHA20_POLY1305_SHA256"
            ]
            .contains(&cipher.as_str()),
            "{cipher}"
        );
    }

    #[test]
    fn handshake_in_memory_tls12() {
        let server = handshake(&[&rustls::version::TLS12]);
        let (version, cipher) = connection_info(&server).unwrap();
        assert_eq!(version, "TLS1.2");
        // rcgen makes an ECDSA key, so the suite is an ECDHE-ECDSA one.
        assert!(cipher.starts_with("TLS_ECDHE_ECDSA_WITH_"), "{cipher}");
    }

    /// Runs a full handshake in memory between a client trusting a freshly generated
    /// certificate and the server configuration loaded from it; returns the server side.
    fn handshake(versions: &[&'static rustls::SupportedProtocolVersion]) -> ServerConnection {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed("mail.example.net", dir.path()).unwrap();
        let server_config = server_config(&cert, &key).unwrap();

        let mut roots = RootCertStore::empty();
        let pem = fs::read(&cert).unwrap();
        for der in CertificateDer::pem_slice_iter(&pem) {
            roots.add(der.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let name = ServerName::try_from("mail.example.net").unwrap();
        let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = ServerConnection::new(server_config).unwrap();
        assert_eq!(connection_info(&server), None);

        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            pump(&mut client, &mut server);
            pump(&mut server, &mut client);
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());

        // Application data flows both ways after the handshake.
        client.writer().write_all(b"EHLO x\r\n").unwrap();
        pump(&mut client, &mut server);
        let mut got = [0u8; 8];
        io::Read::read_exact(&mut server.reader(), &mut got).unwrap();
        assert_eq!(&got, b"EHLO x\r\n");
        server
    }

    /// Moves every pending TLS record from `from` to `to`.
    fn pump<A, B, DA, DB>(from: &mut A, to: &mut B)
    where
        A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
        B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
        DA: rustls::SideData,
        DB: rustls::SideData,
    {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            to.read_tls(&mut input).unwrap();
            to.process_new_packets().unwrap();
        }
    }
}
