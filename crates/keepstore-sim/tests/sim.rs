//! Integration tests of keepstore-sim through its HTTP API (reqwest against
//! in-process clusters): every status code a client can meet, the fault
//! knobs, directory storage, synthetic indexes, seeding, counters, stopping
//! services and the HTTPS API stub.

use std::time::{Duration, Instant};

use keep_protocol::{sign_locator, BlockHash, Locator};
use keepstore_sim::{Cluster, ClusterConfig, Faults, SizeRange, SyntheticIndex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = "root-token-for-tests";
const KEY: &str = "blob-signing-key-for-tests";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn start(n: usize) -> Cluster {
    Cluster::start(ClusterConfig::new(n, ROOT)).await.unwrap()
}

async fn signed_cluster(n: usize) -> Cluster {
    let cfg = ClusterConfig {
        signing_key: Some(KEY.into()),
        enforce_signatures: true,
        ..ClusterConfig::new(n, ROOT)
    };
    Cluster::start(cfg).await.unwrap()
}

async fn status(rb: reqwest::RequestBuilder) -> u16 {
    rb.send().await.unwrap().status().as_u16()
}

/// Send each request in turn and check its status (named in a failure).
async fn expect_statuses(cases: Vec<(&str, reqwest::RequestBuilder, u16)>) {
    for (what, rb, want) in cases {
        assert_eq!(status(rb).await, want, "{what}");
    }
}

async fn body(rb: reqwest::RequestBuilder) -> (u16, String) {
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_auth_prefix_and_terminator() {
    let c = start(1).await;
    let u = c.url(0);
    let http = client();
    let a = c.put_block(0, b"foo");
    let b = c.put_block(0, b"bar");
    assert_eq!(status(http.get(format!("{u}/index"))).await, 401);
    assert_eq!(
        status(http.get(format!("{u}/index")).bearer_auth("nope")).await,
        403
    );
    assert_eq!(
        status(http.get(format!("{u}/index/XYZ")).bearer_auth(ROOT)).await,
        400
    );
    assert_eq!(
        status(
            http.get(format!("{u}/index/{}", "a".repeat(33)))
                .bearer_auth(ROOT)
        )
        .await,
        400
    );
    let (s, text) = body(
        http.get(format!("{u}/index"))
            .header("Authorization", format!("OAuth2 {ROOT}")),
    )
    .await;
    assert_eq!(s, 200);
    assert!(text.ends_with("\n\n"), "{text:?}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let (loc, mtime) = l.split_once(' ').unwrap();
        assert!(loc.ends_with("+3"));
        assert!(mtime.parse::<u64>().unwrap() > 1_000_000_000_000_000_000);
    }
    let pa = &a.to_hex()[..2];
    let (_, text) = body(http.get(format!("{u}/index/{pa}")).bearer_auth(ROOT)).await;
    assert!(text.starts_with(&format!("{a}+3 ")) && text.ends_with("\n\n"));
    assert!(!text.contains(&b.to_hex()));
    let (_, text) = body(
        http.get(format!("{u}/index?prefix={}", &b.to_hex()[..3]))
            .bearer_auth(ROOT),
    )
    .await;
    assert!(text.starts_with(&format!("{b}+3 ")));
    let (_, text) = body(http.get(format!("{u}/index/ffffffff")).bearer_auth(ROOT)).await;
    assert_eq!(text, "\n");
    assert_eq!(c.counters(0).index_requests, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_statuses() {
    let c = start(1).await;
    let u = c.url(0);
    let http = client();
    let h = c.put_block(0, b"foo");
    let missing = BlockHash::of(b"missing");
    // The empty block may be fetched without a size hint.
    let empty = c.put_block(0, b"");
    let get = |path: String| http.get(format!("{u}/{path}")).bearer_auth("t");
    expect_statuses(vec![
        ("no token", http.get(format!("{u}/{h}+3")), 401),
        ("no size hint", get(format!("{h}")), 405),
        ("a bad hint", get(format!("{h}+3+x")), 400),
        ("not a hash", get("nothex".into()), 400),
        ("a missing block", get(format!("{missing}+7")), 404),
        ("the empty block without size", get(format!("{empty}")), 200),
    ])
    .await;
    let r = http
        .get(format!("{u}/{h}+3+Zfoo"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "3");
    assert_eq!(&r.bytes().await.unwrap()[..], b"foo");
    let r = http
        .head(format!("{u}/{h}"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "3");
    assert_eq!(
        status(http.head(format!("{u}/{missing}")).bearer_auth("t")).await,
        404
    );
    let cs = c.counters(0);
    // GETs with unparsable locators (400) are not counted.
    assert_eq!((cs.gets, cs.heads), (5, 2));
    assert_eq!(c.total_gets(&h), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_enforced() {
    let c = signed_cluster(1).await;
    let u = c.url(0);
    let http = client();
    let h = c.put_block(0, b"foo");
    let loc = Locator::new(h, 3);
    let good = sign_locator(&loc, KEY, "tok", now() + 3600, 1_209_600);
    let expired = sign_locator(&loc, KEY, "tok", now() - 10, 1_209_600);
    let wrong_key = sign_locator(&loc, "other", "tok", now() + 3600, 1_209_600);
    let get = |path: &str, token: &str| http.get(format!("{u}/{path}")).bearer_auth(token);
    let head = |path: &str| http.head(format!("{u}/{path}")).bearer_auth("tok");
    expect_statuses(vec![
        ("no token", http.get(format!("{u}/{good}")), 401),
        ("signed", get(&good, "tok"), 200),
        ("signed for another token", get(&good, "other-token"), 403),
        ("unsigned", get(&format!("{h}+3"), "tok"), 403),
        ("expired", get(&expired, "tok"), 403),
        ("signed with another key", get(&wrong_key, "tok"), 403),
        ("HEAD signed", head(&good), 200),
        ("HEAD unsigned", head(&h.to_string()), 403),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_statuses_and_signed_answer() {
    let cfg = ClusterConfig {
        signing_key: Some(KEY.into()),
        read_only: vec![1],
        ..ClusterConfig::new(3, ROOT)
    };
    let c = Cluster::start(cfg).await.unwrap();
    let u = c.url(0);
    let http = client();
    let h = BlockHash::of(b"foo");
    let r = http
        .put(format!("{u}/{h}"))
        .bearer_auth("tok")
        .body("foo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keep-replicas-stored"], "1");
    assert_eq!(r.headers()["x-keep-storage-classes-confirmed"], "default=1");
    let text = r.text().await.unwrap();
    assert!(text.ends_with('\n'));
    let loc: Locator = text.trim_end().parse().unwrap();
    assert_eq!((loc.hash, loc.size), (h, Some(3)));
    let (sig, exp) = loc.permission_hint().unwrap();
    assert_eq!(sig.len(), 40);
    let exp = u64::from_str_radix(exp, 16).unwrap();
    assert!(exp > now() + 1_209_000 && exp <= now() + 1_209_601);
    keep_protocol::verify_signature(&loc, KEY, "tok", 1_209_600, now()).unwrap();
    assert!(c.has_block(0, &h));
    // Already stored: touched, 200. HASH+SIZE accepted too.
    assert_eq!(
        status(
            http.put(format!("{u}/{h}+3"))
                .bearer_auth("tok")
                .body("foo")
        )
        .await,
        200
    );
    assert_eq!(status(http.put(format!("{u}/{h}")).body("foo")).await, 401);
    assert_eq!(
        status(http.put(format!("{u}/{h}")).bearer_auth("tok").body("fox")).await,
        400
    );
    assert_eq!(
        status(
            http.put(format!("{u}/{h}+4"))
                .bearer_auth("tok")
                .body("foo")
        )
        .await,
        400
    );
    assert_eq!(
        status(
            http.put(format!("{u}/nothex"))
                .bearer_auth("tok")
                .body("foo")
        )
        .await,
        400
    );
    // No Content-Length (chunked body): 411.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"foo",
    ))]);
    let chunked = reqwest::Body::wrap_stream(stream);
    assert_eq!(
        status(
            http.put(format!("{u}/{h}"))
                .bearer_auth("tok")
                .body(chunked)
        )
        .await,
        411
    );
    // Over 64 MiB: 413.
    let big = vec![7u8; (64 << 20) + 1];
    let bh = BlockHash::of(&big);
    assert_eq!(
        status(http.put(format!("{u}/{bh}")).bearer_auth("tok").body(big)).await,
        413
    );
    // Read-only service and full service: 507.
    assert_eq!(
        status(
            http.put(format!("{}/{h}", c.url(1)))
                .bearer_auth("tok")
                .body("foo")
        )
        .await,
        507
    );
    c.set_faults(
        2,
        Faults {
            full: true,
            ..Faults::default()
        },
    );
    assert_eq!(
        status(
            http.put(format!("{}/{h}", c.url(2)))
                .bearer_auth("tok")
                .body("foo")
        )
        .await,
        507
    );
    assert!(!c.has_block(1, &h) && !c.has_block(2, &h));
    assert_eq!(c.total_puts(&h), 6 + 2);
    let svc = c.services_json();
    assert_eq!(svc["items"][1]["read_only"], true);
    assert_eq!(svc["items_available"], 3);
    assert_eq!(svc["items"][0]["service_type"], "disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered() {
    let c = start(1).await;
    let addr = c.url(0).trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let data = vec![1u8; 2 << 20];
    let h = BlockHash::of(&data);
    let head = format!(
        "PUT /{h} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        &buf[..n]
    );
    s.write_all(&data).await.unwrap();
    let mut resp = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&resp).contains(&format!("{h}+{}", data.len())) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        resp.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&resp).contains("200 OK"));
    assert!(c.has_block(0, &h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_faults() {
    let c = start(2).await;
    let http = client();
    c.put_block(0, b"a");
    c.put_block(1, b"a");
    c.set_faults(
        0,
        Faults {
            index_incomplete: true,
            ..Faults::default()
        },
    );
    c.set_faults(
        1,
        Faults {
            index_malformed: true,
            ..Faults::default()
        },
    );
    let (_, t0) = body(http.get(format!("{}/index", c.url(0))).bearer_auth(ROOT)).await;
    assert!(t0.ends_with('\n') && !t0.ends_with("\n\n"), "{t0:?}");
    let (_, t1) = body(http.get(format!("{}/index", c.url(1))).bearer_auth(ROOT)).await;
    assert!(t1.ends_with("\n\n"));
    assert!(t1
        .lines()
        .any(|l| !l.is_empty() && l.split(' ').next().unwrap().parse::<Locator>().is_err()));
    assert_eq!(c.counters(0).faults_injected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_corrupt_are_detectable() {
    let c = start(1).await;
    let http = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let h = c.put_block(0, &data);
    let url = format!("{}/{h}+{}", c.url(0), data.len());
    c.set_faults(
        0,
        Faults {
            truncate_rate: 1.0,
            ..Faults::default()
        },
    );
    let r = http.get(&url).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must fail to read"
    );
    c.set_faults(
        0,
        Faults {
            corrupt_rate: 1.0,
            ..Faults::default()
        },
    );
    let got = http
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert_ne!(BlockHash::of(&got), h);
    // Stored corruption (for verify tests).
    c.set_faults(0, Faults::default());
    assert!(c.corrupt_block(0, &h));
    let got = http
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_ne!(BlockHash::of(&got), h);
    assert_eq!(c.counters(0).faults_injected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_decisions_are_deterministic() {
    async fn run(seed: u64) -> Vec<u16> {
        let cfg = ClusterConfig {
            faults: Faults {
                fail_rate: 0.4,
                seed,
                ..Faults::default()
            },
            ..ClusterConfig::new(2, ROOT)
        };
        let c = Cluster::start(cfg).await.unwrap();
        let http = client();
        let hs: Vec<BlockHash> = (0..10u8).map(|i| c.put_block(1, &[i])).collect();
        let mut out = Vec::new();
        for _round in 0..4 {
            for h in &hs {
                out.push(status(http.get(format!("{}/{h}+1", c.url(1))).bearer_auth("t")).await);
            }
        }
        out
    }
    let a = run(42).await;
    let b = run(42).await;
    let other = run(43).await;
    assert_eq!(a, b);
    assert_ne!(a, other);
    let fails = a.iter().filter(|&&s| s == 500 || s == 503).count();
    assert!(fails > 4 && fails < 30, "{a:?}");
    assert!(a.iter().all(|s| [200, 500, 503].contains(s)));
    // The same rule, as a pure function.
    let f = Faults {
        fail_rate: 0.4,
        seed: 42,
        ..Faults::default()
    };
    let h = BlockHash::of(&[0u8]);
    let want = f
        .decide(1, keepstore_sim::FaultOp::Get, &h, 0)
        .fail
        .unwrap_or(200);
    assert_eq!(a[0], want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_latency() {
    let c = start(1).await;
    let http = client();
    let h = c.put_block(0, b"x");
    c.set_faults(
        0,
        Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
    );
    assert!(http
        .get(format!("{}/{h}+1", c.url(0)))
        .bearer_auth("t")
        .send()
        .await
        .is_err());
    c.set_faults(
        0,
        Faults {
            latency_ms: 150,
            ..Faults::default()
        },
    );
    let t = Instant::now();
    assert_eq!(
        status(http.get(format!("{}/{h}+1", c.url(0))).bearer_auth("t")).await,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    c.set_faults(
        0,
        Faults {
            stall_ms: 200,
            ..Faults::default()
        },
    );
    let t = Instant::now();
    let r = http
        .get(format!("{}/{h}+1", c.url(0)))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        b"x",
        "a 1-byte body cannot stall half-way"
    );
    let big = c.put_block(0, &[5u8; 1000]);
    let r = http
        .get(format!("{}/{big}+1000", c.url(0)))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1000);
    assert!(t.elapsed() >= Duration::from_millis(200));
    // Private endpoints: faults over HTTP (root token only), not counted.
    let u = c.url(0);
    assert_eq!(
        status(http.get(format!("{u}/_sim/faults")).bearer_auth("t")).await,
        403
    );
    let (s, f) = body(http.get(format!("{u}/_sim/faults")).bearer_auth(ROOT)).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Faults>(&f).unwrap().stall_ms, 200);
    let put = http
        .put(format!("{u}/_sim/faults"))
        .bearer_auth(ROOT)
        .body(r#"{"fail_rate": 1.0}"#);
    assert_eq!(status(put).await, 200);
    assert_eq!(c.faults(0).fail_rate, 1.0);
    assert_eq!(c.faults(0).stall_ms, 0);
    let (s, js) = body(http.get(format!("{u}/_sim/counters")).bearer_auth(ROOT)).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v["gets"], 4);
    assert_eq!(v["per_hash"][h.to_hex()]["gets"], 3);
    assert_eq!(v["faults_injected"], 1);
    c.reset_counters();
    assert_eq!(c.counters(0).gets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_storage_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..ClusterConfig::new(2, ROOT)
    };
    let c = Cluster::start(cfg.clone()).await.unwrap();
    let http = client();
    let h = BlockHash::of(b"persist me");
    assert_eq!(
        status(
            http.put(format!("{}/{h}", c.url(1)))
                .bearer_auth("t")
                .body("persist me")
        )
        .await,
        200
    );
    let path = dir
        .path()
        .join(c.uuid(1))
        .join(&h.to_hex()[..3])
        .join(h.to_hex());
    assert!(path.is_file());
    // Trash and temp files are not blocks.
    std::fs::write(path.with_file_name(format!("{h}.trash.12345")), b"x").unwrap();
    c.shutdown().await;
    let c = Cluster::start(cfg).await.unwrap();
    assert!(c.has_block(1, &h));
    assert_eq!(c.blocks(1), vec![(h, 10)]);
    let (_, text) = body(http.get(format!("{}/index", c.url(1))).bearer_auth(ROOT)).await;
    assert!(text.starts_with(&format!("{h}+10 ")) && text.ends_with("\n\n"));
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1);
    assert_eq!(
        http.get(format!("{}/{h}+10", c.url(1)))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        &b"persist me"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_index_counts_ranges_and_subset() {
    let syn = |fraction| SyntheticIndex {
        blocks: 20_000,
        seed: 9,
        replicas: 2,
        fraction,
    };
    let src = Cluster::start(ClusterConfig {
        synthetic: Some(syn(1.0)),
        ..ClusterConfig::new(3, ROOT)
    })
    .await
    .unwrap();
    let dst = Cluster::start(ClusterConfig {
        synthetic: Some(syn(0.9)),
        ..ClusterConfig::new(4, ROOT)
    })
    .await
    .unwrap();
    let http = client();
    async fn index(http: &reqwest::Client, c: &Cluster, i: usize, p: &str) -> Vec<String> {
        let (s, t) = body(
            http.get(format!("{}/index/{p}", c.url(i)))
                .bearer_auth(ROOT),
        )
        .await;
        assert_eq!(s, 200);
        assert!(t.ends_with("\n\n") || t == "\n");
        t.lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }
    let mut src_all = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..3 {
        for l in index(&http, &src, i, "").await {
            *src_all.entry(l).or_default() += 1;
        }
    }
    assert_eq!(src_all.len(), 20_000);
    assert!(src_all.values().all(|&n| n == 2));
    let mut dst_all = std::collections::BTreeSet::new();
    for i in 0..4 {
        dst_all.extend(index(&http, &dst, i, "").await);
    }
    assert!(
        dst_all.len() > 17_000 && dst_all.len() < 19_000,
        "{}",
        dst_all.len()
    );
    assert!(
        dst_all.iter().all(|l| src_all.contains_key(l)),
        "dest must be a subset of source"
    );
    // Prefixes select exactly the matching lines.
    let ab = index(&http, &src, 0, "ab").await;
    let want: Vec<&String> = src_all.keys().filter(|l| l.starts_with("ab")).collect();
    assert!(ab.iter().all(|l| l.starts_with("ab")));
    assert!(ab.len() <= want.len() && ab.len() * 3 >= want.len());
    let s = syn(1.0);
    assert_eq!(ab.len() as u64, s.count(0, 3, "ab"));
    // Synthetic blocks have no data.
    let first = src_all.keys().next().unwrap();
    assert_eq!(
        status(http.get(format!("{}/{first}", src.url(0))).bearer_auth("t")).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_blocks_on_first_writable_of_probe_order() {
    let cfg = ClusterConfig {
        read_only: vec![0],
        ..ClusterConfig::new(5, ROOT)
    };
    let c = Cluster::start(cfg).await.unwrap();
    let sizes = [
        "1K-4K".parse::<SizeRange>().unwrap(),
        "0-0".parse().unwrap(),
    ];
    let blocks = c.seed_blocks(20, &sizes, 2, 7);
    assert_eq!(
        blocks,
        c.seed_blocks(20, &sizes, 2, 7),
        "deterministic per seed"
    );
    for (h, size) in &blocks {
        let want: Vec<usize> = c
            .probe_order(h)
            .into_iter()
            .filter(|&i| i != 0)
            .take(2)
            .collect();
        for i in 0..5 {
            assert_eq!(
                c.has_block(i, h),
                want.contains(&i),
                "block {h} service {i}"
            );
        }
        assert_eq!(c.get_block(want[0], h).unwrap().len() as u64, *size);
    }
    assert_eq!(c.counters(1).puts, 0, "direct writes are not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_service() {
    let c = start(2).await;
    let h = c.put_block(1, b"still here");
    let url = format!("{}/{h}+10", c.url(1));
    assert_eq!(status(client().get(&url).bearer_auth("t")).await, 200);
    c.stop_service(1);
    assert!(!c.is_running(1));
    let addr = c.url(1).trim_start_matches("http://").to_string();
    let err = tokio::net::TcpStream::connect(&addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(client().get(&url).bearer_auth("t").send().await.is_err());
    c.restart_service(1).await.unwrap();
    assert_eq!(status(client().get(&url).bearer_auth("t")).await, 200);
    assert_eq!(
        status(
            client()
                .get(format!("{}/{h}+10", c.url(0)))
                .bearer_auth("t")
        )
        .await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stub_over_https() {
    let cfg = ClusterConfig {
        api_server: true,
        signing_key: Some(KEY.into()),
        default_replication: 3,
        blob_signature_ttl: 7200,
        ..ClusterConfig::new(3, ROOT)
    };
    let c = Cluster::start(cfg).await.unwrap();
    let host = c.api_host().unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(c.api_requests(), (0, 0));
    let d: serde_json::Value = http
        .get(format!("https://{host}/discovery/v1/apis/arvados/v1/rest"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(d["defaultCollectionReplication"], 3);
    assert_eq!(d["blobSignatureTtl"], 7200);
    let url = format!("https://{host}/arvados/v1/keep_services/accessible");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let s: serde_json::Value = http
        .get(&url)
        .bearer_auth(ROOT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(s, c.services_json());
    assert_eq!(c.api_requests(), (2, 1));
    let settings = c.settings_text();
    assert!(settings.contains(&format!("ARVADOS_API_HOST={host}\n")));
    assert!(settings.contains(&format!("ARVADOS_API_TOKEN={ROOT}\n")));
    assert!(settings.contains("ARVADOS_API_HOST_INSECURE=1\n"));
    assert!(settings.contains(&format!("ARVADOS_BLOB_SIGNING_KEY={KEY}\n")));
    let plain = start(1).await;
    assert!(plain
        .settings_text()
        .contains("ARVADOS_API_HOST=none.invalid\n"));
    assert!(plain.api_host().is_none());
}

/// `rails_uuids`: the 28-character uuids of a stock API server (md5 of
/// the URL), served by the API stub and the services list, and placement
/// by the Go rule (the whole uuid weighed), both computed here from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_uuids_served_and_weighed_whole() {
    use md5::{Digest, Md5};
    let md5_hex = |s: &str| format!("{:x}", Md5::digest(s.as_bytes()));
    let cfg = ClusterConfig {
        rails_uuids: true,
        api_server: true,
        uuid_prefix: "pirca".into(),
        ..ClusterConfig::new(4, ROOT)
    };
    let c = Cluster::start(cfg).await.unwrap();
    for i in 0..4 {
        let url = format!("{}/", c.url(i));
        let want = format!("pirca-bi6l4-{}", &md5_hex(&url)[..16]);
        assert_eq!(c.uuid(i), want);
        assert_eq!(c.uuid(i).len(), 28);
        assert_eq!(c.services_json()["items"][i]["uuid"], want.as_str());
        assert!(
            c.cluster_config_text()
                .contains(&format!("\"{url}\": {{}}\n")),
            "no Rendezvous for {url}"
        );
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!(
        "https://{}/arvados/v1/keep_services/accessible",
        c.api_host().unwrap()
    );
    let s: serde_json::Value = serde_json::from_str(
        &http
            .get(&url)
            .bearer_auth(ROOT)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(s, c.services_json());
    let blocks = c.seed_blocks(12, &["1-64".parse::<SizeRange>().unwrap()], 2, 3);
    for (h, _) in &blocks {
        let mut order: Vec<(String, usize)> = (0..4)
            .map(|i| (md5_hex(&format!("{h}{}", c.uuid(i))), i))
            .collect();
        order.sort_by(|a, b| b.cmp(a));
        let want: Vec<usize> = order.iter().map(|&(_, i)| i).collect();
        assert_eq!(c.probe_order(h), want, "order of {h}");
        for (rank, &i) in want.iter().enumerate() {
            assert_eq!(c.has_block(i, h), rank < 2, "block {h} on service {i}");
        }
    }
}

/// Throughput of one in-memory service over loopback HTTP (numbers for
/// docs/keepstore-sim.md). Run with:
/// `cargo test -p keepstore-sim --test sim throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    use futures::StreamExt;
    let c = start(1).await;
    let http = client();
    let url = c.url(0);
    for (label, size, count, conc) in [
        ("4 KiB", 4usize << 10, 4000usize, 8usize),
        ("16 MiB", 16 << 20, 24, 2),
    ] {
        let blocks: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut v = vec![0u8; size];
                v[..8].copy_from_slice(&(i as u64).to_le_bytes());
                v[size - 1] = 1;
                v
            })
            .collect();
        let hashes: Vec<BlockHash> = blocks.iter().map(|b| BlockHash::of(b)).collect();
        let t = Instant::now();
        futures::stream::iter(blocks.into_iter().zip(&hashes))
            .map(|(b, h)| {
                let rb = http.put(format!("{url}/{h}")).bearer_auth("t").body(b);
                async move { assert_eq!(rb.send().await.unwrap().status(), 200) }
            })
            .buffer_unordered(conc)
            .collect::<Vec<_>>()
            .await;
        let put = t.elapsed().as_secs_f64();
        let t = Instant::now();
        futures::stream::iter(&hashes)
            .map(|h| {
                let rb = http.get(format!("{url}/{h}+{size}")).bearer_auth("t");
                async move {
                    let b = rb.send().await.unwrap().bytes().await.unwrap();
                    assert_eq!(b.len(), size);
                }
            })
            .buffer_unordered(conc)
            .collect::<Vec<_>>()
            .await;
        let get = t.elapsed().as_secs_f64();
        let mib = (count * size) as f64 / (1 << 20) as f64;
        println!(
            "{label}: PUT {:.0}/s ({:.0} MiB/s), GET {:.0}/s ({:.0} MiB/s), {count} blocks, concurrency {conc}",
            count as f64 / put,
            mib / put,
            count as f64 / get,
            mib / get
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_modes_shared_data_discard_data_and_link_rate() {
    // Shared data: blocks read back whole and hash to their names.
    let src = Cluster::start(ClusterConfig {
        shared_data: true,
        ..ClusterConfig::new(1, ROOT)
    })
    .await
    .unwrap();
    let one = [SizeRange {
        min: 1 << 20,
        max: 1 << 20,
    }];
    let blocks = src.seed_blocks(3, &one, 1, 5);
    assert_eq!(blocks.len(), 3);
    let http = client();
    for (h, size) in &blocks {
        let r = http
            .get(format!("{}/{h}+{size}", src.url(0)))
            .bearer_auth(ROOT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let b = r.bytes().await.unwrap();
        assert_eq!(BlockHash::of(&b), *h);
    }
    // Discard data: a PUT is checked and listed, its bytes are not kept.
    let dst = Cluster::start(ClusterConfig {
        discard_data: true,
        ..ClusterConfig::new(1, ROOT)
    })
    .await
    .unwrap();
    let data = vec![7u8; 1000];
    let h = BlockHash::of(&data);
    let put = |body: Vec<u8>| {
        http.put(format!("{}/{h}", dst.url(0)))
            .bearer_auth(ROOT)
            .body(body)
    };
    assert_eq!(status(put(vec![8u8; 1000])).await, 400, "still checked");
    assert_eq!(status(put(data.clone())).await, 200);
    assert_eq!(dst.blocks(0), vec![(h, 1000)]);
    assert_eq!(
        status(
            http.get(format!("{}/{h}+1000", dst.url(0)))
                .bearer_auth(ROOT)
        )
        .await,
        404
    );
    // Link rate: 1 MiB at 4 MiB/s takes at least about a quarter second.
    src.set_faults(
        0,
        Faults {
            link_rate: 4 << 20,
            ..Faults::default()
        },
    );
    let (h, size) = blocks[0];
    let t = Instant::now();
    let b = http
        .get(format!("{}/{h}+{size}", src.url(0)))
        .bearer_auth(ROOT)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(BlockHash::of(&b), h);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

/// Wait (at most 2 s) until service `i`'s counters satisfy `ok`.
async fn wait_counters(
    c: &Cluster,
    i: usize,
    ok: impl Fn(&keepstore_sim::CounterSnapshot) -> bool,
) {
    let t = Instant::now();
    while !ok(&c.counters(i)) {
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", c.counters(i));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// GET `url`: (status, body length, time until the headers came).
async fn timed_get(http: reqwest::Client, url: String) -> (u16, usize, Duration) {
    let t = Instant::now();
    let r = http.get(url).bearer_auth("t").send().await.unwrap();
    let headers_after = t.elapsed();
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap().len(), headers_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_refuses_with_503_and_counts_refused() {
    let c = start(1).await;
    let http = client();
    let h = c.put_block(0, &[7u8; 1000]);
    let url = format!("{}/{h}+1000", c.url(0));
    c.set_faults(
        0,
        Faults {
            max_concurrent: 4,
            latency_ms: 300,
            ..Faults::default()
        },
    );
    // 10 concurrent slow GETs: 4 are admitted and hold their slots for
    // 300 ms; the others arrive at the limit and are refused at once.
    let got =
        futures::future::join_all((0..10).map(|_| timed_get(http.clone(), url.clone()))).await;
    let ok: Vec<_> = got.iter().filter(|g| g.0 == 200).collect();
    let refused: Vec<_> = got.iter().filter(|g| g.0 == 503).collect();
    assert_eq!(ok.len() + refused.len(), 10, "{got:?}");
    assert!(ok.len() >= 4 && !refused.is_empty(), "{got:?}");
    assert!(ok.iter().all(|g| g.1 == 1000), "{got:?}");
    assert!(
        refused.iter().all(|g| g.1 == 0),
        "keepstore's 503 has no body"
    );
    let n = c.counters(0);
    assert_eq!(n.refused, refused.len() as u64);
    assert_eq!((n.gets, n.faults_injected, n.max_in_flight), (10, 0, 4));
    assert_eq!(c.total_gets(&h), 10, "refused GETs count as GETs");
    // Slots are given back once the answers are sent.
    wait_counters(&c, 0, |n| n.in_flight == 0).await;
    c.reset_counters();
    assert_eq!((c.counters(0).refused, c.counters(0).max_in_flight), (0, 0));

    // A refused PUT (its body drained) and index request are counted too.
    c.set_faults(
        0,
        Faults {
            max_concurrent: 1,
            stall_ms: 400,
            ..Faults::default()
        },
    );
    let slow = tokio::spawn(timed_get(http.clone(), url.clone()));
    wait_counters(&c, 0, |n| n.in_flight == 1).await;
    let put = http
        .put(format!("{}/{}", c.url(0), BlockHash::of(b"abc")))
        .bearer_auth("t")
        .body("abc");
    let index = http.get(format!("{}/index", c.url(0))).bearer_auth(ROOT);
    expect_statuses(vec![
        ("PUT at the limit", put, 503),
        ("index at the limit", index, 503),
    ])
    .await;
    let n = c.counters(0);
    assert_eq!(
        (n.refused, n.puts, n.puts_stored, n.index_requests),
        (2, 1, 0, 1)
    );
    assert_eq!(slow.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_concurrent_in_flight_none_refused() {
    let c = start(1).await;
    let http = client();
    let h = c.put_block(0, &[7u8; 1000]);
    let url = format!("{}/{h}+1000", c.url(0));
    // Off by default: 10 at once are all served.
    c.set_faults(
        0,
        Faults {
            latency_ms: 150,
            ..Faults::default()
        },
    );
    let got =
        futures::future::join_all((0..10).map(|_| timed_get(http.clone(), url.clone()))).await;
    assert!(got.iter().all(|g| g.0 == 200), "{got:?}");
    assert_eq!(c.counters(0).refused, 0);
    // With a limit of 4, two rounds of 4 concurrent GETs: none refused.
    c.set_faults(
        0,
        Faults {
            max_concurrent: 4,
            latency_ms: 150,
            ..Faults::default()
        },
    );
    for _ in 0..2 {
        let got =
            futures::future::join_all((0..4).map(|_| timed_get(http.clone(), url.clone()))).await;
        assert!(got.iter().all(|g| g.0 == 200 && g.1 == 1000), "{got:?}");
        wait_counters(&c, 0, |n| n.in_flight == 0).await;
    }
    let n = c.counters(0);
    assert_eq!((n.refused, n.gets), (0, 18));
    assert!(n.max_in_flight <= 10, "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_wait_for_a_slot_then_time_out() {
    let c = start(1).await;
    let http = client();
    let h = c.put_block(0, &[7u8; 1000]);
    let url = format!("{}/{h}+1000", c.url(0));
    // One slot, a queue of two: each GET holds its slot 200 ms (its body
    // stalls half-way).
    c.set_faults(
        0,
        Faults {
            max_concurrent: 1,
            max_queued: 2,
            stall_ms: 200,
            ..Faults::default()
        },
    );
    let first = tokio::spawn(timed_get(http.clone(), url.clone()));
    wait_counters(&c, 0, |n| n.in_flight == 1).await;
    let second = tokio::spawn(timed_get(http.clone(), url.clone()));
    let third = tokio::spawn(timed_get(http.clone(), url.clone()));
    wait_counters(&c, 0, |n| n.waiting == 2).await;
    // The queue is full: the newcomer is refused at once.
    let (s, len, t) = timed_get(http.clone(), url.clone()).await;
    assert_eq!((s, len), (503, 0));
    assert!(t < Duration::from_millis(150), "{t:?}");
    let (a, b, d) = (
        first.await.unwrap(),
        second.await.unwrap(),
        third.await.unwrap(),
    );
    assert_eq!((a.0, b.0, d.0), (200, 200, 200));
    // The queued ones got their headers only once a slot was free.
    assert!(
        b.2 >= Duration::from_millis(150) && d.2 >= Duration::from_millis(150),
        "{b:?} {d:?}"
    );
    let n = c.counters(0);
    assert_eq!(
        (n.refused, n.queued, n.max_in_flight, n.waiting),
        (1, 2, 1, 0)
    );

    // A queued request that waits longer than queue_timeout_ms: 503.
    c.set_faults(
        0,
        Faults {
            max_concurrent: 1,
            max_queued: 4,
            queue_timeout_ms: 100,
            stall_ms: 400,
            ..Faults::default()
        },
    );
    c.reset_counters();
    let first = tokio::spawn(timed_get(http.clone(), url.clone()));
    wait_counters(&c, 0, |n| n.in_flight == 1).await;
    let (s, _, t) = timed_get(http.clone(), url.clone()).await;
    assert_eq!(s, 503);
    assert!(
        t >= Duration::from_millis(100) && t < Duration::from_millis(380),
        "{t:?}"
    );
    assert_eq!(first.await.unwrap().0, 200);
    let n = c.counters(0);
    assert_eq!((n.refused, n.queued, n.waiting), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_latency_grows_with_requests_in_flight() {
    let c = start(1).await;
    let http = client();
    let h = c.put_block(0, &[7u8; 1000]);
    let url = format!("{}/{h}+1000", c.url(0));
    // 25 ms per request in flight before the headers; each GET then stays
    // in flight 400 ms more (its body stalls half-way). No limit.
    c.set_faults(
        0,
        Faults {
            queue_latency_us: 25_000,
            stall_ms: 400,
            ..Faults::default()
        },
    );
    // Start 8 GETs one after the other, each once the previous is in
    // flight: the k-th sees k requests in flight (itself included).
    let mut tasks = Vec::new();
    for k in 1..=8u64 {
        tasks.push(tokio::spawn(timed_get(http.clone(), url.clone())));
        wait_counters(&c, 0, |n| n.in_flight == k).await;
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert!(got.iter().all(|g| g.0 == 200 && g.1 == 1000), "{got:?}");
    let (first, eighth) = (got[0].2, got[7].2);
    assert!(first >= Duration::from_millis(25), "{got:?}");
    assert!(eighth >= Duration::from_millis(200), "{got:?}");
    assert!(eighth >= first + Duration::from_millis(100), "{got:?}");
    assert_eq!(c.counters(0).max_in_flight, 8);
}
