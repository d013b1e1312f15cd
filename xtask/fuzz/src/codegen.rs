//! The text round trip of `VmConfig::to_rust_source`: the generated Rust is read back
//! (its builder chain, literal by literal: strings with Rust's escapes, integers,
//! `::vm_core` paths and constructors, slices) and replayed on a `VmConfigBuilder`,
//! as the compiler would when a board `include!`s it. Anything outside the forms the
//! generator is known to emit is a failure: the text must stay what a board compiles.

use vm_core::{
    BootProtocol, GuestPhysAddr, HostPhysAddr, ImageLocation, InterruptMode, MapType, MappingFlags,
    Populate, VmConfig, VmConfigBuilder, VmType,
};

/// A literal argument of a generated call.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Int(u128),
    /// `::vm_core::A::B` with an optional single argument.
    Path(String, Option<Box<Value>>),
    List(Vec<u128>),
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

type Parsed<T> = Result<T, String>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(t.as_bytes()) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &str) -> Parsed<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected `{t}` at byte {}", self.pos))
        }
    }

    fn ident(&mut self) -> Parsed<String> {
        self.ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(format!("expected an identifier at byte {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn int(&mut self) -> Parsed<u128> {
        self.ws();
        let hex = self.eat("0x");
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_hexdigit() || b == b'_')
        {
            self.pos += 1;
        }
        let digits: String = String::from_utf8_lossy(&self.s[start..self.pos]).replace('_', "");
        u128::from_str_radix(&digits, if hex { 16 } else { 10 })
            .map_err(|e| format!("bad integer `{digits}` at byte {start}: {e}"))
    }

    /// A Rust string literal as `{:?}` writes it.
    fn string(&mut self) -> Parsed<String> {
        self.expect("\"")?;
        let rest = std::str::from_utf8(&self.s[self.pos..]).map_err(|e| e.to_string())?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let (_, e) = chars.next().ok_or("unterminated escape")?;
                    out.push(match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '0' => '\0',
                        '\\' => '\\',
                        '"' => '"',
                        '\'' => '\'',
                        'u' => {
                            let hex: String = chars
                                .by_ref()
                                .map(|(_, c)| c)
                                .skip_while(|c| *c == '{')
                                .take_while(|c| *c != '}')
                                .collect();
                            let v = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            char::from_u32(v).ok_or(format!("bad \\u{{{hex}}}"))?
                        }
                        other => return Err(format!("escape \\{other} is not Rust's")),
                    });
                }
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn value(&mut self) -> Parsed<Value> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'&') => {
                self.expect("&")?;
                self.expect("[")?;
                let mut list = Vec::new();
                while !self.eat("]") {
                    list.push(self.int()?);
                    let _ = self.eat(",");
                }
                Ok(Value::List(list))
            }
            Some(b':') => {
                self.expect("::vm_core::")?;
                let mut path = self.ident()?;
                while self.eat("::") {
                    path.push_str("::");
                    path.push_str(&self.ident()?);
                }
                let arg = if self.eat("(") {
                    let v = self.value()?;
                    self.expect(")")?;
                    Some(Box::new(v))
                } else {
                    None
                };
                Ok(Value::Path(path, arg))
            }
            _ => self.int().map(Value::Int),
        }
    }

    fn args(&mut self) -> Parsed<Vec<Value>> {
        self.expect("(")?;
        let mut args = Vec::new();
        while !self.eat(")") {
            args.push(self.value()?);
            let _ = self.eat(",");
        }
        Ok(args)
    }
}

fn int(v: &Value) -> Parsed<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|e| e.to_string()),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

fn u64_of(v: &Value) -> Parsed<u64> {
    int(v).map(|i| i as u64)
}

fn string(v: &Value) -> Parsed<&str> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn list(v: &Value) -> Parsed<Vec<usize>> {
    match v {
        Value::List(l) => l.iter().map(|i| int(&Value::Int(*i))).collect(),
        other => Err(format!("expected a slice, got {other:?}")),
    }
}

fn ctor<'v>(v: &'v Value, path: &str) -> Parsed<&'v Value> {
    match v {
        Value::Path(p, Some(arg)) if p == path => Ok(arg),
        other => Err(format!("expected {path}(..), got {other:?}")),
    }
}

fn gpa(v: &Value) -> Parsed<GuestPhysAddr> {
    ctor(v, "GuestPhysAddr::from_usize")
        .and_then(int)
        .map(GuestPhysAddr::from_usize)
}

fn variant<'v>(v: &'v Value, ty: &str) -> Parsed<&'v str> {
    match v {
        Value::Path(p, None) => p
            .strip_prefix(ty)
            .and_then(|r| r.strip_prefix("::"))
            .ok_or(format!("expected a {ty}, got {p}")),
        other => Err(format!("expected a {ty}, got {other:?}")),
    }
}

fn one_of<T: Copy>(v: &Value, ty: &str, table: &[(&str, T)]) -> Parsed<T> {
    let name = variant(v, ty)?;
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or(format!("no {ty}::{name}"))
}

