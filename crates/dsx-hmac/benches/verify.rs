//! Verify cost per request for empty, 1 KiB and 1 MiB bodies, plus raw signing throughput.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dsx_hmac::{authorization_header, check_freshness, parse_authorization, verify_signature, SigningKey};

const PATH: &str = "/dsx-connect/api/v1/scan/request";
const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn verify_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for size in [0usize, 1024, 1 << 20] {
        let body = vec![b'x'; size];
        let key = SigningKey::new(SECRET);
        let header =
            authorization_header(&key, "AAECAwQFBgcICQoL", "POST", PATH, 1_735_689_600, "8PHy8/T19vf4+fr7", &body);
        group.throughput(Throughput::Bytes(size.max(1) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                // Full server-side check minus the store: parse, key schedule, freshness, MAC.
                let h = parse_authorization(Some(black_box(&header))).unwrap();
                let key = SigningKey::new(black_box(SECRET));
                check_freshness(h.ts, 1_735_689_600, 60).unwrap();
                verify_signature(&h, &key, "POST", PATH, body).unwrap();
            })
        });
    }
    group.finish();

    let key = SigningKey::new(SECRET);
    c.bench_function("sign/small", |b| {
        b.iter(|| {
            authorization_header(
                &key,
                "AAECAwQFBgcICQoL",
                "POST",
                PATH,
                1_735_689_600,
                "8PHy8/T19vf4+fr7",
                black_box(b"{}"),
            )
        })
    });
}

criterion_group!(benches, verify_bench);
criterion_main!(benches);
