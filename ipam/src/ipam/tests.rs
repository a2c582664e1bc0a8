//! The driver against the in-memory store: every algorithm, and the
//! leftovers of interrupted operations.

use super::*;
use crate::check::Problem;
use crate::model::Encapsulation;
use crate::model::{Affinity, AffinityState, Attributes, Block, IpamConfig, Node, Pool, PoolUse};
use crate::store::memory::MemoryStore;
use crate::{gateway, keys};
use ipnet::IpNet;
use std::collections::{BTreeSet, HashSet};

fn pool(name: &str, cidr: &str, block: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        block_size: block,
        disabled: false,
        node_selector: String::new(),
        allowed_uses: vec![PoolUse::Workload],
        encapsulation: Encapsulation::None,
    }
}

async fn setup(pools: &[Pool], cfg: IpamConfig) -> Ipam {
    let ipam = Ipam::new(Arc::new(MemoryStore::new()));
    ipam.set_config(&cfg).await.unwrap();
    for p in pools {
        ipam.add_pool(p).await.unwrap();
    }
    ipam
}

fn lenient() -> IpamConfig {
    IpamConfig {
        reclaim_min_age_secs: 0,
        pending_grace_secs: 0,
        ..Default::default()
    }
}

async fn assert_clean(ipam: &Ipam) {
    let r = ipam.check().await.unwrap();
    assert!(r.clean, "{}", r.human());
}

