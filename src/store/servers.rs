//! Rendezvous order of volumes drawn from several keepstore servers (a
//! volumes file whose volumes name different `AccessViaHosts`), as
//! keep-balance places replicas (services/keep-balance/balance.go,
//! `balanceBlock`): servers in the clients' probe order (descending
//! `md5(HASH + uuid[12:])`, the uuid the API server gives each keepstore),
//! the first replicas one per server, then the rest; within a server,
//! keepstore's mount order (priority, then ascending `md5(HASH +
//! mountuuid[12:])`).
//!
//! The order is: first pass, for each server in probe order, its first
//! volume in mount order that is writable through it and not already
//! placed (a volume mounted by several servers is placed once: keep-balance
//! counts one device once); second pass, every volume not yet placed, by
//! server then mount order; last, volumes on no server. A copy writes the
//! first replicas of a block to the first writable volumes of that order,
//! so distinct replicas land on distinct servers while there are servers.

use crate::protocol::BlockHash;

/// A keepstore server that mounts a volume, as the ranking needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    /// The server's uuid (as the API server gives it).
    pub server: String,
    /// The volume is read-only through this server (`AccessViaHosts`).
    pub read_only: bool,
}

/// The servers of one side's volumes, when there are at least two.
#[derive(Clone, Debug)]
pub struct Servers {
    /// Each server's weighed uuid part, as for Keep services.
    suffixes: Vec<String>,
    /// Per server: the stores it mounts, and whether each is writable
    /// through it.
    mounts: Vec<Vec<(u16, bool)>>,
}

impl Servers {
    /// From each store's mounts and writability (in store order): `None`
    /// unless the volumes come from two servers or more (then keepstore's
    /// mount order alone is the order, as one keepstore gives it).
    pub fn of(stores: &[(&[Mount], bool)]) -> Option<Servers> {
        let mut uuids: Vec<&str> = stores
            .iter()
            .flat_map(|(m, _)| m.iter().map(|m| m.server.as_str()))
            .collect();
        uuids.sort_unstable();
        uuids.dedup();
        if uuids.len() < 2 {
            return None;
        }
        let mut mounts = vec![Vec::new(); uuids.len()];
        for (i, (ms, writable)) in stores.iter().enumerate() {
            for m in ms.iter() {
                if let Ok(s) = uuids.binary_search(&m.server.as_str()) {
                    if !mounts[s].iter().any(|&(j, _)| j == i as u16) {
                        mounts[s].push((i as u16, *writable && !m.read_only));
                    }
                }
            }
        }
        let suffixes = uuids
            .iter()
            .map(|u| crate::protocol::uuid_weight_suffix(u).to_string())
            .collect();
        Some(Servers { suffixes, mounts })
    }

    /// The stores `among` in this order for `hash`, into `out`;
    /// `suffixes` and `priorities` are the stores' mount weights.
    pub fn order_among(
        &self,
        hash: &BlockHash,
        suffixes: &[String],
        priorities: &[i64],
        among: &[u16],
        out: &mut Vec<u16>,
    ) {
        // Keepstore's mount order of all of them: each store's position.
        let mut by_mount = Vec::with_capacity(among.len());
        crate::protocol::mount_order_among(hash, suffixes, priorities, among, &mut by_mount);
        let mut pos = vec![usize::MAX; suffixes.len()];
        for (p, &i) in by_mount.iter().enumerate() {
            pos[i as usize] = p;
        }
        let servers = crate::protocol::probe_order(hash, &self.suffixes);
        let ranked: Vec<Vec<(u16, bool)>> = servers
            .iter()
            .map(|&s| {
                let mut m: Vec<(u16, bool)> = (self.mounts[s].iter())
                    .filter(|&&(i, _)| pos[i as usize] != usize::MAX)
                    .copied()
                    .collect();
                m.sort_by_key(|&(i, _)| pos[i as usize]);
                m
            })
            .collect();
        let mut placed = vec![false; suffixes.len()];
        out.clear();
        // One per server first: its best volume writable through it.
        for mounts in &ranked {
            if let Some(&(i, _)) = mounts.iter().find(|&&(i, w)| w && !placed[i as usize]) {
                placed[i as usize] = true;
                out.push(i);
            }
        }
        // Then the rest, server by server; then any on no server.
        for &(i, _) in ranked.iter().flatten() {
            if !placed[i as usize] {
                placed[i as usize] = true;
                out.push(i);
            }
        }
        for &i in &by_mount {
            if !placed[i as usize] {
                placed[i as usize] = true;
                out.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(server: &str) -> Vec<Mount> {
        vec![Mount {
            server: server.into(),
            read_only: false,
        }]
    }

    #[test]
    fn one_server_is_mount_order() {
        let a = m("zzzzz-bi6l4-000000000000000");
        assert!(Servers::of(&[(&a, true), (&a, true)]).is_none());
        assert!(Servers::of(&[(&[], true)]).is_none());
    }

    /// A volume on both servers is placed once; a server whose volumes are
    /// all placed or read-only through it gives no first-pass volume.
    #[test]
    fn shared_and_read_only_volumes() {
        let (s0, s1) = ("zzzzz-bi6l4-000000000000000", "zzzzz-bi6l4-000000000000001");
        let both = [
            Mount {
                server: s0.into(),
                read_only: false,
            },
            Mount {
                server: s1.into(),
                read_only: false,
            },
        ];
        let ro1 = [Mount {
            server: s1.into(),
            read_only: true,
        }];
        let stores = [(&both[..], true), (&ro1[..], true), (&m(s0)[..], true)];
        let owned: Vec<(Vec<Mount>, bool)> = stores.iter().map(|(a, w)| (a.to_vec(), *w)).collect();
        let refs: Vec<(&[Mount], bool)> = owned.iter().map(|(a, w)| (&a[..], *w)).collect();
        let s = Servers::of(&refs).unwrap();
        let suffixes: Vec<String> = (0..3).map(|i| format!("{i:015}")).collect();
        for n in 0..50u32 {
            let h = BlockHash::of(&n.to_le_bytes());
            let mut out = Vec::new();
            s.order_among(&h, &suffixes, &[0, 0, 0], &[0, 1, 2], &mut out);
            let mut sorted = out.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2], "each once: {out:?}");
            // Store 1 is read-only through its one server: never first pass,
            // so it is last.
            assert_eq!(out[2], 1, "{h}: {out:?}");
        }
    }
}
