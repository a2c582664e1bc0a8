//! AS_PATH and AS4_PATH (RFC 4271 §4.3, RFC 6793 §3–§4, RFC 5065 §3).
//!
//! A path is stored flat in one `Vec<u32>`: a header word per segment
//! (type in the high half, count in the low half) followed by the segment's
//! AS numbers. One allocation per path, cheap to hash and compare, which is
//! what the RIB wants when a million routes share a few thousand paths.

use bytes::{BufMut, BytesMut};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl SegmentType {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Set),
            2 => Some(Self::Sequence),
            3 => Some(Self::ConfedSequence),
            4 => Some(Self::ConfedSet),
            _ => None,
        }
    }
    pub fn is_confed(self) -> bool {
        matches!(self, Self::ConfedSequence | Self::ConfedSet)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub kind: SegmentType,
    pub asns: &'a [u32],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    data: Vec<u32>,
}

/// Why an AS_PATH failed RFC 7606 §7.2 / RFC 4271 §6.3 syntax checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AsPathError {
    #[error("segment overruns the attribute")]
    Overrun,
    #[error("segment of zero length")]
    ZeroLength,
    #[error("unknown segment type {0}")]
    BadSegmentType(u8),
}

impl AsPath {
    pub fn new() -> Self {
        Self::default()
    }

    /// A path of one AS_SEQUENCE (empty if `asns` is empty).
    pub fn from_sequence(asns: &[u32]) -> Self {
        let mut p = Self::new();
        p.push_segment(SegmentType::Sequence, asns);
        p
    }

    /// Appends a segment; longer than 255 ASes it is split, as the wire
    /// count is one octet.
    pub fn push_segment(&mut self, kind: SegmentType, asns: &[u32]) {
        for chunk in asns.chunks(255) {
            self.data.push((kind as u32) << 16 | chunk.len() as u32);
            self.data.extend_from_slice(chunk);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn segments(&self) -> Segments<'_> {
        Segments { data: &self.data }
    }

    /// Parses AS_PATH octets with 2- or 4-octet AS numbers.
    pub fn decode(v: &[u8], four_octet: bool) -> Result<Self, AsPathError> {
        let w = if four_octet { 4 } else { 2 };
        let mut data = Vec::with_capacity(v.len() / w + 1);
        let mut p = 0;
        while p < v.len() {
            if p + 2 > v.len() {
                return Err(AsPathError::Overrun);
            }
            let kind = SegmentType::from_u8(v[p]).ok_or(AsPathError::BadSegmentType(v[p]))?;
            let n = v[p + 1] as usize;
            // RFC 7606 §7.2: a segment with a zero length is malformed.
            if n == 0 {
                return Err(AsPathError::ZeroLength);
            }
            let end = p + 2 + n * w;
            if end > v.len() {
                return Err(AsPathError::Overrun);
            }
            data.push((kind as u32) << 16 | n as u32);
            let body = &v[p + 2..end];
            if four_octet {
                data.extend(
                    body.chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                );
            } else {
                data.extend(
                    body.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32),
                );
            }
            p = end;
        }
        Ok(Self { data })
    }

    /// Encoded length with 2- or 4-octet AS numbers.
    pub fn encoded_len(&self, four_octet: bool) -> usize {
        let w = if four_octet { 4 } else { 2 };
        self.segments().map(|s| 2 + w * s.asns.len()).sum()
    }

    /// Encodes; with 2-octet AS numbers, any AS above 65535 becomes AS_TRANS
    /// (RFC 6793 §4.2.2).
    pub fn encode(&self, four_octet: bool, out: &mut BytesMut) {
        for s in self.segments() {
            out.put_u8(s.kind as u8);
            out.put_u8(s.asns.len() as u8);
            for &a in s.asns {
                if four_octet {
                    out.put_u32(a);
                } else {
                    out.put_u16(u16::try_from(a).unwrap_or(super::super::open::AS_TRANS));
                }
            }
        }
    }

    /// Whether any AS needs 4 octets.
    pub fn has_four_octet_asns(&self) -> bool {
        self.segments().any(|s| s.asns.iter().any(|&a| a > 0xffff))
    }

    /// RFC 4271 §9.1.2.2 (a) path length: an AS_SET counts as one, and
    /// confederation segments do not count (RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// The neighbouring AS: first AS of a leading AS_SEQUENCE.
    pub fn first_as(&self) -> Option<u32> {
        self.segments()
            .find(|s| !s.kind.is_confed())
            .filter(|s| s.kind == SegmentType::Sequence)
            .map(|s| s.asns[0])
    }

