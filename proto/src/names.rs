//! Account names: they travel in certificate common names ("client:NAME"),
//! so the store engine and the group's account database accept the same set.

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

#[cfg(test)]
mod tests {
    use super::*;

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
