//! Signature Version 4 for the one request [`PutEventsClient`] sends: a
//! `POST` of an AWS JSON 1.1 body to the path `/`, with the same six signed
//! headers every time.
//!
//! `aws-sigv4` signs any request: it builds the canonical request, the
//! string to sign and the signing key from parts each time, about ninety
//! allocations a call, and derives the key (four HMACs) every time. This
//! request's canonical form has one shape, written here in one buffer with
//! its fixed lines made once, and the key (derived and applied by
//! `aws-sigv4`'s own functions) changes once a day, so it is kept. The tests
//! hold the result to `aws-sigv4`'s signing of the same request, which the
//! client still uses for an endpoint whose path is not `/` (its path rules
//! are not repeated here).
//!
//! [`PutEventsClient`]: crate::PutEventsClient

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use chrono::{DateTime, Datelike, Timelike, Utc};
use outbox_core::json::write_u64;
use sha2::{Digest, Sha256};

/// The signing algorithm's name.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The signed headers whose values are the same on every request: the
/// endpoint's and the call's.
pub(crate) struct FixedHeaders<'a> {
    /// The `Host` header as sent (the endpoint's authority).
    pub(crate) host: &'a str,
    /// The `Content-Type` header.
    pub(crate) content_type: &'a str,
    /// The `X-Amz-Target` header.
    pub(crate) target: &'a str,
}

/// The headers signing adds to the request.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) authorization: String,
    /// `X-Amz-Date`: the signing time, `YYYYMMDDTHHMMSSZ`.
    pub(crate) amz_date: String,
}

/// Signs requests for one service in one region, with the same fixed
/// headers, keeping the last day's signing key.
pub(crate) struct Signer {
    region: String,
    service: &'static str,
    /// `/<region>/<service>/aws4_request`: the credential scope after the date.
    scope_tail: String,
    /// The canonical lines of `content-type` and `host`.
    fixed_before_date: String,
    /// The canonical line of `x-amz-target`.
    fixed_last: String,
    key: Mutex<Option<DayKey>>,
}

/// A signing key and what it was derived from.
struct DayKey {
    credentials: Credentials,
    date: String,
    key: Vec<u8>,
}

impl Signer {
    pub(crate) fn new(region: &str, service: &'static str, headers: &FixedHeaders<'_>) -> Self {
        // No value here has spaces to trim or collapse: a URI's authority
        // and two constants.
        Self {
            region: region.to_owned(),
            service,
            scope_tail: ["/", region, "/", service, "/aws4_request"].concat(),
            fixed_before_date: [
                "content-type:",
                headers.content_type,
                "\nhost:",
                headers.host,
                "\n",
            ]
            .concat(),
            fixed_last: ["x-amz-target:", headers.target, "\n"].concat(),
            key: Mutex::new(None),
        }
    }

    /// The `Authorization` and `X-Amz-Date` of a request with `body`
    /// signed at `time`. The `Content-Length` signed is the body's length,
    /// and the `X-Amz-Security-Token`, when the credentials have one, is
    /// signed too (the caller sends both as given).
    pub(crate) fn sign(&self, body: &[u8], credentials: &Credentials, time: SystemTime) -> Signed {
        let amz_date = amz_date(time);
        let date = &amz_date[..8];
        let token = credentials.session_token();

        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n/\n\ncontent-length:");
        canonical.push_str(write_u64(body.len() as u64, &mut [0; 20]));
        canonical.push('\n');
        canonical.push_str(&self.fixed_before_date);
        canonical.push_str("x-amz-date:");
        canonical.push_str(&amz_date);
        canonical.push('\n');
        if let Some(token) = token {
            // As given, not trimmed: as `aws-sigv4` signs it (it adds the
            // header itself, after normalising the request's own).
            canonical.push_str("x-amz-security-token:");
            canonical.push_str(token);
            canonical.push('\n');
        }
        canonical.push_str(&self.fixed_last);
        canonical.push('\n');
        let signed_headers = if token.is_some() {
            "content-length;content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-length;content-type;host;x-amz-date;x-amz-target"
        };
        canonical.push_str(signed_headers);
        canonical.push('\n');
        push_hex(&mut canonical, &Sha256::digest(body));

        let mut string_to_sign = String::with_capacity(160);
        string_to_sign.push_str(ALGORITHM);
        string_to_sign.push('\n');
        string_to_sign.push_str(&amz_date);
        string_to_sign.push('\n');
        string_to_sign.push_str(date);
        string_to_sign.push_str(&self.scope_tail);
        string_to_sign.push('\n');
        push_hex(&mut string_to_sign, &Sha256::digest(canonical.as_bytes()));

        let signature = self.signature(credentials, date, time, &string_to_sign);
        let mut authorization = String::with_capacity(256);
        authorization.push_str(ALGORITHM);
        authorization.push_str(" Credential=");
        authorization.push_str(credentials.access_key_id());
        authorization.push('/');
        authorization.push_str(date);
        authorization.push_str(&self.scope_tail);
        authorization.push_str(", SignedHeaders=");
        authorization.push_str(signed_headers);
        authorization.push_str(", Signature=");
        authorization.push_str(&signature);
        Signed {
            authorization,
            amz_date,
        }
    }

    /// The signature of `string_to_sign` with the signing key of
    /// `credentials` on `date` (the day of `time`), which `aws-sigv4`
    /// derives once a day.
    fn signature(
        &self,
        credentials: &Credentials,
        date: &str,
        time: SystemTime,
        string_to_sign: &str,
    ) -> String {
        let mut cached = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        let current = cached.as_ref().is_some_and(|d| {
            d.date == date && d.credentials.secret_access_key() == credentials.secret_access_key()
        });
        if !current {
            *cached = None;
        }
        let day = cached.get_or_insert_with(|| DayKey {
            credentials: credentials.clone(),
            date: date.to_owned(),
            key: generate_signing_key(credentials.secret_access_key(), time, &self.region, self.service)
                .as_ref()
                .to_vec(),
        });
        calculate_signature(&day.key, string_to_sign.as_bytes())
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// `time` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, in UTC.
fn amz_date(time: SystemTime) -> String {
    let t: DateTime<Utc> = time.into();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
