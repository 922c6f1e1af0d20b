//! The wasmtime engine (one per host), its epoch ticker, and the cache of
//! compiled components.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::error::PluginError;

/// How often the epoch advances. A call is checked against its budget at
/// every tick, so a runaway plugin stops within its budget plus one tick.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Memory and table bytes a freed slot keeps mapped (reset rather than
/// returned to the kernel), so the next instance in it starts without
/// page faults on what plugins touch first (stack, data, small heap).
const KEEP_RESIDENT: usize = 1 << 20;

/// Core instances one component may have.
pub(crate) const MAX_CORE_INSTANCES: u32 = 32;
/// Elements one table may have.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// The largest component accepted.
pub(crate) const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// The engine: async calls, epoch interruption, the component model, and
/// a pool of `max_instances` instance slots (memories, tables and stacks
/// are reused rather than mapped afresh, which halves what starting an
/// instance costs). Memories are capped at `max_memory_mb`.
pub(crate) fn new_engine(max_instances: u32, max_memory_mb: u32) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Plugins are small; a deep recursion is a bug or an attack, and the
    // default 512 KiB of wasm stack is plenty for either to end quickly.
    config.max_wasm_stack(512 * 1024);
    // Each pool slot reserves address space for the largest memory a
    // plugin may have, not wasmtime's default of 4 GiB (bounds are then
    // checked in code): a thousand slots of 4 GiB exhaust the address
    // space of a process with a few engines, as a test suite has.
    let max_memory = (max_memory_mb as u64) << 20;
    config.memory_reservation(max_memory);
    config.memory_reservation_for_growth(0);
    // A component built by wit-component is a handful of core instances
    // with one memory and a few tables; the totals leave room for that.
    let n = max_instances.max(1);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .max_core_instances_per_component(MAX_CORE_INSTANCES)
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size((max_memory_mb as usize) << 20)
        .table_elements(MAX_TABLE_ELEMENTS)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        // Where the kernel can tell (Linux 6.7+), only the pages an
        // instance dirtied are reset, wherever they lie, and they stay
        // mapped: the next instance's first call takes no page faults,
        // which cost more than the call itself.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .table_keep_resident(KEEP_RESIDENT);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e:#}"))
}

/// Advances the engine's epoch every [`TICK`] on one thread, until the
/// engine is gone.
pub(crate) fn start_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("corral-plugin-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })?;
    Ok(())
}

/// Feeds a `Hash` into SHA-256, so wasmtime's compatibility hash of the
/// engine becomes part of a stable file name.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Compiled components on disk, keyed by the component's SHA-256 and the
/// engine's compatibility hash (a different wasmtime or different engine
/// settings never read a stale artefact).
pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_key: [u8; 32],
    compilations: AtomicU64,
}

/// A component ready to pre-instantiate.
pub(crate) struct Loaded {
    pub(crate) component: Component,
    /// The file name of the compiled artefact in the cache.
    pub(crate) cache_key: String,
    /// Whether it had to be compiled (`false`: read from the cache).
    pub(crate) compiled: bool,
}

/// The hex SHA-256 of some bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: PathBuf) -> anyhow::Result<Self> {
        create_private_dir(&dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            dir,
            engine_key: h.0.finalize().into(),
            compilations: AtomicU64::new(0),
        })
    }

    /// How many components this cache compiled (rather than read).
    pub(crate) fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    fn key(&self, component_sha256: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"corral-plugin-component\0");
        h.update(component_sha256.as_bytes());
        h.update(self.engine_key);
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The compiled component for `bytes`: from the cache when it is
    /// there and readable, else compiled and stored.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        component_sha256: &str,
    ) -> Result<Loaded, PluginError> {
        check_is_component(bytes)?;
        let key = self.key(component_sha256);
        let path = self.path(&key);
        if path.exists() {
            // SAFETY: wasmtime runs deserialized artefacts as native code,
            // so they must come from a trusted writer. This folder is the
            // host's own (0700, under its data dir) and only `load`
            // writes it, atomically, from wasmtime's own `serialize`;
            // wasmtime checks the header and engine compatibility.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    return Ok(Loaded {
                        component,
                        cache_key: key,
                        compiled: false,
                    })
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "compiled plugin in the cache is unusable, compiling again: {e:#}"
                ),
            }
        }
        let component = Component::from_binary(engine, bytes)
            .map_err(|e| PluginError::InvalidComponent(format!("{e:#}")))?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(artefact) => {
                if let Err(e) = write_atomically(&path, &artefact) {
                    tracing::warn!(
                        path = %path.display(),
                        "cannot store a compiled plugin in the cache: {e}"
                    );
                }
            }
            Err(e) => tracing::warn!("cannot serialize a compiled plugin: {e:#}"),
        }
        Ok(Loaded {
            component,
            cache_key: key,
            compiled: true,
        })
    }

    /// Drops an artefact no installed plugin uses any more.
    pub(crate) fn forget(&self, key: &str) {
        let path = self.path(key);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "cannot remove a cached plugin: {e}");
            }
        }
    }
}

/// Refuses anything but a binary component, with a message that says what
/// the upload is instead.
fn check_is_component(bytes: &[u8]) -> Result<(), PluginError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(PluginError::InvalidComponent(format!(
            "the component is larger than {} MiB",
            MAX_COMPONENT_BYTES >> 20
        )));
    }
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(PluginError::InvalidComponent(
            "precompiled artefacts are not accepted; upload the .wasm component".into(),
        ));
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(PluginError::InvalidComponent(
            "not a WebAssembly binary (the upload must be the plugin's .wasm)".into(),
        ));
    }
    // The version and layer fields: 1 for core modules, 0x0d with layer 1
    // for components.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PluginError::InvalidComponent(
            "this is a core WebAssembly module, not a component; build the plugin for the wasm32-wasip2 target".into(),
        ));
    }
    if bytes[6..8] != [1, 0] {
        return Err(PluginError::InvalidComponent(
            "not a WebAssembly component".into(),
        ));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `path` so that readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_component() {
        let e = check_is_component(b"hello world").unwrap_err();
        assert!(e.to_string().contains("not a WebAssembly binary"), "{e}");
        let e = check_is_component(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(e.to_string().contains("core WebAssembly module"), "{e}");
        assert!(check_is_component(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
