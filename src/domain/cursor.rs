//! Watch cursors: where a revocation watcher resumes, as an opaque string.
//!
//! A cursor records, for every event log (shard) the watch reads, the
//! sequence of the last event delivered from it, plus the store's shard
//! count: `v1.<shards>.<shard>-<sequence>.<shard>-<sequence>…`. Events are
//! ordered within a shard (so within an organization); a cursor resumes each
//! shard exactly after its last delivered event, on any replica.

use std::collections::BTreeMap;

use super::Error;

/// Longest cursor accepted (a store has at most 1024 shards).
pub const MAX_CURSOR: usize = 16 * 1024;

/// Positions by shard.
pub type Positions = BTreeMap<u16, u64>;

pub fn encode(shards: u16, positions: &Positions) -> String {
    use std::fmt::Write;
    // Made for every event delivered: one allocation.
    let mut out = String::with_capacity(8 + positions.len() * 16);
    let _ = write!(out, "v1.{shards}");
    for (shard, seq) in positions {
        let _ = write!(out, ".{shard}-{seq}");
    }
    out
}

/// Parses a cursor made by a store of `shards` shards.
pub fn decode(text: &str, shards: u16) -> Result<Positions, Error> {
    let bad = |why: &str| Error::invalid("after_cursor", why.to_owned());
    if text.len() > MAX_CURSOR {
        return Err(bad("longer than 16 KiB"));
    }
    let mut parts = text.split('.');
    if parts.next() != Some("v1") {
        return Err(bad("not a cursor of this service"));
    }
    let n: u16 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("malformed"))?;
    if n != shards {
        return Err(bad("made by a store with another shard count"));
    }
    let mut positions = Positions::new();
    for p in parts {
        let (shard, seq) = p
            .split_once('-')
            .and_then(|(s, q)| Some((s.parse::<u16>().ok()?, q.parse::<u64>().ok()?)))
            .ok_or_else(|| bad("malformed"))?;
        if shard >= shards || positions.insert(shard, seq).is_some() {
            return Err(bad("malformed"));
        }
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let p: Positions = [(0, 5), (3, 0), (15, 99)].into_iter().collect();
        assert_eq!(decode(&encode(16, &p), 16).unwrap(), p);
        for bad in [
            "",
            "v2.16",
            "v1.8.0-1",
            "v1.16.16-1",
            "v1.16.1-1.1-2",
            "v1.16.x",
        ] {
            assert!(decode(bad, 16).is_err(), "{bad}");
        }
        assert!(decode(&"v1.16".repeat(4000), 16).is_err());
    }
}
