//! The broker connection's options: client id, keep-alive, last will, and
//! the parts read from files (password, TLS certificates and key), read
//! again at every reconnect so that a fixed file is picked up without a
//! restart.

use crate::config::{Config, TlsConfig};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Requests rumqttc queues for the broker. Large enough for the discovery
/// burst at connect time; when full, publishes are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;

/// Name of the systemd credential holding the password
/// (`LoadCredential=mqtt-password:/path` in the unit).
pub const CREDENTIAL_NAME: &str = "mqtt-password";

/// "bms-gateway-" and the host name, when CLIENT-ID is not set.
pub fn client_id(config: &Config) -> String {
    config
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("bms-gateway-{}", host_name()))
}

fn host_name() -> String {
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_string();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "unknown".into(),
    }
}

/// Where the password comes from: PASSWORD-FILE, else the systemd
/// credential `mqtt-password` when the service has one.
pub fn password_path(config: &Config, credentials_dir: Option<&Path>) -> Option<PathBuf> {
    config.mqtt.password_file.clone().or_else(|| {
        let path = credentials_dir?.join(CREDENTIAL_NAME);
        path.is_file().then_some(path)
    })
}

/// The password file's content without its final line break.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the MQTT password from {}: {e}", path.display()))?;
    Ok(text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .trim_end_matches('\r')
        .to_string())
}

/// Client options for the config, files read: id, keep-alive, last will,
/// credentials and TLS.
pub fn options(config: &Config) -> Result<MqttOptions, String> {
    let mut o = base_options(config);
    refresh(config, &mut o)?;
    Ok(o)
}

/// Client options for the config: id, keep-alive, clean session, last will.
/// The parts read from files (password, certificates) are added by
/// [`refresh`], at the start and again at every reconnect, so that a fixed
/// file is picked up without a restart.
pub(super) fn base_options(config: &Config) -> MqttOptions {
    let m = &config.mqtt;
    let mut o = MqttOptions::new(client_id(config), m.broker.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(30));
    // A new session on every connect: nothing from before an outage is
    // replayed (subscriptions are renewed by the MQTT thread).
    o.set_clean_session(true);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_request_channel_capacity(QUEUE_CAPACITY);
    o.set_last_will(LastWill::new(
        format!("{}/status", m.base_topic),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    o
}

/// (Re)reads the password and TLS files into the options.
pub(super) fn refresh(config: &Config, o: &mut MqttOptions) -> Result<(), String> {
    let m = &config.mqtt;
    if let Some(user) = &m.username {
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let password = match password_path(config, credentials_dir.as_deref()) {
            Some(path) => read_password(&path)?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &m.tls {
        let client = tls_client_config(tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(client))));
    }
    Ok(())
}

/// A rustls client config with ring as the crypto provider (it cross-compiles
/// to the Raspberry Pi with just the cross gcc that linking needs anyway,
/// where rumqttc's default aws-lc-rs needs cmake and more), the
/// CA from CA-FILE or the system's roots, and the client certificate when
/// CERT-FILE and KEY-FILE are set.
pub fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs(path, "CA-FILE")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA-FILE {}: unusable certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("TLS: no system CA certificates found; set CA-FILE".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "CERT-FILE")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("KEY-FILE {}: no usable private key: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("CERT-FILE/KEY-FILE: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
pub(super) mod tests;
