//! The index stage as both programs run it, pass by pass: which services
//! to ask, the fetched indexes put back in service order (services found
//! unreachable marked down, said once, reported; a side with none readable
//! ends the run with exit 3), and the split of a prefix into hash
//! sub-prefix passes that each fit `--index-budget`. keep-rsync (`run`) and
//! keep-block-check (`check`) share all of it; the fetching itself is
//! [`crate::index`]'s.

use std::sync::atomic::Ordering::Relaxed;

use crate::error::{Error, Result};
use crate::index::{Fetched, ServiceIndex, Target};
use crate::progress::{Level, Reporter};
use crate::report::Stats;
use crate::role::Role;
use crate::services::Side;

/// A pass split is estimated from an index probe of 1/16^PROBE_DIGITS of
/// the prefix.
pub const PROBE_DIGITS: usize = 3;

/// The probe's prefix for `prefix`, unless it is too long to probe (then it
/// is one pass).
pub fn probe_prefix(prefix: &str) -> Option<String> {
    (prefix.len() + PROBE_DIGITS <= 32).then(|| format!("{prefix}{}", "0".repeat(PROBE_DIGITS)))
}

/// The passes for `prefix` whose probe cost `probe_cost` budget lines, plus
/// `listed` lines known exactly (`--blocks-from`): `prefix` itself, or its
/// sub-prefixes when one pass would not fit `budget`.
pub fn split(prefix: &str, probe_cost: u64, listed: u64, budget: u64) -> Vec<String> {
    sub_prefixes(
        prefix,
        split_depth(estimate(probe_cost, listed), budget, 32 - prefix.len()),
    )
}

/// Budget lines for the whole prefix, from its probe's cost.
pub fn estimate(probe_cost: u64, listed: u64) -> u64 {
    probe_cost
        .saturating_mul(16u64.pow(PROBE_DIGITS as u32))
        .saturating_add(listed)
}

/// Smallest number of extra hex digits that brings `estimate` lines per pass
/// under `budget`.
pub fn split_depth(estimate: u64, budget: u64, max_depth: usize) -> usize {
    let mut depth = 0;
    let mut per_pass = estimate;
    while per_pass > budget && depth < max_depth.min(4) {
        per_pass /= 16;
        depth += 1;
    }
    depth
}

/// `prefix` extended by every combination of `depth` hex digits, in order.
pub fn sub_prefixes(prefix: &str, depth: usize) -> Vec<String> {
    let n = 16usize.pow(depth as u32);
    (0..n)
        .map(|i| {
            if depth == 0 {
                prefix.to_string()
            } else {
                format!("{prefix}{i:0depth$x}")
            }
        })
        .collect()
}

/// The listings to index: every listing ([`Side::listings`]: a store, or
/// one mount of a keepstore) of a non-gateway service of `sides` not marked
/// down (each would cost its full retries every pass), with (side, listing)
/// for each.
pub fn targets<'a>(sides: &[&'a Side]) -> (Vec<Target<'a>>, Vec<(usize, usize)>) {
    let mut targets = Vec::new();
    let mut refs = Vec::new();
    for (k, side) in sides.iter().enumerate() {
        for (l, listing) in side.listings.iter().enumerate() {
            let s = &side.services[listing.service as usize];
            if !s.store.readable() || s.is_down() {
                continue;
            }
            targets.push(Target {
                role: side.role,
                service: s,
                mount: listing.part.mount.as_deref(),
            });
            refs.push((k, l));
        }
    }
    (targets, refs)
}

/// Service `i` of `side` could not be read (`why`): one failed request;
/// marked down, so it is left out for the rest of the run (said once); and
/// listed in the report's unreachable services.
pub fn mark_down(side: &Side, i: usize, why: &str, stats: &Stats, reporter: &dyn Reporter) {
    let svc = &side.services[i];
    svc.stats.errors.fetch_add(1, Relaxed);
    if svc.mark_down_because(side.role, why) {
        let left_out = match side.role {
            Role::Source => "blocks only it holds are not copied",
            Role::Destination => "its copies are not counted and it gets no writes",
            Role::Cluster => "blocks only it holds count as missing",
        };
        reporter.log(
            Level::Warn,
            &format!(
                "{} service {}: {why}; it is left out for the rest of this run ({left_out})",
                side.role,
                svc.store.label(),
            ),
        );
    }
    stats.service_down(side.role, svc, why);
}

