//! Recovery: damaged, partial and unexpected files found at open or at
//! read are skipped, quarantined or removed, and reported once.

use std::fs;

use super::*;

#[test]
fn truncated_data_is_quarantined_once_at_open() {
    let dir = TestDir::new("truncated");
    let (good, bad) = {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        (
            put(&store, "api", "heap", &data(1, 2000)),
            put(&store, "api", "heap", &data(2, 2000)),
        )
    };
    let bad_data = dir.snapshots().join(format!("{}.pb.gz", bad.id));
    fs::write(&bad_data, &data(2, 2000)[..1500]).unwrap();

    let (store, warnings) =
        warnings_during(|| Store::open(dir.path(), StoreOptions::default()).unwrap());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("{}.json", bad.id)),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("1500 bytes"), "{warnings:?}");
    assert_eq!(ids(&store.list(&ListFilter::default())), [&good.id]);
    assert_eq!(store.stats().skipped, 1);
    assert_eq!(
        names(&dir.quarantine()),
        [format!("{}.json", bad.id), format!("{}.pb.gz", bad.id)]
    );
    drop(store);

    // Reported once: the next open finds nothing wrong.
    let (store, warnings) =
        warnings_during(|| Store::open(dir.path(), StoreOptions::default()).unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(store.stats().skipped, 0);
    assert_eq!(store.stats().count, 1);
}

#[test]
fn flipped_byte_is_never_served() {
    let dir = TestDir::new("flipped");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let meta = put(&store, "api", "heap", &data(9, 4096));
    let other = put(&store, "api", "heap", &data(10, 4096));
    let path = dir.snapshots().join(format!("{}.pb.gz", meta.id));
    let mut bytes = fs::read(&path).unwrap();
    bytes[1234] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let (err, warnings) = warnings_during(|| store.read(&meta.id).unwrap_err());
    match &err {
        Error::CorruptSnapshot { path: p, message } => {
            assert_eq!(p, &path);
            assert!(message.contains("checksum"), "{message}");
        }
        other => panic!("expected CorruptSnapshot, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("{}.pb.gz", meta.id)),
        "{err}"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(store.get(&meta.id).is_none());
    assert_eq!(ids(&store.list(&ListFilter::default())), [&other.id]);
    assert_eq!(store.stats().skipped, 1);
    assert!(matches!(
        store.read(&meta.id),
        Err(Error::UnknownSnapshot { .. })
    ));
    assert_eq!(
        names(&dir.quarantine()),
        [format!("{}.json", meta.id), format!("{}.pb.gz", meta.id)]
    );
    drop(store);

    let (store, warnings) =
        warnings_during(|| Store::open(dir.path(), StoreOptions::default()).unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(ids(&store.list(&ListFilter::default())), [&other.id]);
}

#[test]
fn missing_data_at_read_is_corrupt() {
    let dir = TestDir::new("missing-at-read");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let meta = put(&store, "api", "heap", b"data");
    fs::remove_file(dir.snapshots().join(format!("{}.pb.gz", meta.id))).unwrap();
    let (err, warnings) = warnings_during(|| store.read(&meta.id).unwrap_err());
    assert!(matches!(err, Error::CorruptSnapshot { .. }), "{err}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(store.list(&ListFilter::default()).is_empty());
    assert_eq!(names(&dir.quarantine()), [format!("{}.json", meta.id)]);
}

#[test]
fn bad_metadata_is_skipped() {
    let dir = TestDir::new("bad-meta");
    let good = {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        put(&store, "api", "heap", b"good")
    };
    let snaps = dir.snapshots();
    let good_json = fs::read_to_string(snaps.join(format!("{}.json", good.id))).unwrap();
    // Garbage, with and without a data file.
    fs::write(
        snaps.join("20250101T000000.000Z-x-heap-000001.json"),
        b"\0\xff{not json",
    )
    .unwrap();
    fs::write(
        snaps.join("20250101T000000.000Z-x-heap-000001.pb.gz"),
        b"data",
    )
    .unwrap();
    fs::write(snaps.join("garbage.json"), b"[1, 2, 3]").unwrap();
    // Valid metadata whose id is not its file name.
    fs::write(snaps.join("renamed.json"), &good_json).unwrap();
    fs::write(snaps.join("renamed.pb.gz"), b"good").unwrap();
    // Valid metadata without its data file.
    let lost = good_json.replace(&good.id, "20250101T000000.000Z-x-heap-000009");
    fs::write(snaps.join("20250101T000000.000Z-x-heap-000009.json"), lost).unwrap();
    // An unrelated file is left alone.
    fs::write(snaps.join("README"), b"hello").unwrap();

    let (store, warnings) =
        warnings_during(|| Store::open(dir.path(), StoreOptions::default()).unwrap());
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("garbage.json") && w.contains("metadata"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("renamed.json") && w.contains("file name"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("000009.json") && w.contains("missing"))
    );
    assert_eq!(ids(&store.list(&ListFilter::default())), [&good.id]);
    assert_eq!(store.stats().skipped, 4);
    assert_eq!(store.read(&good.id).unwrap(), b"good");
    assert_eq!(
        names(&dir.quarantine()),
        [
            "20250101T000000.000Z-x-heap-000001.json",
            "20250101T000000.000Z-x-heap-000001.pb.gz",
            "20250101T000000.000Z-x-heap-000009.json",
            "garbage.json",
            "renamed.json",
            "renamed.pb.gz",
        ]
    );
    assert_eq!(
        dir.files(),
        [
            format!("{}.json", good.id),
            format!("{}.pb.gz", good.id),
            "README".to_owned()
        ]
    );
}

#[test]
fn quarantine_keeps_earlier_files() {
    let dir = TestDir::new("quarantine-twice");
    drop(Store::open(dir.path(), StoreOptions::default()).unwrap());
    for _ in 0..2 {
        fs::write(dir.snapshots().join("garbage.json"), b"{").unwrap();
        drop(Store::open(dir.path(), StoreOptions::default()).unwrap());
    }
    assert_eq!(names(&dir.quarantine()), ["garbage.json", "garbage.json.1"]);
}

#[test]
fn leftovers_of_interrupted_writes_are_removed() {
    let dir = TestDir::new("leftovers");
    let good = {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        put(&store, "api", "heap", b"good")
    };
    let snaps = dir.snapshots();
    fs::write(
        snaps.join("20250101T000000.000Z-x-heap-000001.pb.gz.tmp"),
        b"half",
    )
    .unwrap();
    fs::write(
        snaps.join("20250101T000000.000Z-x-heap-000002.json.tmp"),
        b"{\"id",
    )
    .unwrap();
    // Data renamed into place, metadata never written.
    fs::write(
        snaps.join("20250101T000000.000Z-x-heap-000003.pb.gz"),
        b"orphan",
    )
    .unwrap();

    let (store, warnings) =
        warnings_during(|| Store::open(dir.path(), StoreOptions::default()).unwrap());
    assert!(
        warnings.is_empty(),
        "partial writes are expected after a crash: {warnings:?}"
    );
    assert_eq!(
        dir.files(),
        [format!("{}.json", good.id), format!("{}.pb.gz", good.id)]
    );
    assert_eq!(store.stats().skipped, 1, "the orphan data file");
    assert_eq!(store.stats().count, 1);
    assert!(names(&dir.quarantine()).is_empty());
}
