//! The config file parser: any bytes as `--config FILE` give a config or a clear error (one that names
//! the file), never a panic. Every key of `[ship]` and `[intake]` goes through every typed reader (sizes,
//! MiB, durations, lists, plain values), and `[[ship.sources]]` through the source checks, rules and
//! regexes included (TCP sources are checked without binding a port).

#![no_main]

use libfuzzer_sys::fuzz_target;
use stencil_config::file::{self, ConfigFile};
use stencil_config::sources::{self, Defaults};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match ConfigFile::parse("fuzz.toml", text, &["ship", "intake"]) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                e.to_string().contains("fuzz.toml"),
                "an error names the file: {e}"
            );
            return;
        }
    };
    let defaults = Defaults {
        service: None,
        source: None,
        hostname: None,
        tags: Vec::new(),
        status: "info".into(),
        detect_status: false,
    };
    for sub in ["ship", "intake"] {
        let Ok(section) = file.section(sub) else {
            continue;
        };
        for (key, v) in section {
            let named = |r: Result<(), stencil_config::ConfigError>| {
                if let Err(e) = r {
                    assert!(
                        e.to_string().contains("fuzz.toml"),
                        "an error names the file: {e}"
                    );
                }
            };
            named(file::size::<u64>(&file, sub, &key, &v).map(drop));
            named(file::mib::<usize>(&file, sub, &key, &v).map(drop));
            named(file::millis(&file, sub, &key, &v).map(drop));
            named(file::secs(&file, sub, &key, &v).map(drop));
            named(file::list::<String>(&file, sub, &key, &v).map(drop));
            named(file::value::<Option<String>>(&file, sub, &key, &v).map(drop));
            named(file::value::<bool>(&file, sub, &key, &v).map(drop));
            if let Ok(list) = sources::read(&file, sub, &key, &v) {
                for (at, config) in list {
                    let _ = config.check(&at, &defaults);
                }
            }
        }
    }
});
