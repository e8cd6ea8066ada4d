//! Pusher's signatures: HMAC-SHA256 in lowercase hex, compared in constant
//! time, and the MD5 body digest of the Pusher HTTP API.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `claimed` (hex, any case) is the HMAC-SHA256 of `message`,
/// compared in constant time.
pub fn verify_hmac_sha256_hex(secret: &[u8], message: &[u8], claimed: &str) -> bool {
    let expected = hmac_sha256_hex(secret, message);
    constant_time_eq_ignore_ascii_case(expected.as_bytes(), claimed.as_bytes())
}

/// Lowercase hex MD5 of `body`, as the Pusher HTTP API's `body_md5`.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Constant-time comparison of two hex strings, ignoring ASCII case.
/// Lengths are not secret (every valid signature has the same length).
pub fn constant_time_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let lower = |bytes: &[u8]| bytes.iter().map(u8::to_ascii_lowercase).collect::<Vec<u8>>();
    lower(a).ct_eq(&lower(b)).into()
}

/// The Pusher HTTP API's string to sign: `METHOD\nPATH\n` then the query
/// parameters (without `auth_signature`) sorted by name as `k=v` joined by `&`.
pub fn pusher_string_to_sign(method: &str, path: &str, params: &mut [(String, String)]) -> String {
    params.sort();
    let mut out = format!("{method}\n{path}\n");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The signed query string for a `POST` to `path` with `body`, as a Pusher
/// server library would send it.
pub fn pusher_signed_query(key: &str, secret: &str, path: &str, body: &[u8], timestamp: u64) -> String {
    pusher_signed_query_with(key, secret, path, body, timestamp, Vec::new())
}

/// [`pusher_signed_query`] with more query parameters, signed with the
/// others as the Pusher HTTP API signs every parameter.
pub fn pusher_signed_query_with(
    key: &str,
    secret: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
    extra: Vec<(String, String)>,
) -> String {
    let mut params = vec![
        ("auth_key".to_string(), key.to_string()),
        ("auth_timestamp".to_string(), timestamp.to_string()),
        ("auth_version".to_string(), "1.0".to_string()),
        ("body_md5".to_string(), md5_hex(body)),
    ];
    params.extend(extra);
    let to_sign = pusher_string_to_sign("POST", path, &mut params);
    let signature = hmac_sha256_hex(secret.as_bytes(), to_sign.as_bytes());
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        query.append_pair(k, v);
    }
    query.append_pair("auth_signature", &signature);
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_uppercase_and_refuses_tampering() {
        let sig = hmac_sha256_hex(b"s", b"body");
        assert!(verify_hmac_sha256_hex(b"s", b"body", &sig));
        assert!(verify_hmac_sha256_hex(b"s", b"body", &sig.to_uppercase()));
        assert!(!verify_hmac_sha256_hex(b"s", b"bodY", &sig));
        assert!(!verify_hmac_sha256_hex(b"t", b"body", &sig));
        assert!(!verify_hmac_sha256_hex(b"s", b"body", &sig[1..]));
    }

    #[test]
    fn md5_of_empty_body() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
