//! An [`Image`] sent to a registry over the OCI distribution API
//! (`oci-client`, on a tokio runtime of its own): each blob the registry
//! does not have yet, streamed from the layer cache, then the manifest,
//! exactly the bytes whose digest the image has, under each tag.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::Image;
use crate::Digest;
use crate::store::{Direction, TransferEvent, TransferObserver};

/// How much of a blob is read and sent at a time.
const PIECE: usize = 1 << 20;

/// Where an image goes: `REGISTRY/REPOSITORY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `registry.example.com`, `127.0.0.1:5000`.
    pub registry: String,
    /// `team/shop`.
    pub repository: String,
}

impl Destination {
    /// Parses `REGISTRY/REPOSITORY`: the registry must be named (a host
    /// with a `.` or a port, or `localhost`), the repository lowercase
    /// path components, and there must be no tag or digest (tags are
    /// given apart).
    pub fn parse(given: &str) -> Result<Self, PushError> {
        let invalid = |why: &str| PushError::Destination { given: given.to_owned(), why: why.to_owned() };
        let Some((registry, repository)) = given.split_once('/') else {
            return Err(invalid("it names no repository: write REGISTRY/REPOSITORY, like registry.example.com/shop"));
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(invalid(
                "it names no registry: the part before the first '/' must be a host (registry.example.com, 127.0.0.1:5000)",
            ));
        }
        if repository.contains('@') || repository.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(invalid("it has a tag or digest: graven tags the image with its commit; add more with --tag"));
        }
        let component = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && part.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component) {
            return Err(invalid(
                "its repository is not lowercase letters, digits and '.', '_', '-' between '/'s, like team/shop",
            ));
        }
        Ok(Self { registry: registry.to_owned(), repository: repository.to_owned() })
    }

    /// Whether the registry is on this machine, where it is spoken to over
    /// plain HTTP (as Docker does).
    pub fn is_loopback(&self) -> bool {
        let host = self.registry.rsplit_once(':').map_or(self.registry.as_str(), |(host, _)| host);
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// Who the registry is told the pusher is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nobody.
    Anonymous,
    /// A user name and password (or token).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

impl Credentials {
    /// `USER:PASSWORD`, as `--creds` takes it.
    pub fn parse(given: &str) -> Result<Self, PushError> {
        match given.split_once(':') {
            Some((username, password)) if !username.is_empty() => {
                Ok(Self::Basic { username: username.to_owned(), password: password.to_owned() })
            }
            _ => Err(PushError::Credentials { why: "--creds takes USER:PASSWORD".to_owned() }),
        }
    }

    /// The credentials for `registry` in an auth file (`~/.docker/config.json`,
    /// or podman's `auth.json`), whose `auths` map a registry to
    /// `{"auth": base64("USER:PASSWORD")}`; `None` if it has none for it.
    /// A credential helper the file names for the registry (`credHelpers`)
    /// or for all (`credsStore`) is asked first, as docker asks it:
    /// `docker-credential-NAME get`, the registry on its stdin.
    pub fn from_auth_file(path: &Path, registry: &str) -> Result<Option<Self>, PushError> {
        let bad = |why: String| PushError::AuthFile { path: path.to_owned(), why };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // Keys are `host[:port]`, or an address (`https://index.docker.io/v1/`).
        let host_of = |key: &str| {
            let key = key.split_once("://").map_or(key, |(_, rest)| rest);
            key.split('/').next().unwrap_or(key).to_owned()
        };
        let helper = file
            .get("credHelpers")
            .and_then(serde_json::Value::as_object)
            .and_then(|helpers| helpers.iter().find(|(key, _)| host_of(key) == registry))
            .and_then(|(_, helper)| helper.as_str())
            .or_else(|| file.get("credsStore").and_then(serde_json::Value::as_str))
            .filter(|helper| !helper.is_empty());
        if let Some(helper) = helper
            && let Some(found) = Self::from_helper(helper, registry).map_err(bad)?
        {
            return Ok(Some(found));
        }
        let Some(auths) = file.get("auths").and_then(serde_json::Value::as_object) else { return Ok(None) };
        let Some(entry) = auths.iter().find(|(key, _)| host_of(key) == registry).map(|(_, entry)| entry) else {
            return Ok(None);
        };
        let Some(encoded) = entry.get("auth").and_then(serde_json::Value::as_str) else { return Ok(None) };
        let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim())
            .map_err(|_| bad(format!("the auth of {registry} is not base64")))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad(format!("the auth of {registry} is not text")))?;
        Self::parse(&decoded).map(Some).map_err(|_| bad(format!("the auth of {registry} is not USER:PASSWORD")))
    }

    /// What the credential helper `docker-credential-NAME` has for
    /// `registry`: `None` if it says it has none.
    fn from_helper(name: &str, registry: &str) -> Result<Option<Self>, String> {
        use std::io::Write as _;
        /// What a helper answers (it also says the `ServerURL`).
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Username")]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let program = format!("docker-credential-{name}");
        let found = crate::sandbox::find_on_path(&program)
            .ok_or_else(|| format!("it names the credential helper {name}, and {program} is not on PATH"))?;
        let mut child = std::process::Command::new(found)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading says why below.
            let _ = writeln!(stdin, "{registry}");
        }
        let output = child.wait_with_output().map_err(|e| format!("could not run {program}: {e}"))?;
        if !output.status.success() {
            let said =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            // What docker's helpers say when they have nothing for it.
            if said.contains("credentials not found") {
                return Ok(None);
            }
            return Err(format!("{program} get failed for {registry} ({}): {}", output.status, said.trim()));
        }
        let answer: Answer = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{program} get answered for {registry} with something other than credentials: {e}"))?;
        if answer.username == "<token>" {
            return Err(format!(
                "{program} has an identity token for {registry}, which graven cannot use: give --creds USER:PASSWORD"
            ));
        }
        Ok(Some(Self::Basic { username: answer.username, password: answer.secret }))
    }

    fn as_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }
}

