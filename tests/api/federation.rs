//! The server's signing key and its publication at `/_matrix/key/v2/server`.

use std::path::{Path, PathBuf};

use mxcd::media::now_ms;
use ruma_common::CanonicalJsonObject;
use ruma_common::canonical_json::CanonicalJsonValue;
use ruma_common::serde::Base64;

use crate::helpers::{Pair, SERVER_NAME, TestApp, assert_error};

/// The RFC 8032 test key (test 1) in Synapse's signing-key format, and its public key.
const SYNAPSE_KEY: &str = "ed25519 a_test nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\n";
const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo";

async fn serving_keys(pair: Pair, key_file: &Path) -> TestApp {
    let path = key_file.to_string_lossy().into_owned();
    TestApp::spawn_with(pair, |s| {
        s.federation.signing_key_path = path;
        s.federation.serve_keys = true;
    })
    .await
}

/// Fetch our key document and check it is signed by the key it publishes. Returns the
/// document and the published (key id, key).
async fn published_keys(app: &TestApp) -> (CanonicalJsonObject, String, String) {
    let res = app.get("/_matrix/key/v2/server").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: CanonicalJsonObject = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let Some(CanonicalJsonValue::Object(verify_keys)) = doc.get("verify_keys") else {
        panic!("no verify_keys in {doc:?}");
    };
    assert_eq!(verify_keys.len(), 1);
    let (key_id, entry) = verify_keys.iter().next().unwrap();
    let Some(CanonicalJsonValue::String(key)) = entry.as_object().and_then(|o| o.get("key")) else {
        panic!("no key in {entry:?}");
    };
    let keys = ruma_signatures::PublicKeySet::from([(key_id.clone(), Base64::parse(key).unwrap())]);
    let map = ruma_signatures::PublicKeyMap::from([(SERVER_NAME.to_owned(), keys)]);
    ruma_signatures::verify_json(&map, &doc).expect("signed by the published key");
    let (key_id, key) = (key_id.clone(), key.clone());
    (doc, key_id, key)
}

async fn the_homeservers_key_is_published_signed(pair: Pair) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("example.org.signing.key");
    std::fs::write(&key_file, SYNAPSE_KEY).unwrap();
    let app = serving_keys(pair, &key_file).await;
    let before = now_ms();
    let (doc, key_id, key) = published_keys(&app).await;
    assert_eq!((key_id.as_str(), key.as_str()), ("ed25519:a_test", PUBLIC));
    assert_eq!(
        doc.get("server_name"),
        Some(&CanonicalJsonValue::String(SERVER_NAME.into()))
    );
    let Some(CanonicalJsonValue::Integer(valid_until)) = doc.get("valid_until_ts") else {
        panic!("no valid_until_ts");
    };
    // The default validity is one day.
    let valid_until = i64::from(*valid_until);
    let day = 24 * 60 * 60 * 1000;
    assert!(
        (before + day..=now_ms() + day).contains(&valid_until),
        "{valid_until}"
    );
    assert_eq!(
        doc.get("old_verify_keys"),
        Some(&CanonicalJsonValue::Object(Default::default()))
    );
}

async fn a_missing_key_file_is_created_and_kept(pair: Pair) {
    let dir = tempfile::tempdir().unwrap();
    let key_file: PathBuf = dir.path().join("keys/mxcd.signing.key");
    let app = serving_keys(pair, &key_file).await;
    let (_, key_id, key) = published_keys(&app).await;
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        text.starts_with(&format!(
            "ed25519 {} ",
            key_id.trim_start_matches("ed25519:")
        )),
        "Synapse's format: {text:?}"
    );
    let app = app.restart_with(|_| {}).await;
    let (_, again_id, again) = published_keys(&app).await;
    assert_eq!(
        (again_id, again),
        (key_id, key),
        "the same key after a restart"
    );
}

async fn keys_are_served_only_when_asked(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let res = app.get("/_matrix/key/v2/server").send().await.unwrap();
    assert_error(res, 404, "M_UNRECOGNIZED").await;
}

crate::on_both_pairs!(
    the_homeservers_key_is_published_signed,
    a_missing_key_file_is_created_and_kept,
    keys_are_served_only_when_asked,
);
