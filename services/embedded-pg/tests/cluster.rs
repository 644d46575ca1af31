//! The throwaway cluster `syncline demo` and the tests run on: it serves, survives a crash and
//! restart with its data, and leaves nothing behind when dropped.

use std::time::Duration;

use syncline_embedded_pg::Cluster;

async fn count_rows(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    let n: i64 = client.query_one("select count(*) from t", &[]).await.unwrap().get(0);
    drop(client);
    let _ = driver.await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_keeps_its_data_over_a_restart_and_is_removed_on_drop() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.create_database("demo").await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    client.batch_execute("create table t (x int); insert into t values (1), (2)").await.unwrap();
    drop(client);
    let _ = driver.await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(Duration::from_millis(200)).unwrap();
        cluster
    })
    .await
    .unwrap();
    assert_eq!(count_rows(&url).await, 2, "the data survives a crash and restart");

    // The same name twice is an error that names the database.
    let err = cluster.create_database("demo").await.unwrap_err();
    assert!(err.to_string().contains("demo"), "{err}");

    let addr = cluster.addr;
    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "still serving on {addr} after drop");
    let me = format!("syncline-pg-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&me))
        .collect();
    assert!(left.is_empty(), "files left behind: {:?}", left.iter().map(|e| e.path()).collect::<Vec<_>>());
}
