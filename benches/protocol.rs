//! Micro-benchmarks of the protocol's hot pieces: request parsing in both common shapes,
//! serializing a services reply of realistic size, and reading one back from an upstream.

use criterion::{Criterion, criterion_group, criterion_main};
use panelgate::protocol::order::OrderFields;
use panelgate::protocol::{Action, Params, ServiceType, lenient, reply};
use panelgate::sim::catalog;
use std::hint::black_box;

fn parsing(c: &mut Criterion) {
    let form = b"key=0123456789abcdef0123456789abcdef&action=add&service=101&link=https%3A%2F%2Finstagram.com%2Fsomeone&quantity=1000";
    let json = br#"{"key":"0123456789abcdef0123456789abcdef","action":"add","service":101,"link":"https://instagram.com/someone","quantity":1000}"#;
    let status: Vec<u8> = format!(
        "key=0123456789abcdef&action=status&orders={}",
        (1..=100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("%2C")
    )
    .into_bytes();
    c.bench_function("parse add (form)", |b| {
        b.iter(|| {
            let p = Params::from_parts(
                None,
                Some("application/x-www-form-urlencoded"),
                black_box(form),
            )
            .unwrap();
            let a = Action::parse(&p).unwrap();
            (a, OrderFields::parse(&ServiceType::Default, &p).unwrap())
        })
    });
    c.bench_function("parse add (json)", |b| {
        b.iter(|| {
            let p = Params::from_parts(None, Some("application/json"), black_box(json)).unwrap();
            let a = Action::parse(&p).unwrap();
            (a, OrderFields::parse(&ServiceType::Default, &p).unwrap())
        })
    });
    c.bench_function("parse status of 100 orders (form)", |b| {
        b.iter(|| {
            let p = Params::from_parts(None, None, black_box(&status)).unwrap();
            Action::parse(&p).unwrap()
        })
    });
}

fn services(c: &mut Criterion) {
    let list = catalog::generated(3000, 1);
    let bytes = reply::to_bytes(&list);
    c.bench_function("serialize services (3000)", |b| {
        b.iter(|| reply::to_bytes(black_box(&list)))
    });
    c.bench_function("read upstream services (3000)", |b| {
        b.iter(|| lenient::services(black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, parsing, services);
criterion_main!(benches);
