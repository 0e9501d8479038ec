//! TLS and mutual TLS for the engine's gRPC servers (xDS and MetricsService), on rustls.
//!
//! A [`ServerTls`] is read and checked once, at start-up, from PEM files: the server's
//! certificate chain and key, and optionally the CA that signs the clients' certificates. With a
//! client CA every connection must present a certificate that chains to it (mutual TLS); a
//! client without one, or with one from another CA, is refused during the handshake, before any
//! gRPC message is read. Without TLS the servers speak plaintext HTTP/2, as before; `doppel
//! serve` warns when such a server listens beyond loopback.
//!
//! ```no_run
//! use doppel_engine::tls::{ServerTls, TlsFiles};
//! let tls = ServerTls::load(&TlsFiles {
//!     cert: "engine.pem".into(),
//!     key: "engine-key.pem".into(),
//!     client_ca: Some("envoys-ca.pem".into()),
//! })?;
//! assert!(tls.mutual());
//! # Ok::<(), doppel_engine::tls::TlsError>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a client may take to finish the TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of a server's TLS setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) (PEM) client certificates must chain to; `Some` requires mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS setup could not be loaded; each names the offending file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// Which file this is (certificate, key, client CA).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("{what} {path} holds no PEM `{label}` block")]
    NotPem {
        /// Which file this is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label looked for.
        label: &'static str,
    },
    /// rustls refused the certificate, key or CA (for example a key that does not match).
    #[error("the TLS setup (certificate {cert}, key {key}) is refused: {message}")]
    Refused {
        /// The certificate's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
        /// rustls' or tonic's reason.
        message: String,
    },
}

impl TlsError {
    /// A stable short code, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "tls_read",
            TlsError::NotPem { .. } => "tls_not_pem",
            TlsError::Refused { .. } => "tls_refused",
        }
    }
}

/// A checked server TLS setup, ready to hand to a tonic server.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
}

fn read(what: &'static str, path: &Path, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    // A cheap early check with a clear message; rustls parses the blocks for real below.
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .is_some_and(|rest| rest.contains(label))
    });
    if !found {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
            label,
        });
    }
    Ok(bytes)
}

impl ServerTls {
    /// Reads and checks `files`: the key must match the certificate and every file must parse.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let cert = read("certificate", &files.cert, "CERTIFICATE")?;
        let key = read("key", &files.key, "PRIVATE KEY")?;
        let client_ca = match &files.client_ca {
            Some(path) => Some(read("client CA", path, "CERTIFICATE")?),
            None => None,
        };
        let tls = ServerTls::from_pem(&cert, &key, client_ca.as_deref());
        tls.check().map_err(|message| TlsError::Refused {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message,
        })?;
        Ok(tls)
    }

    /// A setup from PEM bytes, unchecked (the first server built with it checks it; prefer
    /// [`ServerTls::load`], which fails at start-up instead).
    pub fn from_pem(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> ServerTls {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        ServerTls {
            config,
            mutual: client_ca.is_some(),
        }
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// Builds a server with this setup once, so a bad certificate or key fails here.
    fn check(&self) -> Result<(), String> {
        tonic::transport::Server::builder()
            .tls_config(self.config.clone())
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }

    /// `builder` serving TLS with this setup.
    pub fn apply(
        &self,
        builder: tonic::transport::Server,
    ) -> Result<tonic::transport::Server, tonic::transport::Error> {
        builder.tls_config(self.config.clone())
    }
}

/// An error with its sources, joined by ": " (tonic's transport errors hide the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
