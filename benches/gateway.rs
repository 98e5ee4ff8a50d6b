//! Micro-benchmarks of the gateway's own hot pieces: pricing a catalog, building the services
//! replies (serialized and gzip-compressed per price group), writing a multi-status reply from
//! the status cache, and the ledger's hold + commit of one order on a durable SQLite file.

use panelgate::clock::Instant;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use panelgate::catalog::{LocalCatalog, UpstreamList};
use panelgate::config;
use panelgate::pricing::{self, Markup};
use panelgate::sim::catalog;
use panelgate::status_cache::{self, StatusCache};
use panelgate::store::{self, NewOrder, OrderState};
use panelgate::sync::now_ms;
use rust_decimal::Decimal;

const CONFIG: &str = r#"
database: "sqlite::memory:"
upstreams:
  - name: sim
    url: "http://127.0.0.1:9/api/v2"
    key: "bench-upstream-key"
    fx: "0.92"
services:
  - import: sim
    markup: { percent: 40 }
price_groups:
  resellers:
    markup: { percent: 15 }
"#;

fn pricing(c: &mut Criterion) {
    let list = catalog::generated(3000, 1);
    let markup: Markup = serde_yaml_ng::from_str("{ percent: 40 }").unwrap();
    let fx = Decimal::new(92, 2);
    c.bench_function("price 3000 services (fx + markup)", |b| {
        b.iter(|| {
            black_box(&list)
                .iter()
                .map(|s| markup.sell_rate(pricing::convert(s.rate, fx)))
                .fold(Decimal::ZERO, |a, r| a + r)
        })
    });

    let cfg = config::parse(CONFIG, Path::new("bench.yaml")).unwrap();
    let lists = HashMap::from([(
        "sim".to_owned(),
        Arc::new(UpstreamList {
            services: list.iter().map(|s| (s.service, s.clone())).collect(),
            fetched_at: Instant::now(),
        }),
    )]);
    c.bench_function(
        "build catalog (3000 services, 2 groups, json + gzip)",
        |b| b.iter(|| LocalCatalog::build(&cfg, black_box(&lists))),
    );
}

fn status_reply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = StatusCache::new("USD");
    let orders = rt.block_on(async {
        let store = store::open("sqlite::memory:").await.unwrap();
        let customer = store
            .create_customer("ann", &[7; 32], "default", 0, 1_000_000_000, now_ms())
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..100 {
            let o = store
                .create_order(&new_order(customer.id, i), now_ms())
                .await
                .unwrap();
            store
                .mark_placed(o.id, &(5000 + i).to_string(), now_ms())
                .await
                .unwrap();
            ids.push(o.id);
        }
        store.customer_orders(customer.id, &ids).await.unwrap()
    });
    let ids: Vec<u64> = orders.iter().map(|o| o.id as u64).collect();
    for o in &orders {
        assert_eq!(o.state, OrderState::Placed);
        // Confirmed by the upstream just now, as after a sync pass.
        statuses.confirm(&statuses.put(o), now_ms());
    }
    c.bench_function("multi-status reply of 100 (status cache)", |b| {
        b.iter(|| {
            let now = Instant::now();
            let found: Vec<_> = ids.iter().map(|&id| statuses.get(id as i64, now)).collect();
            status_cache::multi_reply(black_box(&ids), &found)
        })
    });
    // The common poll: every order held, fresh and the customer's.
    let customer = orders[0].customer_id;
    // Read from the store just now, as far as the cache's trust goes (it is a second).
    let read = Instant::now();
    let fresh = || statuses.answer(customer, black_box(&ids), true, read, now_ms(), i64::MAX);
    assert!(fresh().is_some(), "the orders are not fresh");
    c.bench_function("status of 100 answered from the cache", |b| b.iter(fresh));
}

fn ledger(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("panelgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let (store, customer) = rt.block_on(async {
        let store = store::open(&url).await.unwrap();
        let customer = store
            .create_customer("ann", &[7; 32], "default", 0, i64::MAX / 4, now_ms())
            .await
            .unwrap();
        (store, customer.id)
    });
    let mut upstream_order = 0;
    // Durable: each call returns once its commit is fsynced, as in production (alone here, so
    // no commit shares an fsync).
    c.bench_function(
        "ledger hold + commit (sqlite file, durable on return)",
        |b| {
            b.iter(|| {
                upstream_order += 1;
                rt.block_on(async {
                    let o = store
                        .create_order(&new_order(customer, upstream_order), now_ms())
                        .await
                        .unwrap();
                    store
                        .mark_placed(o.id, &upstream_order.to_string(), now_ms())
                        .await
                        .unwrap();
                })
            })
        },
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn new_order(customer_id: i64, n: u64) -> NewOrder {
    NewOrder {
        customer_id,
        service: 101,
        upstream: "sim".into(),
        upstream_service: 101,
        charge: 126_000,
        billed: 1000,
        link: Some(format!("https://instagram.com/p/{n}")),
        fields: format!(r#"{{"link":"https://instagram.com/p/{n}","quantity":"1000"}}"#),
        list_cost: None,
        can_refill: true,
        can_cancel: true,
        dispatch_deadline: i64::MAX,
        drip: None,
    }
}

criterion_group!(benches, pricing, status_reply, ledger);
criterion_main!(benches);
