//! Where an S3 volume's credentials come from, and keeping them fresh: the
//! AWS SDKs' default chain, as keepstore's SDK runs it
//! (docs/protocol.md, "S3 credentials").
//!
//! At volume setup [`Provider::for_volume`] takes the first source that
//! gives credentials, in the SDKs' order: the volume's `AccessKeyID`/
//! `SecretAccessKey`; `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN`; the shared credentials file (`AWS_PROFILE`,
//! `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`); web identity (STS
//! `AssumeRoleWithWebIdentity`, EKS); container credentials (ECS, EKS Pod
//! Identity); IMDSv2 (an EC2 instance role). Nothing found is one message
//! listing what was tried (exit 2, before any listing).
//!
//! Temporary credentials are refreshed [`MARGIN`] before their
//! `Expiration` (keepstore's window), one refresh at a time: while one
//! request fetches, the others go on with the still-valid ones. A request
//! the server refuses for its token ([`Provider::refresh_after`]) makes one
//! refresh for all that used the same credentials. Every request of a
//! volume, and every volume on the default chain (per Region: web identity
//! asks the Region's STS), shares one [`Provider`]: one IMDS or STS fetch
//! per process, not per volume.
//!
//! Fetches go through reqwest (a client of their own per fetch, with short
//! timeouts for the link-local services, no proxy for them), answers are
//! read up to 64 KiB, and no key, secret, session token or IMDS token is
//! ever part of a message: a source is named by where it is ("IMDS role R
//! at URL", "profile P in FILE"), never by what it holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rusty_s3::Credentials;

use crate::protocol::client::{read_capped, Failure, FailureKind};

/// Temporary credentials are replaced this long before they expire
/// (keepstore's `ExpiryWindow`; EC2 has new ones ready five minutes early).
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

/// A refresh that brought credentials already inside [`MARGIN`] is not
/// tried again sooner than this (a source that only has short-lived ones
/// is not asked on every request).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The link-local services (IMDS, ECS): a host that is not on EC2 has
/// nothing there, and must fail fast (the SDKs give it 1 s).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const LOCAL_TIMEOUT: Duration = Duration::from_secs(5);
/// STS is a remote service.
const STS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STS_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a credentials answer read.
const ANSWER_CAP: usize = 64 * 1024;

const IMDS_DEFAULT: &str = "http://169.254.169.254";
const IMDS_DEFAULT_V6: &str = "http://[fd00:ec2::254]";
const ECS_HOST: &str = "http://169.254.170.2";

/// Credentials with a session token when there is one.
fn with_token(key: String, secret: String, token: Option<String>) -> Credentials {
    match token {
        Some(t) => Credentials::new_with_token(key, secret, t),
        None => Credentials::new(key, secret),
    }
}

/// An environment: the process's, or a test's.
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The process environment, an empty value counting as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where credentials come from.
#[derive(Debug, Clone)]
enum Source {
    /// The volume's keys, or the environment's: never change.
    Fixed,
    /// A profile of a shared credentials file: read again when S3 refuses
    /// its token (someone may have renewed it).
    Profile {
        file: PathBuf,
        profile: String,
    },
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        endpoint: String,
    },
    Container {
        url: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
    },
    Imds {
        endpoint: String,
    },
}

/// Credentials in use: what signs requests, until when, from where.
pub struct Lease {
    creds: Credentials,
    /// `None`: long-lived.
    expires: Option<SystemTime>,
    /// Bumped by every refresh: a request refused for its token asks for a
    /// refresh of the lease it used, not of a newer one.
    generation: u64,
    /// Where they came from, in words ("from IMDS role R at URL"): never a
    /// secret.
    pub from: String,
}

impl Lease {
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }
    fn due(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| now + MARGIN >= e)
    }
    fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("from", &self.from)
            .field("expires", &self.expires)
            .field("generation", &self.generation)
            .finish()
    }
}

/// One source's credentials, shared by every request that uses them.
pub struct Provider {
    source: Source,
    current: RwLock<Arc<Lease>>,
    /// Held while fetching; holds when the last fetch was.
    refreshing: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("from", &self.current().from)
            .finish()
    }
}

/// Fetched credentials (`Debug` shows the key id, never the secret).
#[derive(Debug)]
struct Fetched {
    creds: Credentials,
    expires: Option<SystemTime>,
    from: String,
}

