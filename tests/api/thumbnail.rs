//! Thumbnails over HTTP: sizes, pre-generation, on-demand generation, errors.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::Method;

use crate::helpers::{ALICE, Pair, SERVER_NAME, TestApp, assert_error, wait_until};

pub fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 28;
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) as u8) ^ (n as u8),
        ])
    })
}

pub fn encoded(img: RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn path(id: &str, query: &str) -> String {
    format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?{query}")
}

async fn get_image(app: &TestApp, id: &str, query: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let res = app
        .authed(Method::GET, &path(id, query))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap().to_vec();
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    (headers, body)
}

/// Upload a `w` x `h` JPEG and wait until the original plus the five recommended
/// thumbnails are stored, without anyone asking for them.
async fn upload_pregenerated(app: &TestApp, w: u32, h: u32) -> String {
    let id = app
        .upload(
            encoded(photo(w, h), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    wait_until("pre-generated thumbnails", || async {
        app.stored_objects().await.0 == 6
    })
    .await;
    id
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height())
}

async fn recommended_sizes_are_pregenerated_and_exact(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = upload_pregenerated(&app, 1600, 1000).await;

    let cases = [
        ("width=32&height=32&method=crop", (32, 32)),
        ("width=96&height=96&method=crop", (96, 96)),
        ("width=320&height=240&method=scale", (320, 200)),
        ("width=640&height=480", (640, 400)),
        ("width=800&height=600&method=scale", (800, 500)),
    ];
    for (query, expected) in cases {
        let (headers, body) = get_image(&app, &id, query).await;
        assert_eq!(headers["content-type"], "image/jpeg", "{query}");
        assert_eq!(
            headers["content-disposition"],
            "inline; filename=\"thumbnail.jpg\""
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(headers.contains_key("content-security-policy"));
        assert_eq!(dims(&body), expected, "{query}");
    }
    // Serving them generated nothing new.
    assert_eq!(app.stored_objects().await.0, 6);
}

async fn other_sizes_are_made_on_demand_never_upscaled(pair: Pair) {
    // No pre-generated sizes: every request is generated on demand.
    let app = TestApp::spawn_with(pair, |s| s.thumbnails.sizes.clear()).await;
    let id = app
        .upload(
            encoded(photo(1000, 1600), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    let (_, body) = get_image(&app, &id, "width=100&height=100&method=scale").await;
    assert_eq!(dims(&body), (63, 100));
    let (_, body) = get_image(&app, &id, "width=150&height=100&method=crop").await;
    assert_eq!(dims(&body), (150, 100));
    // Bigger than the source: the original itself.
    let original = encoded(photo(1000, 1600), ImageFormat::Png);
    let (headers, body) = get_image(&app, &id, "width=2000&height=2000&method=scale").await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(body, original);
    // Same request, same bytes.
    let (_, a) = get_image(&app, &id, "width=123&height=77&method=crop").await;
    let (_, b) = get_image(&app, &id, "width=123&height=77&method=crop").await;
    assert_eq!(a, b);
    assert_eq!(dims(&a), (123, 77));
}

async fn pregenerated_sizes_answer_nearby_requests(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = upload_pregenerated(&app, 1000, 1600).await;
    // 100x100 scale needs at least 63x100: the 320x240 thumbnail (150x240) is the smallest that fits.
    let (_, body) = get_image(&app, &id, "width=100&height=100&method=scale").await;
    assert_eq!(dims(&body), (150, 240));
    // 50x50 crop: the 96x96 crop.
    let (_, body) = get_image(&app, &id, "width=50&height=50&method=crop").await;
    assert_eq!(dims(&body), (96, 96));
    // 200x100 crop has no pre-generated match: made on demand and stored.
    let (_, body) = get_image(&app, &id, "width=200&height=100&method=crop").await;
    assert_eq!(dims(&body), (200, 100));
    assert_eq!(app.stored_objects().await.0, 7);
}

async fn small_images_are_served_as_they_are(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let gif = encoded(photo(60, 40), ImageFormat::Gif);
    // Declared with a bogus type: the thumbnail still says what the image is.
    let id = app.upload(gif.clone(), Some("img/gif"), None).await;
    let (headers, body) = get_image(&app, &id, "width=96&height=96&method=crop").await;
    assert_eq!(headers["content-type"], "image/gif");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"thumbnail.gif\""
    );
    assert_eq!(body, gif);
}

/// Ten concurrent requests for `query` of `id`, spread over `apps`; all answers must be
/// the same bytes, which are returned.
async fn ten_identical_answers(apps: &[&TestApp], id: &str, query: &str) -> bytes::Bytes {
    let requests = (0..10).map(|i| {
        let req = apps[i % apps.len()].authed(Method::GET, &path(id, query));
        tokio::spawn(async move { req.send().await.unwrap().bytes().await.unwrap() })
    });
    let bodies: Vec<_> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "all answers identical"
    );
    bodies.into_iter().next().expect("ten answers")
}

async fn concurrent_requests_generate_once(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.thumbnails.sizes.clear()).await;
    let id = app
        .upload(
            encoded(photo(1200, 900), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    assert_eq!(
        app.stored_objects().await.0,
        1,
        "nothing pre-generated with no sizes configured"
    );
    let body = ten_identical_answers(&[&app], &id, "width=200&height=150&method=crop").await;
    assert_eq!(dims(&body), (200, 150));
    assert_eq!(app.stored_objects().await.0, 2, "one thumbnail stored");
    assert_eq!(app.media.thumbnail_jobs_run(), 1, "decoded once");
}

async fn processes_sharing_a_database_generate_once(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.thumbnails.sizes.clear()).await;
    let other = TestApp::spawn_sharing(&app).await;
    let id = app
        .upload(
            encoded(photo(1200, 900), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    let body =
        ten_identical_answers(&[&app, &other], &id, "width=200&height=150&method=crop").await;
    assert_eq!(dims(&body), (200, 150));
    assert_eq!(
        app.media.thumbnail_jobs_run() + other.media.thumbnail_jobs_run(),
        1,
        "decoded once across both processes"
    );
}

async fn fixed_sizes_serve_the_nearest_larger(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.thumbnails.dynamic = false).await;
    let id = app
        .upload(
            encoded(photo(1600, 1000), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    let (_, body) = get_image(&app, &id, "width=300&height=300&method=scale").await;
    assert_eq!(
        dims(&body),
        (320, 200),
        "the smallest scale thumbnail at least 300x188"
    );
    let (_, body) = get_image(&app, &id, "width=50&height=50&method=crop").await;
    assert_eq!(dims(&body), (96, 96));
    let (headers, _) = get_image(&app, &id, "width=1000&height=1000&method=scale").await;
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(
        headers["content-length"],
        encoded(photo(1600, 1000), ImageFormat::Jpeg)
            .len()
            .to_string()
            .as_str()
    );
    wait_until("pre-generation to finish", || async {
        app.stored_objects().await.0 == 6
    })
    .await;
}

async fn bad_parameters(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = app
        .upload(
            encoded(photo(100, 100), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    let cases = [
        ("height=32", "M_MISSING_PARAM"),
        ("width=32", "M_MISSING_PARAM"),
        ("width=abc&height=32", "M_INVALID_PARAM"),
        ("width=-5&height=32", "M_INVALID_PARAM"),
        ("width=0&height=32", "M_INVALID_PARAM"),
        ("width=32&height=32&method=fit", "M_INVALID_PARAM"),
        ("width=32&height=32&animated=maybe", "M_INVALID_PARAM"),
    ];
    for (query, errcode) in cases {
        let res = app
            .authed(Method::GET, &path(&id, query))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        assert_error(res, 400, errcode).await;
    }
    // Auth comes first.
    let res = app.get(&path(&id, "")).send().await.unwrap();
    assert_error(res, 401, "M_MISSING_TOKEN").await;
    let res = app
        .authed(Method::GET, &path("nope", "width=32&height=32"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    // animated=true on a still image: a still thumbnail.
    let (_, body) = get_image(&app, &id, "width=32&height=32&method=crop&animated=true").await;
    assert_eq!(dims(&body), (32, 32));
}

async fn content_that_cannot_be_thumbnailed(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let text = app.upload("just text", Some("text/plain"), None).await;
    let fake = app
        .upload("not a png at all", Some("image/png"), None)
        .await;
    let truncated = encoded(photo(300, 300), ImageFormat::Png);
    let truncated = app
        .upload(
            truncated[..truncated.len() / 2].to_vec(),
            Some("image/png"),
            None,
        )
        .await;
    let svg = app
        .upload(
            "<svg xmlns='http://www.w3.org/2000/svg'/>",
            Some("image/svg+xml"),
            None,
        )
        .await;
    for id in [&text, &fake, &truncated, &svg] {
        for _ in 0..2 {
            let res = app
                .authed(Method::GET, &path(id, "width=32&height=32"))
                .send()
                .await
                .unwrap();
            assert_error(res, 400, "M_UNKNOWN").await;
        }
    }
    // A tiny file declaring 60000 x 60000 pixels is refused from its header.
    let mut bmp = b"BM".to_vec();
    for v in [58u32, 0, 54, 40, 60_000, 60_000] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&[1, 0, 24, 0]);
    bmp.extend_from_slice(&[0; 28]);
    let bomb = app.upload(bmp, Some("image/bmp"), None).await;
    let res = app
        .authed(Method::GET, &path(&bomb, "width=32&height=32"))
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "M_TOO_LARGE").await;
    // The server keeps serving.
    let ok = app
        .upload(
            encoded(photo(200, 100), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    let (_, body) = get_image(&app, &ok, "width=50&height=50&method=crop").await;
    assert_eq!(
        dims(&body),
        (96, 96),
        "served from the pre-generated 96x96 crop"
    );
}

async fn jobs_past_the_time_limit_are_refused_and_remembered(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| {
        s.thumbnails.sizes.clear();
        s.thumbnails.job_timeout_secs = 0;
    })
    .await;
    let id = app
        .upload(
            encoded(photo(1500, 1500), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    for _ in 0..2 {
        let res = app
            .authed(Method::GET, &path(&id, "width=64&height=64"))
            .send()
            .await
            .unwrap();
        assert_error(res, 413, "M_TOO_LARGE").await;
    }
    assert_eq!(app.stored_objects().await.0, 1, "no thumbnail stored");
}

/// 4 frames of 240x180, 80 ms each, looping forever.
const ANIMATED_GIF: &[u8] = include_bytes!("../fixtures/animated-4x80ms.gif");

async fn animated_requests_get_animated_webp(pair: Pair) {
    use image::AnimationDecoder;
    let app = TestApp::spawn(pair).await;
    let id = app.upload(ANIMATED_GIF, Some("image/gif"), None).await;
    let (headers, body) =
        get_image(&app, &id, "width=96&height=96&method=crop&animated=true").await;
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"thumbnail.webp\""
    );
    let frames = image::codecs::webp::WebPDecoder::new(Cursor::new(&body))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 4);
    for f in &frames {
        assert_eq!(f.buffer().dimensions(), (96, 96));
        assert_eq!(f.delay().numer_denom_ms(), (80, 1));
    }
    // Without animated=true: a still image.
    for query in [
        "width=96&height=96&method=crop",
        "width=96&height=96&method=crop&animated=false",
    ] {
        let (headers, body) = get_image(&app, &id, query).await;
        assert_ne!(headers["content-type"], "image/webp", "{query}");
        assert_eq!(dims(&body), (96, 96));
    }
    // animated=true on a still image: a still thumbnail.
    let still = app
        .upload(
            encoded(photo(400, 300), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    let (headers, body) =
        get_image(&app, &still, "width=96&height=96&method=crop&animated=true").await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(dims(&body), (96, 96));
}

async fn legacy_thumbnails_honour_the_freeze(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = app
        .upload(
            encoded(photo(300, 200), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    let legacy =
        format!("/_matrix/media/v3/thumbnail/{SERVER_NAME}/{id}?width=32&height=32&method=crop");
    let res = app.get(&legacy).send().await.unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let app = app
        .restart_with(|s| s.media.freeze_unauthenticated = false)
        .await;
    let old_id = id;
    let id = app
        .upload(
            encoded(photo(300, 200), ImageFormat::Jpeg),
            Some("image/jpeg"),
            None,
        )
        .await;
    let res = app
        .get(&format!(
            "/_matrix/media/v3/thumbnail/{SERVER_NAME}/{id}?width=32&height=32&method=crop"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(dims(&res.bytes().await.unwrap()), (32, 32));
    let res = app.get(&legacy.replace(&id, &old_id)).send().await.unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
}

async fn thumbnail_of_pending_media_times_out(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let (id, _) = app.create(ALICE).await;
    let res = app
        .request(Method::GET, &path(&id, "width=32&height=32&timeout_ms=300"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_error(res, 504, "M_NOT_YET_UPLOADED").await;
}

/// 48x32, four coloured quadrants; with and without an alpha image.
const AVIF: &[u8] = include_bytes!("../fixtures/avif/yuv420.avif");
const AVIF_ALPHA: &[u8] = include_bytes!("../fixtures/avif/alpha.avif");

async fn avif_uploads_get_jpeg_or_png_thumbnails(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for (data, content_type) in [(AVIF, "image/jpeg"), (AVIF_ALPHA, "image/png")] {
        let id = app.upload(data, Some("image/avif"), None).await;
        // Not every client shows AVIF: a box larger than the image gets it re-encoded
        // at its own size, not the original.
        for (query, expected) in [
            ("width=32&height=32&method=crop", (32, 32)),
            ("width=320&height=240&method=scale", (48, 32)),
        ] {
            let (headers, body) = get_image(&app, &id, query).await;
            assert_eq!(headers["content-type"], content_type, "{query}");
            assert_eq!(dims(&body), expected, "{query}");
        }
    }
}

crate::on_both_pairs!(
    avif_uploads_get_jpeg_or_png_thumbnails,
    recommended_sizes_are_pregenerated_and_exact,
    other_sizes_are_made_on_demand_never_upscaled,
    pregenerated_sizes_answer_nearby_requests,
    small_images_are_served_as_they_are,
    concurrent_requests_generate_once,
    processes_sharing_a_database_generate_once,
    fixed_sizes_serve_the_nearest_larger,
    bad_parameters,
    content_that_cannot_be_thumbnailed,
    legacy_thumbnails_honour_the_freeze,
    thumbnail_of_pending_media_times_out,
    animated_requests_get_animated_webp,
    jobs_past_the_time_limit_are_refused_and_remembered,
);
