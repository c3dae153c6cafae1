//! The SSRF guard: webhook URLs are chosen by API users, so without it a delivery could
//! reach the metadata service, the database or anything else on our private network.
//!
//! The guard judges *addresses*, not host names: the caller resolves the URL's host, passes
//! every address to [`check_target`], and must then connect only to those addresses (pin
//! them in the HTTP client), otherwise a DNS answer that changes between the check and the
//! connection (DNS rebinding) gets around it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a webhook target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the webhook URL is not an absolute http(s) URL")]
    InvalidUrl,
    #[error("the webhook URL scheme `{0}` is not allowed; use http or https")]
    UnsupportedScheme(String),
    #[error("the webhook host resolved to no address")]
    NoAddress,
    #[error("the webhook host resolves to {0}, a private or reserved address")]
    ForbiddenAddress(IpAddr),
}

/// Whether `ip` is not a public unicast address, so deliveries must not go there.
///
/// IPv4: this network (0.0.0.0/8, including unspecified), private (10/8, 172.16/12,
/// 192.168/16), loopback (127/8), link-local (169.254/16), CGNAT (100.64/10), IETF protocol
/// assignments (192.0.0/24), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24),
/// benchmarking (198.18/15), multicast (224/4), reserved (240/4, including broadcast).
///
/// IPv6: unspecified and loopback and the rest of the deprecated IPv4-compatible range
/// (::/96), multicast (ff00::/8), unique-local (fc00::/7), link-local (fe80::/10),
/// deprecated site-local (fec0::/10), documentation (2001:db8::/32), and IPv4 addresses
/// embedded as IPv4-mapped (::ffff:0:0/96) or NAT64 (64:ff9b::/96), judged as IPv4.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // this network, including 0.0.0.0
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || ip.is_multicast()
        || a >= 240 // reserved 240.0.0.0/4, including 255.255.255.255
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix: a gateway would connect to the embedded IPv4 address.
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    s[..6] == [0; 6] // ::/96: unspecified, loopback, deprecated IPv4-compatible
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
}

