//! Blob first, metadata last: interrupted uploads leave nothing visible, and the
//! sweeper removes what a crash could leave behind.

use std::time::Duration;

use futures_util::stream;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::helpers::{ALICE, Pair, TestApp, bytes_of, wait_until};

async fn interrupted_upload_leaves_nothing(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let addr = app.base.strip_prefix("http://").unwrap().to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 20000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // More than one multipart part, then the client goes away.
    tcp.write_all(&bytes_of(9 * 1024 * 1024, 2)).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);

    wait_until("the aborted upload to be cleaned up", || async {
        app.stored_objects().await == (0, 0)
    })
    .await;
    // And the server keeps serving.
    let id = app.upload("after", None, None).await;
    assert_eq!(app.download(&id).await.text().await.unwrap(), "after");
}

async fn sweeper_removes_orphans_and_keeps_referenced_blobs(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.orphan_grace_secs = 0).await;
    let kept = app.upload("referenced", None, None).await;
    // A blob whose metadata never got written (a crash between the two steps).
    let chunks = stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"orphan",
    ))]);
    app.media.blobs().put_stream(chunks, 100).await.unwrap();
    // A staging object from an upload that died with its process.
    app.media
        .blobs()
        .object_store()
        .put(
            &Path::from("staging/deadbeef"),
            PutPayload::from_static(b"partial"),
        )
        .await
        .unwrap();
    assert_eq!(app.stored_objects().await, (2, 1));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = app.media.sweep().await.unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.staging_removed, 1);
    assert_eq!(app.stored_objects().await, (1, 0));
    assert_eq!(
        app.download(&kept).await.text().await.unwrap(),
        "referenced"
    );
}

async fn sweeper_spares_young_objects(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.orphan_grace_secs = 3600).await;
    let chunks = stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"in flight",
    ))]);
    app.media.blobs().put_stream(chunks, 100).await.unwrap();
    app.media
        .blobs()
        .object_store()
        .put(
            &Path::from("staging/inflight"),
            PutPayload::from_static(b"partial"),
        )
        .await
        .unwrap();
    let report = app.media.sweep().await.unwrap();
    assert_eq!((report.blobs_removed, report.staging_removed), (0, 0));
    assert_eq!(app.stored_objects().await, (1, 1));
}

crate::on_both_pairs!(
    interrupted_upload_leaves_nothing,
    sweeper_removes_orphans_and_keeps_referenced_blobs,
    sweeper_spares_young_objects,
);
