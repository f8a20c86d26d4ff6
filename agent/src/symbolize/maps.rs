//! Mappings of a process (from /proc/PID/maps) and the object files behind
//! them: GNU build IDs and the segment table that turns a runtime address
//! into the address the debug info speaks of.

use std::fs::File;
use std::path::Path;

use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSegment};

/// One executable, file-backed mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// Path of the mapped file.
    pub path: String,
}

/// The executable mappings of one process, main binary first.
#[derive(Debug, Clone, Default)]
pub struct ProcessMaps {
    /// Executable file-backed mappings; index 0 is the main binary when known.
    pub entries: Vec<MapEntry>,
}

impl ProcessMaps {
    /// Reads the mappings of this process.
    pub fn current() -> std::io::Result<ProcessMaps> {
        let text = std::fs::read_to_string("/proc/self/maps")?;
        let exe = std::fs::read_link("/proc/self/exe").ok();
        Ok(Self::parse(&text, exe.as_deref()))
    }

    /// Parses the text of a /proc/PID/maps file. Only executable mappings of
    /// real files are kept (no `[vdso]`, no anonymous memory); lines that do not
    /// parse are skipped, since the kernel's format is the only producer.
    /// `exe` is the main binary's path: its first mapping is moved to index 0.
    pub fn parse(text: &str, exe: Option<&Path>) -> ProcessMaps {
        let mut entries: Vec<MapEntry> = text.lines().filter_map(parse_line).collect();
        if let Some(exe) = exe.and_then(Path::to_str)
            && let Some(i) = entries.iter().position(|e| e.path == exe)
        {
            let main = entries.remove(i);
            entries.insert(0, main);
        }
        ProcessMaps { entries }
    }

    /// Index of the mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.start <= addr && addr < e.end)
    }
}

fn parse_line(line: &str) -> Option<MapEntry> {
    // Five space-separated fields, then the path (which may contain spaces).
    let mut fields = [""; 5];
    let mut rest = line;
    for field in &mut fields {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        *field = &trimmed[..end];
        rest = &trimmed[end..];
    }
    let [range, perms, offset, _dev, inode] = fields;
    let path = rest.trim();
    if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.trim_end_matches(" (deleted)").to_owned(),
    })
}

/// What the symbolizer needs to know about one object file, read once.
#[derive(Debug, Clone, Default)]
pub struct ObjectInfo {
    /// GNU build ID as lowercase hex, if the file has one.
    pub build_id: Option<String>,
    /// Loadable segments: (file offset, file size, virtual address).
    pub segments: Vec<(u64, u64, u64)>,
    /// The file has DWARF line tables, so files, lines and inlined frames
    /// were looked up (addresses may still have none).
    pub has_debug_lines: bool,
}

impl ObjectInfo {
    /// Reads the build ID and segment table of `path`, touching only the
    /// headers and notes (not the whole file).
    pub fn read(path: &Path) -> Option<ObjectInfo> {
        let file = File::open(path).ok()?;
        let cache = ReadCache::new(file);
        let obj = object::File::parse(&cache).ok()?;
        let build_id = obj
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let segments = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let has_debug_lines = obj
            .section_by_name(".debug_line")
            .is_some_and(|s| s.size() > 0);
        Some(ObjectInfo {
            build_id,
            segments,
            has_debug_lines,
        })
    }

    /// The address in the object's own address space (what DWARF and the
    /// symbol table use) of runtime address `addr` inside mapping `map`.
    pub fn to_svma(&self, map: &MapEntry, addr: u64) -> u64 {
        let file_off = addr - map.start + map.offset;
        self.segments
            .iter()
            .find(|(off, size, _)| *off <= file_off && file_off < off + size)
            .map_or(file_off, |(off, _, vaddr)| file_off - off + vaddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a40000 r--p 00000000 fe:01 1234   /usr/bin/svc
55d0c8a40000-55d0c8b00000 r-xp 00040000 fe:01 1234   /usr/bin/svc
55d0c9000000-55d0c9021000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000020000 r-xp 00028000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000100000-7f0000120000 r-xp 00001000 fe:01 77     /opt/my app/lib with space.so
7ffd5d1f0000-7ffd5d1f2000 r-xp 00000000 00:00 0      [vdso]
";

    #[test]
    fn parses_executable_file_mappings_main_first() {
        let maps = ProcessMaps::parse(MAPS, Some(Path::new("/usr/bin/svc")));
        let paths: Vec<_> = maps.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/usr/bin/svc",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/opt/my app/lib with space.so"
            ]
        );
        assert_eq!(maps.entries[0].start, 0x55d0c8a40000);
        assert_eq!(maps.entries[0].offset, 0x40000);
        assert_eq!(maps.find(0x7f0000000010), Some(1));
        assert_eq!(maps.find(0x10), None);
    }

    #[test]
    fn main_binary_moves_to_front() {
        let maps = ProcessMaps::parse(MAPS, Some(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")));
        assert_eq!(maps.entries[0].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    }

    #[test]
    fn live_maps_have_this_test_binary_with_a_build_id() {
        let maps = ProcessMaps::current().expect("read /proc/self/maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe link");
        assert_eq!(Path::new(&maps.entries[0].path), exe);
        let info = ObjectInfo::read(&exe).expect("object info");
        let id = info
            .build_id
            .clone()
            .expect("rustc links with a GNU build id here");
        assert!(
            id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        // The address of a function maps back to the symbol table's address.
        let f = live_maps_have_this_test_binary_with_a_build_id as *const () as usize as u64;
        let idx = maps.find(f).expect("function inside a mapping");
        assert_eq!(idx, 0);
        let svma = info.to_svma(&maps.entries[idx], f);
        assert!(svma < f, "PIE binaries load above their link address");
    }
}