/// A push that failed. Nothing is recorded; blobs already sent stay in
/// the registry (it shares them by digest), and a push again sends the
/// rest.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The destination cannot be one.
    #[error("'{given}' is not a destination: {why}")]
    Destination {
        /// As given.
        given: String,
        /// Why.
        why: String,
    },
    /// Credentials that cannot be used.
    #[error("{why}")]
    Credentials {
        /// Why.
        why: String,
    },
    /// An auth file that cannot be read.
    #[error("could not read the registry credentials in {}: {why}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The registry cannot be reached.
    #[error("could not reach the registry {registry}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// Why.
        #[source]
        source: OciDistributionError,
    },
    /// The registry wants credentials graven lacks, or refused them.
    #[error(
        "the registry {registry} refused access to {destination}: it needs credentials graven does not have or that it does not accept"
    )]
    Unauthorized {
        /// The registry.
        registry: String,
        /// Where the image was going.
        destination: String,
    },
    /// The registry refused the push.
    #[error("the registry {registry} refused the push")]
    Refused {
        /// The registry.
        registry: String,
        /// What it said.
        #[source]
        source: OciDistributionError,
    },
    /// A blob of the image could not be read.
    #[error("could not read {}", path.display())]
    Read {
        /// The blob.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not be started.
    #[error("could not start the push's runtime")]
    Runtime(#[source] std::io::Error),
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The image's digest, as the registry has it.
    pub digest: Digest,
    /// Blobs sent, and their bytes.
    pub sent: (u64, u64),
    /// Blobs the registry had already, and their bytes.
    pub skipped: (u64, u64),
}

/// A push to make.
pub struct PushRequest<'a> {
    /// The image.
    pub image: &'a Image,
    /// Where.
    pub destination: &'a Destination,
    /// Its tags, the commit first.
    pub tags: &'a [String],
    /// Who.
    pub credentials: &'a Credentials,
    /// Plain HTTP even to a registry that is not on this machine.
    pub insecure: bool,
    /// Told of the upload's progress.
    pub observer: &'a dyn TransferObserver,
}

/// One blob to send: its digest, size, and bytes (in memory or in a file).
struct Blob {
    digest: Digest,
    size: u64,
    bytes: BlobBytes,
}

enum BlobBytes {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// Sends `request.image` to its destination; see the module.
pub fn push(request: &PushRequest<'_>) -> Result<Pushed, PushError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(PushError::Runtime)?;
    runtime.block_on(push_async(request))
}

async fn push_async(request: &PushRequest<'_>) -> Result<Pushed, PushError> {
    let destination = request.destination;
    let registry = destination.registry.clone();
    let protocol =
        if request.insecure || destination.is_loopback() { ClientProtocol::Http } else { ClientProtocol::Https };
    let client = Client::new(ClientConfig {
        protocol,
        use_monolithic_push: true,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        ..ClientConfig::default()
    });
    let classify = |error: OciDistributionError| classify(error, destination);
    let tag = request.tags.first().map_or("latest", String::as_str);
    let reference = Reference::with_tag(registry.clone(), destination.repository.clone(), tag.to_owned());
    let auth = request.credentials.as_auth();
    client.auth(&reference, &auth, RegistryOperation::Push).await.map_err(classify)?;

    let image = request.image;
    let mut blobs: Vec<Blob> = image
        .layers
        .iter()
        .map(|layer| Blob { digest: layer.digest, size: layer.size, bytes: BlobBytes::File(layer.blob.clone()) })
        .collect();
    blobs.push(Blob {
        digest: image.config_digest,
        size: image.config.len() as u64,
        bytes: BlobBytes::Memory(image.config.clone()),
    });
    blobs.dedup_by_key(|blob| blob.digest);

    // What the registry lacks.
    let mut missing = Vec::new();
    let mut skipped = (0, 0);
    for blob in blobs {
        if client.blob_exists(&reference, &blob.digest.to_string()).await.map_err(classify)? {
            skipped.0 += 1;
            skipped.1 += blob.size;
        } else {
            missing.push(blob);
        }
    }
    let total: u64 = missing.iter().map(|blob| blob.size).sum();
    request.observer.on_transfer(&TransferEvent::Started {
        direction: Direction::Upload,
        objects: missing.len() as u64,
        bytes: total,
    });
    let sent = (missing.len() as u64, total);
    for blob in missing {
        let digest = blob.digest.to_string();
        match blob.bytes {
            BlobBytes::Memory(bytes) => {
                client.push_blob(&reference, bytes, &digest).await.map_err(classify)?;
                request.observer.on_transfer(&TransferEvent::Moved { objects: 1, bytes: blob.size });
            }
            BlobBytes::File(path) => {
                let file =
                    std::fs::File::open(&path).map_err(|source| PushError::Read { path: path.clone(), source })?;
                let counted = Arc::new(AtomicU64::new(0));
                let stream = file_stream(file, Arc::clone(&counted));
                let upload = client.push_blob_stream(&reference, stream, &digest, Some(blob.size));
                reporting(upload, &counted, request.observer).await.map_err(classify)?;
            }
        }
    }
    request.observer.on_transfer(&TransferEvent::Finished);

    let content_type = hyper::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
    for tag in request.tags {
        let tagged = Reference::with_tag(registry.clone(), destination.repository.clone(), tag.clone());
        client.push_manifest_raw(&tagged, image.manifest.clone(), content_type.clone()).await.map_err(classify)?;
    }
    Ok(Pushed { digest: image.manifest_digest, sent, skipped })
}

/// The file's bytes as a stream of pieces, each counted in `sent` as it
/// is read. The file is local: reading it blocks only briefly.
fn file_stream(
    file: std::fs::File,
    sent: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::unfold(file, move |mut file| {
        let sent = Arc::clone(&sent);
        async move {
            let mut piece = vec![0; PIECE];
            match file.read(&mut piece) {
                Ok(0) => None,
                Ok(read) => {
                    piece.truncate(read);
                    sent.fetch_add(read as u64, Ordering::Relaxed);
                    Some((Ok(bytes::Bytes::from(piece)), file))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), file)),
            }
        }
    })
}

