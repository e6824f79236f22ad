//! The private cluster really starts, serves a migrated store, and stops.

use ledger_store::cluster::{ClusterStatus, PrivateCluster};
use ledger_store::{EventStore, PgEventStore};

#[tokio::test]
async fn a_private_cluster_starts_serves_and_stops() {
    let root =
        std::env::temp_dir().join(format!("escrow-ledger-cluster-test-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = PrivateCluster::new(root.join("pg"), port);
    assert_eq!(cluster.status().unwrap(), ClusterStatus::NotInitialized);
    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.start()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(cluster.status().unwrap(), ClusterStatus::Running { port });
    let pool = ledger_store::connect(&cluster.url()).await.unwrap();
    ledger_store::migrate(&pool).await.unwrap();
    let store = PgEventStore::new(pool.clone());
    assert_eq!(store.head_position("default").await.unwrap(), 0);
    pool.close().await;
    cluster.start().unwrap();
    cluster.stop().unwrap();
    assert_eq!(cluster.status().unwrap(), ClusterStatus::Stopped);
    std::fs::remove_dir_all(&root).unwrap();
}