    /// The originating AS: last AS of a trailing AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<u32> {
        self.segments()
            .last()
            .filter(|s| s.kind == SegmentType::Sequence)
            .and_then(|s| s.asns.last().copied())
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments().any(|s| s.asns.contains(&asn))
    }

    /// How often `asn` occurs (for allow-own-as N).
    pub fn count(&self, asn: u32) -> usize {
        self.segments()
            .map(|s| s.asns.iter().filter(|&&a| a == asn).count())
            .sum()
    }

    /// Prepends `asn` `times` times to the leading AS_SEQUENCE (RFC 4271 §5.1.2).
    pub fn prepend(&self, asn: u32, times: usize) -> Self {
        let mut out = AsPath::new();
        let mut segs = self.segments().peekable();
        let mut head: Vec<u32> = vec![asn; times];
        if let Some(s) = segs.peek() {
            if s.kind == SegmentType::Sequence {
                head.extend_from_slice(s.asns);
                segs.next();
            }
        }
        out.push_segment(SegmentType::Sequence, &head);
        for s in segs {
            out.push_segment(s.kind, s.asns);
        }
        out
    }

    /// RFC 6793 §4.2.3: rebuilds the full path from AS_PATH (as received from
    /// a 2-octet speaker) and AS4_PATH. If AS_PATH holds fewer ASes than
    /// AS4_PATH, AS4_PATH is ignored; otherwise the leading surplus of AS_PATH
    /// is kept and AS4_PATH appended.
    pub fn merge_as4(&self, as4: &AsPath) -> AsPath {
        // RFC 6793 §4.2.3: confederation segments are not counted.
        let count = |p: &AsPath| -> usize {
            p.segments()
                .map(|s| match s.kind {
                    SegmentType::Sequence => s.asns.len(),
                    SegmentType::Set => 1,
                    _ => 0,
                })
                .sum()
        };
        let (n, n4) = (count(self), count(as4));
        if n < n4 {
            return self.clone();
        }
        let mut keep = n - n4;
        let mut out = AsPath::new();
        for s in self.segments() {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentType::Sequence => {
                    let take = keep.min(s.asns.len());
                    out.push_segment(s.kind, &s.asns[..take]);
                    keep -= take;
                }
                SegmentType::Set => {
                    out.push_segment(s.kind, s.asns);
                    keep -= 1;
                }
                _ => out.push_segment(s.kind, s.asns),
            }
        }
        for s in as4.segments() {
            out.push_segment(s.kind, s.asns);
        }
        out
    }
}

pub struct Segments<'a> {
    data: &'a [u32],
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;
    fn next(&mut self) -> Option<Segment<'a>> {
        let (&h, rest) = self.data.split_first()?;
        let n = (h & 0xffff) as usize;
        let kind = SegmentType::from_u8((h >> 16) as u8)?;
        let asns = rest.get(..n)?;
        self.data = &rest[n..];
        Some(Segment { kind, asns })
    }
}

/// Displays the path as `bgpdump` and most routers do: sequences as plain
/// numbers, sets in braces, confederation segments in parentheses/brackets.
impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in self.segments() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let (open, close, sep) = match s.kind {
                SegmentType::Sequence => ("", "", " "),
                SegmentType::Set => ("{", "}", ","),
                SegmentType::ConfedSequence => ("(", ")", " "),
                SegmentType::ConfedSet => ("[", "]", ","),
            };
            f.write_str(open)?;
            for (i, a) in s.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_two_and_four_octet() {
        let two = [2, 3, 0, 1, 0, 2, 0, 3, 1, 2, 0, 9, 0, 8];
        let p = AsPath::decode(&two, false).unwrap();
        assert_eq!(p.to_string(), "1 2 3 {9,8}");
        assert_eq!(p.path_len(), 4);
        let mut out = BytesMut::new();
        p.encode(false, &mut out);
        assert_eq!(&out[..], &two);
        let four = [2, 1, 0, 3, 0x0d, 0x40];
        assert_eq!(AsPath::decode(&four, true).unwrap().to_string(), "200000");
    }

    #[test]
    fn malformed_paths() {
        assert_eq!(
            AsPath::decode(&[2, 2, 0, 1], false),
            Err(AsPathError::Overrun)
        );
        assert_eq!(AsPath::decode(&[2, 0], false), Err(AsPathError::ZeroLength));
        assert_eq!(
            AsPath::decode(&[7, 1, 0, 1], false),
            Err(AsPathError::BadSegmentType(7))
        );
        assert_eq!(AsPath::decode(&[2], false), Err(AsPathError::Overrun));
    }

    #[test]
    fn merge_as4_rfc6793() {
        // AS_PATH from an OLD speaker: 100 AS_TRANS AS_TRANS; AS4_PATH: 200000 300000.
        let old = AsPath::from_sequence(&[100, 23456, 23456]);
        let as4 = AsPath::from_sequence(&[200000, 300000]);
        assert_eq!(old.merge_as4(&as4).to_string(), "100 200000 300000");
        // AS4_PATH longer than AS_PATH: ignored.
        let long = AsPath::from_sequence(&[1, 2, 3, 4]);
        assert_eq!(old.merge_as4(&long), old);
    }

    #[test]
    fn prepend_and_counts() {
        let p = AsPath::from_sequence(&[65001, 65002]);
        let q = p.prepend(64512, 2);
        assert_eq!(q.to_string(), "64512 64512 65001 65002");
        assert_eq!(q.count(64512), 2);
        assert_eq!(q.first_as(), Some(64512));
        assert_eq!(q.origin_as(), Some(65002));
    }
}
