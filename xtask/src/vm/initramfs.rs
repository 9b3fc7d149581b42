//! A newc cpio archive, the format the kernel unpacks as initramfs (uncompressed is fine).
//!
//! Each entry: a 110-byte ASCII header ("070701" and 13 fields of 8 hex digits), the NUL-terminated
//! name padded to 4 bytes, then the data padded to 4 bytes. A "TRAILER!!!" entry ends the archive.
use std::{
    fs::File,
    io::{self, Write},
    path::Path,
};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

pub struct Cpio<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

/// What a header says besides the name.
struct Entry {
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// `path` is relative to the root of the initramfs, e.g. "bin".
    pub fn dir(&mut self, path: &str, permissions: u32) -> io::Result<()> {
        let entry = Entry {
            mode: S_IFDIR | permissions,
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        };
        self.header(path, &entry)
    }

    /// A character device node, e.g. "dev/console" (5, 1): the kernel opens it for init's stdio
    /// before init can mount devtmpfs.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let entry = Entry {
            mode: S_IFCHR | permissions,
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        };
        self.header(path, &entry)
    }

    /// A regular file with the contents of `source`.
    pub fn file(&mut self, path: &str, permissions: u32, source: &Path) -> io::Result<()> {
        let mut source = File::open(source)?;
        let size = source.metadata()?.len();
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{path}: too big for cpio")))?;
        let entry = Entry {
            mode: S_IFREG | permissions,
            nlink: 1,
            size,
            rdev: (0, 0),
        };
        self.header(path, &entry)?;
        let copied = io::copy(&mut source, &mut self.out)?;
        if copied != u64::from(size) {
            return Err(io::Error::other(format!(
                "{path} changed size while being copied"
            )));
        }
        self.written += copied;
        self.pad()
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let entry = Entry {
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.header("TRAILER!!!", &entry)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, name: &str, entry: &Entry) -> io::Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let name_size = name.len() as u32 + 1; // with the NUL
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check;
        // mtime 0 keeps the archive reproducible.
        let fields = [
            inode,
            entry.mode,
            0,
            0,
            entry.nlink,
            0,
            entry.size,
            0,
            0,
            entry.rdev.0,
            entry.rdev.1,
            name_size,
            0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Headers and data start on 4-byte boundaries.
    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..padding as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let source = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        std::fs::write(&source, b"hello").unwrap();
        let mut cpio = Cpio::new(Vec::new());
        cpio.dir("bin", 0o755).unwrap();
        cpio.file("init", 0o755, &source).unwrap();
        let bytes = cpio.finish().unwrap();
        std::fs::remove_file(&source).unwrap();

        // "bin" entry: 110 + 4 = 114, padded to 116.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[14..22], b"000041ed"); // directory, 0755
        assert_eq!(&bytes[110..114], b"bin\0");
        // "init" entry: header at 116, name 5 bytes -> data at 232, 5 bytes, padded to 240.
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(&bytes[116 + 54..116 + 62], b"00000005"); // filesize
        assert_eq!(&bytes[232..237], b"hello");
        assert_eq!(&bytes[240..246], b"070701");
        assert_eq!(&bytes[240 + 110..240 + 121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
    }
}
