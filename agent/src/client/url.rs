//! `http://` and `https://` URLs as the client understands them: the
//! scheme, where to connect, what to send as `Host`, and the path. Shared
//! by the alert sinks and the sidecar's profile pulls.

use std::net::SocketAddr;
use std::time::Duration;

/// A parsed `http[s]://host[:port][/path][?query]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://` (TLS) rather than `http://`.
    https: bool,
    /// `host:port` (`[v6]:port`), for `Host:` and name resolution.
    authority: String,
    /// Set for IP-literal hosts.
    ip: Option<SocketAddr>,
    /// Path and query, starting with `/`.
    path: String,
}

impl HttpUrl {
    /// Parses `url`. The error says what is wrong and what is expected; it
    /// names the URL but not the setting, which the caller adds.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if !https && !lower.starts_with("http://") {
            return Err(format!(
                "{url:?}: expected an http:// or https:// URL such as http://127.0.0.1:6060"
            ));
        }
        let scheme_len = if https { "https://" } else { "http://" }.len();
        let rest = url[scheme_len..].split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        if let Some(c) = path.chars().find(|c| c.is_control() || *c == ' ') {
            return Err(format!("{url:?}: invalid character {c:?} in the path"));
        }
        // host, or [v6], then an optional :port.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{url:?}: unexpected {after:?} after the host")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port: u16 = match port {
            None if https => 443,
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{url:?}: invalid port {p:?}"))?,
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !host_ok {
            return Err(format!("{url:?}: missing or invalid host {host:?}"));
        }
        let ip = host.parse::<std::net::IpAddr>().ok();
        if host.contains(':') && ip.is_none() {
            return Err(format!("{url:?}: invalid host {host:?}"));
        }
        Ok(HttpUrl {
            https,
            authority: if ip.is_some_and(|ip| ip.is_ipv6()) {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            ip: ip.map(|ip| SocketAddr::new(ip, port)),
            path,
        })
    }

    /// True for an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host:port` as written (`[v6]:port` for IPv6).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Path and query, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The address, without a lookup, when the host is an IP literal.
    pub fn ip_addr(&self) -> Option<SocketAddr> {
        self.ip
    }

    /// The same server with another path (which should start with `/`).
    pub fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl {
            path: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            },
            ..self.clone()
        }
    }

    /// Where to connect: the IP literal, or the first address a lookup of
    /// the host gives within `timeout`.
    pub async fn resolve(&self, timeout: Duration) -> Result<SocketAddr, String> {
        if let Some(ip) = self.ip {
            return Ok(ip);
        }
        tokio::time::timeout(timeout, tokio::net::lookup_host(&self.authority))
            .await
            .map_err(|_| format!("resolving {}: no answer within {timeout:?}", self.authority))?
            .map_err(|e| format!("resolving {}: {e}", self.authority))?
            .next()
            .ok_or_else(|| format!("resolving {}: no address", self.authority))
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let u = HttpUrl::parse("http://127.0.0.1:6060").unwrap();
        assert_eq!(u.authority(), "127.0.0.1:6060");
        assert_eq!(u.path(), "/");
        assert_eq!(u.ip_addr(), Some("127.0.0.1:6060".parse().unwrap()));
        let u = HttpUrl::parse(" HTTP://[::1]:9/a/b?x=1#frag ").unwrap();
        assert_eq!(u.authority(), "[::1]:9");
        assert_eq!(u.path(), "/a/b?x=1");
        let u = HttpUrl::parse("http://example.invalid?q").unwrap();
        assert_eq!(u.authority(), "example.invalid:80");
        assert_eq!(u.path(), "/?q");
        assert_eq!(u.ip_addr(), None);
        assert_eq!(
            u.with_path("debug/pprof/heap").to_string(),
            "http://example.invalid:80/debug/pprof/heap"
        );
        let u = HttpUrl::parse("HTTPS://hooks.example.com/services/x?a=1").unwrap();
        assert!(u.is_https());
        assert_eq!(u.authority(), "hooks.example.com:443");
        assert_eq!(
            u.to_string(),
            "https://hooks.example.com:443/services/x?a=1"
        );
        let u = HttpUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(u.ip_addr(), Some("127.0.0.1:8443".parse().unwrap()));
        assert!(!HttpUrl::parse("http://x").unwrap().is_https());
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        for (url, want) in [
            ("ftp://x", "expected an http:// or https:// URL"),
            ("https://", "missing or invalid host"),
            ("http://u:p@x", "credentials"),
            ("http://x:0", "invalid port"),
            ("http://x:99999", "invalid port"),
            ("http://", "missing or invalid host"),
            ("http://[::1", "unclosed"),
            ("http://a b", "invalid host"),
            ("http://a/b c", "invalid character"),
            ("http://fe:80:x", "invalid port"),
        ] {
            let e = HttpUrl::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
