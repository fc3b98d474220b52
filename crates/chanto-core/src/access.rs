//! Who may see a site: basic-auth users and IP allow/deny lists, per site
//! (all branches), per branch, or as the default for previews (every branch
//! but production, pull-request previews included).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{BranchName, ValidationError};

/// What a policy covers. The most specific wins: a branch's own policy, else
/// the site's, else (for branches other than production) the previews default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessScope {
    /// Every branch of the site, production included.
    Site,
    /// Every branch except production, unless it has its own policy.
    Previews,
    /// One branch.
    Branch(BranchName),
}

impl std::fmt::Display for AccessScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Site => f.write_str("site"),
            Self::Previews => f.write_str("previews"),
            Self::Branch(b) => write!(f, "branch:{b}"),
        }
    }
}

impl Serialize for AccessScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccessScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for AccessScope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s {
            "site" => Ok(Self::Site),
            "previews" => Ok(Self::Previews),
            _ => match s.strip_prefix("branch:") {
                Some(b) => Ok(Self::Branch(b.parse()?)),
                None => Err(ValidationError::new("scope", format!("{s:?} is not site, previews or branch:<name>"))),
            },
        }
    }
}

/// A user allowed in, with the argon2id hash of their password (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessUser {
    /// The user name.
    pub user: String,
    /// `$argon2id$…`; the password itself is never stored.
    pub hash: String,
}

/// Who may see what a scope covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Basic-auth users; empty: no password asked.
    #[serde(default)]
    pub users: Vec<AccessUser>,
    /// If not empty, only clients in these networks get in.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Clients in these networks never get in.
    #[serde(default)]
    pub deny: Vec<IpNet>,
    /// Let CORS preflight (`OPTIONS`) requests through without a password.
    #[serde(default)]
    pub allow_preflight: bool,
}

/// Longest user name, in bytes.
pub const MAX_USER_BYTES: usize = 128;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Most users, and most networks in each list, per policy.
pub const MAX_ENTRIES: usize = 100;

/// Checks a user name for basic auth: no `:` (it ends the name), printable.
pub fn check_user(user: &str) -> Result<(), ValidationError> {
    if user.is_empty() || user.len() > MAX_USER_BYTES || user.contains(':') || user.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "user",
            format!("a user name is 1 to {MAX_USER_BYTES} printable characters without ':'"),
        ));
    }
    Ok(())
}

/// Checks a password: not empty, bounded, printable.
pub fn check_password(password: &str) -> Result<(), ValidationError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES || password.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "password",
            format!("a password is 1 to {MAX_PASSWORD_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// What the network lists say about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVerdict {
    /// Let it through (to the password check, if any).
    Pass,
    /// Refuse it.
    Refuse,
}

impl AccessPolicy {
    /// Whether nothing is restricted.
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.allow.is_empty() && self.deny.is_empty()
    }

    /// The network lists' verdict on `ip` (deny first, then allow).
    pub fn check_ip(&self, ip: IpAddr) -> IpVerdict {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return IpVerdict::Refuse;
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return IpVerdict::Refuse;
        }
        IpVerdict::Pass
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `10.0.0.0/8` covers `::ffff:10.1.2.3`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The policy for a branch, from a site's policies: its own, else the
/// site's, else (when not production) the previews default.
pub fn resolve<'a, P>(policies: &'a [(AccessScope, P)], branch: &BranchName, production: bool) -> Option<&'a P> {
    let find = |want: &AccessScope| policies.iter().find(|(s, _)| s == want).map(|(_, p)| p);
    find(&AccessScope::Branch(branch.clone()))
        .or_else(|| find(&AccessScope::Site))
        .or_else(|| if production { None } else { find(&AccessScope::Previews) })
}

/// Whether `ip` is one of the `trusted` proxies.
pub fn is_trusted_proxy(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself trusted.
///
/// `forwarded_for` holds every `X-Forwarded-For` field line in the order
/// they arrived: a proxy may add its own line instead of appending to the
/// client's, and the hops are read as one list, right to left, so a line
/// the client wrote (the left-most) is never believed over a proxy's.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    if !is_trusted_proxy(peer, trusted) {
        return canonical(peer);
    }
    for hop in forwarded_for.iter().rev().flat_map(|line| line.rsplit(',')) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted_proxy(ip, trusted) => continue,
            Ok(ip) => return canonical(ip),
            // A garbled hop: trust nothing further out.
            Err(_) => break,
        }
    }
    canonical(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn scopes_round_trip() {
        for s in ["site", "previews", "branch:feature/x"] {
            assert_eq!(s.parse::<AccessScope>().unwrap().to_string(), s);
        }
        assert!("branch:".parse::<AccessScope>().is_err());
        assert!("everything".parse::<AccessScope>().is_err());
    }

    #[test]
    fn most_specific_policy_wins() {
        let b = |s: &str| -> BranchName { s.parse().unwrap() };
        let ps = vec![(AccessScope::Previews, "previews"), (AccessScope::Branch(b("qa")), "qa")];
        assert_eq!(resolve(&ps, &b("main"), true), None, "production stays public");
        assert_eq!(resolve(&ps, &b("feature"), false), Some(&"previews"));
        assert_eq!(resolve(&ps, &b("qa"), false), Some(&"qa"));
        let ps = vec![(AccessScope::Site, "site"), (AccessScope::Previews, "previews")];
        assert_eq!(resolve(&ps, &b("main"), true), Some(&"site"));
        assert_eq!(resolve(&ps, &b("feature"), false), Some(&"site"));
    }

    #[test]
    fn networks() {
        let p = AccessPolicy {
            allow: vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            deny: vec![net("10.9.0.0/16")],
            ..Default::default()
        };
        assert_eq!(p.check_ip("10.1.2.3".parse().unwrap()), IpVerdict::Pass);
        assert_eq!(p.check_ip("::ffff:10.1.2.3".parse().unwrap()), IpVerdict::Pass);
        assert_eq!(p.check_ip("10.9.2.3".parse().unwrap()), IpVerdict::Refuse);
        assert_eq!(p.check_ip("192.168.1.1".parse().unwrap()), IpVerdict::Refuse);
        assert_eq!(p.check_ip("2001:db8::1".parse().unwrap()), IpVerdict::Pass);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = [net("127.0.0.0/8"), net("10.0.0.0/8")];
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(client_ip(ip("203.0.113.9"), &["1.2.3.4"], &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("127.0.0.1"), &["1.2.3.4, 10.0.0.5"], &trusted), ip("1.2.3.4"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &["6.6.6.6, 1.2.3.4"], &trusted),
            ip("1.2.3.4"),
            "a client-set hop is not believed"
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &["garbage"], &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &[], &trusted), ip("127.0.0.1"));
    }

    /// A proxy that adds its own `X-Forwarded-For` line (instead of
    /// appending to the client's) puts the real client in the last line:
    /// the client's forged first line must not win.
    #[test]
    fn forwarded_for_reads_every_line() {
        let trusted = [net("127.0.0.0/8")];
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(client_ip(ip("127.0.0.1"), &["10.1.2.3", "203.0.113.7"], &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &["10.1.2.3", "203.0.113.7, 127.0.0.5"], &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &["203.0.113.7", "127.0.0.9"], &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn users_and_passwords() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("a:b").is_err() && check_user("").is_err() && check_user(&"x".repeat(129)).is_err());
        assert!(check_password("s3cret pass").is_ok());
        assert!(check_password("").is_err() && check_password("a\nb").is_err());
    }
}
