//! Writing: the replicas a block still needs, to destination services in
//! rendezvous order, each PUT retried and failed over. A PUT that took the
//! block's bytes leaves its finish ([`crate::store::Staged`]) to
//! [`super::Finishing`].

use std::sync::atomic::Ordering::Relaxed;

use futures::stream::{FuturesUnordered, StreamExt};

use super::finish::Kind;
use super::relay;
use super::{gone, request_done, summarize, BlockError, Copier, From, Need, Relay};
use crate::plan::Job;
use crate::protocol::client::{with_retries, Failure, FailureKind, Op};

/// PUTs of blocks up to this size measure the service's queue (their body
/// takes little of their time): their times feed its adaptive limit.
const SMALL_PUT: u64 = 256 << 10;

impl<'a> Copier<'a> {
    /// PUT to one destination service (with retries for transient failures),
    /// asking for `classes` (`X-Keep-Storage-Classes`). With the run's own
    /// want (`classes` None: `--storage-classes`), a PUT that does not
    /// confirm every class fails. A PUT that broke because the block's read
    /// failed is `Abandoned`: it says nothing about the service and is
    /// neither retried nor counted.
    pub(super) async fn put_to(
        &self,
        d: u16,
        job: &Job,
        relay: &Relay,
        desired: u32,
        classes: Option<&str>,
    ) -> Result<crate::protocol::client::PutOk, Failure> {
        let dst: &'a crate::services::Side = self.dst;
        let svc = &dst.services[d as usize];
        if svc.is_down() {
            return Err(gone());
        }
        if svc.is_full() {
            return Err(Failure::new(
                FailureKind::Full,
                "full (507) earlier in this run",
            ));
        }
        let strict = classes.is_none();
        let classes = classes.or(self.opts.storage_classes.as_deref());
        let size = job.size as u64;
        let asking = self.asking(From::Dst(d), Op::Put, job);
        let r = with_retries(self.opts.backoff, self.opts.retries, &asking, |_| {
            async move {
                // The transfer slot: held while the body is sent, not
                // while the write finishes.
                let _permit = svc.limit.acquire().await;
                let asked = std::time::Instant::now();
                let r = svc
                    .store
                    .write_staged(&job.hash, size, relay.body(), desired, classes)
                    .await;
                request_done(self.dst, svc, Op::Put, job, &r, asked);
                // A small block's PUT time is mostly the service's own (its
                // queue), as a GET's time to headers is, once counted from
                // when its body could complete: the block's last byte
                // released by the relay (a slow source is not this
                // service's queue).
                let since = relay.released_at().map_or(asked, |at| at.max(asked));
                svc.limit.observe(crate::limiter::signal_of(
                    &r,
                    since.elapsed(),
                    size <= SMALL_PUT,
                ));
                if r.is_err() && relay.is_failed() {
                    return Err(Failure::new(FailureKind::Abandoned, relay::ReadFailed.to_string()));
                }
                let r = r.and_then(|staged| match classes {
                    Some(want) if strict && !classes_confirmed(want, staged.ok.classes_confirmed.as_deref()) => Err(Failure::new(
                        FailureKind::Rejected,
                        format!(
                            "storage classes {want:?} not confirmed (X-Keep-Storage-Classes-Confirmed: {:?})",
                            staged.ok.classes_confirmed.unwrap_or_default()
                        ),
                    )),
                    Some(want) if !strict && confirmed_counts(want, staged.ok.classes_confirmed.as_deref(), staged.ok.replicas).is_empty() => Err(Failure::new(
                        FailureKind::Rejected,
                        format!(
                            "none of the storage classes {want:?} confirmed (X-Keep-Storage-Classes-Confirmed: {:?})",
                            staged.ok.classes_confirmed.unwrap_or_default()
                        ),
                    )),
                    _ => Ok(staged),
                });
                svc.stats.count(Op::Put, &r, size);
                r
            }
        })
        .await;
        match r {
            Ok(staged) => {
                let ok = staged.ok.clone();
                let stats = self.stats;
                let replicas = ok.replicas as u64;
                let count = move || {
                    stats.replicas_written.fetch_add(replicas, Relaxed);
                    stats.bytes_written.fetch_add(size * replicas, Relaxed);
                };
                let Some(finish) = staged.finish else {
                    // Whole when answered (keepstore, Azure).
                    count();
                    return Ok(ok);
                };
                let request = staged.request;
                // The durable rest, run by admission once the block's
                // buffer is given back; the replicas count when it ends.
                self.finishing.add(
                    job.hash,
                    Box::pin(async move {
                        // A marker is a request to the same service: its
                        // limit counts it, though not the block's slot.
                        let _permit = match request {
                            true => Some(svc.limit.acquire().await),
                            false => None,
                        };
                        finish.await.map_err(|f| BlockError {
                            service: svc.store.id().to_string(),
                            reason: format!("{}: {f}", svc.store.id()),
                        })?;
                        count();
                        Ok(())
                    }),
                    match request {
                        true => Kind::Request,
                        false => Kind::Local,
                    },
                );
                Ok(ok)
            }
            // keepstore answers 507 as well when it has no writable volume
            // of any class asked: full only where the classes are known.
            Err((f, _)) if f.kind == FailureKind::Full => match classes {
                Some(asked) if !svc.store.write_classes().is_some_and(|_| svc.store.may_confirm(Some(asked))) => {
                    Err(Failure::new(
                        FailureKind::Rejected,
                        format!("{f} for storage classes {asked:?}: no writable volume of them there, or they are full"),
                    ))
                }
                _ => Err(self.note_full(d as usize, f)),
            },
            Err((f, _)) => Err(self.note_down(self.dst, d as usize, f)),
        }
    }