/// The providers of the default chain, by Region: every volume without
/// keys of its own shares one.
static SHARED: Mutex<Option<HashMap<String, Arc<Provider>>>> = Mutex::new(None);

impl Provider {
    /// The credentials of a volume that gives `keys` (its AccessKeyID and
    /// SecretAccessKey) in `region`: those keys, else the default chain
    /// (shared by every such volume of the process). `Err` is the message
    /// of a volume that cannot be used, saying what was tried.
    pub fn for_volume(
        keys: (Option<&str>, Option<&str>),
        region: &str,
    ) -> Result<Arc<Provider>, String> {
        match keys {
            (Some(k), Some(s)) => Ok(Provider::fixed(
                Credentials::new(k, s),
                "from the volume's AccessKeyID/SecretAccessKey".into(),
            )),
            (Some(_), None) | (None, Some(_)) => Err(
                "it gives only one of AccessKeyID and SecretAccessKey: give both, or neither \
                 to use the AWS credential chain (AWS_ACCESS_KEY_ID, a profile, web identity, \
                 container credentials, an instance role)"
                    .into(),
            ),
            (None, None) => {
                let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
                let map = shared.get_or_insert_with(HashMap::new);
                if let Some(p) = map.get(region) {
                    return Ok(p.clone());
                }
                let p = Arc::new(on_setup(chain(&process_env, region))?);
                map.insert(region.to_string(), p.clone());
                Ok(p)
            }
        }
    }

    fn fixed(creds: Credentials, from: String) -> Arc<Provider> {
        Arc::new(Provider::new(
            Source::Fixed,
            Fetched {
                creds,
                expires: None,
                from,
            },
        ))
    }

