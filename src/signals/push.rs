//! Push delivery (RFC 8935) and what it may reach: the operator's
//! allow-list of push targets (`--ssf-push-allow`), so an admin who
//! creates a stream cannot make sessiond call an address the operator did
//! not allow (server-side request forgery).

use std::net::IpAddr;

use super::SsfError;

/// One allowed target: a host name (exactly, any port) or an address range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Host(String),
    Net { base: IpAddr, prefix: u8 },
}

/// The push targets the operator allows; empty: no push at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Allowed>);

fn in_net(ip: IpAddr, base: IpAddr, prefix: u8) -> bool {
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl AllowList {
    /// Parses `--ssf-push-allow`: comma-separated host names, addresses and
    /// CIDR ranges (`receiver.example.com,127.0.0.1,10.1.0.0/16`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some((addr, bits)) = item.split_once('/') {
                let base: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("push allow-list entry {item:?}: not an address range"))?;
                let max = if base.is_ipv4() { 32 } else { 128 };
                let prefix: u8 =
                    bits.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                        format!("push allow-list entry {item:?}: bad prefix length")
                    })?;
                out.push(Allowed::Net { base, prefix });
            } else if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                out.push(Allowed::Net { base: ip, prefix });
            } else if item.len() <= 253
                && item
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                out.push(Allowed::Host(item.to_ascii_lowercase()));
            } else {
                return Err(format!(
                    "push allow-list entry {item:?}: expected a host name, an address or a CIDR range"
                ));
            }
        }
        Ok(AllowList(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a URL's host is allowed: an address inside an allowed
    /// range, or a name listed as such.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']);
        match host.parse::<IpAddr>() {
            Ok(ip) => self.allows_ip(ip),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                self.0
                    .iter()
                    .any(|a| matches!(a, Allowed::Host(h) if *h == host))
            }
        }
    }

    /// Whether an address the connection would go to is allowed (a listed
    /// name may resolve anywhere: the operator vouched for it).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|a| matches!(a, Allowed::Net { base, prefix } if in_net(ip, *base, *prefix)))
    }

    /// A push `endpoint_url` a receiver asked for: an absolute http(s) URL
    /// without user info whose host is allowed; otherwise 400.
    pub fn check_url(&self, url: &str) -> Result<http::Uri, SsfError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| SsfError::bad("delivery.endpoint_url is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(SsfError::bad(
                "delivery.endpoint_url must be an http:// or https:// URL",
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| SsfError::bad("delivery.endpoint_url must name a host"))?;
        if authority.as_str().contains('@') {
            return Err(SsfError::bad(
                "delivery.endpoint_url must not carry user info: use authorization_header",
            ));
        }
        if self.is_empty() {
            return Err(SsfError::bad(
                "push delivery is not enabled here: the operator allows no push targets \
                 (--ssf-push-allow); use poll delivery",
            ));
        }
        if !self.allows_host(authority.host()) {
            return Err(SsfError::bad(
                "delivery.endpoint_url is not an allowed push target (the operator's \
                 --ssf-push-allow)",
            ));
        }
        Ok(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_names_and_ranges_are_reachable() {
        let allow = AllowList::parse("receiver.example.com, 127.0.0.1,10.1.0.0/16,::1").unwrap();
        for ok in [
            "https://receiver.example.com/ssf",
            "http://RECEIVER.example.com:8443/x",
            "http://127.0.0.1:9000/push",
            "http://10.1.200.3/push",
            "http://[::1]:80/p",
        ] {
            assert!(allow.check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.2/push",
            "http://10.2.0.1/push",
            "http://evil.example.com/",
            "http://receiver.example.com.evil.com/",
            "ftp://127.0.0.1/",
            "http://u:p@127.0.0.1/",
            "/relative",
            "http://[::2]/",
        ] {
            assert!(allow.check_url(bad).is_err(), "{bad}");
        }
        assert!(AllowList::default().check_url("http://127.0.0.1/").is_err());
    }

    #[test]
    fn bad_entries_are_refused_at_start() {
        for bad in ["10.0.0.0/33", "not a host!", "1.2.3.4/x"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowList::parse("").unwrap().is_empty());
    }
}
