//! Signature Version 4 for the one request [`PutEventsClient`] sends: a
//! `POST` of an AWS JSON 1.1 body to the path `/`, with the same six signed
//! headers every time.
//!
//! `aws-sigv4` signs any request: it builds the canonical request, the
//! string to sign and the signing key from parts each time, about ninety
//! allocations a call, and derives the key (four HMACs) every time. This
//! request's canonical form has one shape, written here in one buffer, and
//! the key changes once a day, so it is kept. The tests hold the result to
//! `aws-sigv4`'s for the same request, which the client still uses for an
//! endpoint whose path is not `/` (its path rules are not repeated here).
//!
//! [`PutEventsClient`]: crate::PutEventsClient

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Timelike, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The signing algorithm's name.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What the signature covers, besides the body.
pub(crate) struct Request<'a> {
    /// The `Host` header as sent (the endpoint's authority).
    pub(crate) host: &'a str,
    /// The `Content-Type` header.
    pub(crate) content_type: &'a str,
    /// The `X-Amz-Target` header.
    pub(crate) target: &'a str,
    /// The body.
    pub(crate) body: &'a [u8],
}

/// The credentials to sign with.
pub(crate) struct Credentials<'a> {
    pub(crate) access_key_id: &'a str,
    pub(crate) secret_access_key: &'a str,
    pub(crate) session_token: Option<&'a str>,
}

/// The headers signing adds to the request.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) authorization: String,
    /// `X-Amz-Date`: the signing time, `YYYYMMDDTHHMMSSZ`.
    pub(crate) amz_date: String,
}

/// Signs requests for one service in one region, keeping the last day's
/// signing key.
pub(crate) struct Signer {
    region: String,
    service: &'static str,
    key: Mutex<Option<DayKey>>,
}

/// A signing key and what it was derived from.
struct DayKey {
    secret: String,
    date: [u8; 8],
    key: [u8; 32],
}

impl Signer {
    pub(crate) fn new(region: &str, service: &'static str) -> Self {
        Self {
            region: region.to_owned(),
            service,
            key: Mutex::new(None),
        }
    }

    /// The `Authorization` and `X-Amz-Date` of `request` signed at `time`.
    /// The `Content-Length` signed is the body's length, and the
    /// `X-Amz-Security-Token`, when the credentials have one, is signed too
    /// (the caller sends both as given).
    pub(crate) fn sign(
        &self,
        request: &Request<'_>,
        credentials: &Credentials<'_>,
        time: SystemTime,
    ) -> Signed {
        let amz_date = amz_date(time);
        let date: [u8; 8] = amz_date.as_bytes()[..8].try_into().unwrap_or([b'0'; 8]);
        let date_str = &amz_date[..8];
        let scope_tail = ["/", &self.region, "/", self.service, "/aws4_request"].concat();

        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n/\n\n");
        header_line(&mut canonical, "content-length", &request.body.len().to_string());
        header_line(&mut canonical, "content-type", request.content_type);
        header_line(&mut canonical, "host", request.host);
        header_line(&mut canonical, "x-amz-date", &amz_date);
        if let Some(token) = credentials.session_token {
            // As given, not trimmed: as `aws-sigv4` signs it (it adds the
            // header itself, after normalising the request's own).
            canonical.push_str("x-amz-security-token:");
            canonical.push_str(token);
            canonical.push('\n');
        }
        header_line(&mut canonical, "x-amz-target", request.target);
        canonical.push('\n');
        let signed_headers = if credentials.session_token.is_some() {
            "content-length;content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-length;content-type;host;x-amz-date;x-amz-target"
        };
        canonical.push_str(signed_headers);
        canonical.push('\n');
        push_hex(&mut canonical, &Sha256::digest(request.body));

        let mut string_to_sign = String::with_capacity(160);
        string_to_sign.push_str(ALGORITHM);
        string_to_sign.push('\n');
        string_to_sign.push_str(&amz_date);
        string_to_sign.push('\n');
        string_to_sign.push_str(date_str);
        string_to_sign.push_str(&scope_tail);
        string_to_sign.push('\n');
        push_hex(&mut string_to_sign, &Sha256::digest(canonical.as_bytes()));

        let key = self.day_key(credentials.secret_access_key, date);
        let mut authorization = String::with_capacity(256);
        authorization.push_str(ALGORITHM);
        authorization.push_str(" Credential=");
        authorization.push_str(credentials.access_key_id);
        authorization.push('/');
        authorization.push_str(date_str);
        authorization.push_str(&scope_tail);
        authorization.push_str(", SignedHeaders=");
        authorization.push_str(signed_headers);
        authorization.push_str(", Signature=");
        push_hex(&mut authorization, &hmac(&key, string_to_sign.as_bytes()));
        Signed {
            authorization,
            amz_date,
        }
    }

    /// The signing key of `secret` on `date`, derived once a day.
    fn day_key(&self, secret: &str, date: [u8; 8]) -> [u8; 32] {
        let mut cached = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(day) = cached.as_ref().filter(|d| d.date == date && d.secret == secret) {
            return day.key;
        }
        let k_date = hmac(["AWS4", secret].concat().as_bytes(), &date);
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        *cached = Some(DayKey {
            secret: secret.to_owned(),
            date,
            key,
        });
        key
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `name:value\n`, the value trimmed and its runs of spaces made one, as
/// SigV4's canonical headers have them.
fn header_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let value = value.trim_matches(' ');
    if value.contains("  ") {
        let mut last_space = false;
        for c in value.chars() {
            if !(c == ' ' && last_space) {
                out.push(c);
            }
            last_space = c == ' ';
        }
    } else {
        out.push_str(value);
    }
    out.push('\n');
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