    fn new(source: Source, first: Fetched) -> Provider {
        Provider {
            source,
            current: RwLock::new(Arc::new(Lease {
                creds: first.creds,
                expires: first.expires,
                generation: 0,
                from: first.from,
            })),
            refreshing: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// The credentials in use now, whatever their state.
    pub fn current(&self) -> Arc<Lease> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the credentials come from, in words.
    pub fn from(&self) -> String {
        self.current().from.clone()
    }

    /// Credentials to sign a request with: the current ones, refreshed
    /// first when they are within [`MARGIN`] of their expiry. While one
    /// request refreshes, others use the still-valid ones; once they have
    /// expired, they wait for the refresh. A failed refresh of still-valid
    /// credentials is logged and they are used.
    pub async fn get(&self) -> Result<Arc<Lease>, Failure> {
        let cur = self.current();
        let now = SystemTime::now();
        if !cur.due(now) {
            return Ok(cur);
        }
        if !cur.expired(now) {
            let Ok(mut last) = self.refreshing.try_lock() else {
                return Ok(cur); // another request is refreshing
            };
            if last.elapsed() < MIN_REFRESH_INTERVAL && cur.generation > 0 {
                return Ok(cur);
            }
            return match self.refresh_locked(&mut last, cur.generation).await {
                Ok(l) => Ok(l),
                Err(f) => {
                    tracing::warn!(
                        event = "credentials",
                        "could not refresh the S3 credentials {} ({}); using them until they \
                         expire",
                        cur.from,
                        f.detail
                    );
                    Ok(cur)
                }
            };
        }
        let mut last = self.refreshing.lock().await;
        self.refresh_locked(&mut last, cur.generation).await
    }

    /// A request signed with `used` was refused for its session token: the
    /// credentials after one refresh (or the newer ones another request
    /// already fetched), to retry that request once with; `None` when the
    /// source cannot give others (the volume's keys, the environment's).
    pub async fn refresh_after(&self, used: &Lease) -> Result<Option<Arc<Lease>>, Failure> {
        if matches!(self.source, Source::Fixed) {
            return Ok(None);
        }
        let mut last = self.refreshing.lock().await;
        self.refresh_locked(&mut last, used.generation)
            .await
            .map(Some)
    }

    /// Fetch anew unless the lease of `seen` has already been replaced.
    async fn refresh_locked(&self, last: &mut Instant, seen: u64) -> Result<Arc<Lease>, Failure> {
        let cur = self.current();
        if cur.generation != seen {
            return Ok(cur);
        }
        let f = fetch(&self.source).await.map_err(|why| {
            Failure::new(
                FailureKind::Transient,
                format!("could not refresh the S3 credentials {}: {why}", cur.from),
            )
        })?;
        *last = Instant::now();
        let lease = Arc::new(Lease {
            creds: f.creds,
            expires: f.expires,
            generation: seen + 1,
            from: f.from,
        });
        tracing::info!(
            event = "credentials",
            "S3 credentials refreshed {}{}",
            lease.from,
            expiry_words(lease.expires)
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = lease.clone();
        Ok(lease)
    }

    /// What to do when S3 still refuses these credentials' token.
    pub fn token_advice(&self) -> String {
        let from = self.from();
        match &self.source {
            Source::Fixed => format!(
                "the credentials came {from} and cannot be refreshed: give fresh ones \
                 (temporary credentials last at most 12 hours) or long-lived keys, and rerun \
                 (blocks already copied are not copied again)"
            ),
            Source::Profile { .. } => format!(
                "the credentials came {from}, read again and refused again: renew that profile \
                 and rerun (blocks already copied are not copied again)"
            ),
            _ => format!(
                "the credentials came {from}, were refreshed and refused again: check that \
                 the S3 server accepts that role's credentials (and this host's clock)"
            ),
        }
    }
}

/// " (expire at T)" or "".
fn expiry_words(e: Option<SystemTime>) -> String {
    e.map(|t| format!(" (they expire at {})", humantime::format_rfc3339_seconds(t)))
        .unwrap_or_default()
}

/// Run a setup fetch to completion from synchronous code, inside or outside
/// a runtime: on a thread of its own with a runtime of its own (volume
/// setup happens once; its HTTP client lives and dies with that runtime).
fn on_setup<T: Send>(fut: impl std::future::Future<Output = T> + Send) -> T {
    crate::passes::off_workers(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread tokio runtime")
                    .block_on(fut)
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    })
}

/// The default chain: the first source that gives credentials, else a
/// message listing each source and why it gave none. A source that is
/// configured but fails (a named profile that is not there, an STS that
/// refuses) is that source's error: the chain does not go on past it, as
/// the SDKs do not.
pub async fn chain(env: Env<'_>, region: &str) -> Result<Provider, String> {
    let mut tried: Vec<String> = Vec::new();
    let fail = |why: String| {
        format!(
            "it gives no AccessKeyID/SecretAccessKey, and the AWS credential chain failed: {why}"
        )
    };

    // 1. The environment.
    let key = env("AWS_ACCESS_KEY_ID").or_else(|| env("AWS_ACCESS_KEY"));
    let secret = env("AWS_SECRET_ACCESS_KEY").or_else(|| env("AWS_SECRET_KEY"));
    match (key, secret) {
        (Some(k), Some(s)) => {
            let token = env("AWS_SESSION_TOKEN");
            let from = format!(
                "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY{}",
                if token.is_some() {
                    "/AWS_SESSION_TOKEN"
                } else {
                    ""
                }
            );
            return Ok(Provider::new(
                Source::Fixed,
                Fetched {
                    creds: with_token(k, s, token),
                    expires: None,
                    from,
                },
            ));
        }
        (Some(_), None) => tried
            .push("environment (AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)".into()),
        (None, Some(_)) => tried
            .push("environment (AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not)".into()),
        (None, None) => tried.push("environment (AWS_ACCESS_KEY_ID unset)".into()),
    }

    // 2. The shared credentials file.
    let named = env("AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".into());
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws").join("credentials")));
    match &file {
        Some(file) => match read_profile(file, &profile) {
            Ok(Some(f)) => {
                return Ok(Provider::new(
                    Source::Profile {
                        file: file.clone(),
                        profile,
                    },
                    f,
                ))
            }
            Ok(None) if named.is_some() => {
                return Err(fail(format!(
                    "AWS_PROFILE names profile {profile:?}, which {} does not hold with \
                     aws_access_key_id and aws_secret_access_key",
                    file.display()
                )))
            }
            Ok(None) => tried.push(format!(
                "shared credentials file {} (no profile {profile:?} with keys)",
                file.display()
            )),
            Err(why) => return Err(fail(why)),
        },
        None => tried.push("shared credentials file (no HOME)".into()),
    }

    // 3. Web identity (EKS IAM roles for service accounts).
    match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        (Some(token_file), Some(role_arn)) => {
            let source = Source::WebIdentity {
                token_file: token_file.into(),
                role_arn,
                session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
                    let secs = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    format!("keep-rsync-{secs}")
                }),
                endpoint: sts_endpoint(env, region),
            };
            return first(source).await.map_err(fail);
        }
        (Some(_), None) => tried.push(
            "web identity (AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not)".into(),
        ),
        _ => tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE unset)".into()),
    }

    // 4. Container credentials (ECS task roles, EKS Pod Identity).
    let container = match (
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(rel), _) => Some(format!("{ECS_HOST}{rel}")),
        (None, Some(full)) => {
            check_full_uri(&full).map_err(fail)?;
            Some(full)
        }
        (None, None) => None,
    };
    match container {
        Some(url) => {
            let source = Source::Container {
                url,
                token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
                token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
            };
            return first(source).await.map_err(fail);
        }
        None => tried.push(
            "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI unset)"
                .into(),
        ),
    }

    // 5. The EC2 instance's role (IMDSv2).
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        tried.push("IMDS (AWS_EC2_METADATA_DISABLED=true)".into());
    } else {
        let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| {
                if env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
                    .is_some_and(|m| m.eq_ignore_ascii_case("ipv6"))
                {
                    IMDS_DEFAULT_V6.into()
                } else {
                    IMDS_DEFAULT.into()
                }
            });
        let source = Source::Imds {
            endpoint: endpoint.clone(),
        };
        match first(source).await {
            Ok(p) => return Ok(p),
            Err(why) => tried.push(format!("IMDS at {endpoint} ({why})")),
        }
    }
    Err(format!(
        "it gives no AccessKeyID/SecretAccessKey, and the AWS credential chain found none; \
         tried: {}. Give the keys in the volume's DriverParameters, set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or run where a profile, web identity, container credentials \
         or an instance role provide them",
        tried.join("; ")
    ))
}

