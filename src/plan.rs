//! The plan: which blocks to copy, where from, and how many replicas each
//! still needs. A pure function of the indexes: no I/O, table-tested.
//!
//! Both sides' per-service indexes arrive sorted, so the plan is a k-way
//! merge of the source lists joined against a k-way merge of the destination
//! lists, in one pass, holding nothing but the jobs it emits. Each source
//! block appears once however many source services hold it.
//!
//! The destination index is the checkpoint, and it counts replicas: a block
//! is done when at least `want` distinct writable destination services list
//! it (a keepproxy's listing counts as done, since it hides its keepstores).
//! A block no destination service lists is a `Copy`; one listed by fewer
//! than `want` writable services is a `TopUp`.
//!
//! With a block list (`--blocks-from`, [`PlanOptions::listed`]) the pass's
//! listed hashes are one more sorted input and drive the merge: only listed
//! blocks are planned; a listed block on the destination but on no source
//! is present; one on neither side is **lost** ([`Plan::lost`]). Without a
//! list the plan takes the plain merge, untouched.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::index::{Entry, ServiceIndex};
use crate::listed::sort::Listed;
use crate::protocol::BlockHash;
use crate::store::Ranking;
use crate::wants::{WantId, Wants, RUN_WANT};

/// Why a block is in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No destination service lists it.
    Copy,
    /// Some, but fewer than the wanted number of, writable services list it.
    TopUp,
    /// Fully replicated; read back and checked (`--verify-existing`).
    Verify,
}

/// One block to work on: 32 bytes, no heap allocation of its own. Its
/// holders live in the plan's shared list ([`Plan::sources`],
/// [`Plan::dst_holders`]), so a pass of millions of jobs is a few flat
/// vectors (docs/design.md, "Memory").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    pub hash: BlockHash,
    pub size: u32,
    pub action: Action,
    /// Replicas already counted at the destination (any class).
    pub replicas: u8,
    /// What the block's collections want ([`RUN_WANT`]: the run's own).
    pub want: WantId,
    /// Where this job's holders start in `Plan::holders`: first the source
    /// services, then the destination services.
    holders_at: u32,
    n_src: u16,
    n_dst: u16,
}

/// Memory one planned job costs, in index entries (20 bytes each): the
/// `Job` plus its holders (about 3 service numbers). The pass splitter counts
/// jobs against `--index-budget` with this weight.
pub const JOB_COST_ENTRIES: u64 = 2;

/// Counts and bytes of a plan, per action, per source service and per first
/// hex digit. Added up across sub-prefix passes.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PlanCounts {
    pub src_blocks: u64,
    pub src_bytes: u64,
    pub dst_blocks: u64,
    pub dst_bytes: u64,
    /// Source blocks already at the destination with enough replicas.
    pub present: u64,
    pub present_bytes: u64,
    pub to_copy: u64,
    pub to_copy_bytes: u64,
    pub to_top_up: u64,
    pub to_top_up_bytes: u64,
    pub to_verify: u64,
    pub to_verify_bytes: u64,
    /// `--blocks-from`: distinct listed blocks (under the prefix), and those
    /// of them on no source and no destination service. 0 without a list.
    pub listed: u64,
    pub lost: u64,
    /// Collection records: listed blocks on the destination only, with
    /// fewer copies than their collections want ([`Plan::short`]).
    pub under_replicated: u64,
    /// Source blocks that a destination listing holds under their hash but
    /// with another size (a file cut short by a crash): such a copy is not
    /// counted, and the write replaces it.
    pub dst_wrong_size: u64,
    /// Blocks to copy or top up, by the source service they will be read
    /// from first (source services order).
    pub per_source: Vec<BlocksBytes>,
    /// Blocks to copy or top up, by the first hex digit of their hash.
    pub per_digit: Vec<BlocksBytes>,
    /// With collection records: blocks to copy or top up by their wanted
    /// replication (the largest count of their classes), and by each class
    /// they want. Empty otherwise.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_replication: BTreeMap<u32, BlocksBytes>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<String, BlocksBytes>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlocksBytes {
    pub blocks: u64,
    pub bytes: u64,
}

impl BlocksBytes {
    fn add(&mut self, bytes: u64) {
        self.blocks += 1;
        self.bytes += bytes;
    }

    fn add_all(&mut self, o: &BlocksBytes) {
        self.blocks += o.blocks;
        self.bytes += o.bytes;
    }
}

impl PlanCounts {
    pub fn new(sources: usize) -> PlanCounts {
        PlanCounts {
            per_source: vec![BlocksBytes::default(); sources],
            per_digit: vec![BlocksBytes::default(); 16],
            ..Default::default()
        }
    }

    /// Blocks that need writing (copies and top-ups).
    pub fn to_write(&self) -> u64 {
        self.to_copy + self.to_top_up
    }

    pub fn to_write_bytes(&self) -> u64 {
        self.to_copy_bytes + self.to_top_up_bytes
    }

    /// Add another pass's counts.
    pub fn add(&mut self, o: &PlanCounts) {
        self.src_blocks += o.src_blocks;
        self.src_bytes += o.src_bytes;
        self.dst_blocks += o.dst_blocks;
        self.dst_bytes += o.dst_bytes;
        self.present += o.present;
        self.present_bytes += o.present_bytes;
        self.to_copy += o.to_copy;
        self.to_copy_bytes += o.to_copy_bytes;
        self.to_top_up += o.to_top_up;
        self.to_top_up_bytes += o.to_top_up_bytes;
        self.to_verify += o.to_verify;
        self.to_verify_bytes += o.to_verify_bytes;
        self.listed += o.listed;
        self.lost += o.lost;
        self.under_replicated += o.under_replicated;
        self.dst_wrong_size += o.dst_wrong_size;
        for (a, b) in self.per_source.iter_mut().zip(&o.per_source) {
            a.blocks += b.blocks;
            a.bytes += b.bytes;
        }
        for (a, b) in self.per_digit.iter_mut().zip(&o.per_digit) {
            a.blocks += b.blocks;
            a.bytes += b.bytes;
        }
        for (k, b) in &o.per_replication {
            self.per_replication.entry(*k).or_default().add_all(b);
        }
        for (k, b) in &o.per_class {
            self.per_class.entry(k.clone()).or_default().add_all(b);
        }
    }
}

