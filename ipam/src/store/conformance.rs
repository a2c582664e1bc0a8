//! One suite, every backend: the compare-and-swap contract of [`Store`].
//! Each function panics with a message on a violation; `prefix` keeps runs
//! apart on a shared store.

use super::{Store, StoreError, WatchEvent};
use std::sync::Arc;
use std::time::Duration;

pub async fn run_all(store: Arc<dyn Store>, prefix: &str) {
    create_is_if_absent(&*store, &format!("{prefix}/create")).await;
    update_and_delete_need_the_revision(&*store, &format!("{prefix}/cas")).await;
    list_is_by_prefix_with_revision(&*store, &format!("{prefix}/list")).await;
    watch_replays_from_revision(&*store, &format!("{prefix}/watch")).await;
    concurrent_cas_loses_no_update(store.clone(), &format!("{prefix}/race")).await;
    commit_is_all_or_nothing(&*store, &format!("{prefix}/commit")).await;
    lists_come_in_pages(&*store, &format!("{prefix}/pages")).await;
    put_and_remove_are_unconditional(&*store, &format!("{prefix}/index")).await;
}

/// A list longer than a page is whole, in order, and the pages of
/// `list_page` neither overlap nor skip, nor run past the prefix.
pub async fn lists_come_in_pages(s: &dyn Store, p: &str) {
    use super::{list_paged, KEYS_PAGE, LIST_PAGE};
    let n = LIST_PAGE * 2 + 7;
    let dir = format!("{p}/d/");
    // Keys around the prefix's edges must not leak in.
    s.create(&format!("{p}/c"), b"before".to_vec())
        .await
        .expect("create");
    s.create(&format!("{p}/d0"), b"after".to_vec())
        .await
        .expect("create");
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(super::Op::Create {
            key: format!("{dir}{i:05}"),
            value: format!("v{i}").into_bytes(),
        });
        if ops.len() == 50 {
            s.commit(std::mem::take(&mut ops)).await.expect("commit");
        }
    }
    s.commit(ops).await.expect("commit");
    let all = s.list(&dir).await.expect("list");
    assert_eq!(all.kvs.len(), n, "every key, across pages");
    for (i, kv) in all.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("{dir}{i:05}"), "in key order");
        assert_eq!(kv.value, format!("v{i}").into_bytes());
    }
    let keys = s.list_keys(&dir).await.expect("list keys");
    assert_eq!(keys.len(), n);
    assert!(KEYS_PAGE > n || keys.windows(2).all(|w| w[0].0 < w[1].0));
    let small = list_paged(s, &dir, 10, true).await.expect("small pages");
    assert_eq!(small.kvs.len(), n, "pages of 10");
    assert!(small.kvs.iter().all(|kv| kv.value.is_empty()), "keys only");
    let first = s.list_page(&dir, None, 10, 0, false).await.expect("page");
    assert_eq!(first.kvs.len(), 10);
    assert!(first.more);
    let next = s
        .list_page(&dir, Some(&first.kvs[9].key), 10, first.revision, false)
        .await
        .expect("page");
    assert_eq!(next.kvs[0].key, format!("{dir}00010"), "strictly after");
    let last = s
        .list_page(&dir, Some(&format!("{dir}{:05}", n - 3)), 10, 0, false)
        .await
        .expect("page");
    assert_eq!(last.kvs.len(), 2);
    assert!(!last.more, "the end of the prefix is the end");
}

