//! One contract for the metadata layer, run against SQLite and Postgres.

use std::sync::Arc;

use mxcd::db::{
    AlreadyExists, Content, MediaRepo, MediaState, NewMedia, NewPending, PgRepo, SqliteRepo,
};
use mxcd::domain::{ContentHash, ContentType, FileName, MediaId, Mxc, ServerName, UserId};

use crate::helpers::fresh_postgres_url;

fn mxc(id: &str) -> Mxc {
    Mxc::new(
        ServerName::parse("test.local").unwrap(),
        MediaId::parse(id).unwrap(),
    )
}

fn user(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:test.local")).unwrap()
}

fn content(seed: u8, size: u64) -> Content {
    Content {
        content_type: ContentType::parse("image/png").unwrap(),
        filename: Some(FileName::parse("ü; \"x\".png").unwrap()),
        size,
        sha256: ContentHash::from_bytes([seed; 32]),
    }
}

async fn contract(repo: Arc<dyn MediaRepo>) {
    repo.migrate().await.unwrap();
    repo.migrate().await.expect("migrating twice is a no-op");
    repo.ping().await.unwrap();

    // Insert and read back, including sizes past 2 GiB and 4 GiB.
    let big = 5 * 1024 * 1024 * 1024u64;
    let media = NewMedia {
        mxc: mxc("one"),
        uploader: Some(user("alice")),
        content: content(1, big),
        now: 1000,
        authenticated: true,
    };
    assert_eq!(repo.insert_media(&media).await.unwrap(), Ok(()));
    assert_eq!(repo.insert_media(&media).await.unwrap(), Err(AlreadyExists));
    let got = repo.get_media(&mxc("one")).await.unwrap().expect("row");
    assert_eq!(got.mxc, mxc("one"));
    assert_eq!(got.uploader, Some(user("alice")));
    assert!(got.authenticated);
    assert_eq!((got.created_ts, got.last_access_ts), (1000, 1000));
    assert_eq!(
        got.state,
        MediaState::Ready {
            content: content(1, big),
            uploaded_ts: 1000
        }
    );
    assert!(repo.get_media(&mxc("missing")).await.unwrap().is_none());

    // Same id on another server is another media item.
    let remote = Mxc::new(
        ServerName::parse("other.example").unwrap(),
        MediaId::parse("one").unwrap(),
    );
    let media2 = NewMedia {
        mxc: remote.clone(),
        uploader: None,
        content: content(2, 3),
        now: 5,
        authenticated: false,
    };
    assert_eq!(repo.insert_media(&media2).await.unwrap(), Ok(()));
    assert!(
        !repo
            .get_media(&remote)
            .await
            .unwrap()
            .unwrap()
            .authenticated
    );

    // Blob references.
    assert!(
        repo.is_blob_referenced(&ContentHash::from_bytes([1; 32]))
            .await
            .unwrap()
    );
    assert!(
        !repo
            .is_blob_referenced(&ContentHash::from_bytes([9; 32]))
            .await
            .unwrap()
    );

    // Touch only moves forward.
    repo.touch_media(&mxc("one"), 5000).await.unwrap();
    repo.touch_media(&mxc("one"), 4000).await.unwrap();
    assert_eq!(
        repo.get_media(&mxc("one"))
            .await
            .unwrap()
            .unwrap()
            .last_access_ts,
        5000
    );

    // Pending uploads, with a per-user limit counting only unexpired reservations.
    let pending = |id: &str, who: &str, now, expires| NewPending {
        mxc: mxc(id),
        uploader: user(who),
        now,
        expires_ts: expires,
        authenticated: true,
    };
    assert!(
        repo.create_pending(&pending("p1", "bob", 100, 200), 2)
            .await
            .unwrap()
    );
    assert!(
        repo.create_pending(&pending("p2", "bob", 100, 10_000), 2)
            .await
            .unwrap()
    );
    assert!(
        !repo
            .create_pending(&pending("p3", "bob", 150, 10_000), 2)
            .await
            .unwrap(),
        "limit reached"
    );
    assert!(
        repo.create_pending(&pending("p3", "bob", 300, 10_000), 2)
            .await
            .unwrap(),
        "p1 expired at 200"
    );
    assert!(
        repo.create_pending(&pending("c1", "carol", 300, 10_000), 2)
            .await
            .unwrap()
    );
    assert!(
        !repo
            .create_pending(&pending("one", "carol", 300, 10_000), 2)
            .await
            .unwrap(),
        "id taken"
    );
    assert_eq!(
        repo.get_media(&mxc("p2")).await.unwrap().unwrap().state,
        MediaState::Pending { expires_ts: 10_000 }
    );
    assert!(
        !repo
            .is_blob_referenced(&ContentHash::from_bytes([3; 32]))
            .await
            .unwrap()
    );

    // Finishing: once only.
    assert!(
        repo.finish_pending(&mxc("p2"), &content(3, 42), 400)
            .await
            .unwrap()
    );
    assert!(
        !repo
            .finish_pending(&mxc("p2"), &content(4, 43), 500)
            .await
            .unwrap()
    );
    assert!(
        !repo
            .finish_pending(&mxc("nope"), &content(4, 43), 500)
            .await
            .unwrap()
    );
    let got = repo.get_media(&mxc("p2")).await.unwrap().unwrap();
    assert_eq!(
        got.state,
        MediaState::Ready {
            content: content(3, 42),
            uploaded_ts: 400
        }
    );
    assert_eq!(got.uploader, Some(user("bob")));
    assert!(
        repo.is_blob_referenced(&ContentHash::from_bytes([3; 32]))
            .await
            .unwrap()
    );

    // Expired reservations are deleted; uploaded and unexpired ones stay.
    assert_eq!(repo.delete_expired_pending(1000).await.unwrap(), 1);
    assert!(repo.get_media(&mxc("p1")).await.unwrap().is_none());
    assert!(repo.get_media(&mxc("p2")).await.unwrap().is_some());
    assert!(repo.get_media(&mxc("p3")).await.unwrap().is_some());
    assert_eq!(repo.delete_expired_pending(1000).await.unwrap(), 0);

    // Thumbnail leases: one holder at a time, taken over once expired, released only
    // by their holder.
    let m = mxc("one");
    assert!(repo.try_lease(&m, "set", "a", 100, 200).await.unwrap());
    assert!(!repo.try_lease(&m, "set", "b", 150, 250).await.unwrap());
    assert!(
        repo.try_lease(&m, "96x96:crop", "b", 150, 250)
            .await
            .unwrap()
    );
    assert!(repo.lease_held(&m, "set", 150).await.unwrap());
    repo.release_lease(&m, "set", "b").await.unwrap();
    assert!(
        repo.lease_held(&m, "set", 150).await.unwrap(),
        "not b's lease"
    );
    assert!(!repo.lease_held(&m, "set", 201).await.unwrap(), "expired");
    assert!(repo.try_lease(&m, "set", "b", 201, 300).await.unwrap());
    assert!(!repo.try_lease(&m, "set", "a", 250, 350).await.unwrap());
    repo.release_lease(&m, "set", "b").await.unwrap();
    assert!(!repo.lease_held(&m, "set", 250).await.unwrap());
    assert!(repo.try_lease(&m, "set", "a", 250, 350).await.unwrap());
}

#[tokio::test]
async fn sqlite_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/meta.db", dir.path().display());
    contract(Arc::new(SqliteRepo::connect(&url, 4).await.unwrap())).await;
}

#[tokio::test]
async fn postgres_meets_the_contract() {
    let url = fresh_postgres_url().await;
    contract(Arc::new(PgRepo::connect(&url, 4).await.unwrap())).await;
}
