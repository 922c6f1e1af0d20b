//! Prints what a plugin component imports and exports:
//! `cargo run -p plugin-checks --bin plugin-surface -- plugin.wasm`.

use std::process::ExitCode;

use plugin_checks::component::Surface;

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: plugin-surface COMPONENT.wasm...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for path in paths {
        let surface = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Surface::read(&bytes));
        match surface {
            Ok(surface) => {
                println!("{path}");
                for (what, items) in [("import", &surface.imports), ("export", &surface.exports)] {
                    for item in items {
                        println!("  {what} {}: {}", item.name, item.functions.join(", "));
                    }
                }
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