    /// A PUT got 507: the service's volumes are full. Write nothing more to
    /// it in this run (said once); blocks go to the next services in their
    /// probe order, as they would after this answer anyway.
    pub(super) fn note_full(&self, d: usize, f: Failure) -> Failure {
        let svc = &self.dst.services[d];
        if svc.mark_full() {
            let why = format!("full ({f}): no more blocks are written to it in this run; they go to the next services in their probe order");
            tracing::info!(
                event = "service_full",
                side = self.dst.role.as_str(),
                service = svc.store.id(),
                "{} service {} {why}",
                self.dst.role,
                svc.store.label()
            );
            self.reporter.log(
                crate::progress::Level::Warn,
                &format!("{} service {}: {why}", self.dst.role, svc.store.label()),
            );
        }
        f
    }

    /// Write what `need` says to writable destination services in probe
    /// order, skipping those in `skip`; returns the replicas stored. Stops
    /// at once (storing nothing) when the block's read fails under it.
    pub(super) async fn write(
        &self,
        job: &Job,
        relay: &Relay,
        skip: &[u16],
        need: &Need,
    ) -> Result<u32, BlockError> {
        if need.is_met() {
            return Ok(0);
        }
        let mut todo: Vec<(String, u32)> = match need {
            Need::Replicas(n) => vec![(String::new(), *n)],
            Need::Classes(c) => c.clone(),
        };
        let per_class = matches!(need, Need::Classes(_));
        // Classes still short, as a PUT asks for them.
        let asked = |todo: &[(String, u32)]| -> Option<String> {
            per_class.then(|| {
                (todo.iter().filter(|(_, n)| *n > 0))
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let most = |todo: &[(String, u32)]| todo.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let run_classes = self.opts.storage_classes.as_deref();
        let order: Vec<u16> = (self.dst.rank.order(&job.hash).into_iter())
            .filter(|&i| {
                let svc = &self.dst.services[i as usize];
                svc.store.writable() && !svc.is_down() && !svc.is_full() && !skip.contains(&i)
            })
            .filter(|&i| {
                let store = &self.dst.services[i as usize].store;
                if per_class {
                    // A volume takes part only with a class still short.
                    todo.iter().any(|(c, _)| store.may_confirm(Some(c)))
                } else {
                    store.may_confirm(run_classes)
                }
            })
            .collect();
        let mut next = 0;
        let mut stored = 0u32;
        // Replicas a write in flight will store if it succeeds: a volume its
        // Replication, a keepstore its first writable mount's for the block
        // (1 when its mounts are not known); a keepproxy is counted as 1
        // until it says how many it stored.
        let expected = |d: u16| {
            let store = &self.dst.services[d as usize].store;
            if store.is_proxy() {
                1
            } else {
                store.expected_replicas(&job.hash, run_classes)
            }
        };
        let mut pending = 0u32;
        let mut reasons = Vec::new();
        let mut last_service = String::new();
        let mut inflight = FuturesUnordered::new();
        loop {
            while pending < most(&todo) && next < order.len() {
                let d = order[next];
                next += 1;
                let classes = asked(&todo);
                let store = &self.dst.services[d as usize].store;
                if per_class
                    && !todo
                        .iter()
                        .any(|(c, n)| *n > 0 && store.may_confirm(Some(c)))
                {
                    continue;
                }
                pending += expected(d);
                let desired = most(&todo).saturating_sub(pending - expected(d)).max(1);
                inflight.push(async move {
                    let r = self
                        .put_to(d, job, relay, desired, classes.as_deref())
                        .await;
                    (d, r)
                });
            }
            let Some((d, r)) = inflight.next().await else {
                break;
            };
            pending -= expected(d);
            match r {
                Ok(ok) => {
                    stored += ok.replicas;
                    if per_class {
                        let asked = asked(&todo).unwrap_or_default();
                        for (class, n) in
                            confirmed_counts(&asked, ok.classes_confirmed.as_deref(), ok.replicas)
                        {
                            if let Some(t) = todo.iter_mut().find(|(c, _)| *c == class) {
                                t.1 = t.1.saturating_sub(n);
                            }
                        }
                    } else {
                        todo[0].1 = todo[0].1.saturating_sub(ok.replicas);
                    }
                }
                Err(f) if f.kind == FailureKind::Abandoned => {
                    return Err(BlockError {
                        service: String::new(),
                        reason: f.detail,
                    })
                }
                Err(f) => {
                    let id = self.dst.services[d as usize].store.id();
                    if next < order.len() {
                        self.failover(Op::Put, job, From::Dst(d), From::Dst(order[next]), &f);
                    }
                    reasons.push(format!("{id}: {f}"));
                    last_service = id.to_string();
                }
            }
            if most(&todo) == 0 {
                // Writes still in flight were needed when they started (the
                // ones before them could not store enough): they end rather
                // than being dropped, so where the replicas land does not
                // depend on which store answered first.
                while let Some((_, r)) = inflight.next().await {
                    if let Ok(ok) = r {
                        stored += ok.replicas;
                    }
                }
                break;
            }
        }
        if most(&todo) == 0 {
            return Ok(stored);
        }
        let why = if order.is_empty() {
            "no writable destination service is left to write to (the others are read-only, \
             full or unreachable, or hold none of the storage classes wanted)"
                .to_string()
        } else {
            summarize(&reasons)
        };
        let short = match need {
            Need::Replicas(n) => format!("stored {stored} of {n} replicas needed"),
            Need::Classes(_) => format!(
                "stored {stored} replicas, still short of {}",
                (todo.iter().filter(|(_, n)| *n > 0))
                    .map(|(c, n)| format!("{n} in {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(BlockError {
            service: last_service,
            reason: format!("{short}: {why}"),
        })
    }
}

/// Whether every requested class is confirmed with at least one replica.
pub fn classes_confirmed(requested: &str, confirmed: Option<&str>) -> bool {
    let Some(confirmed) = confirmed else {
        return false;
    };
    let got: Vec<(&str, u32)> = confirmed
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    requested
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|c| got.iter().any(|(k, n)| *k == c && *n > 0))
}

/// What a PUT asking for `asked` (comma-separated) confirmed of them:
/// `(class, replicas)` from `X-Keep-Storage-Classes-Confirmed`; without
/// that header (an older keepstore) every class asked, `replicas` times.
pub fn confirmed_counts(asked: &str, confirmed: Option<&str>, replicas: u32) -> Vec<(String, u32)> {
    let asked = asked.split(',').map(str::trim).filter(|c| !c.is_empty());
    let Some(confirmed) = confirmed else {
        return asked.map(|c| (c.to_string(), replicas)).collect();
    };
    let got: Vec<(&str, u32)> = confirmed
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    asked
        .filter_map(|c| {
            let n = got
                .iter()
                .filter(|(k, _)| *k == c)
                .map(|(_, n)| n)
                .sum::<u32>();
            (n > 0).then(|| (c.to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes() {
        assert!(classes_confirmed("default", Some("default=1")));
        assert!(classes_confirmed("a, b", Some("b=1, a=2")));
        assert!(!classes_confirmed("a,b", Some("a=1")));
        assert!(!classes_confirmed("a", Some("a=0")));
        assert!(!classes_confirmed("a", None));
        assert_eq!(
            confirmed_counts("default, archive", Some("archive=2, hot=1"), 2),
            [("archive".to_string(), 2)]
        );
        assert_eq!(
            confirmed_counts("a,b", None, 1),
            [("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert!(confirmed_counts("a", Some("b=1"), 1).is_empty());
    }
}
