//! One route as any of the daemons reports it.

/// A route with the attributes the suites compare, normalised across
/// daemons: addresses and communities as strings (`"65000:1"`,
/// `"4200000001:1:2"`), the AS path as `"65001 65002 {65003 65004}"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// `"10.0.0.0/24"`, `"fd00::/48"`.
    pub prefix: String,
    /// First next hop (the global one when there are two).
    pub next_hop: String,
    /// All next hops reported (global, link-local).
    pub next_hops: Vec<String>,
    /// Space separated; AS_SET in braces.
    pub as_path: String,
    /// `"IGP"`, `"EGP"`, `"INCOMPLETE"`.
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    /// Whether the daemon marks the route stale (graceful restart).
    pub stale: bool,
    /// Whether it is the daemon's best path for the prefix.
    pub best: bool,
    /// The neighbour it came from, when the daemon says.
    pub peer: Option<String>,
    /// When the daemon last changed the route, in the daemon's own format
    /// (BIRD: time of day; FRR, GoBGP: epoch seconds): equal before and
    /// after an event means the route was not replaced.
    pub since: Option<String>,
    /// Attributes the daemon did not recognise: (type code, flags, value hex).
    pub unknown: Vec<(u8, u8, String)>,
}

impl Route {
    /// The route for `prefix` in `routes`, preferring the best path.
    pub fn find<'a>(routes: &'a [Route], prefix: &str) -> Option<&'a Route> {
        routes
            .iter()
            .filter(|r| r.prefix == prefix)
            .max_by_key(|r| r.best)
    }

    /// The AS path with AS_SET members sorted (their order carries no
    /// meaning, and daemons differ in it).
    pub fn as_path_canonical(&self) -> String {
        let mut out = String::new();
        let mut rest = self.as_path.as_str();
        while let Some(open) = rest.find('{') {
            out += &rest[..open];
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
            let mut set: Vec<u32> = rest[open + 1..close]
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter_map(|s| s.parse().ok())
                .collect();
            set.sort_unstable();
            let set: Vec<String> = set.iter().map(u32::to_string).collect();
            out += &format!("{{{}}}", set.join(" "));
            rest = rest.get(close + 1..).unwrap_or("");
        }
        out + rest
    }

    /// The AS path as numbers (AS_SET members included, braces dropped).
    pub fn asns(&self) -> Vec<u32> {
        self.as_path
            .split(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ',')
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

/// Sorted prefixes of `routes`, deduplicated.
pub fn prefixes(routes: &[Route]) -> Vec<String> {
    let mut v: Vec<String> = routes.iter().map(|r| r.prefix.clone()).collect();
    v.sort();
    v.dedup();
    v
}