#[tokio::test]
async fn assigns_dual_stack_from_claimed_blocks() {
    let ipam = setup(
        &[pool("v4", "10.0.0.0/24", 26), pool("v6", "fd00::/120", 122)],
        lenient(),
    )
    .await;
    let got = ipam
        .assign(&AssignRequest::new("net.c1.eth0", "n1", 1, 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|a| !a.borrowed));
    assert!(got[0].addr.is_ipv4() && got[1].addr.is_ipv6());
    let affs = ipam.node_affinities("n1").await.unwrap();
    assert_eq!(affs.len(), 2);
    assert!(affs
        .iter()
        .all(|(a, _)| a.state == AffinityState::Confirmed));
    // A second pod gets the next address of the same block.
    let more = ipam
        .assign(&AssignRequest::new("net.c2.eth0", "n1", 1, 0))
        .await
        .unwrap();
    assert_eq!(more[0].block, got[0].block);
    assert_ne!(more[0].addr, got[0].addr);
    assert_eq!(ipam.addrs_of_handle("net.c1.eth0").await.unwrap().len(), 2);
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn borrows_when_at_max_blocks_and_strict_affinity_forbids_it() {
    let cfg = IpamConfig {
        max_blocks_per_host: 1,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/29", 30)], cfg.clone()).await;
    // n2 holds a block with room.
    ipam.assign(&AssignRequest::new("h0", "n2", 1, 0))
        .await
        .unwrap();
    // n1: 4 from its own block, then one borrowed.
    let got = ipam
        .assign(&AssignRequest::new("h1", "n1", 5, 0))
        .await
        .unwrap();
    assert_eq!(got.iter().filter(|a| a.borrowed).count(), 1, "{got:?}");
    assert_clean(&ipam).await;

    let strict = IpamConfig {
        strict_affinity: true,
        ..cfg
    };
    ipam.set_config(&strict).await.unwrap();
    let before = ipam.check().await.unwrap().addresses_in_use;
    let err = ipam
        .assign(&AssignRequest::new("h2", "n1", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Exhausted { strict: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("strict affinity"));
    // All or nothing: a failed request leaves nothing behind.
    assert_eq!(ipam.check().await.unwrap().addresses_in_use, before);
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn exhaustion_rolls_back_a_partial_assignment() {
    let ipam = setup(&[pool("p", "10.0.0.0/30", 30)], lenient()).await;
    let err = ipam
        .assign(&AssignRequest::new("h", "n1", 5, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                wanted: 5,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    let r = ipam.check().await.unwrap();
    assert_eq!(r.addresses_in_use, 0);
    assert_eq!(r.handles, 0);
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn releases_by_address_and_handle_then_gives_back_empty_blocks() {
    let ipam = setup(&[pool("p", "10.0.0.0/24", 30)], lenient()).await;
    let a = ipam
        .assign(&AssignRequest::new("h1", "n1", 6, 0))
        .await
        .unwrap();
    assert_eq!(ipam.node_affinities("n1").await.unwrap().len(), 2);
    let freed = ipam.release_addrs(&[a[0].addr]).await.unwrap();
    assert_eq!(freed, vec![a[0].addr]);
    // Twice is harmless.
    assert!(ipam.release_addrs(&[a[0].addr]).await.unwrap().is_empty());
    let rest = ipam.release_handle("h1").await.unwrap();
    assert_eq!(rest.len(), 5);
    assert!(ipam.release_handle("h1").await.unwrap().is_empty());
    assert_clean(&ipam).await;
    assert_eq!(
        ipam.release_empty_blocks("n1").await.unwrap(),
        1,
        "never the last block"
    );
    assert_eq!(ipam.node_affinities("n1").await.unwrap().len(), 1);
    assert_eq!(ipam.check().await.unwrap().blocks, 1);
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn node_selectors_and_disabled_pools_are_respected() {
    let mut gpu = pool("gpu", "10.1.0.0/24", 26);
    gpu.node_selector = "gpu == 'true'".into();
    let ipam = setup(&[gpu], lenient()).await;
    let err = ipam
        .assign(&AssignRequest::new("h", "plain", 1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    ipam.set_node(&Node {
        name: "g1".into(),
        labels: [("gpu".into(), "true".into())].into(),
        ..Node::default()
    })
    .await
    .unwrap();
    ipam.assign(&AssignRequest::new("h", "g1", 1, 0))
        .await
        .unwrap();
    ipam.disable_pool("gpu", true).await.unwrap();
    assert!(ipam
        .assign(&AssignRequest::new("h2", "g1", 1, 0))
        .await
        .is_err());
    assert!(matches!(
        ipam.delete_pool("gpu").await,
        Err(IpamError::PoolInUse { in_use: 1, .. })
    ));
    ipam.release_handle("h").await.unwrap();
    ipam.delete_pool("gpu").await.unwrap();
    assert!(ipam.pools().await.unwrap().is_empty());
    let r = ipam.check().await.unwrap();
    assert_eq!(r.blocks, 0);
    assert!(r.clean, "{}", r.human());
}

#[tokio::test]
async fn pool_validation() {
    let ipam = setup(&[pool("a", "10.0.0.0/16", 26)], lenient()).await;
    for bad in [
        pool("b", "10.0.1.0/24", 26),
        pool("c", "10.2.0.0/16", 19),
        pool("d", "10.3.0.1/24", 26),
        pool("e", "10.4.0.0/28", 26),
    ] {
        assert!(ipam.add_pool(&bad).await.is_err(), "{bad:?}");
    }
    assert!(matches!(
        ipam.add_pool(&pool("a", "10.9.0.0/16", 26)).await,
        Err(IpamError::PoolExists(_))
    ));
}

#[tokio::test]
async fn specific_address() {
    let ipam = setup(&[pool("p", "10.0.0.0/24", 26)], lenient()).await;
    let req = AssignRequest::new("h", "n1", 0, 0);
    let a = ipam
        .assign_addr(&req, "10.0.0.77".parse().unwrap())
        .await
        .unwrap();
    assert!(a.borrowed, "an unclaimed block is nobody's");
    let err = ipam
        .assign_addr(
            &AssignRequest::new("h2", "n1", 0, 0),
            "10.0.0.77".parse().unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::AddressInUse { .. }));
    assert!(matches!(
        ipam.assign_addr(&req, "192.0.2.1".parse().unwrap()).await,
        Err(IpamError::NotInPool(_))
    ));
    assert_clean(&ipam).await;
    // The unaffine block is claimable: n1's next claim takes it over.
    let got = ipam
        .assign(&AssignRequest::new("h3", "n1", 1, 0))
        .await
        .unwrap();
    assert!(!got[0].borrowed);
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn empty_block_of_another_node_is_reclaimed_only_after_min_age() {
    let cfg = IpamConfig {
        reclaim_min_age_secs: 3600,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/30", 30)], cfg.clone()).await;
    ipam.assign(&AssignRequest::new("h", "n1", 1, 0))
        .await
        .unwrap();
    ipam.release_handle("h").await.unwrap();
    // n2: the only block is n1's, empty but young; strict so no borrowing.
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        ..cfg.clone()
    })
    .await
    .unwrap();
    assert!(ipam
        .assign(&AssignRequest::new("h2", "n2", 1, 0))
        .await
        .is_err());
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        reclaim_min_age_secs: 0,
        ..cfg
    })
    .await
    .unwrap();
    let got = ipam
        .assign(&AssignRequest::new("h2", "n2", 1, 0))
        .await
        .unwrap();
    assert!(!got[0].borrowed);
    assert!(
        ipam.node_affinities("n1").await.unwrap().is_empty(),
        "n1 lost the affinity"
    );
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn sequence_numbers_guard_gc_against_reassignment() {
    let ipam = setup(&[pool("p", "10.0.0.0/30", 30)], lenient()).await;
    let a = ipam
        .assign(&AssignRequest::new("net.old.eth0", "n1", 1, 0))
        .await
        .unwrap()[0]
        .addr;
    let snap = ipam.snapshot().await.unwrap();
    let seq = snap.blocks[0].0.allocations.values().next().unwrap().seq;
    // Released and (after the other three) handed out again.
    ipam.release_addrs(&[a]).await.unwrap();
    ipam.assign(&AssignRequest::new("x", "n1", 3, 0))
        .await
        .unwrap();
    let again = ipam
        .assign(&AssignRequest::new("net.new.eth0", "n1", 1, 0))
        .await
        .unwrap()[0]
        .addr;
    assert_eq!(again, a);
    assert!(ipam
        .release_guarded(&[(a, Some(seq))])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ipam.addrs_of_handle("net.new.eth0").await.unwrap(), vec![a]);
}

#[tokio::test]
async fn gc_by_live_attachments_and_by_dead_node() {
    let ipam = setup(&[pool("p", "10.0.0.0/24", 28)], lenient()).await;
    for c in ["a", "b", "c"] {
        ipam.assign(&AssignRequest::new(&format!("net.{c}.eth0"), "n1", 1, 0))
            .await
            .unwrap();
    }
    ipam.assign(&AssignRequest::new("other.z.eth0", "n1", 1, 0))
        .await
        .unwrap();
    ipam.assign(&AssignRequest::new("net.q.eth0", "n2", 2, 0))
        .await
        .unwrap();
    let live: HashSet<String> = ["net.a.eth0".to_string()].into();
    let freed = ipam.gc_attachments("n1", "net.", &live).await.unwrap();
    assert_eq!(freed.len(), 2, "b and c; not other.*, not n2's");
    assert_clean(&ipam).await;
    let r = ipam.gc_node("n2").await.unwrap();
    assert_eq!(r.released.len(), 2);
    assert_eq!(r.blocks_deleted, 1);
    assert!(ipam.node_affinities("n2").await.unwrap().is_empty());
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn dead_node_with_borrowed_addresses_in_its_block_leaves_it_unaffine() {
    let cfg = IpamConfig {
        max_blocks_per_host: 1,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/29", 30)], cfg).await;
    ipam.assign(&AssignRequest::new("d", "dead", 1, 0))
        .await
        .unwrap();
    ipam.assign(&AssignRequest::new("l", "live", 6, 0))
        .await
        .unwrap(); // borrows 2 from dead's block
    let r = ipam.gc_node("dead").await.unwrap();
    assert_eq!(r.blocks_fixed, 1);
    assert_clean(&ipam).await;
    let snap = ipam.snapshot().await.unwrap();
    assert!(snap
        .blocks
        .iter()
        .any(|(b, _)| b.affinity.is_none() && b.in_use() == 2));
}

/// Leftovers of a client that died between writes: each is reported, and
/// either the next claim or gc repairs it.
#[tokio::test]
async fn interrupted_operations_are_reported_and_repaired() {
    let ipam = setup(&[pool("p", "10.0.0.0/24", 28)], lenient()).await;
    let store = ipam.store().clone();
    let cidr: IpNet = "10.0.0.16/28".parse().unwrap();

    // 1. A claim that died after its pending affinity.
    let a = Affinity {
        node: "n1".into(),
        cidr,
        state: AffinityState::Pending,
        since: 0,
    };
    store
        .create(&keys::affinity("n1", &cidr), encode(&a))
        .await
        .unwrap();
    let r = ipam.check().await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::AffinityWithoutBlock { .. })),
        "{}",
        r.human()
    );
    // The next claim of that node finishes it.
    let got = ipam
        .assign(&AssignRequest::new("h1", "n1", 1, 0))
        .await
        .unwrap();
    assert_eq!(got[0].block, cidr);
    assert_clean(&ipam).await;

    // 2. An assignment that died between the handle and the block write.
    ipam.handle_add("ghost", &cidr, 2).await.unwrap();
    // 3. An allocation whose handle record was lost.
    let (mut b, rev) = ipam
        .read::<Block>(&keys::block(&cidr))
        .await
        .unwrap()
        .unwrap();
    b.assign(1, "orphan", &Attributes::default(), 0, 0);
    b.changed = 0;
    store
        .update(&keys::block(&cidr), encode(&b), rev)
        .await
        .unwrap();
    // 4. A confirmed affinity whose block vanished.
    let gone: IpNet = "10.0.0.240/28".parse().unwrap();
    let a = Affinity {
        node: "n9".into(),
        cidr: gone,
        state: AffinityState::Confirmed,
        since: 0,
    };
    store
        .create(&keys::affinity("n9", &gone), encode(&a))
        .await
        .unwrap();

    let r = ipam.check().await.unwrap();
    let kinds: Vec<String> = r.problems.iter().map(|p| format!("{p:?}")).collect();
    assert!(r.problems.iter().any(|p| matches!(p, Problem::HandleCountsMissingAddresses { handle, .. } if handle == "ghost")), "{kinds:?}");
    assert!(r.problems.iter().any(|p| matches!(p, Problem::AllocationMissingFromHandle { handle, .. } if handle == "orphan")), "{kinds:?}");
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::AffinityWithoutBlock { node, .. } if node == "n9")),
        "{kinds:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["clean"], false);
    assert!(json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["kind"] == "affinity-without-block"));

    let fixed = ipam.repair().await.unwrap();
    assert!(
        fixed.handles_fixed >= 2 && fixed.affinities_fixed >= 1,
        "{fixed:?}"
    );
    assert_clean(&ipam).await;
    // The orphan is now releasable by handle.
    assert_eq!(ipam.release_handle("orphan").await.unwrap().len(), 1);
}

#[tokio::test]
async fn corrupt_records_are_reported_not_panicked_on() {
    let ipam = setup(&[pool("p", "10.0.0.0/24", 28)], lenient()).await;
    ipam.store()
        .create(
            &keys::block(&"10.0.0.0/28".parse().unwrap()),
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    let r = ipam.check().await.unwrap();
    assert!(r
        .problems
        .iter()
        .any(|p| matches!(p, Problem::Undecodable { .. })));
    let err = ipam
        .release_addrs(&["10.0.0.1".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("petrelctl ipam check"), "{err}");
}

#[tokio::test]
async fn recently_emptied_blocks_are_kept() {
    let cfg = IpamConfig {
        reclaim_min_age_secs: 3600,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/24", 30)], cfg).await;
    ipam.assign(&AssignRequest::new("h1", "n1", 8, 0))
        .await
        .unwrap();
    ipam.release_handle("h1").await.unwrap();
    assert_eq!(ipam.node_affinities("n1").await.unwrap().len(), 2);
    assert_eq!(
        ipam.release_all_empty_blocks().await.unwrap(),
        0,
        "emptied just now"
    );
    assert_eq!(ipam.node_affinities("n1").await.unwrap().len(), 2);
}

fn gw_req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest {
        gateway: true,
        ..AssignRequest::new(handle, node, 1, 0)
    }
}

#[tokio::test]
async fn a_gateway_is_reserved_once_per_block_and_never_given_to_a_pod() {
    let ipam = setup(&[pool("v4", "10.0.0.0/24", 26)], lenient()).await;
    let a = ipam.assign(&gw_req("net.c1.eth0", "n1")).await.unwrap();
    let b = ipam.assign(&gw_req("net.c2.eth0", "n1")).await.unwrap();
    let block = a[0].block;
    let gw: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(block, b[0].block);
    assert_eq!((a[0].gateway, b[0].gateway), (Some(gw), Some(gw)));
    assert_eq!(a[0].addr, "10.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(b[0].addr, "10.0.0.2".parse::<IpAddr>().unwrap());
    let h = gateway::handle("n1", &block);
    assert_eq!(ipam.addrs_of_handle(&h).await.unwrap(), vec![gw]);
    // Asking again, as a repeated ADD does, changes nothing.
    assert_eq!(ipam.ensure_gateway("n1", &block).await.unwrap(), Some(gw));
    assert_eq!(ipam.addrs_of_handle(&h).await.unwrap(), vec![gw]);
    // Not for another node's block, nor through a request without it.
    assert_eq!(ipam.ensure_gateway("n2", &block).await.unwrap(), None);
    let plain = ipam
        .assign(&AssignRequest::new("net.c3.eth0", "n1", 1, 0))
        .await
        .unwrap();
    assert_eq!(plain[0].gateway, None);
    assert_ne!(plain[0].addr, gw);
    assert_clean(&ipam).await;
    assert_eq!(ipam.check().await.unwrap().addresses_in_use, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assignments_reserve_one_gateway() {
    let ipam = setup(&[pool("v4", "10.0.0.0/24", 26)], lenient()).await;
    // The block exists first, so every racer starts from the same block
    // without a gateway.
    ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 0))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        // Separate processes: no shared copies.
        let ipam = Ipam::new(ipam.store().clone());
        tasks.push(tokio::spawn(async move {
            ipam.assign(&gw_req(&format!("net.c{i}.eth0"), "n1"))
                .await
                .unwrap()
        }));
    }
    let mut gws = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for t in tasks {
        let got = t.await.unwrap();
        gws.insert(got[0].gateway.unwrap());
        addrs.insert(got[0].addr);
    }
    assert_eq!(gws.len(), 1, "one gateway: {gws:?}");
    assert_eq!(addrs.len(), 16);
    assert!(!addrs.contains(gws.first().unwrap()));
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn the_group_commit_reserves_the_gateway_in_its_transaction() {
    let ipam = setup(&[pool("v4", "10.0.0.0/24", 26)], lenient()).await;
    ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 0))
        .await
        .unwrap();
    let reqs: Vec<_> = (0..4)
        .map(|i| gw_req(&format!("net.b{i}.eth0"), "n1"))
        .collect();
    let out = ipam.assign_new_batch(&reqs).await.unwrap().unwrap();
    let gw = out[0][0].gateway.unwrap();
    assert!(out
        .iter()
        .all(|g| g[0].gateway == Some(gw) && g[0].addr != gw));
    let block = out[0][0].block;
    assert_eq!(
        ipam.addrs_of_handle(&gateway::handle("n1", &block))
            .await
            .unwrap(),
        vec![gw]
    );
    // The next batch finds it.
    let more: Vec<_> = (0..2)
        .map(|i| gw_req(&format!("net.m{i}.eth0"), "n1"))
        .collect();
    let out = ipam.assign_new_batch(&more).await.unwrap().unwrap();
    assert!(out.iter().all(|g| g[0].gateway == Some(gw)));
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn a_batch_racing_another_reservation_steps_aside() {
    let ipam = setup(&[pool("v4", "10.0.0.0/24", 26)], lenient()).await;
    ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 0))
        .await
        .unwrap();
    // This process keeps a copy of the block without a gateway ...
    let plain = vec![AssignRequest::new("net.p.eth0", "n1", 1, 0)];
    ipam.assign_new_batch(&plain).await.unwrap().unwrap();
    // ... while another reserves it.
    let other = Ipam::new(ipam.store().clone());
    let block = ipam.handle_blocks("net.p.eth0").await.unwrap()[0].1;
    let gw = other.ensure_gateway("n1", &block).await.unwrap().unwrap();
    let reqs = vec![gw_req("net.b.eth0", "n1")];
    assert_eq!(
        ipam.assign_new_batch(&reqs).await.unwrap(),
        Err(batch::Declined::Conflict)
    );
    // Read afresh, the batch finds the other's gateway, and reserves none.
    let out = ipam.assign_new_batch(&reqs).await.unwrap().unwrap();
    assert_eq!(out[0][0].gateway, Some(gw));
    assert_eq!(
        ipam.addrs_of_handle(&gateway::handle("n1", &block))
            .await
            .unwrap(),
        vec![gw]
    );
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn pod_del_and_gc_leave_the_gateway_and_the_block_goes_with_it() {
    // Blocks of four addresses: a gateway and three pods each.
    let ipam = setup(&[pool("v4", "10.1.0.0/24", 30)], lenient()).await;
    let mut blocks = BTreeSet::new();
    for i in 0..4 {
        let got = ipam
            .assign(&gw_req(&format!("net.c{i}.eth0"), "n1"))
            .await
            .unwrap();
        blocks.insert(got[0].block);
    }
    assert_eq!(blocks.len(), 2, "the fourth pod needs a second block");
    // DEL of one pod, GC of the others: only the gateways stay.
    ipam.release_handle("net.c0.eth0").await.unwrap();
    let live = HashSet::new();
    let freed = ipam.gc_attachments("n1", "net.", &live).await.unwrap();
    assert_eq!(freed.len(), 3);
    // A network named so that its prefix would cover them spares them too.
    assert!(ipam
        .gc_attachments("n1", "gateway", &live)
        .await
        .unwrap()
        .is_empty());
    for blk in &blocks {
        let h = gateway::handle("n1", blk);
        assert_eq!(ipam.addrs_of_handle(&h).await.unwrap().len(), 1);
    }
    assert_clean(&ipam).await;
    // Blocks holding only their gateways are empty: one goes, with its
    // gateway's handle record; the node keeps the other.
    assert_eq!(ipam.release_empty_blocks("n1").await.unwrap(), 1);
    let r = ipam.check().await.unwrap();
    assert!(r.clean, "{}", r.human());
    assert_eq!((r.blocks, r.handles, r.addresses_in_use), (1, 1, 1));
    // A node that is gone takes its gateways along.
    ipam.gc_node("n1").await.unwrap();
    let r = ipam.check().await.unwrap();
    assert!(r.clean, "{}", r.human());
    assert_eq!((r.blocks, r.handles, r.addresses_in_use), (0, 0, 0));
}

#[tokio::test]
async fn a_gateway_request_does_not_borrow() {
    let cfg = IpamConfig {
        max_blocks_per_host: 1,
        ..lenient()
    };
    let ipam = setup(&[pool("v4", "10.1.0.0/29", 30)], cfg).await;
    // n2's block has room, n1's is full: without gateways n1 borrows.
    ipam.assign(&gw_req("net.x.eth0", "n2")).await.unwrap();
    for i in 0..3 {
        ipam.assign(&gw_req(&format!("net.c{i}.eth0"), "n1"))
            .await
            .unwrap();
    }
    let err = ipam.assign(&gw_req("net.c9.eth0", "n1")).await.unwrap_err();
    assert!(
        matches!(err, IpamError::Exhausted { strict: true, .. }),
        "{err}"
    );
    let b = ipam
        .assign(&AssignRequest::new("net.c9.eth0", "n1", 1, 0))
        .await
        .unwrap();
    assert!(b[0].borrowed && b[0].gateway.is_none());
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn a_pool_holding_only_gateways_can_be_deleted() {
    let ipam = setup(&[pool("v4", "10.0.0.0/24", 26)], lenient()).await;
    ipam.assign(&gw_req("net.c1.eth0", "n1")).await.unwrap();
    assert!(matches!(
        ipam.delete_pool("v4").await,
        Err(IpamError::PoolInUse { in_use: 1, .. })
    ));
    ipam.release_handle("net.c1.eth0").await.unwrap();
    ipam.delete_pool("v4").await.unwrap();
    let r = ipam.check().await.unwrap();
    assert!(r.clean, "{}", r.human());
    assert_eq!((r.blocks, r.handles), (0, 0));
}

#[tokio::test]
async fn borrowed_addresses_are_indexed_and_the_migration_catches_up_old_ones() {
    let cfg = IpamConfig {
        max_blocks_per_host: 1,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/29", 30)], cfg).await;
    ipam.assign(&AssignRequest::new("h0", "n2", 1, 0))
        .await
        .unwrap();
    let got = ipam
        .assign(&AssignRequest::new("h1", "n1", 5, 0))
        .await
        .unwrap();
    let lent = got.iter().find(|a| a.borrowed).unwrap().addr;
    let index = ipam
        .store()
        .list_keys(&keys::node_borrowed("n1"))
        .await
        .unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].0, keys::borrowed("n1", &lent));
    assert!(ipam
        .store()
        .list_keys(&keys::node_borrowed("n2"))
        .await
        .unwrap()
        .is_empty());

    // A layout from before the index: the entry is missing, check says so.
    let kv = ipam.store().get(&index[0].0).await.unwrap().unwrap();
    ipam.store().delete(&kv.key, kv.mod_revision).await.unwrap();
    let r = ipam.check().await.unwrap();
    assert!(
        r.problems.iter().any(|p| matches!(p, Problem::BorrowedIndexMissing { node, addr, .. } if node == "n1" && *addr == lent)),
        "{}",
        r.human()
    );
    // A stale entry, too.
    let ghost: IpAddr = "10.0.0.7".parse().unwrap();
    ipam.store()
        .create(&keys::borrowed("n3", &ghost), b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(
        ipam.migrate_borrowed_index("n1").await.unwrap(),
        MigrationOutcome::Migrated {
            added: 1,
            removed: 1
        }
    );
    assert_clean(&ipam).await;
    assert_eq!(
        ipam.migrate_borrowed_index("n2").await.unwrap(),
        MigrationOutcome::AlreadyDone
    );

    // CNI GC finds the borrowed address through the index, and its
    // release takes the entry with it.
    let freed = ipam
        .gc_attachments("n1", "h", &HashSet::new())
        .await
        .unwrap();
    assert_eq!(freed.len(), 5, "{freed:?}");
    assert!(ipam
        .store()
        .list_keys(keys::BORROWED)
        .await
        .unwrap()
        .is_empty());
    assert_clean(&ipam).await;
}

#[tokio::test]
async fn the_block_cap_is_per_host_and_a_virtual_node_is_none() {
    let cfg = IpamConfig {
        max_blocks_per_host: 1,
        strict_affinity: true,
        ..lenient()
    };
    let ipam = setup(&[pool("p", "10.0.0.0/28", 30)], cfg).await;
    // A host stops at one block of 4 (strict: no borrowing).
    let err = ipam
        .assign(&AssignRequest::new("h", "n1", 5, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    // The load-balancer pseudo-node takes the blocks it needs.
    let got = ipam
        .assign(&AssignRequest::new("lb", "_load-balancer", 9, 0))
        .await
        .unwrap();
    assert_eq!(got.len(), 9);
    assert_eq!(
        ipam.node_affinities("_load-balancer").await.unwrap().len(),
        3
    );
    assert_clean(&ipam).await;
}