/// A plan for one prefix (or sub-prefix pass).
#[derive(Default)]
pub struct Plan {
    /// In hash order.
    pub jobs: Vec<Job>,
    /// Every job's holders, back to back (see [`Job`]).
    holders: Vec<u16>,
    pub counts: PlanCounts,
    /// Listed blocks on no service of either side, in hash order (their
    /// size is [`crate::listed::UNKNOWN_SIZE`] when the list gave none).
    pub lost: Vec<Entry>,
    /// Collection records: listed blocks the destination holds fewer
    /// copies of than their collections want, with no source copy to top
    /// up from (keep-block-check's under-replicated blocks), in hash order.
    pub short: Vec<Short>,
}

/// A block under-replicated at the destination with no source to copy from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Short {
    pub entry: Entry,
    /// `(class, copies held, copies wanted)` of each class short of its count.
    pub classes: Vec<(String, u32, u32)>,
}

impl Plan {
    /// Source services holding the job's block, in source probe order: the
    /// first is where it is read.
    pub fn sources(&self, j: &Job) -> &[u16] {
        let at = j.holders_at as usize;
        &self.holders[at..at + j.n_src as usize]
    }

    /// Destination services listing the block (writable or not), in service order.
    pub fn dst_holders(&self, j: &Job) -> &[u16] {
        let at = j.holders_at as usize + j.n_src as usize;
        &self.holders[at..at + j.n_dst as usize]
    }

    /// Add a job, with its holders.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        hash: BlockHash,
        size: u32,
        action: Action,
        replicas: u32,
        want: WantId,
        src: impl Iterator<Item = u16>,
        dst: &[u16],
    ) {
        let at = self.holders.len();
        self.holders.extend(src);
        let n_src = self.holders.len() - at;
        self.holders.extend_from_slice(dst);
        self.jobs.push(Job {
            hash,
            size,
            action,
            replicas: replicas.min(u8::MAX as u32) as u8,
            want,
            holders_at: at as u32,
            n_src: n_src as u16,
            n_dst: dst.len() as u16,
        });
    }
}

/// Inputs that shape the plan besides the indexes.
#[derive(Clone, Copy)]
pub struct PlanOptions<'a> {
    /// How the source stores rank for a block: the first holder is read.
    pub src_rank: &'a Ranking,
    /// What each destination store's listing counts for (see
    /// `store::Store::credit`: 0 where nothing is written).
    pub dst_credits: &'a [u32],
    /// Replicas wanted at the destination.
    pub want: u32,
    /// Also emit `Verify` jobs for fully replicated blocks.
    pub verify_existing: bool,
    /// Build the jobs; `false` only counts (`--dry-run`, the pass probe).
    pub jobs: bool,
    /// Plan only these blocks (sorted, one entry per hash): `--blocks-from`.
    pub listed: Option<&'a [Listed]>,
    /// Collection records: what each listed block wants.
    pub per_block: Option<PerBlock<'a>>,
}

/// What deciding blocks by their own wants needs.
#[derive(Clone, Copy)]
pub struct PerBlock<'a> {
    pub wants: &'a Wants,
    /// Each destination store's classes, as a mask of `wants`' classes.
    pub dst_classes: &'a [u64],
    /// What each destination store's listing counts for, a keepproxy's
    /// listing counting as complete (`Side::credits(MAX_REPLICATION)`).
    pub dst_credits: &'a [u32],
    /// The destination's default replication (for null `replication_desired`).
    pub default: u32,
    /// `-replications N`: every class's count.
    pub replications: Option<u32>,
}

impl PerBlock<'_> {
    /// Whether the stores in `listed` hold every class of `want` its count
    /// of times.
    pub fn satisfied(&self, want: WantId, listed: &[u16]) -> bool {
        self.wants
            .resolve(want, self.default, self.replications)
            .all(|(class, n)| {
                class_replicas(listed, self.dst_credits, self.dst_classes, class) >= n
            })
    }
}

impl PerBlock<'_> {
    /// The classes of `want` the stores in `listed` hold too few copies in.
    pub fn short(&self, hash: BlockHash, size: u32, want: WantId, listed: &[u16]) -> Short {
        let mut classes: Vec<(String, u32, u32)> =
            (self.wants.resolve(want, self.default, self.replications))
                .filter_map(|(class, n)| {
                    let have = class_replicas(listed, self.dst_credits, self.dst_classes, class);
                    (have < n).then(|| (self.wants.names()[class as usize].clone(), have, n))
                })
                .collect();
        classes.sort();
        Short {
            entry: Entry { hash, size },
            classes,
        }
    }
}

/// Replicas of one class at the destination: the credits of the stores
/// listing the block that hold the class.
pub fn class_replicas(listed: &[u16], credits: &[u32], classes: &[u64], class: u8) -> u32 {
    listed
        .iter()
        .filter(|&&i| {
            classes
                .get(i as usize)
                .is_none_or(|m| m & (1 << class) != 0)
        })
        .map(|&i| credits[i as usize])
        .sum()
}

/// A hash as a number: it orders as the hash does, and compares in two
/// machine words instead of a 16-byte `memcmp`.
#[inline]
fn key(e: &Entry) -> u128 {
    u128::from_be_bytes(e.hash.0)
}

#[inline]
fn lkey(e: &Listed) -> u128 {
    u128::from_be_bytes(e.hash.0)
}

/// Up to this many lists, [`Merge`] finds the next hash by looking at every
/// list's head (a few word compares each, no heap upkeep); beyond it, with a
/// binary heap (log k per entry).
const LINEAR_MERGE_MAX: usize = 16;

/// Merge sorted, deduplicated per-service lists, yielding each hash once with
/// its size (from the lowest-numbered holder) and the services that list it
/// (ascending).
struct Merge<'a> {
    /// Each list's head key and what is left of it. An exhausted list has
    /// key `u128::MAX` and nothing left (a real hash may have that key too,
    /// so emptiness is what counts).
    cur: Vec<Cursor<'a>>,
    /// The size each holder of the last hash lists (parallel to holders).
    sizes: Vec<u32>,
    /// Heap strategy: (head key, list), smallest first.
    heap: Option<BinaryHeap<Reverse<(u128, u16)>>>,
}