/// A provider from the first fetch of `source`.
async fn first(source: Source) -> Result<Provider, String> {
    let f = fetch(&source).await?;
    tracing::info!(
        event = "credentials",
        "S3 credentials {}{}",
        f.from,
        expiry_words(f.expires)
    );
    Ok(Provider::new(source, f))
}

/// The home directory, for `~/.aws/credentials`.
fn home(env: Env<'_>) -> Option<PathBuf> {
    env("HOME")
        .or_else(|| env("USERPROFILE"))
        .map(PathBuf::from)
}

/// STS's endpoint for web identity: `AWS_ENDPOINT_URL_STS` (or
/// `AWS_ENDPOINT_URL`) when set, else the Region's (the global one for
/// `AWS_STS_REGIONAL_ENDPOINTS=legacy` in the Regions the SDKs once sent
/// there, and when there is no Region).
fn sts_endpoint(env: Env<'_>, region: &str) -> String {
    if let Some(e) = env("AWS_ENDPOINT_URL_STS").or_else(|| env("AWS_ENDPOINT_URL")) {
        return e.trim_end_matches('/').to_string();
    }
    const LEGACY_GLOBAL: &[&str] = &[
        "ap-northeast-1",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "aws-global",
        "ca-central-1",
        "eu-central-1",
        "eu-north-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    ];
    let legacy = env("AWS_STS_REGIONAL_ENDPOINTS").is_some_and(|v| v == "legacy");
    if region.is_empty() || region == "aws-global" || (legacy && LEGACY_GLOBAL.contains(&region)) {
        "https://sts.amazonaws.com".into()
    } else if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn")
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` must be HTTPS, or HTTP to this
/// host or to the ECS / EKS Pod Identity agent (the SDKs' rule: the
/// authorization token is not sent anywhere else in the clear).
fn check_full_uri(full: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(full)
        .map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL ({e})"))?;
    let local = match url.host() {
        Some(url::Host::Ipv4(a)) => {
            a.is_loopback()
                || a == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || a == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        Some(url::Host::Ipv6(a)) => {
            a.is_loopback() || a == "fd00:ec2::23".parse::<std::net::Ipv6Addr>().unwrap()
        }
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {}://{}… is neither HTTPS nor HTTP to this host \
             or the ECS/EKS credentials agent",
            url.scheme(),
            url.host_str().unwrap_or("")
        )),
    }
}

/// The keys of `[profile]` in a shared credentials file; `Ok(None)` when
/// the file or the profile (with both keys) is not there.
fn read_profile(file: &std::path::Path, profile: &str) -> Result<Option<Fetched>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "the shared credentials file {} cannot be read: {e}",
                file.display()
            ))
        }
    };
    let keys = profile_keys(&text, profile);
    let get = |k: &str| keys.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(k), Some(s)) => Ok(Some(Fetched {
            creds: with_token(k, s, get("aws_session_token")),
            expires: None,
            from: format!("from profile {profile} in {}", file.display()),
        })),
        _ => Ok(None),
    }
}

/// The `key = value` lines of section `[profile]` of an INI text (`#` and
/// `;` start comments; keys are lower-cased, as the SDKs read them).
fn profile_keys(text: &str, profile: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            inside = name.trim() == profile;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// A client for one fetch: short timeouts and no proxy for the link-local
/// services, the environment's proxy for STS.
fn client(local: bool) -> Result<reqwest::Client, String> {
    let b = reqwest::Client::builder();
    let b = if local {
        b.connect_timeout(LOCAL_CONNECT_TIMEOUT)
            .timeout(LOCAL_TIMEOUT)
            .no_proxy()
    } else {
        b.connect_timeout(STS_CONNECT_TIMEOUT).timeout(STS_TIMEOUT)
    };
    b.build().map_err(|e| format!("no HTTP client: {e}"))
}

/// A request error in words, without its URL (which may hold a token).
fn http_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!(
        "{what}: {}",
        crate::protocol::client::describe_http_error(e)
    )
}

/// Credentials from `source`, now.
async fn fetch(source: &Source) -> Result<Fetched, String> {
    match source {
        Source::Fixed => Err("fixed credentials are not fetched".into()),
        Source::Profile { file, profile } => read_profile(file, profile)?.ok_or_else(|| {
            format!(
                "{} no longer holds profile {profile:?} with keys",
                file.display()
            )
        }),
        Source::Imds { endpoint } => imds(endpoint).await,
        Source::Container {
            url,
            token,
            token_file,
        } => container(url, token.as_deref(), token_file.as_deref()).await,
        Source::WebIdentity {
            token_file,
            role_arn,
            session_name,
            endpoint,
        } => web_identity(token_file, role_arn, session_name, endpoint).await,
    }
}

/// The JSON answer of IMDS and of the container credentials endpoint.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCreds {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl JsonCreds {
    fn parse(body: &str, from: String) -> Result<Fetched, String> {
        let j: JsonCreds = serde_json::from_str(body)
            .map_err(|e| format!("its answer is not credentials JSON ({e})"))?;
        if let Some(code) = j.code.filter(|c| c != "Success") {
            return Err(format!("it answers Code {:?}", short(&code)));
        }
        let (Some(k), Some(s)) = (j.access_key_id, j.secret_access_key) else {
            return Err("its answer has no AccessKeyId and SecretAccessKey".into());
        };
        let expires = match j.expiration {
            Some(e) => Some(
                parse_time(&e)
                    .ok_or_else(|| format!("its Expiration {:?} is not a time", short(&e)))?,
            ),
            None => None,
        };
        Ok(Fetched {
            creds: with_token(k, s, j.token.filter(|t| !t.is_empty())),
            expires,
            from,
        })
    }
}

/// At most 60 characters of a field from an answer, for a message.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// An RFC 3339 / ISO 8601 time as the credential services write it
/// (`2026-12-07T13:36:41Z`, with fractional seconds, or `+00:00`).
pub fn parse_time(t: &str) -> Option<SystemTime> {
    let t = t.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .unwrap_or(t);
    humantime::parse_rfc3339_weak(t).ok()
}

/// An answer's status: Ok for 2xx, else what went wrong in words.
fn status_ok(resp: &reqwest::Response, what: &str) -> Result<(), String> {
    let s = resp.status();
    if s.is_success() {
        Ok(())
    } else {
        Err(format!("{what} answered HTTP {s}"))
    }
}

/// IMDSv2: a session token (PUT), the role's name, the role's credentials.
/// An IMDS that does not know the token call (404, 405) is asked without
/// one (IMDSv1), as the SDKs fall back.
async fn imds(endpoint: &str) -> Result<Fetched, String> {
    let http = client(true)?;
    let resp = http
        .put(format!("{endpoint}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .map_err(|e| format!("{}: not an EC2 instance, or IMDS is off", http_error(&e)))?;
    let token = match resp.status().as_u16() {
        404 | 405 => None,
        _ => {
            status_ok(&resp, "the token request (PUT /latest/api/token)")?;
            Some(read_capped(resp, ANSWER_CAP).await.trim().to_string())
        }
    };
    let get = |path: String| {
        let mut r = http.get(format!("{endpoint}{path}"));
        if let Some(t) = &token {
            r = r.header("x-aws-ec2-metadata-token", t);
        }
        r.send()
    };
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let resp = get(ROLES.into()).await.map_err(|e| http_error(&e))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err("this instance has no IAM role (instance profile)".into());
    }
    status_ok(&resp, "the role request")?;
    let roles = read_capped(resp, ANSWER_CAP).await;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("this instance has no IAM role (instance profile)")?
        .to_string();
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err("its role name is not an IAM role name".into());
    }
    let resp = get(format!("{ROLES}{role}"))
        .await
        .map_err(|e| http_error(&e))?;
    status_ok(&resp, &format!("the credentials request of role {role}"))?;
    let body = read_capped(resp, ANSWER_CAP).await;
    JsonCreds::parse(&body, format!("from IMDS role {role} at {endpoint}"))
        .map_err(|e| format!("role {role}: {e}"))
}

/// ECS / EKS Pod Identity: one GET, with the authorization token (read
/// from its file each time: the agent rotates it) when one is given.
async fn container(
    url: &str,
    token: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> Result<Fetched, String> {
    let shown = match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(e) => return Err(format!("the container credentials URL is not a URL ({e})")),
    };
    let from = format!("from container credentials at {shown}");
    let auth = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    format!(
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {} cannot be read: {e}",
                        f.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => token.map(str::to_string),
    };
    let mut req = client(true)?.get(url);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("container credentials at {shown}: {}", http_error(&e)))?;
    status_ok(&resp, &format!("container credentials at {shown}"))?;
    let body = read_capped(resp, ANSWER_CAP).await;
    JsonCreds::parse(&body, from).map_err(|e| format!("container credentials at {shown}: {e}"))
}

