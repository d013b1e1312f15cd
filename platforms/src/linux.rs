//! What every board's Linux run shares (feature `host`): where a Linux guest's
//! pieces go in guest RAM ([`linux_layout`]: the kernel with the `image_size` its
//! header gives, the initrd, the device tree and the doorbell's probe, checked
//! against the VM config), and the kernel command line the boards give it
//! ([`bootargs`]: the config's, plus where the doorbell and its probe are, which
//! `/init` reads), the last step of their device trees ([`finish_dtb`]) and the
//! run's checks ([`Checks`]).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use addrspace::GuestPhysAddr;
use vcpu_api::ArchVCpu;
use vm_core::fdt::{self, DeviceTree};
use vm_core::{UnservedAccess, VmConfig};

use crate::doorbell::{DOORBELL_DEVICE, Doorbell};

/// Where a Linux guest's pieces go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    /// The kernel's load address.
    pub kernel_at: GuestPhysAddr,
    /// The memory it takes from there (`image_size` of its header).
    pub image_size: usize,
    /// The initrd's place.
    pub initrd_at: GuestPhysAddr,
    /// Its length.
    pub initrd_len: usize,
    /// The device tree's place (the blob takes at most [`DTB_MAX`]).
    pub dtb_at: GuestPhysAddr,
    /// The doorbell device's base.
    pub doorbell: GuestPhysAddr,
    /// The doorbell's probe range: RAM of the config kept from the guest kernel.
    pub probe: (GuestPhysAddr, usize),
    /// The first passed-through device (the UART): base and size.
    pub uart: (u64, u64),
}

/// The most bytes the guest's device tree may take at `dtb_load_addr`.
pub const DTB_MAX: usize = 0x1_0000;

/// Works out and checks where a Linux guest of `config` goes: the kernel (which
/// takes `image_size` bytes from `kernel_load_addr`), the initrd of `initrd_len`
/// bytes and the device tree must each lie inside one RAM region of the config and
/// not overlap each other or the doorbell's probe, which must be a RAM region of its
/// own (`cfg_list = [gpa, size]` of the `hvcore-doorbell` device). The UART is the
/// config's first pass-through device.
pub fn linux_layout(
    config: &VmConfig,
    image_size: usize,
    initrd_len: usize,
) -> Result<LinuxLayout, String> {
    let k = &config.kernel;
    let (Some(initrd_at), Some(dtb_at)) = (k.ramdisk_load_addr, k.dtb_load_addr) else {
        return Err("the Linux config needs ramdisk_load_addr and dtb_load_addr".into());
    };
    let doorbell = config
        .devices
        .emu_devices
        .iter()
        .find(|d| d.name == DOORBELL_DEVICE)
        .ok_or("the Linux config has no hvcore-doorbell device")?;
    let probe = match doorbell.cfg_list[..] {
        [gpa, size] => (GuestPhysAddr::from_usize(gpa), size),
        _ => return Err("the hvcore-doorbell device's cfg_list is not [probe_gpa, size]".into()),
    };
    let probe_is_region = config
        .kernel
        .memory_regions
        .iter()
        .any(|r| r.gpa == probe.0 && r.size == probe.1);
    if !probe_is_region {
        return Err(format!(
            "the doorbell's probe [{:?}, +{:#x}) is not a memory region of its own",
            probe.0, probe.1
        ));
    }
    let uart = config
        .devices
        .passthrough_devices
        .first()
        .ok_or("the Linux config passes no UART through")?;
    let uart = (uart.base_gpa.as_usize() as u64, uart.length as u64);
    let pieces = [
        ("kernel", k.kernel_load_addr, image_size),
        ("initrd", initrd_at, initrd_len),
        ("device tree", dtb_at, DTB_MAX),
        ("doorbell probe", probe.0, probe.1),
    ];
    for (i, &(what, at, len)) in pieces.iter().enumerate() {
        let start = at.as_usize();
        let end = start
            .checked_add(len)
            .ok_or_else(|| format!("the {what} at {at:?} runs past the address space"))?;
        let in_ram =
            config.kernel.memory_regions.iter().any(|r| {
                r.gpa.as_usize() <= start && end <= r.gpa.as_usize().saturating_add(r.size)
            });
        if len == 0 || !in_ram {
            return Err(format!(
                "the {what} [{at:?}, +{len:#x}) is not inside one RAM region"
            ));
        }
        for &(other, o_at, o_len) in &pieces[..i] {
            let o = o_at.as_usize();
            if start < o.saturating_add(o_len) && o < end {
                return Err(format!(
                    "the {what} [{at:?}, +{len:#x}) overlaps the {other} [{o_at:?}, +{o_len:#x})"
                ));
            }
        }
    }
    Ok(LinuxLayout {
        kernel_at: k.kernel_load_addr,
        image_size,
        initrd_at,
        initrd_len,
        dtb_at,
        doorbell: doorbell.base_gpa,
        probe,
        uart,
    })
}