struct Cursor<'a> {
    key: u128,
    rest: &'a [Entry],
}

impl<'a> Merge<'a> {
    fn new(lists: &[&'a [Entry]]) -> Merge<'a> {
        Self::with_strategy(lists, lists.len() > LINEAR_MERGE_MAX)
    }

    fn with_strategy(lists: &[&'a [Entry]], heap: bool) -> Merge<'a> {
        let cur: Vec<Cursor> = lists
            .iter()
            .map(|&l| Cursor {
                key: l.first().map_or(u128::MAX, key),
                rest: l,
            })
            .collect();
        let heap = heap.then(|| {
            (cur.iter().enumerate())
                .filter(|(_, c)| !c.rest.is_empty())
                .map(|(i, c)| Reverse((c.key, i as u16)))
                .collect()
        });
        Merge {
            cur,
            heap,
            sizes: Vec::new(),
        }
    }

    /// Next hash (as its key and entry) and its holders (ascending).
    #[inline]
    fn next(&mut self, holders: &mut Vec<u16>) -> Option<(u128, Entry)> {
        holders.clear();
        self.sizes.clear();
        if self.heap.is_some() {
            return self.next_heap(holders);
        }
        let min = self.cur.iter().fold(u128::MAX, |m, c| m.min(c.key));
        let mut first: Option<Entry> = None;
        for (i, c) in self.cur.iter_mut().enumerate() {
            if c.key != min {
                continue;
            }
            if let Some((e, rest)) = c.rest.split_first() {
                first.get_or_insert(*e);
                holders.push(i as u16);
                self.sizes.push(e.size);
                c.rest = rest;
                c.key = rest.first().map_or(u128::MAX, key);
            }
        }
        first.map(|e| (min, e))
    }

    fn next_heap(&mut self, holders: &mut Vec<u16>) -> Option<(u128, Entry)> {
        let heap = self.heap.as_mut()?;
        let Reverse((min, _)) = *heap.peek()?;
        let mut first = None;
        while let Some(&Reverse((k, svc))) = heap.peek() {
            if k != min {
                break;
            }
            heap.pop();
            let c = &mut self.cur[svc as usize];
            first.get_or_insert(c.rest[0]);
            holders.push(svc);
            self.sizes.push(c.rest[0].size);
            c.rest = &c.rest[1..];
            if let Some(e) = c.rest.first() {
                heap.push(Reverse((key(e), svc)));
            }
        }
        // Equal keys pop in service order: holders come out ascending and
        // the size is the lowest-numbered holder's, as in the linear merge.
        first.map(|e| (min, e))
    }
}

/// The destination listings of a block of `size`: `holders` (from a
/// merge, with their listed `sizes`) less those that list another size. A
/// copy of the wrong size is no copy (the Go tool compares `hash+size`):
/// when there is one, it is counted and `scratch` holds the rest.
#[inline]
fn same_size<'h>(
    holders: &'h [u16],
    sizes: &[u32],
    size: u32,
    scratch: &'h mut Vec<u16>,
    counts: &mut PlanCounts,
) -> &'h [u16] {
    if sizes.iter().all(|&z| z == size) {
        return holders;
    }
    counts.dst_wrong_size += 1;
    scratch.clear();
    scratch.extend(
        (holders.iter().zip(sizes))
            .filter(|&(_, &z)| z == size)
            .map(|(&h, _)| h),
    );
    scratch
}

/// Below this many index entries a pass is planned on one thread.
const PARALLEL_MIN_ENTRIES: usize = 1 << 16;

/// Diff the indexes of one prefix into jobs and counts.
///
/// A big pass is planned in two halves of the hash range at once (a scoped
/// thread for the lower half): the halves' jobs, in hash order, and counts
/// add up to exactly the one-pass plan (unit test `halves_add_up`). While a
/// pass is planned nothing else runs, so this uses the otherwise idle core.
pub fn plan(src: &[ServiceIndex], dst: &[ServiceIndex], opts: &PlanOptions<'_>) -> Plan {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    plan_split(src, dst, opts, threads > 1, PARALLEL_MIN_ENTRIES)
}

fn plan_split(
    src: &[ServiceIndex],
    dst: &[ServiceIndex],
    opts: &PlanOptions<'_>,
    parallel: bool,
    min_entries: usize,
) -> Plan {
    let s: Vec<&[Entry]> = src.iter().map(|l| &l.entries[..]).collect();
    let d: Vec<&[Entry]> = dst.iter().map(|l| &l.entries[..]).collect();
    let listed = opts.listed.unwrap_or(&[]);
    let all = || s.iter().chain(&d);
    let longest = all().copied().max_by_key(|l| l.len());
    let total: usize = all().map(|l| l.len()).sum::<usize>() + listed.len();
    // Every list is cut at the middle hash of the longest one.
    let split = match longest {
        Some(l) if l.len() >= listed.len() && !l.is_empty() => Some(key(&l[l.len() / 2])),
        _ if !listed.is_empty() => Some(lkey(&listed[listed.len() / 2])),
        _ => None,
    };
    let Some(split) = split.filter(|_| parallel && total >= min_entries) else {
        return plan_lists(&s, &d, opts);
    };
    fn cut<'a>(lists: &[&'a [Entry]], split: u128) -> (Vec<&'a [Entry]>, Vec<&'a [Entry]>) {
        lists
            .iter()
            .map(|l| l.split_at(l.partition_point(|e| key(e) < split)))
            .unzip()
    }
    let ((s_lo, s_hi), (d_lo, d_hi)) = (cut(&s, split), cut(&d, split));
    let (opts_lo, opts_hi) = match opts.listed {
        None => (*opts, *opts),
        Some(l) => {
            let (lo, hi) = l.split_at(l.partition_point(|e| lkey(e) < split));
            (
                PlanOptions {
                    listed: Some(lo),
                    ..*opts
                },
                PlanOptions {
                    listed: Some(hi),
                    ..*opts
                },
            )
        }
    };
    let (mut lo, hi) = std::thread::scope(|scope| {
        let lower = scope.spawn(|| plan_lists(&s_lo, &d_lo, &opts_lo));
        let hi = plan_lists(&s_hi, &d_hi, &opts_hi);
        let lo = lower
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (lo, hi)
    });
    lo.append(hi);
    lo
}