/// STS `AssumeRoleWithWebIdentity` (unsigned: the web identity token is
/// the proof), the token read from its file each time (EKS rotates it).
async fn web_identity(
    token_file: &std::path::Path,
    role_arn: &str,
    session_name: &str,
    endpoint: &str,
) -> Result<Fetched, String> {
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        format!(
            "AWS_WEB_IDENTITY_TOKEN_FILE {} cannot be read: {e}",
            token_file.display()
        )
    })?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair("RoleSessionName", session_name)
        .append_pair("WebIdentityToken", token.trim())
        .finish();
    let what = format!("STS at {endpoint} (AssumeRoleWithWebIdentity of {role_arn})");
    let resp = client(false)?
        .post(format!("{endpoint}/"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form)
        .send()
        .await
        .map_err(|e| format!("{what}: {}", http_error(&e)))?;
    let status = resp.status();
    let body = read_capped(resp, ANSWER_CAP).await;
    if !status.is_success() {
        let code = xml_text(&body, "Code").unwrap_or_default();
        let msg = xml_text(&body, "Message").unwrap_or_default();
        return Err(format!(
            "{what} answered HTTP {status} {}: {}",
            short(&code),
            msg.chars().take(200).collect::<String>()
        ));
    }
    let field = |n: &str| xml_text(&body, n).filter(|v| !v.is_empty());
    let (Some(k), Some(s), Some(t)) = (
        field("AccessKeyId"),
        field("SecretAccessKey"),
        field("SessionToken"),
    ) else {
        return Err(format!("{what}: its answer holds no credentials"));
    };
    let expires = field("Expiration").and_then(|e| parse_time(&e));
    Ok(Fetched {
        creds: Credentials::new_with_token(k, s, t),
        expires,
        from: format!("from web identity role {role_arn} via STS at {endpoint}"),
    })
}

