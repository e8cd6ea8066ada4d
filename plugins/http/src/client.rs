//! The HTTP clients: one pooled client for every webhook that needs
//! nothing of its own, and one per webhook with a `tls` or `proxy` key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};

use crate::USER_AGENT_VALUE;

/// A webhook's `tls` object as written: PEM files (relative to the app
/// file) or PEM text (e.g. from `${VAR}`), and the name to check the
/// server's certificate against.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsKey {
    client_cert: Option<String>,
    client_key: Option<String>,
    ca: Option<String>,
    server_name: Option<String>,
}

/// What a webhook's `tls` and `proxy` keys ask of its client.
#[derive(Default)]
pub(crate) struct ClientOptions {
    /// The client certificate chain and its key, as one PEM.
    identity: Option<reqwest::Identity>,
    /// Trusted instead of the built-in web roots.
    ca: Vec<reqwest::Certificate>,
    /// Checked (and sent as SNI and `Host`) instead of the URL's host.
    pub(crate) server_name: Option<String>,
    /// The webhook's own proxy.
    proxy: Option<reqwest::Proxy>,
}

impl ClientOptions {
    /// Reads `tls` and `proxy`; each refusal names the key and the file.
    pub(crate) fn read(spec: &WebhookSpec, base_dir: &Path) -> Result<Option<Self>, SinkConfigError> {
        let tls: Option<TlsKey> = object_key(spec, "tls")?;
        let proxy = optional_str(spec, "proxy")?;
        if tls.is_none() && proxy.is_none() {
            return Ok(None);
        }
        let mut options = Self::default();
        if let Some(proxy) = proxy {
            options.proxy = Some(proxy_of(proxy).map_err(|e| SinkConfigError::new(format!("`proxy`: {e}")))?);
        }
        let tls = tls.unwrap_or_default();
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                let (cert_pem, cert_file) = pem(cert, base_dir, "tls.client_cert")?;
                let (key_pem, key_file) = pem(key, base_dir, "tls.client_key")?;
                let certificates = reqwest::Certificate::from_pem_bundle(&cert_pem).unwrap_or_default();
                if certificates.is_empty() || !contains_block(&cert_pem, "CERTIFICATE") {
                    return Err(SinkConfigError::new(format!(
                        "`tls.client_cert` {cert_file}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    )));
                }
                if !contains_block(&key_pem, "PRIVATE KEY") {
                    return Err(SinkConfigError::new(format!(
                        "`tls.client_key` {key_file}: holds no PEM private key (-----BEGIN PRIVATE KEY-----, or an RSA or EC one)"
                    )));
                }
                let mut both = cert_pem;
                both.push(b'\n');
                both.extend_from_slice(&key_pem);
                options.identity = Some(reqwest::Identity::from_pem(&both).map_err(|e| {
                    SinkConfigError::new(format!(
                        "`tls.client_cert` {cert_file} and `tls.client_key` {key_file} do not make a client identity: {e}"
                    ))
                })?);
            }
            (None, None) => {}
            _ => {
                return Err(SinkConfigError::new(
                    "`tls.client_cert` and `tls.client_key` go together: name both PEM files, or neither",
                ));
            }
        }
        if let Some(ca) = &tls.ca {
            let (ca_pem, ca_file) = pem(ca, base_dir, "tls.ca")?;
            options.ca = reqwest::Certificate::from_pem_bundle(&ca_pem)
                .ok()
                .filter(|c| !c.is_empty() && contains_block(&ca_pem, "CERTIFICATE"))
                .ok_or_else(|| {
                    SinkConfigError::new(format!(
                        "`tls.ca` {ca_file}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    ))
                })?;
        }
        if let Some(name) = &tls.server_name {
            if url::Host::parse(name).is_err() || name.is_empty() {
                return Err(SinkConfigError::new(format!(
                    "`tls.server_name` {name:?} is not a host name"
                )));
            }
            if options.proxy.is_some() {
                return Err(SinkConfigError::new(
                    "`tls.server_name` cannot go with `proxy`: the proxy resolves the name itself",
                ));
            }
            options.server_name = Some(name.to_ascii_lowercase());
        }
        Ok(Some(options))
    }
}

/// A `proxy` URL: `http://` or `https://`, credentials allowed (they go
/// in `Proxy-Authorization`, never in logs).
pub(crate) fn proxy_of(text: &str) -> Result<reqwest::Proxy, String> {
    let url = url::Url::parse(text).map_err(|_| "is not a URL; write it as http://host:port".to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".to_string());
    }
    reqwest::Proxy::all(url.as_str()).map_err(|e| format!("cannot be used: {e}"))
}

/// Whether `pem` has a `-----BEGIN … <label>-----` line.
fn contains_block(pem: &[u8], label: &str) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")))
}

/// A PEM value: the text itself when it holds a PEM block, otherwise a
/// file (relative to the app file's directory). Returns the PEM and how
/// to name it in an error (the path, or "(inline PEM)").
fn pem(value: &str, base_dir: &Path, key: &str) -> Result<(Vec<u8>, String), SinkConfigError> {
    if value.trim_start().starts_with("-----BEGIN ") {
        return Ok((value.as_bytes().to_vec(), "(inline PEM)".to_string()));
    }
    if value.trim().is_empty() {
        return Err(SinkConfigError::new(format!(
            "`{key}` is empty; name a PEM file (relative to the app file) or give the PEM itself"
        )));
    }
    let path: PathBuf = base_dir.join(value);
    let shown = path.display().to_string();
    std::fs::read(&path)
        .map(|bytes| (bytes, shown.clone()))
        .map_err(|e| SinkConfigError::new(format!("`{key}` {shown}: cannot be read: {e}")))
}

/// The settings every client shares.
fn base() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
}

/// The shared client: through `default_proxy` (except for the hosts in
/// `NO_PROXY`) when the daemon sets one, else through the environment's
/// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, as reqwest reads them.
pub(crate) fn shared(default_proxy: Option<&reqwest::Proxy>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = base();
    if let Some(proxy) = default_proxy {
        builder = builder.proxy(proxy.clone().no_proxy(reqwest::NoProxy::from_env()));
    }
    builder.build()
}

/// A webhook's own client.
pub(crate) fn own(
    options: ClientOptions,
    default_proxy: Option<&reqwest::Proxy>,
    url: &url::Url,
) -> Result<reqwest::Client, SinkConfigError> {
    let mut builder = base();
    match (options.proxy, default_proxy) {
        (Some(proxy), _) => builder = builder.proxy(proxy),
        (None, Some(proxy)) => builder = builder.proxy(proxy.clone().no_proxy(reqwest::NoProxy::from_env())),
        (None, None) => {}
    }
    if let Some(identity) = options.identity {
        builder = builder.identity(identity);
    }
    if !options.ca.is_empty() {
        builder = builder.tls_built_in_root_certs(false);
        for certificate in options.ca {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(name) = options.server_name {
        // Requests go to https://<server_name>/…, which this resolver
        // sends to the URL's own host: the certificate is checked against
        // the name, the connection goes where the URL says.
        let host = url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        builder = builder.dns_resolver(Arc::new(NameTo { name, host }));
    }
    builder
        .build()
        .map_err(|e| SinkConfigError::new(format!("cannot build the webhook's HTTP client: {e}")))
}

/// Resolves `name` to `host`'s addresses, and every other name as usual.
struct NameTo {
    name: String,
    host: String,
}

impl reqwest::dns::Resolve for NameTo {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = if name.as_str().eq_ignore_ascii_case(&self.name) {
            self.host.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: serde_json::Value) -> Result<Option<ClientOptions>, String> {
        ClientOptions::read(json.as_object().unwrap(), Path::new("/apps")).map_err(|e| e.message)
    }

    #[test]
    fn refusals_name_the_key_and_the_file() {
        assert!(read(serde_json::json!({})).unwrap().is_none());
        let e = read(serde_json::json!({"tls": {"client_cert": "c.pem"}}))
            .err()
            .unwrap();
        assert!(e.contains("go together"), "{e}");
        let e = read(serde_json::json!({"tls": {"ca": "missing.pem"}})).err().unwrap();
        assert!(e.contains("`tls.ca` /apps/missing.pem: cannot be read"), "{e}");
        let e = read(
            serde_json::json!({"tls": {"ca": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}}),
        )
        .err()
        .unwrap();
        assert!(e.contains("`tls.ca` (inline PEM)"), "{e}");
        let e = read(serde_json::json!({"tls": {"sever_name": "x"}})).err().unwrap();
        assert!(e.contains("sever_name"), "{e}");
        let e = read(serde_json::json!({"proxy": "socks5://127.0.0.1:1080"}))
            .err()
            .unwrap();
        assert!(e.starts_with("`proxy`"), "{e}");
        let e = read(serde_json::json!({"proxy": "http://p:3128", "tls": {"server_name": "h"}}))
            .err()
            .unwrap();
        assert!(e.contains("server_name") && e.contains("proxy"), "{e}");
        assert!(
            read(serde_json::json!({"proxy": "http://user:pw@p:3128"}))
                .unwrap()
                .is_some()
        );
    }
}
