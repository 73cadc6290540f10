//! What a caller may put into the replicated account database, checked
//! before anything is proposed: account names (they travel in certificate
//! common names, "client:NAME", so the store engine and the group accept
//! the same set), key fingerprints and request ids. Each is size-capped, so
//! no caller can make a Raft entry the followers cannot take.

/// Longest account name.
pub const MAX_NAME: usize = 64;

/// Checks that `name` can name an account (and a certificate); the error
/// says what is allowed.
pub fn validate_account_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}`: account names are 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

/// Hex digits of a key fingerprint (32 bytes).
pub const FINGERPRINT_LEN: usize = 64;
/// Longest request id (the tools make 32 hex digits).
pub const MAX_REQUEST_ID: usize = 64;

/// Checks that `fingerprint` is what a keys file's fingerprint looks like:
/// 64 lowercase hex digits.
pub fn validate_fingerprint(fingerprint: &str) -> Result<(), String> {
    let hex = fingerprint.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if fingerprint.len() == FINGERPRINT_LEN && hex {
        Ok(())
    } else {
        let shown: String = fingerprint.chars().take(16).collect();
        Err(format!(
            "a key fingerprint is {FINGERPRINT_LEN} lowercase hex digits, not {} characters (`{shown}…`)",
            fingerprint.len()
        ))
    }
}

/// Checks a request id: 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'.
pub fn validate_request_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("a request id is 1 to {MAX_REQUEST_ID} characters of A-Z, a-z, 0-9, '-' and '_'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_request_ids_are_capped() {
        validate_fingerprint(&"ab".repeat(32)).unwrap();
        for bad in [String::new(), "AB".repeat(32), "ab".repeat(33), "g".repeat(64), "ab".repeat(1 << 20)] {
            let e = validate_fingerprint(&bad).unwrap_err();
            assert!(e.len() < 200, "the error stays short: {e}");
        }
        validate_request_id(&crate::id::new_request_id()).unwrap();
        for bad in ["", "a b", &"x".repeat(65), "a\n"] {
            assert!(validate_request_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_fit_in_certificates() {
        for good in ["alice", "host-1.example_org", "A"] {
            validate_account_name(good).unwrap();
        }
        for bad in ["", "a b", "a:b", "x/y", &"n".repeat(65), "é"] {
            assert!(validate_account_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
