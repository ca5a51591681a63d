//! The real `mxcd` binary as an operator runs it: config errors, `migrate`, streaming
//! memory, and persistence across a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::helpers::{ALICE, Pair, SERVER_NAME, settings_for};

const BIN: &str = env!("CARGO_BIN_EXE_mxcd");

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary and wait for its "listening" log line.
fn start(config: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("MXCD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxcd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(
                    addr.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("mxcd reports its address");
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

fn kib_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// 300 MB, far more than the server may hold in memory: RSS must stay flat while
/// it goes up and comes back down, and the media must survive a restart.
async fn large_files_stream_with_flat_memory(pair: Pair) {
    const SIZE: usize = 300 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    const BUDGET_KIB: u64 = 120 * 1024;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_for(pair, &dir, "http://127.0.0.1:9").await;
    settings.media.max_upload_bytes = 1024 * 1024 * 1024;
    let config = dir.path().join("mxcd.toml");
    std::fs::write(&config, toml::to_string(&settings).unwrap()).unwrap();

    let server = start(&config);
    let client = reqwest::Client::new();
    // Warm up (pools, first multipart) so the baseline is a running server.
    let res = client
        .post(format!("{}/_matrix/media/v3/upload", server.base))
        .bearer_auth(ALICE)
        .body(vec![7u8; 9 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let baseline = kib_field(server.child.id(), "VmRSS:");

    let chunk: bytes::Bytes = crate::helpers::bytes_of(CHUNK, 11).into();
    let mut expected = Sha256::new();
    for _ in 0..SIZE / CHUNK {
        expected.update(&chunk);
    }
    let expected = expected.finalize();
    let body = futures_util::stream::iter(
        (0..SIZE / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let res = client
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=big.bin",
            server.base
        ))
        .bearer_auth(ALICE)
        .header("Content-Length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let uri: serde_json::Value = res.json().await.unwrap();
    let id = crate::helpers::media_id(&uri);

    let download = |base: String| {
        let client = client.clone();
        let id = id.clone();
        async move {
            let res = client
                .get(format!(
                    "{base}/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"
                ))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["content-length"], SIZE.to_string().as_str());
            let mut hasher = Sha256::new();
            let mut stream = res.bytes_stream();
            while let Some(part) = stream.next().await {
                hasher.update(part.unwrap());
            }
            hasher.finalize()
        }
    };
    assert_eq!(download(server.base.clone()).await, expected);
    let peak = kib_field(server.child.id(), "VmHWM:");
    assert!(
        peak < baseline + BUDGET_KIB,
        "peak RSS {peak} KiB vs baseline {baseline} KiB for a {} MiB file",
        SIZE >> 20
    );

    // Restart: the media is still there.
    drop(server);
    let server = start(&config);
    assert_eq!(download(server.base.clone()).await, expected);
}

crate::on_both_pairs!(large_files_stream_with_flat_memory);

fn run_with_config(toml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("MXCD_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_is_one_line_naming_the_key() {
    // (config file, environment, the key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (
            "[media]\nmax_upload_bytes = \"lots\"\n",
            &[],
            "max_upload_bytes",
        ),
        ("[media]\nmax_uplod_bytes = 5\n", &[], "max_uplod_bytes"),
        ("server_name = \"not a name\"\n", &[], "server_name"),
        ("[storage]\nbackend = \"s3\"\n", &[], "storage.bucket"),
        ("", &[("MXCD__HTTP__BIND", "nowhere")], "http.bind"),
    ];
    for (toml, env, key) in cases {
        let (code, stderr) = run_with_config(toml, env);
        assert_ne!(code, 0, "{toml}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(key), "{key} not named in: {stderr}");
    }
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .arg("migrate")
        .current_dir(dir.path())
        .env_remove("MXCD_CONFIG")
        .env("MXCD__DATABASE__URL", "sqlite://state/meta.db")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.path().join("state/meta.db").exists());
}

#[test]
fn bench_thumbnails_reports_per_format_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    });
    img.save(dir.path().join("a.jpg")).unwrap();
    img.save(dir.path().join("b.png")).unwrap();
    std::fs::write(dir.path().join("c.txt"), "not an image").unwrap();
    let out = Command::new(BIN)
        .args(["bench", "thumbnails"])
        .arg(dir.path())
        .args(["--workers", "2", "--repeat", "2", "--json"])
        .env_remove("MXCD_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let formats: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["JPEG", "PNG", "ALL"]);
    assert_eq!(rows[2]["images"], 4, "two images, twice");
    assert!(rows[2]["megapixels_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["sizes"].as_array().unwrap().len(), 5);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(failures[0][0].as_str().unwrap().ends_with("c.txt"));

    let out = Command::new(BIN)
        .args(["bench", "thumbnails"])
        .arg(dir.path())
        .args(["--sizes", "50x50:crop"])
        .env_remove("MXCD_CONFIG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("sizes: 50x50:crop") && table.contains("ALL"),
        "{table}"
    );
}
