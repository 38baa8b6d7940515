//! The per-client limit on fulfillment POSTs. Every token queued costs a ResolveCustomer call
//! from the seller's quota, so one client posting junk must not delay real buyers. A GCRA limiter
//! per client address (the `governor` crate): a burst of `per_minute`, refilled evenly.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::ClientAddressSource;

/// Requests per client address, in memory, per process.
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl ClientLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ClientLimiter<C> {
    pub fn with_clock(per_minute: u32, clock: C) -> Self {
        let burst = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        ClientLimiter {
            limiter: RateLimiter::dashmap_with_clock(Quota::per_minute(burst), clock.clone()),
            clock,
        }
    }

    /// `Err(wait)` when `client` is over its limit: how long until its next request is accepted.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client)
            .map(|_| ())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the state of clients that are back to a full allowance, so memory follows the
    /// clients of the last minute, not every client ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients with state held.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The address a request counts against. `forwarded_for` is every `X-Forwarded-For` header line,
/// in order (`None` for a line that is not text). Each proxy appends the address it saw, so the
/// last `trusted_proxies` entries were written by the proxies and the entry the outermost one
/// wrote is the client; the entries before it are whatever the client sent, never trusted. With
/// fewer entries than that (a request that did not come through every proxy), with none, or
/// with `trusted_proxies = 0`, the TCP peer counts (for `peer`, always).
pub fn client_address<'a>(
    source: ClientAddressSource,
    trusted_proxies: usize,
    forwarded_for: impl IntoIterator<Item = Option<&'a str>>,
    peer: IpAddr,
) -> IpAddr {
    if source == ClientAddressSource::Peer || trusted_proxies == 0 {
        return peer;
    }
    // A line that is not text is one entry nobody can read.
    let entries: Vec<Option<&str>> = forwarded_for
        .into_iter()
        .flat_map(|line| match line {
            Some(text) => text.split(',').map(|e| Some(e.trim())).collect::<Vec<_>>(),
            None => vec![None],
        })
        .collect();
    entries
        .len()
        .checked_sub(trusted_proxies)
        .and_then(|i| entries[i])
        .and_then(|entry| entry.parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// The key an address is limited under: an IPv4 address as it is, an IPv6 address by its /64
/// (one subscriber's network: a client given a /64 would otherwise have 2^64 allowances).
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    #[test]
    fn client_address_table() {
        use ClientAddressSource::{Peer, XForwardedFor};
        // (source, trusted proxies, header lines, expected)
        type Case<'a> = (ClientAddressSource, usize, &'a [Option<&'a str>], &'a str);
        let cases: &[Case] = &[
            (XForwardedFor, 1, &[Some("203.0.113.7")], "203.0.113.7"),
            // A client-sent entry first, the ALB's own last.
            (
                XForwardedFor,
                1,
                &[Some("1.2.3.4, 203.0.113.7")],
                "203.0.113.7",
            ),
            (
                XForwardedFor,
                1,
                &[Some("1.2.3.4,203.0.113.7 ")],
                "203.0.113.7",
            ),
            // The client sent its own header line; the ALB appended to the list: every line counts.
            (
                XForwardedFor,
                1,
                &[Some("1.2.3.4"), Some("203.0.113.7")],
                "203.0.113.7",
            ),
            (
                XForwardedFor,
                1,
                &[Some("1.2.3.4, 5.6.7.8"), Some("203.0.113.7")],
                "203.0.113.7",
            ),
            (
                XForwardedFor,
                1,
                &[None, Some("203.0.113.7")],
                "203.0.113.7",
            ),
            (XForwardedFor, 1, &[Some("2001:db8::1")], "2001:db8::1"),
            // CloudFront, then the ALB: the second entry from the right is the client.
            (
                XForwardedFor,
                2,
                &[Some("6.6.6.6, 203.0.113.7, 130.176.0.1")],
                "203.0.113.7",
            ),
            (
                XForwardedFor,
                2,
                &[Some("6.6.6.6"), Some("203.0.113.7, 130.176.0.1")],
                "203.0.113.7",
            ),
            // Fewer entries than proxies: not through every proxy, so nothing in it is trusted.
            (XForwardedFor, 2, &[Some("203.0.113.7")], "10.0.0.9"),
            (XForwardedFor, 0, &[Some("203.0.113.7")], "10.0.0.9"),
            (XForwardedFor, 1, &[Some("203.0.113.7, junk")], "10.0.0.9"),
            (XForwardedFor, 1, &[Some("203.0.113.7"), None], "10.0.0.9"),
            (XForwardedFor, 1, &[Some("")], "10.0.0.9"),
            (XForwardedFor, 1, &[], "10.0.0.9"),
            (Peer, 1, &[Some("203.0.113.7")], "10.0.0.9"),
        ];
        for (source, proxies, lines, expected) in cases {
            assert_eq!(
                client_address(*source, *proxies, lines.iter().copied(), PEER).to_string(),
                *expected,
                "{source:?} {proxies} {lines:?}"
            );
        }
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let key = |a: &str| limit_key(a.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn a_burst_then_refill_per_client() {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(3, clock.clone());
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(a), Ok(()));
        }
        // 3 a minute: one more every 20 s.
        let wait = limiter.check(a).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        assert_eq!(limiter.check(b), Ok(()), "another client is not limited");
        clock.advance(Duration::from_secs(19));
        assert_eq!(limiter.check(a).unwrap_err(), Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.check(a), Ok(()));
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(2, clock.clone());
        for i in 0..50u8 {
            let _ = limiter.check(IpAddr::from([198, 51, 100, i]));
        }
        assert_eq!(limiter.tracked(), 50);
        clock.advance(Duration::from_secs(61));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn retry_after_rounds_up() {
        for (wait_ms, secs) in [(0, 1), (1, 1), (1_000, 1), (1_001, 2), (20_000, 20)] {
            assert_eq!(retry_after_secs(Duration::from_millis(wait_ms)), secs);
        }
    }
}