/// Replays the source `to_rust_source` generated: the configuration it builds (or
/// the error its `build()` returns), or why the text is not the expected form.
pub fn replay(src: &str) -> Parsed<Result<VmConfig, vm_core::ConfigError>> {
    let body = src
        .find("{\n")
        .map(|i| &src[i + 2..])
        .ok_or("no function body")?;
    let mut p = Parser {
        s: body.as_bytes(),
        pos: 0,
    };
    p.expect("::vm_core::VmConfigBuilder::new")?;
    let a = p.args()?;
    let [id, name, cpus] = a.as_slice() else {
        return Err(format!("new takes 3 arguments, got {a:?}"));
    };
    let mut b = VmConfigBuilder::new(int(id)?, string(name)?, int(cpus)?);
    loop {
        p.expect(".")?;
        let method = p.ident()?;
        let a = p.args()?;
        let arity = |n: usize| {
            if a.len() == n {
                Ok(())
            } else {
                Err(format!(".{method} takes {n} arguments, got {a:?}"))
            }
        };
        b = match method.as_str() {
            "build" => {
                arity(0)?;
                p.expect("}")?;
                return Ok(b.build());
            }
            "vm_type" => {
                arity(1)?;
                let table = [
                    ("HostVm", VmType::HostVm),
                    ("Rtos", VmType::Rtos),
                    ("Linux", VmType::Linux),
                ];
                b.vm_type(one_of(&a[0], "VmType", &table)?)
            }
            "phys_cpu_ids" => {
                arity(1)?;
                b.phys_cpu_ids(&list(&a[0])?)
            }
            "phys_cpu_sets" => {
                arity(1)?;
                b.phys_cpu_sets(&list(&a[0])?)
            }
            "kernel" => {
                arity(3)?;
                let table = [("Fs", ImageLocation::Fs), ("Memory", ImageLocation::Memory)];
                b.kernel(
                    one_of(&a[0], "ImageLocation", &table)?,
                    string(&a[1])?,
                    gpa(&a[2])?,
                )
            }
            "entry_point" => {
                arity(1)?;
                b.entry_point(gpa(&a[0])?)
            }
            "bios_path" | "uefi_firmware_path" | "dtb_path" | "ramdisk_path" | "cmdline"
            | "host_device" | "excluded_device" => {
                arity(1)?;
                let s = string(&a[0])?;
                match method.as_str() {
                    "bios_path" => b.bios_path(s),
                    "uefi_firmware_path" => b.uefi_firmware_path(s),
                    "dtb_path" => b.dtb_path(s),
                    "ramdisk_path" => b.ramdisk_path(s),
                    "host_device" => b.host_device(s),
                    "excluded_device" => b.excluded_device(s),
                    _ => b.cmdline(s),
                }
            }
            "boot_protocol" => {
                arity(1)?;
                let table = [
                    ("Direct", BootProtocol::Direct),
                    ("Multiboot", BootProtocol::Multiboot),
                    ("Uefi", BootProtocol::Uefi),
                ];
                b.boot_protocol(one_of(&a[0], "BootProtocol", &table)?)
            }
            "passthrough_address" => {
                arity(2)?;
                b.passthrough_address(gpa(&a[0])?, int(&a[1])?)
            }
            "passthrough_port" => {
                arity(2)?;
                let port = |v| int(v).and_then(|p| u16::try_from(p).map_err(|e| e.to_string()));
                b.passthrough_port(port(&a[0])?, port(&a[1])?)
            }
            "port_device" => {
                arity(6)?;
                let port = int(&a[1]).and_then(|p| u16::try_from(p).map_err(|e| e.to_string()))?;
                b.port_device(
                    string(&a[0])?,
                    port,
                    int(&a[2])?,
                    int(&a[3])?,
                    u64_of(&a[4])?,
                    &list(&a[5])?,
                )
            }
            "bios_load_addr" | "dtb_load_addr" | "ramdisk_load_addr" => {
                arity(1)?;
                let g = gpa(&a[0])?;
                match method.as_str() {
                    "bios_load_addr" => b.bios_load_addr(g),
                    "dtb_load_addr" => b.dtb_load_addr(g),
                    _ => b.ramdisk_load_addr(g),
                }
            }
            "memory_region" => {
                arity(5)?;
                let flags = ctor(&a[2], "MappingFlags::from_bits_retain").and_then(int)?;
                let maps = [
                    ("Alloc", MapType::Alloc),
                    ("Identical", MapType::Identical),
                    ("Reserved", MapType::Reserved),
                ];
                let pops = [
                    ("Eager", Populate::Eager),
                    ("Lazy", Populate::Lazy),
                    ("LazyHuge", Populate::LazyHuge),
                ];
                b.memory_region(
                    gpa(&a[0])?,
                    int(&a[1])?,
                    MappingFlags::from_bits_retain(flags as u32),
                    one_of(&a[3], "MapType", &maps)?,
                    one_of(&a[4], "Populate", &pops)?,
                )
            }
            "passthrough_device" => {
                arity(5)?;
                let hpa = ctor(&a[2], "HostPhysAddr::from_usize").and_then(int)?;
                b.passthrough_device(
                    string(&a[0])?,
                    gpa(&a[1])?,
                    HostPhysAddr::from_usize(hpa),
                    int(&a[3])?,
                    int(&a[4])?,
                )
            }
            "emu_device" => {
                arity(6)?;
                b.emu_device(
                    string(&a[0])?,
                    gpa(&a[1])?,
                    int(&a[2])?,
                    int(&a[3])?,
                    u64_of(&a[4])?,
                    &list(&a[5])?,
                )
            }
            "interrupt_mode" => {
                arity(1)?;
                let table = [
                    ("NoIrq", InterruptMode::NoIrq),
                    ("Emulated", InterruptMode::Emulated),
                    ("Passthrough", InterruptMode::Passthrough),
                ];
                b.interrupt_mode(one_of(&a[0], "InterruptMode", &table)?)
            }
            other => return Err(format!("unknown builder method .{other}")),
        };
    }
}
