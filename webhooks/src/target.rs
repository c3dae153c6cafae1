//! Applying the SSRF guard ([`crate::ssrf`]) for real: resolve the URL's host, judge every
//! address, and make the HTTP client connect only to addresses that were judged.
//!
//! - [`check_url`]: when an endpoint is created or its URL changed.
//! - [`GuardedResolver`]: the dispatcher's HTTP client resolves host names through it, so
//!   the addresses checked *are* the addresses connected to (no DNS-rebinding window). A
//!   URL whose host is an IP literal never reaches a resolver; the dispatcher checks those
//!   with [`check_literal`] before sending.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::ssrf::{TargetError, check_target};

/// Resolve `url`'s host and check every address it resolves to. A host that does not
/// resolve is refused ([`TargetError::NoAddress`]).
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let parsed = Url::parse(url).map_err(|_| TargetError::InvalidUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::UnsupportedScheme(parsed.scheme().to_owned()));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(TargetError::InvalidUrl)?;
    if let Some(result) = check_literal(&parsed, allow_private) {
        return result;
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    check_target(url, &addresses, allow_private)
}

/// For a URL whose host is an IP address: the guard's verdict. `None` for a host name.
pub fn check_literal(url: &Url, allow_private: bool) -> Option<Result<(), TargetError>> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    Some(check_target(url.as_str(), &[ip], allow_private))
}

/// A DNS resolver that refuses host names resolving to a forbidden address (unless private
/// targets are allowed). Install it with `reqwest::ClientBuilder::dns_resolver`.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            check_target(&format!("http://{host}/"), &ips, allow_private)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The [`TargetError`] somewhere in an error's chain of causes, if any (a refusal by the
/// [`GuardedResolver`] reaches the caller wrapped in reqwest's and hyper's errors).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<TargetError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(t) = e.downcast_ref::<TargetError>() {
            return Some(t.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_private_targets_are_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/x",
            "http://localhost:8080/",
        ] {
            assert!(
                matches!(
                    check_url(url, false).await,
                    Err(TargetError::ForbiddenAddress(_))
                ),
                "{url}"
            );
            assert_eq!(check_url(url, true).await, Ok(()), "{url}");
        }
    }

    #[tokio::test]
    async fn malformed_urls_and_other_schemes_are_refused() {
        assert_eq!(
            check_url("not a url", true).await,
            Err(TargetError::InvalidUrl)
        );
        assert_eq!(
            check_url("ftp://127.0.0.1/", true).await,
            Err(TargetError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(
            check_url("http://no-such-host.invalid/", true).await,
            Err(TargetError::NoAddress)
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
        let refused = GuardedResolver {
            allow_private: false,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        let err = refused.err().expect("refused");
        assert!(
            matches!(
                refusal_in(err.as_ref()),
                Some(TargetError::ForbiddenAddress(_))
            ),
            "{err}"
        );
        let allowed = GuardedResolver {
            allow_private: true,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        assert!(allowed.is_ok());
    }
}
