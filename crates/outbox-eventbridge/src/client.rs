//! [`PutEventsClient`]: the one EventBridge call the relay makes, sent without
//! the SDK's orchestrator.
//!
//! The AWS SDK's `PutEvents` call costs ~100 µs of CPU a request natively,
//! about 10 µs per event, most of it in machinery the relay does not use
//! (interceptors, the retry and identity wrappers, endpoint rules evaluated
//! per call). This client keeps the parts that must be right and are the
//! SDK's own: credentials come from the SDK configuration's provider chain,
//! the endpoint is the SDK's endpoint rules evaluated once, and the HTTP
//! stack is the one the SDK's default client is built on (hyper, rustls with
//! aws-lc, the platform's roots), its keep-alive connections kept by
//! [`crate::connections`] for the one endpoint. Requests are signed with SigV4 by
//! [`crate::sigv4`], for this one request shape, whose tests hold it to
//! `aws-sigv4` (the SDK's signer, with the SDK's settings); `aws-sigv4`
//! itself signs for an endpoint URL with a path. Retries are the relay's
//! ([`outbox_core::RetryPolicy`]): every call failure is classified and
//! returned at once.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_eventbridge::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_types::SdkConfig;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use outbox_core::{FailureClass, SinkError, error_chain};
use serde::Deserialize;

use crate::connections::{Connections, SendError};
use crate::sigv4::{FixedHeaders, Signer};

/// The signing name of EventBridge.
const SERVICE: &str = "events";
/// The content type of the AWS JSON 1.1 protocol.
const CONTENT_TYPE_JSON_1_1: &str = "application/x-amz-json-1.1";
/// The operation, as the AWS JSON 1.1 protocol names it.
const TARGET: &str = "AWSEvents.PutEvents";
const X_AMZ_TARGET: HeaderName = HeaderName::from_static("x-amz-target");
const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
/// How long a connection attempt may take (the SDK's default).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3_100);
/// How long one call may take, from sending to the last byte of the answer,
/// unless [`PutEventsClient::with_attempt_timeout`] says otherwise.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection idle for longer is not reused. A Lambda sandbox is
/// frozen between invocations; a connection the server closed meanwhile
/// would fail the first call after the thaw (a transient failure, retried
/// by the relay after its backoff). The pool checks idleness against the
/// monotonic clock, which runs on while the sandbox is frozen.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Credentials without an expiry are fetched again after this long (the
/// SDK's identity cache does the same).
const REFRESH_WITHOUT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Credentials with an expiry are fetched again this long before it.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Whole-call error codes after which the same call may succeed.
const TRANSIENT_CALL_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalException",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whole-call error codes saying the credentials or the request's time are
/// stale: the cached credentials are dropped and the call may be retried.
const STALE_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "RequestTimeTooSkewed",
];

/// The retry class of a whole-call error: throttling and internal failures,
/// stale credentials, HTTP 429 and 5xx are transient, the rest permanent.
pub(crate) fn call_error_class(code: Option<&str>, status: u16) -> FailureClass {
    let transient = code
        .is_some_and(|c| TRANSIENT_CALL_CODES.contains(&c) || STALE_CREDENTIAL_CODES.contains(&c))
        || status == 429
        || status >= 500;
    if transient {
        FailureClass::Transient
    } else {
        FailureClass::Permanent
    }
}

/// Why a [`PutEventsClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The SDK configuration has no region.
    #[error("no AWS region is configured (set AWS_REGION)")]
    NoRegion,
    /// The SDK configuration has no credentials provider.
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    /// The endpoint rules gave no endpoint for this configuration.
    #[error("no EventBridge endpoint for this configuration: {0}")]
    Endpoint(String),
}

/// A `PutEvents` client: one signed HTTP request per call, answered with
/// one [`ResultEntry`] per request entry.
///
/// Built from the same [`SdkConfig`] as the SDK clients
/// ([`from_sdk_config`](Self::from_sdk_config)); cheap to clone (the
/// connection pool and the credentials cache are shared).
#[derive(Clone)]
pub struct PutEventsClient {
    inner: Arc<Inner>,
    attempt_timeout: Duration,
}

