//! The load's small language, shared by `leakscope load` and `leakscope
//! check --load`: an entry `[METHOD ]URL[=WEIGHT]` ([`parse_entry`]) and
//! the [`Target`] that a list of them on one server makes
//! ([`Target::from_entries`]).

use leakscope_agent::client::url::HttpUrl;

use super::LoadError;
use super::target::{METHODS, Request, SEQ, Target};

/// One request of a load given as text: `[METHOD ]URL[=WEIGHT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadEntry {
    /// `GET`, `POST`, ... ([`METHODS`]).
    pub method: String,
    /// The full URL; [`SEQ`] (`{n}`) in it is the request's number.
    pub url: String,
    /// Share of the requests.
    pub weight: u32,
    /// The body, for methods that send one.
    pub body: Option<String>,
}

/// Reads a load entry: `[METHOD ]URL[=WEIGHT]`. The weight is the number
/// after the last `=`, unless that `=` is the one of the URL's last query
/// parameter (`/heap?kb=64` has no weight, `/heap?kb=64=8` has 8);
/// without one the weight is 1. `body` is kept for the methods that send
/// one (POST, PUT, PATCH).
pub fn parse_entry(spec: &str, body: Option<&str>) -> Result<LoadEntry, LoadError> {
    let spec = spec.trim();
    let bad = |msg: String| LoadError::BadEntry(format!("{spec:?}: {msg}"));
    let (method, rest) = match spec.split_once(char::is_whitespace) {
        Some((m, rest)) if !m.contains("://") => (m.to_ascii_uppercase(), rest.trim()),
        _ => ("GET".to_owned(), spec),
    };
    let (url, weight) = split_weight(rest);
    let weight = match weight {
        None => 1,
        Some(w) => w
            .parse::<u32>()
            .ok()
            .filter(|w| *w >= 1)
            .ok_or_else(|| bad(format!("weight {w:?} is not a whole number >= 1")))?,
    };
    if !url.starts_with("http://") {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        let not = if scheme.is_empty() {
            String::new()
        } else {
            format!("{scheme} is not supported: ")
        };
        return Err(bad(format!(
            "{not}give an http:// URL, such as http://127.0.0.1:8080/items/{{n}}=5"
        )));
    }
    if !METHODS.contains(&method.as_str()) {
        return Err(bad(format!(
            "method {method:?}: use one of {}",
            METHODS.join(", ")
        )));
    }
    let body = match method.as_str() {
        "GET" | "DELETE" => None,
        _ => body.map(str::to_owned),
    };
    Ok(LoadEntry {
        method,
        url: url.to_owned(),
        weight,
        body,
    })
}

/// `URL=8` → (`URL`, `8`), `URL` → (`URL`, none), by the rule of
/// [`parse_entry`].
fn split_weight(s: &str) -> (&str, Option<&str>) {
    let Some((head, tail)) = s.rsplit_once('=') else {
        return (s, None);
    };
    if tail.is_empty() || !tail.chars().all(|c| c.is_ascii_digit()) {
        return (s, None);
    }
    // The last query parameter of `head` (after `?` or `&`): with an `=`
    // of its own, this one is the weight; without, it is the parameter's.
    match head.rsplit_once(['?', '&']) {
        Some((_, param)) if !param.contains('=') => (s, None),
        _ => (head, Some(tail)),
    }
}

impl Target {
    /// The weighted mix of `entries`, which must all be on one server.
    pub fn from_entries(entries: &[LoadEntry]) -> Result<Target, LoadError> {
        let mut base: Option<String> = None;
        let mut requests = Vec::with_capacity(entries.len());
        for e in entries {
            let url = HttpUrl::parse(&e.url.replace(SEQ, "1"))
                .map_err(|m| LoadError::BadEntry(format!("{}: {m}", e.url)))?;
            let server = format!("http://{}", url.authority());
            match &base {
                None => base = Some(server),
                Some(first) if *first != server => {
                    return Err(LoadError::ManyServers {
                        url: e.url.clone(),
                        first: first.clone(),
                    });
                }
                Some(_) => {}
            }
            let path = e
                .url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/");
            requests.push(Request {
                method: e.method.clone(),
                path: path.to_owned(),
                weight: e.weight,
                body: e.body.clone(),
            });
        }
        let base = base.ok_or_else(|| LoadError::BadMix("no load URL".into()))?;
        Target::requests(&base, requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_take_a_method_a_weight_and_a_body() {
        let e = parse_entry("http://h:1/items/{n}=5", None).unwrap();
        assert_eq!(
            (e.method.as_str(), e.url.as_str(), e.weight),
            ("GET", "http://h:1/items/{n}", 5)
        );
        let e = parse_entry("http://h:1/heap?kb=64", None).unwrap();
        assert_eq!((e.url.as_str(), e.weight), ("http://h:1/heap?kb=64", 1));
        let e = parse_entry("http://h:1/heap?kb=64=8", None).unwrap();
        assert_eq!((e.url.as_str(), e.weight), ("http://h:1/heap?kb=64", 8));
        let e = parse_entry("http://h:1/a?x=1&flag=3", None).unwrap();
        assert_eq!(e.weight, 1);
        let e = parse_entry("post http://h:1/orders=2", Some("{}")).unwrap();
        assert_eq!(
            (e.method.as_str(), e.weight, e.body.as_deref()),
            ("POST", 2, Some("{}"))
        );
        assert_eq!(
            parse_entry("GET http://h:1/", Some("{}")).unwrap().body,
            None
        );
        for (spec, want) in [
            ("http://h:1/=0", "\"http://h:1/=0\": weight \"0\""),
            ("h:1/x", "\"h:1/x\": give an http:// URL"),
            (
                "https://h:1/",
                "https is not supported: give an http:// URL",
            ),
            ("BREW http://h:1/", "method \"BREW\""),
        ] {
            let e = parse_entry(spec, None).unwrap_err();
            assert!(
                matches!(&e, LoadError::BadEntry(m) if m.contains(want)),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn a_target_of_entries_on_one_server() {
        let entries = [
            parse_entry("http://127.0.0.1:8/a=3", None).unwrap(),
            parse_entry("POST http://127.0.0.1:8/b/{n}", None).unwrap(),
        ];
        let t = Target::from_entries(&entries).unwrap();
        assert_eq!(t.paths().collect::<Vec<_>>(), [("/a", 3), ("/b/{n}", 1)]);
        let other = [
            entries[0].clone(),
            parse_entry("http://127.0.0.1:9/c", None).unwrap(),
        ];
        let e = Target::from_entries(&other).unwrap_err();
        assert!(
            matches!(&e, LoadError::ManyServers { url, first }
                if url == "http://127.0.0.1:9/c" && first == "http://127.0.0.1:8"),
            "{e}"
        );
        assert!(Target::from_entries(&[]).is_err());
    }
}
