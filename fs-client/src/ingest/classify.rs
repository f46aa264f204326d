//! Which kind of content a file holds — photo, video or anything else — by its magic
//! bytes first and its extension second. An extension whose format has a signature the
//! content does not carry is not believed (a text file called `notes.jpg` is a file, a JPEG
//! called `scan.txt` a photo); formats without a reliable signature (SVG, camera raw files,
//! MPEG transport streams) go by their extension.

use std::path::Path;

/// Bytes of a file's start looked at.
pub const HEADER_LEN: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Photo,
    Video,
    File,
}

impl Kind {
    /// The top-level category folder of this kind.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Photo => "photos",
            Kind::Video => "videos",
            Kind::File => "files",
        }
    }
}

/// Image formats whose signature `infer` knows: their extension alone proves nothing.
const SIGNED_IMAGE_EXT: &[&str] = &[
    "jpg", "jpeg", "jpe", "png", "gif", "webp", "tif", "tiff", "bmp", "heic", "heif", "avif",
    "jxl", "jp2", "psd", "ico", "cr2",
];
/// Video formats whose signature `infer` knows.
const SIGNED_VIDEO_EXT: &[&str] = &[
    "mp4", "m4v", "mkv", "webm", "mov", "avi", "wmv", "mpg", "mpeg", "flv",
];
/// Images without a signature checked here: trusted by extension.
const OTHER_IMAGE_EXT: &[&str] = &[
    "svg", "svgz", "nef", "nrw", "arw", "srf", "sr2", "dng", "orf", "rw2", "raf", "cr3", "crw",
    "pef", "srw", "x3f", "raw", "xcf", "exr", "hdr",
];
/// Videos without a signature checked here: trusted by extension.
const OTHER_VIDEO_EXT: &[&str] = &[
    "ts", "mts", "m2ts", "vob", "3gp", "3g2", "ogv", "m2v", "mxf", "rm", "rmvb", "divx",
];
/// What `infer` files under images but people keep with their documents.
const DOCUMENT_IMAGE_TYPES: &[&str] = &["image/vnd.dwg", "image/vnd.djvu", "image/openraster"];

/// The kind of content `header` (the first bytes of a file called `name`) shows.
pub fn classify(header: &[u8], name: &str) -> Kind {
    if let Some(t) = infer::get(header) {
        match t.matcher_type() {
            infer::MatcherType::Image if !DOCUMENT_IMAGE_TYPES.contains(&t.mime_type()) => {
                return Kind::Photo
            }
            infer::MatcherType::Video => return Kind::Video,
            _ => {}
        }
    }
    if is_transport_stream(header) {
        return Kind::Video;
    }
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let ext = ext.as_str();
    if OTHER_IMAGE_EXT.contains(&ext) {
        Kind::Photo
    } else if OTHER_VIDEO_EXT.contains(&ext) {
        Kind::Video
    } else {
        // Also where a `.jpg` or `.mp4` without its signature lands.
        Kind::File
    }
}

/// Whether `ext` names a format whose signature is checked (for reports: "looks like X
/// but is not").
pub fn is_signed_extension(name: &str) -> bool {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    SIGNED_IMAGE_EXT.contains(&ext.as_str()) || SIGNED_VIDEO_EXT.contains(&ext.as_str())
}

/// MPEG transport stream: a sync byte every 188 bytes.
fn is_transport_stream(h: &[u8]) -> bool {
    h.len() >= 188 * 3 && (0..3).all(|i| h[i * 188] == 0x47)
}

/// Reads the start of a file for [`classify`], leaving its read position alone.
pub fn read_header(file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; HEADER_LEN];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        v.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        v.resize(600, 0);
        v
    }
    fn png() -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        v.resize(600, 0);
        v
    }
    fn mp4(brand: &[u8; 4]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0x20];
        v.extend_from_slice(b"ftyp");
        v.extend_from_slice(brand);
        v.extend_from_slice(&[0, 0, 2, 0]);
        v.extend_from_slice(b"isomiso2avc1mp41");
        v.resize(600, 0);
        v
    }
    fn mkv() -> Vec<u8> {
        let mut v = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01];
        v.extend_from_slice(&[0x42, 0x82, 0x88]);
        v.extend_from_slice(b"matroska");
        v.resize(600, 0);
        v
    }

    #[test]
    fn content_decides_before_the_extension() {
        assert_eq!(classify(&jpeg(), "a.jpg"), Kind::Photo);
        assert_eq!(classify(&jpeg(), "scan.txt"), Kind::Photo);
        assert_eq!(classify(&png(), "IMG_0001"), Kind::Photo);
        assert_eq!(classify(&mp4(b"isom"), "clip.mp4"), Kind::Video);
        assert_eq!(classify(&mp4(b"mp42"), "holiday.jpg"), Kind::Video);
        assert_eq!(classify(&mkv(), "film.dat"), Kind::Video);
        assert_eq!(classify(&mp4(b"heic"), "IMG_1234.HEIC"), Kind::Photo);
        // Misleading extensions of formats that have a signature are not believed.
        assert_eq!(classify(b"just some notes\n", "notes.jpg"), Kind::File);
        assert_eq!(classify(b"not a film", "fake.mp4"), Kind::File);
        assert_eq!(classify(b"%PDF-1.7\n", "paper.pdf"), Kind::File);
        assert_eq!(classify(b"", "empty.png"), Kind::File);
    }

    #[test]
    fn formats_without_a_signature_go_by_extension() {
        assert_eq!(classify(b"<svg xmlns=", "logo.SVG"), Kind::Photo);
        assert_eq!(classify(b"\0\0\0", "DSC_0001.NEF"), Kind::Photo);
        assert_eq!(classify(b"\0\0\0", "clip.3gp"), Kind::Video);
        let mut ts = vec![0u8; 188 * 4];
        for i in 0..4 {
            ts[i * 188] = 0x47;
        }
        assert_eq!(classify(&ts, "recording.bin"), Kind::Video);
        assert_eq!(classify(b"hello", "README"), Kind::File);
    }
}
