//! Seeding clusters with random blocks: size ranges (`1K-16K`, `3M`), the
//! deterministic block generator, placement on the first R writable services
//! of each block's probe order, and the same over HTTP PUT for a running
//! `keepstore-sim` (the `seed` subcommand).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use keep_protocol::{probe_order, BlockHash, KeepService, MAX_BLOCK_SIZE};

/// An inclusive range of block sizes in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeRange {
    pub min: u64,
    pub max: u64,
}

use super::store::Data;
use keep_protocol::units::parse_size;

impl FromStr for SizeRange {
    type Err = String;
    /// `MIN-MAX` or `SIZE`, with K/M/G meaning KiB/MiB/GiB; at most 64 MiB.
    fn from_str(s: &str) -> Result<Self, String> {
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (parse_size(a)?, parse_size(b)?),
            None => {
                let n = parse_size(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("size range {s:?}: minimum is above maximum"));
        }
        if max > MAX_BLOCK_SIZE {
            return Err(format!("size range {s:?}: blocks are at most 64M"));
        }
        Ok(SizeRange { min, max })
    }
}

impl fmt::Display for SizeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Parse a comma-separated list of size ranges.
pub fn parse_size_list(s: &str) -> Result<Vec<SizeRange>, String> {
    let v: Vec<SizeRange> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err("no size ranges given".into());
    }
    Ok(v)
}

/// `n` blocks of random data, block k sized from `sizes[k % len]`;
/// the same `seed` gives the same blocks.
pub fn generate(n: usize, sizes: &[SizeRange], seed: u64) -> impl Iterator<Item = Bytes> + '_ {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(move |k| {
        let r = sizes
            .get(k % sizes.len().max(1))
            .copied()
            .unwrap_or(SizeRange { min: 0, max: 0 });
        let size = rng.gen_range(r.min..=r.max) as usize;
        let mut v = vec![0u8; size];
        rng.fill_bytes(&mut v);
        Bytes::from(v)
    })
}

/// `n` blocks of one size sharing all but their last 64–127 bytes: the head
/// is one buffer, hashed once; each block is that head plus its own tail.
/// Every size range must be the same single size.
pub fn generate_shared(
    n: usize,
    sizes: &[SizeRange],
    seed: u64,
) -> Result<impl Iterator<Item = (BlockHash, Data)>, String> {
    use md5::{Digest, Md5};
    let size = match sizes.first() {
        Some(r) if sizes.iter().all(|x| x.min == r.min && x.max == r.min) && r.min >= 64 => r.min,
        _ => {
            return Err(
                "shared data needs one block size of at least 64 bytes (e.g. --seed-sizes 64M)"
                    .into(),
            )
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The head is a whole number of MD5 blocks, so its digest state can be
    // cloned for every tail.
    let head_len = (size as usize - 64) / 64 * 64;
    let mut head = vec![0u8; head_len];
    rng.fill_bytes(&mut head);
    let mut state = Md5::new();
    state.update(&head);
    let head = Bytes::from(head);
    let tail_len = size as usize - head_len;
    Ok((0..n).map(move |_| {
        let mut tail = vec![0u8; tail_len];
        rng.fill_bytes(&mut tail);
        let h = BlockHash(state.clone().chain_update(&tail).finalize().into());
        (h, Data::Split(head.clone(), Bytes::from(tail)))
    }))
}

/// The first `replicas` writable services in `order`.
pub fn placement(order: &[usize], writable: &[bool], replicas: usize) -> Vec<usize> {
    order
        .iter()
        .copied()
        .filter(|&i| writable.get(i).copied().unwrap_or(false))
        .take(replicas)
        .collect()
}

/// Probe order of `hash` over `services`, as indices.
pub fn remote_probe_order(services: &[KeepService], hash: &BlockHash) -> Vec<usize> {
    let suffixes: Vec<&str> = services.iter().map(|s| s.weight_suffix()).collect();
    probe_order(hash, &suffixes)
}

/// Seed a running cluster over HTTP: each generated block is PUT on the
/// first `replicas` writable services of its probe order that accept it.
/// Returns `(hash, size, services that stored it)` per block.
pub async fn seed_over_http(
    services: &[KeepService],
    token: &str,
    n: usize,
    sizes: &[SizeRange],
    replicas: usize,
    seed: u64,
) -> Result<Vec<(BlockHash, u64, usize)>, String> {
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    for data in generate(n, sizes, seed) {
        let h = BlockHash::of(&data);
        let mut stored = 0;
        for i in remote_probe_order(services, &h) {
            if stored >= replicas {
                break;
            }
            let s = &services[i];
            if s.read_only {
                continue;
            }
            let resp = client
                .put(format!("{}/{}", s.url(), h))
                .bearer_auth(token)
                .header("X-Keep-Desired-Replicas", replicas.to_string())
                .body(data.clone())
                .send()
                .await;
            if matches!(resp, Ok(ref r) if r.status().is_success()) {
                stored += 1;
            }
        }
        if stored < replicas {
            return Err(format!(
                "block {h}+{}: stored {stored} of {replicas} replicas",
                data.len()
            ));
        }
        out.push((h, data.len() as u64, stored));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_blocks_hash_to_their_names() {
        let sizes = [SizeRange {
            min: 1000,
            max: 1000,
        }];
        let v: Vec<_> = generate_shared(5, &sizes, 1).unwrap().collect();
        for (h, d) in &v {
            assert_eq!(d.len(), 1000);
            assert_eq!(BlockHash::of(&d.to_bytes().unwrap()), *h);
        }
        assert!(v.windows(2).all(|w| w[0].0 != w[1].0));
        let mixed = [SizeRange { min: 10, max: 2000 }];
        assert!(generate_shared(1, &mixed, 1).is_err());
    }

    #[test]
    fn size_ranges() {
        assert_eq!(
            "1K-16K".parse::<SizeRange>().unwrap(),
            SizeRange {
                min: 1024,
                max: 16384
            }
        );
        assert_eq!(
            "3M".parse::<SizeRange>().unwrap(),
            SizeRange {
                min: 3 << 20,
                max: 3 << 20
            }
        );
        assert_eq!(
            "0-0".parse::<SizeRange>().unwrap(),
            SizeRange { min: 0, max: 0 }
        );
        assert_eq!("16M-64M".parse::<SizeRange>().unwrap().max, 64 << 20);
        assert!("65M".parse::<SizeRange>().is_err());
        assert!("2K-1K".parse::<SizeRange>().is_err());
        assert!("x".parse::<SizeRange>().is_err());
        assert_eq!(parse_size_list("1K-16K,3M").unwrap().len(), 2);
    }

    #[test]
    fn generation_is_deterministic() {
        let sizes = [SizeRange { min: 10, max: 100 }];
        let a: Vec<_> = generate(5, &sizes, 1).collect();
        let b: Vec<_> = generate(5, &sizes, 1).collect();
        let c: Vec<_> = generate(5, &sizes, 2).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|d| (10..=100).contains(&d.len())));
    }
}
