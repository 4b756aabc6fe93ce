//! Request budgets: a token bucket per key (`rate_limit.*`, or the key's own), and one
//! per client IP that only failed authentications drain (`rate_limit.auth_failures_per_min`).
//!
//! A bucket holds at most `requests` tokens and refills evenly, `requests` every
//! `per_secs` seconds; a request takes one token or is refused. A key or IP without a
//! bucket has a full one, so buckets that have refilled are dropped first when a map
//! reaches its bound: memory stays bounded however many keys or IPs appear.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use parking_lot::Mutex;

use crate::domain::RateLimit;

/// Most buckets one map keeps. A bucket is a few dozen bytes, so a full map of each kind
/// stays under a few MiB.
pub const MAX_BUCKETS: usize = 65_536;

/// Where a bucket stands after a request took, or failed to take, a token: what the
/// `X-RateLimit-*` and `Retry-After` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The bucket's size (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`X-RateLimit-Reset`).
    pub reset_secs: u64,
    /// `Some(seconds until one token is back)` when the request was refused.
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    capacity: f64,
    /// Tokens added per second.
    rate: f64,
}

impl Bucket {
    fn full(budget: RateLimit, now: Instant) -> Self {
        let capacity = f64::from(budget.requests);
        Self {
            tokens: capacity,
            at: now,
            capacity,
            rate: capacity / f64::from(budget.per_secs),
        }
    }

    /// The tokens the bucket holds at `now`.
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.capacity)
    }

    /// Seconds until the bucket holds `tokens`.
    fn secs_until(&self, tokens: f64) -> u64 {
        let missing = (tokens - self.tokens).max(0.0);
        // Whole seconds, rounded up: a client that waits this long finds the tokens.
        (missing / self.rate).ceil() as u64
    }

    fn standing(&self, refused: bool) -> Standing {
        Standing {
            limit: self.capacity as u32,
            remaining: self.tokens.floor() as u32,
            reset_secs: self.secs_until(self.capacity),
            retry_after_secs: refused.then(|| self.secs_until(1.0).max(1)),
        }
    }
}

/// The address a client's failed authentications count against: an IPv4 address
/// (also one mapped into IPv6), or an IPv6 address's /64 network, which one client
/// usually holds whole.
pub fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Token buckets by key (a key id, a client IP), at most [`MAX_BUCKETS`] of them.
pub struct Buckets<K> {
    map: Mutex<HashMap<K, Bucket>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new() -> Self {
        Self::with_max(MAX_BUCKETS)
    }

    fn with_max(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Takes one token from `key`'s bucket of size `budget`, if it has one.
    pub fn take(&self, key: &K, budget: RateLimit, now: Instant) -> Standing {
        let mut map = self.map.lock();
        if !map.contains_key(key) {
            make_room(&mut map, self.max, now);
            map.insert(key.clone(), Bucket::full(budget, now));
        }
        let Some(bucket) = map.get_mut(key) else {
            unreachable!("the bucket was just inserted");
        };
        // A key's budget never changes while the server runs (keys are not edited, the
        // configuration is read at start), so the bucket keeps the size it began with.
        bucket.tokens = bucket.tokens_at(now);
        bucket.at = now;
        let refused = bucket.tokens < 1.0;
        if !refused {
            bucket.tokens -= 1.0;
        }
        bucket.standing(refused)
    }

    /// `Some(seconds until one token is back)` when `key`'s bucket is empty at `now`.
    pub fn exhausted(&self, key: &K, now: Instant) -> Option<u64> {
        let map = self.map.lock();
        let bucket = map.get(key)?;
        let mut current = *bucket;
        current.tokens = bucket.tokens_at(now);
        (current.tokens < 1.0).then(|| current.secs_until(1.0).max(1))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl<K: Hash + Eq + Clone> Default for Buckets<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes room for one more bucket: drops every bucket that has refilled (it is the same
/// as none), and when none has, the fullest one, so the emptiest — the clients being
/// limited — are the last to go.
fn make_room<K: Hash + Eq + Clone>(map: &mut HashMap<K, Bucket>, max: usize, now: Instant) {
    if map.len() < max {
        return;
    }
    map.retain(|_, bucket| bucket.tokens_at(now) < bucket.capacity);
    if map.len() < max {
        return;
    }
    let fullest = map
        .iter()
        .map(|(key, bucket)| (key, bucket.tokens_at(now) / bucket.capacity))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(key, _)| key.clone());
    if let Some(key) = fullest {
        map.remove(&key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TEN_PER_10S: RateLimit = RateLimit {
        requests: 10,
        per_secs: 10,
    };

    #[test]
    fn a_bucket_allows_its_size_then_refuses_until_it_refills() {
        let buckets = Buckets::new();
        let t0 = Instant::now();
        for left in (0..10).rev() {
            let s = buckets.take(&"k", TEN_PER_10S, t0);
            assert_eq!((s.remaining, s.retry_after_secs), (left, None));
            assert_eq!(s.limit, 10);
        }
        let refused = buckets.take(&"k", TEN_PER_10S, t0);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 10);
        assert_eq!(buckets.exhausted(&"k", t0), Some(1));
        // One token per second comes back.
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(buckets.exhausted(&"k", later), None);
        let s = buckets.take(&"k", TEN_PER_10S, later);
        assert_eq!(
            (s.remaining, s.retry_after_secs, s.reset_secs),
            (1, None, 9)
        );
        // Other keys have their own.
        assert_eq!(buckets.take(&"other", TEN_PER_10S, t0).remaining, 9);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_bucket(a), client_bucket(b));
        assert_ne!(client_bucket(a), client_bucket(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_bucket(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_the_limited_clients() {
        let buckets = Buckets::with_max(100);
        let t0 = Instant::now();
        let one = RateLimit {
            requests: 1,
            per_secs: 60,
        };
        // Client 0 is limited: its one token is spent.
        buckets.take(&0u32, one, t0);
        assert!(buckets.take(&0u32, one, t0).retry_after_secs.is_some());
        // Thousands of others each take a token of a larger bucket.
        let big = RateLimit {
            requests: 100,
            per_secs: 60,
        };
        for client in 1..5_000u32 {
            buckets.take(&client, big, t0);
            assert!(buckets.len() <= 100);
        }
        assert!(
            buckets.exhausted(&0, t0).is_some(),
            "the limited client was kept"
        );
        // Once they have refilled, they are dropped wholesale.
        let later = t0 + Duration::from_secs(120);
        buckets.take(&9_999, big, later);
        assert_eq!(buckets.len(), 1);
    }
}