impl Plan {
    /// Add the plan of the hashes after this one's.
    fn append(&mut self, later: Plan) {
        let base = self.holders.len() as u32;
        self.holders.extend_from_slice(&later.holders);
        self.jobs.extend(later.jobs.iter().map(|j| Job {
            holders_at: j.holders_at + base,
            ..*j
        }));
        self.counts.add(&later.counts);
        self.lost.extend_from_slice(&later.lost);
        self.short.extend(later.short);
    }
}

/// What deciding one block needs, shared by the plain and the listed merge.
struct Decide<'o, 'a> {
    opts: &'o PlanOptions<'a>,
    order: Vec<u16>,
    scratch: Vec<([u8; 16], u16)>,
    /// Collection records: blocks to write by wanted replication (index)
    /// and by class number.
    per_replication: Vec<BlocksBytes>,
    per_class: Vec<BlocksBytes>,
}

impl<'o, 'a> Decide<'o, 'a> {
    fn new(opts: &'o PlanOptions<'a>) -> Self {
        Decide {
            opts,
            order: Vec::new(),
            scratch: Vec::new(),
            per_replication: Vec::new(),
            per_class: Vec::new(),
        }
    }

    /// Decide a block held by source services `src` (ascending; empty only
    /// for a listed block that is on the destination alone) and listed by
    /// destination services `listed`, wanting `want`, and count it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        out: &mut Plan,
        counts: &mut PlanCounts,
        hash: BlockHash,
        size: u32,
        want: WantId,
        src: &[u16],
        listed: &[u16],
    ) {
        let opts = self.opts;
        let replicas = count_replicas(listed, opts.dst_credits);
        let per_block = opts.per_block.filter(|_| want != RUN_WANT);
        let short = match &per_block {
            None => replicas < opts.want,
            Some(p) => !p.satisfied(want, listed),
        };
        let size64 = size as u64;
        let action = if listed.is_empty() {
            counts.to_copy += 1;
            counts.to_copy_bytes += size64;
            Action::Copy
        } else if short && !src.is_empty() {
            counts.to_top_up += 1;
            counts.to_top_up_bytes += size64;
            Action::TopUp
        } else {
            // Enough replicas, or (a listed block on the destination only)
            // no source to top up from: present.
            if short {
                if let Some(p) = &per_block {
                    counts.under_replicated += 1;
                    out.short.push(p.short(hash, size, want, listed));
                }
            }
            counts.present += 1;
            counts.present_bytes += size64;
            if !opts.verify_existing {
                return;
            }
            counts.to_verify += 1;
            counts.to_verify_bytes += size64;
            Action::Verify
        };
        // Source holders in probe order: the first is where the block is read.
        (opts.src_rank).order_among(&hash, src, &mut self.scratch, &mut self.order);
        if action != Action::Verify {
            if let Some(&first) = self.order.first() {
                counts.per_source[first as usize].add(size64);
            }
            counts.per_digit[hash.first_digit() as usize].add(size64);
            if let Some(p) = &per_block {
                let most = p.wants.most(want, p.default, p.replications) as usize;
                if self.per_replication.len() <= most {
                    self.per_replication
                        .resize(most + 1, BlocksBytes::default());
                }
                self.per_replication[most].add(size64);
                for (class, _) in p.wants.resolve(want, p.default, p.replications) {
                    let c = class as usize;
                    if self.per_class.len() <= c {
                        self.per_class.resize(c + 1, BlocksBytes::default());
                    }
                    self.per_class[c].add(size64);
                }
            }
        }
        if opts.jobs {
            out.push(
                hash,
                size,
                action,
                replicas,
                want,
                self.order.iter().copied(),
                listed,
            );
        }
    }

    /// Move the per-want counts into `counts`, by name.
    fn finish(self, counts: &mut PlanCounts) {
        for (n, b) in self.per_replication.iter().enumerate() {
            if b.blocks > 0 {
                counts
                    .per_replication
                    .entry(n as u32)
                    .or_default()
                    .add_all(b);
            }
        }
        if let Some(p) = &self.opts.per_block {
            for (c, b) in self.per_class.iter().enumerate() {
                if b.blocks > 0 {
                    let name = p.wants.names().get(c).cloned().unwrap_or_default();
                    counts.per_class.entry(name).or_default().add_all(b);
                }
            }
        }
    }
}

/// Plan sorted, deduplicated per-service lists of one hash range.
fn plan_lists(src: &[&[Entry]], dst: &[&[Entry]], opts: &PlanOptions<'_>) -> Plan {
    if let Some(listed) = opts.listed {
        return plan_listed(src, dst, listed, opts);
    }
    let mut decide = Decide::new(opts);
    let mut counts = PlanCounts::new(opts.src_rank.len());
    let mut out = Plan::default();
    let mut sm = Merge::new(src);
    let mut dm = Merge::new(dst);
    let (mut sh, mut dh, mut same) = (Vec::new(), Vec::new(), Vec::new());
    let mut d_cur = dm.next(&mut dh);
    if let Some((_, e)) = d_cur {
        counts.dst_blocks += 1;
        counts.dst_bytes += e.size as u64;
    }
    while let Some((s_key, se)) = sm.next(&mut sh) {
        counts.src_blocks += 1;
        counts.src_bytes += se.size as u64;
        // Advance the destination merge up to this hash.
        while let Some((d_key, _)) = d_cur {
            if d_key >= s_key {
                break;
            }
            d_cur = dm.next(&mut dh);
            if let Some((_, e)) = d_cur {
                counts.dst_blocks += 1;
                counts.dst_bytes += e.size as u64;
            }
        }
        let listed: &[u16] = match d_cur {
            Some((d_key, _)) if d_key == s_key => {
                same_size(&dh, &dm.sizes, se.size, &mut same, &mut counts)
            }
            _ => &[],
        };
        decide.block(
            &mut out,
            &mut counts,
            se.hash,
            se.size,
            RUN_WANT,
            &sh,
            listed,
        );
    }
    // Count the destination-only blocks left after the last source hash.
    while d_cur.is_some() {
        d_cur = dm.next(&mut dh);
        if let Some((_, e)) = d_cur {
            counts.dst_blocks += 1;
            counts.dst_bytes += e.size as u64;
        }
    }
    decide.finish(&mut counts);
    out.counts = counts;
    out
}

