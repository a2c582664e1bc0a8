//! Prometheus scrapes inside a lab namespace: petreld's and
//! petrel-controller's `/metrics`, read as a scraper would over HTTP/1.1.

use super::Netns;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::time::Duration;

/// The exposition text served at `http://{addr}/metrics` in `ns`.
pub fn scrape(ns: &Netns, addr: &str) -> Result<String> {
    let target = addr.to_string();
    ns.enter(move || {
        let mut s = std::net::TcpStream::connect(target.as_str())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: petrel\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .with_context(|| format!("scraping {addr}/metrics"))
}

/// One sample's value, by its name with labels exactly as rendered
/// (`petrel_cluster_full_syncs_total`,
/// `petrel_datastore_read_bytes_total{records="blocks",via="watch"}`).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
