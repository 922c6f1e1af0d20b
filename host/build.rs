//! Embeds the built web UI (`web/dist`) in the binary: a table of every
//! file with its content type, an ETag and, for text that shrinks, a gzip
//! copy. Without a build the table is empty and the server says how to
//! make one; building the host never needs Node.js.

// The server's table of content types, so that both agree.
#[path = "src/web/media.rs"]
mod media;

use media::{compressible, content_type};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dist = manifest.join("..").join("web").join("dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!(
        "cargo:rerun-if-changed={}",
        dist.join("index.html").display()
    );

    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
        files.sort();
    } else {
        println!(
            "cargo:warning=the web UI is not built, so this binary serves none; \
             run scripts/run.sh, or `cd web && npm ci && npm run build` and build again"
        );
    }

    let gz_dir = out.join("web_gz");
    std::fs::create_dir_all(&gz_dir).expect("creating the gzip folder");
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (n, relative) in files.iter().enumerate() {
        let path = dist.join(relative);
        println!("cargo:rerun-if-changed={}", path.display());
        let body = std::fs::read(&path).expect("reading a web UI file");
        let content_type = content_type(relative);
        let gzip = if compressible(content_type) {
            let packed = gzip(&body);
            (packed.len() < body.len()).then(|| {
                let at = gz_dir.join(format!("{n}.gz"));
                std::fs::write(&at, packed).expect("writing a gzip copy");
                at
            })
        } else {
            None
        };
        let gzip = match gzip {
            Some(at) => format!("Some(include_bytes!({:?}))", at.display().to_string()),
            None => "None".to_owned(),
        };
        writeln!(
            table,
            "    Asset {{ path: {:?}, body: include_bytes!({:?}), content_type: {:?}, \
             gzip: {gzip}, etag: {:?} }},",
            relative,
            path.canonicalize()
                .unwrap_or(path.clone())
                .display()
                .to_string(),
            content_type,
            etag(&body),
        )
        .expect("formatting");
    }
    table.push_str("];\n");
    std::fs::write(out.join("web_assets.rs"), table).expect("writing web_assets.rs");
}

/// Every file under `dir` as a `/`-separated path relative to `root`,
/// leaving out Vite's `.vite/` manifest folder.
fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).expect("listing web/dist");
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".vite" {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, files);
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).expect("under the root");
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).expect("compressing");
    encoder.finish().expect("compressing")
}

/// A strong ETag: the start of the content's SHA-256.
fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
