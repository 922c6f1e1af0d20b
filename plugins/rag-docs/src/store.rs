//! How documents are kept in the user's key-value data.
//!
//! - `meta/{collection}/{id}`: the document's description (JSON), small,
//!   for listings;
//! - `data/{collection}/{id}`: its chunks with their vectors (binary, see
//!   [`encode_chunks`]), read when retrieving;
//! - `settings`: the user's choice of collection (JSON).
//!
//! A document exists when its `meta` key does; `data` is written first.

use serde::{Deserialize, Serialize};

/// What the listings show about a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentMeta {
    pub id: String,
    pub name: String,
    pub collection: String,
    /// Characters of text.
    pub chars: usize,
    pub chunks: usize,
}

/// One passage and its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub vector: Vec<f32>,
}

/// The user's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The collection to search; `None`: the configured one, else all.
    #[serde(default)]
    pub collection: Option<String>,
}

pub const SETTINGS_KEY: &str = "settings";
pub const MAX_COLLECTION: usize = 64;
pub const MAX_NAME: usize = 200;

pub fn meta_key(collection: &str, id: &str) -> String {
    format!("meta/{collection}/{id}")
}

pub fn data_key(collection: &str, id: &str) -> String {
    format!("data/{collection}/{id}")
}

pub fn meta_prefix(collection: Option<&str>) -> String {
    match collection {
        Some(c) => format!("meta/{c}/"),
        None => "meta/".to_owned(),
    }
}

pub fn data_prefix(collection: Option<&str>) -> String {
    match collection {
        Some(c) => format!("data/{c}/"),
        None => "data/".to_owned(),
    }
}

/// `(collection, id)` of a `meta/…` or `data/…` key.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key
        .strip_prefix("meta/")
        .or_else(|| key.strip_prefix("data/"))?;
    rest.split_once('/')
}

/// Why a collection name is not valid, if it is not: 1 to 64 letters,
/// digits, `-` or `_`.
pub fn check_collection(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a collection name is 1 to {MAX_COLLECTION} letters, digits, `-` or `_`"
        ))
    }
}

/// The id of the document called `name`: readable, and the same for the
/// same name (so uploading a name again replaces the document).
pub fn document_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "doc" } else { slug };
    format!("{slug}-{:08x}", fnv1a(name.as_bytes()) as u32)
}

/// FNV-1a, 64 bits: stable across builds, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const MAGIC: &[u8; 4] = b"RDC1";

/// Chunks as bytes: `RDC1`, the count, then per chunk the text's length
/// and UTF-8, the vector's length and its `f32`s, all little-endian.
pub fn encode_chunks(chunks: &[Chunk]) -> Vec<u8> {
    let size: usize = chunks
        .iter()
        .map(|c| 8 + c.text.len() + 4 * c.vector.len())
        .sum();
    let mut out = Vec::with_capacity(8 + size);
    out.extend_from_slice(MAGIC);
    push_len(&mut out, chunks.len());
    for chunk in chunks {
        push_len(&mut out, chunk.text.len());
        out.extend_from_slice(chunk.text.as_bytes());
        push_len(&mut out, chunk.vector.len());
        for x in &chunk.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("chunks are far smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
}

/// Reads what [`encode_chunks`] wrote.
pub fn decode_chunks(bytes: &[u8]) -> Result<Vec<Chunk>, String> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(4)? != MAGIC {
        return Err("not a chunk list".to_owned());
    }
    let count = reader.len()?;
    let mut chunks = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let text_len = reader.len()?;
        let text = std::str::from_utf8(reader.take(text_len)?)
            .map_err(|_| "a chunk is not UTF-8".to_owned())?
            .to_owned();
        let dim = reader.len()?;
        let raw = reader.take(dim.checked_mul(4).ok_or("a vector is too long")?)?;
        let vector = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        chunks.push(Chunk { text, vector });
    }
    if reader.at != bytes.len() {
        return Err("bytes after the last chunk".to_owned());
    }
    Ok(chunks)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("the chunk list is cut short")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn len(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let chunks = vec![
            Chunk {
                text: "Grüße".to_owned(),
                vector: vec![0.5, -1.25, f32::MIN_POSITIVE],
            },
            Chunk {
                text: String::new(),
                vector: vec![],
            },
        ];
        let bytes = encode_chunks(&chunks);
        assert_eq!(decode_chunks(&bytes).unwrap(), chunks);
        assert_eq!(decode_chunks(&encode_chunks(&[])).unwrap(), vec![]);
    }

    #[test]
    fn damaged_chunk_lists_are_errors_not_panics() {
        let bytes = encode_chunks(&[Chunk {
            text: "text".to_owned(),
            vector: vec![1.0, 2.0],
        }]);
        for cut in 0..bytes.len() {
            assert!(decode_chunks(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_chunks(&longer).is_err());
        let mut huge = bytes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_chunks(&huge).is_err());
        assert!(decode_chunks(b"JUNKJUNK").is_err());
    }

    #[test]
    fn document_ids_are_stable_readable_and_distinct() {
        assert_eq!(
            document_id("Install Guide.md"),
            document_id("Install Guide.md")
        );
        assert!(document_id("Install Guide.md").starts_with("install-guide-md-"));
        assert_ne!(document_id("A b"), document_id("a-b"));
        assert!(document_id("日本語").starts_with("doc-"));
        let long = document_id(&"x".repeat(500));
        assert!(long.len() <= 40 + 9, "{long}");
        for id in [document_id("a/b"), document_id("../../x")] {
            assert!(!id.contains('/') && !id.contains('.'), "{id}");
        }
    }

    #[test]
    fn collection_names_are_checked() {
        for good in ["docs", "Team_Notes-2", &"a".repeat(64)] {
            assert!(check_collection(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "with space", "ü", &"a".repeat(65)] {
            assert!(check_collection(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_split_back() {
        assert_eq!(split_key(&meta_key("docs", "a-1")), Some(("docs", "a-1")));
        assert_eq!(split_key(&data_key("docs", "a-1")), Some(("docs", "a-1")));
        assert_eq!(split_key("settings"), None);
    }
}
