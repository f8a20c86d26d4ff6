//! What a load requests: a [`Target`] (one URL, a weighted mix of paths on
//! one server, or a mix of [`Request`]s of any method, with bodies and
//! numbers) and the fixed, interleaved order in which its entries are
//! picked.

use leakscope_agent::client::url::HttpUrl;

use super::LoadError;

/// What to request: one URL, or a weighted mix of paths on one server.
///
/// In a mix, the paths are picked in a fixed, interleaved order whose every
/// cycle of `sum(weights)` requests holds each path exactly `weight` times:
/// a run of 250 requests over weights 20, 4, 1 sends exactly 200, 40 and
/// 10, spread over the run rather than in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server (its path is not used).
    pub(super) url: HttpUrl,
    /// Path and query of each entry, with its weight.
    pub(super) paths: Vec<(String, u32)>,
    /// Method and body of each entry.
    pub(super) how: Vec<How>,
    /// Cumulative weights: path `i` owns positions `ends[i-1]..ends[i]`.
    ends: Vec<u64>,
    /// A step coprime with the total weight, about 0.618 of it, that
    /// spreads consecutive requests over the cycle.
    stride: u64,
}

/// One kind of request of a [`Target`] made with [`Target::requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE` ([`METHODS`]).
    pub method: String,
    /// Path and query, starting with `/`; [`SEQ`] in it is replaced by the
    /// request's number.
    pub path: String,
    /// Share of the requests (at least 1).
    pub weight: u32,
    /// The body, if any ([`SEQ`] replaced too), sent as `application/json`
    /// when it starts with `{` or `[`, else as `text/plain`.
    pub body: Option<String>,
}

/// The methods a [`Request`] may use.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Replaced, in a [`Request`]'s path and body, by the request's number
/// (1, 2, 3, ... over the whole run), so each request can name a thing of
/// its own: `/orders/{n}/notify`.
pub const SEQ: &str = "{n}";

/// Method and body of one entry of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct How {
    pub(super) method: &'static str,
    pub(super) body: Option<String>,
    pub(super) content_type: Option<&'static str>,
    /// The path or the body holds [`SEQ`].
    pub(super) numbered: bool,
}

impl How {
    const GET: How = How {
        method: "GET",
        body: None,
        content_type: None,
        numbered: false,
    };
}

/// Parses an `http://` URL: the load generator's keep-alive connections
/// speak plain HTTP (it loads a service on this machine), not TLS.
fn plain(url: &str) -> Result<HttpUrl, LoadError> {
    let parsed = HttpUrl::parse(url).map_err(LoadError::BadUrl)?;
    if parsed.is_https() {
        return Err(LoadError::BadUrl(format!(
            "{url:?}: https is not supported by the load generator (plain HTTP keep-alive \
             connections); give the service's http:// URL"
        )));
    }
    Ok(parsed)
}