/// The guest's kernel command line: the config's, then `hvcore.doorbell=` and
/// `hvcore.probe=` (what `/init` reads to find the doorbell and its probe).
pub fn bootargs(config: &VmConfig, layout: &LinuxLayout) -> String {
    let args = format!(
        "{} hvcore.doorbell={:#x} hvcore.probe={:#x}",
        config.kernel.cmdline.as_deref().unwrap_or(""),
        layout.doorbell.as_usize(),
        layout.probe.0.as_usize()
    );
    String::from(args.trim_start())
}

/// A Linux run's answer to an access vm-core could not serve (the boards' `unserved`
/// hook): `true`, run the vCPU again (which retries the access), when it hit the
/// doorbell's probe while a remap had it unmapped ([`Doorbell::retries`]); otherwise
/// the access is reported through `print` and `false` ends the run.
pub fn settle_unserved<V: ArchVCpu + Send + 'static>(
    doorbell: &Doorbell<V>,
    vcpu: usize,
    a: &UnservedAccess,
    print: fn(&str),
) -> bool {
    if doorbell.retries(a.gpa) {
        return true;
    }
    print(&format!(
        "[linux] vCPU {vcpu}: unserved {:?} at {:?} ({:?})\n{}\n",
        a.access, a.gpa, a.why, a.walk
    ));
    false
}

/// Points `/chosen/stdout-path` at `serial` (the console node's path) and writes
/// `tree` out; an error when it takes more than the [`DTB_MAX`] bytes kept for it.
pub fn finish_dtb(mut tree: DeviceTree, serial: &str) -> Result<Vec<u8>, String> {
    let err = |e: vm_core::GuestTreeError| format!("guest device tree: {e}");
    let chosen = fdt::node_mut(&mut tree, "/chosen").map_err(err)?;
    fdt::set(chosen, "/chosen", "stdout-path", serial).map_err(err)?;
    let dtb = fdt::to_dtb(&tree).map_err(err)?;
    if dtb.len() > DTB_MAX {
        return Err(format!(
            "the guest device tree takes {} bytes, more than the {DTB_MAX} kept for it",
            dtb.len()
        ));
    }
    Ok(dtb)
}

/// The checks of a board's Linux run: each printed as it is made (`[linux] ok
/// NAME` / `[linux] FAIL NAME`) through the board's console, and counted.
pub struct Checks {
    print: fn(&str),
    counts: spin::Mutex<(u32, u32)>,
}

impl Checks {
    /// No checks yet; lines go to `print`.
    pub fn new(print: fn(&str)) -> Self {
        Self {
            print,
            counts: spin::Mutex::new((0, 0)),
        }
    }

    /// Records check `name`.
    pub fn check(&self, name: &str, ok: bool) {
        (self.print)(&format!(
            "[linux] {} {name}\n",
            if ok { "ok  " } else { "FAIL" }
        ));
        let mut c = self.counts.lock();
        if ok {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }

    /// The checks so far: passed, failed.
    pub fn counts(&self) -> (u32, u32) {
        *self.counts.lock()
    }
}

#[cfg(test)]
mod tests {
    use spin::Mutex;

    use super::*;

    static PRINTED: Mutex<String> = Mutex::new(String::new());

    fn print(s: &str) {
        PRINTED.lock().push_str(s);
    }

    #[test]
    fn checks_are_printed_and_counted() {
        let checks = Checks::new(print);
        checks.check("one", true);
        checks.check("two", false);
        checks.check("three", true);
        assert_eq!(checks.counts(), (2, 1));
        assert_eq!(
            *PRINTED.lock(),
            "[linux] ok   one\n[linux] FAIL two\n[linux] ok   three\n"
        );
    }
}
