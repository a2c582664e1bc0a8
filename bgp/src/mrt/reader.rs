//! Record framing (RFC 6396 §2–§3) over gzip, bzip2 or plain input.

use bytes::Bytes;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

pub const TABLE_DUMP: u16 = 12;
pub const TABLE_DUMP_V2: u16 = 13;
pub const BGP4MP: u16 = 16;
pub const BGP4MP_ET: u16 = 17;

/// One record: the common header and the body, not yet interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub timestamp: u32,
    /// RFC 6396 §3: the microsecond field of `_ET` types.
    pub microseconds: Option<u32>,
    pub mrt_type: u16,
    pub subtype: u16,
    pub body: Bytes,
    /// Offset of the record in the decompressed stream.
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MrtError {
    #[error("{path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("read error at offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("truncated record at offset {offset}: {got} of {needed} octets present")]
    Truncated { offset: u64, needed: u64, got: u64 },
    #[error("record at offset {offset} is too short for its type ({what})")]
    Short { offset: u64, what: &'static str },
}

/// Opens a dump, recognising gzip and bzip2 by their magic numbers.
pub fn open(path: &Path) -> Result<MrtReader<Box<dyn Read + Send>>, MrtError> {
    let err = |source| MrtError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(err)?);
    let mut magic = [0u8; 3];
    let n = read_full(&mut f, &mut magic).map_err(err)?;
    let head = io::Cursor::new(magic[..n].to_vec()).chain(f);
    let inner: Box<dyn Read + Send> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(head),
        ))
    } else if n == 3 && &magic == b"BZh" {
        Box::new(BufReader::with_capacity(
            1 << 20,
            bzip2::read::MultiBzDecoder::new(head),
        ))
    } else {
        Box::new(head)
    };
    Ok(MrtReader::new(inner))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Iterates the records of a stream. After an error (a truncated last
/// record, or a decompression error) it yields nothing more.
pub struct MrtReader<R> {
    inner: R,
    offset: u64,
    done: bool,
}

impl<R: Read> MrtReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            done: false,
        }
    }

    fn next_record(&mut self) -> Result<Option<RawRecord>, MrtError> {
        let mut h = [0u8; 12];
        let offset = self.offset;
        let n =
            read_full(&mut self.inner, &mut h).map_err(|source| MrtError::Io { offset, source })?;
        if n == 0 {
            return Ok(None);
        }
        if n < 12 {
            return Err(MrtError::Truncated {
                offset,
                needed: 12,
                got: n as u64,
            });
        }
        let timestamp = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let mrt_type = u16::from_be_bytes([h[4], h[5]]);
        let subtype = u16::from_be_bytes([h[6], h[7]]);
        let length = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut body = vec![0u8; length];
        let got = read_full(&mut self.inner, &mut body)
            .map_err(|source| MrtError::Io { offset, source })?;
        if got < length {
            return Err(MrtError::Truncated {
                offset,
                needed: 12 + length as u64,
                got: 12 + got as u64,
            });
        }
        self.offset += 12 + length as u64;
        let mut body = Bytes::from(body);
        // RFC 6396 §3: in _ET records the length includes the microseconds.
        let microseconds = if mrt_type == BGP4MP_ET {
            if body.len() < 4 {
                return Err(MrtError::Short {
                    offset,
                    what: "extended timestamp",
                });
            }
            let us = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            body = body.slice(4..);
            Some(us)
        } else {
            None
        };
        Ok(Some(RawRecord {
            timestamp,
            microseconds,
            mrt_type,
            subtype,
            body,
            offset,
        }))
    }
}

impl<R: Read> Iterator for MrtReader<R> {
    type Item = Result<RawRecord, MrtError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
