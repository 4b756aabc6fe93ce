//! One webhook request: resolve the endpoint's host, refuse private addresses (unless
//! allowed), connect to the checked address itself (so DNS cannot answer differently
//! between check and connect), TLS with rustls for `https`, one HTTP/1.1 POST, the
//! status and the first KiB of the body. Redirects are answers like any other (the
//! caller counts them as failures); nothing is followed. The whole exchange has
//! [`TIMEOUT`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::domain::webhook::{is_forbidden, Target, RESPONSE_BODY_BYTES};

/// The longest a delivery request may take, connecting and reading included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What an endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The first [`RESPONSE_BODY_BYTES`] of the body, as text.
    pub body: String,
}

/// Sends webhook requests.
pub struct Sender {
    tls: TlsConnector,
    allow_private: bool,
}

impl Sender {
    /// A sender trusting Mozilla's roots and, when given, the PEM certificates in
    /// `ca_file` (`webhooks.ca_file`).
    pub fn new(ca_file: Option<&Path>, allow_private: bool) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.map_err(|err| format!("{}: {err}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("{}: {err}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
        }
        // ring rather than aws-lc-rs, which needs cmake and a C toolchain to build; its
        // provider lacks post-quantum key exchange, which rustls now flags.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            allow_private,
        })
    }

    /// POSTs `body` (JSON) with `headers` to `url`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        match tokio::time::timeout(TIMEOUT, self.exchange(url, headers, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let target = Target::parse(url)?;
        let addr = self.address(&target).await?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        let _ = stream.set_nodelay(true);
        let host_header = match (target.tls, target.port) {
            (true, 443) | (false, 80) => target.host.clone(),
            _ if target.host.contains(':') => format!("[{}]:{}", target.host, target.port),
            _ => format!("{}:{}", target.host, target.port),
        };
        let mut request = Request::post(target.path_and_query.as_str())
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("contactd-webhooks/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| format!("cannot build the request: {err}"))?;
        if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|err| format!("not a TLS server name: {err}"))?;
            let stream = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|err| format!("TLS with {}: {err}", target.host))?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(stream), request).await
        }
    }

    /// The address to connect to: the first the host resolves to that a delivery may
    /// reach.
    async fn address(&self, target: &Target) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = match target.literal() {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|err| format!("cannot resolve {}: {err}", target.host))?
                .collect(),
        };
        addrs
            .iter()
            .copied()
            .find(|a| self.allow_private || !is_forbidden(a.ip()))
            .ok_or_else(|| match addrs.first() {
                Some(addr) => format!(
                    "{} resolves to {}, a loopback, private or link-local address (webhooks.allow_private)",
                    target.host,
                    addr.ip()
                ),
                None => format!("{} resolves to no address", target.host),
            })
    }
}

async fn send<S>(io: TokioIo<S>, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| format!("HTTP handshake: {err}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = client
            .send_request(request)
            .await
            .map_err(|err| format!("sending: {err}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_BODY_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                }
                Some(Err(err)) if kept.is_empty() => {
                    return Err(format!("reading the answer: {err}"))
                }
                _ => break,
            }
        }
        kept.truncate(RESPONSE_BODY_BYTES);
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&kept).into_owned(),
        })
    }
    .await;
    driver.abort();
    result
}