/// `Put` and `Remove` ride in a transaction without conditions of their
/// own; a failed condition elsewhere still sinks them.
pub async fn put_and_remove_are_unconditional(s: &dyn Store, p: &str) {
    use super::Op;
    let (a, i1, i2) = (format!("{p}/a"), format!("{p}/i1"), format!("{p}/i2"));
    let ra = s.create(&a, b"a1".to_vec()).await.expect("create");
    s.create(&i2, b"old".to_vec()).await.expect("create");
    let stale = s
        .commit(vec![
            Op::Update {
                key: a.clone(),
                value: b"a2".to_vec(),
                revision: ra - 1,
            },
            Op::Put {
                key: i1.clone(),
                value: b"x".to_vec(),
            },
        ])
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { ref key }) if *key == a),
        "{stale:?}"
    );
    assert_eq!(s.get(&i1).await.expect("get"), None, "nothing applied");
    s.commit(vec![
        Op::Update {
            key: a.clone(),
            value: b"a2".to_vec(),
            revision: ra,
        },
        Op::Put {
            key: i1.clone(),
            value: b"x".to_vec(),
        },
        Op::Put {
            key: i2.clone(),
            value: b"new".to_vec(),
        },
        Op::Remove {
            key: format!("{p}/absent"),
        },
    ])
    .await
    .expect("unconditional ops hold whatever is there");
    assert_eq!(s.get(&i2).await.expect("get").expect("i2").value, b"new");
    let ra = s.get(&a).await.expect("get").expect("a").mod_revision;
    s.commit(vec![
        Op::Update {
            key: a.clone(),
            value: b"a3".to_vec(),
            revision: ra,
        },
        Op::Remove { key: i1.clone() },
    ])
    .await
    .expect("remove");
    assert_eq!(s.get(&i1).await.expect("get"), None);
}

pub async fn commit_is_all_or_nothing(s: &dyn Store, p: &str) {
    use super::Op;
    let (a, b, c) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    let ra = s.create(&a, b"a1".to_vec()).await.expect("create a");
    let rb = s.create(&b, b"b1".to_vec()).await.expect("create b");
    // One stale condition sinks the whole transaction.
    let r = s
        .commit(vec![
            Op::Update {
                key: a.clone(),
                value: b"a2".to_vec(),
                revision: ra,
            },
            Op::Delete {
                key: b.clone(),
                revision: rb - 1,
            },
            Op::Create {
                key: c.clone(),
                value: b"c1".to_vec(),
            },
        ])
        .await;
    match r {
        Err(StoreError::Conflict { key }) => assert_eq!(key, b, "the conflict names the stale key"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        s.get(&a).await.expect("get").expect("a").value,
        b"a1",
        "nothing applied"
    );
    assert_eq!(s.get(&c).await.expect("get"), None, "nothing applied");
    let rev = s
        .commit(vec![
            Op::Update {
                key: a.clone(),
                value: b"a2".to_vec(),
                revision: ra,
            },
            Op::Delete {
                key: b.clone(),
                revision: rb,
            },
            Op::Create {
                key: c.clone(),
                value: b"c1".to_vec(),
            },
        ])
        .await
        .expect("commit");
    let ka = s.get(&a).await.expect("get").expect("a");
    assert_eq!(
        (ka.value.as_slice(), ka.mod_revision),
        (&b"a2"[..], rev),
        "one revision for all"
    );
    assert_eq!(s.get(&b).await.expect("get"), None);
    assert_eq!(s.get(&c).await.expect("get").expect("c").mod_revision, rev);
}

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

pub async fn create_is_if_absent(s: &dyn Store, p: &str) {
    let k = format!("{p}/a");
    assert_eq!(
        s.get(&k).await.expect("get"),
        None,
        "fresh key must be absent"
    );
    let r1 = s.create(&k, b"one".to_vec()).await.expect("first create");
    conflict(s.create(&k, b"two".to_vec()).await, "second create");
    let kv = s.get(&k).await.expect("get").expect("created key present");
    assert_eq!(kv.value, b"one", "a losing create must not overwrite");
    assert_eq!(kv.mod_revision, r1, "get reports the create's revision");
}

pub async fn update_and_delete_need_the_revision(s: &dyn Store, p: &str) {
    let k = format!("{p}/a");
    conflict(
        s.update(&k, b"x".to_vec(), 1).await,
        "update of an absent key",
    );
    conflict(s.delete(&k, 1).await, "delete of an absent key");
    let r1 = s.create(&k, b"v1".to_vec()).await.expect("create");
    let r2 = s
        .update(&k, b"v2".to_vec(), r1)
        .await
        .expect("update at r1");
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    conflict(
        s.update(&k, b"v3".to_vec(), r1).await,
        "update at a stale revision",
    );
    conflict(s.delete(&k, r1).await, "delete at a stale revision");
    assert_eq!(s.get(&k).await.expect("get").expect("present").value, b"v2");
    s.delete(&k, r2)
        .await
        .expect("delete at the current revision");
    assert_eq!(s.get(&k).await.expect("get"), None, "deleted");
    // A re-created key starts over: the old revision must not match it.
    let r3 = s.create(&k, b"again".to_vec()).await.expect("re-create");
    assert!(r3 > r2);
    conflict(
        s.delete(&k, r2).await,
        "delete with the previous life's revision",
    );
}

pub async fn list_is_by_prefix_with_revision(s: &dyn Store, p: &str) {
    for k in ["b", "a", "c/d"] {
        s.create(&format!("{p}/in/{k}"), k.as_bytes().to_vec())
            .await
            .expect("create");
    }
    s.create(&format!("{p}/out"), b"x".to_vec())
        .await
        .expect("create");
    s.create(&format!("{p}/inx"), b"x".to_vec())
        .await
        .expect("create");
    let l = s.list(&format!("{p}/in/")).await.expect("list");
    let keys: Vec<_> = l.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            format!("{p}/in/a"),
            format!("{p}/in/b"),
            format!("{p}/in/c/d")
        ],
        "list returns exactly the prefix, in key order"
    );
    let max = l.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0);
    assert!(
        l.revision >= max,
        "listing revision {} < key revision {max}",
        l.revision
    );
    let empty = s.list(&format!("{p}/nothing/")).await.expect("list");
    assert!(empty.kvs.is_empty());
}