struct Inner {
    /// Built on the first call: loading the platform's roots takes a few
    /// milliseconds, which would otherwise lengthen the function's init.
    http: OnceLock<Result<Connections, String>>,
    uri: Uri,
    host: HeaderValue,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<CachedIdentity>>,
    user_agent: HeaderValue,
    /// Signs the requests when the endpoint's path is `/` (always, but for
    /// a custom endpoint URL with a path, which `aws-sigv4` signs).
    signer: Option<Signer>,
}

#[derive(Clone)]
struct CachedIdentity {
    identity: Identity,
    refresh_at: Instant,
}

impl fmt::Debug for PutEventsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutEventsClient")
            .field("endpoint", &self.inner.uri)
            .field("region", &self.inner.region)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// One entry of a `PutEvents` answer, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ResultEntry {
    /// The id EventBridge gave the event, when it was accepted.
    #[serde(rename = "EventId", default)]
    pub event_id: Option<String>,
    /// Why the entry was refused (`ThrottlingException`, `MalformedDetail`, ...).
    #[serde(rename = "ErrorCode", default)]
    pub error_code: Option<String>,
    /// The service's explanation of `error_code`.
    #[serde(rename = "ErrorMessage", default)]
    pub error_message: Option<String>,
}

/// A successful `PutEvents` answer (HTTP 200).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PutEventsAnswer {
    /// How many entries the service says failed.
    #[serde(rename = "FailedEntryCount", default)]
    pub failed_entry_count: i64,
    /// One result per request entry, in request order.
    #[serde(rename = "Entries", default)]
    pub entries: Vec<ResultEntry>,
}

/// The error document of the AWS JSON 1.1 protocol.
#[derive(Deserialize)]
struct ErrorDocument {
    #[serde(rename = "__type", alias = "code", default)]
    kind: Option<String>,
    #[serde(alias = "Message", default)]
    message: Option<String>,
}

