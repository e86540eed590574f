//! Benchmarks `Filter::matches` over ~1000 generated paths.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dsx_filter::Filter;

fn paths() -> Vec<String> {
    let tops = ["sub1", "sub2", "other", "test", "data"];
    let mids = ["", "tmp/", "x/", "x/y/", "sub2/", "2025-01/", "deep/er/still/"];
    let exts = ["zip", "docx", "pdf", "txt", "zip.txt"];
    let mut out = Vec::with_capacity(1050);
    for i in 0..1050 {
        let top = tops[i % tops.len()];
        let mid = mids[(i / 5) % mids.len()];
        let ext = exts[(i / 35) % exts.len()];
        out.push(format!("{top}/{mid}file{i}.{ext}"));
    }
    out
}

fn bench(c: &mut Criterion) {
    let paths = paths();
    for spec in ["sub1 -tmp --exclude sub2", "*.zip,*.docx"] {
        let filter = Filter::parse(spec).unwrap();
        c.bench_function(&format!("matches {spec:?} x{}", paths.len()), |b| {
            b.iter(|| paths.iter().filter(|p| filter.matches(black_box(p))).count())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