/// The text of the first `<NAME>…</NAME>` of an XML answer.
fn xml_text(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn profiles_are_read_as_the_sdks_read_them() {
        let text = "# c\n[default]\naws_access_key_id = A\naws_secret_access_key=S\n\n\
                    [other] ; x\nAWS_ACCESS_KEY_ID = B\naws_secret_access_key = T\n\
                    aws_session_token = TOK\n";
        let d = profile_keys(text, "default");
        assert_eq!(d["aws_access_key_id"], "A");
        assert_eq!(d["aws_secret_access_key"], "S");
        assert!(!d.contains_key("aws_session_token"));
        let o = profile_keys(text, "other");
        assert_eq!(o["aws_access_key_id"], "B");
        assert_eq!(o["aws_session_token"], "TOK");
        assert!(profile_keys(text, "none").is_empty());
    }

    #[test]
    fn sts_endpoints() {
        let e = env_of(&[]);
        assert_eq!(
            sts_endpoint(&e, "eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint(&e, "cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(sts_endpoint(&e, ""), "https://sts.amazonaws.com");
        let e = env_of(&[("AWS_STS_REGIONAL_ENDPOINTS", "legacy")]);
        assert_eq!(sts_endpoint(&e, "eu-west-1"), "https://sts.amazonaws.com");
        assert_eq!(
            sts_endpoint(&e, "af-south-1"),
            "https://sts.af-south-1.amazonaws.com"
        );
        let e = env_of(&[("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1/")]);
        assert_eq!(sts_endpoint(&e, "eu-west-1"), "http://127.0.0.1:1");
    }

    #[test]
    fn full_uris_must_be_local_or_https() {
        assert!(check_full_uri("http://127.0.0.1:8080/creds").is_ok());
        assert!(check_full_uri("http://169.254.170.23/v1/credentials").is_ok());
        assert!(check_full_uri("http://[fd00:ec2::23]/v1/credentials").is_ok());
        assert!(check_full_uri("https://creds.example/x").is_ok());
        assert!(check_full_uri("http://creds.example/x").is_err());
    }

    #[test]
    fn credential_json() {
        let body = r#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"AK","SecretAccessKey":"SK",
                       "Token":"TK","Expiration":"2026-12-07T13:36:41Z"}"#;
        let f = JsonCreds::parse(body, "x".into()).unwrap();
        assert_eq!(f.creds.key(), "AK");
        assert_eq!(f.creds.token(), Some("TK"));
        assert_eq!(
            f.expires,
            Some(humantime::parse_rfc3339("2026-12-07T13:36:41Z").unwrap())
        );
        let e = JsonCreds::parse(r#"{"Code":"Failed","Message":"SK"}"#, "x".into()).unwrap_err();
        assert!(e.contains("Failed"), "{e}");
        let e = JsonCreds::parse("SECRETJUNK", "x".into()).unwrap_err();
        assert!(!e.contains("SECRETJUNK"), "{e}");
        assert!(parse_time("2026-12-07T13:36:41.123Z").is_some());
        assert!(parse_time("2026-12-07T13:36:41+00:00").is_some());
    }

    /// With nothing configured (IMDS switched off) the message lists every
    /// source tried, and a named profile that is not there is an error.
    #[tokio::test]
    async fn nothing_found_says_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        let e = env_of(&[("HOME", &home), ("AWS_EC2_METADATA_DISABLED", "true")]);
        let why = chain(&e, "us-east-1").await.unwrap_err();
        for s in [
            "environment",
            "shared credentials file",
            "web identity",
            "container credentials",
            "IMDS (AWS_EC2_METADATA_DISABLED=true)",
        ] {
            assert!(why.contains(s), "{s}: {why}");
        }
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\naws_access_key_id=A\naws_secret_access_key=S\n",
        )
        .unwrap();
        let p = chain(&e, "us-east-1").await.unwrap();
        assert!(
            p.from().starts_with("from profile default in "),
            "{}",
            p.from()
        );
        let e = env_of(&[("HOME", &home), ("AWS_PROFILE", "gone")]);
        let why = chain(&e, "us-east-1").await.unwrap_err();
        assert!(why.contains("\"gone\""), "{why}");
    }

    /// The environment comes first, its session token with it.
    #[tokio::test]
    async fn the_environment_first() {
        let e = env_of(&[
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "SECRETVALUE"),
            ("AWS_SESSION_TOKEN", "TOKENVALUE"),
            ("AWS_PROFILE", "gone"),
        ]);
        let p = chain(&e, "us-east-1").await.unwrap();
        assert_eq!(p.current().credentials().token(), Some("TOKENVALUE"));
        let shown = format!("{p:?} {:?}", p.current());
        assert!(
            !shown.contains("SECRETVALUE") && !shown.contains("TOKENVALUE"),
            "{shown}"
        );
        assert!(p.refresh_after(&p.current()).await.unwrap().is_none());
    }
}