/// Whether a delivery may go to `url`, whose host resolved to `resolved`.
///
/// The scheme must be `http` or `https` (always). Unless `allow_private` (a config switch,
/// on in tests that deliver to loopback), every resolved address must pass
/// [`is_forbidden`]: one bad address is enough to refuse, since the client may pick any.
/// An empty `resolved` is refused: there is nothing to connect to, and nothing was checked.
pub fn check_target(
    url: &str,
    resolved: &[IpAddr],
    allow_private: bool,
) -> Result<(), TargetError> {
    let (scheme, rest) = url.split_once("://").ok_or(TargetError::InvalidUrl)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(TargetError::UnsupportedScheme(scheme.to_owned()));
    }
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
        return Err(TargetError::InvalidUrl);
    }
    if resolved.is_empty() {
        return Err(TargetError::NoAddress);
    }
    if !allow_private && let Some(&ip) = resolved.iter().find(|&&ip| is_forbidden(ip)) {
        return Err(TargetError::ForbiddenAddress(ip));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("IP literal")
    }

    fn assert_forbidden(addresses: &[&str]) {
        for a in addresses {
            assert!(is_forbidden(ip(a)), "{a} must be forbidden");
        }
    }

    fn assert_allowed(addresses: &[&str]) {
        for a in addresses {
            assert!(!is_forbidden(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        assert_allowed(&[
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ]);
    }

    #[test]
    fn private_ipv4_ranges_are_forbidden() {
        assert_forbidden(&[
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
        ]);
    }

    #[test]
    fn loopback_is_forbidden() {
        assert_forbidden(&["127.0.0.1", "127.255.255.254", "::1"]);
    }

    #[test]
    fn link_local_is_forbidden_including_the_cloud_metadata_address() {
        assert_forbidden(&["169.254.169.254", "169.254.0.1", "fe80::1", "febf::1"]);
    }

    #[test]
    fn unspecified_and_this_network_are_forbidden() {
        assert_forbidden(&["0.0.0.0", "0.1.2.3", "::"]);
    }

    #[test]
    fn multicast_is_forbidden() {
        assert_forbidden(&["224.0.0.1", "239.255.255.255", "ff02::1", "ff0e::1"]);
    }

    #[test]
    fn broadcast_and_reserved_ipv4_are_forbidden() {
        assert_forbidden(&["255.255.255.255", "240.0.0.1", "250.1.2.3"]);
    }

    #[test]
    fn documentation_ranges_are_forbidden() {
        assert_forbidden(&[
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "2001:db8::1",
            "2001:db8:ffff::1",
        ]);
    }

    #[test]
    fn cgnat_is_forbidden() {
        assert_forbidden(&["100.64.0.1", "100.100.100.200", "100.127.255.255"]);
    }

    #[test]
    fn protocol_assignment_and_benchmarking_ranges_are_forbidden() {
        assert_forbidden(&["192.0.0.1", "198.18.0.1", "198.19.255.255"]);
    }

    #[test]
    fn unique_local_ipv6_is_forbidden() {
        assert_forbidden(&["fc00::1", "fd12:3456:789a::1", "fdff:ffff::1"]);
    }

    #[test]
    fn deprecated_site_local_and_ipv4_compatible_ipv6_are_forbidden() {
        assert_forbidden(&["fec0::1", "::127.0.0.1", "::8.8.8.8"]);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_by_its_ipv4_address() {
        assert_forbidden(&[
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:172.16.0.1",
            "::ffff:192.168.1.1",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
            "::ffff:255.255.255.255",
            "::ffff:192.0.2.1",
        ]);
        assert_allowed(&["::ffff:8.8.8.8", "::ffff:1.1.1.1"]);
    }

    #[test]
    fn nat64_addresses_are_judged_by_their_embedded_ipv4_address() {
        assert_forbidden(&["64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe"]);
        assert_allowed(&["64:ff9b::808:808"]);
    }

    #[test]
    fn a_public_https_target_passes() {
        assert_eq!(
            check_target("https://hooks.example.com/x", &[ip("93.184.216.34")], false),
            Ok(())
        );
        assert_eq!(
            check_target("HTTP://hooks.example.com", &[ip("2606:4700::1")], false),
            Ok(())
        );
    }

    #[test]
    fn only_http_and_https_schemes_are_allowed() {
        let public = [ip("93.184.216.34")];
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com",
        ] {
            let err = check_target(url, &public, true).unwrap_err();
            assert!(
                matches!(err, TargetError::UnsupportedScheme(_)),
                "{url}: {err:?}"
            );
        }
        assert_eq!(
            check_target("example.com/hook", &public, true),
            Err(TargetError::InvalidUrl)
        );
        assert_eq!(
            check_target("https://", &public, true),
            Err(TargetError::InvalidUrl)
        );
        assert_eq!(
            check_target("https:///path", &public, true),
            Err(TargetError::InvalidUrl)
        );
    }

    #[test]
    fn one_forbidden_address_among_the_resolved_ones_refuses_the_target() {
        assert_eq!(
            check_target(
                "https://rebind.example.com",
                &[ip("93.184.216.34"), ip("127.0.0.1")],
                false
            ),
            Err(TargetError::ForbiddenAddress(ip("127.0.0.1")))
        );
    }

    #[test]
    fn a_loopback_target_is_refused_unless_private_targets_are_allowed() {
        let loopback = [ip("127.0.0.1")];
        assert_eq!(
            check_target("http://localhost:8080/hook", &loopback, false),
            Err(TargetError::ForbiddenAddress(ip("127.0.0.1")))
        );
        assert_eq!(
            check_target("http://localhost:8080/hook", &loopback, true),
            Ok(())
        );
    }

    #[test]
    fn a_host_that_resolved_to_nothing_is_refused() {
        assert_eq!(
            check_target("https://example.com", &[], true),
            Err(TargetError::NoAddress)
        );
    }
}
