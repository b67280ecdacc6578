//! Fuzz target: arbitrary bytes as the agent's `checkpoints.json`. Opening the registry must either
//! refuse the file with an error (which names it) or accept it; what it accepts must persist and load
//! back to the same checkpoints. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stencil_agent::registry::Registry;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("stencil-fuzz-checkpoints-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::write(dir.join("checkpoints.json"), data).is_err() {
        return;
    }
    let loaded = match Registry::open(&dir) {
        Ok(registry) => registry,
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("checkpoints.json") || e.contains("data-dir"),
                "{e}"
            );
            return;
        }
    };
    let before: Vec<_> = loaded
        .positions()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    loaded.persist().expect("persists");
    drop(loaded);
    let again = Registry::open(&dir).expect("what was written loads");
    let after: Vec<_> = again
        .positions()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    assert_eq!(before, after);
});