/// Plan only the `listed` blocks (sorted, one per hash): the listed hashes
/// drive the merge; both sides' merges advance to each of them (still
/// counting every block they list). A listed block on neither side is lost.
fn plan_listed(
    src: &[&[Entry]],
    dst: &[&[Entry]],
    listed: &[Listed],
    opts: &PlanOptions<'_>,
) -> Plan {
    let mut decide = Decide::new(opts);
    let mut counts = PlanCounts::new(opts.src_rank.len());
    let mut out = Plan::default();
    let mut sm = Merge::new(src);
    let mut dm = Merge::new(dst);
    let (mut sh, mut dh, mut same) = (Vec::new(), Vec::new(), Vec::new());
    /// Next entry of a merge, counted as one distinct block of its side.
    fn advance(
        m: &mut Merge<'_>,
        holders: &mut Vec<u16>,
        blocks: &mut u64,
        bytes: &mut u64,
    ) -> Option<(u128, Entry)> {
        let next = m.next(holders);
        if let Some((_, e)) = next {
            *blocks += 1;
            *bytes += e.size as u64;
        }
        next
    }
    let mut s_cur = advance(
        &mut sm,
        &mut sh,
        &mut counts.src_blocks,
        &mut counts.src_bytes,
    );
    let mut d_cur = advance(
        &mut dm,
        &mut dh,
        &mut counts.dst_blocks,
        &mut counts.dst_bytes,
    );
    for l in listed {
        let k = lkey(l);
        counts.listed += 1;
        while s_cur.is_some_and(|(sk, _)| sk < k) {
            s_cur = advance(
                &mut sm,
                &mut sh,
                &mut counts.src_blocks,
                &mut counts.src_bytes,
            );
        }
        while d_cur.is_some_and(|(dk, _)| dk < k) {
            d_cur = advance(
                &mut dm,
                &mut dh,
                &mut counts.dst_blocks,
                &mut counts.dst_bytes,
            );
        }
        let on_src = s_cur.filter(|&(sk, _)| sk == k);
        let on_dst = d_cur.filter(|&(dk, _)| dk == k);
        match (on_src, on_dst) {
            (Some((_, se)), _) => {
                let listed: &[u16] = if on_dst.is_some() {
                    same_size(&dh, &dm.sizes, se.size, &mut same, &mut counts)
                } else {
                    &[]
                };
                decide.block(&mut out, &mut counts, se.hash, se.size, l.want, &sh, listed);
            }
            (None, Some((_, de))) => {
                decide.block(&mut out, &mut counts, de.hash, de.size, l.want, &[], &dh);
            }
            (None, None) => {
                counts.lost += 1;
                out.lost.push(l.entry());
            }
        }
    }
    while s_cur.is_some() {
        s_cur = advance(
            &mut sm,
            &mut sh,
            &mut counts.src_blocks,
            &mut counts.src_bytes,
        );
    }
    while d_cur.is_some() {
        d_cur = advance(
            &mut dm,
            &mut dh,
            &mut counts.dst_blocks,
            &mut counts.dst_bytes,
        );
    }
    decide.finish(&mut counts);
    out.counts = counts;
    out
}

