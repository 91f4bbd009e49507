//! Opens the two stores a broker runs on, from its settings: the metadata store (embedded, or
//! etcd with `--etcd-endpoints`) and the object store (local directory, or an S3-compatible
//! bucket with `--object-store-url s3://bucket/prefix`).

use crate::config::StoreArgs;
use anyhow::{bail, Context};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use skiff_tiering::metadata::embedded::EmbeddedStore;
use skiff_tiering::metadata::etcd::{EtcdConfig, EtcdStore, EtcdTls, EtcdUser};
use skiff_tiering::metadata::metered::{MetadataCounts, MeteredMetadata};
use skiff_tiering::metadata::MetadataStore;
use skiff_tiering::Clock;
use std::sync::Arc;
use std::time::Duration;

/// The metadata store, counted (`metadata::metered`): what the process asks of etcd.
pub async fn open_metadata_store(
    args: &StoreArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn MetadataStore>, Arc<MetadataCounts>)> {
    let metered = MeteredMetadata::new(open_unmetered_metadata(args, clock).await?);
    let counts = metered.counts();
    Ok((Arc::new(metered), counts))
}

/// etcd's user and password, both or neither.
fn etcd_user(args: &StoreArgs) -> anyhow::Result<Option<EtcdUser>> {
    match (&args.etcd_user, &args.etcd_password) {
        (None, None) => Ok(None),
        (Some(name), Some(password)) => Ok(Some(EtcdUser {
            name: name.clone(),
            password: password.expose().to_owned(),
        })),
        _ => anyhow::bail!("--etcd-user and --etcd-password go together"),
    }
}

/// TLS for `https://` endpoints (all or none of them).
fn etcd_tls(args: &StoreArgs, endpoints: &[String]) -> anyhow::Result<Option<EtcdTls>> {
    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https == 0 {
        if args.etcd_ca_location.is_some() || args.etcd_cert_location.is_some() {
            anyhow::bail!(
                "--etcd-ca-location and --etcd-cert-location need https:// etcd endpoints"
            );
        }
        return Ok(None);
    }
    if https != endpoints.len() {
        anyhow::bail!("--etcd-endpoints mixes http:// and https://");
    }
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca_pem = args.etcd_ca_location.as_ref().map(read).transpose()?;
    let identity_pem = match (&args.etcd_cert_location, &args.etcd_key_location) {
        (None, None) => None,
        (Some(cert), key) => Some((read(cert)?, read(key.as_ref().unwrap_or(cert))?)),
        (None, Some(_)) => anyhow::bail!("--etcd-key-location needs --etcd-cert-location"),
    };
    Ok(Some(EtcdTls {
        ca_pem,
        identity_pem,
    }))
}

async fn open_unmetered_metadata(
    args: &StoreArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if let Some(endpoints) = &args.etcd_endpoints {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        let config = EtcdConfig {
            request_timeout: Duration::from_millis(args.etcd_request_timeout_ms),
            user: etcd_user(args)?,
            tls: etcd_tls(args, &endpoints)?,
            ..EtcdConfig::new(endpoints.clone())
        };
        let store = EtcdStore::connect(&config)
            .await
            .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))?;
        tracing::info!(endpoints = endpoints.join(","), "metadata store: etcd");
        return Ok(Arc::new(store));
    }
    let meta_dir = args.data_dir.join("meta");
    std::fs::create_dir_all(&meta_dir)
        .with_context(|| format!("cannot create {}", meta_dir.display()))?;
    let store = EmbeddedStore::open(&meta_dir.join("skiff.redb"), clock)
        .await
        .with_context(|| {
            format!(
                "cannot open the metadata store in {} (is another broker using it?)",
                meta_dir.display()
            )
        })?;
    tracing::info!(dir = %meta_dir.display(), "metadata store: embedded");
    Ok(Arc::new(store))
}

/// The object store, counted (`metered`): what the process asks of the bucket is what a cloud
/// bill counts.
pub fn open_object_store(
    args: &StoreArgs,
) -> anyhow::Result<(
    Arc<dyn ObjectStore>,
    Arc<skiff_tiering::metered::ObjectStoreCounts>,
)> {
    let metered = skiff_tiering::metered::MeteredStore::new(open_unmetered(args)?);
    let counts = metered.counts();
    Ok((Arc::new(metered), counts))
}

fn open_unmetered(args: &StoreArgs) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = args.object_store_url.as_deref().unwrap_or("");
    if url.is_empty() {
        let dir = args.data_dir.join("objects");
        return local(&dir);
    }
    if let Some(path) = url.strip_prefix("file://") {
        return local(std::path::Path::new(path));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        bail!("--object-store-url must start with s3:// or file://, got {url:?}");
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("--object-store-url {url:?} names no bucket");
    }
    // Standard AWS_* variables (credentials, region, endpoint) apply unless a flag says otherwise.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&args.s3_region)
        .with_allow_http(args.s3_allow_http)
        .with_virtual_hosted_style_request(args.s3_virtual_hosted_style)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(args.s3_allow_http)
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_millis(args.object_store_timeout_ms)),
        )
        .with_retry(RetryConfig {
            max_retries: args.object_store_max_retries,
            retry_timeout: Duration::from_millis(args.object_store_timeout_ms),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &args.s3_endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(key) = &args.s3_access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &args.s3_secret_access_key {
        builder = builder.with_secret_access_key(secret.expose());
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let unsigned_payload = match args.s3_unsigned_payload {
        Some(unsigned) => Some(unsigned),
        None if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_some() => None,
        None => Some(unsigned_payload_by_default(endpoint.as_deref())),
    };
    if let Some(unsigned) = unsigned_payload {
        builder = builder.with_unsigned_payload(unsigned);
    }
    let s3 = builder
        .build()
        .context("invalid S3 settings (--object-store-url, --s3-*)")?;
    tracing::info!(
        bucket,
        prefix,
        endpoint = endpoint.as_deref().unwrap_or("(AWS)"),
        unsigned_payload = ?unsigned_payload,
        "object store: S3"
    );
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        Ok(Arc::new(s3))
    } else {
        Ok(Arc::new(PrefixStore::new(s3, ObjectPath::from(prefix))))
    }
}

/// Whether object bodies go unsigned when no setting says: over HTTPS (AWS itself, or an
/// https:// endpoint), where TLS already protects them in transit.
fn unsigned_payload_by_default(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|e| e.to_ascii_lowercase().starts_with("https://"))
}

fn local(dir: &std::path::Path) -> anyhow::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let store = LocalFileSystem::new_with_prefix(dir)
        .with_context(|| format!("cannot open the local object store in {}", dir.display()))?
        // Acknowledged means durable: a PUT returns only once the object is on disk.
        .with_fsync(true);
    tracing::info!(dir = %dir.display(), "object store: local directory");
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_go_unsigned_by_default_only_over_https() {
        assert!(unsigned_payload_by_default(None), "AWS itself");
        assert!(unsigned_payload_by_default(Some("https://s3.example.com")));
        assert!(unsigned_payload_by_default(Some("HTTPS://minio:9000")));
        assert!(!unsigned_payload_by_default(Some("http://minio:9000")));
    }
}
