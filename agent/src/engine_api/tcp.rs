//! The Engine API on TCP, only with TLS client certificates (dockerd's `-H tcp://
//! --tlsverify`): who holds a certificate from the given CA may talk, nobody else.

use super::{Api, router};
use axum::extract::Request;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// `--tlscacert`, `--tlscert`, `--tlskey`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A handshake that takes longer than this is dropped, so a silent client holds nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// A server config that requires a client certificate signed by the CA.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let bad = |flag: &str, path: &Path, e: &dyn std::fmt::Display| {
        anyhow::anyhow!("{flag} {}: {e}", path.display())
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("--tlscacert", &files.ca)?) {
        let c = c.map_err(|e| bad("--tlscacert", &files.ca, &e))?;
        roots
            .add(c)
            .map_err(|e| bad("--tlscacert", &files.ca, &e))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--tlscacert {}: no certificate in it", files.ca.display());
    }
    let certs = CertificateDer::pem_slice_iter(&read("--tlscert", &files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("--tlscert", &files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("--tlskey", &files.key)?)
        .map_err(|e| bad("--tlskey", &files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad("--tlscacert", &files.ca, &e))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("--tlscert/--tlskey: {e}"))
}

/// Connections whose handshake is done; handshakes run on their own tasks so that one slow
/// client does not hold up the others.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended with the listener: nothing will come any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves the API on `addr` with TLS client authentication.
pub async fn serve_tls(addr: SocketAddr, files: &TlsFiles, api: Api) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(files)?));
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--engine-api-tcp {addr}: {e}"))?;
    let local = tcp.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "engine API accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "engine API: TLS handshake refused")
                    }
                    Err(_) => tracing::info!(%peer, "engine API: TLS handshake timed out"),
                }
            });
        }
    });
    let router = router(api);
    let app = tower::service_fn(move |req: Request| {
        let router = router.clone();
        async move { Ok::<_, std::convert::Infallible>(super::versioned(router, req).await) }
    });
    tracing::info!(%local, "serving Docker's Engine API over TLS");
    tokio::spawn(async move {
        let listener = TlsListener { ready: rx, local };
        if let Err(e) = axum::serve(
            listener,
            axum::ServiceExt::<Request>::into_make_service(app),
        )
        .await
        {
            tracing::warn!(error = %e, "engine API TLS server stopped");
        }
    });
    Ok(())
}