impl Target {
    /// One URL, such as `http://127.0.0.1:6060/leak/heap?kb=64`.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let url = plain(url)?;
        let path = url.path().to_owned();
        Ok(Target::new(url, vec![(path, 1)], vec![How::GET]))
    }

    /// A weighted mix of paths (with queries) on the server of `base`,
    /// such as `http://127.0.0.1:6060`. Paths start with `/`; weights are
    /// at least 1; `base` has no path of its own.
    pub fn mix<P: AsRef<str>>(
        base: &str,
        paths: impl IntoIterator<Item = (P, u32)>,
    ) -> Result<Target, LoadError> {
        let url = plain(base)?;
        if url.path() != "/" {
            return Err(LoadError::BadMix(format!(
                "the base {base:?} has a path: give the server only, the paths in the mix"
            )));
        }
        let mut checked = Vec::new();
        for (path, weight) in paths {
            let path = path.as_ref();
            if !path.starts_with('/') {
                return Err(LoadError::BadMix(format!(
                    "path {path:?} does not start with '/'"
                )));
            }
            if weight == 0 {
                return Err(LoadError::BadMix(format!(
                    "path {path:?} has weight 0: give weights of at least 1"
                )));
            }
            let full = HttpUrl::parse(&format!("http://{}{path}", url.authority()))
                .map_err(LoadError::BadMix)?;
            checked.push((full.path().to_owned(), weight));
        }
        if checked.is_empty() {
            return Err(LoadError::BadMix("no paths given".into()));
        }
        let how = vec![How::GET; checked.len()];
        Ok(Target::new(url, checked, how))
    }

    /// A weighted mix of requests of any method, with bodies, on the server
    /// of `base` (which has no path of its own). [`SEQ`] in a path or body
    /// is replaced by the request's number.
    pub fn requests(
        base: &str,
        requests: impl IntoIterator<Item = Request>,
    ) -> Result<Target, LoadError> {
        let requests: Vec<Request> = requests.into_iter().collect();
        let mix = Target::mix(
            base,
            requests
                .iter()
                .map(|r| (r.path.replace(SEQ, "1"), r.weight)),
        )?;
        let mut paths = Vec::with_capacity(requests.len());
        let mut how = Vec::with_capacity(requests.len());
        for r in requests {
            let method = METHODS
                .iter()
                .find(|m| m.eq_ignore_ascii_case(&r.method))
                .ok_or_else(|| {
                    LoadError::BadMix(format!(
                        "method {:?} of {}: use one of {}",
                        r.method,
                        r.path,
                        METHODS.join(", ")
                    ))
                })?;
            let content_type = r.body.as_deref().map(|b| {
                if b.trim_start().starts_with(['{', '[']) {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                }
            });
            how.push(How {
                method,
                numbered: r.path.contains(SEQ)
                    || r.body.as_deref().is_some_and(|b| b.contains(SEQ)),
                body: r.body,
                content_type,
            });
            paths.push((r.path, r.weight));
        }
        Ok(Target::new(mix.url, paths, how))
    }

    fn new(url: HttpUrl, paths: Vec<(String, u32)>, how: Vec<How>) -> Target {
        let ends: Vec<u64> = paths
            .iter()
            .scan(0u64, |sum, (_, w)| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        let total = ends.last().copied().unwrap_or(1);
        let mut stride = ((total as f64 * 0.618) as u64).max(1);
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Target {
            url,
            paths,
            how,
            ends,
            stride,
        }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        self.url.authority()
    }

    /// The paths (with queries) and their weights, in the given order.
    pub fn paths(&self) -> impl ExactSizeIterator<Item = (&str, u32)> {
        self.paths.iter().map(|(p, w)| (p.as_str(), *w))
    }

    /// How the reports name each entry, in order: its path, after its
    /// method unless that is GET (`/items/{n}`, `POST /orders`).
    pub(super) fn labels(&self) -> impl Iterator<Item = String> + '_ {
        self.paths
            .iter()
            .zip(&self.how)
            .map(|((p, _), how)| match how.method {
                "GET" => p.clone(),
                m => format!("{m} {p}"),
            })
    }

    /// Index of the path of request number `ticket`.
    pub(super) fn pick(&self, ticket: u64) -> usize {
        let total = self.ends.last().copied().unwrap_or(1);
        let position =
            (u128::from(ticket % total) * u128::from(self.stride) % u128::from(total)) as u64;
        self.ends.partition_point(|&end| end <= position)
    }
}

impl std::str::FromStr for Target {
    type Err = LoadError;

