//! What a component imports and exports, read from its binary (what
//! `wasm-tools component wit` shows).

use wit_parser::decoding::{decode, DecodedWasm};
use wit_parser::{Resolve, WorldItem, WorldKey};

/// One imported or exported item of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `corral:plugin/kv@0.1.0`, `wasi:io/streams@0.2.6`, or a plain name.
    pub name: String,
    /// The functions of the interface the component imports (only those
    /// it uses) or exports.
    pub functions: Vec<String>,
}

/// A component's imports and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
}

impl Surface {
    /// Reads `bytes` as a component.
    pub fn read(bytes: &[u8]) -> Result<Surface, String> {
        let decoded = decode(bytes).map_err(|e| format!("not a component: {e:#}"))?;
        let DecodedWasm::Component(resolve, world_id) = decoded else {
            return Err("a WIT package, not a component".to_owned());
        };
        let world = &resolve.worlds[world_id];
        Ok(Surface {
            imports: world
                .imports
                .iter()
                .map(|(k, v)| item(&resolve, k, v))
                .collect(),
            exports: world
                .exports
                .iter()
                .map(|(k, v)| item(&resolve, k, v))
                .collect(),
        })
    }

    /// The imported interface called `name`, if any.
    pub fn import(&self, name: &str) -> Option<&Item> {
        self.imports.iter().find(|i| i.name == name)
    }
}

fn item(resolve: &Resolve, key: &WorldKey, value: &WorldItem) -> Item {
    match value {
        WorldItem::Interface { id, .. } => Item {
            name: resolve
                .id_of(*id)
                .unwrap_or_else(|| resolve.name_world_key(key)),
            functions: resolve.interfaces[*id].functions.keys().cloned().collect(),
        },
        WorldItem::Function(f) => Item {
            name: f.name.clone(),
            functions: vec![f.name.clone()],
        },
        WorldItem::Type { .. } => Item {
            name: resolve.name_world_key(key),
            functions: Vec::new(),
        },
    }
}