/// Runs `work`, telling `observer` every tenth of a second how many more
/// bytes `sent` counts, and once more, for the blob, when it is done.
async fn reporting<F: std::future::Future>(work: F, sent: &AtomicU64, observer: &dyn TransferObserver) -> F::Output {
    tokio::pin!(work);
    let mut told = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            output = &mut work => {
                let now = sent.load(Ordering::Relaxed);
                observer.on_transfer(&TransferEvent::Moved { objects: 1, bytes: now.saturating_sub(told) });
                return output;
            }
            _ = tick.tick() => {
                let now = sent.load(Ordering::Relaxed);
                if now > told {
                    observer.on_transfer(&TransferEvent::Moved { objects: 0, bytes: now - told });
                    told = now;
                }
            }
        }
    }
}

/// What a failure of the distribution API means for the user.
fn classify(error: OciDistributionError, destination: &Destination) -> PushError {
    let registry = destination.registry.clone();
    let unauthorized = || PushError::Unauthorized { registry: registry.clone(), destination: destination.to_string() };
    match &error {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            PushError::Unreachable { registry, source: error }
        }
        OciDistributionError::RequestError(e)
            if e.status().is_some_and(|status| status.as_u16() == 401 || status.as_u16() == 403) =>
        {
            unauthorized()
        }
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            unauthorized()
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => unauthorized(),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            unauthorized()
        }
        _ => PushError::Refused { registry, source: error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_names_a_registry_and_a_repository() {
        let ok = Destination::parse("127.0.0.1:5000/team/shop").unwrap();
        assert_eq!((ok.registry.as_str(), ok.repository.as_str()), ("127.0.0.1:5000", "team/shop"));
        assert!(ok.is_loopback());
        assert!(!Destination::parse("registry.example.com/shop").unwrap().is_loopback());
        for (given, why) in [
            ("shop", "names no repository"),
            ("team/shop", "names no registry"),
            ("registry.example.com/shop:v1", "has a tag or digest"),
            ("registry.example.com/shop@sha256:00", "has a tag or digest"),
            ("registry.example.com/Shop", "not lowercase"),
            ("registry.example.com/shop/", "not lowercase"),
        ] {
            let error = Destination::parse(given).unwrap_err().to_string();
            assert!(error.contains(why), "{given}: {error}");
        }
    }

    #[test]
    fn credentials_come_from_an_auth_file_by_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // base64("pusher:s3cret")
        std::fs::write(
            &path,
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "eDp5"}, "127.0.0.1:5000": {"auth": "cHVzaGVyOnMzY3JldA=="}}}"#,
        )
        .unwrap();
        let found = Credentials::from_auth_file(&path, "127.0.0.1:5000").unwrap();
        assert_eq!(found, Some(Credentials::Basic { username: "pusher".to_owned(), password: "s3cret".to_owned() }));
        assert_eq!(Credentials::from_auth_file(&path, "other:5000").unwrap(), None);
        assert_eq!(Credentials::from_auth_file(&dir.path().join("none.json"), "x").unwrap(), None);
        assert!(format!("{found:?}").contains("***") && !format!("{found:?}").contains("s3cret"));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(Credentials::from_auth_file(&path, "x"), Err(PushError::AuthFile { .. })));
    }
}
