//! Every VM config of axvisor's history in `tests/data/axvisor-configs` (see its
//! README): the verdict the index expects (`load` or `refuse`, refusals naming the
//! field), and for the ones that load, the facts axvisor's own parser reads from the
//! file (vCPUs, total RAM, pass-through entries, emulated devices).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::{BTreeMap, HashMap};

use vm_core::{ConfigError, VmConfig};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/axvisor-configs");

/// Whether an error is the expected refusal.
type Refusal = fn(&ConfigError) -> bool;

/// Rows the index marks `load` that this project refuses on purpose (see the README
/// of the data), with the refusal each must get.
const REFUSED_ON_PURPOSE: &[(&str, Refusal)] = &[
    (
        "numpy1314--axvisor/configs~vms~arceos-loongarch64__2025-08-26_6647e010.toml",
        |e| matches!(e, ConfigError::Missing { field } if field.path == "devices.emu_devices"),
    ),
    (
        "tgoskits/virtualization~axvmconfig~src~test.rs-embedded__2026-07-16_375e4083.toml",
        |e| matches!(e, ConfigError::TypedMachineFormat { .. }),
    ),
    (
        "tgoskits/virtualization~axvmconfig~src~test.rs-embedded__2026-07-16_f6100537.toml",
        |e| matches!(e, ConfigError::TypedMachineFormat { .. }),
    ),
];

fn tsv(name: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(format!("{DATA}/{name}")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Checks what axvisor's parser read from the file against the loaded config.
fn check_facts(file: &str, c: &VmConfig, facts: &HashMap<String, String>) {
    let n = |k: &str| facts[k].parse::<usize>().unwrap();
    assert_eq!(c.cpu_num, n("cpu_num"), "{file}: vCPUs");
    let ram: usize = c.kernel.memory_regions.iter().map(|r| r.size).sum();
    assert_eq!(ram, n("ram_bytes"), "{file}: total RAM");
    let pt = &c.devices.passthrough_devices;
    if facts["parser"] == "axvmconfig-0.8.9" {
        // The device graph: `guest_type = "passthrough"` is every host device ("/"
        // here), then the selected nodes; `virtual` devices are none; `disabled`
        // nodes are the excluded ones.
        let all = pt.first().is_some_and(|d| d.host_node && d.name == "/");
        assert_eq!(
            pt.len() - usize::from(all),
            n("passthrough_entries"),
            "{file}"
        );
        assert_eq!(c.devices.emu_devices.len(), n("emu_devices"), "{file}");
        assert_eq!(c.devices.excluded_devices.len(), n("extra"), "{file}");
    } else {
        assert_eq!(pt.len(), n("passthrough_entries"), "{file}: pass-through");
        assert_eq!(
            c.devices.emu_devices.len(),
            n("emu_devices"),
            "{file}: emulated"
        );
        assert_eq!(
            c.devices.passthrough_addresses.len(),
            n("extra"),
            "{file}: pass-through addresses"
        );
    }
}

/// Issue 14: of 599 configs written for axvisor, vm-core loaded 184, and of the 72
/// axvisor ships today, 18. Now every config the index expects to load loads (but
/// the three refused on purpose), every one axvisor refuses is refused with an error
/// naming the field, and the loaded ones carry what axvisor's parser reads.
#[test]
fn every_axvisor_config_gets_the_verdict_of_the_index() {
    let facts: HashMap<String, HashMap<String, String>> = tsv("FACTS.tsv")
        .into_iter()
        .map(|f| (f["file"].clone(), f))
        .collect();
    let mut by_era: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut checked_facts = 0;
    for row in tsv("INDEX.tsv") {
        let file = &row["file"];
        let text = std::fs::read_to_string(format!("{DATA}/configs/{file}")).unwrap();
        let result = VmConfig::from_toml(&text);
        let counts = by_era.entry(row["era"].clone()).or_default();
        match &result {
            Ok(_) => counts.0 += 1,
            Err(_) => counts.1 += 1,
        }
        let expected = row["expected"].as_str();
        if let Some((_, refusal)) = REFUSED_ON_PURPOSE.iter().find(|(f, _)| f == file) {
            let e = result.expect_err(file);
            assert!(refusal(&e), "{file}: {e:?}");
            continue;
        }
        match (expected, result) {
            ("load", Ok(c)) => {
                check_facts(file, &c, &facts[file]);
                checked_facts += 1;
            }
            ("load", Err(e)) => panic!("{file} must load: {e}"),
            (e, Ok(_)) if e.starts_with("refuse") => panic!("{file} must be refused"),
            (e, Err(err)) if e.starts_with("refuse") => {
                // The message names the field (or the format) before a colon.
                let shown = err.to_string();
                let (field, why) = shown.split_once(": ").expect("field: why");
                assert!(!field.is_empty() && !why.is_empty(), "{file}: {shown}");
            }
            // "load or refuse (key no axvisor version defines: K)": refused, it must
            // be for that key.
            (either, Err(e)) => {
                let key = either.rsplit(": ").next().unwrap().trim_end_matches(')');
                assert!(
                    matches!(&e, ConfigError::UnknownKey { .. }) && e.to_string().starts_with(key),
                    "{file}: {e}"
                );
            }
            (_, Ok(c)) => check_facts(file, &c, &facts[file]),
        }
    }
    println!("era\tloaded\trefused");
    for (era, (loaded, refused)) in &by_era {
        println!("{era}\t{loaded}\t{refused}");
    }
    assert!(
        checked_facts >= 300,
        "{checked_facts} configs checked against axvisor's parser"
    );
}