/// Replicas at the destination: the credits of the stores listing the block
/// (a writable keepstore 1, a keepproxy the wanted count, a volume its
/// `Replication`, a read-only store 0).
pub fn count_replicas(listed: &[u16], credits: &[u32]) -> u32 {
    listed.iter().map(|&i| credits[i as usize]).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::probe_order;

    /// Source services 0..n ranked by their uuids.
    fn rank(n: usize) -> Ranking {
        Ranking::services((0..n).map(|j| format!("{j:015x}")).collect())
    }

    /// Destination credits: 1 each, 0 for the read-only ones.
    fn credits(n: usize, read_only: impl Fn(usize) -> bool) -> Vec<u32> {
        (0..n).map(|j| u32::from(!read_only(j))).collect()
    }

    fn h(n: u8) -> BlockHash {
        BlockHash([n; 16])
    }

    fn idx(hashes: &[u8]) -> ServiceIndex {
        let mut entries: Vec<Entry> = hashes
            .iter()
            .map(|&n| Entry {
                hash: h(n),
                size: n as u32 * 10,
            })
            .collect();
        entries.sort();
        ServiceIndex {
            lines: entries.len() as u64,
            entries,
        }
    }

    /// A destination copy listed with another size than the source's (a
    /// file cut short) is not a copy: the block is planned as if that
    /// listing did not have it, and the finding is counted. Both merges
    /// (linear and heap) and the listed merge agree.
    #[test]
    fn wrong_size_copies_are_not_replicas() {
        let cut = |mut ix: ServiceIndex, n: u8| {
            for e in &mut ix.entries {
                if e.hash == h(n) {
                    e.size -= 1;
                }
            }
            ix
        };
        // Block 1 only on a cut-short copy: a Copy. Block 2 on one good and
        // one cut copy: a TopUp from the good one. Block 3 whole twice.
        let src = || vec![idx(&[1, 2, 3])];
        let dst = || vec![cut(idx(&[1, 2, 3]), 1), cut(idx(&[2, 3]), 2)];
        let p = run(src(), dst(), &[], 2, false);
        let acts: Vec<(u8, Action, u8)> = p
            .jobs
            .iter()
            .map(|j| (j.hash.0[0], j.action, j.replicas))
            .collect();
        assert_eq!(acts, [(1, Action::Copy, 0), (2, Action::TopUp, 1)]);
        assert_eq!(p.dst_holders(&p.jobs[1]), [0]);
        assert_eq!(p.counts.dst_wrong_size, 2);
        assert_eq!(p.counts.present, 1);
        // Twenty destination lists: the heap merge.
        let mut many: Vec<ServiceIndex> = (0..18).map(|_| idx(&[])).collect();
        many.extend(dst());
        let p = run(src(), many, &[], 2, false);
        assert_eq!(p.counts.dst_wrong_size, 2);
        assert_eq!(p.counts.to_copy, 1);
        assert_eq!(p.counts.to_top_up, 1);
    }

    fn run(
        src: Vec<ServiceIndex>,
        dst: Vec<ServiceIndex>,
        dst_ro: &[usize],
        want: u32,
        verify: bool,
    ) -> Plan {
        let ss = rank(src.len());
        let ds = credits(dst.len(), |j| dst_ro.contains(&j));
        plan(
            &src,
            &dst,
            &PlanOptions {
                src_rank: &ss,
                dst_credits: &ds,
                want,
                verify_existing: verify,
                jobs: true,
                listed: None,
                per_block: None,
            },
        )
    }

    #[test]
    fn each_block_once_with_all_holders() {
        let p = run(
            vec![idx(&[1, 2, 3]), idx(&[2, 3, 4]), idx(&[])],
            vec![idx(&[])],
            &[],
            1,
            false,
        );
        let hashes: Vec<_> = p.jobs.iter().map(|j| j.hash).collect();
        assert_eq!(hashes, vec![h(1), h(2), h(3), h(4)]);
        let mut s2 = p.sources(&p.jobs[1]).to_vec();
        s2.sort();
        assert_eq!(s2, vec![0, 1]);
        assert_eq!(p.counts.src_blocks, 4);
        assert_eq!(p.counts.to_copy, 4);
        assert_eq!(p.counts.to_copy_bytes, 100);
        assert_eq!(p.counts.per_source.iter().map(|b| b.blocks).sum::<u64>(), 4);
        assert_eq!(p.counts.per_digit[0].blocks, 4); // 0x01.., 0x02.. all start with digit 0
    }

    #[test]
    fn replicas_counted_on_writable_services_only() {
        // dst0 and dst1 writable, dst2 read-only.
        let p = run(
            vec![idx(&[1, 2, 3, 4, 5])],
            vec![idx(&[1, 2, 9]), idx(&[1, 3]), idx(&[4, 1])],
            &[2],
            2,
            false,
        );
        let by: Vec<(u8, Action, u32)> = p
            .jobs
            .iter()
            .map(|j| (j.hash.0[0], j.action, j.replicas as u32))
            .collect();
        // 1: on dst0+dst1 → done. 2: one → top up. 3: one → top up.
        // 4: only on read-only → top up with 0 counted. 5: nowhere → copy.
        assert_eq!(
            by,
            vec![
                (2, Action::TopUp, 1),
                (3, Action::TopUp, 1),
                (4, Action::TopUp, 0),
                (5, Action::Copy, 0)
            ]
        );
        assert_eq!(p.counts.present, 1);
        assert_eq!(p.counts.to_top_up, 3);
        assert_eq!(p.counts.to_copy, 1);
        assert_eq!(p.counts.dst_blocks, 5); // 1,2,3,4,9
    }

    #[test]
    fn empty_sides_and_verify() {
        let p = run(vec![idx(&[])], vec![idx(&[1])], &[], 1, false);
        assert!(p.jobs.is_empty());
        assert_eq!(p.counts.dst_blocks, 1);
        let p = run(vec![idx(&[1, 2])], vec![idx(&[1])], &[], 1, true);
        assert_eq!(
            p.jobs.iter().map(|j| j.action).collect::<Vec<_>>(),
            vec![Action::Verify, Action::Copy]
        );
        assert_eq!(p.counts.to_verify, 1);
        assert_eq!(p.counts.present, 1);
    }

    /// A service's index of `entries`: sorted, one entry per hash.
    fn index_of(mut entries: Vec<Entry>) -> ServiceIndex {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.hash);
        ServiceIndex {
            lines: entries.len() as u64,
            entries,
        }
    }

    /// Both merge strategies give what a map from hash to (first size,
    /// holders) gives, for 1 to 20 lists of random overlapping hashes.
    #[test]
    fn merges_agree() {
        let mut rng =
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut rnd = move || rand::Rng::gen::<u64>(&mut rng);
        for k in 1..=20usize {
            let lists: Vec<ServiceIndex> = (0..k)
                .map(|_| {
                    let n = (rnd() % 300) as usize;
                    let entries: Vec<Entry> = (0..n)
                        .map(|_| {
                            let mut hash = [0u8; 16];
                            // Few distinct first bytes: many shared hashes.
                            hash[0] = (rnd() % 4) as u8 * 0x55;
                            hash[15] = (rnd() % 256) as u8;
                            Entry {
                                hash: BlockHash(hash),
                                size: (rnd() % 1000) as u32,
                            }
                        })
                        .collect();
                    index_of(entries)
                })
                .collect();
            let mut want = std::collections::BTreeMap::new();
            for (i, l) in lists.iter().enumerate() {
                for e in &l.entries {
                    let v = want.entry(e.hash).or_insert((e.size, Vec::new()));
                    v.1.push(i as u16);
                }
            }
            let want: Vec<_> = want.into_iter().map(|(h, (s, v))| (h, s, v)).collect();
            for heap in [false, true] {
                let slices: Vec<&[Entry]> = lists.iter().map(|l| &l.entries[..]).collect();
                let mut m = Merge::with_strategy(&slices, heap);
                let mut got = Vec::new();
                let mut holders = Vec::new();
                while let Some((k, e)) = m.next(&mut holders) {
                    assert_eq!(k, key(&e));
                    got.push((e.hash, e.size, holders.clone()));
                }
                assert_eq!(got, want, "{k} lists, heap {heap}");
            }
        }
    }

    /// A plan made in two halves on two threads is the one-thread plan:
    /// same jobs (with their holders) in the same order, same counts.
    #[test]
    fn halves_add_up() {
        let mut rng =
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut rnd = move || rand::Rng::gen::<u64>(&mut rng);
        let mut list = |n: usize, m: u64| {
            let entries: Vec<Entry> = (0..n)
                .map(|_| {
                    let mut hash = [0u8; 16];
                    hash[0] = (rnd() % m) as u8;
                    hash[1] = (rnd() % 3) as u8;
                    Entry {
                        hash: BlockHash(hash),
                        size: (rnd() % 100) as u32,
                    }
                })
                .collect();
            index_of(entries)
        };
        for (n_src, n_dst, m) in [
            (4, 4, 256),
            (3, 5, 40),
            (1, 1, 7),
            (20, 2, 256),
            (2, 0, 256),
        ] {
            let src: Vec<_> = (0..n_src).map(|_| list(300, m)).collect();
            let dst: Vec<_> = (0..n_dst).map(|_| list(200, m)).collect();
            let ss = rank(n_src);
            let ds = credits(n_dst, |j| j == 1);
            for verify in [false, true] {
                let opts = PlanOptions {
                    src_rank: &ss,
                    dst_credits: &ds,
                    want: 2,
                    verify_existing: verify,
                    jobs: true,
                    listed: None,
                    per_block: None,
                };
                let one = plan_split(&src, &dst, &opts, false, 0);
                let two = plan_split(&src, &dst, &opts, true, 0);
                assert!(one.jobs.len() > 10 || m < 256, "{n_src} {n_dst} {m}");
                assert_eq!(one.jobs, two.jobs);
                assert_eq!(one.holders, two.holders);
                assert_eq!(one.counts, two.counts);
            }
        }
        // Empty sides, and the threshold.
        let opts = PlanOptions {
            src_rank: &rank(0),
            dst_credits: &[],
            want: 1,
            verify_existing: false,
            jobs: true,
            listed: None,
            per_block: None,
        };
        assert!(plan_split(&[], &[], &opts, true, 0).jobs.is_empty());
    }

    fn listed(hashes: &[u8]) -> Vec<Entry> {
        let mut v: Vec<Entry> = hashes
            .iter()
            .map(|&n| Entry {
                hash: h(n),
                size: crate::listed::UNKNOWN_SIZE,
            })
            .collect();
        v.sort();
        v.dedup_by_key(|e| e.hash);
        v
    }

    fn run_listed(
        src: &[ServiceIndex],
        dst: &[ServiceIndex],
        list: &[Entry],
        verify: bool,
        parallel: bool,
    ) -> Plan {
        let ss = rank(src.len());
        let ds = credits(dst.len(), |_| false);
        let list: Vec<Listed> = list
            .iter()
            .map(|e| Listed {
                hash: e.hash,
                size: e.size,
                want: RUN_WANT,
            })
            .collect();
        let opts = PlanOptions {
            src_rank: &ss,
            dst_credits: &ds,
            want: 2,
            verify_existing: verify,
            jobs: true,
            listed: Some(&list),
            per_block: None,
        };
        plan_split(src, dst, &opts, parallel, 0)
    }

    /// Only listed blocks are planned: present (enough replicas, or on the
    /// destination alone), copied, topped up or lost.
    #[test]
    fn a_list_restricts_the_plan_and_finds_lost_blocks() {
        // Source: 1..=6. Destination: 1 twice (done), 2 once (top up), 7
        // and 8 only there (8 once: present anyway, nothing to top up from).
        let src = vec![idx(&[1, 2, 3, 4]), idx(&[3, 5, 6])];
        let dst = vec![idx(&[1, 2, 7, 8]), idx(&[1, 7])];
        // Listed: 1 2 3 5 7 8, and 9 10 on neither side. 4 and 6 unlisted.
        let list = listed(&[10, 9, 8, 7, 5, 3, 2, 1, 1, 3]);
        for parallel in [false, true] {
            let p = run_listed(&src, &dst, &list, false, parallel);
            let jobs: Vec<(u8, Action)> = p.jobs.iter().map(|j| (j.hash.0[0], j.action)).collect();
            assert_eq!(
                jobs,
                vec![(2, Action::TopUp), (3, Action::Copy), (5, Action::Copy)]
            );
            let c = &p.counts;
            assert_eq!(
                (c.listed, c.present, c.to_copy, c.to_top_up, c.lost),
                (8, 3, 2, 1, 2)
            );
            assert_eq!(c.listed, c.present + c.to_copy + c.to_top_up + c.lost);
            // Index totals are unchanged by the list.
            assert_eq!((c.src_blocks, c.dst_blocks), (6, 4));
            assert_eq!(
                p.lost.iter().map(|e| e.hash).collect::<Vec<_>>(),
                vec![h(9), h(10)]
            );
            assert_eq!(c.present_bytes, 10 + 70 + 80);
        }
        // --verify-existing reads back present blocks, the destination-only
        // ones too (with no source to read from).
        let p = run_listed(&src, &dst, &list, true, false);
        let verify: Vec<u8> = (p.jobs.iter())
            .filter(|j| j.action == Action::Verify)
            .map(|j| j.hash.0[0])
            .collect();
        assert_eq!(verify, vec![1, 7, 8]);
        let j8 = p.jobs.iter().find(|j| j.hash == h(8)).unwrap();
        assert!(p.sources(j8).is_empty());
        assert_eq!(p.dst_holders(j8), &[0]);
        // Nothing listed, nothing planned; empty sides: all lost.
        let p = run_listed(&src, &dst, &[], false, true);
        assert!(p.jobs.is_empty() && p.counts.listed == 0);
        assert_eq!(p.counts.src_blocks, 6);
        let p = run_listed(&[], &[], &list, false, true);
        assert_eq!(p.counts.lost, 8);
    }

    /// A listed plan made in two halves is the one-thread plan, and the
    /// list of every source block plans what no list plans.
    #[test]
    fn listed_halves_add_up_and_a_full_list_changes_nothing() {
        let many: Vec<u8> = (0..=255u8).collect();
        let src = vec![idx(&many[..200]), idx(&many[50..])];
        let dst = vec![idx(&many[..100]), idx(&many[90..180])];
        let list = listed(&many.iter().copied().step_by(3).collect::<Vec<_>>());
        let one = run_listed(&src, &dst, &list, true, false);
        let two = run_listed(&src, &dst, &list, true, true);
        assert_eq!(one.jobs, two.jobs);
        assert_eq!(one.holders, two.holders);
        assert_eq!(one.counts, two.counts);
        assert_eq!(one.lost, two.lost);
        let plain = {
            let ss = rank(2);
            let ds = credits(2, |_| false);
            let opts = PlanOptions {
                src_rank: &ss,
                dst_credits: &ds,
                want: 2,
                verify_existing: false,
                jobs: true,
                listed: None,
                per_block: None,
            };
            plan_split(&src, &dst, &opts, false, 0)
        };
        let all_src = listed(&many);
        let full = run_listed(&src, &dst, &all_src, false, false);
        assert_eq!(full.jobs, plain.jobs);
        assert_eq!(full.holders, plain.holders);
        let mut c = full.counts.clone();
        assert_eq!((c.listed, c.lost), (256, 0));
        (c.listed, c.lost) = (0, 0);
        assert_eq!(c, plain.counts);
    }

    #[test]
    fn sources_in_probe_order() {
        let src: Vec<ServiceIndex> = (0..4).map(|_| idx(&[7])).collect();
        let p = run(src, vec![idx(&[])], &[], 1, false);
        let suffixes: Vec<String> = (0..4).map(|j| format!("{j:015x}")).collect();
        let want: Vec<u16> = probe_order(&h(7), &suffixes)
            .into_iter()
            .map(|i| i as u16)
            .collect();
        assert_eq!(p.sources(&p.jobs[0]).to_vec(), want);
    }

    /// The sizes the memory budget counts on (docs/design.md, "Memory").
    #[test]
    fn jobs_and_listed_blocks_stay_small() {
        assert_eq!(std::mem::size_of::<Job>(), 32);
        assert_eq!(std::mem::size_of::<Listed>(), 24);
    }

    /// Collection records: each block decided against its own want, copies
    /// counted per class by the classes of the stores listing it.
    #[test]
    fn per_block_wants_count_copies_per_class() {
        let mut wants = Wants::new();
        let c = |w: &mut Wants, cl: &[&str], r: Option<u32>| {
            let cl: Vec<String> = cl.iter().map(|s| s.to_string()).collect();
            w.of_collection(&cl, r).unwrap()
        };
        let default3 = c(&mut wants, &["default"], Some(3));
        let archive1 = c(&mut wants, &["archive"], Some(1));
        let both = wants.combine(default3, archive1);
        let null_default = c(&mut wants, &["default"], None);
        // Destination stores 0-2 `default`, 3 `archive`, 4 unknown classes.
        let dst_classes = [1u64, 1, 1, 2, u64::MAX];
        let dst_credits = [1u32; 5];
        let per_block = PerBlock {
            wants: &wants,
            dst_classes: &dst_classes,
            dst_credits: &dst_credits,
            default: 2,
            replications: None,
        };
        // Blocks 1-6 on source 0; the destination lists:
        // 1 on 0,1,2 (default 3: present); 2 on 0,1,2 (needs archive 1 too:
        // top up); 3 on 0,1,2,3 (both: present); 4 on 3 (archive 1: present);
        // 5 on 0,4 (null default = 2; the unknown store counts: present);
        // 6 on 0 (null default = 2: top up). 7 on the destination only, short.
        let src = vec![idx(&[1, 2, 3, 4, 5, 6])];
        let dst = vec![
            idx(&[1, 2, 3, 5, 6, 7]),
            idx(&[1, 2, 3]),
            idx(&[1, 2, 3]),
            idx(&[3, 4]),
            idx(&[5]),
        ];
        let list = |n: u8, want| Listed {
            hash: h(n),
            size: n as u32 * 10,
            want,
        };
        let listed = vec![
            list(1, default3),
            list(2, both),
            list(3, both),
            list(4, archive1),
            list(5, null_default),
            list(6, null_default),
            list(7, default3),
        ];
        let ss = rank(1);
        for parallel in [false, true] {
            let opts = PlanOptions {
                src_rank: &ss,
                dst_credits: &dst_credits,
                want: 2,
                verify_existing: false,
                jobs: true,
                listed: Some(&listed),
                per_block: Some(per_block),
            };
            let p = plan_split(&src, &dst, &opts, parallel, 0);
            let got: Vec<(u8, Action, WantId)> = p
                .jobs
                .iter()
                .map(|j| (j.hash.0[0], j.action, j.want))
                .collect();
            assert_eq!(
                got,
                [(2, Action::TopUp, both), (6, Action::TopUp, null_default)],
                "parallel {parallel}"
            );
            let c = &p.counts;
            assert_eq!((c.present, c.to_top_up, c.under_replicated), (5, 2, 1));
            assert_eq!(p.short.len(), 1);
            assert_eq!(p.short[0].classes, [("default".to_string(), 1, 3)]);
            // Counted by wanted replication (the most of a block's classes)
            // and by class.
            assert_eq!(
                c.per_replication.keys().copied().collect::<Vec<_>>(),
                [2, 3]
            );
            assert_eq!(c.per_class["default"].blocks, 2);
            assert_eq!(c.per_class["archive"].blocks, 1);
        }
        // -replications 1 overrides every count, not the classes: only 2
        // (no `archive` copy) is short.
        let opts = PlanOptions {
            src_rank: &ss,
            dst_credits: &dst_credits,
            want: 1,
            verify_existing: false,
            jobs: true,
            listed: Some(&listed),
            per_block: Some(PerBlock {
                replications: Some(1),
                ..per_block
            }),
        };
        let p = plan_split(&src, &dst, &opts, false, 0);
        let got: Vec<(u8, Action)> = p.jobs.iter().map(|j| (j.hash.0[0], j.action)).collect();
        assert_eq!(got, [(2, Action::TopUp)]);
        assert!(p.short.is_empty());
    }
}
