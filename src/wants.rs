//! What a block's collections ask of the destination: replicas per storage
//! class, as keep-balance computes them (docs/protocol.md, "Replication
//! and storage classes of a block").
//!
//! Each collection record of a `--blocks-from` list says `replication_desired`
//! (null: the destination's default) and `storage_classes_desired` (empty:
//! `default`). A block referenced by several collections wants, **for each
//! class any of them names, the largest replication among the collections
//! naming that class** (keep-balance's `BlockState.increaseDesired`). So a
//! block in a 3-replica `default` collection and a 1-replica `archive` one
//! wants 3 copies in `default` and 1 in `archive`.
//!
//! Blocks carry such a want as a 2-byte [`WantId`] through the external
//! sort, the per-pass loads and the plan: the distinct wants of a whole
//! cluster are few (classes × replication levels), so they are interned in
//! one small table ([`Wants`]). Id 0 is the run's own want (the `-replications`
//! / default count and `--storage-classes`), which plain lists and runs
//! without a list use, unchanged from before collection records.

use std::collections::HashMap;

/// A block's want, as an index into [`Wants`]; 0 = the run's own.
pub type WantId = u16;

/// The run's own want: `-replications` (or the destination's default) and
/// `--storage-classes`, each PUT confirming them all.
pub const RUN_WANT: WantId = 0;

/// Class names a run can tell apart (a destination store's classes are a
/// bit mask of them).
pub const MAX_CLASSES: usize = 64;

/// The largest `replication_desired` taken.
pub const MAX_REPLICATION: u32 = 255;

/// One class of a want: at least `replicas`, and at least the destination's
/// default when some collection naming the class left its replication null.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassWant {
    pub class: u8,
    pub replicas: u8,
    pub default: bool,
}

/// The interned wants of one run, and the class names they use.
#[derive(Debug)]
pub struct Wants {
    names: Vec<String>,
    sets: Vec<Box<[ClassWant]>>,
    index: HashMap<Box<[ClassWant]>, WantId>,
    /// More distinct wants (or class names) than fit: the list is refused.
    overflowed: Option<String>,
}

impl Default for Wants {
    fn default() -> Self {
        Wants::new()
    }
}

impl Wants {
    /// A table holding only the run's own want.
    pub fn new() -> Wants {
        Wants {
            names: Vec::new(),
            sets: vec![Box::new([])],
            index: HashMap::new(),
            overflowed: None,
        }
    }

    /// Whether any block has a want of its own (collection records).
    pub fn per_block(&self) -> bool {
        self.sets.len() > 1
    }

