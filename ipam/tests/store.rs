//! The store conformance suite against both real backends: an etcd started
//! here on a loopback port, and a redb file; plus the behaviours only a
//! real backend has (persistence, unreachable endpoints, a locked file).

use petrel_ipam::store::embedded::EmbeddedStore;
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::store::{conformance, Store, StoreError};
use petrel_ipam::testing::{etcd_binary, require, EtcdServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    if !require("etcd (Debian: etcd-server)", etcd_binary().is_some()) {
        return;
    }
    let etcd = EtcdServer::start().expect("start etcd");
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint.clone()]))
        .await
        .expect("connect");
    conformance::run_all(Arc::new(store), "/petrel-test/conformance").await;

    // A list of endpoints with a dead one in it still works.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = EtcdConfig::new(vec![
        format!("http://127.0.0.1:{dead}"),
        etcd.endpoint.clone(),
    ]);
    let store = EtcdStore::connect(&cfg).await.expect("connect");
    for i in 0..10 {
        store
            .create(&format!("/petrel-test/multi/{i}"), b"x".to_vec())
            .await
            .expect("writes succeed through the live endpoint");
    }
}

/// Members that accept connections and never answer (an etcd member whose
/// links are down looks like that to the client: its connection stays
/// "ready" until the keepalive gives up). With two of three endpoints such
/// black holes, every request still succeeds: its retries go to each
/// member in turn. Through the balancer alone, each of the four attempts
/// could land on a black hole (a CNI ADD failed so in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_past_members_that_never_answer() {
    if !require("etcd (Debian: etcd-server)", etcd_binary().is_some()) {
        return;
    }
    let etcd = EtcdServer::start().expect("start etcd");
    // Listening, never accepting: the kernel completes the handshakes, and
    // nothing ever answers on them.
    let holes: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut endpoints: Vec<String> = holes
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    endpoints.push(etcd.endpoint.clone());
    let mut cfg = EtcdConfig::new(endpoints);
    cfg.timeout = Duration::from_millis(400);
    let store = EtcdStore::connect(&cfg).await.expect("connect");
    for i in 0..10 {
        let key = format!("/petrel-test/holes/{i}");
        store
            .create(&key, b"x".to_vec())
            .await
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        let kv = store
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("read {i} failed: {e}"));
        assert_eq!(kv.map(|kv| kv.value), Some(b"x".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/ipam.db");
    let rev = {
        let store = EmbeddedStore::open(&path, Duration::from_secs(1)).expect("open");
        conformance::run_all(Arc::new(store), "/petrel-test/conformance").await;
        let store = EmbeddedStore::open(&path, Duration::from_secs(1));
        // The first handle was moved into run_all and dropped: the file is
        // free again.
        let store = store.expect("reopen after drop");
        let r = store
            .create("/persist/k", b"v".to_vec())
            .await
            .expect("create");
        r
    };
    let store = EmbeddedStore::open(&path, Duration::from_secs(1)).expect("reopen");
    let kv = store
        .get("/persist/k")
        .await
        .expect("get")
        .expect("persisted");
    assert_eq!(kv.value, b"v");
    assert_eq!(kv.mod_revision, rev, "revisions survive a reopen");
    let r2 = store
        .create("/persist/k2", b"v".to_vec())
        .await
        .expect("create");
    assert!(r2 > rev, "the revision counter persists");
    // A watch from before this process opened the file cannot be served.
    assert!(matches!(
        store.watch("/persist/", 1).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_file_held_by_another_handle_times_out_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam.db");
    let _held = EmbeddedStore::open(&path, Duration::from_secs(1)).expect("open");
    let t = Instant::now();
    let err = match EmbeddedStore::open(&path, Duration::from_millis(200)) {
        Err(e) => e,
        Ok(_) => panic!("a second open of a held file must fail"),
    };
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(err.to_string().contains("ipam.db"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_names_its_endpoints_quickly() {
    // A port nothing listens on: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let ep = format!("http://127.0.0.1:{port}");
    let mut cfg = EtcdConfig::new(vec![ep.clone()]);
    cfg.timeout = Duration::from_millis(500);
    let store = EtcdStore::connect(&cfg).await.expect("lazy connect");
    let t = Instant::now();
    let err = store.ping().await.expect_err("nothing listens there");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains(&ep), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_client_certificates() {
    let has_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok();
    if !require("etcd (Debian: etcd-server)", etcd_binary().is_some())
        || !require("the openssl command", has_openssl)
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = petrel_ipam::testing::make_tls_files(dir.path()).expect("certificates");
    let etcd = EtcdServer::start_tls(tls.clone()).expect("start etcd with TLS");
    let mut cfg = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    cfg.ca = Some(tls.ca.clone());
    cfg.cert = Some(tls.client_cert.clone());
    cfg.key = Some(tls.client_key.clone());
    let store = EtcdStore::connect(&cfg).await.expect("connect with TLS");
    conformance::create_is_if_absent(&store, "/petrel-test/tls").await;
    conformance::update_and_delete_need_the_revision(&store, "/petrel-test/tls-cas").await;

    // Without a client certificate etcd refuses the connection.
    let mut no_cert = cfg.clone();
    no_cert.cert = None;
    no_cert.key = None;
    no_cert.timeout = Duration::from_secs(1);
    no_cert.attempts = 1;
    let anonymous = EtcdStore::connect(&no_cert).await.expect("lazy connect");
    let err = anonymous
        .ping()
        .await
        .expect_err("etcd requires a client certificate");
    assert!(err.to_string().contains(&etcd.endpoint), "{err}");
    // Half a client identity is a configuration error, named.
    let mut half = cfg.clone();
    half.key = None;
    let err = match EtcdStore::connect(&half).await {
        Err(e) => e,
        Ok(_) => panic!("a certificate without its key must be refused"),
    };
    assert!(err.to_string().contains("etcd_key"), "{err}");
}
