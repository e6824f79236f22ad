//! Two relays for one sink take turns: the cursor's lease (against a real PostgreSQL).

use ledger_events::cursor;
use ledger_store::testdb::TestDb;

#[tokio::test]
async fn a_second_relay_waits_for_the_lease_and_cannot_advance_a_cursor_it_does_not_hold() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let ledger = ledger_store::DEFAULT_LEDGER;
    assert_eq!(
        cursor::claim(&pool, ledger, "nats:ESCROW", "relay-a")
            .await
            .unwrap()
            .map(|c| c.position),
        Some(0)
    );
    assert_eq!(
        cursor::claim(&pool, ledger, "nats:ESCROW", "relay-b")
            .await
            .unwrap()
            .map(|c| c.position),
        None,
        "held by a"
    );
    assert!(
        cursor::advance(&pool, ledger, "nats:ESCROW", "relay-a", 10, 10, None)
            .await
            .unwrap()
    );
    assert!(
        !cursor::advance(&pool, ledger, "nats:ESCROW", "relay-b", 20, 10, None)
            .await
            .unwrap(),
        "b does not hold the lease: its advance changes nothing"
    );
    // Another sink is another cursor.
    assert_eq!(
        cursor::claim(&pool, ledger, "webhooks", "relay-b")
            .await
            .unwrap()
            .map(|c| c.position),
        Some(0)
    );
    cursor::release(&pool, ledger, "nats:ESCROW", "relay-a")
        .await
        .unwrap();
    assert_eq!(
        cursor::claim(&pool, ledger, "nats:ESCROW", "relay-b")
            .await
            .unwrap()
            .map(|c| c.position),
        Some(10),
        "b resumes where a advanced"
    );
    // An expired lease is taken over (a relay killed without releasing it).
    sqlx::query("update ledger.event_cursors set lease_until = now() - interval '1 second' where sink = 'nats:ESCROW'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        cursor::claim(&pool, ledger, "nats:ESCROW", "relay-c")
            .await
            .unwrap()
            .map(|c| c.position),
        Some(10)
    );
    assert!(
        !cursor::advance(&pool, ledger, "nats:ESCROW", "relay-b", 30, 1, None)
            .await
            .unwrap()
    );
    let status = cursor::status(&pool).await.unwrap();
    let nats = status.iter().find(|s| s.sink == "nats:ESCROW").unwrap();
    assert_eq!(
        (nats.position, nats.leased_by.as_deref()),
        (10, Some("relay-c"))
    );
}
