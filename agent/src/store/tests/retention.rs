//! Retention by count, bytes and age, after puts and at open.

use std::time::Duration;

use super::*;

#[test]
fn retention_by_count() {
    let dir = TestDir::new("count");
    let store = Store::open(dir.path(), unlimited().max_count(3)).unwrap();
    let made: Vec<SnapshotMeta> = (0..5)
        .map(|i| put(&store, "api", "heap", &data(i, 8)))
        .collect();
    assert_eq!(ids(&store.list(&ListFilter::default())), ids(&made[2..]));
    assert_eq!(store.stats().removed_by_retention, 2);
    assert_eq!(dir.files().len(), 6);
    drop(store);

    // A lower limit applies at open.
    let store = Store::open(dir.path(), unlimited().max_count(1)).unwrap();
    assert_eq!(ids(&store.list(&ListFilter::default())), [&made[4].id]);
    assert_eq!(store.stats().removed_by_retention, 2);
    assert_eq!(dir.files().len(), 2);
}

#[test]
fn retention_by_bytes() {
    let dir = TestDir::new("bytes");
    let store = Store::open(dir.path(), unlimited().max_bytes(1000)).unwrap();
    let a = put(&store, "api", "heap", &data(1, 400));
    let b = put(&store, "api", "heap", &data(2, 400));
    assert_eq!(store.stats().bytes, 800);
    let c = put(&store, "api", "heap", &data(3, 300));
    assert_eq!(ids(&store.list(&ListFilter::default())), [&b.id, &c.id]);
    assert_eq!(store.stats().bytes, 700);
    assert!(store.get(&a.id).is_none());

    // One snapshot larger than the limit on its own is kept, alone.
    let (big, warnings) = warnings_during(|| put(&store, "api", "heap", &data(4, 5000)));
    assert_eq!(ids(&store.list(&ListFilter::default())), [&big.id]);
    assert_eq!(store.read(&big.id).unwrap().len(), 5000);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("max_bytes"), "{warnings:?}");
    // ... until the next put.
    let d = put(&store, "api", "heap", &data(5, 10));
    assert_eq!(ids(&store.list(&ListFilter::default())), [&d.id]);
    assert_eq!(store.stats().removed_by_retention, 4);
    assert_eq!(dir.files().len(), 2);
}

#[test]
fn retention_by_age() {
    let day = Duration::from_secs(24 * 3600);
    let dir = TestDir::new("age");
    let store = Store::open(dir.path(), unlimited().max_age(2 * day)).unwrap();
    let old = put_at(&store, ago(10 * day), b"old");
    // The snapshot just written stays, even when it is already too old.
    assert_eq!(ids(&store.list(&ListFilter::default())), [&old.id]);
    let older = put_at(&store, ago(20 * day), b"older");
    assert_eq!(ids(&store.list(&ListFilter::default())), [&older.id]);
    let recent = put_at(&store, ago(day), b"recent");
    let now = put_at(&store, None, b"now");
    assert_eq!(
        ids(&store.list(&ListFilter::default())),
        [&recent.id, &now.id]
    );
    assert_eq!(store.stats().removed_by_retention, 2);
    drop(store);

    // At open, with a shorter limit.
    let store = Store::open(dir.path(), unlimited().max_age(day / 2)).unwrap();
    assert_eq!(ids(&store.list(&ListFilter::default())), [&now.id]);
    assert_eq!(dir.files().len(), 2);
}

#[test]
fn zero_limits_are_refused() {
    let dir = TestDir::new("zero");
    for (options, name) in [
        (unlimited().max_count(0), "max_count"),
        (unlimited().max_bytes(0), "max_bytes"),
        (unlimited().max_age(Duration::ZERO), "max_age"),
    ] {
        let err = Store::open(dir.path(), options).unwrap_err();
        assert!(
            matches!(err, Error::Config { setting, .. } if setting == name),
            "{err}"
        );
    }
    assert_eq!(StoreOptions::default().max_count, Some(1000));
    assert_eq!(StoreOptions::default().max_bytes, Some(1 << 30));
    assert_eq!(
        StoreOptions::default().max_age,
        Some(Duration::from_secs(604_800))
    );
}