async fn next(rx: &mut super::WatchReceiver) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("watch: expected an event, got {other:?}"),
    }
}

pub async fn watch_replays_from_revision(s: &dyn Store, p: &str) {
    let k = format!("{p}/k");
    let r1 = s.create(&k, b"1".to_vec()).await.expect("create");
    let r2 = s.update(&k, b"2".to_vec(), r1).await.expect("update");
    // From the past: both writes, then live ones.
    let mut rx = s.watch(&format!("{p}/"), r1).await.expect("watch");
    let e1 = next(&mut rx).await;
    assert!(
        matches!(&e1, WatchEvent::Put(kv) if kv.value == b"1" && kv.mod_revision == r1),
        "{e1:?}"
    );
    let e2 = next(&mut rx).await;
    assert!(
        matches!(&e2, WatchEvent::Put(kv) if kv.value == b"2" && kv.mod_revision == r2),
        "{e2:?}"
    );
    // A write outside the prefix is not seen; the delete is.
    s.create(&format!("{p}-other"), b"x".to_vec())
        .await
        .expect("create");
    s.delete(&k, r2).await.expect("delete");
    let e3 = next(&mut rx).await;
    assert!(
        matches!(&e3, WatchEvent::Delete { key, revision } if *key == k && *revision > r2),
        "{e3:?}"
    );
    // From a listing's revision + 1: only what came after it.
    let l = s.list(&format!("{p}/")).await.expect("list");
    let mut rx2 = s
        .watch(&format!("{p}/"), l.revision + 1)
        .await
        .expect("watch");
    let r4 = s
        .create(&format!("{p}/k2"), b"4".to_vec())
        .await
        .expect("create");
    let e4 = next(&mut rx2).await;
    assert_eq!(e4.revision(), r4, "{e4:?}");
}

/// Many tasks increment one counter with read-modify-CAS loops; the final
/// value proves no two writers both won from the same revision.
pub async fn concurrent_cas_loses_no_update(s: Arc<dyn Store>, p: &str) {
    const TASKS: usize = 8;
    const EACH: usize = 15;
    let k = format!("{p}/counter");
    s.create(&k, b"0".to_vec()).await.expect("create");
    let mut joins = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        let k = k.clone();
        joins.push(tokio::spawn(async move {
            for _ in 0..EACH {
                loop {
                    let kv = s.get(&k).await.expect("get").expect("counter present");
                    let n: u64 = std::str::from_utf8(&kv.value)
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    match s
                        .update(&k, (n + 1).to_string().into_bytes(), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    let kv = s.get(&k).await.expect("get").expect("present");
    assert_eq!(
        kv.value,
        (TASKS * EACH).to_string().into_bytes(),
        "lost updates"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        run_all(Arc::new(MemoryStore::new()), "/t").await;
    }
}