    /// Class names, by class number.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of a class name (added when new).
    pub fn class(&mut self, name: &str) -> Result<u8, String> {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return Ok(i as u8);
        }
        if self.names.len() >= MAX_CLASSES {
            return Err(format!(
                "more than {MAX_CLASSES} distinct storage classes are named; keep-rsync tells \
                 at most {MAX_CLASSES} apart"
            ));
        }
        self.names.push(name.to_string());
        Ok((self.names.len() - 1) as u8)
    }

    /// The want of one collection: `replicas` (None: the default) in each
    /// of `classes` (empty: `default`).
    pub fn of_collection(
        &mut self,
        classes: &[String],
        replicas: Option<u32>,
    ) -> Result<WantId, String> {
        let mut set = Vec::with_capacity(classes.len().max(1));
        let default_class = ["default".to_string()];
        let classes = if classes.is_empty() {
            &default_class[..]
        } else {
            classes
        };
        for c in classes {
            set.push(ClassWant {
                class: self.class(c)?,
                replicas: replicas.unwrap_or(0).min(MAX_REPLICATION) as u8,
                default: replicas.is_none(),
            });
        }
        Ok(self.intern(set))
    }

    /// The want of a block two collections (or two list records) share.
    /// A table overflow is remembered ([`Wants::overflowed`]) and answers `a`.
    pub fn combine(&mut self, a: WantId, b: WantId) -> WantId {
        if a == b || b == RUN_WANT {
            return a;
        }
        if a == RUN_WANT {
            return b;
        }
        let (x, y) = (self.get(a), self.get(b));
        let mut set: Vec<ClassWant> = x.to_vec();
        for w in y {
            match set.iter_mut().find(|s| s.class == w.class) {
                Some(s) => {
                    s.replicas = s.replicas.max(w.replicas);
                    s.default |= w.default;
                }
                None => set.push(*w),
            }
        }
        if self.overflowed.is_some() {
            return a;
        }
        self.intern(set)
    }

    fn intern(&mut self, mut set: Vec<ClassWant>) -> WantId {
        set.sort_unstable();
        set.dedup_by(|later, kept| {
            if later.class == kept.class {
                kept.replicas = kept.replicas.max(later.replicas);
                kept.default |= later.default;
                true
            } else {
                false
            }
        });
        let set = set.into_boxed_slice();
        if let Some(&id) = self.index.get(&set) {
            return id;
        }
        if self.sets.len() > WantId::MAX as usize {
            self.overflowed.get_or_insert_with(|| {
                format!(
                    "more than {} distinct combinations of replication and storage classes",
                    WantId::MAX
                )
            });
            return RUN_WANT;
        }
        let id = self.sets.len() as WantId;
        self.sets.push(set.clone());
        self.index.insert(set, id);
        id
    }

    /// Why the table could not hold every want, if it could not.
    pub fn overflowed(&self) -> Option<&str> {
        self.overflowed.as_deref()
    }

    /// The classes of a want (empty for [`RUN_WANT`]).
    pub fn get(&self, id: WantId) -> &[ClassWant] {
        self.sets.get(id as usize).map_or(&[], |s| &s[..])
    }

    /// What a want asks of the destination: `(class, replicas)` for each of
    /// its classes, given the destination's `default` replication and a
    /// `-replications` that overrides every count.
    pub fn resolve<'a>(
        &'a self,
        id: WantId,
        default: u32,
        replications: Option<u32>,
    ) -> impl Iterator<Item = (u8, u32)> + 'a {
        self.get(id).iter().map(move |w| {
            let n = match replications {
                Some(n) => n,
                None if w.default => default.max(w.replicas as u32),
                None => w.replicas as u32,
            };
            (w.class, n.max(1))
        })
    }

    /// The largest count of a want (its "wanted replication" in summaries).
    pub fn most(&self, id: WantId, default: u32, replications: Option<u32>) -> u32 {
        self.resolve(id, default, replications)
            .map(|(_, n)| n)
            .max()
            .unwrap_or(default)
    }

    /// The classes of a want as a bit mask.
    pub fn mask(&self, id: WantId) -> u64 {
        self.get(id).iter().fold(0, |m, w| m | 1 << w.class)
    }

    /// A destination store's classes as a bit mask of this table's classes:
    /// `None` (not known) counts for every class.
    pub fn mask_of(&self, classes: Option<&[String]>) -> u64 {
        match classes {
            None => u64::MAX,
            Some(cs) => cs
                .iter()
                .filter_map(|c| self.names.iter().position(|n| n == c))
                .fold(0, |m, i| m | 1 << i),
        }
    }
}

/// `--storage-classes A,B` as class names.
pub fn split_classes(flag: Option<&str>) -> Option<Vec<String>> {
    flag.map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn per_class_maximum_as_keep_balance() {
        let mut w = Wants::new();
        let a = w.of_collection(&s(&["default"]), Some(3)).unwrap();
        let b = w.of_collection(&s(&["archive"]), Some(1)).unwrap();
        let c = w.of_collection(&[], None).unwrap();
        let ab = w.combine(a, b);
        let abc = w.combine(ab, c);
        let got: Vec<(String, u32)> = w
            .resolve(abc, 2, None)
            .map(|(k, n)| (w.names()[k as usize].clone(), n))
            .collect();
        assert_eq!(got, [("default".into(), 3), ("archive".into(), 1)]);
        // The destination's default (null) wins over 1 when it is larger.
        let d = w.of_collection(&s(&["archive"]), None).unwrap();
        let bd = w.combine(b, d);
        assert_eq!(w.resolve(bd, 2, None).collect::<Vec<_>>(), [(1, 2)]);
        assert_eq!(w.resolve(bd, 2, Some(5)).collect::<Vec<_>>(), [(1, 5)]);
        // Interned: the same want twice is one id, in either order.
        assert_eq!(w.combine(b, a), ab);
        assert_eq!(w.combine(ab, RUN_WANT), ab);
        assert_eq!(w.combine(RUN_WANT, ab), ab);
        assert_eq!(w.most(abc, 2, None), 3);
        assert_eq!(w.mask(abc), 0b11);
        assert_eq!(w.mask_of(Some(&s(&["archive", "hot"]))), 0b10);
        assert_eq!(w.mask_of(None), u64::MAX);
        // Zero replicas still asks for one copy: a copy tool keeps data.
        let z = w.of_collection(&s(&["default"]), Some(0)).unwrap();
        assert_eq!(w.resolve(z, 2, None).collect::<Vec<_>>(), [(0, 1)]);
    }

    #[test]
    fn too_many_classes_is_an_error() {
        let mut w = Wants::new();
        for i in 0..MAX_CLASSES {
            w.class(&format!("c{i}")).unwrap();
        }
        assert!(w.class("one-more").is_err());
        assert!(w.class("c3").is_ok());
    }
}