/// Put `fetched` (for `refs`, from [`targets`]) back in listing order for
/// each side. Unreachable services get empty lists, are marked down (later
/// passes and copies skip them; said once, here) and are reported; a side
/// with no readable service at all is an error (exit 3). `count_lines`: add
/// the lines to the run's index totals (not for a probe).
pub fn collect<const N: usize>(
    sides: &[&Side; N],
    fetched: Vec<Fetched>,
    refs: &[(usize, usize)],
    stats: &Stats,
    reporter: &dyn Reporter,
    count_lines: bool,
) -> Result<[Vec<ServiceIndex>; N]> {
    let mut out: [Vec<ServiceIndex>; N] = std::array::from_fn(|k| {
        (sides[k].listings.iter())
            .map(|_| ServiceIndex::default())
            .collect()
    });
    let mut down = Vec::new();
    for (f, &(k, l)) in fetched.into_iter().zip(refs) {
        let side = sides[k];
        let i = side.listings[l].service as usize;
        side.services[i].stats.requests.fetch_add(1, Relaxed);
        match f {
            Fetched::Index(ix) => {
                if count_lines {
                    stats.index_lines.fetch_add(ix.lines, Relaxed);
                    let own = &side.services[i].stats;
                    own.index_listed.fetch_add(ix.lines, Relaxed);
                    (own.index_blocks).fetch_add(ix.entries.len() as u64, Relaxed);
                }
                out[k][l] = ix;
            }
            Fetched::Down(why) => {
                mark_down(side, i, &why, stats, reporter);
                down.push((k, i));
            }
        }
    }
    // A keepstore down for one mount's index is down for all: none of its
    // listings count.
    for (k, i) in down {
        for (l, listing) in sides[k].listings.iter().enumerate() {
            if listing.service as usize == i {
                out[k][l] = ServiceIndex::default();
            }
        }
    }
    for side in sides.iter() {
        let readable = side
            .services
            .iter()
            .filter(|s| s.store.readable() && !s.is_down());
        if readable.count() == 0 {
            let nothing = side.role.nothing_done();
            let (what, check) = if side.is_volumes() {
                (
                    "volume",
                    "volumes are mounted (or their S3 servers up) and reachable",
                )
            } else {
                ("keep service", "services are up and reachable")
            };
            return Err(Error::unreadable(format!(
                "no {what} of the {} could be read: {}. {nothing}. Check that the {check} \
                 from this host.",
                side.role.cluster(),
                side.services
                    .iter()
                    .map(|s| s.store.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(out)
}

/// Run CPU-heavy work (planning a pass: seconds for millions of blocks)
/// without holding up an async worker: on a multi-thread runtime the worker
/// hands its other tasks to the rest first (`block_in_place`); elsewhere
/// (tests on a current-thread runtime) it just runs.
pub fn off_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_splitting() {
        assert_eq!(split_depth(0, 4_000_000, 32), 0);
        assert_eq!(split_depth(3_999_999, 4_000_000, 32), 0);
        assert_eq!(split_depth(38_000_000, 4_000_000, 32), 1);
        assert_eq!(split_depth(400_000_000, 4_000_000, 32), 2);
        assert_eq!(split_depth(u64::MAX, 4_000_000, 2), 2);
        assert_eq!(sub_prefixes("a", 0), vec!["a"]);
        let s = sub_prefixes("a", 2);
        assert_eq!(s.len(), 256);
        assert_eq!((s[0].as_str(), s[255].as_str()), ("a00", "aff"));
        assert_eq!(probe_prefix("ab").as_deref(), Some("ab000"));
        assert_eq!(probe_prefix(&"a".repeat(30)), None);
        // 1000 lines at the probe: 4.1 M for the prefix, over 4 M: 16 passes.
        assert_eq!(split("", 1000, 0, 4_000_000).len(), 16);
        assert_eq!(split("", 900, 0, 4_000_000).len(), 1);
        assert_eq!(split("", 900, 400_000, 4_000_000).len(), 16);
    }
}
