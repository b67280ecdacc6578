//! Payload compression of `StatefulBatch.data` (PROTOCOL.md §5).
//!
//! One [`Compression`] value is fixed per stream. The agent derives its `dd-content-encoding` header from the
//! same value that compresses ([`Compression::content_encoding`]), so the two can never disagree. The intake
//! parses the header once ([`Compression::from_content_encoding`]) and decompresses every batch, batch 0
//! included, with a hard output cap so that a small payload cannot inflate without bound.

use std::io::{Read, Write};

use crate::error::ErrorKind;

/// The codec of every batch's `data` on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `identity`: the serialized sequence, uncompressed.
    Identity,
    /// `gzip`: exactly one gzip member.
    Gzip {
        /// 0–9; the agent default is 6.
        level: u32,
    },
    /// `zstd`: one frame per batch (decoders accept concatenated frames).
    Zstd {
        /// zstd level; the agent default is 1.
        level: i32,
    },
}

impl Default for Compression {
    /// zstd level 1, the agent default.
    fn default() -> Self {
        Compression::Zstd { level: 1 }
    }
}

impl Compression {
    /// gzip at the default level 6.
    pub const GZIP: Compression = Compression::Gzip { level: 6 };
    /// zstd at the default level 1.
    pub const ZSTD: Compression = Compression::Zstd { level: 1 };

    /// The `dd-content-encoding` header value for this codec.
    pub fn content_encoding(&self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }

    /// Parses a `dd-content-encoding` header: ASCII case-insensitive, missing = `identity`, anything else
    /// is [`ErrorKind::UnsupportedContentEncoding`]. Levels are the defaults (they only matter to encoders).
    pub fn from_content_encoding(header: Option<&str>) -> Result<Compression, ErrorKind> {
        let Some(value) = header else {
            return Ok(Compression::Identity);
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("zstd") {
            Ok(Compression::ZSTD)
        } else if value.eq_ignore_ascii_case("gzip") {
            Ok(Compression::GZIP)
        } else if value.eq_ignore_ascii_case("identity") {
            Ok(Compression::Identity)
        } else {
            Err(ErrorKind::UnsupportedContentEncoding(value.to_string()))
        }
    }

    /// Compresses one batch's serialized sequence on its own (no context carried across batches).
    pub fn compress(&self, raw: &[u8]) -> std::io::Result<Vec<u8>> {
        match *self {
            Compression::Identity => Ok(raw.to_vec()),
            Compression::Zstd { level } => zstd::bulk::compress(raw, level),
            Compression::Gzip { level } => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 4 + 64),
                    flate2::Compression::new(level.min(9)),
                );
                enc.write_all(raw)?;
                enc.finish()
            }
        }
    }

    /// Decompresses one batch's `data`, refusing to produce more than `cap` bytes.
    ///
    /// Empty `data` is an empty sequence under every codec. Output past `cap` is
    /// [`ErrorKind::DecompressionBomb`]; corrupt, truncated or trailing bytes are [`ErrorKind::CorruptPayload`].
    pub fn decompress(&self, data: &[u8], cap: usize) -> Result<Vec<u8>, ErrorKind> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let codec = self.content_encoding();
        let corrupt = |e: std::io::Error| ErrorKind::CorruptPayload {
            codec,
            detail: e.to_string(),
        };
        let limit = cap as u64 + 1;
        let mut out = Vec::new();
        match self {
            Compression::Identity => {
                if data.len() > cap {
                    return Err(ErrorKind::DecompressionBomb { limit: cap });
                }
                return Ok(data.to_vec());
            }
            Compression::Zstd { .. } => {
                let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(corrupt)?;
                dec.take(limit).read_to_end(&mut out).map_err(corrupt)?;
            }
            Compression::Gzip { .. } => {
                let mut dec = flate2::bufread::GzDecoder::new(data);
                (&mut dec)
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(corrupt)?;
                if out.len() <= cap && !dec.into_inner().is_empty() {
                    return Err(ErrorKind::CorruptPayload {
                        codec,
                        detail: "trailing bytes after the gzip member".into(),
                    });
                }
            }
        }
        if out.len() > cap {
            return Err(ErrorKind::DecompressionBomb { limit: cap });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [Compression::Identity, Compression::GZIP, Compression::ZSTD];

    #[test]
    fn round_trips_and_empty_input() {
        let raw = b"hello hello hello hello".repeat(100);
        for c in ALL {
            let packed = c.compress(&raw).expect("compress");
            assert_eq!(
                c.decompress(&packed, raw.len()).expect("decompress"),
                raw,
                "{c:?}"
            );
            assert_eq!(c.decompress(&[], 0).expect("empty"), Vec::<u8>::new());
        }
    }

    #[test]
    fn cap_is_enforced_at_exactly_the_limit() {
        let raw = vec![b'a'; 1000];
        for c in ALL {
            let packed = c.compress(&raw).expect("compress");
            assert!(c.decompress(&packed, 1000).is_ok());
            assert_eq!(
                c.decompress(&packed, 999),
                Err(ErrorKind::DecompressionBomb { limit: 999 }),
                "{c:?}"
            );
        }
    }

    #[test]
    fn concatenated_zstd_frames_are_accepted() {
        let mut data = Compression::ZSTD.compress(b"abc").expect("compress");
        data.extend(Compression::ZSTD.compress(b"def").expect("compress"));
        assert_eq!(
            Compression::ZSTD
                .decompress(&data, 100)
                .expect("two frames"),
            b"abcdef"
        );
    }

    #[test]
    fn trailing_garbage_and_truncation_are_corrupt() {
        for c in [Compression::GZIP, Compression::ZSTD] {
            let mut data = c.compress(b"some payload bytes").expect("compress");
            let truncated = &data[..data.len() - 3];
            assert!(
                matches!(
                    c.decompress(truncated, 100),
                    Err(ErrorKind::CorruptPayload { .. })
                ),
                "{c:?}"
            );
            data.extend_from_slice(b"junk");
            assert!(
                matches!(
                    c.decompress(&data, 100),
                    Err(ErrorKind::CorruptPayload { .. })
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            Compression::from_content_encoding(None),
            Ok(Compression::Identity)
        );
        assert_eq!(
            Compression::from_content_encoding(Some("ZsTd")),
            Ok(Compression::ZSTD)
        );
        assert_eq!(
            Compression::from_content_encoding(Some("GZIP")),
            Ok(Compression::GZIP)
        );
        assert!(matches!(
            Compression::from_content_encoding(Some("br")),
            Err(ErrorKind::UnsupportedContentEncoding(_))
        ));
        for c in ALL {
            assert_eq!(
                Compression::from_content_encoding(Some(c.content_encoding()))
                    .map(|x| x.content_encoding()),
                Ok(c.content_encoding())
            );
        }
    }
}