    fn from_str(url: &str) -> Result<Target, LoadError> {
        Target::parse(url)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.paths.as_slice() {
            [(path, _)] => write!(f, "http://{}{path}", self.authority()),
            paths => write!(f, "http://{} ({} paths)", self.authority(), paths.len()),
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_url_or_a_mix() {
        let t = Target::parse("http://127.0.0.1:6060/leak/heap?kb=64").unwrap();
        assert_eq!(t.authority(), "127.0.0.1:6060");
        assert_eq!(t.paths().collect::<Vec<_>>(), [("/leak/heap?kb=64", 1)]);
        assert_eq!(t.to_string(), "http://127.0.0.1:6060/leak/heap?kb=64");
        assert_eq!("http://[::1]:9".parse::<Target>().unwrap().paths().len(), 1);
        let e = Target::parse("https://127.0.0.1").unwrap_err();
        assert!(matches!(&e, LoadError::BadUrl(m) if m.contains("https is not supported")));

        let mix = [("/", 20), ("/leak/heap?kb=256", 4), ("/leak/thread", 1)];
        let t = Target::mix("http://localhost:6060", mix).unwrap();
        assert_eq!(t.paths().collect::<Vec<_>>(), mix);
        assert_eq!(t.to_string(), "http://localhost:6060 (3 paths)");
        for (base, paths, want) in [
            ("http://h:1/x", vec![("/", 1)], "has a path"),
            ("http://h:1", vec![("x", 1)], "does not start with '/'"),
            ("http://h:1", vec![("/x", 0)], "weight 0"),
            ("http://h:1", vec![("/a b", 1)], "invalid character"),
            ("http://h:1", vec![], "no paths"),
        ] {
            let e = Target::mix(base, paths).unwrap_err();
            assert!(
                matches!(&e, LoadError::BadMix(m) if m.contains(want)),
                "{e}"
            );
        }
        let e = Target::mix("ftp://h", [("/", 1)]).unwrap_err();
        assert!(matches!(e, LoadError::BadUrl(_)), "{e}");
    }

    #[test]
    fn a_mix_is_exact_per_cycle_and_interleaved() {
        let t = Target::mix("http://h:1", [("/", 20), ("/heap", 4), ("/thread", 1)]).unwrap();
        let picks: Vec<usize> = (0..250).map(|n| t.pick(n)).collect();
        for (index, want) in [(0, 200), (1, 40), (2, 10)] {
            assert_eq!(picks.iter().filter(|&&p| p == index).count(), want);
        }
        // The four "/heap" requests of a cycle are not next to each other.
        let heap: Vec<usize> = (0..25).filter(|&n| picks[n] == 1).collect();
        assert!(heap.windows(2).all(|w| w[1] - w[0] >= 3), "{heap:?}");
        // A single path, and weights with a common factor.
        let one = Target::parse("http://h:1/x").unwrap();
        assert!((0..10).all(|n| one.pick(n) == 0));
        let even = Target::mix("http://h:1", [("/a", 6), ("/b", 6)]).unwrap();
        assert_eq!((0..12).filter(|&n| even.pick(n) == 0).count(), 6);
    }

    #[test]
    fn requests_take_methods_bodies_and_numbers() {
        let req = |method: &str, path: &str, body: Option<&str>| Request {
            method: method.into(),
            path: path.into(),
            weight: 2,
            body: body.map(str::to_owned),
        };
        let t = Target::requests(
            "http://h:1",
            [
                req("post", "/orders", Some(r#"{"id":{n}}"#)),
                req("POST", "/orders/{n}/notify", None),
                req("GET", "/", Some("x")),
            ],
        )
        .unwrap();
        assert_eq!(t.how[0].method, "POST");
        assert_eq!(t.how[0].content_type, Some("application/json"));
        assert!(t.how[0].numbered && t.how[1].numbered && !t.how[2].numbered);
        assert_eq!(t.how[2].content_type, Some("text/plain; charset=utf-8"));
        assert_eq!(t.paths().nth(1), Some(("/orders/{n}/notify", 2)));
        let e = Target::requests("http://h:1", [req("BREW", "/", None)]).unwrap_err();
        assert!(e.to_string().contains("use one of GET, POST"), "{e}");
        let e = Target::requests("http://h:1", [req("GET", "x", None)]).unwrap_err();
        assert!(e.to_string().contains("does not start with '/'"), "{e}");
    }
}
