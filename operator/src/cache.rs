//! Watch caches of the three kinds, one stream per watched namespace (or one for all), and the
//! predicate deciding which changes call for a reconcile: a new generation (spec), a deletion, the
//! operator's finalizer taken off a live object, a new object, a relist. Status-only updates and
//! the finalizer the operator adds — its own patches — update the cache without triggering
//! anything, so a burst of new objects costs one pass, not one more to see its own finalizers.

use std::collections::BTreeMap;

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::plan::{has_finalizer, is_deleting};

type Key = (String, String);

/// What about an object matters for reconciling.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    uid: Option<String>,
    generation: Option<i64>,
    deleting: bool,
    finalized: bool,
}

fn fingerprint<K: Resource>(obj: &K) -> Fingerprint {
    Fingerprint {
        uid: obj.meta().uid.clone(),
        generation: obj.meta().generation,
        deleting: is_deleting(obj),
        finalized: has_finalizer(obj),
    }
}

struct Stream<K> {
    items: BTreeMap<Key, K>,
    relist: Option<BTreeMap<Key, K>>,
    synced: bool,
}

/// The objects of one kind, merged from one or more watch streams.
pub struct Cache<K> {
    streams: Vec<Stream<K>>,
}

impl<K: Resource + Clone> Cache<K> {
    /// A cache fed by `streams` watch streams.
    pub fn new(streams: usize) -> Self {
        Cache {
            streams: (0..streams.max(1))
                .map(|_| Stream {
                    items: BTreeMap::new(),
                    relist: None,
                    synced: false,
                })
                .collect(),
        }
    }

    /// Applies one event of stream `i`; returns whether it calls for a reconcile.
    pub fn apply(&mut self, i: usize, event: watcher::Event<K>) -> bool {
        let Some(s) = self.streams.get_mut(i) else {
            return false;
        };
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            watcher::Event::Apply(obj) => {
                let k = key(&obj);
                let trigger = s.items.get(&k).is_none_or(|old| {
                    let (a, b) = (fingerprint(old), fingerprint(&obj));
                    a.uid != b.uid
                        || a.generation != b.generation
                        || a.deleting != b.deleting
                        // Taken off a live object: put back. Added: the operator's own doing.
                        || (a.finalized && !b.finalized)
                });
                s.items.insert(k, obj);
                trigger
            }
            watcher::Event::Delete(obj) => {
                s.items.remove(&key(&obj));
                true
            }
            watcher::Event::Init => {
                s.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(obj) => {
                let k = key(&obj);
                s.relist.get_or_insert_with(BTreeMap::new).insert(k, obj);
                false
            }
            watcher::Event::InitDone => {
                s.items = s.relist.take().unwrap_or_default();
                s.synced = true;
                true
            }
        }
    }

    /// Whether every stream has listed once.
    pub fn synced(&self) -> bool {
        self.streams.iter().all(|s| s.synced)
    }

    /// Every object, in namespace/name order.
    pub fn items(&self) -> Vec<K> {
        let mut all: Vec<(&Key, &K)> = self.streams.iter().flat_map(|s| s.items.iter()).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, o)| o.clone()).collect()
    }
}
