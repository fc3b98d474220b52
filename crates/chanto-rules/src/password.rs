//! The one definition of how chanto hashes passwords, and the check that a
//! hash a rule file brings was made that way: whoever writes the hash chooses
//! what verifying it costs, so chanto accepts only its own parameters.

/// The argon2 parameters chanto hashes passwords with, and the only ones it
/// verifies: argon2id, version 0x13 (19), 19 MiB of memory, 2 passes, 1 lane,
/// 32-byte output (the `argon2` crate's defaults, OWASP's recommendation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashParams {
    /// The algorithm's PHC identifier.
    pub algorithm: &'static str,
    /// The argon2 version (`v=`).
    pub version: u32,
    /// Memory, in KiB (`m=`).
    pub m_cost: u32,
    /// Passes (`t=`).
    pub t_cost: u32,
    /// Lanes (`p=`).
    pub p_cost: u32,
    /// Bytes of output.
    pub output_len: usize,
}

/// chanto's argon2 parameters (see [`PasswordHashParams`]).
pub const CHANTO_ARGON2: PasswordHashParams =
    PasswordHashParams { algorithm: "argon2id", version: 19, m_cost: 19_456, t_cost: 2, p_cost: 1, output_len: 32 };

impl std::fmt::Display for PasswordHashParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "${}$v={}$m={},t={},p={}$<salt>$<{}-byte hash>",
            self.algorithm, self.version, self.m_cost, self.t_cost, self.p_cost, self.output_len
        )
    }
}

/// Whether a rule file's secret is meant as a hash (any `$argon2…$` PHC
/// string) rather than a password in clear.
pub fn looks_like_hash(secret: &str) -> bool {
    secret.starts_with("$argon2")
}

/// Checks that `hash` is a PHC string with exactly [`CHANTO_ARGON2`]'s
/// parameters; the error says what differs.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let want = CHANTO_ARGON2;
    let mut parts = hash.split('$');
    let (Some(""), Some(alg), Some(version), Some(params), Some(salt), Some(output), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("it is not a PHC string of the form $argon2id$v=19$m=…,t=…,p=…$salt$hash".into());
    };
    if alg != want.algorithm {
        return Err(format!("its algorithm is {alg}; chanto verifies {} only", want.algorithm));
    }
    if version != format!("v={}", want.version) {
        return Err(format!("its version is {version:?}; chanto verifies v={} only", want.version));
    }
    let wanted = format!("m={},t={},p={}", want.m_cost, want.t_cost, want.p_cost);
    if params != wanted {
        return Err(format!("its parameters are {params}; chanto verifies {wanted} only"));
    }
    let b64 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    // 8 to 48 bytes of salt, unpadded base64.
    if !(11..=64).contains(&salt.len()) || !b64(salt) {
        return Err("its salt is not 8 to 48 bytes of unpadded base64".into());
    }
    // 32 bytes of unpadded base64 are 43 characters.
    if output.len() != want.output_len.div_ceil(3) * 4 - 1 || !b64(output) {
        return Err(format!("its hash is not {} bytes of unpadded base64", want.output_len));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "c29tZXNhbHRzb21lc2FsdA";
    const OUT: &str = "Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";

    #[test]
    fn only_chantos_parameters_pass() {
        assert_eq!(check_hash(&format!("$argon2id$v=19$m=19456,t=2,p=1${SALT}${OUT}")), Ok(()));
        for (hash, says) in [
            (format!("$argon2id$v=19$m=4194304,t=2,p=1${SALT}${OUT}"), "m=4194304,t=2,p=1"),
            (format!("$argon2id$v=19$m=19456,t=100000,p=1${SALT}${OUT}"), "t=100000"),
            (format!("$argon2id$v=19$m=19456,t=2,p=16${SALT}${OUT}"), "p=16"),
            (format!("$argon2i$v=19$m=19456,t=2,p=1${SALT}${OUT}"), "algorithm is argon2i"),
            (format!("$argon2id$v=16$m=19456,t=2,p=1${SALT}${OUT}"), "v=16"),
            (format!("$argon2id$v=19$t=2,m=19456,p=1${SALT}${OUT}"), "t=2,m=19456"),
            (format!("$argon2id$v=19$m=19456,t=2,p=1${SALT}${OUT}AAAAAAAA"), "32 bytes"),
            (format!("$argon2id$v=19$m=19456,t=2,p=1${SALT}"), "PHC string"),
            ("$argon2id$".into(), "PHC string"),
        ] {
            let err = check_hash(&hash).unwrap_err();
            assert!(err.contains(says), "{hash}: {err}");
        }
    }
}
