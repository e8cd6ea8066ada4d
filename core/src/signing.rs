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
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac_matches_hex(mac, claimed)
}

/// Whether `claimed` (hex, any case) is `mac`'s result, compared in
/// constant time; nothing is allocated.
fn mac_matches_hex(mac: HmacSha256, claimed: &str) -> bool {
    digest_matches_hex(&mac.finalize().into_bytes(), claimed)
}

/// Whether `claimed` (hex, any case) is `digest` (at most 32 bytes) in hex,
/// compared in constant time; nothing is allocated.
fn digest_matches_hex(digest: &[u8], claimed: &str) -> bool {
    let mut buffer = [0u8; 64];
    let expected = &mut buffer[..digest.len() * 2];
    hex::encode_to_slice(digest, expected).expect("the buffer holds two hex digits per byte");
    constant_time_eq_ignore_ascii_case(expected, claimed.as_bytes())
}

/// Lowercase hex MD5 of `body`, as the Pusher HTTP API's `body_md5`.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Whether `claimed` (hex, any case) is the MD5 of `body`, compared in
/// constant time; nothing is allocated.
pub fn md5_matches_hex(body: &[u8], claimed: &str) -> bool {
    digest_matches_hex(&Md5::digest(body), claimed)
}

/// Constant-time comparison of two hex strings, ignoring ASCII case.
/// Lengths are not secret (every valid signature has the same length).
pub fn constant_time_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Lowercased arithmetically: no branch on the bytes compared.
    let lower = |c: u8| c | (u8::from(c.wrapping_sub(b'A') < 26) << 5);
    let diff = a.iter().zip(b).fold(0u8, |diff, (&x, &y)| diff | (lower(x) ^ lower(y)));
    diff.ct_eq(&0).into()
}

/// The Pusher HTTP API's signature of a request, as a MAC ready to finish:
/// HMAC-SHA256 of `METHOD\nPATH\n` then the query parameters (without
/// `auth_signature`) sorted by name as `k=v` joined by `&`, fed piece by
/// piece rather than built as a string. Sorts `params`.
fn pusher_mac<K, V>(secret: &[u8], method: &str, path: &str, params: &mut [(K, V)]) -> HmacSha256
where
    K: AsRef<str> + Ord,
    V: AsRef<str> + Ord,
{
    params.sort();
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for piece in [method, "\n", path, "\n"] {
        mac.update(piece.as_bytes());
    }
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            mac.update(b"&");
        }
        mac.update(k.as_ref().as_bytes());
        mac.update(b"=");
        mac.update(v.as_ref().as_bytes());
    }
    mac
}

/// Whether `claimed` (hex, any case) is the Pusher HTTP API signature of a
/// request with these parameters (without `auth_signature`; sorted here).
pub fn pusher_signature_matches<K, V>(
    secret: &[u8],
    method: &str,
    path: &str,
    params: &mut [(K, V)],
    claimed: &str,
) -> bool
where
    K: AsRef<str> + Ord,
    V: AsRef<str> + Ord,
{
    mac_matches_hex(pusher_mac(secret, method, path, params), claimed)
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
    let signature = hex::encode(
        pusher_mac(secret.as_bytes(), "POST", path, &mut params)
            .finalize()
            .into_bytes(),
    );
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

    #[test]
    fn the_pusher_signature_is_the_hmac_of_the_sorted_string_to_sign() {
        let md5 = md5_hex(b"{}");
        let to_sign =
            format!("POST\n/apps/a/events\nauth_key=k&auth_timestamp=1700000000&auth_version=1.0&body_md5={md5}");
        let signature = hmac_sha256_hex(b"secret", to_sign.as_bytes());
        // Out of order: the signature sorts them.
        let mut borrowed = vec![
            ("body_md5", md5.as_str()),
            ("auth_version", "1.0"),
            ("auth_timestamp", "1700000000"),
            ("auth_key", "k"),
        ];
        let query = pusher_signed_query("k", "secret", "/apps/a/events", b"{}", 1_700_000_000);
        assert!(query.ends_with(&format!("auth_signature={signature}")), "{query}");
        assert!(pusher_signature_matches(
            b"secret",
            "POST",
            "/apps/a/events",
            &mut borrowed,
            &signature
        ));
        assert!(pusher_signature_matches(
            b"secret",
            "POST",
            "/apps/a/events",
            &mut borrowed,
            &signature.to_uppercase()
        ));
        assert!(!pusher_signature_matches(
            b"secret",
            "POST",
            "/apps/b/events",
            &mut borrowed,
            &signature
        ));
        assert!(!pusher_signature_matches(
            b"other",
            "POST",
            "/apps/a/events",
            &mut borrowed,
            &signature
        ));
    }

    #[test]
    fn hex_comparison_ignores_case_only() {
        assert!(constant_time_eq_ignore_ascii_case(b"ab09ef", b"AB09EF"));
        assert!(!constant_time_eq_ignore_ascii_case(b"ab09ef", b"ab09eg"));
        // '@' (0x40) and '`' (0x60) differ only in the bit lowercasing sets.
        assert!(!constant_time_eq_ignore_ascii_case(b"@", b"`"));
        assert!(!constant_time_eq_ignore_ascii_case(b"ab", b"abc"));
        assert!(md5_matches_hex(b"", "D41D8CD98F00B204E9800998ECF8427E"));
        assert!(!md5_matches_hex(b"x", "d41d8cd98f00b204e9800998ecf8427e"));
    }
}
