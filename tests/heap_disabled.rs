//! A service whose binary did not turn heap profiling on: the heap
//! endpoints answer 500 with a message saying how, and nothing else breaks.

mod support;

use support::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_endpoints_say_how_to_enable_profiling() {
    for path in [
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap?debug=1",
        "/debug/pprof/heap?seconds=1",
    ] {
        let res = get(path).await;
        assert_eq!(res.status, 500, "{path}");
        assert_eq!(res.header("x-go-pprof"), Some("1"), "{path}");
        let text = res.text();
        assert!(text.starts_with("heap profiling is off"), "{path}: {text}");
        assert!(text.contains("enable_heap_profiling!"), "{path}: {text}");
    }
    // The rest keeps working.
    assert_eq!(get("/debug/pprof/").await.status, 200);
    assert_eq!(get("/").await.status, 200);
}