impl PutEventsClient {
    /// A client for the region, credentials provider, FIPS and dual-stack
    /// settings and endpoint URL of `sdk`; `endpoint_url`, when given, takes
    /// the place of `sdk`'s (for an emulator).
    ///
    /// The endpoint is chosen once, here, by the SDK's endpoint rules for
    /// EventBridge. Credentials are fetched on the first call and again
    /// before they expire.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when `sdk` has no region or credentials provider or
    /// the rules give no endpoint. The platform's root certificates are
    /// loaded on the first call; if they cannot be, every call fails with
    /// the permanent `TlsRootsNotLoaded`.
    pub fn from_sdk_config(sdk: &SdkConfig, endpoint_url: Option<&str>) -> Result<Self, ClientError> {
        let region = sdk.region().ok_or(ClientError::NoRegion)?.as_ref().to_owned();
        let credentials = sdk.credentials_provider().ok_or(ClientError::NoCredentials)?;
        let params = Params::builder()
            .region(region.clone())
            .set_use_fips(sdk.use_fips())
            .set_use_dual_stack(sdk.use_dual_stack())
            .set_endpoint(endpoint_url.or(sdk.endpoint_url()).map(str::to_owned))
            .build()
            .map_err(|e| ClientError::Endpoint(e.to_string()))?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .now_or_never()
            .ok_or_else(|| ClientError::Endpoint("the endpoint rules did not answer at once".to_owned()))?
            .map_err(|e| ClientError::Endpoint(e.to_string()))?;
        let uri: Uri = format!("{}/", endpoint.url().trim_end_matches('/'))
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Endpoint(format!("{}: {e}", endpoint.url())))?;
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| ClientError::Endpoint(format!("{uri} has no host")))?;

        let user_agent = HeaderValue::from_static(concat!("outbox-relay/", env!("CARGO_PKG_VERSION")));
        // The client's own signer for the path `/` (`aws-sigv4` signs the others).
        let signer = host
            .to_str()
            .ok()
            .filter(|_| uri.path() == "/" && uri.query().is_none())
            .map(|host| {
                let headers = FixedHeaders {
                    host,
                    content_type: CONTENT_TYPE_JSON_1_1,
                    target: TARGET,
                };
                Signer::new(&region, SERVICE, &headers)
            });
        Ok(Self {
            inner: Arc::new(Inner {
                http: OnceLock::new(),
                uri,
                host,
                region,
                credentials,
                cached: Mutex::new(None),
                user_agent,
                signer,
            }),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        })
    }

    /// Bounds each call (connecting, sending, reading the whole answer) by
    /// `timeout` instead of [`DEFAULT_ATTEMPT_TIMEOUT`]; a call that takes
    /// longer is a transient `Timeout`.
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The URL the requests go to.
    pub fn endpoint(&self) -> &Uri {
        &self.inner.uri
    }

    /// The signing region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Sends `body` (an AWS JSON 1.1 `PutEvents` document, as
    /// [`put_events_body`](crate::put_events_body) writes it) as one signed
    /// request and reads the answer.
    ///
    /// # Errors
    ///
    /// A [`SinkError`] for a call that did not get an answer (`Timeout`,
    /// `ConnectFailure`, `DispatchFailure`, `ResponseError`: transient), the
    /// platform's TLS roots not loading (`TlsRootsNotLoaded`, permanent), an
    /// error answer (its
    /// code, classified like the SDK path: throttling, internal failures,
    /// 429 and 5xx transient, the rest permanent), a 200 whose document
    /// cannot be read (transient), or credentials that cannot be had or a
    /// request that cannot be signed (transient: a later try may get them).
    pub async fn put_events(&self, body: Vec<u8>) -> Result<PutEventsAnswer, SinkError> {
        let inner = &*self.inner;
        let http = inner
            .http
            .get_or_init(|| build_http(&inner.uri))
            .as_ref()
            .map_err(|e| permanent("TlsRootsNotLoaded", e.clone()))?;
        let identity = self.identity().await?;
        let request = self.signed_request(body, &identity, SystemTime::now())?;
        let exchange = async {
            let (response, connection) = http.send(request).await.map_err(|e| match e {
                SendError::Connect(message) => transient("ConnectFailure", message),
                SendError::Dispatch(message) => transient("DispatchFailure", message),
            })?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| transient("ResponseError", error_chain(&e)))?
                .to_bytes();
            connection.release();
            Ok::<_, SinkError>((parts.status, parts.headers, bytes))
        };
        let (status, headers, bytes) = tokio::time::timeout(self.attempt_timeout, exchange)
            .await
            .map_err(|_| {
                transient(
                    "Timeout",
                    format!("no complete answer within {:?}", self.attempt_timeout),
                )
            })??;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                transient(
                    "ResponseError",
                    format!("the PutEvents answer (HTTP {status}) cannot be read: {e}"),
                )
            });
        }
        let error = error_answer(status, &headers, &bytes);
        if STALE_CREDENTIAL_CODES.contains(&error.code.as_str()) {
            self.forget_identity();
        }
        Err(error)
    }

    /// The request for `body`, signed at `time` with `identity`.
    fn signed_request(
        &self,
        body: Vec<u8>,
        identity: &Identity,
        time: SystemTime,
    ) -> Result<Request<Full<Bytes>>, SinkError> {
        let inner = &*self.inner;
        let mut request = Request::post(inner.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON_1_1))
            .header(CONTENT_LENGTH, body.len())
            .header(HOST, inner.host.clone())
            .header(X_AMZ_TARGET, HeaderValue::from_static(TARGET))
            .body(())
            .map_err(|e| permanent("RequestNotBuilt", e.to_string()))?;
        match (&inner.signer, identity.data::<Credentials>()) {
            (Some(signer), Some(credentials)) => {
                let signed = signer.sign(&body, credentials, time);
                let headers = request.headers_mut();
                let value = |text: String| {
                    HeaderValue::try_from(text).map_err(|e| permanent("RequestNotSigned", e.to_string()))
                };
                headers.insert(AUTHORIZATION, value(signed.authorization)?);
                headers.insert(X_AMZ_DATE, value(signed.amz_date)?);
                if let Some(token) = credentials.session_token() {
                    headers.insert(X_AMZ_SECURITY_TOKEN, value(token.to_owned())?);
                }
            }
            _ => sign_request(&mut request, &body, identity, &inner.region, time)?,
        }
        request.headers_mut().insert(USER_AGENT, inner.user_agent.clone());
        Ok(request.map(|()| Full::new(Bytes::from(body))))
    }

    /// The cached credentials, fetched anew when they are missing or near
    /// their expiry.
    async fn identity(&self) -> Result<Identity, SinkError> {
        let now = Instant::now();
        if let Some(cached) = self.lock_cache().as_ref().filter(|c| c.refresh_at > now) {
            return Ok(cached.identity.clone());
        }
        let credentials = self
            .inner
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| transient("CredentialsNotLoaded", error_chain(&e)))?;
        let lifetime = credentials
            .expiry()
            .and_then(|expiry| expiry.duration_since(SystemTime::now()).ok())
            .map_or(REFRESH_WITHOUT_EXPIRY, |left| {
                left.saturating_sub(REFRESH_BEFORE_EXPIRY)
                    .min(REFRESH_WITHOUT_EXPIRY)
            });
        let identity = Identity::from(credentials);
        *self.lock_cache() = Some(CachedIdentity {
            identity: identity.clone(),
            refresh_at: now + lifetime,
        });
        Ok(identity)
    }

    fn forget_identity(&self) {
        *self.lock_cache() = None;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<CachedIdentity>> {
        // The cache is one value written whole: a panic elsewhere cannot
        // leave it half-written.
        self.inner.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connections to `endpoint`: kept alive, over TCP (no Nagle) and TLS
/// with aws-lc and the platform's roots, as the SDK's default client.
fn build_http(endpoint: &Uri) -> Result<Connections, String> {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("the platform's TLS root certificates could not be loaded: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Connections::new(https, endpoint.clone(), POOL_IDLE_TIMEOUT))
}

/// Signs `request` (method, URI and headers as they will be sent; `body` is
/// its body) with SigV4 for EventBridge in `region` at `time`, with the
/// signer's default settings (those the SDK uses for EventBridge), and adds
/// the `Authorization`, `X-Amz-Date` and, for temporary credentials,
/// `X-Amz-Security-Token` headers.
fn sign_request<B>(
    request: &mut Request<B>,
    body: &[u8],
    identity: &Identity,
    region: &str,
    time: SystemTime,
) -> Result<(), SinkError> {
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| transient("RequestNotSigned", e.to_string()))?
        .into();
    let uri = request.uri().to_string();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable = SignableRequest::new(request.method().as_str(), uri, headers, SignableBody::Bytes(body))
        .map_err(|e| permanent("RequestNotSigned", error_chain(&e)))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| transient("RequestNotSigned", error_chain(&e)))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// The [`SinkError`] of an error answer: its code from `X-Amzn-ErrorType` or
/// the document's `__type` (without the namespace), its message, its class.
fn error_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> SinkError {
    let document: Option<ErrorDocument> = serde_json::from_slice(body).ok();
    let from_header = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let code = from_header
        .or_else(|| document.as_ref().and_then(|d| d.kind.clone()))
        .map(|kind| kind.rsplit('#').next().unwrap_or(&kind).to_owned())
        .filter(|code| !code.is_empty());
    let class = call_error_class(code.as_deref(), status.as_u16());
    let message = document.and_then(|d| d.message).unwrap_or_else(|| {
        format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        )
    });
    SinkError {
        class,
        code: code.unwrap_or_else(|| format!("HTTP{}", status.as_u16())),
        message,
    }
}

fn transient(code: &str, message: String) -> SinkError {
    SinkError {
        class: FailureClass::Transient,
        code: code.to_owned(),
        message,
    }
}

fn permanent(code: &str, message: String) -> SinkError {
    SinkError {
        class: FailureClass::Permanent,
        code: code.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    use aws_credential_types::Credentials;
    use aws_sdk_eventbridge::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_eventbridge::config::{ConfigBag, Intercept, Region, RuntimeComponents};
    use aws_sdk_eventbridge::{Client, Config};
    use aws_smithy_types::body::SdkBody;

    /// The time the SDK's test defaults sign at.
    fn signing_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890)
    }

    fn credentials() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        )
    }

    /// What the SDK put on the wire: method, URI, headers, body.
    type Captured = Arc<StdMutex<Option<(String, String, Vec<(String, String)>, Vec<u8>)>>>;

    #[derive(Debug)]
    struct Capture(Captured);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "Capture"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            let request = context.request();
            let headers = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let body = request.body().bytes().unwrap_or_default().to_vec();
            *self.0.lock().unwrap() = Some((
                request.method().to_owned(),
                request.uri().to_owned(),
                headers,
                body,
            ));
            Err("captured".into())
        }
    }

    /// The request the SDK signs and sends for `body` at the test time,
    /// captured just before it would go out.
    fn sdk_request(body: &[u8]) -> (String, String, Vec<(String, String)>, Vec<u8>) {
        let captured = Captured::default();
        let mut builder = Config::builder();
        builder.apply_test_defaults();
        let config = builder
            .region(Region::new("eu-west-1"))
            .credentials_provider(credentials())
            .interceptor(Capture(Arc::clone(&captured)))
            .build();
        let client = Client::from_conf(config);
        let length = body.len().to_string();
        let body = SdkBody::from(body.to_vec());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(
            client
                .put_events()
                .set_entries(Some(Vec::new()))
                .customize()
                .mutate_request(move |request| {
                    *request.body_mut() = body.try_clone().unwrap();
                    request.headers_mut().insert("content-length", length.clone());
                })
                .send(),
        );
        assert!(result.is_err(), "the call is stopped before it is sent");
        captured.lock().unwrap().take().expect("the SDK signed a request")
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// The value of `name` on `request`, or "".
    fn sent<'a, B>(request: &'a Request<B>, name: &str) -> &'a str {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn signed_headers(authorization: &str) -> Vec<String> {
        let list = authorization
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_default();
        list.split(';').map(str::to_owned).collect()
    }

    const BODY: &[u8] = br#"{"Entries":[{"Source":"shop.orders","DetailType":"OrderPlaced","Detail":"{\"id\":\"e-1\",\"note\":\"caf\u00e9 \\\"quoted\\\"\"}","EventBusName":"orders-bus"}]}"#;

    #[test]
    fn the_signature_is_the_sdks_for_the_same_request() {
        let (method, uri, headers, body) = sdk_request(BODY);
        assert_eq!(body, BODY);
        let authorization = header(&headers, "authorization");
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 "), "{authorization}");
        // The same request, with the headers the SDK signed (less the ones
        // signing adds, and `host`, which the signer takes from the URI when
        // the request has none, as the SDK's has not), signed by this module
        // at the same time.
        let signed = signed_headers(authorization);
        let mut request = Request::builder().method(method.as_str()).uri(uri.as_str());
        for name in &signed {
            if !matches!(name.as_str(), "x-amz-date" | "x-amz-security-token" | "host") {
                request = request.header(name.as_str(), header(&headers, name));
            }
        }
        let mut request = request.body(()).unwrap();
        sign_request(
            &mut request,
            &body,
            &Identity::from(credentials()),
            "eu-west-1",
            signing_time(),
        )
        .unwrap();
        let ours = |name: &str| sent(&request, name);
        assert_eq!(ours("authorization"), authorization);
        assert_eq!(ours("x-amz-date"), header(&headers, "x-amz-date"));
        assert_eq!(ours("x-amz-security-token"), "session-token");
    }

    #[test]
    fn the_request_sent_is_the_one_the_sdk_sends_and_everything_that_matters_is_signed() {
        let (_, uri, headers, _) = sdk_request(BODY);
        let sdk = SdkConfig::builder()
            .region(aws_types::region::Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials()))
            .build();
        let client = PutEventsClient::from_sdk_config(&sdk, None).unwrap();
        assert_eq!(client.endpoint().to_string(), uri, "the endpoint rules' URL");
        let request = client
            .signed_request(BODY.to_vec(), &Identity::from(credentials()), signing_time())
            .unwrap();
        let ours = |name: &str| sent(&request, name);
        for name in [
            "content-type",
            "x-amz-target",
            "content-length",
            "x-amz-date",
            "x-amz-security-token",
        ] {
            assert_eq!(ours(name), header(&headers, name), "{name}");
        }
        assert_eq!(ours("host"), "events.eu-west-1.amazonaws.com");
        let signed = signed_headers(ours("authorization"));
        assert_eq!(
            signed,
            [
                "content-length",
                "content-type",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-target"
            ]
        );
        // Every header the SDK signs that this request carries is signed the
        // same way: the SDK's signature over exactly these headers is ours.
        let sdk_signed = signed_headers(header(&headers, "authorization"));
        assert!(
            signed.iter().all(|h| sdk_signed.contains(h)),
            "{signed:?} ⊆ {sdk_signed:?}"
        );
    }

    #[test]
    fn fips_and_dual_stack_choose_their_endpoints_and_an_override_wins() {
        let build = |fips: bool, dual: bool, url: Option<&str>| {
            let sdk = SdkConfig::builder()
                .region(aws_types::region::Region::new("us-east-1"))
                .credentials_provider(SharedCredentialsProvider::new(credentials()))
                .use_fips(fips)
                .use_dual_stack(dual)
                .build();
            PutEventsClient::from_sdk_config(&sdk, url)
                .unwrap()
                .endpoint()
                .to_string()
        };
        assert_eq!(
            build(false, false, None),
            "https://events.us-east-1.amazonaws.com/"
        );
        assert_eq!(
            build(true, false, None),
            "https://events-fips.us-east-1.amazonaws.com/"
        );
        assert!(
            build(false, true, None).contains("api.aws"),
            "{}",
            build(false, true, None)
        );
        assert_eq!(
            build(false, false, Some("http://127.0.0.1:4566")),
            "http://127.0.0.1:4566/"
        );
    }

    #[test]
    fn without_a_region_or_credentials_the_client_is_refused_by_name() {
        let no_region = SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials()))
            .build();
        let err = PutEventsClient::from_sdk_config(&no_region, None).unwrap_err();
        assert!(err.to_string().contains("AWS_REGION"), "{err}");
        let no_credentials = SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .build();
        let err = PutEventsClient::from_sdk_config(&no_credentials, None).unwrap_err();
        assert!(matches!(err, ClientError::NoCredentials), "{err}");
    }

    #[test]
    fn error_answers_keep_their_code_and_class() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("ThrottlingException:http://internal"),
        );
        let e = error_answer(StatusCode::BAD_REQUEST, &headers, br#"{"message":"slow down"}"#);
        assert_eq!(
            (e.class, e.code.as_str(), e.message.as_str()),
            (FailureClass::Transient, "ThrottlingException", "slow down")
        );
        let e = error_answer(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"__type":"com.amazonaws.events#ResourceNotFoundException","Message":"Event bus x does not exist."}"#,
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Permanent, "ResourceNotFoundException")
        );
        assert!(e.message.contains("does not exist"));
        let e = error_answer(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!((e.class, e.code.as_str()), (FailureClass::Transient, "HTTP503"));
        let e = error_answer(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"__type":"ExpiredTokenException"}"#,
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Transient, "ExpiredTokenException")
        );
        let e = error_answer(StatusCode::FORBIDDEN, &HeaderMap::new(), b"<html>denied</html>");
        assert_eq!((e.class, e.code.as_str()), (FailureClass::Permanent, "HTTP403"));
        assert!(e.message.contains("denied"), "{}", e.message);
    }

    /// The request's headers as `aws-sigv4` signs them (the oracle of the
    /// client's own signer): `Authorization`, `X-Amz-Date`,
    /// `X-Amz-Security-Token`.
    fn aws_sigv4_headers(
        client: &PutEventsClient,
        body: &[u8],
        identity: &Identity,
        time: SystemTime,
    ) -> [String; 3] {
        let mut request = Request::post(client.inner.uri.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_JSON_1_1)
            .header(CONTENT_LENGTH, body.len())
            .header(HOST, client.inner.host.clone())
            .header("x-amz-target", TARGET)
            .body(())
            .unwrap();
        sign_request(&mut request, body, identity, client.region(), time).unwrap();
        ["authorization", "x-amz-date", "x-amz-security-token"].map(|h| sent(&request, h).to_owned())
    }

    fn own_headers(
        client: &PutEventsClient,
        body: &[u8],
        identity: &Identity,
        time: SystemTime,
    ) -> [String; 3] {
        let request = client.signed_request(body.to_vec(), identity, time).unwrap();
        ["authorization", "x-amz-date", "x-amz-security-token"].map(|h| sent(&request, h).to_owned())
    }

    fn client_for(region: &str, endpoint: Option<&str>) -> PutEventsClient {
        let sdk = SdkConfig::builder()
            .region(aws_types::region::Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(credentials()))
            .build();
        PutEventsClient::from_sdk_config(&sdk, endpoint).unwrap()
    }

    #[test]
    fn the_own_signer_signs_as_aws_sigv4_across_days_keys_and_tokens() {
        let client = client_for("eu-west-1", None);
        assert!(client.inner.signer.is_some());
        let day = 86_400;
        let cases = [
            (0, Some("session-token")),
            (1, Some("session-token")),
            // The next day: a new signing key.
            (day + 1, Some("session-token")),
            (day + 2, None),
            // Back to a day signed before, other credentials.
            (3, Some("a  token  with   runs of spaces ")),
            (3, None),
        ];
        for (i, (offset, token)) in cases.into_iter().enumerate() {
            let identity = Identity::from(Credentials::new(
                format!("AKID{i}"),
                format!("secret-{}", i / 2),
                token.map(str::to_owned),
                None,
                "test",
            ));
            let time = signing_time() + Duration::from_secs(offset);
            let body = format!("{{\"Entries\":[{i}]}}");
            let ours = own_headers(&client, body.as_bytes(), &identity, time);
            assert!(ours[0].starts_with("AWS4-HMAC-SHA256 Credential="), "{ours:?}");
            assert_eq!(
                ours,
                aws_sigv4_headers(&client, body.as_bytes(), &identity, time),
                "case {i}"
            );
        }
    }

    #[test]
    fn an_endpoint_with_a_path_is_signed_by_aws_sigv4() {
        let client = client_for("eu-west-1", Some("http://127.0.0.1:4566/prefix"));
        assert!(client.inner.signer.is_none());
        let identity = Identity::from(credentials());
        let ours = own_headers(&client, BODY, &identity, signing_time());
        assert_eq!(ours, aws_sigv4_headers(&client, BODY, &identity, signing_time()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Whatever the body, region, endpoint, time and credentials, the
        /// client's own signature is `aws-sigv4`'s.
        #[test]
        fn the_own_signature_is_aws_sigv4s_for_any_request(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3_000),
            region in "[a-z]{2}-[a-z]{4,9}-[1-9]",
            endpoint in proptest::option::of("http://[a-z0-9.]{1,20}(:[0-9]{2,5})?"),
            seconds in 0u64..4_102_444_800,
            key_id in "[A-Z0-9]{16,20}",
            secret in "[A-Za-z0-9+/]{40}",
            token in proptest::option::of("[A-Za-z0-9+/= ]{1,300}"),
        ) {
            let client = client_for(&region, endpoint.as_deref());
            proptest::prop_assume!(client.inner.signer.is_some());
            let identity = Identity::from(Credentials::new(key_id, secret, token, None, "test"));
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
            proptest::prop_assert_eq!(
                own_headers(&client, &body, &identity, time),
                aws_sigv4_headers(&client, &body, &identity, time)
            );
        }
    }
}
